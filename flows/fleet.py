"""Fleet flow: every enabled catalogue model's night (or a range of nights, in order), a bounded number at a time.
One model failing never stops the others; the run ends Failed, naming them, after all have run."""

from __future__ import annotations

import argparse
import sys
from datetime import date, timedelta
from typing import Any

from prefect import flow, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.exceptions import MissingResult
from prefect.states import Completed, Failed, State
from pydantic import BaseModel, ConfigDict, Field, model_validator

from flows.model_night import ModelNightParams, model_night
from nightshift.settings import get_settings
from tasks.catalogue.schema import load_catalogue_task
from tasks.data.sources import resolve_night

MODEL_NIGHT_DEPLOYMENT = "model-night/model-night"  # flow name / deployment name in prefect.yaml


class FleetParams(BaseModel):
    """Which nights, which models, how many at once, and where they run (a Prefect UI form)."""

    model_config = ConfigDict(extra="forbid")

    night: date | None = Field(None, title="Night", description="Empty: each model's night from this run's "
                                                                "scheduled start, in its own time zone and offset.")
    until: date | None = Field(None, title="Backfill until", description="Run every night from `night` to this "
                                                                         "one, in date order (each night idempotent).")
    models: list[str] = Field(default_factory=list, title="Models", description="Only these (default: all enabled).")
    concurrency: int = Field(2, ge=1, le=64, title="Models at once", description="Nights run side by side.")
    via_deployments: bool = Field(False, title="Spread over workers",
                                  description="Start each model's night as a run of the model-night deployment, "
                                              "so every worker of its pool shares the work; off: in this process.")
    force_retrain: bool = Field(False, title="Force retrain", description="Retrain every model even without drift.")

    @model_validator(mode="after")
    def _range(self) -> FleetParams:
        if self.until is not None and (self.night is None or self.until < self.night):
            raise ValueError("a backfill needs `night` (its first night) on or before `until`")
        if self.until is not None and (self.until - self.night).days > 366:  # type: ignore[operator]
            raise ValueError("a backfill covers at most 367 nights; split longer ranges")
        return self

    def nights(self) -> list[date | None]:
        """The nights to run, oldest first (one None: each model resolves its own)."""
        if self.until is None or self.night is None:
            return [self.night]
        return [self.night + timedelta(days=i) for i in range((self.until - self.night).days + 1)]


class FleetRow(BaseModel):
    """One model's night in the fleet's summary."""

    model_name: str
    night: str
    state: str
    action: str | None = None
    champion: str | None = None
    drift_share: float | None = None
    note: str = ""


@task(name="run-model-night", cache_policy=NO_CACHE)
def run_model_night(params: ModelNightParams, via_deployments: bool) -> FleetRow:
    """One model's night, in this process or as a deployment run on any worker; its failure becomes a row."""
    try:
        return _model_night_row(params, via_deployments)
    except Exception as exc:  # e.g. the model-night deployment missing, the API down: this row fails, not the fleet
        return FleetRow(model_name=params.model_name, night=str(params.night or "scheduled"), state="Failed",
                        note=f"{type(exc).__name__}: {str(exc)[:400]}")


def _model_night_row(params: ModelNightParams, via_deployments: bool) -> FleetRow:
    """Run the night and read its outcome (a result another machine stored may be unreadable here)."""
    if via_deployments:
        from prefect.deployments import run_deployment

        run = run_deployment(MODEL_NIGHT_DEPLOYMENT, parameters={"params": params.model_dump(mode="json")},
                             timeout=None, as_subflow=True)
        state: State[Any] = run.state  # type: ignore[assignment]
    else:
        state = model_night(params, return_state=True)
    row = FleetRow(model_name=params.model_name, night=str(params.night or "scheduled"), state=state.name or "?")
    if not state.is_completed():
        return row.model_copy(update={"note": (state.message or "")[:500]})
    try:
        result = state.result(raise_on_failure=False)
    except (MissingResult, OSError, ValueError):  # stored by another machine's worker, in storage not shared here
        return row.model_copy(update={"note": "outcome in the model-night run (its result is not readable here)"})
    decision = getattr(result, "decision", None)
    why = decision.reason if decision else "; ".join(getattr(result, "retrain_reasons", []) or [])
    return row.model_copy(update={"night": str(getattr(result, "night", row.night)),
                                  "action": getattr(result, "action", None),
                                  "champion": getattr(result, "champion_after", None),
                                  "drift_share": getattr(result, "drift_share", None),
                                  "note": (why or getattr(result, "validation", ""))[:500]})


@flow(name="fleet", log_prints=True)
def fleet(params: FleetParams = FleetParams()) -> State[list[FleetRow]]:  # noqa: B008 - Prefect renders the default
    """Run the catalogue's models' nights, `concurrency` at a time; a summary table of every model's outcome.

    Args:
        params: Nights (one, or a backfill range), models, concurrency and where the nights run.
    """
    from prefect.task_runners import ThreadPoolTaskRunner

    catalogue = load_catalogue_task(get_settings().catalogue_path)
    names = params.models or [m.name for m in catalogue.enabled]
    for name in names:
        catalogue.get(name)  # an unknown name fails here, before any night runs
    # No night given: each model's night from this run's scheduled start (not its child run's), in its time zone.
    def night_of(name: str, night: date | None) -> date:
        schedule = catalogue.get(name).schedule
        return resolve_night(night, schedule.timezone, schedule.night_offset_days)

    rows: list[FleetRow] = []
    with ThreadPoolTaskRunner(max_workers=params.concurrency) as runner:
        for night in params.nights():  # nights in order; the models of one night side by side
            futures = [runner.submit(run_model_night, {"params": ModelNightParams(
                model_name=name, night=night_of(name, night), force_retrain=params.force_retrain),
                "via_deployments": params.via_deployments}) for name in names]
            rows += [f.result() for f in futures]
    failed = [r for r in rows if r.state != "Completed"]
    create_table_artifact(key="fleet", table=[r.model_dump() for r in rows],
                          description=f"{len(rows)} model-nights, {len(failed)} failed")
    for r in rows:
        print(f"{r.night} {r.model_name}: {r.action or r.state} (champion {r.champion or '-'}) {r.note}")
    if failed:
        return Failed(message=f"{len(failed)} of {len(rows)} model-nights failed: " +
                      "; ".join(f"{r.model_name} {r.night}: {r.note[:200]}" for r in failed), data=rows)
    return Completed(message=f"{len(rows)} model-nights", data=rows)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m flows.fleet", description=fleet.description)
    parser.add_argument("--night", type=date.fromisoformat, help="YYYY-MM-DD (default: each model's today)")
    parser.add_argument("--until", type=date.fromisoformat, help="backfill every night up to this one")
    parser.add_argument("--models", nargs="*", default=[])
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--via-deployments", action="store_true")
    a = parser.parse_args(sys.argv[1:])
    from flows import fleet as module  # importable by task threads, unlike __main__

    final = module.fleet(module.FleetParams(night=a.night, until=a.until, models=a.models, concurrency=a.concurrency,
                                            via_deployments=a.via_deployments), return_state=True)
    sys.exit(0 if final.is_completed() else 1)
