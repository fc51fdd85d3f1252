"""Traffic capture: the model server's scored rows, sampled per request, written to Parquet off the request path.

`Capture.offer()` is what a request pays: a sampling check on the request id, a lock held for a few attribute
updates and an append of one tuple to a bounded in-memory queue (one item per request, however many rows it has).
It never blocks, never copies the rows and never raises: when the queue is full (rows or requests) the request's
rows are dropped and counted. A background thread drains the queue every `flush_seconds`, groups the requests by
model, UTC day and column layout, builds one Arrow table per group (serving/capture_arrow.py) and appends it as a
row group to an open part; the folders, part names and columns are the capture file format of tasks/data/served.py.
A part is written as `<name>.parquet.inprogress`; once it is `roll_bytes` big or `roll_seconds` old (or on
`flush()`/`close()`) the writer closes it (Parquet footer), fsyncs it, renames it to `<name>.parquet` and fsyncs the
directory, so readers only ever see whole files. A request whose columns differ from the open part's (a new model
version with other features or classes) starts a new part.

Sampling is per request, never per row: a request is captured whole when crc32(request id) < rate * 2**32, so a
retried request id gets the same answer on every replica, and randomly generated ids give an unbiased sample.

Crash guarantee: a process killed at any moment loses at most what was not yet in a closed part: the rows still
in the queue (at most `flush_seconds` of traffic, bounded by the queue size) and the rows of the open parts (at
most `roll_seconds` of traffic per model and day; an open part has no footer, so it is left behind unreadable as
`.inprogress`, and the next server start-up sets it aside: serving/recovery.py). Every closed part is complete and
readable. A write error (disk full, no
permission) loses the batch (and the open part it was going to) but not the writer: it is counted and logged.
"""

from __future__ import annotations

import atexit
import itertools
import logging
import os
import threading
import time
import zlib
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from serving.capture_arrow import Tables, chunked, layout, tables
from serving.compiled import Batch
from tasks.data.served import IN_PROGRESS, model_dir

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

    from nightshift.settings import Settings
    Features: TypeAlias = Batch | Mapping[str, Sequence[Any]] | pd.DataFrame  # a request's feature values


log = logging.getLogger(__name__)
MAX_REQUEST_ID = 128
COUNTERS = ("offered_rows", "sampled_out_rows", "dropped_rows", "queue_rows", "buffered_rows", "written_rows",
            "error_rows", "write_errors", "parts_written")
_FULL = 2**32  # sampling threshold that captures every request
_YIELD_EVERY = 256  # queue items the writer handles between GIL releases (keeps request threads' waits short)
_SEQ = itertools.count()  # part sequence numbers, unique within the process


class CaptureConfig(BaseModel):
    """Where captured traffic goes, how much of it, and how the writer batches, rolls and bounds its queue."""

    model_config = ConfigDict(frozen=True)

    root: Path = Field(description="Captured traffic lands in {root}/{model}/{YYYY-MM-DD}/.")
    enabled: bool = Field(True, description="Whether the server captures at all.")
    sample_rate: float = Field(1.0, ge=0, le=1, description="Share of requests captured, whole requests only.")
    queue_rows: int = Field(100_000, ge=1, description="Rows waiting in the queue above which requests are dropped.")
    queue_batches: int = Field(20_000, ge=1, description="Requests waiting in the queue above which they are dropped.")
    flush_seconds: float = Field(1.0, gt=0, description="How often the writer drains the queue into open parts.")
    roll_seconds: float = Field(60.0, gt=0, description="Oldest an open part gets before it is closed.")
    roll_bytes: int = Field(64 * 2**20, ge=1, description="Size at which an open part is closed.")

    @classmethod
    def from_settings(cls, settings: Settings) -> CaptureConfig:
        """The NIGHTSHIFT_CAPTURE_* settings; the root defaults to state_dir/served."""
        return cls(root=settings.capture_dir or settings.state_dir / "served", enabled=settings.capture_enabled,
                   sample_rate=settings.capture_sample_rate, queue_rows=settings.capture_queue_rows,
                   queue_batches=settings.capture_queue_batches, flush_seconds=settings.capture_flush_seconds,
                   roll_seconds=settings.capture_roll_seconds, roll_bytes=settings.capture_roll_bytes)


def request_id(supplied: str | None = None) -> str:
    """The client's X-Request-Id if usable (1-128 printable ASCII characters), else a new random id."""
    if supplied and len(supplied) <= MAX_REQUEST_ID and supplied.isascii() and supplied.isprintable():
        return supplied
    return os.urandom(16).hex()  # uuid4's randomness and format without the UUID object (1 us instead of 4)


