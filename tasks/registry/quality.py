"""Realized quality and estimates over time: the champion measured on each labeled day once its labels land
(late labels too), beside what was estimated for that day before them; one MLflow run per model, a point per day."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prefect import task
from pydantic import BaseModel, Field

from nightshift.naming import artifact_key
from nightshift.runlog import run_logger
from tasks.catalogue.schema import CatalogueModel
from tasks.data.sources import LABEL_LOOKBACK_DAYS, LabeledWindow, labeled_day, labels_landed
from tasks.monitoring.estimate import EstimateCheck
from tasks.monitoring.performance import PerformanceCheck
from tasks.registry.runs import run_metrics
from tasks.registry.store import RETRY, TrackingConfig, client, ensure_experiment
from tasks.registry.versions import load_version

if TYPE_CHECKING:
    from datetime import date


QUALITY_MODEL_TAG = "nightshift.quality.model"
QUALITY_DAY_TAG = "nightshift.quality.day."  # + YYYY-MM-DD: that day's record (the days already measured)
ESTIMATE_DAY_TAG = "nightshift.estimate.day."  # + YYYY-MM-DD: the day's metric estimated before its labels


def quality_experiment_name(cfg: TrackingConfig) -> str:
    """The experiment holding every model's realized-quality run: '<experiment>-quality'."""
    return f"{cfg.experiment_name}-quality"


def quality_run(cfg: TrackingConfig, name: str, prefix: str = QUALITY_DAY_TAG) -> tuple[str, dict[str, str]]:
    """The model's realized-quality run (named after it; created on first use) and its records by ISO day (the
    realized ones, or with `prefix` ESTIMATE_DAY_TAG the estimates made before the labels)."""
    from mlflow.entities import Param

    c = client(cfg)
    exp = ensure_experiment(cfg.model_copy(update={"experiment_name": quality_experiment_name(cfg)}))
    runs = c.search_runs([exp], filter_string=f"tags.`{QUALITY_MODEL_TAG}` = '{name}'", max_results=1,
                         order_by=["attributes.start_time ASC"])
    if runs:
        run = runs[0]
    else:
        note = (f"Realized quality of the champion of '{name}' on each labeled day: metrics realized_<metric> at "
                f"step YYYYMMDD, timestamped at that day; estimated_<metric> before the labels landed, and once "
                f"they did estimate_error_<metric> (realized - estimated).")
        run = c.create_run(exp, run_name=name, tags={QUALITY_MODEL_TAG: name, "mlflow.note.content": note})
        c.log_batch(run.info.run_id, params=[Param("model_name", name)])
        c.set_terminated(run.info.run_id)  # a finished run still takes the points of later nights
    records = {k[len(prefix):]: v for k, v in run.data.tags.items() if k.startswith(prefix)}
    return run.info.run_id, records


def log_realized_quality(cfg: TrackingConfig, run_id: str, day: date, metrics: dict[str, float], record: str,
                         prefix: str = QUALITY_DAY_TAG) -> None:
    """One labeled day's point: `metrics` at step YYYYMMDD, timestamped at the day's start (UTC), and its record tag
    in the same batch (a day with a tag has been measured; ESTIMATE_DAY_TAG: estimated)."""
    import math
    from datetime import datetime, timezone

    from mlflow.entities import Metric, RunTag

    at = int(datetime(day.year, day.month, day.day, tzinfo=timezone.utc).timestamp() * 1000)
    step = int(day.strftime("%Y%m%d"))
    points = [Metric(k, float(v), at, step) for k, v in metrics.items() if v is not None and math.isfinite(float(v))]
    client(cfg).log_batch(run_id, metrics=points, tags=[RunTag(f"{prefix}{day.isoformat()}", record)])


def monitored_metric(cfg: TrackingConfig, name: str, metric: str) -> dict[str, float]:
    """`metric` as the monitor measured it on each labeled batch of `name` (its batch_<metric>), by batch source;
    the newest monitoring run of a batch wins. Labels that come with the rows have no other realized record."""
    c = client(cfg)
    exp = c.get_experiment_by_name(cfg.experiment_name)
    if exp is None:
        return {}
    where = f"tags.`nightshift.kind` = 'monitor' and tags.`nightshift.model_name` = '{name}'"
    runs = c.search_runs([exp.experiment_id], filter_string=where, max_results=50_000,
                         order_by=["attributes.start_time ASC"])
    return {r.data.tags.get("nightshift.batch", ""): float(r.data.metrics[f"batch_{metric}"]) for r in runs
            if f"batch_{metric}" in r.data.metrics}


class DayEstimate(BaseModel):
    """The champion's metric on one day estimated from its rows before their labels landed (CBPE for a classifier,
    DLE for a regressor), as recorded."""

    day: date
    version: str = Field(description="The champion version whose probabilities were calibrated.")
    metric: str
    value: float
    lower: float
    upper: float
    rows: int

    def metrics(self) -> dict[str, float]:
        """The day's point on the model's quality run: estimated_<metric> and its band."""
        return {f"estimated_{self.metric}": self.value, f"estimated_{self.metric}_lower": self.lower,
                f"estimated_{self.metric}_upper": self.upper}


