"""`make demo`: a week of the model catalogue's nights for its two demo models, offline, on embedded defaults.

The demo uses the real catalogue (settings.catalogue_path, i.e. models.yaml) and its demo models `demo-churn`
(labels land two days late, joined by customer_id) and `demo-fraud` (labels inline, several files a night). Before
each night it lands that night's files where the catalogue's templates look ({state_dir}/landing/...), then runs
both models' `model-night` flows side by side in two threads, exactly as the `fleet` flow runs them in-process, and
keeps each night's full NightlyResult (the fleet's summary rows carry only action and champion, and a model-night
run inside the fleet's task does not persist its result, so it cannot be read back from the API). The week ends
with one table per model, a picture of the week (tasks.monitoring.charts; logged to MLflow and as a Prefect link artifact) and
where to look.

The week is generated, never scripted: the demo world changes and the nights decide. Churn's customers start
churning for other reasons on the week's third day (its labels show it two nights later) and a campaign brings
other customers on the last day (covariate drift); fraud's feed is down on the third day (nothing lands: a
'no-data' night, then a gap in its training window) and spending and fraud patterns move from the fifth day.

Running it again: the demo models keep their catalogue names (the model server serves models by those names), so
their champions and history carry over, as they would in production. Each run lands and runs the next calendar
week after the last one that fully landed (week 1 is 2026-01-01..07, week 2 the seven days after, ...); the demo
world flips back and forth week by week, so every week has something to react to. A week interrupted half way is
run again from its first night (nights already run are idempotent). Delete the state dir (.nightshift/) to start
over from week 1.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import time
import warnings
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress, TaskID
    from rich.table import Table

    from flows.nightly import NightlyResult
    from nightshift.settings import Settings
    from tasks.catalogue.schema import CatalogueModel
    from tasks.data.demo import DemoDrift
    from tasks.model.gate import GateDecision
    from tasks.monitoring.charts import ModelWeek
    from tasks.registry.store import TrackingConfig

CHURN, FRAUD = "demo-churn", "demo-fraud"
WEEK_NIGHTS = 7
# Days of the week (0 = the first night) on which the demo world changes.
CHURN_CONCEPT_DAY = 2  # churn's concept flips from this day (and back the next week)
CHURN_CROWD_DAY = 6  # a campaign brings churn other customers: covariate and category-mix drift, that day only
FRAUD_OUTAGE_DAY = 2  # nothing lands for fraud
FRAUD_SHIFT_DAY = 4  # fraud's world flips from this day (and back the next week)
GATED = ("no-labels", "promoted", "refused", "already-decided", "already-promoted", "superseded", "shadowing")


@dataclass(frozen=True)
class DemoNight:
    """One night of the demo week: its date, what the world does, and which models' features do not land."""

    night: date
    story: str
    missing: frozenset[str] = field(default_factory=frozenset)


def _index(day: date) -> int:
    from tasks.data.demo import DEMO_START

    return (day - DEMO_START).days


