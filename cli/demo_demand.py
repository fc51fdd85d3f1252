"""`python -m cli.demo_demand`: the bring-your-own-model example, run as a team would run it.

The team's own regression pipeline (examples/demand: a custom transformer and a factory) predicts daily units sold
per store and product. Before nightshift, the team already served a model it trained itself; the example adopts that
model as the champion (`python -m cli.adopt`), then lands its daily files (features every day, sales two days
later, joined by row_id) and runs the catalogue's `model-night` for each night, as the schedule would at 02:00.
From the drift day on, prices, promotions and the south's demand change (tasks.data.demand): the nights see the
drift, estimate the champion's error before the sales land (DLE), measure it once they land, train challengers with
the team's factory and promote one only when it is measurably better on the newest labeled day.

It uses the catalogue at NIGHTSHIFT_CATALOGUE_PATH, by default examples/demand/models.yaml, whose `code_path`
makes the example's package importable without installing it. Running it again adopts nothing (the champion is
there) and re-runs the same nights, which changes nothing: delete the state dir to start over.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import time
import warnings
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console

    from cli.demo import Row
    from nightshift.settings import Settings
    from tasks.catalogue.schema import CatalogueModel

MODEL = "demand"
EXAMPLE_CATALOGUE = Path(__file__).resolve().parent.parent / "examples" / "demand" / "models.yaml"
DEMAND_START = date(2026, 3, 2)  # a Monday
HISTORY_DAYS = 21  # the weeks before nightshift: the team trained on the first two
REFERENCE_DAYS = 7  # the last week, labeled: what adopt measures it on (every weekday in the contract)


def land_world(model: CatalogueModel, state_dir: Path, nights: int, rows: int, drift_day: int, seed: int) -> dict:
    """Every night's features and (lag days later) sales, where the catalogue's templates look."""
    from tasks.data.demand import write_demand_world

    root = Path(model.features.replace("{state_dir}", str(state_dir))).parent.parent
    return write_demand_world(root, DEMAND_START, nights, rows, label_lag_days=model.labels.lag_days if model.labels
                              else 0, drift_from_day=drift_day, seed=seed)


def production_model(model: CatalogueModel, state_dir: Path, rows: int, seed: int) -> tuple[Path, Path]:
    """The model the team served before nightshift, trained by its own script on the weeks before the first night
    and saved with skops; and the labeled days adopt measures it on. Returns (model file, reference file)."""
    import skops.io as sio

    from tasks.data.demand import DEMAND_ID, DEMAND_TIME, demand_days
    from tasks.model.factory import build_from_factory

    assert model.estimator.factory, "the example's catalogue names the team's factory"
    history = demand_days(DEMAND_START - timedelta(days=HISTORY_DAYS), HISTORY_DAYS, rows, seed=seed)
    train = history[history[DEMAND_TIME] < history[DEMAND_TIME].max() - timedelta(days=REFERENCE_DAYS - 1)]
    reference = history.drop(index=train.index)
    fitted = build_from_factory(model.estimator.factory, model.estimator.code_path, seed)
    fitted.fit(train.drop(columns=[model.label, DEMAND_ID, DEMAND_TIME]), train[model.label])
    folder = state_dir / "production"
    folder.mkdir(parents=True, exist_ok=True)
    path, ref_path = folder / "demand-production.skops", folder / "demand-reference.parquet"
    path.write_bytes(sio.dumps(fitted))
    reference.to_parquet(ref_path, index=False)
    return path, ref_path


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m cli.demo_demand", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nights", type=int, default=12, help="nights to land and run (default 12)")
    parser.add_argument("--rows", type=int, default=720, help="rows per day (default 720: every store x product)")
    parser.add_argument("--drift-day", type=int, default=5, help="the first drifted day, 0-based (default 5)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-adopt", action="store_true", help="start without a champion: nightshift trains v1")
    args = parser.parse_args(argv)
    if args.nights < 1 or args.rows < 100:
        parser.error("--nights must be at least 1 and --rows at least 100")
    return args


def _adopt(console: Console, model: CatalogueModel, settings: Settings, rows: int, seed: int) -> bool:
    """Adopt the team's production model as v1 (champion); False (after saying why) when adopt refused it."""
    from cli.adopt import main as adopt
    from tasks.registry.store import TrackingConfig
    from tasks.registry.versions import alias_state

    console.rule("Adopt the model in production")
    champion = alias_state(TrackingConfig.from_settings(settings), MODEL).champion
    if champion is not None:  # a second run: the history carries over, the nights below change nothing
        console.print(f"{MODEL} already has champion v{champion}: nothing to adopt.", highlight=False)
        return True
    path, reference = production_model(model, settings.state_dir, rows, seed)
    code = adopt([MODEL, "--from", str(path), "--reference", str(reference), "--by", "demand-team",
                  "--reason", "the model we served before nightshift"])
    return code == 0


