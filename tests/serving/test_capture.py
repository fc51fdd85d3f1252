"""Traffic capture: what is offered is what is read back, a full queue drops without waiting, parts roll and
survive a kill -9, write errors leave the writer running, sampling keeps requests whole."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from datetime import date, datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from serving import capture as serving_capture
from serving import capture_arrow
from serving.capture import COUNTERS, Capture, CaptureConfig, request_id, sampled
from serving.compiled import Batch
from tasks.data.served import IN_PROGRESS, NoServedData, model_dir, read_served, served_days, served_parts

ROOT = Path(__file__).resolve().parents[2]
NUMERIC = ("tenure", "charges", "calls")
CLASSES = ["no", "yes"]
DAY = date(2026, 11, 24)
NOON = datetime(2026, 11, 24, 12, tzinfo=timezone.utc).timestamp()


def _request(i: int, rows: int) -> tuple[Batch, list[str], np.ndarray]:
    """A scored request as the server has it: checked features, labels, probabilities (deterministic from i)."""
    rng = np.random.default_rng(i)
    numeric = rng.normal(size=(rows, len(NUMERIC)))
    numeric[0, 1] = np.nan if i % 7 == 0 else numeric[0, 1]  # a missing value now and then
    plan = np.array([["basic", "pro", None][(i + r) % 3] for r in range(rows)], dtype=object)
    proba = rng.dirichlet([1, 1], size=rows)
    labels = [CLASSES[k] for k in proba.argmax(axis=1)]
    return Batch(numeric, NUMERIC, {"plan": plan}), labels, proba


def _config(root: Path, **overrides: object) -> CaptureConfig:
    return CaptureConfig(root=root, **{"flush_seconds": 0.05, **overrides})  # type: ignore[arg-type]


def _wait_for(condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def _balanced(counts: dict[str, int]) -> bool:
    """Every offered row is accounted for exactly once."""
    return counts["offered_rows"] == sum(counts[k] for k in ("sampled_out_rows", "dropped_rows", "queue_rows",
                                                             "buffered_rows", "written_rows", "error_rows"))


def test_every_offered_row_is_read_back_as_it_was_scored(tmp_path: Path) -> None:
    sizes = [1, 5, 1, 1, 40, 3, 1, 250, 2, 1]
    with Capture(_config(tmp_path)) as cap:
        for i, rows in enumerate(sizes):
            batch, labels, proba = _request(i, rows)
            assert cap.offer("churn", "3", f"req-{i}", batch, labels, proba, CLASSES,
                             row_ids=[f"c{i}-{r}" for r in range(rows)] if i % 2 else None, at=NOON + i)
    assert cap.stats()["churn"]["written_rows"] == sum(sizes) and _balanced(cap.stats()["churn"])
    served = read_served(tmp_path, "churn", DAY)
    assert len(served) == sum(sizes)
    assert list(served.columns) == ["request_id", "row", "row_id", "captured_at", "model", "model_version",
                                    *NUMERIC, "plan", "prediction", "proba_no", "proba_yes"]
    for i, rows in enumerate(sizes):
        got = served[served.request_id == f"req-{i}"].sort_values("row")
        batch, labels, proba = _request(i, rows)
        assert got.row.tolist() == list(range(rows))
        assert got.row_id.tolist() == ([f"c{i}-{r}" for r in range(rows)] if i % 2 else [None] * rows)
        np.testing.assert_array_equal(got[list(NUMERIC)].to_numpy(), batch.numeric)  # NaN where it was missing
        assert got.plan.tolist() == batch.categorical["plan"].tolist()
        assert got.prediction.tolist() == labels
        np.testing.assert_array_equal(got[["proba_no", "proba_yes"]].to_numpy(), proba)  # unrounded
        assert set(got.model) == {"churn"} and set(got.model_version) == {"3"}
        assert (got.captured_at == pd.Timestamp(NOON + i, unit="s", tz="UTC")).all()
    assert served_days(tmp_path, "churn") == [DAY]


def test_columns_mappings_and_frames_are_captured_too(tmp_path: Path) -> None:
    """Any request columns (not only the server's Batch): JSON-ish lists, ints among floats, a DataFrame."""
    with Capture(_config(tmp_path)) as cap:
        cap.offer("m", "1", "a", {"x": [1.5, None], "kind": ["u", "v"]}, [0, 1], [[0.9, 0.1], [0.2, 0.8]], [0, 1],
                  at=NOON)
        cap.offer("m", "1", "b", {"x": [2], "kind": [None]}, [1], [[0.4, 0.6]], [0, 1], at=NOON)
        cap.offer("m", "1", "c", pd.DataFrame({"x": [3.25], "kind": ["w"]}), np.array([0]), np.array([[0.7, 0.3]]),
                  [0, 1], at=NOON)
    served = read_served(tmp_path, "m", DAY).set_index(["request_id", "row"])
    assert served.loc[("a", 1), "x"] != served.loc[("a", 1), "x"]  # None -> NaN
    assert served.x.drop(("a", 1)).tolist() == [1.5, 2.0, 3.25]
    assert served.kind.tolist() == ["u", "v", None, "w"]
    assert served.prediction.tolist() == [0, 1, 1, 0] and served.proba_1.tolist() == [0.1, 0.8, 0.6, 0.3]


def test_a_full_queue_drops_at_once_and_counts_while_the_writer_is_stuck(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    release, stuck = threading.Event(), threading.Event()
    real_table = capture_arrow._table

    def slow_table(group):  # the writer blocks on its first batch, as on a hung disk
        stuck.set()
        release.wait(30)
        return real_table(group)

    monkeypatch.setattr(capture_arrow, "_table", slow_table)
    cap = Capture(_config(tmp_path, queue_rows=20, queue_batches=10))
    batch, labels, proba = _request(0, 1)
    assert cap.offer("m", "1", "first", batch, labels, proba, CLASSES, at=NOON)
    assert stuck.wait(10)
    timings, accepted = [], []
    for i in range(300):
        b, l, p = _request(i, 1 + i % 4)
        start = time.perf_counter()
        accepted.append(cap.offer("m", "1", f"r{i}", b, l, p, CLASSES, at=NOON))
        timings.append(time.perf_counter() - start)
    # A put that waited for the writer would take the whole 30 s; the bounds leave room for a busy machine's jitter.
    assert sorted(timings)[285] < 0.005 and max(timings) < 0.5, f"offer took up to {max(timings) * 1000:.1f} ms"
    stats = cap.stats()["m"]
    assert 0 < sum(accepted) <= 10 and stats["dropped_rows"] > 0 and stats["queue_rows"] <= 20
    release.set()
    cap.close()
    stats = cap.stats()["m"]
    offered = 1 + sum(1 + i % 4 for i in range(300))
    assert stats["offered_rows"] == offered and _balanced(stats) and stats["error_rows"] == 0
    assert stats["written_rows"] == offered - stats["dropped_rows"] == len(read_served(tmp_path, "m", DAY))
    assert not cap.offer("m", "1", "late", batch, labels, proba, CLASSES)  # closed: dropped, no error
    assert cap.stats()["m"]["dropped_rows"] == stats["dropped_rows"] + 1


def test_parts_roll_by_size_and_by_time_and_in_progress_files_are_never_read(tmp_path: Path) -> None:
    with Capture(_config(tmp_path, roll_bytes=1)) as cap:  # every write closes its part
        for i in range(4):
            cap.offer("sized", "1", f"s{i}", *_request(i, 10), CLASSES, at=NOON)
            assert cap.flush(10)
    with Capture(_config(tmp_path, roll_seconds=0.2)) as cap:
        deadline = time.monotonic() + 1.0
        i = 0
        while time.monotonic() < deadline:
            cap.offer("timed", "1", f"t{i}", *_request(i, 2), CLASSES, at=NOON)
            i += 1
            time.sleep(0.02)
    assert len(served_parts(tmp_path, "sized", DAY)) == 4
    assert len(served_parts(tmp_path, "timed", DAY)) >= 2
    for path in served_parts(tmp_path, "sized", DAY) + served_parts(tmp_path, "timed", DAY):
        assert pq.read_table(path).num_rows > 0 and path.name.startswith("part-")
    folder = tmp_path / "timed" / DAY.isoformat()
    (folder / f"part-99999999T000000000000Z-1-000001.parquet{IN_PROGRESS}").write_bytes(b"PAR1 half a file")
    assert len(read_served(tmp_path, "timed", DAY)) == 2 * i
    assert len(read_served(tmp_path, "sized", DAY)) == 40


def test_close_writes_everything_fsyncs_and_leaves_nothing_in_progress(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[Path] = []
    real_fsync = serving_capture._fsync
    monkeypatch.setattr(serving_capture, "_fsync", lambda path: (synced.append(Path(path)), real_fsync(path)))
    cap = Capture(_config(tmp_path, flush_seconds=30))  # nothing is written before close
    for i in range(50):
        cap.offer("churn", "3", f"r{i}", *_request(i, 3), CLASSES, at=NOON + 86_400 * (i % 2))  # two days
    assert cap.stats()["churn"]["queue_rows"] == 150 and not list(tmp_path.rglob("*.parquet"))
    cap.close()
    assert not cap.writer_alive and not list(tmp_path.rglob(f"*{IN_PROGRESS}"))
    assert cap.stats()["churn"]["written_rows"] == 150 and cap.stats()["churn"]["parts_written"] == 2
    parts = sorted(tmp_path.rglob("*.parquet"))
    assert {p.parent.name for p in parts} == {"2026-11-24", "2026-11-25"}
    for part in parts:  # the file (before its rename) and its folder (after it)
        assert part.with_name(part.name + IN_PROGRESS) in synced and part.parent in synced
    assert tmp_path / "churn" in synced and tmp_path in synced  # new day folders and the model folder
    assert served_days(tmp_path, "churn") == [DAY, date(2026, 11, 25)]


_CRASHER = textwrap.dedent("""
    import json, os, signal, sys, time
    from pathlib import Path
    sys.path.insert(0, sys.argv[2])
    from serving.capture import Capture, CaptureConfig
    from tests.serving.test_capture import CLASSES, _request

    cap = Capture(CaptureConfig(root=Path(sys.argv[1]), flush_seconds=0.05, roll_seconds=3600))
    for i in range(60):
        cap.offer("crashy", "1", f"r{i}", *_request(i, 1 + i % 5), CLASSES)
        if i == 29:
            assert cap.flush(30)
            print(json.dumps({"flushed": [f"r{j}" for j in range(30)]}), flush=True)
    deadline = time.monotonic() + 30  # until the writer has taken r30.. into an open part (no footer yet)
    while cap.stats()["crashy"]["queue_rows"] or not list(Path(sys.argv[1]).rglob("*.inprogress")):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    time.sleep(0.05)
    print(json.dumps({"offered": [f"r{j}" for j in range(60)]}), flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
""")


def test_a_kill_9_loses_only_the_open_part_and_the_queue(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-c", _CRASHER, str(tmp_path), str(ROOT)], capture_output=True, text=True,
                         timeout=120, cwd=ROOT)
    assert out.returncode == -signal.SIGKILL, out.stderr
    messages = [json.loads(line) for line in out.stdout.splitlines()]
    flushed, offered = set(messages[0]["flushed"]), set(messages[1]["offered"])
    day = served_days(tmp_path, "crashy")[-1]
    for part in served_parts(tmp_path, "crashy", day):
        assert pq.read_table(part).num_rows > 0  # every closed part is whole
    assert list((tmp_path / "crashy" / day.isoformat()).glob(f"*{IN_PROGRESS}"))  # the open part was cut off
    served = read_served(tmp_path, "crashy", day)
    assert flushed <= set(served.request_id) <= offered
    sizes = served.groupby("request_id").size()
    assert all(sizes[f"r{i}"] == 1 + i % 5 for i in range(30))


def test_write_errors_are_counted_and_the_writer_keeps_going(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "blocked").write_text("a file where the model's folder should be")
    with Capture(_config(tmp_path)) as cap:
        cap.offer("blocked", "1", "b0", *_request(0, 4), CLASSES, at=NOON)
        batch, labels, _ = _request(1, 2)
        cap.offer("ok", "1", "bad", batch, labels, np.ones((2, 3)), CLASSES, at=NOON)  # 3 probabilities, 2 classes
        cap.offer("ok", "1", "good", *_request(2, 2), CLASSES, at=NOON)
        cap.offer("ok", "1", "weird", object(), ["yes"], at=NOON)  # features of no known kind
        assert cap.flush(10)
        assert cap.stats()["blocked"] == {**dict.fromkeys(COUNTERS, 0), "offered_rows": 4,
                                          "error_rows": 4, "write_errors": 1}
        assert cap.stats()["ok"]["error_rows"] == 3 and cap.stats()["ok"]["written_rows"] == 2

        real_write = pq.ParquetWriter.write_table
        calls = []

        def disk_full(self, table, *args, **kwargs):
            calls.append(table.num_rows)
            if len(calls) == 2:
                raise OSError(28, "No space left on device")
            return real_write(self, table, *args, **kwargs)

        monkeypatch.setattr(pq.ParquetWriter, "write_table", disk_full)
        cap.offer("ok", "1", "in-part", *_request(3, 3), CLASSES, at=NOON)  # written to the open part...
        _wait_for(lambda: calls == [3])
        cap.offer("ok", "1", "full", *_request(4, 5), CLASSES, at=NOON)  # ... which this write error takes down
        _wait_for(lambda: cap.stats()["ok"]["write_errors"] == 3)
        monkeypatch.undo()
        (tmp_path / "blocked").unlink()
        cap.offer("blocked", "1", "b1", *_request(5, 1), CLASSES, at=NOON)
        cap.offer("ok", "1", "after", *_request(6, 1), CLASSES, at=NOON)
        assert cap.flush(10) and cap.writer_alive
    assert calls[:2] == [3, 5]
    stats = cap.stats()
    assert stats["ok"]["write_errors"] == 3 and stats["ok"]["error_rows"] == 2 + 1 + 3 + 5
    assert stats["blocked"]["written_rows"] == 1 and _balanced(stats["ok"]) and _balanced(stats["blocked"])
    assert set(read_served(tmp_path, "ok", DAY).request_id) == {"good", "after"}
    assert not list(tmp_path.rglob(f"*{IN_PROGRESS}"))


def test_half_the_requests_are_sampled_whole(tmp_path: Path) -> None:
    ids = [request_id() for _ in range(2_000)]
    with Capture(_config(tmp_path, sample_rate=0.5)) as cap:
        kept = [cap.offer("m", "1", rid, *_request(i, 3), CLASSES, at=NOON) for i, rid in enumerate(ids)]
    assert kept == [sampled(rid, 0.5) for rid in ids]
    assert 900 <= sum(kept) <= 1_100
    served = read_served(tmp_path, "m", DAY)
    assert set(served.request_id) == {rid for rid, k in zip(ids, kept) if k}
    assert (served.groupby("request_id").size() == 3).all()
    stats = cap.stats()["m"]
    assert stats["sampled_out_rows"] == 3 * (2_000 - sum(kept)) and stats["written_rows"] == 3 * sum(kept)
    with Capture(_config(tmp_path / "off", sample_rate=0.0)) as cap:
        assert not cap.offer("m", "1", "x", *_request(0, 2), CLASSES)
    assert cap.stats()["m"]["sampled_out_rows"] == 2 and not (tmp_path / "off").exists()


def test_a_new_version_with_other_columns_starts_a_new_part_and_versions_read_apart(tmp_path: Path) -> None:
    with Capture(_config(tmp_path)) as cap:
        cap.offer("churn", "3", "old", *_request(0, 2), CLASSES, at=NOON)
        cap.offer("churn", "4", "new", {"tenure": [1.0], "region": ["north"]}, ["a"], [[0.1, 0.2, 0.7]],
                  ["a", "b", "c"], at=NOON)
        cap.offer("churn", "3", "old-again", *_request(1, 1), CLASSES, at=NOON)
    assert len(served_parts(tmp_path, "churn", DAY)) == 2
    everything = read_served(tmp_path, "churn", "2026-11-24")
    assert len(everything) == 4 and {"plan", "region", "proba_yes", "proba_c"} <= set(everything.columns)
    assert set(read_served(tmp_path, "churn", DAY, version="3").request_id) == {"old", "old-again"}
    new = read_served(tmp_path, "churn", DAY, version="4")
    assert new.region.tolist() == ["north"] and new.proba_c.tolist() == [0.7]
    with pytest.raises(NoServedData, match=r"version 5 .*versions that day: 3, 4"):
        read_served(tmp_path, "churn", DAY, version="5")
    with pytest.raises(NoServedData, match="days with traffic: 2026-11-24"):
        read_served(tmp_path, "churn", date(2026, 11, 23))


def test_request_ids_model_folders_and_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from nightshift.settings import Settings

    assert request_id("abc-123") == "abc-123"
    for bad in (None, "", "x" * 129, "tab\there", "ünïcode"):
        generated = request_id(bad)
        assert len(generated) == 32 and int(generated, 16) >= 0
    assert model_dir("m_1.v2") == "m_1.v2" and "/" not in model_dir("../etc/x") and not model_dir("..").startswith(".")
    monkeypatch.setenv("NIGHTSHIFT_STATE_DIR", str(tmp_path))
    config = CaptureConfig.from_settings(Settings())
    assert config.root == tmp_path / "served" and config.enabled and config.sample_rate == 1.0
    monkeypatch.setenv("NIGHTSHIFT_CAPTURE_DIR", str(tmp_path / "elsewhere"))
    monkeypatch.setenv("NIGHTSHIFT_CAPTURE_SAMPLE_RATE", "0.25")
    config = CaptureConfig.from_settings(Settings())
    assert config.root == tmp_path / "elsewhere" and config.sample_rate == 0.25
    with Capture(_config(tmp_path)) as cap:
        cap.offer("odd/name", "1", "r", *_request(0, 1), CLASSES, at=NOON)
    assert len(read_served(tmp_path, "odd/name", DAY)) == 1 and not (tmp_path / "odd").exists()
    assert os.listdir(tmp_path / model_dir("odd/name")) == [DAY.isoformat()]
