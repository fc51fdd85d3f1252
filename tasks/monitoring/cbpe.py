"""CBPE's arithmetic (tasks.monitoring.estimate uses it): the expected metric of a batch given calibrated
probabilities, the metric over Monte Carlo label draws (the band's sampling part), the expected metric under each
bootstrap recalibration of the reference (the band's calibration part), and the band made of both.

The two parts are independent errors of the realized metric around the estimate:
- sampling: tonight's labels land by chance around their probabilities. The `level` quantiles of the metric over
  label sets drawn from the calibrated probabilities, as a lower and an upper distance from the estimate;
- calibration: the map comes from a finite reference, and every night it scores shares its error. The calibrator
  keeps, per bootstrap resample of the reference, a logistic recalibration (slope and intercept on the logit
  scale) of its own output refit on that resample (tasks.monitoring.calibration: fitted to the output the map
  gives rows it did not learn from, out-of-fold for a monotone map); the batch's expected metric is recomputed
  under each, and the spread is their standard deviation. An identity map has no error of its own to resample:
  the refits then measure how far its level and slope could be off and the reference not show it.
Each side of the band is value -/+ sqrt(sampling distance² + (z · calibration spread)² + extrapolation²), z the
normal quantile of `level`, clipped to [0, 1]; extrapolation is 0 unless the calibration was conditioned on
tonight's shifted inputs (tasks.monitoring.calibration), then how far that moved the estimate from the score-only
one: the parametric recalibration extrapolates, and the band holds both.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from tasks.monitoring.calibration import Calibrator


def _thresholds(score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row order by descending score, and the last sorted row of each distinct score (tied scores: one threshold)."""
    order = np.argsort(-score, kind="stable")
    s = score[order]
    return order, np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]


def _auc_of_sorted(q: np.ndarray, last: np.ndarray) -> float:
    """Expected ROC AUC when the sorted row i is positive with probability q[i] (NaN when a class is not expected)."""
    tps, fps = np.r_[0.0, np.cumsum(q)[last]], np.r_[0.0, np.cumsum(1.0 - q)[last]]
    if tps[-1] <= 1e-9 or fps[-1] <= 1e-9:
        return float("nan")
    return float(np.trapezoid(tps / tps[-1], fps / fps[-1]))


def expected_auc(score: np.ndarray, p: np.ndarray) -> float:
    """Expected ROC AUC of `score` when row i is positive with probability p[i] (tied scores: one threshold)."""
    order, last = _thresholds(score)
    return _auc_of_sorted(p[order], last)


def expected_metric(raw: np.ndarray, cal: np.ndarray, metric: str) -> float:
    """The metric the calibrated probabilities `cal` expect for the model's raw ones: accuracy, or ROC AUC (macro
    one-vs-rest for more than two classes, as the gate computes it)."""
    if metric == "accuracy":
        return float(cal[np.arange(len(raw)), raw.argmax(axis=1)].mean())
    k = raw.shape[1]
    return float(np.mean([expected_auc(raw[:, j], cal[:, j]) for j in ([1] if k == 2 else range(k))]))


def _auc_from_draws(positive: np.ndarray, ranks: np.ndarray) -> np.ndarray:
    """ROC AUC of each draw (rows of a boolean matrix) by the Mann-Whitney rank sum; NaN when a draw has one class."""
    n = positive.shape[1]
    npos = positive.sum(axis=1).astype(float)
    rank_sum = positive.astype(float) @ ranks
    with np.errstate(divide="ignore", invalid="ignore"):
        auc = (rank_sum - npos * (npos + 1) / 2) / (npos * (n - npos))
    return np.where((npos > 0) & (npos < n), auc, np.nan)