def flipped(day: date, flip_day: int) -> bool:
    """Whether a world that flips on `flip_day` of every week (and back the next week) is flipped on `day`."""
    index = _index(day)
    return index >= flip_day and ((index - flip_day) // WEEK_NIGHTS) % 2 == 0


def world(model_name: str, day: date) -> DemoDrift:
    """The world a demo model's `day` is drawn from (labels landing days later are regenerated from the same one)."""
    from tasks.data.demo import DemoDrift

    if model_name == FRAUD:  # for fraud, `concept` moves spending online and abroad and changes what fraud looks like
        return DemoDrift(concept=1.0 if flipped(day, FRAUD_SHIFT_DAY) else 0.0)
    crowd = _index(day) % WEEK_NIGHTS == CHURN_CROWD_DAY
    return DemoDrift(concept=1.0 if flipped(day, CHURN_CONCEPT_DAY) else 0.0,
                     covariate_shift=1.0 if crowd else 0.0, category_mix=0.5 if crowd else 0.0)


def week_plan(week: int, nights: int = WEEK_NIGHTS) -> list[DemoNight]:
    """The first `nights` nights of demo week `week` (0 = the first), each with what the world does."""
    from tasks.data.demo import DEMO_START

    plan = []
    for d in range(nights):
        story = []
        if d == 0:
            story.append("first night: no models yet" if week == 0 else f"week {week + 1} starts")
        if d == CHURN_CONCEPT_DAY:
            story.append("churn: customers " + ("churn for the old reasons again" if week % 2 else
                                                "start churning for other reasons") + " (labels land in 2 days)")
        if d == FRAUD_OUTAGE_DAY:
            story.append("fraud: feed down, nothing lands")
        if d == FRAUD_SHIFT_DAY:
            story.append("fraud: " + ("spending and fraud move back to the old patterns" if week % 2 else
                                      "spending moves online and abroad, fraud looks different"))
        if d == CHURN_CROWD_DAY:
            story.append("churn: a campaign brings other customers (spend, sessions, plan and region mix)")
        plan.append(DemoNight(DEMO_START + timedelta(days=week * WEEK_NIGHTS + d), "; ".join(story) or "quiet",
                              frozenset({FRAUD} if d == FRAUD_OUTAGE_DAY else ())))
    return plan


def next_week(models: list[CatalogueModel], state_dir: Path) -> int:
    """The first demo week whose last night has not landed for every demo model (0 on a fresh state dir)."""
    from tasks.catalogue.schema import resolve_files
    from tasks.data.demo import DEMO_START

    week = 0
    while all(resolve_files(m.features, DEMO_START + timedelta(days=(week + 1) * WEEK_NIGHTS - 1), state_dir)[1]
              for m in models):
        week += 1
    return week


def land(model: CatalogueModel, night: DemoNight, state_dir: Path, rows: int, seed: int) -> str:
    """Write what lands for `model` tonight where its catalogue entry looks; returns what landed, in words."""
    from tasks.data.demo import DEMO_START, land_demo_night

    if model.name in night.missing:
        return "features missing"
    written = land_demo_night(model, night.night, state_dir, rows=rows, seed=seed, files=3,
                              drift_for=lambda day: world(model.name, day))
    if model.labels is None:
        return f"{rows} rows in {len(written)} files, labeled"
    labeled = night.night - timedelta(days=model.labels.lag_days)
    return f"{rows} rows; labels of {labeled:%m-%d}" if labeled >= DEMO_START else f"{rows} rows; no labels yet"


def run_night(model_name: str, night: date) -> tuple[str, NightlyResult | None, str, float]:
    """One model's night, as the fleet runs it in-process; (state name, result, failure message, seconds)."""
    from flows.model_night import ModelNightParams, model_night

    started = time.perf_counter()
    state = model_night(ModelNightParams(model_name=model_name, night=night), return_state=True)
    took = time.perf_counter() - started
    if not state.is_completed():
        return state.name or "Failed", None, state.message or "", took
    return state.name or "Completed", state.result(), "", took


@dataclass
class Row:
    """One model's night as the demo saw it: what landed, how the run ended, its result and the days it gated on."""

    night: DemoNight
    landed: str
    state: str = "not run"
    result: NightlyResult | None = None
    message: str = ""
    seconds: float = 0.0
    gated_on: str = "-"


def gated_on(model: CatalogueModel, night: date, state_dir: Path, result: NightlyResult | None) -> str:
    """The labeled days a night trained and was judged on, as it saw them (recomputed from the landed files)."""
    from tasks.data.sources import labeled_window

    if result is None or result.action not in GATED:
        return "-"
    window = labeled_window(model, night, state_dir)
    if window.holdout_day is None:
        return "no labeled day yet"
    if not window.window:
        return f"judge {window.holdout_day:%m-%d}; nothing to train on"
    gaps = [d for d in window.missing if d >= window.window[0]]
    return (f"judge {window.holdout_day:%m-%d}; train {window.window[0]:%m-%d}..{window.window[-1]:%m-%d} "
            f"({len(window.window)} d)" + (f", {', '.join(f'{d:%m-%d}' for d in gaps)} missing" if gaps else ""))


def run_week(models: list[CatalogueModel], plan: list[DemoNight], state_dir: Path, rows: int, seed: int,
             progress: Progress, bar: TaskID) -> dict[str, list[Row]]:
    """Land and run each night in order, the models of a night side by side; one row per model and night."""
    from concurrent.futures import ThreadPoolExecutor

    out: dict[str, list[Row]] = {m.name: [] for m in models}
    with ThreadPoolExecutor(max_workers=len(models), thread_name_prefix="model-night") as pool:
        for night in plan:
            progress.update(bar, description=f"{night.night:%a %m-%d}: {night.story}")
            landed = {m.name: land(m, night, state_dir, rows, seed) for m in models}
            futures = {m.name: pool.submit(run_night, m.name, night.night) for m in models}
            for m in models:
                row = Row(night, landed[m.name], *futures[m.name].result())
                row.gated_on = gated_on(m, night.night, state_dir, row.result)
                out[m.name].append(row)
            progress.advance(bar)
    return out


def _reasons(result: NightlyResult) -> str:
    """Why the night retrained, a few words per reason (details are in the run's artifacts)."""
    return "; ".join(dict.fromkeys(r.split(":")[0].split(" (")[0] for r in result.retrain_reasons)) or "-"


def _validation(result: NightlyResult) -> str:
    """The night's data-contract check in a few words."""
    if result.action == "no-data":
        return "no data"
    text = result.validation
    if " rows valid (" in text:
        count = int(text.split(" rows valid (")[1].split(" ")[0])
        return "ok" if not count else f"ok, {count} warning{'s' if count > 1 else ''}"
    return text


def _versus(result: NightlyResult) -> str:
    """Challenger vs champion on the holdout, with the CI of the improvement."""
    d = result.decision
    if d is None:
        return "-"
    versus = (f" vs {d.champion:.3f} ({d.ci_low:+.3f}..{d.ci_high:+.3f})" if d.champion is not None and
              d.ci_low is not None and d.ci_high is not None else " (first model)")
    return f"v{result.challenger_version or '?'} {'-' if d.challenger is None else f'{d.challenger:.3f}'}{versus}"


def _why(decision: GateDecision) -> str:
    """The gate's refusal in a few words (the full reason is in the gate artifact and the audit trail)."""
    reason = decision.reason
    if "misses the" in reason:
        return f"misses the {'floor' if 'floor' in reason else 'ceiling'} {decision.absolute_floor}"
    if reason.startswith("not measurably better"):
        return "not measurably better"
    if "slice" in reason and "regressed" in reason:
        return "a slice regressed"
    return reason.split(":")[0][:60]


def model_table(model: CatalogueModel, rows: list[Row]) -> Table:
    """One model's week: a row per night."""
    from rich.table import Table

    from tasks.model.metrics import higher_is_better

    lag = f"labels land {model.labels.lag_days} days late" if model.labels else "labels come with the rows"
    table = Table(title=f"{model.name} ({model.estimator.name}): {lag}; trains on up to {model.window_days} "
                        f"labeled days, judged on the newest", title_justify="left")
    for column in ("night", "landed", "validation", "drift", "retrain because", "gated on",
                   "challenger vs champion (CI)", "action", "champion", "took"):
        table.add_column(column, overflow="fold", justify="right" if column == "took" else "left")
    for row in rows:
        r, day, took = row.result, f"{row.night.night:%a %m-%d}", f"{row.seconds:.0f} s"
        if r is None:
            table.add_row(day, row.landed, "-", "-", "-", "-", row.message[:300], f"[red]{row.state}", "-", took)
            continue
        colour = {"promoted": "green", "refused": "yellow", "no-data": "red"}.get(r.action)
        action = f"[{colour}]{r.action}[/]" if colour else r.action
        if r.decision is not None and not r.decision.promote:
            action += f": {_why(r.decision)}"
        elif r.decision is not None and r.decision.reason.startswith("both ") and r.action == "promoted":
            action += ": both below the floor" if higher_is_better(r.decision.metric) else ": both above the ceiling"
        table.add_row(day, row.landed, _validation(r), "-" if r.drift_share is None else f"{r.drift_share:.2f}",
                      _reasons(r), row.gated_on, _versus(r), action,
                      f"v{r.champion_after}" if r.champion_after else "-", took)
    return table


def estimate_table(cfg: TrackingConfig, model: CatalogueModel, first: date, last: date) -> Table | None:
    """The model's metric estimated before its labels (CBPE) beside the realized one once they landed, per day."""
    from rich.table import Table

    from tasks.registry.quality import recorded_estimates, recorded_quality

    estimates, realized = recorded_estimates(cfg, model.name), recorded_quality(cfg, model.name)
    days = sorted(d for d in {*estimates, *realized} if first - timedelta(days=WEEK_NIGHTS) <= d <= last)
    if model.labels is None or not days:
        return None
    method = "DLE" if model.task == "regression" else "CBPE"
    table = Table(title=f"{model.name}: {model.monitor.metric} estimated before the labels ({method}, no labels used) vs "
                        f"realized once they landed {model.labels.lag_days} days later", title_justify="left")
    for column in ("day", "version", "estimated (95% band)", "realized", "error", "inside band"):
        table.add_column(column)
    for day in days:
        e, q = estimates.get(day), realized.get(day)
        value = q.check.batch_metrics.get(model.monitor.metric) if q and q.check else None
        comparable = e is not None and value is not None and q is not None and q.version == e.version
        due = f"labels due {day + timedelta(days=model.labels.lag_days):%m-%d}"
        table.add_row(f"{day:%a %m-%d}", f"v{e.version if e else q.version if q else '?'}",
                      f"{e.value:.3f} ({e.lower:.3f}..{e.upper:.3f})" if e else "- (no champion that night)",
                      f"{value:.3f}" if value is not None else due,
                      f"{value - e.value:+.3f}" if comparable else "-",  # type: ignore[operator, union-attr]
                      ("yes" if e.lower <= value <= e.upper else "[yellow]no") if comparable else "-")  # type: ignore
    return table


def model_week(cfg: TrackingConfig, model: CatalogueModel, rows: list[Row], state_dir: Path) -> ModelWeek:
    """One model's row of the week picture: its nights, and the champion's metric realized and estimated per day."""
    from tasks.data.sources import night_dir
    from tasks.monitoring.charts import Band, ModelWeek, NightPoint
    from tasks.registry.quality import monitored_metric, recorded_estimates, recorded_quality

    metric, days = model.monitor.metric, {row.night.night for row in rows}
    nights = [NightPoint(row.night.night) if (r := row.result) is None else
              NightPoint(row.night.night, r.action, r.drift_share, r.decision.challenger if r.decision else None,
                         r.decision.champion if r.decision else None, r.challenger_version) for row in rows]
    if model.labels is None:  # labels come with the rows: the monitor measured the champion on the night's batch
        measured = monitored_metric(cfg, model.name, metric)
        staged = {day: str(night_dir(state_dir, model, day) / "features.parquet") for day in days}  # stage_features'
        realized = {day: measured[source] for day, source in staged.items() if source in measured}
        how = "realized (tonight's labels)"
    else:
        realized = {q.day: q.check.batch_metrics[metric] for q in recorded_quality(cfg, model.name).values()
                    if q.day in days and q.check and metric in q.check.batch_metrics}
        how = f"realized (labels {model.labels.lag_days} days later)"
    estimated = {e.day: Band(e.value, e.lower, e.upper) for e in recorded_estimates(cfg, model.name).values()
                 if e.day in days and e.metric == metric}
    return ModelWeek(model.name, metric, nights, realized, how, estimated)


def _publish_picture(cfg: TrackingConfig, path: Path, title: str) -> str:
    """The picture as an artifact of a run in MLflow's '<experiment>-demo' experiment and as the Prefect link artifact
    'demo-week' (of this flow run: the UI's Artifacts page lists it); returns the MLflow run id."""
    from prefect.artifacts import create_link_artifact

    from tasks.registry.runs import finish_run, log_artifact, start_run

    demo = cfg.model_copy(update={"experiment_name": f"{cfg.experiment_name}-demo"})
    run_id = start_run(demo, path.stem, tags={"nightshift.kind": "demo-week", "mlflow.note.content": title})
    log_artifact(demo, run_id, path)
    finish_run(demo, run_id)
    create_link_artifact(link=path.resolve().as_uri(), link_text=path.name, key="demo-week",
                         description=f"{title}: drift share, the champion's metric (realized, estimated before the "
                                     f"labels), challengers promoted and refused. Also in MLflow: experiment "
                                     f"'{demo.experiment_name}', run {run_id} (make mlflow-ui).")
    return run_id


def week_picture(cfg: TrackingConfig, models: list[CatalogueModel], rows: dict[str, list[Row]], state_dir: Path,
                 path: Path, title: str) -> str:
    """Draw the week (tasks.monitoring.charts) at `path`, then log it to MLflow and Prefect from a small 'demo-week-picture'
    flow run (a Prefect artifact needs a run); returns the MLflow run id."""
    from prefect import flow

    from tasks.monitoring.charts import week_chart

    week_chart([model_week(cfg, m, rows[m.name], state_dir) for m in models], path, title)
    return flow(name="demo-week-picture", validate_parameters=False)(_publish_picture)(cfg, path, title)


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The demo's options (rows per night, nights, seed), checked before anything starts; a bad one exits 2."""
    parser = argparse.ArgumentParser(prog="python -m cli.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=6_000,
                        help="rows landing per model and night (default 6000; below ~5000 a first model's drift "
                             "reference has <= 1000 rows and drift is decided by p-value tests with "
                             "Benjamini-Hochberg)")
    parser.add_argument("--nights", type=int, default=WEEK_NIGHTS, choices=range(1, WEEK_NIGHTS + 1),
                        metavar="{1..7}", help="run only the week's first nights (default 7)")
    parser.add_argument("--seed", type=int, default=42, help="seeds the demo data (default 42)")
    args = parser.parse_args(argv)
    if args.rows < 100:
        parser.error("--rows must be at least 100")
    return args


def _demo_models(settings: Settings, console: Console) -> list[CatalogueModel] | None:
    """The catalogue's two demo models; None (after saying why) when the catalogue lacks them."""
    from nightshift.errors import ConfigError
    from tasks.catalogue.schema import load_catalogue

    try:
        catalogue = load_catalogue(settings.catalogue_path)
        return [catalogue.get(name) for name in (CHURN, FRAUD)]
    except ConfigError as exc:
        console.print(f"[red]The demo needs the catalogue's demo models: {exc}")
        return None


def _print_plan(console: Console, settings: Settings, cfg: TrackingConfig, models: list[CatalogueModel], week: int,
                plan: list[DemoNight]) -> None:
    """The week's title, where its state lives, the champions carried over and each night's story, before it runs."""
    from tasks.registry.versions import alias_state

    before = {m.name: alias_state(cfg, m.name).champion for m in models}
    console.rule(f"[bold]nightshift demo: week {week + 1} of the catalogue's demo models, "
                 f"{plan[0].night} .. {plan[-1].night}")
    console.print(f"Catalogue: {settings.catalogue_path}   State: {settings.state_dir}   "
                  f"MLflow: {settings.tracking_uri}   Prefect: {os.environ.get('PREFECT_API_URL') or 'ephemeral'}",
                  highlight=False)
    if any(before.values()):
        console.print("Champions carry over from the last run (" +
                      ", ".join(f"{n} v{v}" if v else f"{n} none" for n, v in before.items()) +
                      "): this run lands the next week.", highlight=False)
    for night in plan:
        console.print(f"  {night.night:%a %m-%d}  {night.story}", highlight=False)


def _run_with_progress(console: Console, models: list[CatalogueModel], plan: list[DemoNight], state_dir: Path,
                       rows: int, seed: int) -> dict[str, list[Row]]:
    """run_week behind a progress bar, the embedded Prefect server started first; the flows' stray prints swallowed."""
    from prefect.client.orchestration import get_client
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    # The flows' own prints go to their run logs; with two flows in threads Prefect's print patch can come undone
    # for one of them, so stray prints are swallowed here (the console keeps the real stdout).
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total} nights"),
                  TimeElapsedColumn(), console=console, redirect_stdout=False) as progress, \
            contextlib.redirect_stdout(io.StringIO()):
        bar = progress.add_task("starting Prefect…", total=len(plan))
        with get_client(sync_client=True) as client:  # the embedded server, started before two threads want it
            client.api_healthcheck()
        return run_week(models, plan, state_dir, rows, seed, progress, bar)


