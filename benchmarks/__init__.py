"""Benchmarks run by `make bench`: the drift step vs scipy and full-data Evidently; the model server vs mlflow's."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def save_results(kind: str, results: dict[str, Any]) -> Path:
    """Write one benchmark's results as JSON under benchmarks/results/ (git-ignored)."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{kind}-{datetime.now().strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(results, indent=2))
    return path


def print_verdicts(console: Any, verdicts: list[dict[str, Any]]) -> None:
    """One line per verdict: PASS/FAIL/other in colour, the target (or 'reported, not a target') and the detail."""
    for v in verdicts:
        colour = {"PASS": "green", "FAIL": "red"}.get(v["status"], "yellow")
        label = "" if v.get("kind", "target") == "target" else " (reported, not a target)"
        console.print(f"[{colour}]{v['status']}[/{colour}] {v['target']}{label}: {v['detail']}")
