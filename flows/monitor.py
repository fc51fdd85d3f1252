"""Monitor flow: model's contract → validate the batch → data + prediction drift → performance → alert event."""

from __future__ import annotations

import argparse
import sys
from datetime import date, datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from prefect import flow, get_run_logger
from prefect.artifacts import create_link_artifact, create_table_artifact
from prefect.runtime import flow_run
from pydantic import BaseModel, ConfigDict, Field

from nightshift.errors import DataValidationError
from nightshift.events import DEGRADED, DRIFT, emit_model_event, night_of_run
from nightshift.naming import MODEL_NAME_PATTERN, artifact_key, slug
from nightshift.settings import get_settings
from tasks.catalogue.config import Metric, check_metric
from tasks.data.datasets import DatasetParams, load_dataset_task
from tasks.data.served import SERVED_PREFIX
from tasks.data.validate import ValidationReport, validate_batch_task
from tasks.model.metrics import default_metric, model_classes
from tasks.monitoring.drift import DriftResult, ReportMode, compute_drift_task, current_sample_task
from tasks.monitoring.estimate import ESTIMATED_DROP_EVENT, EstimateCheck, estimate_batch_task
from tasks.monitoring.performance import PerformanceCheck, batch_performance_task
from tasks.monitoring.skew import SkewReport, skew_check_task
from tasks.registry.runs import (
    REFERENCE_ARTIFACT,
    load_frame_artifact_task,
    log_outputs_task,
    run_closed,
    run_metrics_task,
    start_run_task,
)
from tasks.registry.store import TrackingConfig
from tasks.registry.versions import load_version_task, resolve_version_task

if TYPE_CHECKING:
    import pandas as pd

    from nightshift.settings import Settings
    from tasks.data.contract import Contract
    from tasks.data.datasets import LoadedDataset
    from tasks.monitoring.drift import CurrentSample
    from tasks.registry.versions import LoadedVersion

DRIFT_EVENT = DRIFT  # the names live in nightshift.events; kept importable here
DEGRADED_EVENT = DEGRADED


class MonitorParams(BaseModel):
    """Parameters of one monitoring run (they become the Prefect UI form)."""

    model_config = ConfigDict(extra="forbid")

    batch: DatasetParams = Field(
        default_factory=lambda: DatasetParams(source="demo", day=1), title="Batch",
        description="The new data: a file/URL, or a demo day with a drift setting. Label defaults to the model's.",
    )
    model_name: str | None = Field(None, pattern=MODEL_NAME_PATTERN, title="Registered model name",
                                   description="Model whose champion (or latest version) is monitored.")
    drift_share_threshold: float | None = Field(
        None, gt=0, le=1, title="Dataset drift share",
        description="Share of drifted feature columns that raises an alert; default NIGHTSHIFT_DRIFT_SHARE_THRESHOLD.")
    max_metric_drop: float | None = Field(
        None, ge=0, title="Allowed metric drop",
        description="Drop of the metric vs the model's test value that counts as degradation; default from settings.")
    metric: Metric | None = Field(None, title="Monitored metric",
                                  description="Metric compared when the batch has labels; empty: roc_auc for a "
                                              "classifier, rmse for a regressor.")
    floor: float | None = Field(None, title="Floor of the metric",
                                description="The live model's metric under this (over it, for an error metric) is "
                                            "reported as below the floor; under chance (ROC AUC 0.5, R² 0) always.")
    sample_rows: int | None = Field(None, ge=5_000, le=10_000_000, title="Drift sample cap",
                                    description="Rows per side for the drift report; default NIGHTSHIFT_DRIFT_SAMPLE_ROWS.")
    seed: int = Field(42, ge=0, le=2**32 - 1, title="Seed", description="Seeds sampling (and demo data).")
    emit_events: bool = Field(True, title="Emit alert events",
                              description="Send nightshift.drift.detected / .performance.degraded (drift starts a "
                                          "catalogue model's night). Off when the caller retrains on the result "
                                          "itself.")
    labels_land_later: bool = Field(False, title="Labels land later",
                                    description="The batch has no label column by design (labels land apart, days "
                                                "later): its absence is not a warning.")
    day: date | None = Field(None, title="Day of the batch",
                             description="The UTC day the batch file holds: when the model server captured traffic "
                                         "that day, the two are compared (training-serving skew).")
    id_column: str | None = Field(None, title="Id column", description="Matches batch rows to served rows for the "
                                                                       "skew check (else distributions compared).")
    drift_report: ReportMode = Field("on_drift", title="Evidently HTML report",
                                     description="When to build Evidently's full HTML report (seconds at 100k rows): "
                                                 "on a night with drift, always, or never. The per-column verdicts "
                                                 "are always kept (table artifact and JSON).")
    slice_columns: list[str] = Field(default_factory=list, title="Slice columns",
                                     description="Columns whose categories get their own performance estimate when "
                                                 "the batch has no labels.")
    source_name: str | None = Field(None, max_length=1000, title="Batch name in messages",
                                    description="How validation and drift messages name the batch (e.g. the landed "
                                                "files a staged copy was made from); empty: its source.")


