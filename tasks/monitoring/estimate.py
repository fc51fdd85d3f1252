"""Performance before labels: the gate's metric (ROC AUC, accuracy) estimated from calibrated probabilities; for a
regressor, MAE or RMSE estimated by a model of its loss (DLE: tasks.monitoring.dle, method and band there).

Method: confidence-based performance estimation (CBPE, as NannyML's). If the model's probabilities are calibrated,
P(y = k | x) = p_k(x), so the expected confusion matrix of a batch is a sum of probabilities:
- accuracy: expected share correct = mean over rows of the calibrated probability of the predicted class;
- ROC AUC: rows sorted by the model's score, expected TP(t) = sum of calibrated p over rows scored >= t and
  FP(t) = sum of (1 - p); the expected ROC curve is TP/sum(p) against FP/sum(1 - p), integrated (tied scores are
  one threshold); multiclass is the macro one-vs-rest average, as the gate computes it.
Calibration is fitted on labeled reference rows (held-out rows the model did not train on): a monotone map per
class (the positive class for binary; multiclass rows renormalised), used only where the raw probabilities are
miscalibrated beyond chance (reference ECE above the 95% quantile of the ECE a calibrated model shows on the same
rows, labels drawn from its own probabilities) and the cross-fitted map lowers the ECE on held-out folds.
NannyML applies only the second check; on calibrated probabilities it then picks isotonic most of the time, and
that map's noise (5000 reference rows) moved the estimates by up to 0.016. Otherwise, or when the reference is
too small, holds one class or is separated perfectly: the identity, with the reason recorded. The calibrator is a
small JSON-able Pydantic object (the map's knots, applied with np.interp), stored with the model version.

Band: two independent errors (tasks.monitoring.cbpe). The labels' chance: labels are drawn row by row from the
calibrated probabilities, the metric is computed for each draw (vectorised: AUC by the rank-sum formula), and the
`level` quantiles of the draws are its part. The calibration's own error: the map comes from a finite reference
and every night it scores shares its error; the calibrator keeps 40 logistic recalibrations of its output refit on
bootstrap resamples of the reference (tasks.monitoring.calibration), the batch's metric is re-estimated under each,
and their standard deviation, times the normal quantile, is added to each side in quadrature. Without it, a
logistic model fitted on 5000 rows (slopes 4-10% low, ECE within chance) was estimated 0.006-0.010 low on average
and its band held the realized value on 53-77% of nights; `make bench BENCH_ARGS="--only bands"` measures both
bands on the demo and demand worlds (docs/benchmarks.md#bands). The band does NOT cover:
- concept drift: if P(y | x) changes, nothing in (x, model) shows it; the estimate keeps the old relation and
  stays put while the realized metric moves (tests/tasks/monitoring/test_estimate.py shows it). Pure label-prior shift is
  the same case. Only labels (realized_vs_estimated) or drift on the inputs can hint at it;
- covariate shift beyond what the recalibration on tonight's shifted inputs extrapolates: CBPE assumes
  P(y | score) stays as on the reference. It does for a well-specified, calibrated model (the logistic case
  followed a 0.120 AUC drop to within 0.004), not for a misspecified one: the demo world's random forest, shifted
  1-1.5 sd, had its accuracy estimated 0.015-0.035 too low with 3,000 or 50,000 calibration rows alike. P(y | x),
  hence P(y | score, x), is unchanged under covariate shift: inputs moved by 0.8 sd or more tonight join the
  calibration (tasks.monitoring.calibration.fit_calibrator), and the band also holds the score-only estimate;
  that held 90-100% of those nights. Smaller shifts keep the score-only map;
- the maps are flat beyond the reference's score range;
- non-random labels: realized values on a labeled subset compare fairly only if labels arrive independently of y.

Why our own implementation instead of nannyml 0.13.1 (it resolves with the current lock): the whole estimator is
numpy plus scikit-learn's IsotonicRegression, while nannyml brings lightgbm, FLAML[automl], category-encoders,
matplotlib, seaborn, kaleido, s3fs/gcsfs, APScheduler, pyfiglet and segment-analytics-python (usage telemetry
unless NML_DISABLE_USAGE_LOGGING is set); its API is chunked DataFrames, its band is +/-3 sampling errors
extrapolated from the reference, and its fitted calibrators are pickled sklearn objects rather than a small record.

A regressor goes the same way (estimate_batch dispatches on the model): Estimate, slices, the drop (a RISE of
RMSE or MAE is the degradation: estimated_drop reads the metric's direction) and realized_vs_estimated
(classes None: the labels are numbers, the "probabilities" the predictions). R² is not estimated (see dle.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, Field

from nightshift.events import ESTIMATED_DROP
from nightshift.runlog import run_logger
from tasks.monitoring.calibration import (
    ESTIMATED_METRICS,
    Calibrator,
    EstimatedMetric,
    EstimationError,
    _as_proba,
    _check_common,
    _class_list,
    _label_indices,
    domain_inputs,
    fit_calibrator,
)
from tasks.monitoring.cbpe import (
    calibration_spread,
    combined_band,
    expected_metric,
    monte_carlo,
    resampled_values,
)
from tasks.monitoring.dle import DLE_METRICS, DLEMetric, LossModel, estimate_loss, fit_loss_model, realized_loss

if TYPE_CHECKING:
    import pandas as pd


ESTIMATED_DROP_EVENT = ESTIMATED_DROP  # the name lives in nightshift.events
MIN_ROWS = 100  # fewer rows: the estimate's band is too wide to act on
MIN_SLICE_ROWS = 200
AnyEstimatedMetric = EstimatedMetric | DLEMetric  # classifier (CBPE) or regressor (DLE)


# --------------------------------------------------------------------------------------------
# Estimation
# --------------------------------------------------------------------------------------------
class Estimate(BaseModel):
    """A metric estimated without labels: expected value, band (Monte Carlo for CBPE, normal for DLE), and how."""

    metric: AnyEstimatedMetric
    value: float = Field(description="Expected metric under the calibrated probabilities (CBPE) or the loss model "
                                     "(DLE).")
    lower: float
    upper: float
    level: float = Field(description="Probability mass of the band (e.g. 0.95).")
    rows: int
    sampling_mean: float = Field(description="Mean of the metric over the Monte Carlo label draws (~ value; DLE: "
                                             "value).")
    sampling_std: float = Field(description="Standard deviation of the metric over the Monte Carlo label draws (DLE: "
                                            "of the estimate's error, sampling and loss model).")
    draws: int = Field(description="Monte Carlo label draws (0 for DLE: a normal band).")
    sampling_lower: float | None = Field(None, description="The band of the labels' chance alone (CBPE: the label "
                                                           "draws' quantiles; DLE: without the loss model's term).")
    sampling_upper: float | None = None
    calibration_std: float = Field(0.0, description="CBPE: standard deviation of the estimate over the calibration's "
                                                    "bootstrap refits (tasks.monitoring.cbpe); 0 without them and for "
                                                    "DLE (its loss model term: tasks.monitoring.dle).")
    shift_moved: float = Field(0.0, description="CBPE: how far recalibrating on tonight's shifted inputs moved the "
                                                "estimate from the score-only one (added to the band); 0 unshifted.")
    calibration: str = Field(description="'monotone', 'identity' or 'uncalibrated' (no calibrator given); 'loss "
                                         "model' for DLE.")
    method: str

    def summary(self) -> str:
        """One line for logs and artifacts."""
        how = "DLE loss model" if self.metric in DLE_METRICS else f"{self.calibration} probabilities"
        return (f"estimated {self.metric} {self.value:.4f} ({self.level:.0%} band {self.lower:.4f}..{self.upper:.4f}) "
                f"on {self.rows} unlabeled rows, {how}")

    def metrics(self) -> dict[str, float]:
        """Numbers for a monitoring run: estimated_<metric> and its band."""
        return {f"estimated_{self.metric}": self.value, f"estimated_{self.metric}_lower": self.lower,
                f"estimated_{self.metric}_upper": self.upper}


def estimate_performance(proba: Any, classes: Sequence, metric: EstimatedMetric = "roc_auc",
                         calibrator: Calibrator | None = None, *, level: float = 0.95, draws: int = 200,
                         seed: int = 0, min_rows: int = MIN_ROWS, inputs: Any = None) -> Estimate:
    """Estimate `metric` on unlabeled rows from the model's probabilities (CBPE), with a band of the labels' chance
    (Monte Carlo) and, when the calibrator carries bootstrap refits, of the calibration's own error.

    Predictions (accuracy) and rankings (ROC AUC) come from the raw probabilities, as the model serves them; the
    chance that each is right comes from the calibrated ones. Without a calibrator the raw ones are trusted.
    `inputs`: the rows' domain_inputs, needed by a calibrator recalibrated on tonight's shifted inputs."""
    _check_common(metric, level, draws)
    raw = _as_proba(proba, classes)
    if len(raw) < min_rows:
        raise EstimationError(f"{len(raw)} rows are too few to estimate {metric} (needs at least {min_rows}).")
    if calibrator is not None and [str(c) for c in calibrator.classes] != [str(c) for c in _class_list(classes)]:
        raise EstimationError(f"the calibrator was fitted for classes {calibrator.classes}, the model predicts "
                              f"{_class_list(classes)}: fit it on this model's reference.")
    mapped = calibrator.mapped(raw) if calibrator is not None else raw
    z = calibrator.shifted(inputs) if calibrator is not None else None
    cal = calibrator.recalibrate(mapped, None, z) if calibrator is not None and calibrator.shift_fit else mapped
    k = raw.shape[1]
    value = expected_metric(raw, cal, metric)
    how = "mean calibrated probability of the predicted class" if metric == "accuracy" else (
        "expected ROC curve from calibrated probabilities" + (" (macro one-vs-rest)" if k > 2 else ""))
    if not np.isfinite(value):
        raise EstimationError(f"ROC AUC is undefined on these {len(raw)} rows: the calibrated probabilities "
                              "expect (almost) no rows of some class.")
    samples = monte_carlo(raw, cal, metric, draws, seed)
    samples = samples[np.isfinite(samples)]
    if len(samples) < draws / 2:
        raise EstimationError(f"{metric} is undefined in {draws - len(samples)} of {draws} label draws on these "
                              f"{len(raw)} rows: too few rows of some class are expected for a band.")
    alpha = (1.0 - level) / 2
    sampled = [float(v) for v in np.quantile(samples, [alpha, 1.0 - alpha])]
    sampled = [min(sampled[0], value), max(sampled[1], value)]
    resampled = resampled_values(raw, mapped, metric, calibrator, z) if calibrator is not None else np.empty(0)
    spread = calibration_spread(resampled)
    moved = abs(value - expected_metric(raw, mapped, metric)) if cal is not mapped else 0.0
    lower, upper = combined_band(value, *sampled, spread, level, moved)
    band = f"{level:.0%} quantiles of {draws} Monte Carlo label draws"
    if len(resampled):
        band += f", widened by the calibration's spread {spread:.4f} over {len(resampled)} bootstrap refits"
    if cal is not mapped:
        band += f" and by {moved:.4f}, how far recalibrating on tonight's shifted inputs moved the estimate"
    return Estimate(metric=metric, value=value, lower=lower, upper=upper, level=level, rows=len(raw),
                    sampling_mean=float(samples.mean()), sampling_std=float(samples.std()), draws=draws,
                    sampling_lower=sampled[0], sampling_upper=sampled[1], calibration_std=spread, shift_moved=moved,
                    calibration=calibrator.method if calibrator is not None else "uncalibrated",
                    method=f"CBPE: {how}; band: {band}")


class SliceEstimate(BaseModel):
    """The estimate within one category of a slice column."""

    column: str
    value: str
    estimate: Estimate


class SkippedSlice(BaseModel):
    """A category that got no estimate, and why (too few rows, metric undefined)."""

    column: str
    value: str
    rows: int
    reason: str


class SliceEstimates(BaseModel):
    """Estimates per category of each slice column, plus the categories skipped."""

    metric: AnyEstimatedMetric
    min_rows: int
    slices: list[SliceEstimate]
    skipped: list[SkippedSlice]

    def get(self, column: str, value: str) -> Estimate | None:
        """The estimate of one category, None if it was skipped or absent."""
        return next((s.estimate for s in self.slices if s.column == column and s.value == value), None)

    def table(self) -> list[dict[str, Any]]:
        """One row per category (skipped ones included, with the reason): a table artifact."""
        rows = [{"column": s.column, "value": s.value, "rows": s.estimate.rows, "estimated": round(s.estimate.value, 4),
                 "lower": round(s.estimate.lower, 4), "upper": round(s.estimate.upper, 4), "note": ""}
                for s in self.slices]
        return rows + [{"column": s.column, "value": s.value, "rows": s.rows, "estimated": None, "lower": None,
                        "upper": None, "note": s.reason} for s in self.skipped]


def estimate_by_slice(frame: pd.DataFrame, proba: Any, classes: Sequence | None, slice_columns: str | Sequence[str],
                      metric: AnyEstimatedMetric = "roc_auc", calibrator: Calibrator | LossModel | None = None, *,
                      min_rows: int = MIN_SLICE_ROWS, level: float = 0.95, draws: int = 200,
                      seed: int = 0, inputs: Any = None) -> SliceEstimates:
    """estimate_performance within every category of each slice column (each column on its own, as the gate
    slices); categories under `min_rows` rows, or where the metric is undefined, are listed as skipped.

    A regressor (classes None): `proba` are its predictions, `calibrator` its fitted LossModel (fit_loss_model),
    `frame` holds the features; each slice averages its rows' expected losses (band as in tasks.monitoring.dle)."""
    columns = [slice_columns] if isinstance(slice_columns, str) else list(slice_columns)
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise EstimationError(f"slice column(s) {missing} not in the batch (columns: {list(frame.columns)[:12]}).")
    if classes is None:
        if not isinstance(calibrator, LossModel) or calibrator.metric != metric:
            raise EstimationError(f"a regressor's {metric} per slice needs its loss model for {metric} "
                                  "(fit_loss_model on the reference), passed as calibrator.")
        losses, loss_model = calibrator.row_losses(frame, proba), calibrator  # each row scored once

        def one(mask: np.ndarray) -> Estimate:
            return Estimate(**loss_model.estimate(losses, mask, level=level, min_rows=min_rows).estimate_fields())
    else:
        _check_common(metric, level, draws)
        raw = _as_proba(proba, classes)
        if len(raw) != len(frame):
            raise EstimationError(f"{len(raw)} rows of probabilities for a batch of {len(frame)} rows: score the "
                                  "same rows.")

        def one(mask: np.ndarray) -> Estimate:
            return estimate_performance(raw[mask], classes, metric, calibrator,  # type: ignore[arg-type]
                                        level=level, draws=draws, seed=seed, min_rows=min_rows,
                                        inputs=None if inputs is None else np.asarray(inputs)[mask])
    slices, skipped = [], []
    for column in columns:
        values = np.asarray(frame[column].astype(str))
        for value in sorted(set(values)):
            mask = values == value
            rows = int(mask.sum())
            if rows < min_rows:
                skipped.append(SkippedSlice(column=column, value=value, rows=rows,
                                            reason=f"{rows} rows < {min_rows}: too few to estimate"))
                continue
            try:
                est = one(mask)
            except EstimationError as exc:
                skipped.append(SkippedSlice(column=column, value=value, rows=rows, reason=str(exc)))
                continue
            slices.append(SliceEstimate(column=column, value=value, estimate=est))
    return SliceEstimates(metric=metric, min_rows=min_rows, slices=slices, skipped=skipped)