class DayQuality(BaseModel):
    """The champion's realized quality on one labeled day, as recorded (in MLflow) when it was measured."""

    day: date
    night: date = Field(description="The night that measured it.")
    version: str = Field(description="The champion version measured.")
    rows: int = Field(0, description="Labeled rows of the day (0: none usable, recorded all the same).")
    check: PerformanceCheck | None = None
    estimate: DayEstimate | None = Field(None, description="What was estimated for the day before its labels, for "
                                                           "the same version.")

    def describe(self) -> str:
        """One line: the day, the version and its quality (and how far the estimate was)."""
        quality = self.check.summary() if self.check else "no labeled rows to measure"
        error = self.estimate_error()
        return f"{self.day} (v{self.version}, measured on night {self.night}): {quality}" + (
            f"; estimated {self.estimate.value:.3f} before the labels, error {error:+.3f}" if self.estimate and
            error is not None else "")

    def realized(self) -> float | None:
        """The realized value of the metric that was estimated."""
        if self.check is None or self.estimate is None:
            return None
        return self.check.batch_metrics.get(self.estimate.metric)

    def estimate_error(self) -> float | None:
        """Realized minus estimated, once both exist."""
        realized = self.realized()
        return None if realized is None or self.estimate is None else realized - self.estimate.value

    def metrics(self) -> dict[str, float]:
        """The day's point on the model's realized-quality run: realized_<metric>, rows, change, degraded, version,
        and the estimate's error."""
        out = {"realized_rows": float(self.rows), "champion_version": float(self.version)}
        if self.check is not None:
            out |= {f"realized_{k}": v for k, v in self.check.batch_metrics.items()}
            out |= {"realized_change": self.check.change, "realized_degraded": float(self.check.degraded)}
        error, realized = self.estimate_error(), self.realized()
        if error is not None and self.estimate is not None and realized is not None:
            out |= {f"estimate_error_{self.estimate.metric}": error,
                    "estimate_inside_band": float(self.estimate.lower <= realized <= self.estimate.upper)}
        return out


class RealizedQuality(BaseModel):
    """The champion's quality on labeled days as of a night: the days measured now and the one that may alert."""

    model_name: str
    night: date
    measured: list[DayQuality] = Field(default_factory=list, description="Days measured by this run, oldest first.")
    newest: DayQuality | None = Field(None, description="The newest labeled day known as of this night, when this "
                                                        "night measured it (a rerun finds its record): its check "
                                                        "alerts. None: nothing new, no alert.")
    mlflow_run_id: str | None = None

    def alerts_on(self, day: date) -> bool:
        """Whether `day` is the day whose check alerts tonight."""
        return self.newest is not None and self.newest.day == day

    def late(self) -> list[DayQuality]:
        """Days measured now whose labels landed after a newer day's: reported, never alerting."""
        return [q for q in self.measured if not self.alerts_on(q.day)]

    def alert_reasons(self) -> list[str]:
        """Degradation on the newest labeled day, once (the night that measured it, and its reruns)."""
        if self.newest is None or self.newest.check is None:
            return []
        return [f"{reason} (labeled day {self.newest.day}, v{self.newest.version})"
                for reason in self.newest.check.alert_reasons()]


def recorded_quality(cfg: TrackingConfig, name: str) -> dict[date, DayQuality]:
    """Every labeled day's realized quality recorded for the model, by day."""
    return {q.day: q for q in (DayQuality.model_validate_json(r) for r in quality_run(cfg, name)[1].values())}


def recorded_estimates(cfg: TrackingConfig, name: str) -> dict[date, DayEstimate]:
    """Every day's estimate made before its labels, as recorded for the model, by day."""
    return {e.day: e for e in (DayEstimate.model_validate_json(r)
                               for r in quality_run(cfg, name, ESTIMATE_DAY_TAG)[1].values())}


def days_to_measure(model: CatalogueModel, night: date, window: LabeledWindow, measured: set[date],
                    state_dir: Path) -> list[date]:
    """Labeled days as of `night` not measured yet, oldest first: every day of the lookback (labels that landed
    late included) from the first day ever measured on; with no record yet, only the day whose labels landed
    tonight (older days are the first champion's training and gate days, not realized quality)."""
    assert model.labels is not None
    newest = night - timedelta(days=model.labels.lag_days)
    if not measured:
        return [newest] if window.holdout_day == newest else []
    lookback = max(LABEL_LOOKBACK_DAYS, model.window_days + 1)
    days = [newest - timedelta(days=back) for back in range(lookback - 1, -1, -1)]
    return [d for d in days if d >= min(measured) and d not in measured and labels_landed(model, d, night, state_dir)]


