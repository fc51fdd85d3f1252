"""Start-up recovery of `.inprogress` capture parts: whole ones finalized and read like any part, unreadable ones
set aside as `.corrupt`, parts a live writer may own left alone; counted in /metrics."""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from fastapi.testclient import TestClient

from nightshift.settings import Settings
from serving.capture import CaptureConfig
from serving.recovery import grace_seconds, recover_parts
from serving.server import create_app
from tasks.data.served import IN_PROGRESS, read_served

DEAD_PID = 4_194_305  # above Linux's largest pid_max (2**22): never a live process
DAY = "2026-01-05"
OLD = "20260105T101500123456Z"  # opened long before the grace period


def _part(folder: Path, pid: int, seq: int, stamp: str = OLD, rows: int | None = 3) -> Path:
    """An `.inprogress` part: a whole Parquet file of `rows` rows, or garbage (rows=None)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"part-{stamp}-{pid}-{seq:06d}.parquet{IN_PROGRESS}"
    if rows is None:
        path.write_bytes(b"PAR1" + os.urandom(200))  # a part cut off mid-write: no footer
    else:
        pq.write_table(pa.table({"request_id": [f"r{i}" for i in range(rows)], "model_version": ["1"] * rows,
                                 "x": [float(i) for i in range(rows)]}), path)
    return path


def test_start_up_finalizes_whole_parts_sets_garbage_aside_and_leaves_live_ones(tmp_path) -> None:
    root, model = tmp_path / "served", f"rec-{uuid.uuid4().hex[:6]}"
    day = root / model / DAY
    _part(day, DEAD_PID, 1)
    garbage = _part(day, DEAD_PID, 2, rows=None)
    live = _part(day, os.getppid(), 3)  # the test runner's parent: a live process, maybe a replica writing it
    settings = Settings(model_name=model, catalogue_path=tmp_path / "none.yaml", server_prompts=[],
                        capture_dir=root)
    with TestClient(create_app(settings)) as client:
        scrape = client.get("/metrics").text
    assert "nightshift_capture_parts_recovered_total 1.0" in scrape
    assert "nightshift_capture_parts_set_aside_total 1.0" in scrape
    assert list(read_served(root, model, DAY)["request_id"]) == ["r0", "r1", "r2"]  # the normal reader
    assert not garbage.exists() and garbage.with_name(garbage.name.replace(IN_PROGRESS, ".corrupt")).exists()
    assert live.exists()  # untouched


def test_parts_a_live_writer_may_own_are_left_and_chat_parts_recovered(tmp_path) -> None:
    root = tmp_path / "served"
    grace = grace_seconds(CaptureConfig(root=root))
    now = time.time()
    fresh = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now - grace / 2)) + "000000Z"
    young = _part(root / "m" / DAY, DEAD_PID, 1, stamp=fresh)  # a writer in another pid namespace may hold it
    ours = _part(root / "m" / DAY, os.getpid(), 2)  # our pid, before our writer opened anything: an earlier life
    chat = _part(root / "p" / "chat" / DAY, DEAD_PID, 3, rows=2)
    odd = root / "m" / DAY / f"notes{IN_PROGRESS}"
    odd.write_text("not a part")
    os.utime(odd, (now - 10 * grace, now - 10 * grace))
    done = recover_parts(root, grace, now=now)
    assert done.left == [young] and young.exists()
    assert sorted(p.name for p in done.recovered) == sorted(p.name.removesuffix(IN_PROGRESS) for p in (ours, chat))
    assert [p.name for p in done.set_aside] == ["notes.corrupt"]
    assert pq.read_table(chat.with_name(chat.name.removesuffix(IN_PROGRESS))).num_rows == 2
    assert recover_parts(root, grace, now=now).recovered == []  # nothing twice