def _print_tables(console: Console, cfg: TrackingConfig, models: list[CatalogueModel], rows: dict[str, list[Row]],
                  plan: list[DemoNight]) -> None:
    """The week as it happened: one table per model, then the estimates before the labels beside the realized."""
    for m in models:
        console.print(model_table(m, rows[m.name]))
    for m in models:
        if (table := estimate_table(cfg, m, plan[0].night, plan[-1].night)) is not None:
            console.print(table)
    console.print("The estimate sees covariate drift but not a change in how churn follows the features (concept "
                  "drift): only the labels show that.", highlight=False)


def _print_where_to_look(console: Console, settings: Settings, cfg: TrackingConfig, models: list[CatalogueModel],
                         rows: dict[str, list[Row]], last: date, week: int, picture: Path, picture_run: str) -> None:
    """Where to look next: the UIs, the audit trails, the landed files, the latest drift report and the picture."""
    reports = [r.result.report for rs in rows.values() for r in rs if r.result and r.result.report]
    console.rule("Where to look")
    api = os.environ.get("PREFECT_API_URL")  # on the stack (make stack): its servers, already up
    prefect_ui = f"{api.removesuffix('/api')}  (make stack)" if api else "make server      → http://127.0.0.1:4200"
    mlflow_ui = (f"{cfg.tracking_uri}  (make stack)" if cfg.tracking_uri.startswith("http")
                 else "make mlflow-ui   → http://127.0.0.1:5000")
    console.print(f"Prefect UI:  {prefect_ui} (model-night runs: validation, drift and gate artifacts)", highlight=False)
    console.print(f"MLflow UI:   {mlflow_ui} (runs, model versions and aliases, audit experiment)", highlight=False)
    if settings.server_url:
        console.print(f"Model server: {settings.server_url} (the champions hot-swapped in: /models)", highlight=False)
    if stack_env := os.environ.get("NIGHTSHIFT_STACK_CLIENT_ENV"):  # the commands below then need the stack's logins
        console.print(f"On the stack: run the commands below after `set -a; . {stack_env}; set +a`", highlight=False)
    for m in models:
        console.print(f"Audit trail: .venv/bin/python -m cli.audit --model-name {m.name}")
    console.print(f"Landed files: {settings.state_dir / 'landing'}  (.venv/bin/python -m cli.catalogue resolve --date "
                  f"{last})", highlight=False)
    if reports:
        console.print(f"Latest drift report: {reports[-1]}", highlight=False)
    console.print(f"Week picture: {picture}  (drift, the champion's metric realized and estimated, promotions and "
                  f"refusals; MLflow experiment {cfg.experiment_name}-demo run {picture_run}, Prefect artifact "
                  f"demo-week)", highlight=False, soft_wrap=True)
    console.print(f"Run `make demo` again for week {week + 2}: the champions carry over.")


