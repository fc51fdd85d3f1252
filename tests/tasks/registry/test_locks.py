"""The promotion lock on a real `prefect server` (registry elsewhere): a SIGKILLed holder's lease is reclaimed."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nightshift.settings import PROJECT_ROOT
from tests.deployments.prefect_stack import start_stack

pytestmark = pytest.mark.integration
# A registry server (never contacted by the lock) makes model_lock use a Prefect lease, not a file lock.
_HOLD = """
import sys, time
from tasks.registry.locks import local_lock_dir, model_lock
from tasks.registry.store import TrackingConfig
cfg = TrackingConfig(tracking_uri="http://127.0.0.1:9", registry_uri="http://127.0.0.1:9", experiment_name="e")
assert local_lock_dir(cfg) is None
started = time.monotonic()
with model_lock(cfg, "leased.model", "promote", timeout_seconds=float(sys.argv[1])):
    print(f"held after {time.monotonic() - started:.1f}", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def _lock(env: dict[str, str], log: Path, timeout: float, hold: float) -> subprocess.Popen:
    """A process that takes the lock (waiting up to `timeout` s), says "held after N", and keeps it `hold` s."""
    return subprocess.Popen([sys.executable, "-c", _HOLD, str(timeout), str(hold)], env=env, cwd=PROJECT_ROOT,
                            stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)


def _wait_for(log: Path, text: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while text not in log.read_text():
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.2)


def test_a_killed_holders_lease_is_reclaimed(tmp_path: Path) -> None:
    stack = start_stack(tmp_path)
    try:
        holder = _lock(stack.env, tmp_path / "holder.log", 60, 3600)
        _wait_for(tmp_path / "holder.log", "held after", 120)
        blocked = _lock(stack.env, tmp_path / "blocked.log", 3, 0)  # the slot is taken: a second run times out
        blocked.wait(timeout=120)
        out = (tmp_path / "blocked.log").read_text()
        assert blocked.returncode != 0 and "LockTimeout" in out and "leased.model" in out, out

        holder.send_signal(signal.SIGKILL)  # dies holding the slot, its lease no longer renewed
        holder.wait(timeout=30)
        started = time.monotonic()
        waiter = _lock(stack.env, tmp_path / "waiter.log", 300, 0)
        waiter.wait(timeout=360)
        waited, out = time.monotonic() - started, (tmp_path / "waiter.log").read_text()
        assert waiter.returncode == 0 and "held after" in out, out
        print(f"lease reclaimed {waited:.0f} s after the holder was killed")
        assert waited < 150  # 60 s lease + the repossessor's 15 s loop, with slack for a busy machine
    finally:
        stack.stop()
