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
