"""One catalogue model's night, resolved from time: tonight's rows → monitor → labels that landed → retrain?
→ challenger on the newest labeled days → gate on the newest one → promote or keep. A rerun changes nothing."""

from __future__ import annotations

import argparse
import sys
from datetime import date
from functools import partial
from typing import TYPE_CHECKING

from prefect import flow, get_run_logger
from pydantic import BaseModel, ConfigDict, Field

from flows.monitor import MonitorParams, MonitorResult, check_batch
from flows.nightly import (
    NightlyResult,
    TriggerEvent,
    challenger_for,
    finish,
    gate_and_promote,
    retrain_reasons,
    server_token,
)
from flows.runners import NightTaskRunner
from nightshift.naming import MODEL_NAME_PATTERN
from nightshift.settings import get_settings
from tasks.catalogue.schema import SERVED, load_catalogue_task
from tasks.data.datasets import DatasetParams
from tasks.data.sources import (
    build_labeled_window_task,
    emit_missing_data,
    labeled_window_task,
    resolve_night,
    stage_features_task,
)
from tasks.monitoring.estimate import EstimateCheck
from tasks.registry.promote import HOLDOUT_TAG, alias_state_task, champion_is_newer_task
from tasks.registry.quality import inline_labels_task, landed_quality_task, record_estimate_task
from tasks.registry.shadow import judge_shadow_task
from tasks.registry.store import TrackingConfig

if TYPE_CHECKING:
    from pathlib import Path

    from tasks.catalogue.schema import CatalogueModel
    from tasks.data.sources import LabeledWindow, StagedDay, WindowFiles
    from tasks.registry.quality import RealizedQuality
    from tasks.registry.shadow import ShadowNight

MIN_LABELED_ROWS = 50  # fewer labeled rows on either side and the gate could not tell models apart


class ModelNightParams(BaseModel):
    """One model's night (a Prefect UI form): which model, which night; the rest comes from the catalogue."""

    model_config = ConfigDict(extra="forbid")

    model_name: str = Field(..., pattern=MODEL_NAME_PATTERN, title="Model",
                            description="A model of the catalogue (models.yaml).")
    night: date | None = Field(None, title="Night", description="Empty: the scheduled start's date in the model's "
                                                                "time zone, minus its night offset (from now for "
                                                                "a manual run).")
    force_retrain: bool = Field(False, title="Force retrain", description="Retrain even without drift or degradation.")
    reason: str | None = Field(None, max_length=500, title="Trigger reason", description="Why this run was started.")
    trigger: TriggerEvent | None = Field(None, title="Trigger event", description="Filled in by an automation.")
    seed: int = Field(42, ge=0, le=2**32 - 1, title="Seed", description="Seeds sampling, folds and the estimator.")