def _measure(cfg: Any, model: CatalogueModel, champion: str, days: list[date], night: date,
             state_dir: Path, estimates: dict[date, DayEstimate]) -> list[DayQuality]:
    """The champion (loaded once) scored on each day's labeled rows, beside what was estimated before them."""
    from tasks.model.metrics import model_classes, predict_scores
    from tasks.monitoring.performance import batch_performance

    loaded = load_version(cfg, model.name, champion)
    reference = run_metrics(cfg, loaded.ref.run_id, "test_")
    out = []
    for day in days:
        frame, warnings = labeled_day(model, day, state_dir)
        for warning in warnings:
            run_logger(__name__).warning("%s: %s", model.name, warning)
        check = None
        if not frame.empty:
            proba = predict_scores(loaded.model, frame[loaded.contract.features])
            check = batch_performance(frame, proba, model.label, model_classes(loaded.model), reference,
                                      model.monitor.metric, model.monitor.max_metric_drop)
        estimate = estimates.get(day)
        out.append(DayQuality(day=day, night=night, version=loaded.ref.version, rows=check.rows if check else 0,
                              check=check, estimate=estimate if estimate and estimate.version == loaded.ref.version
                              else None))
    return out


def landed_quality(cfg: Any, model: CatalogueModel, champion: str, window: LabeledWindow, night: date,
                   state_dir: Path) -> RealizedQuality | None:
    """The champion's realized quality on every labeled day not measured yet (late labels too), each day recorded
    in MLflow once; the newest day's check alerts. None for labels that come with the rows (the monitor checks
    those on tonight's batch)."""
    from tasks.registry.locks import model_lock

    if model.labels is None:
        return None
    with model_lock(cfg, model.name, "quality"):  # one reader-writer of the record per model: no day twice
        run_id, records = quality_run(cfg, model.name)
        known = {q.day: q for q in (DayQuality.model_validate_json(r) for r in records.values())}
        days = days_to_measure(model, night, window, set(known), state_dir)
        estimates = recorded_estimates(cfg, model.name)
        measured = _measure(cfg, model, champion, days, night, state_dir, estimates) if days else []
        for q in measured:
            log_realized_quality(cfg, run_id, q.day, q.metrics(), q.model_dump_json())
    as_of = {**{d: q for d, q in known.items() if q.night <= night}, **{q.day: q for q in measured}}
    newest = as_of[max(as_of)] if as_of else None
    quality = RealizedQuality(model_name=model.name, night=night, measured=measured, mlflow_run_id=run_id,
                              newest=newest if newest and newest.night == night else None)
    for q in measured:
        run_logger(__name__).info("%s: realized quality on %s%s", model.name, q.describe(),
                          "" if quality.alerts_on(q.day) else " (labels landed late: reported, not alerting)")
    _publish(quality)
    return quality


def _publish(quality: RealizedQuality) -> None:
    """A table artifact of the days measured tonight, inside a flow run."""
    from prefect.artifacts import create_table_artifact
    from prefect.runtime import flow_run

    if not quality.measured or not flow_run.get_id():
        return
    rows = [{"day": q.day.isoformat(), "version": q.version, "rows": str(q.rows),
             "quality": q.check.summary() if q.check else "no labeled rows",
             "estimated before labels": f"{q.estimate.value:.3f} ({q.estimate.lower:.3f}..{q.estimate.upper:.3f})"
             if q.estimate else "-",
             "estimate error": "-" if q.estimate_error() is None else f"{q.estimate_error():+.3f}",
             "alerts": "yes" if quality.alerts_on(q.day) else "no (late)"} for q in quality.measured]
    create_table_artifact(key=artifact_key("quality", quality.model_name), table=rows,
                          description=f"Realized quality of {quality.model_name} measured on night {quality.night}")


def record_estimate(cfg: Any, model: CatalogueModel, day: date, version: str, check: EstimateCheck) -> DayEstimate:
    """Keep a day's estimate (made before its labels) on the model's quality run, once per (day, version): the
    night that measures the day's labels compares them."""
    from tasks.registry.locks import model_lock

    e = check.estimate
    estimate = DayEstimate(day=day, version=version, metric=e.metric, value=e.value, lower=e.lower, upper=e.upper,
                           rows=e.rows)
    with model_lock(cfg, model.name, "quality"):
        run_id, records = quality_run(cfg, model.name, ESTIMATE_DAY_TAG)
        before = records.get(day.isoformat())
        if before is not None and DayEstimate.model_validate_json(before).version == version:
            return DayEstimate.model_validate_json(before)  # a rerun of the night: the first estimate stands
        log_realized_quality(cfg, run_id, day, estimate.metrics(), estimate.model_dump_json(),
                                      ESTIMATE_DAY_TAG)
    return estimate


landed_quality_task = task(landed_quality, name="quality-of-landed-labels", **RETRY)
record_estimate_task = task(record_estimate, name="record-estimate-before-labels", **RETRY)