def main(argv: list[str] | None = None) -> int:
    """Land and run a week of the catalogue's demo models, print one table per model; returns an exit code."""
    started = time.perf_counter()
    args = _parse_args(argv)
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "ERROR")  # the tables tell the story; the UI has the logs
    warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer", category=UserWarning)
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")  # on a tracking server: its run links
    import logging

    logging.getLogger("mlflow.store.model_registry.abstract_store").setLevel(logging.WARNING)  # "Waiting up to 300 s"
    from nightshift.settings import apply_prefect_defaults, get_settings

    settings = get_settings()
    apply_prefect_defaults(settings)  # before anything imports prefect
    from rich.console import Console

    from tasks.registry.store import TrackingConfig

    console = Console(file=sys.stdout, width=None if sys.stdout.isatty() else 180)
    if (models := _demo_models(settings, console)) is None:
        return 2
    week = next_week(models, settings.state_dir)
    plan = week_plan(week, args.nights)
    cfg = TrackingConfig.from_settings(settings)
    _print_plan(console, settings, cfg, models, week, plan)
    rows = _run_with_progress(console, models, plan, settings.state_dir, args.rows, args.seed)
    _print_tables(console, cfg, models, rows, plan)
    picture = settings.reports_dir / f"demo-week-{plan[0].night}.png"
    picture_run = week_picture(cfg, models, rows, settings.state_dir, picture,
                               f"nightshift demo: week {week + 1}, {plan[0].night} .. {plan[-1].night}")
    _print_where_to_look(console, settings, cfg, models, rows, plan[-1].night, week, picture, picture_run)
    failed = [f"{n} {r.night.night}" for n, rs in rows.items() for r in rs if r.result is None]
    if failed:
        console.print(f"[red]{len(failed)} model-night(s) failed: {', '.join(failed)}")
    console.print(f"Wall time: {time.perf_counter() - started:.1f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
