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
from tasks.registry.labels import SUSPECT_DAY_TAG, SuspectLabels, cleared, labels_digest, suspect_records, write_suspect
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


class PreviousQuality(BaseModel):
    """The version `previous` points at, measured on the same day's rows as the champion."""

    version: str
    value: float | None = Field(description="Its metric on the day; None: not measurable.")
    better: bool = Field(description="It measured better than the champion on the same rows.")

    def describe(self, metric: str) -> str:
        """One sentence: how previous did, and how to bring it back if it did better."""
        if self.value is None:
            return f"previous v{self.version}: {metric} not measurable on the same rows"
        if not self.better:
            return f"previous v{self.version} measured {metric} {self.value:.4f} on the same rows: no better"
        return (f"previous v{self.version} measured {metric} {self.value:.4f} on the same rows, better: roll back with "
                f"the rollback deployment or `python -m flows.rollback \"<why>\" --model-name <model>`")


class DayQuality(BaseModel):
    """The champion's realized quality on one labeled day, as recorded (in MLflow) when it was measured."""

    day: date
    night: date = Field(description="The night that measured it.")
    version: str = Field(description="The champion version measured.")
    rows: int = Field(0, description="Labeled rows of the day (0: none usable, recorded all the same).")
    check: PerformanceCheck | None = None
    estimate: DayEstimate | None = Field(None, description="What was estimated for the day before its labels, for "
                                                           "the same version.")
    previous: PreviousQuality | None = Field(None, description="The previous champion on the same rows, measured "
                                                               "when this one is under its floor.")

    def describe(self) -> str:
        """One line: the day, the version and its quality (and how far the estimate was)."""
        quality = self.check.summary() if self.check else "no labeled rows to measure"
        if self.previous is not None and self.check is not None:
            quality += f"; {self.previous.describe(self.check.metric)}"
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
            out |= {"realized_degraded": float(self.check.degraded)}
            out |= {"realized_change": self.check.change} if self.check.change is not None else {}
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
    suspect: list[SuspectLabels] = Field(default_factory=list, description="Days whose labels looked wrong tonight "
                                                                          "(new reports; the same labels once).")
    kept_out: list[date] = Field(default_factory=list, description="Days whose labels are kept out of training and "
                                                                   "judging as of this night (suspect, not cleared).")
    suspect_records: list[SuspectLabels] = Field(default_factory=list, description="Their records, old ones too.")

    def below_floor(self) -> str | None:
        """Why the champion is under its floor (or under chance) on the newest labeled day, with how previous did
        on the same rows; None when it is not (or nothing new was measured)."""
        q = self.newest
        below = q.check.below_floor() if q is not None and q.check is not None else None
        if q is None or below is None:
            return None
        return (f"champion v{q.version} on labeled day {q.day}: {below}" +
                (f"; {q.previous.describe(q.check.metric)}" if q.previous and q.check else ""))

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


class _Scorer:
    """A registry version loaded once, scoring labeled days in its terms."""

    def __init__(self, cfg: Any, model: CatalogueModel, version: str) -> None:
        from tasks.model.metrics import model_classes

        self.loaded = load_version(cfg, model.name, version)
        self.classes = model_classes(self.loaded.model)
        self.reference = run_metrics(cfg, self.loaded.ref.run_id, "test_")
        self.model = model

    def check(self, frame: Any) -> PerformanceCheck | None:
        from tasks.model.metrics import predict_scores
        from tasks.monitoring.performance import batch_performance

        m = self.model
        floor = m.gate.absolute_floor if m.gate.metric == m.monitor.metric else None
        scores = predict_scores(self.loaded.model, frame[self.loaded.contract.features])
        return batch_performance(frame, scores, m.label, self.classes, self.reference, m.monitor.metric,
                                 m.monitor.max_metric_drop, floor)

    def reference_labels(self, cfg: Any) -> Any:
        """The labels of the drift reference stored with the version (what a day's balance is compared with)."""
        from tasks.registry.runs import REFERENCE_ARTIFACT, load_frame_artifact

        try:
            ref = load_frame_artifact(cfg, self.loaded.ref.run_id, REFERENCE_ARTIFACT)
        except Exception:  # noqa: BLE001 - an adopted or old version without a reference: no balance check
            return None
        return self.labels(ref) if self.model.label in ref.columns else None

    def labels(self, frame: Any) -> Any:
        """A frame's labels in the version's terms: its classes (1.0, "1" and 1 alike), or numbers."""
        import pandas as pd

        from tasks.data.contract import align_labels

        if self.classes is None:
            values = pd.to_numeric(frame[self.model.label], errors="coerce")
            return values[values.notna()].to_numpy(dtype=float)
        aligned, _ = align_labels(frame[self.model.label], self.classes)
        return aligned.dropna().to_numpy()