def _run_nights(console: Console, model: CatalogueModel, settings: Settings, nights: list[date]) -> list[Row]:
    """Each night's model-night in order, behind a progress bar; one demo Row per night."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from cli.demo import DemoNight, Row, gated_on, run_night

    out = []
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total} nights"),
                  TimeElapsedColumn(), console=console, redirect_stdout=False) as progress, \
            contextlib.redirect_stdout(io.StringIO()):
        bar = progress.add_task("starting Prefect…", total=len(nights))
        for night in nights:
            progress.update(bar, description=f"{night:%a %m-%d}")
            row = Row(DemoNight(night, ""), _landed(model, night), *run_night(MODEL, night))
            row.gated_on = gated_on(model, night, settings.state_dir, row.result)
            out.append(row)
            progress.advance(bar)
    return out


def _landed(model: CatalogueModel, night: date) -> str:
    lag = model.labels.lag_days if model.labels else 0
    labeled = night - timedelta(days=lag)
    return f"rows; sales of {labeled:%m-%d}" if labeled >= DEMAND_START else "rows; no sales yet"


def main(argv: list[str] | None = None) -> int:
    """Adopt, land and run the example's nights; print the week and the estimates; returns an exit code."""
    started = time.perf_counter()
    args = _parse_args(argv)
    os.environ.setdefault("NIGHTSHIFT_CATALOGUE_PATH", str(EXAMPLE_CATALOGUE))
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "ERROR")
    warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer", category=UserWarning)
    from nightshift.settings import apply_prefect_defaults, get_settings

    settings = get_settings()
    apply_prefect_defaults(settings)
    from rich.console import Console

    from cli.demo import estimate_table, model_table
    from tasks.catalogue.schema import load_catalogue
    from tasks.registry.store import TrackingConfig

    console = Console(file=sys.stdout, width=None if sys.stdout.isatty() else 180)
    model = load_catalogue(settings.catalogue_path).get(MODEL)
    world = land_world(model, settings.state_dir, args.nights, args.rows, args.drift_day, args.seed)
    console.rule(f"[bold]Bring your own model: {MODEL}, {world['days'][0]} .. {world['days'][-1]}")
    console.print(f"Catalogue: {settings.catalogue_path}   State: {settings.state_dir}   MLflow: "
                  f"{settings.tracking_uri}\nFrom {DEMAND_START + timedelta(days=args.drift_day)}: {world['drift']}",
                  highlight=False)
    if not args.no_adopt and not _adopt(console, model, settings, args.rows, args.seed):
        return 2
    nights = [DEMAND_START + timedelta(days=i) for i in range(args.nights)]
    rows = _run_nights(console, model, settings, nights)
    console.print(model_table(model, rows))
    cfg = TrackingConfig.from_settings(settings)
    if (table := estimate_table(cfg, model, nights[0], nights[-1])) is not None:
        console.print(table)
    failed = [f"{r.night.night}" for r in rows if r.result is None]
    if failed:
        console.print(f"[red]{len(failed)} night(s) failed: {', '.join(failed)}")
    console.print(f"Audit trail: .venv/bin/python -m cli.audit --model-name {MODEL}   Wall time: "
                  f"{time.perf_counter() - started:.1f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
