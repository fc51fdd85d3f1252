"""Importing the model server has no side effects: no directories, no environment writes, no Prefect."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from nightshift.settings import PROJECT_ROOT


def test_importing_the_server_creates_nothing_and_sets_no_env(tmp_path: Path) -> None:
    code = ("import json, os, sys; before = dict(os.environ); import serving.server; "
            "print(json.dumps({'env': sorted(k for k in {*before, *os.environ} if before.get(k) != os.environ.get(k)), "
            "'prefect': 'prefect' in sys.modules}))")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NIGHTSHIFT_", "PREFECT_", "MLFLOW_"))}
    env.update({"HOME": str(tmp_path / "home"), "NIGHTSHIFT_STATE_DIR": str(tmp_path / "state"),
                "PYTHONPATH": str(PROJECT_ROOT)})
    (tmp_path / "home").mkdir()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env,
                         cwd=tmp_path, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {"env": [], "prefect": False}
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == ["home"]