def _previous(cfg: Any, model: CatalogueModel, champion: str, frame: Any, check: PerformanceCheck) -> PreviousQuality | None:
    """How `previous` measures on the same rows, for a champion under its floor (None without a previous)."""
    from tasks.model.metrics import higher_is_better
    from tasks.registry.versions import alias_state

    previous = alias_state(cfg, model.name).previous
    if previous is None or previous == champion or check.value is None:
        return None
    theirs = _Scorer(cfg, model, previous).check(frame)
    value = theirs.value if theirs is not None else None
    better = value is not None and (value > check.value if higher_is_better(check.metric) else value < check.value)
    return PreviousQuality(version=previous, value=value, better=better)


def _suspect(cfg: Any, scorer: _Scorer, reference: Any, frame: Any, day: date, night: date, run_id: str,
             known: SuspectLabels | None) -> SuspectLabels | None:
    """The day's labels checked against the reference's balance: the record that keeps them out (reported once per
    labels; a person's clearance of the same labels holds), or None when they may be used (a record of labels that
    landed again and look right is cleared by this night)."""
    from nightshift import events
    from tasks.monitoring.labels import labels_suspect

    digest = labels_digest(frame, scorer.model.label)
    if known is not None and known.digest == digest:
        return known if known.kept_out else None
    reason = None if reference is None else labels_suspect(reference, scorer.labels(frame), scorer.model.task)
    if reason is None:
        if known is not None and known.kept_out:
            write_suspect(cfg, run_id, cleared(known, f"night {night}", "the labels landed again and look right"))
        return None
    record = SuspectLabels(day=day, night=night, version=scorer.loaded.ref.version, reason=reason, rows=len(frame),
                           digest=digest)
    record.event_id = events.emit_model_event(
        events.LABELS_SUSPECT, scorer.model.name, version=record.version, night=night,
        reason=f"labels of {day} kept out of training and judging: {reason}",
        payload={"day": day.isoformat(), "rows": len(frame), "clear_with": f"python -m cli.labels clear "
                 f"{scorer.model.name} {day} --by <you> --reason <why>"})
    write_suspect(cfg, run_id, record)
    return record


def _measure(cfg: Any, model: CatalogueModel, champion: str, days: list[date], night: date, state_dir: Path,
             estimates: dict[date, DayEstimate], run_id: str,
             suspects: dict[date, SuspectLabels]) -> tuple[list[DayQuality], list[SuspectLabels]]:
    """The champion (loaded once) scored on each day's labeled rows, beside what was estimated before them; days
    whose labels look wrong are reported and kept out instead."""
    scorer = _Scorer(cfg, model, champion)
    reference = scorer.reference_labels(cfg)
    out, suspect = [], []
    for day in days:
        frame, warnings = labeled_day(model, day, state_dir)
        for warning in warnings:
            run_logger(__name__).warning("%s: %s", model.name, warning)
        check = None
        if not frame.empty:
            record = _suspect(cfg, scorer, reference, frame, day, night, run_id, suspects.get(day))
            if record is not None:
                suspect.append(record)
                continue
            check = scorer.check(frame)
        estimate = estimates.get(day)
        previous = _previous(cfg, model, champion, frame, check) if check and check.below_floor() else None
        out.append(DayQuality(day=day, night=night, version=scorer.loaded.ref.version, rows=check.rows if check else 0,
                              check=check, estimate=estimate if estimate and estimate.version == scorer.loaded.ref.version
                              else None, previous=previous))
    return out, suspect