# --------------------------------------------------------------------------------------------
# When labels arrive, and what an estimate means for alerting
# --------------------------------------------------------------------------------------------
class RealizedVsEstimated(BaseModel):
    """The metric measured once labels arrived, next to what was estimated before them."""

    metric: AnyEstimatedMetric
    estimated: float
    lower: float
    upper: float
    level: float
    realized: float
    error: float = Field(description="Realized minus estimated.")
    inside_band: bool
    rows: int = Field(description="Rows the estimate was made on.")
    labeled_rows: int = Field(description="Rows whose label arrived (the realized metric's rows).")

    def summary(self) -> str:
        """One line for logs and artifacts."""
        share = "" if self.labeled_rows == self.rows else f" (labels for {self.labeled_rows}/{self.rows} rows)"
        return (f"{self.metric}: realized {self.realized:.4f} vs estimated {self.estimated:.4f} "
                f"({self.level:.0%} band {self.lower:.4f}..{self.upper:.4f}), error {self.error:+.4f}, "
                f"{'inside' if self.inside_band else 'OUTSIDE'} the band{share}")

    def metrics(self) -> dict[str, float]:
        """Numbers for a monitoring run."""
        return {f"realized_{self.metric}": self.realized, f"estimated_{self.metric}": self.estimated,
                f"estimate_error_{self.metric}": self.error,
                f"estimate_inside_band_{self.metric}": float(self.inside_band)}


