"""Monitor flow: model's contract → validate the batch → data + prediction drift → performance → alert event."""

from __future__ import annotations

import argparse
import sys
from datetime import datetime, timezone
from pathlib import Path

from prefect import flow, get_run_logger
from prefect.artifacts import create_link_artifact, create_markdown_artifact
from prefect.runtime import flow_run
from pydantic import BaseModel, ConfigDict, Field

from nightshift.errors import DataValidationError
from nightshift.naming import MODEL_NAME_PATTERN, artifact_key, slug
from nightshift.settings import get_settings
from tasks.data import DatasetParams, load_dataset_task
from tasks.drift import PREDICTION_COLUMN, DriftResult, compute_drift_task, sample_rows
from tasks.evaluate import Metric, PerformanceCheck, drift_predictions, performance_check
from tasks.tracking import (CONTRACT_ARTIFACT, REFERENCE_ARTIFACT, TrackingConfig, finish_run_task,
                            load_frame_artifact_task, load_json_artifact_task, load_sklearn_task, log_outputs_task,
                            resolve_version_task, run_metrics, start_run_task)
from tasks.validate import Contract, ValidationReport, validate_batch_task

DRIFT_EVENT = "nightshift.drift.detected"
DEGRADED_EVENT = "nightshift.performance.degraded"


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
        None, ge=0, le=1, title="Allowed metric drop",
        description="Drop of the metric vs the model's test value that counts as degradation; default from settings.")
    metric: Metric = Field("roc_auc", title="Monitored metric", description="Metric compared when the batch has labels.")
    sample_rows: int | None = Field(None, ge=5_000, le=10_000_000, title="Drift sample cap",
                                    description="Rows per side for the drift report; default NIGHTSHIFT_DRIFT_SAMPLE_ROWS.")
    seed: int = Field(42, ge=0, le=2**32 - 1, title="Seed", description="Seeds sampling (and demo data).")


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
    alert: bool
    reasons: list[str]
    mlflow_run_id: str
    events: list[str]



def _alert_reasons(drift: DriftResult, performance: PerformanceCheck | None) -> list[str]:
    reasons = []
    if drift.dataset_drift:
        top = ", ".join(drift.drifted_columns[:5])
        reasons.append(f"data drift: {len(drift.drifted_columns)}/{len(drift.columns)} columns "
                       f"(share {drift.drift_share:.2f} >= {drift.drift_share_threshold:.2f}): {top}")
    if drift.prediction is not None and drift.prediction.drifted:
        reasons.append(f"prediction drift: {drift.prediction.method} {drift.prediction.score:.3f} "
                       f">= {drift.prediction.threshold}")
    if performance is not None and performance.degraded:
        reasons.append(f"performance degraded: {performance.summary()}")
    return reasons


def _emit_events(name: str, version: str, drift: DriftResult, performance: PerformanceCheck | None,
                 reasons: list[str]) -> list[str]:
    """Prefect events a deployment trigger can react to (resource = the model)."""
    from prefect.events import emit_event

    resource = {"prefect.resource.id": f"nightshift.model.{name}", "prefect.resource.name": name,
                "nightshift.model.version": version}
    related = []
    if flow_run.get_id():
        related.append({"prefect.resource.id": f"prefect.flow-run.{flow_run.get_id()}",
                        "prefect.resource.role": "flow-run"})
    ids = []
    if drift.dataset_drift or (drift.prediction is not None and drift.prediction.drifted):
        event = emit_event(DRIFT_EVENT, resource=resource, related=related, payload={
            "drift_share": drift.drift_share, "drifted_columns": drift.drifted_columns,
            "prediction_drift": bool(drift.prediction and drift.prediction.drifted),
            "report": drift.html_path, "reasons": reasons})
        ids.append(str(event.id) if event else DRIFT_EVENT)
    if performance is not None and performance.degraded:
        event = emit_event(DEGRADED_EVENT, resource=resource, related=related, payload={
            "metric": performance.metric, "batch": performance.batch_metrics.get(performance.metric),
            "reference": performance.reference_metrics.get(performance.metric), "reasons": reasons})
        ids.append(str(event.id) if event else DEGRADED_EVENT)
    return ids


