"""Start-up recovery of capture parts a killed server left as `.inprogress` (serving/capture.py writes every part
under that name until it closes it).

A part whose file is whole (killed between closing it and renaming it) is renamed to its normal name and read like
any other; one that is not (no Parquet footer: killed mid-part) is renamed to `….parquet.corrupt`, which no reader
globs, for a person to look at or delete. Only parts no live writer can own are touched: not one whose pid (in its
name) is a live process other than this one (a replica sharing the capture dir), and not one opened less than a
writer's longest part life ago (`roll_seconds` + `flush_seconds` + a margin): a replica in another pid namespace
(a container whose server is pid 1 too) may still be writing it. Such parts wait for a later start-up.
"""

from __future__ import annotations

import calendar
import logging
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from serving.capture import CaptureConfig, _fsync
from tasks.data.served import IN_PROGRESS

log = logging.getLogger(__name__)
CORRUPT = ".corrupt"
MARGIN_SECONDS = 30.0  # beyond roll + flush: a slow drain, a clock step
# part-{opened %Y%m%dT%H%M%S}{microseconds}Z-{pid}-{seq}.parquet.inprogress (serving.capture.Capture._open)
_NAME = re.compile(r"part-(\d{8}T\d{6})\d{6}Z-(\d+)-\d+\.parquet" + re.escape(IN_PROGRESS))


@dataclass
class Recovered:
    """What a start-up recovery did: parts renamed to their normal name, set aside as corrupt, and left alone."""

    recovered: list[Path] = field(default_factory=list)
    set_aside: list[Path] = field(default_factory=list)
    left: list[Path] = field(default_factory=list)


def grace_seconds(config: CaptureConfig) -> float:
    """How long after opening a part a live writer may still hold it."""
    return config.roll_seconds + config.flush_seconds + MARGIN_SECONDS


def in_progress_parts(root: Path) -> list[Path]:
    """`.inprogress` parts under {root}/{model}/{day}/ and {root}/{model}/chat/{day}/."""
    return sorted([*root.glob(f"*/*/*{IN_PROGRESS}"), *root.glob(f"*/*/*/*{IN_PROGRESS}")])


def recover_parts(root: Path, grace: float, *, now: float | None = None) -> Recovered:
    """Finalize or set aside every `.inprogress` part under `root` that no live writer owns; never raises for a
    part (one that cannot be moved is logged and left)."""
    done = Recovered()
    if not root.is_dir():
        return done
    now = time.time() if now is None else now
    for path in in_progress_parts(root):
        owner = _owner(path, grace, now)
        if owner is not None:
            log.info("capture recovery: %s left alone: %s", path, owner)
            done.left.append(path)
            continue
        final = path.with_name(path.name.removesuffix(IN_PROGRESS))
        try:
            if _readable(path) and not final.exists():
                os.replace(path, final)
                _fsync(final.parent)
                log.warning("capture recovery: %s was whole: renamed to %s", path, final.name)
                done.recovered.append(final)
            else:
                aside = final.with_name(final.name + CORRUPT)
                os.replace(path, aside)
                _fsync(aside.parent)
                log.warning("capture recovery: %s is unreadable (a part cut off by a crash): set aside as %s",
                            path, aside.name)
                done.set_aside.append(aside)
        except OSError as exc:
            log.error("capture recovery: %s could not be moved: %s", path, exc)
            done.left.append(path)
    return done


def _owner(path: Path, grace: float, now: float) -> str | None:
    """Why a live writer may own the part (None: nobody does)."""
    match = _NAME.fullmatch(path.name)
    try:
        opened = (calendar.timegm(time.strptime(match.group(1), "%Y%m%dT%H%M%S")) if match
                  else path.stat().st_mtime)
    except (ValueError, OSError):
        opened = now
    if now - opened < grace:
        return f"opened {now - opened:.0f} s ago, under the {grace:.0f} s a live writer may hold a part"
    if match is not None:
        pid = int(match.group(2))
        if pid != os.getpid() and _alive(pid):
            return f"its writer's pid {pid} is a live process"
    return None


def _alive(pid: int) -> bool:
    """Whether a process with this pid exists (another user's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except (OverflowError, OSError):
        return False
    return True


def _readable(path: Path) -> bool:
    """Whether the part is a whole Parquet file: footer, schema and every row group decode."""
    import pyarrow.parquet as pq

    try:
        pq.read_table(path)
    except Exception:
        return False
    return True