def realized_vs_estimated(estimate: Estimate, labels: Any, proba: Any, classes: Sequence | None) -> RealizedVsEstimated:
    """Score the estimate once labels arrived: `labels` and `proba` are the estimate's rows in the same order
    (labels joined by request id; missing labels are left out of the realized metric). A regressor: classes None,
    `proba` its predictions, the labels numbers (realized as tasks.model.metrics.regression_metrics)."""
    from tasks.model.metrics import classification_metrics

    if (classes is None) != (estimate.metric in DLE_METRICS):
        raise EstimationError(f"an estimate of {estimate.metric} is scored with " + (
            "classes None and a regressor's predictions." if classes is not None else
            "the classifier's classes (classes None is for a regressor's MAE or RMSE)."))
    if classes is None:
        realized, labeled_rows = realized_loss(estimate.metric, labels, proba, estimate.rows)
    else:
        raw = _as_proba(proba, classes)
        if len(raw) != estimate.rows:
            raise EstimationError(f"the estimate was made on {estimate.rows} rows, {len(raw)} rows of probabilities "
                                  "given: pass the same rows.")
        y = _label_indices(labels, classes, len(raw), allow_missing=True)
        labeled = y >= 0
        if not labeled.any():
            raise EstimationError("no label has arrived for these rows yet: nothing to compare the estimate with.")
        cls = np.asarray(classes)
        labeled_rows = int(labeled.sum())
        realized = classification_metrics(cls[y[labeled]], raw[labeled], cls)[estimate.metric]
        if not np.isfinite(realized):
            raise EstimationError(f"{estimate.metric} is undefined on the {labeled_rows} labeled rows: "
                                  "not every class occurs among them.")
    return RealizedVsEstimated(metric=estimate.metric, estimated=estimate.value, lower=estimate.lower,
                               upper=estimate.upper, level=estimate.level, realized=realized,
                               error=realized - estimate.value,
                               inside_band=bool(estimate.lower <= realized <= estimate.upper), rows=estimate.rows,
                               labeled_rows=labeled_rows)


