"""`python -m cli.catalogue check|resolve`: validate models.yaml, and show where a night's data is expected."""

from __future__ import annotations

import argparse
import sys
from datetime import date
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    """Validate the catalogue (exit 2 with every problem named) and print its models, or a night's files."""
    parser = argparse.ArgumentParser(prog="python -m cli.catalogue", description=__doc__)
    parser.add_argument("command", choices=["check", "resolve"], help="check: validate; resolve: a night's files")
    parser.add_argument("--path", type=Path, help="catalogue file (default NIGHTSHIFT_CATALOGUE_PATH or models.yaml)")
    parser.add_argument("--date", type=date.fromisoformat, default=None, help="resolve: the night, YYYY-MM-DD")
    args = parser.parse_args(argv)

    from rich.console import Console
    from rich.table import Table

    from nightshift.errors import ConfigError
    from nightshift.settings import get_settings
    from tasks.catalogue.schema import load_catalogue, resolve_files

    settings = get_settings()
    path = args.path or settings.catalogue_path
    console = Console(width=None if sys.stdout.isatty() else 200)
    try:
        catalogue = load_catalogue(path)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    if args.command == "check":
        problems = factory_problems(catalogue)
        if problems:
            print(f"{path}: {len(problems)} pipeline factory problem(s):\n" + "\n".join(problems), file=sys.stderr)
            return 2
        table = Table(title=f"{path}: {len(catalogue.models)} model(s), {len(catalogue.enabled)} enabled")
        for column in ("model", "enabled", "task", "schedule", "features", "labels", "window", "estimator"):
            table.add_column(column)
        for m in catalogue.models:
            labels = (f"{m.labels.source} (key {', '.join(m.labels.key)}, +{m.labels.lag_days} d)" if m.labels
                      else f"column '{m.label}' with the features")
            table.add_row(m.name, "yes" if m.enabled else "no", m.task,
                          f"{m.schedule.cron} {m.schedule.timezone}" + (
                              f" (covers D-{m.schedule.night_offset_days})" if m.schedule.night_offset_days else ""),
                          m.features, labels, f"{m.window_days} d", m.estimator.name)
        console.print(table)
        return 0
    night = args.date or date.today()
    table = Table(title=f"night {night.isoformat()}")
    for column in ("model", "data", "resolved", "files"):
        table.add_column(column)
    for m in catalogue.models:
        sources = [("features", m.features)] + ([("labels", m.labels.source)] if m.labels else [])
        for kind, template in sources:
            resolved, files = resolve_files(template, night, settings.state_dir)
            table.add_row(m.name, kind, resolved, str(len(files)) if files else "none yet")
    console.print(table)
    return 0


def factory_problems(catalogue: object) -> list[str]:
    """Each model's pipeline factory imported, called and its grid tried with set_params: what is wrong, by model."""
    from nightshift.errors import ConfigError
    from tasks.model.factory import check_factory

    problems = []
    for m in getattr(catalogue, "models"):
        if m.estimator.factory:
            try:
                check_factory(m.estimator.factory, m.estimator.code_path, m.task, m.estimator.param_grid)
            except ConfigError as exc:
                problems.append(f"  model '{m.name}': {exc}")
    return problems


if __name__ == "__main__":
    sys.exit(main())
