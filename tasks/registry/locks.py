"""Per-model locks whose holder's death frees them: a file lock beside a local registry, a Prefect concurrency
lease when writers may be anywhere."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
from contextlib import ExitStack, contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

from nightshift.errors import LockTimeout
from nightshift.naming import slug
from nightshift.runlog import run_logger
from tasks.registry.store import TrackingConfig, local_store_dir


# How often a waiting run says what it waits for; and the Prefect lease (the server's minimum is 60 s).
_WAIT_LOG_SECONDS = 10.0
_LEASE_SECONDS = 60.0


def local_lock_dir(cfg: TrackingConfig) -> Path | None:
    """Where file locks live when every writer is on this machine, or None when writers may be anywhere.

    That is the case for a local SQLite/file registry (locks beside it), and for embedded Prefect with a remote
    registry (locks in PREFECT_HOME: a Prefect limit there would only reach this machine anyway, and the
    embedded server never reclaims a dead holder's slot).
    """
    from prefect.settings import get_current_settings

    store = local_store_dir(cfg)
    if store is not None:
        return store / "locks"
    settings = get_current_settings()
    return Path(settings.home).expanduser() / "nightshift-locks" if settings.api.url is None else None


def _lock_name(model_name: str, purpose: str) -> str:
    digest = hashlib.sha1(model_name.encode()).hexdigest()[:8]  # slugs of 'a.b' and 'a_b' would collide
    return f"nightshift-{purpose}-{slug(model_name, 60)}-{digest}"


@contextmanager
def _file_lock(path: Path, what: str, timeout_seconds: float) -> Iterator[None]:
    """flock(2) on a file: the kernel releases it the moment its holder exits, SIGKILL included."""
    from filelock import FileLock, Timeout

    path.parent.mkdir(parents=True, exist_ok=True)
    holder = path.with_suffix(".holder")
    lock = FileLock(str(path), thread_local=False)
    deadline = time.monotonic() + timeout_seconds
    while True:
        try:
            lock.acquire(timeout=max(0.0, min(_WAIT_LOG_SECONDS, deadline - time.monotonic())))
            break
        except Timeout:
            who = holder.read_text() if holder.exists() else "unknown holder"
            if time.monotonic() >= deadline:
                raise LockTimeout(f"{what} is still held by {who} after {timeout_seconds:.0f} s ({path}).") from None
            run_logger("nightshift.promote").info("Waiting for %s, held by %s", what, who)
    try:
        holder.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                      "since": datetime.now(timezone.utc).isoformat(timespec="seconds")}))
        yield
    finally:
        lock.release()


@contextmanager
def _prefect_lease(name: str, what: str, timeout_seconds: float) -> Iterator[None]:
    """A Prefect global concurrency slot with a renewed lease: the server reclaims it when its holder dies."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.concurrency.sync import concurrency
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            try:
                client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))
            except ObjectAlreadyExists:  # created concurrently by another run
                pass
    deadline = time.monotonic() + timeout_seconds
    stack = ExitStack()
    while True:
        try:
            stack.enter_context(concurrency(name, occupy=1, strict=True, lease_duration=_LEASE_SECONDS,
                                            timeout_seconds=max(1.0, min(_WAIT_LOG_SECONDS, deadline - time.monotonic()))))
            break
        except TimeoutError:
            if time.monotonic() >= deadline:
                raise LockTimeout(f"{what} (Prefect concurrency limit '{name}') is still taken after "
                                  f"{timeout_seconds:.0f} s; a dead holder's lease expires {_LEASE_SECONDS:.0f} s "
                                  f"after its last renewal.") from None
            run_logger("nightshift.promote").info("Waiting for %s (Prefect concurrency limit '%s')", what, name)
    with stack:
        yield


@contextmanager
def model_lock(cfg: TrackingConfig, model_name: str, purpose: str, timeout_seconds: float = 600) -> Iterator[None]:
    """At most one `purpose` (promote, train-<window>) per model at a time, across processes.

    A local SQLite/file registry means every writer runs on this machine: a file lock, freed by the kernel when
    its holder dies. A registry server means writers anywhere: a Prefect concurrency slot held by a lease.
    """
    what = f"the {purpose.split('-')[0]} lock of model '{model_name}'"
    name = _lock_name(model_name, purpose)
    local = local_lock_dir(cfg)
    with (_file_lock(local / f"{name}.lock", what, timeout_seconds) if local is not None
          else _prefect_lease(name[:120], what, timeout_seconds)):
        yield
