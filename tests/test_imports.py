"""Start-up cost guards: heavy libraries load only where they are used."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("sklearn", "mlflow", "evidently", "pandas", "pandera", "dask", "distributed")


def _modules_after(statement: str) -> set[str]:
    code = f"import sys, json; {statement}; print(json.dumps(sorted(m.split('.')[0] for m in sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_flow_modules_import_no_heavy_libraries() -> None:
    loaded = _modules_after("import flows.train, flows.monitor, tasks.data.datasets, tasks.model.train, "
                            "tasks.registry.runs, tasks.registry.versions, tasks.registry.promote, tasks.data.validate, "
                            "tasks.model.gate, tasks.monitoring.drift, tasks.monitoring.estimate, tasks.llm.evaluation")
    assert not loaded & set(HEAVY), loaded & set(HEAVY)


@pytest.mark.parametrize(("module", "flag"), [("flows.train", "--dataset"), ("flows.monitor", "--covariate-shift")])
def test_flow_cli_help_works(module: str, flag: str) -> None:
    out = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and flag in out.stdout


def test_nightshift_is_the_ground_floor() -> None:
    """nightshift/ imports nothing from flows/, tasks/ or cli/, not even lazily inside a function."""
    upper = {"flows", "tasks", "cli"}
    for path in sorted((ROOT / "nightshift").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            else:
                continue
            assert not {n.split(".")[0] for n in names} & upper, f"{path.name}:{node.lineno} imports {names}"


def test_importing_the_packages_has_no_side_effects(tmp_path: Path) -> None:
    """Importing tasks and flows writes no environment variable and creates no directory."""
    cwd, home, state = tmp_path / "cwd", tmp_path / "home", tmp_path / "state"
    cwd.mkdir()
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "NIGHTSHIFT_"))}
    env.update(HOME=str(home), NIGHTSHIFT_STATE_DIR=str(state), PYTHONPATH=str(ROOT))
    code = "\n".join([
        "import json, os",
        "before = dict(os.environ)",
        "import tasks, flows, tasks.data.datasets, tasks.data.demo, flows.train",
        "print(json.dumps(sorted(k for k in before.keys() | os.environ.keys() if before.get(k) != os.environ.get(k))))",
    ])
    out = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
    assert not state.exists()
    assert list(cwd.iterdir()) == []
