"""`python -m cli.catalogue` as a user runs it: exit 0 with a table, exit 2 with every problem named."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from cli.catalogue import main
from nightshift.settings import PROJECT_ROOT


@dataclass
class Ran:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def _run(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    """`main(argv)` in this process (the module's own entry point), with the state dir set as a user would."""
    def run(*args: str, state_dir: Path) -> Ran:
        monkeypatch.setenv("NIGHTSHIFT_STATE_DIR", str(state_dir))
        monkeypatch.chdir(PROJECT_ROOT)
        code = main(list(args))
        out = capsys.readouterr()
        return Ran(code, out.out, out.err)
    return run


@pytest.mark.integration
def test_the_module_runs_as_a_program(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "cli.catalogue", "check"], cwd=PROJECT_ROOT, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "NIGHTSHIFT_STATE_DIR": str(tmp_path)})
    assert proc.returncode == 0 and "2 model(s), 2 enabled" in proc.stdout, proc.stderr


def test_check_and_resolve(tmp_path: Path, _run) -> None:
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