def monte_carlo(raw: np.ndarray, cal: np.ndarray, metric: str, draws: int, seed: int) -> np.ndarray:
    """The metric on `draws` label sets drawn from the calibrated probabilities, in chunks of ~4M cells."""
    from scipy.stats import rankdata

    rng = np.random.default_rng(seed)
    n, k = cal.shape
    chunk = max(1, 4_000_000 // n)
    sizes = [min(chunk, draws - start) for start in range(0, draws, chunk)]
    uniform = (rng.random((d, n), dtype=np.float32) for d in sizes)  # float32: half the cost, ample resolution
    if metric == "accuracy":
        p_correct = cal[np.arange(n), raw.argmax(axis=1)].astype(np.float32)
        return np.concatenate([(u < p_correct).mean(axis=1) for u in uniform])
    if k == 2:
        ranks, p_pos = rankdata(raw[:, 1]), cal[:, 1].astype(np.float32)
        return np.concatenate([_auc_from_draws(u < p_pos, ranks) for u in uniform])
    flat_ranks = np.column_stack([rankdata(raw[:, j]) for j in range(k)]).ravel()  # class j's AUC ranks score j
    cum = np.cumsum(cal, axis=1)[:, :-1].astype(np.float32)
    row_base = (np.arange(n) * k)[None, :]
    out = []
    for d, u in zip(sizes, uniform):
        drawn = np.zeros((d, n), dtype=np.intp)  # class index per draw and row
        for j in range(k - 1):
            drawn += u > cum[:, j]
        cell = (drawn + k * np.arange(d)[:, None]).ravel()  # (draw, class) bucket of each row
        npos = np.bincount(cell, minlength=d * k).reshape(d, k).astype(float)
        rank_sum = np.bincount(cell, weights=flat_ranks[row_base + drawn].ravel(), minlength=d * k).reshape(d, k)
        with np.errstate(divide="ignore", invalid="ignore"):
            auc = (rank_sum - npos * (npos + 1) / 2) / (npos * (n - npos))
        out.append(np.where(((npos > 0) & (npos < n)).all(axis=1), auc.mean(axis=1), np.nan))
    return np.concatenate(out)


def resampled_values(raw: np.ndarray, mapped: np.ndarray, metric: str, calibrator: Calibrator,
                     z: np.ndarray | None = None) -> np.ndarray:
    """The expected metric under each of the calibrator's bootstrap recalibrations (empty without any) of the
    maps' probabilities `mapped` (Calibrator.mapped); `z` the rows' shifted inputs (Calibrator.shifted), if any."""
    if not calibrator.resamples:
        return np.empty(0)
    columns = [1] if raw.shape[1] == 2 else list(range(raw.shape[1]))
    sorted_by = {j: _thresholds(raw[:, j]) for j in columns} if metric == "roc_auc" else {}
    predicted = raw.argmax(axis=1)
    values = []
    for b in range(len(calibrator.resamples)):
        p = calibrator.recalibrate(mapped, b, z)
        if metric == "accuracy":
            values.append(float(p[np.arange(len(p)), predicted].mean()))
        else:
            values.append(float(np.mean([_auc_of_sorted(p[sorted_by[j][0], j], sorted_by[j][1]) for j in columns])))
    return np.asarray(values)


def calibration_spread(values: np.ndarray) -> float:
    """Standard deviation of the resampled estimates (0 without resamples)."""
    finite = values[np.isfinite(values)]
    return float(finite.std()) if len(finite) > 1 else 0.0


def combined_band(value: float, lower: float, upper: float, spread: float, level: float,
                  extrapolation: float = 0.0) -> tuple[float, float]:
    """The sampling band [lower, upper] around `value` widened by the calibration spread, side by side, and by
    `extrapolation` (how far tonight's shift moved the estimate: tasks.monitoring.estimate), in quadrature."""
    from scipy.stats import norm

    z = float(norm.ppf(0.5 + level / 2))
    below = float(np.sqrt((value - lower) ** 2 + (z * spread) ** 2 + extrapolation ** 2))
    above = float(np.sqrt((upper - value) ** 2 + (z * spread) ** 2 + extrapolation ** 2))
    return max(value - below, 0.0), min(value + above, 1.0)