def landed_quality(cfg: Any, model: CatalogueModel, champion: str, window: LabeledWindow, night: date,
                   state_dir: Path) -> RealizedQuality | None:
    """The champion's realized quality on every labeled day not measured yet (late labels too), each day recorded
    in MLflow once; the newest day's check alerts. Days whose labels look wrong are kept out (reported once) until
    cleared. None for labels that come with the rows (the monitor checks those on tonight's batch)."""
    from tasks.registry.locks import model_lock

    if model.labels is None:
        return None
    with model_lock(cfg, model.name, "quality"):  # one reader-writer of the record per model: no day twice
        run_id, records = quality_run(cfg, model.name)
        known = {q.day: q for q in (DayQuality.model_validate_json(r) for r in records.values())}
        suspects = suspect_records(quality_run(cfg, model.name, "")[1])
        days = days_to_measure(model, night, window, set(known), state_dir)
        days = sorted(set(days) | {d for d, r in suspects.items() if r.night <= night and d not in known
                                   and labels_landed(model, d, night, state_dir)})  # suspect: checked again
        estimates = recorded_estimates(cfg, model.name)
        measured, suspect = (_measure(cfg, model, champion, days, night, state_dir, estimates, run_id, suspects)
                             if days else ([], []))
        for q in measured:
            log_realized_quality(cfg, run_id, q.day, q.metrics(), q.model_dump_json())
    as_of = {**{d: q for d, q in known.items() if q.night <= night}, **{q.day: q for q in measured}}
    newest = as_of[max(as_of)] if as_of else None
    quality = RealizedQuality(model_name=model.name, night=night, measured=measured, mlflow_run_id=run_id,
                              newest=newest if newest and newest.night == night else None,
                              suspect=[r for r in suspect if r.night == night],
                              kept_out=sorted(r.day for r in suspect), suspect_records=suspect)
    for q in measured:
        run_logger(__name__).info("%s: realized quality on %s%s", model.name, q.describe(),
                          "" if quality.alerts_on(q.day) else " (labels landed late: reported, not alerting)")
    for r in suspect:
        run_logger(__name__).warning("%s: %s", model.name, r.describe())
    _publish(quality)
    return quality


def inline_labels(cfg: Any, model: CatalogueModel, champion: str, window: LabeledWindow, night: date,
                  state_dir: Path) -> RealizedQuality:
    """For labels that come with the rows (the monitor measures the champion on them): each labeled day of the
    window checked against the champion's reference, days whose labels look wrong reported (once) and kept out."""
    from tasks.registry.locks import model_lock

    days = [*window.window, *([window.holdout_day] if window.holdout_day else [])]
    with model_lock(cfg, model.name, "quality"):
        run_id, tags = quality_run(cfg, model.name, "")
        suspects = suspect_records(tags)
        scorer = _Scorer(cfg, model, champion)
        reference = scorer.reference_labels(cfg)
        found = []
        for day in days:
            frame, _ = labeled_day(model, day, state_dir)
            record = None if frame.empty else _suspect(cfg, scorer, reference, frame, day, night, run_id,
                                                        suspects.get(day))
            found += [record] if record is not None else []
    for r in found:
        run_logger(__name__).warning("%s: %s", model.name, r.describe())
    return RealizedQuality(model_name=model.name, night=night, mlflow_run_id=run_id,
                           suspect=[r for r in found if r.night == night], kept_out=sorted(r.day for r in found),
                           suspect_records=found)


def _publish(quality: RealizedQuality) -> None:
    """A table artifact of the days measured tonight, inside a flow run."""
    from prefect.artifacts import create_table_artifact
    from prefect.runtime import flow_run

    if not (quality.measured or quality.suspect) or not flow_run.get_id():
        return
    rows = [{"day": q.day.isoformat(), "version": q.version, "rows": str(q.rows),
             "quality": q.check.summary() if q.check else "no labeled rows",
             "estimated before labels": f"{q.estimate.value:.3f} ({q.estimate.lower:.3f}..{q.estimate.upper:.3f})"
             if q.estimate else "-",
             "estimate error": "-" if q.estimate_error() is None else f"{q.estimate_error():+.3f}",
             "alerts": "yes" if quality.alerts_on(q.day) else "no (late)"} for q in quality.measured]
    rows += [{"day": r.day.isoformat(), "version": r.version, "rows": str(r.rows), "quality": r.describe(),
              "estimated before labels": "-", "estimate error": "-", "alerts": "labels.suspect"} for r in quality.suspect]
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


def clear_suspect_labels(cfg: TrackingConfig, name: str, day: date, by: str, reason: str) -> SuspectLabels:
    """A person clears a day's suspect labels: the next night measures the champion on them and trains on them.
    Fails with a sentence when the day has no suspect record or was cleared already."""
    from nightshift.errors import NightshiftError
    from tasks.registry.locks import model_lock

    with model_lock(cfg, name, "quality"):
        run_id, records = quality_run(cfg, name, SUSPECT_DAY_TAG)
        raw = records.get(day.isoformat())
        if raw is None:
            raise NightshiftError(f"model '{name}' has no suspect labels on {day}: nothing to clear")
        record = SuspectLabels.model_validate_json(raw)
        if not record.kept_out:
            raise NightshiftError(f"the labels of {day} for '{name}' were cleared already by {record.cleared_by}")
        record = cleared(record, by, reason)
        write_suspect(cfg, run_id, record)
    return record



landed_quality_task = task(landed_quality, name="quality-of-landed-labels", **RETRY)
inline_labels_task = task(inline_labels, name="check-inline-labels", **RETRY)
record_estimate_task = task(record_estimate, name="record-estimate-before-labels", **RETRY)
