"""`make demo`: a week of nights on the bundled demo stream, offline, on embedded defaults."""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tasks.demo_data import DemoDrift


def _nights() -> list[tuple[int, DemoDrift, bool, str]]:
    """The week: (day, drift injected that day, retrain forced, label)."""
    from tasks.demo_data import DemoDrift

    quiet, concept = DemoDrift(), DemoDrift(concept=1.0)
    return [
        (1, quiet, False, "first night"),
        (2, quiet, False, "quiet"),
        (3, DemoDrift(covariate_shift=1.2, category_mix=0.6), False, "covariate + category mix"),
        (4, quiet, False, "quiet"),
        (5, concept, False, "concept drift"),
        (6, concept, False, "concept persists"),
        (7, concept, True, "retrain forced from the UI"),
    ]


def main(argv: list[str] | None = None) -> int:
    """Simulate the nights, print one table row per night and where to look; returns an exit code."""
    parser = argparse.ArgumentParser(prog="python -m cli.demo", description=__doc__)
    parser.add_argument("--rows", type=int, default=8_000, help="labeled rows arriving each night")
    parser.add_argument("--reference-rows", type=int, default=20_000, help="rows of the initial reference data")
    parser.add_argument("--model-name", default=None, help="registered model (default: a fresh demo-<id> name)")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)

    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "ERROR")  # the table tells the story; the UI has the logs
    from nightshift.settings import apply_prefect_defaults, get_settings

    settings = get_settings()
    apply_prefect_defaults(settings)
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from flows.nightly import NightlyParams, nightly
    from flows.train import EstimatorParams
    from tasks.data import DatasetParams
    from tasks.evaluate import GateConfig

    name = args.model_name or f"demo-{uuid.uuid4().hex[:6]}"
    console = Console(width=None if sys.stdout.isatty() else 160)
    console.rule(f"[bold]nightshift demo: a week of nights for model '{name}'")
    console.print(f"State: {settings.state_dir}   MLflow: {settings.tracking_uri}")
    nights = _nights()
    started = time.perf_counter()
    results = []
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total} nights"),
                  TimeElapsedColumn(), console=console) as progress:
        bar = progress.add_task("starting Prefect…", total=len(nights))
        for i, (day, drift, force, label) in enumerate(nights):
            progress.update(bar, description=f"night {day}: {label}")
            batches = [DatasetParams(source="demo", day=d, rows=args.rows, drift=nights[j][1])
                       for j, (d, *_rest) in enumerate(nights[: i + 1])][-2:]
            params = NightlyParams(
                model_name=name, batches=batches,
                # The reference seeds the first models; later the window slides over recent nights only.
                reference=DatasetParams(source="demo", day=0, rows=args.reference_rows) if day <= 2 else None,
                window=2, force_retrain=force,
                estimator=EstimatorParams(param_grid={"n_estimators": [60], "max_depth": [12], "min_samples_leaf": [5]}),
                cv_folds=3, gate=GateConfig(metric="roc_auc", resamples=500, absolute_floor=0.6, slice_columns=["plan"]),
                seed=args.seed,
            )
            results.append((day, label, nightly(params)))
            progress.advance(bar)
    elapsed = time.perf_counter() - started

    table = Table(title=f"{name}: one row per night ({elapsed:.0f} s)", show_lines=False)
    for column in ("night", "injected", "rows", "validation", "drift share", "retrain because",
                   "challenger vs champion (CI)", "decision", "champion"):
        table.add_column(column, overflow="fold")
    for day, label, r in results:
        d = r.decision
        vs = "-"
        if d is not None:
            vs = f"{d.challenger:.3f}" + (f" vs {d.champion:.3f} ({d.ci_low:+.3f}..{d.ci_high:+.3f})"
                                           if d.champion is not None else " (floor)")
        table.add_row(str(day), label, str(r.rows), "ok" if "valid" in r.validation or "checked" in r.validation else r.validation,
                      "-" if r.drift_share is None else f"{r.drift_share:.2f}",
                      "; ".join(x.split(":")[0] for x in r.retrain_reasons) or "-", vs, r.action,
                      f"v{r.champion_after}" if r.champion_after else "-")
    console.print(table)
    reports = [r.report for _, _, r in results if r.report]
    console.rule("Where to look")
    console.print("Prefect UI:  make server      → http://127.0.0.1:4200 (flow runs, task states, gate + drift artifacts)")
    console.print("MLflow UI:   make mlflow-ui   → http://127.0.0.1:5000 (runs, model versions and aliases, audit experiment)")
    console.print(f"Audit trail: .venv/bin/python -m cli.audit --model-name {name}")
    if reports:
        console.print(f"Latest drift report: {reports[-1]}")
    console.print(f"Wall time: {elapsed:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
