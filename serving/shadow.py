"""The shadow model: a second registry version of a served model, scored beside its champion off the request path.

`POST /models/{name}/shadow?version=N` (or a `shadow` registry alias at start-up) loads version N next to the
champion, after the same smoke test as a reload and a check that its inputs and classes are exactly the champion's
(it scores the rows the champion checked, so it must read them the same way). From then on every scoring request
that traffic capture samples in is also offered to the shadow: `Shadow.offer()` is what a request pays, a lock held
for a few attribute updates and an append to a bounded queue (rows); it never blocks, never raises and never
changes the answer. A full queue drops the request's rows and counts them.

The shadow scores in a process of its own: in the server's process its scoring would hold the GIL the requests need
(a 100-tree forest scored in a thread raised the champion's single-row p99 1.8x on this machine). The process runs
at Linux's SCHED_IDLE priority (else niced): it only gets CPU time nothing else wants, so on a busy machine it falls
behind and drops rows rather than delay an answer. A feeder thread sends what is queued every `_TICK` (0.1) seconds,
sooner when the queue is half full, packed 64 requests to a message (one block of rows each: pickled one by one, 250
requests held the GIL ~4.4 ms); requests leave the server young, so they never set off full garbage collections
there. The process gathers messages for up to 2 s or 2,048 rows and scores them with one predict call per 4,096 rows
(a 100-tree forest costs 12 ms a call plus 19 us a row), then writes the shadow's predictions with its own capture
writer to `{root}/{model}/shadow/{day}/`: columns request_id, row, row_id, captured_at, model, model_version (the
shadow's), prediction and proba_<class>, no features (the champion's rows hold them; join on request_id and row).
While the process is behind, messages wait in the pipe, the feeder waits, the queue fills and requests are dropped
(counted): nothing waits on the request path. A scoring error counts the rows as failed, is logged once per kind of
error, and the process goes on; a process that dies has every later row counted failed.

Removing or replacing the shadow discards its queue (counted as dropped) and stops the process once it has written
what it was sent; server shutdown sends the queue first. If the server itself is killed, the process sees its pipe
close, closes its parts and exits.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import pickle
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from serving.champion import Served, load_served, smoke_test
from serving.compiled import Batch
from serving.errors import ScoringError

if TYPE_CHECKING:  # tasks.* import Prefect, which creates its home dir on import: load them only when serving
    from serving.capture import Capture, CaptureConfig
    from tasks.registry.store import TrackingConfig


log = logging.getLogger(__name__)
COUNTERS = ("queue_rows", "scored_rows", "dropped_rows", "failed_rows")
_TICK = 0.1  # seconds requests wait in the server before they are sent: short-lived objects (see _GATHER)
# The process gathers what it is sent for up to _GATHER seconds or _BATCH_ROWS rows before one predict call: a
# 100-tree forest costs 12 ms a call plus 19 us a row. The server sends often, so the requests' objects die young:
# held there for 2 s they outlived the young GC generations and set off full collections, with the GIL held.
_GATHER = 2.0
_BATCH_ROWS = 2048
_CHUNK_ROWS = 4096  # rows per predict call in the shadow's process
_START_SECONDS = 120.0  # how long loading waits for the process to say it is ready
_STOP_SECONDS = 30.0  # how long removing a shadow waits for its process to write what it was sent
_NICE = 10  # the shadow's process yields the CPU to the server's (and everything else's) when both want it
_NO_FEATURES: dict[str, Any] = {}  # the shadow's parts hold no features: the champion's rows have them
Item = tuple[str, Batch, Sequence[Any] | None, float]  # request id, checked rows, row ids, request time
# A message to the shadow's process: several requests' rows as one block (numeric names, numbers, categories) and
# per request its id, row count, row ids and time. Pickling 250 requests one by one held the GIL ~4.4 ms (the
# requests wait); packed, 64 at a time, ~0.2 ms.
Packed = tuple[tuple[str, ...], np.ndarray, dict[str, np.ndarray], list[str], np.ndarray, list[Any], np.ndarray]
_MESSAGE_ITEMS = 64  # requests per message
_PAUSE = 0.0005  # a real sleep between messages: request threads waiting for the GIL get it


def schema_differences(champion: Served, shadow: Served) -> list[str]:
    """How the shadow's inputs or classes differ from the champion's (empty: it can score the champion's rows).

    Stricter than a reload's check: a shadow that needs fewer columns differs too, since it must read exactly the
    rows the champion checked."""
    from tasks.data.contract import schema_changes

    changes = schema_changes(champion.contract, shadow.contract)
    missing = [f for f in champion.contract.features if f not in shadow.contract.features]
    if missing:
        changes.append(f"does not take column(s) the champion does: {', '.join(map(repr, missing[:10]))}"
                       + (f" (+{len(missing) - 10} more)" if len(missing) > 10 else ""))
    return changes


def load_shadow(cfg: TrackingConfig, champion: Served, version: str, latency_budget_ms: float) -> Served:
    """Blocking: registry version `version` of the champion's model, smoke-tested like a reload and checked to read
    the champion's rows (ScoringError 404 no such version, 422 smoke test or schema)."""
    from tasks.registry.versions import SHADOW

    candidate = load_served(cfg, champion.name, version, SHADOW)
    smoke_test(candidate, latency_budget_ms)
    changes = schema_differences(champion, candidate)
    if changes:
        raise ScoringError(422, f"v{version} cannot shadow the champion v{champion.version}: its input schema or "
                                f"classes differ: {'; '.join(changes)}")
    return candidate


class ShadowScorer:
    """What the shadow's process does with what it is sent: score chunks of requests with one predict call each,
    offer each request's predictions to the shadow capture, count rows scored and failed (first error of each kind
    logged)."""

    def __init__(self, served: Served, capture: Capture) -> None:
        self.served, self.capture = served, capture
        self._classes = None if served.regression else np.asarray(served.classes)
        self._names = served.sample.numeric_names
        self.scored_rows = self.failed_rows = 0
        self._logged: set[str] = set()

    def score(self, message: Packed) -> None:
        """Score one message's requests (one predict call per _CHUNK_ROWS rows) and offer each request's
        predictions to the shadow capture."""
        served = self.served
        names, numeric, categorical, request_ids, sizes, row_ids, ats = message
        rows = int(sizes.sum())
        try:
            batch = self._aligned(Batch(numeric, names, categorical))
            parts = [served.predict_proba(_rows(batch, start, min(start + _CHUNK_ROWS, rows)))
                     for start in range(0, rows, _CHUNK_ROWS)]
            out = parts[0] if len(parts) == 1 else np.concatenate(parts)
            if len(out) != rows:
                raise ValueError(f"{len(out)} predictions for {rows} rows")
            labels, proba = (out, None) if self._classes is None else (self._classes[np.argmax(out, axis=1)], out)
        except Exception as exc:
            self.failed(rows, exc)
            return
        start = 0
        for request_id, n, ids, at in zip(request_ids, sizes.tolist(), row_ids, ats.tolist()):
            end = start + n
            self.capture.offer(served.name, served.version, request_id, _NO_FEATURES, labels[start:end],
                               None if proba is None else proba[start:end], served.classes, row_ids=ids, at=at)
            start = end
        self.scored_rows += rows

    def _aligned(self, batch: Batch) -> Batch:
        """The batch with its numbers in the shadow's column order (the same columns: checked at load)."""
        if batch.numeric_names == self._names:
            return batch
        order = [batch.numeric_names.index(n) for n in self._names]
        return Batch(batch.numeric[:, order], self._names, batch.categorical)

    def failed(self, rows: int, exc: BaseException) -> None:
        """Count rows that could not be scored; log the first error of each kind (not one line per request)."""
        self.failed_rows += rows
        kind = type(exc).__name__
        if kind not in self._logged:
            self._logged.add(kind)
            log.error("shadow v%s of %r: %d row(s) not scored: %s: %s (further %s errors are counted, not logged)",
                      self.served.version, self.served.name, rows, kind, str(exc)[:300], kind)


class RowQueue:
    """The requests waiting for the shadow, bounded in rows: what a request pays is `offer` (a lock held for a few
    attribute updates, an append); a request that would pass the bound is dropped and counted."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._lock = threading.Lock()
        self._items: deque[Item] = deque()
        self._rows = self.dropped = 0
        self._closed = False
        self._wake = threading.Event()
        self._wake_rows = max(limit // 2, 1)

    def offer(self, item: Item) -> bool:
        """Queue a request (True) or count its rows dropped (False); never blocks or raises."""
        try:
            n = len(item[1])
            with self._lock:
                if self._closed or self._rows + n > self.limit:
                    self.dropped += n
                    return False
                self._items.append(item)
                self._rows += n
                wake = self._rows >= self._wake_rows
            if wake and not self._wake.is_set():
                self._wake.set()  # half full: send now rather than at the next tick
            return True
        except Exception:  # never into the request path
            return False

    def take(self, wait: float) -> tuple[list[Item], bool]:
        """After at most `wait` seconds (sooner when half full or closed): everything queued, and whether the queue
        is closed (nothing more will come)."""
        self._wake.wait(wait)
        self._wake.clear()
        with self._lock:
            items, self._items, self._rows = list(self._items), deque(), 0
            return items, self._closed

    def close(self, discard: bool) -> None:
        """Take no more; `discard`: what waits is dropped (counted), else the next `take` returns it."""
        with self._lock:
            self._closed = True
            if discard:
                self.dropped += self._rows
                self._items, self._rows = deque(), 0
        self._wake.set()

    @property
    def closed(self) -> bool:
        """Whether the queue takes no more (its shadow is being removed)."""
        return self._closed

    def counts(self) -> tuple[int, int]:
        """(rows waiting, rows dropped so far)."""
        with self._lock:
            return self._rows, self.dropped


class Shadow:
    """A loaded shadow version: the bounded queue requests are offered to, the feeder thread, and the process that
    scores and captures (blocking to construct: it waits until the process has loaded the model)."""

    def __init__(self, served: Served, capture: CaptureConfig, queue_rows: int) -> None:
        import multiprocessing

        self.served, self.queue = served, RowQueue(queue_rows)
        self._what = f"shadow v{served.version} of {served.name!r}"
        self._failed_here = 0
        ctx = multiprocessing.get_context("spawn")  # never fork a threaded server
        self._counts = ctx.Array("q", 2, lock=False)  # written by the process: rows scored, rows failed
        self._conn, child = ctx.Pipe()
        self._process = ctx.Process(target=_process_main, name=f"nightshift-shadow-{served.name}", daemon=True,
                                    args=(_portable(served), capture.model_dump(), list(sys.path), child,
                                          self._counts))
        self._process.start()
        child.close()
        try:
            if not self._conn.poll(_START_SECONDS):
                raise ScoringError(503, f"{self._what}: its scoring process did not start in {_START_SECONDS:.0f} s")
            ready = self._conn.recv()
        except (EOFError, OSError):
            ready = ("error", f"its scoring process exited with code {self._process.exitcode}")
        except ScoringError:
            self._process.kill()
            raise
        if ready != ("ready",):
            self._process.kill()
            raise ScoringError(422, f"{self._what} could not start scoring: {ready[1]}")
        self._thread = threading.Thread(target=self._run, name=f"nightshift-shadow-{served.name}", daemon=True)
        self._thread.start()

    @property
    def version(self) -> str:
        """The shadow's registry version."""
        return self.served.version

    # -- the request path -------------------------------------------------------------------------------------

    def offer(self, request_id: str, batch: Batch, row_ids: Sequence[Any] | None, at: float) -> bool:
        """Queue one request's checked rows to be scored (True), or count them dropped (False); never blocks or
        raises. The batch is read later by the feeder: do not change it after offering."""
        return self.queue.offer((request_id, batch, row_ids, at))

    # -- control ----------------------------------------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        """Rows waiting here, scored (offered to the shadow capture), dropped (queue full, or discarded), failed."""
        queued, dropped = self.queue.counts()
        return {"queue_rows": queued, "scored_rows": int(self._counts[0]), "dropped_rows": dropped,
                "failed_rows": int(self._counts[1]) + self._failed_here}

    def summary(self) -> dict[str, Any]:
        """What /models says about the shadow (and, once its process has died, that and what to do)."""
        out = {"model_version": self.served.version, "run_id": self.served.run_id,
               "loaded_at": self.served.loaded_at, **self.counts()}
        if not self._process.is_alive() and not self.queue.closed:
            out["error"] = (f"its scoring process exited (code {self._process.exitcode}): rows offered since are "
                            f"counted failed; load the shadow again (POST /models/{self.served.name}/shadow"
                            f"?version={self.served.version})")
        return out

    def close(self, drain: bool = False, timeout: float = _STOP_SECONDS) -> None:
        """Stop taking requests; `drain` (server shutdown): send what is queued first, else discard it (counted as
        dropped). The process then writes what it was sent, closes its parts and exits (killed after `timeout`)."""
        self.queue.close(discard=not drain)
        self._thread.join(timeout)
        self._process.join(timeout)
        if self._process.is_alive():
            log.warning("%s: its process still busy after %.0f s; killed (its open parts are recovered at the next "
                        "start-up)", self._what, timeout)
            self._process.kill()
            self._process.join(5)
        self._conn.close()

    @property
    def alive(self) -> bool:
        """Whether the feeder thread and the scoring process are running."""
        return self._thread.is_alive() and self._process.is_alive()

    # -- the feeder thread -------------------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            items, closed = self.queue.take(_TICK)
            for message in _messages(items):
                self._send(message, sum(len(item[1]) for item in message))
                time.sleep(_PAUSE)
            if closed:
                self._send(None, 0)
                return

    def _send(self, items: list[Item] | None, rows: int) -> None:
        """One message to the process (None: stop); a process that is gone has the rows counted failed."""
        try:
            self._conn.send(None if items is None else pack(items))
        except Exception as exc:  # BrokenPipe / EOF: the process died (OOM killer, a crash in the model's code)
            first = self._failed_here == 0 and rows > 0
            self._failed_here += rows  # this thread alone writes it
            if first:
                log.error("%s: its scoring process is gone (exit code %s): %s; rows offered from now on are counted "
                          "failed", self._what, self._process.exitcode, exc)


def _messages(items: list[Item]) -> list[list[Item]]:
    """Queued requests cut into messages of at most _MESSAGE_ITEMS requests of one column layout each."""
    out: list[list[Item]] = []
    for item in items:
        last = out[-1] if out else None
        if last is None or len(last) >= _MESSAGE_ITEMS or _layout(last[0][1]) != _layout(item[1]):
            out.append([item])
        else:
            last.append(item)
    return out


def _layout(batch: Batch) -> tuple[Any, ...]:
    return batch.numeric_names, tuple(batch.categorical)


def pack(items: list[Item]) -> Packed:
    """Requests of one column layout as one message (see Packed)."""
    first = items[0][1]
    batches = [item[1] for item in items]
    numeric = first.numeric if len(batches) == 1 else np.concatenate([b.numeric for b in batches])
    categorical = {name: values if len(batches) == 1 else np.concatenate([b.categorical[name] for b in batches])
                   for name, values in first.categorical.items()}
    return (first.numeric_names, numeric, categorical, [item[0] for item in items],
            np.fromiter((len(b) for b in batches), dtype=np.int64, count=len(batches)),
            [None if item[2] is None else list(item[2]) for item in items],
            np.fromiter((item[3] for item in items), dtype=np.float64, count=len(items)))


def _rows(batch: Batch, start: int, end: int) -> Batch:
    if start == 0 and end == len(batch):
        return batch
    return Batch(batch.numeric[start:end], batch.numeric_names, {k: v[start:end] for k, v in batch.categorical.items()})


def _portable(served: Served) -> bytes:
    """The served version as the process gets it: pickled without its request model (a class made at load time,
    which pickle cannot name) and its compiled scorer (the process scores whole chunks with the pipeline)."""
    from pydantic import BaseModel

    return pickle.dumps(dataclasses.replace(served, request_model=BaseModel, compiled=None),
                        protocol=pickle.HIGHEST_PROTOCOL)


def _process_main(served_bytes: bytes, capture: dict[str, Any], path: list[str], conn: Any, counts: Any) -> None:
    """The shadow's process: load, say ready, then score every message until told to stop or the server is gone."""
    from serving.capture import Capture, CaptureConfig
    from tasks.data.served import SHADOW_FOLDER

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C in the server's terminal: the server stops it in order
    _yield_cpu()
    sys.path[:] = path  # the catalogue's code paths: a team's own classes inside the pipeline unpickle
    try:
        served = pickle.loads(served_bytes)
        scorer = ShadowScorer(served, Capture(CaptureConfig(**capture), folder=SHADOW_FOLDER))
    except Exception as exc:
        conn.send(("error", f"{type(exc).__name__}: {str(exc)[:300]}"))
        return
    conn.send(("ready",))
    pending: list[Packed] = []
    first = 0.0
    try:
        while True:
            wait = None if not pending else max(0.0, _GATHER - (time.monotonic() - first))
            try:
                message = conn.recv() if conn.poll(wait) else ()
            except (EOFError, OSError):  # the server is gone: write what was scored and stop
                break
            if message is None:
                break
            if message:
                first = first if pending else time.monotonic()
                pending.append(message)
                if sum(int(m[4].sum()) for m in pending) < _BATCH_ROWS:
                    continue
            _score_pending(scorer, pending, counts)
            pending = []
    finally:
        _score_pending(scorer, pending, counts)
        scorer.capture.close()
        counts[0], counts[1] = scorer.scored_rows, scorer.failed_rows


def _score_pending(scorer: ShadowScorer, pending: list[Packed], counts: Any) -> None:
    """Score the gathered messages, runs of one column layout merged into one message (one predict call)."""
    for run in _runs(pending):
        message = run[0] if len(run) == 1 else merge(run)
        try:
            scorer.score(message)
        except Exception as exc:  # a bug, not a scoring error (those are counted per chunk): keep going
            scorer.failed(int(message[4].sum()), exc)
        counts[0], counts[1] = scorer.scored_rows, scorer.failed_rows


def _runs(messages: list[Packed]) -> list[list[Packed]]:
    out: list[list[Packed]] = []
    for m in messages:
        if out and out[-1][0][0] == m[0] and tuple(out[-1][0][2]) == tuple(m[2]):
            out[-1].append(m)
        else:
            out.append([m])
    return out


def merge(messages: list[Packed]) -> Packed:
    """Messages of one column layout as one."""
    first = messages[0]
    return (first[0], np.concatenate([m[1] for m in messages]),
            {name: np.concatenate([m[2][name] for m in messages]) for name in first[2]},
            [rid for m in messages for rid in m[3]], np.concatenate([m[4] for m in messages]),
            [ids for m in messages for ids in m[5]], np.concatenate([m[6] for m in messages]))


def _yield_cpu() -> None:
    """Run only on CPU time nothing else wants (Linux SCHED_IDLE: a server thread that wakes up takes the core at
    once), else as nice as allowed: the shadow falls behind and drops rows before it delays an answer."""
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))  # type: ignore[attr-defined]
        return
    except (AttributeError, OSError):
        pass
    try:
        os.nice(_NICE)
    except OSError:
        pass

