"""Nightly flow: load → validate → drift/quality → retrain? → train challenger → gate → promote or keep → redeploy."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import date
from functools import partial
from typing import Literal

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from pydantic import BaseModel, ConfigDict, Field, field_validator

from flows.monitor import MonitorParams, MonitorResult, check_batch
from flows.runners import NightTaskRunner
from flows.train import EstimatorParams, TrainParams, train_model
from nightshift.naming import MODEL_NAME_PATTERN, artifact_key
from nightshift.settings import get_settings
from tasks.catalogue.config import GateConfig, Metric, Task
from tasks.data.datasets import DatasetParams, load_dataset_task
from tasks.data.sources import build_window_task
from tasks.model.gate import GateDecision
from tasks.model.metrics import default_metric
from tasks.monitoring.performance import PerformanceCheck
from tasks.registry.approval import decide_close_call
from tasks.registry.audit import decided_by
from tasks.registry.locks import model_lock
from tasks.registry.promote import (
    DeployOutcome,
    PromotionOutcome,
    alias_state_task,
    gate_challenger_task,
    promote,
    record_refusal_task,
)
from tasks.registry.shadow import ShadowRefused, dropped_before_task, start_shadow_task
from tasks.registry.store import TrackingConfig
from tasks.registry.versions import CHALLENGER, find_version_task, set_alias_task

WINDOW_TAG = "nightshift.window_fingerprint"
TRAINING_TAG = "nightshift.training_key"  # window + estimator/grid + folds + seed: what a challenger is trained from
REASONS_TAG = "nightshift.retrain_reasons"


class TriggerEvent(BaseModel):
    """The event that started a run (the drift automation fills this in from the monitor flow's event)."""

    model_config = ConfigDict(extra="forbid")

    event: str = Field(..., min_length=1, max_length=200, title="Event", description="Event name, e.g. nightshift.drift.detected.")
    event_id: str | None = Field(None, max_length=100, title="Event id", description="Prefect event id, to find it in the event feed.")
    occurred: str | None = Field(None, max_length=100, title="Occurred", description="When the event happened (ISO 8601).")
    model_version: str | None = Field(None, max_length=20, title="Model version", description="Champion version the drift was measured against.")
    drift_share: float | None = Field(None, ge=0, le=1, title="Drift share", description="Share of feature columns that drifted.")
    drifted_columns: list[str] = Field(default_factory=list, max_length=1000, title="Drifted columns",
                                       description="Feature columns whose distribution drifted.")

    def summary(self) -> str:
        """One line for the run log."""
        details = [f"drift share {self.drift_share:.2f}" if self.drift_share is not None else "",
                   f"columns {', '.join(self.drifted_columns[:10])}" if self.drifted_columns else "",
                   f"v{self.model_version}" if self.model_version else "", f"event {self.event_id}" if self.event_id else ""]
        return f"{self.event} ({'; '.join(d for d in details if d)})"


class NightlyParams(BaseModel):
    """Parameters of one night (they become the Prefect UI form)."""

    model_config = ConfigDict(extra="forbid")

    model_name: str | None = Field(None, pattern=MODEL_NAME_PATTERN, title="Registered model name",
                                   description="Model to keep honest; default NIGHTSHIFT_MODEL_NAME.")
    batches: list[DatasetParams] = Field(
        default_factory=lambda: [DatasetParams(source="demo", day=1, rows=10_000)], min_length=1,
        title="Labeled batches", description="New labeled data, oldest first; the last one is tonight's batch.")
    reference: DatasetParams | None = Field(
        default_factory=lambda: DatasetParams(source="demo", day=0, rows=20_000), title="Reference data",
        description="Base training data joined to the window (empty = train on the window only).")
    window: int = Field(3, ge=1, le=365, title="Training window",
                        description="How many of the newest batches join the challenger's training data.")
    holdout_fraction: float = Field(0.3, gt=0.05, lt=0.9, title="Holdout share",
                                    description="Share of tonight's batch held out (fresh, unseen) for the gate.")
    force_retrain: bool = Field(False, title="Force retrain", description="Retrain even without drift or degradation.")
    reason: str | None = Field(None, max_length=500, title="Trigger reason",
                               description="Why this run was started (e.g. 'drift' from an automation).")
    trigger: TriggerEvent | None = Field(None, title="Trigger event",
                                         description="Filled in by the drift automation: the event behind this run.")
    estimator: EstimatorParams = Field(
        default_factory=lambda: EstimatorParams(param_grid={"n_estimators": [100], "min_samples_leaf": [3]}),
        title="Challenger estimator", description="Model family and hyper-parameter grid of the challenger.")
    cv_folds: int = Field(3, ge=2, le=10, title="CV folds", description="Stratified folds for the challenger's candidate search.")
    gate: GateConfig = Field(default_factory=GateConfig, title="Promotion gate",
                            description="How much better the challenger must be, and how sure, to replace the champion.")
    seed: int = Field(42, ge=0, le=2**32 - 1, title="Seed", description="Seeds the holdout split, the folds and the estimator.")

    @field_validator("gate")
    @classmethod
    def _no_shadow(cls, gate: GateConfig) -> GateConfig:
        if gate.shadow != "off":
            raise ValueError("gate.shadow judges a challenger on the live traffic of a catalogue model (its served "
                             "rows joined to its labels by id): set it in models.yaml and run model-night; the "
                             "batch-driven nightly flow takes gate.shadow: off")
        return gate


class NightlyResult(BaseModel):
    """One row of the story: what the night saw, decided and left as champion."""

    model_name: str
    batch: str
    rows: int
    validation: str
    drift_share: float | None
    alert_reasons: list[str]
    retrain_reasons: list[str]
    challenger_version: str | None = None
    decision: GateDecision | None = None
    action: Literal["no-retrain", "promoted", "refused", "already-decided", "already-promoted", "superseded",
                    "no-labels", "no-data", "champion-newer", "shadowing"]
    night: date | None = Field(None, description="The calendar night (catalogue runs; batch runs have none).")
    estimated: str | None = Field(None, description="Tonight's metric estimated before its labels: value (band).")
    events: list[str] = Field(default_factory=list, description="Prefect events this night emitted itself.")
    floor: str | None = Field(None, description="The live model under its floor (or chance) on its newest labeled "
                                                "day, and how `previous` measured on the same rows.")
    labels_kept_out: list[str] = Field(default_factory=list, description="Labeled days whose labels look wrong: kept "
                                                                         "out of training and judging, and why.")
    champion_before: str | None
    champion_after: str | None
    shadow: str | None = Field(None, description="The shadow tonight: judged on live traffic, started or ended.")
    deploy: DeployOutcome | None = None
    window_fingerprint: str | None = None
    report: str | None


def retrain_reasons(force: bool, reason: str | None, champion: str | None, checked: MonitorResult | None,
                    more: list[str] | None = None) -> list[str]:
    """Why tonight needs a challenger (empty: keep the champion)."""
    return [*(["no champion yet"] if champion is None else []), *(["forced"] if force else []),
            *([f"trigger: {reason}"] if reason else []), *(checked.reasons if checked else []), *(more or [])]


def training_key(window_fp: str, estimator: EstimatorParams, cv_folds: int, seed: int,
                 task: Task = "classification", selection: str = "roc_auc",
                 valid_ranges: dict[str, tuple[float, float]] | None = None) -> str:
    """What a challenger is made from: the window's rows, the estimator and its grid, the folds, the seed (and,
    beyond the classifier's defaults, the task and the metric that picks the candidate)."""
    import hashlib

    extra = "" if (task, selection) == ("classification", "roc_auc") else f"|{task}|{selection}"
    extra += f"|{sorted((valid_ranges or {}).items())}" if valid_ranges else ""
    return hashlib.sha256(f"{window_fp}|{estimator.model_dump_json()}|{cv_folds}|{seed}{extra}".encode()).hexdigest()


def floor_sentence(version: str, check: PerformanceCheck | None) -> str | None:
    """The champion under its floor (or chance) on tonight's labeled rows, as a sentence; None when it is not."""
    below = check.below_floor() if check else None
    return f"champion v{version} on tonight's labeled rows: {below}" if below else None


def below_floor(name: str, checked: MonitorResult | None) -> tuple[list[str], list[str]]:
    """The champion under its floor (or chance) on tonight's labeled batch: the reason to retrain and the
    nightshift.model.below_floor event sent (both empty when it is not)."""
    from nightshift import events

    check = checked.performance if checked else None
    sentence = floor_sentence(checked.model_version, check) if checked else None
    if checked is None or check is None or sentence is None:
        return [], []
    event = events.emit_model_event(events.BELOW_FLOOR, name, version=checked.model_version, reason=sentence,
                                    payload={"metric": check.metric, "value": check.value, "floor": check.floor})
    get_run_logger().warning("%s: %s", name, sentence)
    return [f"live model below the floor: {sentence}"], [event]


def challenger_for(cfg: TrackingConfig, name: str, dataset: DatasetParams, window_fp: str, reasons: list[str],
                   estimator: EstimatorParams, cv_folds: int, seed: int, tags: dict[str, str] | None = None,
                   task: Task = "classification", selection_metric: Metric | None = None,
                   valid_ranges: dict[str, tuple[float, float]] | None = None) -> str:
    """The version trained on this window with this estimator and grid: found by its tag, else trained once (locked
    per window); a changed grid trains again. The candidate is picked by `selection_metric` (the gate's)."""
    selection: Metric = selection_metric or default_metric(task)
    key = training_key(window_fp, estimator, cv_folds, seed, task, selection, valid_ranges)
    with model_lock(cfg, name, f"train-{key[:16]}"):
        version = find_version_task(cfg, name, TRAINING_TAG, key)
        if version is None:
            version = train_model(TrainParams(
                dataset=dataset, model_name=name, task=task, estimator=estimator, cv_folds=cv_folds, test_size=0.2,
                stratify=True, selection_metric=selection, seed=seed, valid_ranges=valid_ranges or {}, version_tags={WINDOW_TAG: window_fp, TRAINING_TAG: key, **(tags or {}),
                                         REASONS_TAG: "; ".join(reasons)[:5000]})).model_version
        else:
            get_run_logger().info("Window %s was already trained as v%s: reusing it.", window_fp[:12], version)
    set_alias_task(cfg, name, CHALLENGER, version)
    return version


def _summary(result: NightlyResult) -> list[dict[str, str]]:
    d = result.decision
    ci = f"{d.difference:+.4f} [{d.ci_low:+.4f}, {d.ci_high:+.4f}]" if d and d.difference is not None else "-"
    rows = [*([("night", result.night.isoformat())] if result.night else []),
            ("batch", f"{result.batch} ({result.rows} rows)"), ("validation", result.validation),
            ("drift share", "-" if result.drift_share is None else f"{result.drift_share:.2f}"),
            ("alerts", "; ".join(result.alert_reasons) or "none"),
            *([("live model below the floor", result.floor)] if result.floor else []),
            *([("labels kept out", "; ".join(result.labels_kept_out))] if result.labels_kept_out else []),
            ("retrain because", "; ".join(result.retrain_reasons) or "no reason: kept the champion"),
            ("challenger", f"v{result.challenger_version}" if result.challenger_version else "-"),
            ("gate", d.reason if d else "-"), ("improvement (CI)", ci),
            *([("shadow (live traffic)", result.shadow)] if result.shadow else []), ("action", result.action),
            ("champion", f"{result.champion_before or '-'} → {result.champion_after or '-'}"),
            ("deploy", result.deploy.detail if result.deploy else "-")]
    return [{"step": k, "result": v} for k, v in rows]


def finish(result: NightlyResult, note: str) -> NightlyResult:
    """Publish the night's table artifact and its one-line story."""
    create_table_artifact(key=artifact_key("nightly", result.model_name), table=_summary(result),
                          description=f"Night for {result.model_name}: {result.action}")
    print(f"{result.model_name}: {result.action}; champion {result.champion_before or '-'} -> "
          f"{result.champion_after or '-'} ({note})")
    return result


@flow(name="nightly", log_prints=True, task_runner=NightTaskRunner())  # Dask, if set, for the CV search only
def nightly(params: NightlyParams = NightlyParams()) -> NightlyResult:  # noqa: B008 - Prefect renders the default
    """The nightly loop: check tonight's data, retrain when needed, promote only a measurably better challenger.

    Args:
        params: Tonight's batches, the training window, the challenger and the promotion gate.
    """
    settings = get_settings()
    cfg = TrackingConfig.from_settings(settings)
    name = params.model_name or settings.model_name
    champion = alias_state_task(cfg, name).champion
    if params.trigger is not None:
        get_run_logger().info("Started by %s", params.trigger.summary())

    # 1. Tonight's batch: validated, drift and quality checked against the champion (errors stop here).
    tonight = params.batches[-1]
    floor = params.gate.absolute_floor if params.gate.metric == default_metric("classification") else None
    checked = check_batch(MonitorParams(batch=tonight, model_name=name, seed=params.seed, floor=floor)) if champion \
        else None
    # The monitor resolved the label from the champion's contract; a first night uses the dataset's default.
    batch = load_dataset_task(tonight.model_copy(update={"label": tonight.label or (checked and checked.label)}),
                              seed=params.seed)

    # 2. Retrain? Only with a reason, and only with labels to gate on.
    below, told = below_floor(name, checked)
    reasons = retrain_reasons(params.force_retrain, params.reason, champion, checked, below)
    night = partial(NightlyResult, model_name=name, batch=batch.source, rows=len(batch.frame), events=told,
                    floor=below[0].removeprefix("live model below the floor: ") if below else None,
                    validation=checked.validation.summary() if checked else "checked by training",
                    drift_share=checked.drift.drift_share if checked else None,
                    alert_reasons=checked.reasons if checked else [], retrain_reasons=reasons,
                    champion_before=champion, report=checked.drift.html_path if checked else None)
    if not reasons:
        return finish(night(action="no-retrain", champion_after=champion), "nothing drifted or degraded")
    if batch.label not in batch.frame.columns or batch.frame[batch.label].notna().sum() < 50:
        return finish(night(action="no-labels", champion_after=champion), "retrain wanted, no labels to gate on")

    # 3. Challenger trained on the window (reference + newest batches, minus tonight's holdout), once per window.
    history = [load_dataset_task(p, seed=params.seed).frame
               for p in ([params.reference] if params.reference else []) + params.batches[-params.window:-1]]
    window_path, holdout_path, window_fp = build_window_task(history, batch.frame, batch.label, params.holdout_fraction,
                                                       params.seed, settings.state_dir / "windows" / name)
    challenger = challenger_for(cfg, name, DatasetParams(source=window_path, label=batch.label), window_fp, reasons,
                                params.estimator, params.cv_folds, params.seed)

    # 4. Gate on the same fresh holdout, then promote (locked, compare-and-swap, undoable) or keep.
    return gate_and_promote(cfg, name, challenger, champion, holdout_path, params.gate, window_fp, night)


def gate_and_promote(cfg: TrackingConfig, name: str, challenger: str, champion: str | None, holdout_path: str,
                     gate: GateConfig, window_fp: str, night: partial[NightlyResult]) -> NightlyResult:
    """Gate the challenger on the fresh holdout, then promote it (locked, compare-and-swap, undoable) or record why not."""
    settings = get_settings()
    decision = gate_challenger_task(cfg, name, challenger, champion, holdout_path, gate)
    create_markdown_artifact(key=artifact_key("gate", name), markdown=decision.markdown(), description=decision.reason)
    # A close call under `approval: close-calls` waits for a person (or the deadline); else the gate's decision.
    verdict = decide_close_call(cfg, name, decision, gate, night.keywords.get("night"))
    decision = verdict.decision
    night = partial(night, challenger_version=challenger, decision=decision, window_fingerprint=window_fp)
    with decided_by(verdict.by):  # the audit records name who answered
        if not decision.promote:
            refused = record_refusal_task(cfg, name, decision, window_fp)
            return finish(night(action="refused" if refused else "already-decided", champion_after=champion),
                          decision.reason)
        if gate.shadow == "required" and champion is not None:  # live traffic judges it before anyone is served
            return into_shadow(cfg, name, challenger, champion, decision, night)
        outcome = promote(cfg, name, decision, server_url=settings.server_url, token=server_token(),
                          fingerprint=window_fp, night=night.keywords.get("night"))
    action = {"promoted": "promoted", "completed": "promoted"}.get(outcome.status, outcome.status)
    shadow = previous_into_shadow(cfg, name, outcome, night) if gate.shadow == "advisory" else None
    return finish(night(action=action, champion_after=outcome.champion_after, deploy=outcome.deploy, shadow=shadow),
                  outcome.detail)


def server_token() -> str | None:
    """NIGHTSHIFT_SERVER_TOKEN in clear, for the model servers' mutating routes."""
    token = get_settings().server_token
    return token.get_secret_value() if token else None


def into_shadow(cfg: TrackingConfig, name: str, challenger: str, champion: str, decision: GateDecision,
                night: partial[NightlyResult]) -> NightlyResult:
    """gate.shadow required: the challenger that passed the gate is loaded beside the champion on every model
    server (or none: the night fails, nothing changed) instead of being promoted; a later night judges it live. A
    version dropped after a live comparison before is not shadowed again."""
    if challenger == champion:
        return finish(night(action="already-promoted", champion_after=champion), f"v{challenger} is the champion")
    if why := dropped_before_task(cfg, name, challenger):
        note = f"v{challenger} was dropped from shadow before: {why}"
        return finish(night(action="already-decided", champion_after=champion, shadow=note), note)
    detail = start_shadow_task(cfg, name, challenger, champion, night.keywords.get("night") or date.today(),
                               "challenger", decision.reason, server_url=get_settings().server_url,
                               token=server_token(), decision=decision)
    return finish(night(action="shadowing", champion_after=champion, shadow=detail), detail)


def previous_into_shadow(cfg: TrackingConfig, name: str, outcome: PromotionOutcome,
                         night: partial[NightlyResult]) -> str | None:
    """gate.shadow advisory: the champion just replaced shadows its successor until the live comparison of the two
    is recorded; a server that will not load it leaves the promotion as it is (said in the night's table)."""
    if outcome.status != "promoted" or outcome.champion_before is None or outcome.champion_after is None:
        return None
    try:
        return start_shadow_task(cfg, name, outcome.champion_before, outcome.champion_after,
                                 night.keywords.get("night") or date.today(), "previous",
                                 "advisory: the live comparison is recorded beside the promotion",
                                 server_url=get_settings().server_url, token=server_token())
    except ShadowRefused as exc:
        get_run_logger().warning("%s: previous champion not shadowed: %s", name, exc)
        return f"previous champion v{outcome.champion_before} not shadowed: {exc}"


def _parse_args(argv: list[str]) -> NightlyParams:
    parser = argparse.ArgumentParser(prog="python -m flows.nightly", description=nightly.description)
    parser.add_argument("--day", type=int, default=1, help="demo: tonight's day")
    parser.add_argument("--rows", type=int, default=10_000, help="demo: rows per night")
    parser.add_argument("--force", action="store_true", help="retrain even without drift")
    parser.add_argument("--model-name")
    parser.add_argument("--params", help="all parameters as one JSON object")
    args = parser.parse_args(argv)
    if args.params:
        return NightlyParams.model_validate(json.loads(args.params))
    batches = [DatasetParams(source="demo", day=d, rows=args.rows) for d in range(max(1, args.day - 2), args.day + 1)]
    return NightlyParams(model_name=args.model_name, batches=batches, force_retrain=args.force)


if __name__ == "__main__":
    print(nightly(_parse_args(sys.argv[1:])).model_dump_json(indent=2))