class EstimatedDrop(BaseModel):
    """Whether the estimated metric got worse than the reference value by more than allowed (fell, or rose for an
    error metric such as RMSE), with the reason."""

    metric: AnyEstimatedMetric
    reference: float
    estimated: float
    lower: float
    upper: float
    level: float
    rows: int
    drop: float = Field(description="How much worse than the reference (positive = worse): reference minus estimated, "
                                    "estimated minus reference for a lower-is-better metric (rmse, mae).")
    threshold: float
    beyond: bool = Field(description="The drop exceeds the threshold (by the point estimate, or the whole band when "
                                     "require_band was set).")
    band_beyond: bool = Field(description="Even the band's best end is more than `threshold` worse than the "
                                          "reference.")
    reason: str
    event: str = ESTIMATED_DROP_EVENT

    def alert_reasons(self) -> list[str]:
        """Why this estimate should raise an alert; empty when it should not."""
        return [self.reason] if self.beyond else []

    def payload(self) -> dict[str, Any]:
        """The event payload for nightshift.performance.estimated_drop."""
        return self.model_dump(exclude={"event"})


def estimated_drop(estimate: Estimate, reference_value: float, threshold: float, *,
                   require_band: bool = False) -> EstimatedDrop:
    """Decide whether the estimate sits more than `threshold` below `reference_value` (the model's test-time
    metric), above it for a lower-is-better metric (rmse, mae); with `require_band`, only when the whole band does."""
    from tasks.model.metrics import higher_is_better

    if not np.isfinite(reference_value):
        raise EstimationError(f"reference {estimate.metric} {reference_value} is not a number: pass the value recorded "
                              "when the model was tested.")
    if not threshold >= 0:
        raise EstimationError(f"threshold {threshold} must be >= 0 (the allowed drop of {estimate.metric}).")
    higher = higher_is_better(estimate.metric)
    sign = 1.0 if higher else -1.0  # drop: positive = worse, in either direction
    drop = float(sign * (reference_value - estimate.value))
    band_beyond = bool(sign * (reference_value - (estimate.upper if higher else estimate.lower)) > threshold)
    beyond = band_beyond if require_band else bool(drop > threshold)
    verdict = "beyond" if beyond else "within"
    if require_band and drop > threshold and not band_beyond:
        verdict += " (the point estimate is beyond, but the band reaches back within it)"
    reason = (f"estimated {estimate.metric} {estimate.value:.4f} ({estimate.level:.0%} band {estimate.lower:.4f}.."
              f"{estimate.upper:.4f}, {estimate.rows} unlabeled rows) vs reference {reference_value:.4f}: "
              f"{'drop' if higher else 'rise'} {drop:+.4f}, {verdict} the allowed {threshold}")
    return EstimatedDrop(metric=estimate.metric, reference=float(reference_value), estimated=estimate.value,
                         lower=estimate.lower, upper=estimate.upper, level=estimate.level, rows=estimate.rows,
                         drop=drop, threshold=threshold, beyond=beyond, band_beyond=band_beyond, reason=reason)