# One flow run per night: monitoring and training run as this run's tasks, on threads (with NIGHTSHIFT_TASK_RUNNER=dask
# the CV search alone goes to Dask); its result is kept: the fleet reads it back from deployment runs.
@flow(name="model-night", log_prints=True, persist_result=True, task_runner=NightTaskRunner())
def model_night(params: ModelNightParams) -> NightlyResult:
    """Run one catalogue model's night on the data that has landed for it; missing data is an outcome, not a crash.

    Args:
        params: The model and the night (default: resolved from the scheduled start time).
    """
    settings = get_settings()
    cfg = TrackingConfig.from_settings(settings)
    model = load_catalogue_task(settings.catalogue_path).get(params.model_name)
    night = resolve_night(params.night, model.schedule.timezone, model.schedule.night_offset_days)
    champion = alias_state_task(cfg, model.name).champion

    # 1. Tonight's rows (every file its template names), validated and drift-checked against the champion.
    tonight = stage_features_task(model, night, settings.state_dir, settings.served_dir)
    result = partial(NightlyResult, model_name=model.name, night=night, batch=tonight.resolved, rows=tonight.rows,
                     champion_before=champion, report=None, drift_share=None, alert_reasons=[])
    if tonight.missing:
        return _no_data(model, tonight, champion, result)
    checked = _monitor_tonight(model, night, tonight, params.seed) if champion else None  # this flow retrains itself
    if checked and checked.estimate:  # tonight's metric before its labels: compared when they land
        record_estimate_task(cfg, model, night, checked.model_version, checked.estimate)

    # 2. Labels that landed: the champion's quality on each labeled day not measured yet (late ones too, recorded in
    # MLflow; the newest day alerts); the days a challenger would learn from.
    window = labeled_window_task(model, night, settings.state_dir)
    judge = landed_quality_task if model.labels else inline_labels_task  # inline: the monitor measured tonight
    quality = judge(cfg, model, champion, window, night, settings.state_dir) if champion else None
    window, landed, told, below, checked = _judged(model, window, quality, checked, night)  # suspect labels out
    reasons = retrain_reasons(params.force_retrain, params.reason, champion, checked, landed)
    result = partial(_with_checks(result, checked, landed, reasons), events=told, floor=below,
                     labels_kept_out=[r.describe() for r in quality.suspect_records] if quality else [])
    # A version in shadow, judged on the labeled live rows both models scored: promoted, dropped or still waiting.
    shadowed = judge_shadow_task(cfg, model, night, settings.state_dir, settings.served_dir,
                                 quality.kept_out if quality else [], server_url=settings.server_url,
                                 token=server_token()) if champion else None
    if shadowed is not None and shadowed.action == "promoted":
        return _promoted_live(result, shadowed)
    result = partial(result, shadow=shadowed.detail if shadowed else None)
    if kept := _keep_champion(cfg, model.name, champion, params.force_retrain, reasons, window):
        return finish(result(action=kept[0], champion_after=champion), kept[1])
    files = _labeled_files(model, window, settings.state_dir)
    if short := _too_few_labels(files, window):
        return finish(result(action="no-labels", champion_after=champion), short)

    # 3. A challenger trained once per window, gated on the newest labeled day, promoted or refused.
    dataset = DatasetParams(source=files.window_path, label=model.label, exclude_columns=list(model.non_features))
    challenger = challenger_for(cfg, model.name, dataset, files.fingerprint, reasons, model.estimator,
                                model.cv_folds, params.seed, tags={HOLDOUT_TAG: window.holdout_day.isoformat()},
                                task=model.task, selection_metric=model.gate.metric,
                                valid_ranges=model.valid_ranges)
    return gate_and_promote(cfg, model.name, challenger, champion, files.holdout_path, model.gate,
                            files.fingerprint, result)


def _promoted_live(result: partial[NightlyResult], shadowed: ShadowNight) -> NightlyResult:
    """The shadow promoted on its live comparison: tonight's story ends there (the new champion is monitored from
    the next night on)."""
    outcome = shadowed.promotion
    return finish(result(action="promoted", challenger_version=shadowed.state.version, shadow=shadowed.detail,
                         champion_after=outcome.champion_after if outcome else shadowed.state.version,
                         deploy=outcome.deploy if outcome else None), shadowed.detail)


def _no_data(model: CatalogueModel, tonight: StagedDay, champion: str | None,
             result: partial[NightlyResult]) -> NightlyResult:
    """No rows tonight (nothing landed, or files with a header only): an event says so (what is missing, where), the
    champion stays."""
    event = emit_missing_data(model, tonight)
    return finish(result(action="no-data", validation=tonight.describe(), retrain_reasons=[],
                         champion_after=champion, events=[event]), tonight.describe())


def _monitor_tonight(model: CatalogueModel, night: date, tonight: StagedDay, seed: int) -> MonitorResult:
    """The monitor's checks, as tasks of this run, on tonight's staged rows under the catalogue's limits, its alert
    events off (this flow retrains itself); vs served traffic too when the rows are a file. Its messages name the
    landed file(s), not the staged copy it reads."""
    m = model.monitor
    return check_batch(MonitorParams(
        batch=DatasetParams(source=tonight.path, label=model.label), model_name=model.name, seed=seed,
        drift_share_threshold=m.drift_share, max_metric_drop=m.max_metric_drop, metric=m.metric,
        floor=model.gate.absolute_floor if model.gate.metric == m.metric else None,
        sample_rows=m.drift_sample_rows, emit_events=False, labels_land_later=model.labels is not None,
        slice_columns=m.slice_columns, day=night if model.features != SERVED else None,  # vs served: skew
        id_column=next(iter(model.id_columns), None), source_name=tonight.landed))


