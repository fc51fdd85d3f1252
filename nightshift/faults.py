"""The one crash-test injection point: `NIGHTSHIFT_FAULT=<point>` SIGKILLs the process when it reaches <point>.

Production runs never set the variable; the crash tests set it to kill a real night at a named step.
Points: between-aliases, after-champion (inside the alias move), after-register, after-move (before the audit).
"""

from __future__ import annotations

import os
import signal


def fault_point(name: str) -> None:
    """SIGKILL this process if NIGHTSHIFT_FAULT names this point (a no-op otherwise)."""
    if os.environ.get("NIGHTSHIFT_FAULT") == name:
        os.kill(os.getpid(), signal.SIGKILL)