# --------------------------------------------------------------------------------------------
# One unlabeled batch of a registered model, as the monitor sees it
# --------------------------------------------------------------------------------------------
class EstimateCheck(BaseModel):
    """A batch's metric estimated before its labels land: the estimate, the drop vs the model's test value, slices."""

    estimate: Estimate
    calibration: str = Field(description="How the reference's labels calibrated the probabilities, and why (a "
                                         "regressor: the loss model fitted on them).")
    drop: EstimatedDrop | None = Field(None, description="None when the version has no test value of the metric.")
    slices: SliceEstimates | None = None

    def alert_reasons(self) -> list[str]:
        """The estimated drop beyond the allowed one, as a retrain reason; empty otherwise."""
        return [f"estimated performance drop (labels not in yet): {r}" for r in (self.drop.alert_reasons()
                                                                                  if self.drop else [])]

    def summary(self) -> str:
        """One line for logs and artifacts."""
        return self.drop.reason if self.drop else self.estimate.summary()

    def metrics(self) -> dict[str, float]:
        """estimated_<metric>, its band and, against the test value, the estimated drop."""
        return {**self.estimate.metrics(), **({f"estimated_{self.estimate.metric}_drop": self.drop.drop}
                                              if self.drop else {})}

    def table(self) -> list[dict[str, Any]]:
        """The whole batch, then each slice: a table artifact."""
        e = self.estimate
        whole = {"column": "(all rows)", "value": "", "rows": e.rows, "estimated": round(e.value, 4),
                 "lower": round(e.lower, 4), "upper": round(e.upper, 4), "note": self.summary()}
        return [whole, *(self.slices.table() if self.slices else [])]


