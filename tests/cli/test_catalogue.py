"""`python -m cli.catalogue` as a user runs it: exit 0 with a table, exit 2 with every problem named."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from nightshift.settings import PROJECT_ROOT


def _run(*args: str, state_dir: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cli.catalogue", *args], cwd=PROJECT_ROOT, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "NIGHTSHIFT_STATE_DIR": str(state_dir)})


def test_check_and_resolve(tmp_path: Path) -> None:
    ok = _run("check", state_dir=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert "2 model(s), 2 enabled" in ok.stdout and "demo-churn" in ok.stdout and "demo-fraud" in ok.stdout
    bad = tmp_path / "models.yaml"
    bad.write_text("models:\n  - {name: a, features: 'f.csv', label: y, windo_days: 3}\n")
    refused = _run("check", "--path", str(bad), state_dir=tmp_path)
    assert refused.returncode == 2 and refused.stdout == ""
    assert "model 'a' (#1), field 'windo_days': unknown key" in refused.stderr
    assert "field 'features': template 'f.csv' has no {date} placeholder" in refused.stderr
    night = _run("resolve", "--date", "2026-11-25", state_dir=tmp_path)
    assert night.returncode == 0 and f"{tmp_path}/landing/churn/features/2026-11-25.parquet" in night.stdout
    assert night.stdout.count("none yet") == 3
