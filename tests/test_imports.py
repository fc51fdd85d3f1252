"""Start-up cost guards: heavy libraries load only where they are used."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("sklearn", "mlflow", "evidently", "pandas", "pandera", "dask", "distributed")


def _modules_after(statement: str) -> set[str]:
    code = f"import sys, json; {statement}; print(json.dumps(sorted(m.split('.')[0] for m in sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_flow_modules_import_no_heavy_libraries() -> None:
    loaded = _modules_after("import flows.train, flows.monitor, tasks.data, tasks.train, tasks.tracking, "
                            "tasks.validate, tasks.evaluate, tasks.drift")
    assert not loaded & set(HEAVY), loaded & set(HEAVY)


@pytest.mark.parametrize(("module", "flag"), [("flows.train", "--dataset"), ("flows.monitor", "--covariate-shift")])
def test_flow_cli_help_works(module: str, flag: str) -> None:
    out = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and flag in out.stdout
