"""`make demo`: train on the bundled demo stream with embedded defaults, then show where to look."""

from __future__ import annotations

import argparse
import sys
import time

from nightshift.settings import apply_prefect_defaults, get_settings


def main(argv: list[str] | None = None) -> int:
    """Run the demo and print a summary table; returns a process exit code."""
    parser = argparse.ArgumentParser(prog="python -m nightshift.demo", description=__doc__)
    parser.add_argument("--rows", type=int, default=30_000, help="demo rows for the reference day")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)

    settings = get_settings()
    apply_prefect_defaults(settings)
    from rich.console import Console
    from rich.table import Table

    from flows.train import EstimatorParams, TrainParams, train
    from tasks.data import DatasetParams

    console = Console()
    console.rule("[bold]nightshift demo")
    console.print(f"State dir: {settings.state_dir}  ·  MLflow: {settings.tracking_uri}")
    started = time.perf_counter()
    params = TrainParams(
        dataset=DatasetParams(source="demo", rows=args.rows, day=0),
        estimator=EstimatorParams(kind="random_forest",
                                  param_grid={"n_estimators": [100], "max_depth": [8, 16], "min_samples_leaf": [5]}),
        test_size=0.25, cv_folds=3, stratify=True, seed=args.seed,
    )
    with console.status("Training on the demo stream (Prefect tasks report below)…"):
        result = train(params)
    elapsed = time.perf_counter() - started

    table = Table(title=f"{result.model_name} v{result.model_version}  ({result.rows_train} train / {result.rows_test} test rows)")
    table.add_column("metric")
    table.add_column("cross-validation", justify="right")
    table.add_column("test", justify="right")
    for metric, value in result.test_metrics.items():
        table.add_row(metric, f"{result.cv_metrics.get(metric, float('nan')):.4f}", f"{value:.4f}")
    console.print(table)
    console.print(f"Best candidate of {result.candidates}: {result.best_params}")
    console.print(f"Wall time: {elapsed:.1f} s")
    console.rule("Where to look")
    console.print(f"MLflow UI:  make mlflow-ui   (runs, metrics, model {result.model_uri})")
    console.print("Prefect UI: make server   (then open http://127.0.0.1:4200: flow runs, task states, artifacts)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