def sampled(request_id: str, rate: float) -> bool:
    """Whether a request is captured at `rate`: the same answer for the same id, everywhere."""
    return zlib.crc32(request_id.encode("utf-8", "surrogatepass")) < int(rate * _FULL)


class _Counts:
    """One model's counters (rows unless named otherwise); changed only under the Capture's lock."""

    __slots__ = COUNTERS

    def __init__(self) -> None:
        for name in COUNTERS:
            setattr(self, name, 0)

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in COUNTERS}


@dataclass
class _Part:
    """An open part file: rows appended as row groups until it is rolled."""

    model: str
    day: str
    tmp: Path
    writer: Any  # pyarrow.parquet.ParquetWriter
    schema: Any  # pyarrow.Schema
    opened: float  # time.monotonic()
    rows: int = 0
    size: int = 0

    @property
    def path(self) -> Path:
        """The name it gets once closed."""
        return self.tmp.with_name(self.tmp.name.removesuffix(IN_PROGRESS))

    def accepts(self, schema: pa.Schema) -> bool:
        """Same columns in the same order, each of the same type, all-null, or integers where the part has floats."""
        import pyarrow as pa

        return schema.names == self.schema.names and all(
            new.type == old.type or new.type == pa.null()
            or (pa.types.is_integer(new.type) and pa.types.is_floating(old.type))
            for new, old in zip(schema, self.schema))