def _judged(model: CatalogueModel, window: LabeledWindow, quality: RealizedQuality | None,
            checked: MonitorResult | None,
            night: date) -> tuple[LabeledWindow, list[str], list[str], str | None, MonitorResult | None]:
    """What the labels say: the window without days whose labels are suspect, the alert reasons (a champion under
    its floor among them: a reason to retrain), the events sent (labels.suspect reported by the quality step;
    below_floor sent here, with how `previous` did on the same rows), the below-floor sentence, and tonight's
    checks (without their quality when tonight's own labels are kept out)."""
    from nightshift import events

    if checked is not None and checked.performance is not None and quality and night in quality.kept_out:
        checked = checked.model_copy(update={"performance": None, "reasons": [
            r for r in checked.reasons if not r.startswith("performance degraded")]})

    told = [r.event_id for r in quality.suspect if r.event_id] if quality else []
    reasons = quality.alert_reasons() if quality else []
    if model.labels is not None and quality is not None:  # labels landed apart: the newest day measured tonight
        q = quality.newest
        below, check, version, day = quality.below_floor(), q.check if q else None, q.version if q else None, \
            q.day if q else None
        previous = q.previous if q else None
    else:  # labels came with tonight's rows: the monitor measured the champion on them
        check = checked.performance if checked else None
        version, day, previous = checked.model_version if checked else None, night, None
        below = f"champion v{version} on tonight's labeled rows: {b}" if check and (b := check.below_floor()) else None
    if below and check is not None:
        told.append(events.emit_model_event(
            events.BELOW_FLOOR, model.name, version=version, night=night, reason=below,
            payload={"day": day.isoformat() if day else None, "metric": check.metric, "value": check.value,
                     "floor": check.floor, "previous_version": previous.version if previous else None,
                     "previous_value": previous.value if previous else None,
                     "previous_better": bool(previous and previous.better)}))
        reasons.append(f"live model below the floor: {below}")
        get_run_logger().warning("%s: %s", model.name, below)
    return window.without(quality.kept_out) if quality else window, reasons, told, below, checked


def _with_checks(result: partial[NightlyResult], checked: MonitorResult | None, landed: list[str],
                 reasons: list[str]) -> partial[NightlyResult]:
    """The night's result so far, with what tonight's checks and the landed labels found and why to retrain."""
    return partial(result, validation=checked.validation.summary() if checked else "checked by training",
                   drift_share=checked.drift.drift_share if checked else None,
                   alert_reasons=(checked.reasons if checked else []) + landed,
                   retrain_reasons=reasons, report=checked.drift.html_path if checked else None,
                   estimated=_estimated(checked.estimate) if checked and checked.estimate else None)


def _keep_champion(cfg: TrackingConfig, name: str, champion: str | None, force: bool, reasons: list[str],
                   window: LabeledWindow) -> tuple[str, str] | None:
    """Why tonight trains no challenger, as (action, note): no reason to, no labeled days to train and judge on, or
    a champion gated on labels at least as new (unless forced); None when it trains one."""
    if not reasons:
        return "no-retrain", "nothing drifted or degraded"
    if window.holdout_day is None or not window.window:
        return "no-labels", f"retrain wanted: {window.describe()}"
    newer = champion_is_newer_task(cfg, name, champion, window.holdout_day) if champion and not force else None
    return ("champion-newer", newer) if newer else None


def _labeled_files(model: CatalogueModel, window: LabeledWindow, state_dir: Path) -> WindowFiles:
    """The window's labeled days and the holdout day written as files; what was noticed on the way is logged."""
    files = build_labeled_window_task(model, window, state_dir)
    for warning in files.warnings:
        get_run_logger().warning("%s", warning)
    return files


def _too_few_labels(files: WindowFiles, window: LabeledWindow) -> str | None:
    """Why the labeled rows cannot train and judge a challenger (too few on either side); None when they can."""
    if min(files.window_rows, files.holdout_rows) < MIN_LABELED_ROWS:
        return (f"retrain wanted, too few labeled rows ({files.window_rows} to train, {files.holdout_rows} to "
                f"judge): {window.describe()}")
    return None


def _estimated(check: EstimateCheck) -> str:
    """The estimate in a few characters: value (band)."""
    e = check.estimate
    return f"{e.value:.3f} ({e.lower:.3f}..{e.upper:.3f})"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m flows.model_night", description=model_night.description)
    parser.add_argument("model_name")
    parser.add_argument("--night", type=date.fromisoformat, help="YYYY-MM-DD (default: today in the model's zone)")
    parser.add_argument("--force", action="store_true", help="retrain even without drift")
    a = parser.parse_args(sys.argv[1:])
    print(model_night(ModelNightParams(model_name=a.model_name, night=a.night, force_retrain=a.force))
          .model_dump_json(indent=2))