class MonitorResult(BaseModel):
    """What monitoring found and whether it raised an alert."""

    model_name: str
    model_version: str
    model_alias: str | None
    label: str
    batch_source: str
    batch_rows: int
    batch_fingerprint: str
    validation: ValidationReport
    drift: DriftResult
    performance: PerformanceCheck | None
    estimate: EstimateCheck | None = Field(None, description="The metric estimated when the batch has no labels: "
                                                             "from calibrated probabilities (CBPE) or, for a "
                                                             "regressor, a model of its loss (DLE).")
    skew: SkewReport | None = Field(None, description="The batch file vs the traffic served the same day.")
    alert: bool
    reasons: list[str]
    mlflow_run_id: str
    events: list[str]



def _run_tags(name: str, version: str, batch: LoadedDataset) -> dict[str, str]:
    """Tags of the monitoring run in MLflow: what it is, which model version, which batch, which flow run."""
    return {"nightshift.kind": "monitor", "nightshift.model_name": name, "nightshift.model_version": version,
            "nightshift.batch": batch.source, "nightshift.batch_fingerprint": batch.fingerprint,
            "prefect.flow_run_id": str(flow_run.get_id() or ""), "prefect.flow_run_name": str(flow_run.get_name() or "")}


def _report_dir(settings: Settings, name: str) -> Path:
    """Where this run's Evidently reports go: one folder per model and run, named by time and flow run."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return settings.reports_dir / slug(name) / f"{stamp}-{slug(str(flow_run.get_name() or 'local'))}"


def _emit_events(name: str, version: str, drift: DriftResult, performance: PerformanceCheck | None,
                 reasons: list[str], estimate: EstimateCheck | None = None, night: date | None = None) -> list[str]:
    """Prefect events a deployment trigger or a notification can react to (resource = the model; payload: model,
    night (given, else the run's `params.day`, else None) and a one-sentence reason, plus the check's numbers)."""
    day = night or night_of_run("day")
    ids = []
    if drift.dataset_drift or (drift.prediction is not None and drift.prediction.drifted):
        why = f"{name} v{version}: {'; '.join(drift.alert_reasons())}"
        ids.append(emit_model_event(DRIFT_EVENT, name, version=version, night=day, reason=why, payload={
            "drift_share": drift.drift_share, "drifted_columns": drift.drifted_columns,
            "prediction_drift": bool(drift.prediction and drift.prediction.drifted),
            "report": drift.html_path, "reasons": reasons}))
    if performance is not None and performance.degraded:
        why = f"{name} v{version}: {'; '.join(performance.alert_reasons())}"
        ids.append(emit_model_event(DEGRADED_EVENT, name, version=version, night=day, reason=why, payload={
            "metric": performance.metric, "batch": performance.batch_metrics.get(performance.metric),
            "reference": performance.reference_metrics.get(performance.metric), "reasons": reasons}))
    if estimate is not None and estimate.drop is not None and estimate.drop.beyond:
        why = f"{name} v{version}: {estimate.drop.reason}"
        ids.append(emit_model_event(ESTIMATED_DROP_EVENT, name, version=version, night=day, reason=why,
                                    payload={**estimate.drop.payload(), "reasons": reasons}))
    return ids


def _publish_validation(cfg: TrackingConfig, run_id: str, name: str, report: ValidationReport) -> None:
    """The validation report as a Prefect table artifact and an MLflow artifact; errors raise, warnings are logged."""
    create_table_artifact(key=artifact_key("validation", name), table=report.table(), description=report.summary()[:500])
    log_outputs_task(cfg, run_id, texts={"validation/validation.md": report.markdown()}, metrics=report.metrics())
    if not report.ok:
        raise DataValidationError(report.summary())
    for warning in report.warnings[:10]:
        get_run_logger().warning("%s", warning.message)


def _record_results(cfg: TrackingConfig, run_id: str, drift: DriftResult, performance: PerformanceCheck | None,
                    estimate: EstimateCheck | None, reasons: list[str]) -> None:
    """Drift scores, batch metrics (measured or estimated), the drift reports and the alert verdict on the run."""
    if performance is not None:
        get_run_logger().info("Performance: %s", performance.summary())
    if estimate is not None:
        get_run_logger().info("Performance before labels: %s (%s)", estimate.summary(), estimate.calibration)
    log_outputs_task(cfg, run_id, metrics={**drift.metrics(), **(performance.metrics() if performance else {}),
                                           **(estimate.metrics() if estimate else {}), "alert": float(bool(reasons))},
                     files=[(p, "drift") for p in (drift.html_path, drift.json_path) if p],
                     texts={"drift/drift.md": drift.markdown()}, tags={"nightshift.alert": str(bool(reasons))})


def _publish_skew(cfg: TrackingConfig, run_id: str, skew: SkewReport) -> None:
    """Skew between the batch file and served traffic: MLflow metrics, a Prefect table, a warning when found."""
    log_outputs_task(cfg, run_id, metrics=skew.metrics(), texts={"skew/skew.json": skew.model_dump_json(indent=2)})
    create_table_artifact(key=artifact_key("skew", skew.model_name), table=skew.table(),
                          description=skew.summary()[:500])
    (get_run_logger().warning if skew.skewed_columns else get_run_logger().info)("Training-serving skew: %s",
                                                                              skew.summary())


def _publish_drift(name: str, version: str, batch_name: str, drift: DriftResult) -> None:
    """The drift table (every column's test, score and verdict) and a link to Evidently's HTML report."""
    create_table_artifact(key=artifact_key("drift", name), table=drift.table(),
                          description=f"Drift of {batch_name} vs {name} v{version}: {drift.summary()}")
    if drift.html_path:
        create_link_artifact(key=artifact_key("drift-report", name), link=Path(drift.html_path).resolve().as_uri(),
                             link_text="Evidently drift report (HTML)")


def _served(params: MonitorParams) -> bool:
    """Whether the batch is the model server's captured traffic (its labels land later; no skew against itself)."""
    return params.batch.source.startswith(SERVED_PREFIX)


def _load_batch(params: MonitorParams, contract: Contract,
                served_root: Path) -> tuple[LoadedDataset, ValidationReport, pd.DataFrame]:
    """The batch labelled as the contract says, checked against it (all failures at once); a label that lands later
    is not required."""
    batch = load_dataset_task(params.batch.model_copy(update={"label": params.batch.label or contract.label}),
                              seed=params.seed, served_root=served_root)
    unlabeled = (params.labels_land_later or _served(params)) and contract.label not in batch.frame.columns
    report, clean = validate_batch_task(batch.frame, contract, params.source_name or batch.source,
                                        check_label=not unlabeled)
    return batch, report, clean


def _skew(params: MonitorParams, name: str, contract: Contract, clean: pd.DataFrame,
          served_root: Path) -> SkewReport | None:
    """The batch file vs what the server was sent that day; None without a day, or for served traffic itself."""
    if not params.day or _served(params):
        return None
    return skew_check_task(name, params.day, clean, served_root, list(contract.numeric), list(contract.categorical),
                           params.id_column, params.seed)


def _drift(params: MonitorParams, settings: Settings, name: str, loaded: LoadedVersion, reference: pd.DataFrame,
           clean: pd.DataFrame) -> tuple[CurrentSample, DriftResult]:
    """The batch scored by the model (a capped sample), and its data and prediction drift vs the held-out reference."""
    cap = params.sample_rows or settings.drift_sample_rows
    contract = loaded.contract
    current = current_sample_task(loaded.model, clean, contract.features, cap, params.seed)
    drift = compute_drift_task(
        reference, current.frame, list(contract.numeric), list(contract.categorical),
        prediction_kind=current.prediction_kind, sample_cap=cap, seed=params.seed,
        drift_share=params.drift_share_threshold or settings.drift_share_threshold,
        report_dir=_report_dir(settings, name), report=params.drift_report).model_copy(update={"current_rows": len(clean)})
    return current, drift


def _quality(params: MonitorParams, settings: Settings, cfg: TrackingConfig, run_id: str, loaded: LoadedVersion,
             reference: pd.DataFrame, current: CurrentSample) -> tuple[PerformanceCheck | None, EstimateCheck | None]:
    """The metric measured on the batch's labels vs the version's test value; without labels, estimated from
    calibrated probabilities (CBPE), or for a regressor from a model of its loss (DLE)."""
    max_drop = settings.max_metric_drop if params.max_metric_drop is None else params.max_metric_drop
    contract, model = loaded.contract, loaded.model
    metric = params.metric or default_metric(contract.task)
    check_metric(contract.task, metric, "the monitored metric")
    tested = run_metrics_task(cfg, run_id, "test_")
    performance = batch_performance_task(current.frame, current.proba, contract.label, model_classes(model), tested,
                                         metric, max_drop, params.floor)
    estimate = None if performance else estimate_batch_task(  # no labels: CBPE / DLE, label-free
        model, reference, contract.features, contract.label, current.frame, current.proba, metric, tested,
        max_drop, params.slice_columns, params.seed)
    return performance, estimate


def _publish_estimate(name: str, version: str, estimate: EstimateCheck | None) -> None:
    """The metric estimated before the labels, per slice too, as a Prefect table (none when the batch had labels)."""
    if estimate is not None:
        create_table_artifact(key=artifact_key("estimate", name), table=estimate.table(),
                              description=f"{name} v{version} before labels: {estimate.summary()}"[:500])


def _verdict(name: str, version: str, drift: DriftResult, quality: PerformanceCheck | EstimateCheck | None,
             reasons: list[str]) -> str:
    """The run's one-line story: drift, quality (measured or estimated) and the alert."""
    measured = quality.summary() if quality else "quality not checked (no labels)"
    return (f"{name} v{version}: drift share {drift.drift_share:.2f} ({', '.join(drift.drifted_columns) or 'none'}); "
            f"{measured}; {'ALERT: ' + '; '.join(reasons) if reasons else 'no alert'}")


@flow(name="monitor", log_prints=True)
def monitor(params: MonitorParams = MonitorParams()) -> MonitorResult:  # noqa: B008 - Prefect renders the default
    """Validate a new batch against the model's contract, measure drift and quality, alert when they cross limits.

    Args:
        params: The batch to check, the model and the alert thresholds.
    """
    return check_batch(params)


def check_batch(params: MonitorParams) -> MonitorResult:
    """The monitor flow's steps as tasks of the current flow run (the monitor flow's own, or a night's: one flow run
    per night)."""
    settings = get_settings()
    cfg = TrackingConfig.from_settings(settings)
    name = params.model_name or settings.model_name

    # 1. Which model (the champion, else the newest version), and what it was trained under.
    version = resolve_version_task(cfg, name)
    loaded = load_version_task(cfg, name, version.version)
    reference = load_frame_artifact_task(cfg, version.run_id, REFERENCE_ARTIFACT)
    get_run_logger().info("Monitoring %s v%s (%s)", name, version.version,
                          version.alias or "latest version, no champion yet")

    # 2. The new batch, checked against the contract (all failures at once).
    batch, report, clean = _load_batch(params, loaded.contract, settings.served_dir)
    run_id = start_run_task(cfg, run_name=f"monitor-{name}-v{version.version}",
                            tags=_run_tags(name, version.version, batch))
    with run_closed(cfg, run_id):
        _publish_validation(cfg, run_id, name, report)  # errors stop the flow here, the registry untouched
        skew = _skew(params, name, loaded.contract, clean, settings.served_dir)

        # 3. Data and prediction drift against the version's held-out reference; quality when the batch has labels.
        current, drift = _drift(params, settings, name, loaded, reference, clean)
        performance, estimate = _quality(params, settings, cfg, version.run_id, loaded, reference, current)
        quality = performance or estimate  # measured on labels, else estimated without them
        reasons = drift.alert_reasons() + (quality.alert_reasons() if quality else [])
        _record_results(cfg, run_id, drift, performance, estimate, reasons)
        if skew is not None:
            _publish_skew(cfg, run_id, skew)

    # 4. Tell people (artifacts) and automations (events).
    _publish_drift(name, version.version, params.source_name or batch.name, drift)
    _publish_estimate(name, version.version, estimate)
    alerting = bool(reasons) and params.emit_events
    events = _emit_events(name, version.version, drift, performance, reasons, estimate) if alerting else []
    print(_verdict(name, version.version, drift, quality, reasons))
    return MonitorResult(
        model_name=name, model_version=version.version, model_alias=version.alias, label=loaded.contract.label,
        batch_source=batch.source, batch_rows=len(batch.frame), batch_fingerprint=batch.fingerprint,
        validation=report, drift=drift, performance=performance, estimate=estimate, skew=skew, alert=bool(reasons),
        reasons=reasons, mlflow_run_id=run_id, events=events,
    )


def _parse_args(argv: list[str]) -> MonitorParams:
    parser = argparse.ArgumentParser(prog="python -m flows.monitor", description=monitor.description)
    parser.add_argument("--batch", default="demo", help="'demo' or a path/URL to .csv/.parquet")
    parser.add_argument("--day", type=int, default=1, help="demo day")
    parser.add_argument("--rows", type=int, help="demo rows / rows to sample")
    parser.add_argument("--covariate-shift", type=float, default=0.0, help="demo: shift of drifted columns (std units)")
    parser.add_argument("--category-mix", type=float, default=0.0, help="demo: category-mix change 0..1")
    parser.add_argument("--concept", type=float, default=0.0, help="demo: concept drift 0..1")
    parser.add_argument("--model-name", help="registered model name")
    parser.add_argument("--params", help="all parameters as one JSON object (overrides the flags)")
    args = parser.parse_args(argv)
    if args.params:
        return MonitorParams.model_validate_json(args.params)
    drift = {"covariate_shift": args.covariate_shift, "category_mix": args.category_mix, "concept": args.concept}
    return MonitorParams(batch=DatasetParams(source=args.batch, day=args.day, rows=args.rows, drift=drift),
                         model_name=args.model_name)


if __name__ == "__main__":
    result = monitor(_parse_args(sys.argv[1:]))
    print(result.model_dump_json(indent=2, exclude={"validation": {"failures"}, "drift": {"columns"}}))