class Capture:
    """A bounded queue of scored requests and the background thread that writes them to Parquet parts."""

    def __init__(self, config: CaptureConfig, *, folder: str = "", to_tables: Tables = tables) -> None:
        """`folder`: a sub-folder of each model's (parts go to {root}/{model}/{folder}/{day}/); `to_tables`: how a
        group of queued items becomes Arrow tables (default the scored rows' layout)."""
        self.config = config
        self._folder, self._tables = folder, to_tables
        self._threshold = int(config.sample_rate * _FULL)
        self._lock = threading.Lock()
        self._queue: deque[tuple[Any, ...]] = deque()
        self._queued = 0  # rows in the queue, all models
        self._wake_rows, self._wake_batches = max(config.queue_rows // 2, 1), max(config.queue_batches // 2, 1)
        self._counts: dict[str, _Counts] = {}
        self._offer_errors = 0
        self._closed = False
        self._flushes: list[threading.Event] = []
        self._wake = threading.Event()
        self._parts: dict[tuple[str, str], list[_Part]] = {}
        self._days: dict[int, str] = {}
        _warm_up()
        self._thread = threading.Thread(target=self._run, name="nightshift-capture", daemon=True)
        self._thread.start()
        atexit.register(self.close)

    # -- the request path -------------------------------------------------------------------------------------

    def offer(self, model: str, version: str, request_id: str, features: Features, predictions: Sequence[Any],
              probabilities: np.ndarray | Sequence[Sequence[float]] | None = None, classes: Sequence[Any] = (), *,
              row_ids: Sequence[Any] | None = None, at: float | None = None) -> bool:
        """Queue one scored request (True), or count it as sampled out or dropped (False); never blocks or raises.

        `features`: the request's checked feature values (a server `Batch`, a mapping of column -> values, or a
        DataFrame), one entry per prediction; `probabilities`: rows x classes; `at`: epoch seconds (default now).
        The objects are kept as they are until the writer reads them: do not change them after offering.
        """
        try:
            n = len(predictions)
            counts = self._counts.get(model)
            if counts is None:
                counts = self._model_counts(model)
            if self._threshold < _FULL and (
                    self._threshold == 0 or zlib.crc32(request_id.encode("utf-8", "surrogatepass")) >= self._threshold):
                with self._lock:
                    counts.offered_rows += n
                    counts.sampled_out_rows += n
                return False
            item = (model, version, request_id, time.time() if at is None else at, features, predictions,
                    probabilities, classes, row_ids)
            with self._lock:
                counts.offered_rows += n
                if self._closed or self._queued + n > self.config.queue_rows or \
                        len(self._queue) >= self.config.queue_batches:
                    counts.dropped_rows += n
                    return False
                self._queue.append(item)
                self._queued += n
                counts.queue_rows += n
            if (self._queued >= self._wake_rows or len(self._queue) >= self._wake_batches) and \
                    not self._wake.is_set():
                self._wake.set()  # half full: drain now rather than at the next tick
            return True
        except Exception:  # never into the request path
            self._offer_errors += 1
            return False

    def sampled(self, request_id: str) -> bool:
        """Whether `offer` would sample this request in (the same crc32 rule): what else follows the captured
        requests (the shadow model scores only those) asks here, for the price of one crc32 at most."""
        threshold = self._threshold
        return threshold >= _FULL or (
            threshold > 0 and zlib.crc32(request_id.encode("utf-8", "surrogatepass")) < threshold)

    def _model_counts(self, model: str) -> _Counts:
        with self._lock:
            return self._counts.setdefault(model, _Counts())

    # -- control ----------------------------------------------------------------------------------------------

    def flush(self, timeout: float | None = 30.0) -> bool:
        """Write everything offered so far and close the open parts (readable, fsync'd); False on timeout."""
        done = threading.Event()
        with self._lock:
            if self._closed:
                return not self._thread.is_alive()
            self._flushes.append(done)
        self._wake.set()
        return done.wait(timeout)

    def close(self, timeout: float | None = 30.0) -> None:
        """Stop taking rows, write what is queued, close and fsync every part; later offers are dropped."""
        with self._lock:
            already, self._closed = self._closed, True
        if not already:
            self._wake.set()
            atexit.unregister(self.close)
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("capture writer still busy after %.0f s at close; its queued rows may be lost", timeout)

    def __enter__(self) -> Capture:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def writer_alive(self) -> bool:
        """Whether the background writer thread is running."""
        return self._thread.is_alive()

    def stats(self) -> dict[str, dict[str, int]]:
        """Counters per model (rows unless named otherwise): offered = sampled out + dropped + queue + buffered
        (in open parts) + written (in closed parts) + error rows; write_errors counts failed writes."""
        with self._lock:
            return {model: counts.as_dict() for model, counts in self._counts.items()}

    def totals(self) -> dict[str, int]:
        """The counters summed over models, plus offers that failed before being counted (`offer_errors`)."""
        out = dict.fromkeys(COUNTERS, 0)
        for counts in self.stats().values():
            for key, value in counts.items():
                out[key] += value
        out["offer_errors"] = self._offer_errors
        return out

    # -- the writer thread -------------------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            self._wake.wait(self.config.flush_seconds)
            self._wake.clear()
            with self._lock:
                flushes, self._flushes = self._flushes, []
                stopping = self._closed
            try:
                self._drain()
                self._roll(everything=bool(flushes) or stopping)
            except Exception:  # a bug, not a write error (those are handled per batch): keep the thread alive
                log.exception("capture writer: unexpected error; continuing")
            for done in flushes:
                done.set()
            if stopping:
                return

    def _count(self, model: str, **changes: int) -> None:
        with self._lock:
            counts = self._counts.setdefault(model, _Counts())
            for key, value in changes.items():
                setattr(counts, key, getattr(counts, key) + value)

    def _drain(self) -> None:
        """Take the whole queue, group it by (model, day, columns) and append each group to its part."""
        with self._lock:
            items, self._queue = self._queue, deque()
        if not items:
            return
        groups: dict[tuple[Any, ...], list[tuple[Any, ...]]] = {}
        taken: dict[str, int] = {}
        unusable: list[tuple[str, int, str]] = []
        for i, item in enumerate(items):
            model, rows = item[0], len(item[5])
            taken[model] = taken.get(model, 0) + rows
            try:
                key = (model, self._day(item[3]), layout(item[4]), tuple(item[7]), item[6] is None)
            except Exception as exc:  # e.g. features of no known kind, a time that is not a number
                unusable.append((model, rows, f"{type(exc).__name__}: {str(exc)[:300]}"))
                continue
            groups.setdefault(key, []).append(item)
            if i % _YIELD_EVERY == _YIELD_EVERY - 1:
                time.sleep(0)
        with self._lock:
            for model, rows in taken.items():
                counts = self._counts[model]
                counts.queue_rows -= rows
                counts.buffered_rows += rows
                self._queued -= rows
        for model, rows, error in unusable:
            log.error("capture: %d row(s) of model %r not captured: %s", rows, model, error)
            self._count(model, buffered_rows=-rows, error_rows=rows, write_errors=1)
        for (model, day, *_), group in groups.items():
            for chunk in chunked(group):
                for table, rows, error in self._tables(chunk):
                    if error is not None:
                        log.error("capture: %d row(s) of model %r not captured: %s", rows, model, error)
                        self._count(model, buffered_rows=-rows, error_rows=rows, write_errors=1)
                    else:
                        self._append(model, day, table)
                time.sleep(0)  # let request threads in between chunks

    def _day(self, at: float) -> str:
        key = int(at // 86_400)
        day = self._days.get(key)
        if day is None:
            day = self._days[key] = time.strftime("%Y-%m-%d", time.gmtime(key * 86_400))
        return day

    def _append(self, model: str, day: str, table: pa.Table) -> None:
        """Append to the open part that takes these columns (a new part if none), rolling it when it is full."""
        parts = self._parts.setdefault((model, day), [])
        part = next((p for p in parts if p.accepts(table.schema)), None)
        try:
            if part is None:
                part = self._open(model, day, table.schema)
                parts.append(part)
            elif table.schema != part.schema:
                table = table.cast(part.schema)  # all-null or integer columns, typed like the part's
            part.writer.write_table(table)
        except Exception as exc:  # disk full, no permission, ...: lose this batch and the part, keep the writer
            lost = table.num_rows
            if part is not None and part in parts:
                parts.remove(part)
                lost += part.rows
                _abandon(part)
            log.error("capture: %d row(s) of model %r lost writing %s: %s", lost, model,
                      part.tmp if part is not None else f"{model}/{day}", exc)
            self._count(model, buffered_rows=-lost, error_rows=lost, write_errors=1)
            return
        part.rows += table.num_rows
        part.size = _size(part.tmp)
        if part.size >= self.config.roll_bytes:
            parts.remove(part)
            self._commit(part)

    def _open(self, model: str, day: str, schema: pa.Schema) -> _Part:
        import pyarrow.parquet as pq

        folder = self.config.root / model_dir(model) / self._folder / day
        if not folder.is_dir():
            _make_dirs(folder)
        now = time.time()
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now)) + f"{int(now % 1 * 1e6):06d}Z"
        tmp = folder / f"part-{stamp}-{os.getpid()}-{next(_SEQ):06d}.parquet{IN_PROGRESS}"
        return _Part(model, day, tmp, pq.ParquetWriter(tmp, schema), schema, time.monotonic())

    def _roll(self, everything: bool) -> None:
        """Close the parts that are old enough (all of them on flush/close)."""
        now = time.monotonic()
        for key, parts in list(self._parts.items()):
            for part in [p for p in parts if everything or now - p.opened >= self.config.roll_seconds]:
                parts.remove(part)
                self._commit(part)
            if not parts:
                del self._parts[key]

    def _commit(self, part: _Part) -> None:
        """Footer, fsync, rename to the final name, fsync the folder: from here on the part is durable and whole."""
        try:
            part.writer.close()
            _fsync(part.tmp)
            os.replace(part.tmp, part.path)
            _fsync(part.path.parent)
        except Exception as exc:
            log.error("capture: %d row(s) of model %r lost closing %s: %s", part.rows, part.model, part.tmp, exc)
            _abandon(part)
            self._count(part.model, buffered_rows=-part.rows, error_rows=part.rows, write_errors=1)
            return
        self._count(part.model, buffered_rows=-part.rows, written_rows=part.rows, parts_written=1)


def _warm_up() -> None:
    """Import pyarrow.parquet and convert and write one row, here and now (~40 ms, at server start-up) rather than in
    the writer's first drain, where it would hold the GIL while requests wait."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"x": pa.array(np.zeros(1)), "c": pa.array(np.array(["a"], dtype=object), pa.string()),
                      "at": pa.array(np.zeros(1, dtype=np.int64), pa.timestamp("us", tz="UTC"))})
    with pq.ParquetWriter(pa.BufferOutputStream(), table.schema) as writer:
        writer.write_table(table)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _fsync(path: Path) -> None:
    """fsync a file or a folder by path."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _make_dirs(folder: Path) -> None:
    """mkdir -p, fsyncing each parent whose entries changed (so a new day's folder survives a power cut)."""
    missing = [p for p in (folder, *folder.parents) if not p.exists()]
    folder.mkdir(parents=True, exist_ok=True)
    for created in reversed(missing):
        _fsync(created.parent)


def _abandon(part: _Part) -> None:
    """Drop a part that cannot be finished: close what can be closed, delete its in-progress file."""
    try:
        part.writer.close()
    except Exception:
        pass
    part.tmp.unlink(missing_ok=True)