@flow(name="monitor", log_prints=True)
def monitor(params: MonitorParams = MonitorParams()) -> MonitorResult:  # noqa: B008 - Prefect renders the default
    """Validate a new batch against the model's contract, measure drift and quality, alert when they cross limits.

    Args:
        params: The batch to check, the model and the alert thresholds.
    """
    logger = get_run_logger()
    settings = get_settings()
    tracking = TrackingConfig.from_settings(settings)
    name = params.model_name or settings.model_name
    cap = params.sample_rows or settings.drift_sample_rows
    share_threshold = params.drift_share_threshold or settings.drift_share_threshold
    max_drop = settings.max_metric_drop if params.max_metric_drop is None else params.max_metric_drop

    # 1. Which model, and what it was trained under.
    version = resolve_version_task(tracking, name)
    contract = Contract.model_validate(load_json_artifact_task(tracking, version.run_id, CONTRACT_ARTIFACT))
    reference = load_frame_artifact_task(tracking, version.run_id, REFERENCE_ARTIFACT)
    logger.info("Monitoring %s v%s (%s)", name, version.version, version.alias or "latest version, no champion yet")

    # 2. The new batch, checked against the contract (all failures at once).
    batch_params = params.batch.model_copy(update={"label": params.batch.label or contract.label})
    batch = load_dataset_task(batch_params, seed=params.seed)
    report, clean = validate_batch_task(batch.frame, contract, batch.source)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    report_dir = settings.reports_dir / slug(name) / f"{stamp}-{slug(str(flow_run.get_name() or 'local'))}"
    run_id = start_run_task(tracking, run_name=f"monitor-{name}-v{version.version}", tags={
        "nightshift.kind": "monitor", "nightshift.model_name": name, "nightshift.model_version": version.version,
        "nightshift.batch": batch.source, "nightshift.batch_fingerprint": batch.fingerprint,
        "prefect.flow_run_id": str(flow_run.get_id() or ""), "prefect.flow_run_name": str(flow_run.get_name() or ""),
    })
    create_markdown_artifact(key=artifact_key("validation", name), markdown=report.markdown(),
                             description=report.summary()[:500])
    log_outputs_task(tracking, run_id, texts={"validation/validation.md": report.markdown()},
                     metrics={"validation_errors": len(report.errors), "validation_warnings": len(report.warnings)})
    if not report.ok:
        finish_run_task(tracking, run_id, "FAILED")
        raise DataValidationError(report.summary())
    for warning in report.warnings[:10]:
        logger.warning("%s", warning.message)

    # 3. Data and prediction drift against the version's held-out reference.
    try:
        model = load_sklearn_task(tracking, name, version=version.version)
        current = sample_rows(clean, cap, params.seed).copy()
        proba = model.predict_proba(current[contract.features])
        current[PREDICTION_COLUMN], prediction_kind = drift_predictions(proba, model.classes_)
        drift = compute_drift_task(reference, current, list(contract.numeric), list(contract.categorical),
                                   prediction_kind=prediction_kind, sample_cap=cap, drift_share=share_threshold,
                                   seed=params.seed, report_dir=Path(report_dir))
        drift = drift.model_copy(update={"current_rows": len(clean)})

        # 4. Quality, when the batch carries labels.
        performance = None
        if contract.label in current.columns and current[contract.label].notna().any():
            labeled = current[contract.label].notna().to_numpy()
            performance = performance_check(current.loc[labeled, contract.label].to_numpy(), proba[labeled],
                                            model.classes_, run_metrics(tracking, version.run_id, "test_"),
                                            params.metric, max_drop)
            logger.info("Performance: %s", performance.summary())

        reasons = _alert_reasons(drift, performance)
        metrics = {"drift_share": drift.drift_share, "drifted_columns": len(drift.drifted_columns),
                   "dataset_drift": float(drift.dataset_drift), "alert": float(bool(reasons)),
                   **{f"drift_score.{c.column}": c.score for c in drift.columns}}
        if drift.prediction is not None:
            metrics["prediction_drift_score"] = drift.prediction.score
        if performance is not None:
            metrics.update({f"batch_{k}": v for k, v in performance.batch_metrics.items()})
        log_outputs_task(tracking, run_id, metrics=metrics,
                         files=[(p, "drift") for p in (drift.html_path, drift.json_path) if p],
                         texts={"drift/drift.md": drift.markdown()}, tags={"nightshift.alert": str(bool(reasons))})
    except BaseException:
        finish_run_task(tracking, run_id, "FAILED")
        raise
    finish_run_task(tracking, run_id, "FINISHED")

    # 5. Tell people (artifacts) and automations (events).
    create_markdown_artifact(key=artifact_key("drift", name), markdown=drift.markdown(),
                             description=f"Drift of {batch.name} vs {name} v{version.version}")
    if drift.html_path:
        create_link_artifact(key=artifact_key("drift-report", name), link=Path(drift.html_path).resolve().as_uri(),
                             link_text="Evidently drift report (HTML)")
    events = _emit_events(name, version.version, drift, performance, reasons) if reasons else []
    print(f"{name} v{version.version}: drift share {drift.drift_share:.2f} ({', '.join(drift.drifted_columns) or 'none'}); "
          f"{'ALERT: ' + '; '.join(reasons) if reasons else 'no alert'}")
    return MonitorResult(
        model_name=name, model_version=version.version, model_alias=version.alias, label=contract.label,
        batch_source=batch.source,
        batch_rows=len(batch.frame), batch_fingerprint=batch.fingerprint, validation=report, drift=drift,
        performance=performance, alert=bool(reasons), reasons=reasons, mlflow_run_id=run_id, events=events,
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