def estimate_batch(model: Any, reference: pd.DataFrame, features: Sequence[str], label: str, current: pd.DataFrame,
                   proba: Any, metric: str, test_metrics: dict[str, float], max_drop: float,
                   slice_columns: Sequence[str] = (), seed: int = 0) -> EstimateCheck | None:
    """The monitored metric of an unlabeled batch estimated from the model's probabilities, calibrated on the
    version's labeled held-out reference; None for a metric CBPE cannot estimate (f1, log loss). A regressor
    (`proba` its predictions for `current`): MAE or RMSE by DLE, a loss model fitted on the reference; None for r2."""
    from tasks.model.metrics import is_classifier, predict_scores

    classes = list(model.classes_) if is_classifier(model) else None
    if metric not in (DLE_METRICS if classes is None else ESTIMATED_METRICS):
        return None
    fitted: Calibrator | LossModel
    inputs = None
    if classes is not None:
        from tasks.data.contract import align_labels

        aligned, _ = align_labels(reference[label], classes)
        known = aligned.notna().to_numpy()
        ref_proba = model.predict_proba(reference.loc[known, list(features)])
        try:  # tonight's covariate shift: the calibration conditions on the inputs shifted most (calibration.py)
            ref_inputs = domain_inputs(model, reference.loc[known, list(features)])
            inputs = domain_inputs(model, current[list(features)])
        except Exception as exc:  # noqa: BLE001 - a model whose inputs cannot be read: the score alone
            run_logger(__name__).warning("estimate not conditioned on shifted inputs: %s", exc)
            ref_inputs = inputs = None
        fitted = fit_calibrator(ref_proba, aligned[known].to_numpy().astype(np.asarray(classes).dtype), classes,
                                seed=seed, reference_inputs=ref_inputs, current_inputs=inputs)
    try:
        if classes is None:  # DLE: a model of the loss fitted out-of-fold on the reference (too few rows: no estimate)
            fitted = fit_loss_model(reference, features, label, predict_scores(model, reference[list(features)]),
                                    metric, seed=seed)  # type: ignore[arg-type]
            estimate = Estimate(**estimate_loss(fitted, current, proba).estimate_fields())
        else:
            estimate = estimate_performance(proba, classes, metric, fitted, seed=seed,  # type: ignore[arg-type]
                                            inputs=inputs)
    except EstimationError as exc:  # e.g. a batch of 40 rows: no estimate tonight, not a failed night
        run_logger(__name__).warning("performance not estimated: %s", exc)
        return None
    reference_value = test_metrics.get(metric)
    drop = estimated_drop(estimate, reference_value, max_drop) if reference_value is not None else None
    columns = [c for c in slice_columns if c in current.columns]
    slices = estimate_by_slice(current, proba, classes, columns, metric, fitted,  # type: ignore[arg-type]
                               seed=seed, inputs=inputs) if columns else None
    return EstimateCheck(estimate=estimate, calibration=fitted.summary(), drop=drop, slices=slices)


estimate_performance_task = task(estimate_performance, name="estimate-performance", cache_policy=NO_CACHE)
estimate_by_slice_task = task(estimate_by_slice, name="estimate-performance-by-slice", cache_policy=NO_CACHE)
realized_vs_estimated_task = task(realized_vs_estimated, name="realized-vs-estimated", cache_policy=NO_CACHE)
estimated_drop_task = task(estimated_drop, name="check-estimated-drop", cache_policy=NO_CACHE)
estimate_batch_task = task(estimate_batch, name="estimate-performance-before-labels", cache_policy=NO_CACHE)
