"""Calibration of a model's probabilities on its reference rows: per-class isotonic maps and their expected
calibration error, what the label-free estimate (tasks.monitoring.estimate) rests on."""

from __future__ import annotations

from typing import Any, Literal, Sequence

import numpy as np
from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, Field

from nightshift.errors import NightshiftError


EstimatedMetric = Literal["roc_auc", "accuracy"]
ESTIMATED_METRICS: tuple[EstimatedMetric, ...] = ("roc_auc", "accuracy")
_SUM_TOLERANCE = 1e-3  # rows of predict_proba may miss 1 by float error


class EstimationError(NightshiftError, ValueError):
    """Inputs to performance estimation are unusable (shape, probability range, too few rows, unknown labels)."""


# --------------------------------------------------------------------------------------------
# Input checks
# --------------------------------------------------------------------------------------------
def _class_list(classes: Sequence) -> list[Any]:
    """The model's classes as plain Python values (for messages and JSON)."""
    return np.asarray(classes).tolist()


def _as_proba(proba: Any, classes: Sequence, what: str = "proba") -> np.ndarray:
    """Probabilities as an (n, k) float array with k = len(classes); 1-D is P(classes[1]) of a binary model."""
    k = len(classes)
    if k < 2:
        raise EstimationError(f"{k} class(es) given: a classifier needs at least 2 (pass the model's classes_).")
    p = np.asarray(proba, dtype=float)
    if p.ndim == 1 and k == 2:
        p = np.column_stack([1.0 - p, p])
    if p.ndim != 2 or p.shape[1] != k:
        raise EstimationError(f"{what} has shape {np.shape(proba)}, expected (rows, {k}) for the {k} classes "
                              f"{_class_list(classes)}"
                              + (" or (rows,) for P(positive)" if k == 2 else "") + ".")
    finite = np.isfinite(p).all(axis=1)
    if not finite.all():
        row = int(np.flatnonzero(~finite)[0])
        raise EstimationError(f"{what} has NaN or infinite values ({int((~finite).sum())} rows, first row {row}).")
    outside = ((p < -1e-9) | (p > 1 + 1e-9)).any(axis=1)
    if outside.any():
        row = int(np.flatnonzero(outside)[0])
        raise EstimationError(f"{what} has values outside [0, 1] ({int(outside.sum())} rows, first row {row}: "
                              f"{p[row].round(4).tolist()}); pass predict_proba output, not scores or logits.")
    off = np.abs(p.sum(axis=1) - 1.0) > _SUM_TOLERANCE
    if off.any():
        row = int(np.flatnonzero(off)[0])
        raise EstimationError(f"{what} rows do not sum to 1 ({int(off.sum())} rows, first row {row} sums to "
                              f"{p[row].sum():.4f}); pass predict_proba output with one column per class.")
    return np.clip(p, 0.0, 1.0)


def _label_indices(labels: Any, classes: Sequence, rows: int, allow_missing: bool) -> np.ndarray:
    """Each label's column in `classes` (-1 where missing); unknown labels or a length mismatch raise."""
    import pandas as pd

    from tasks.data.contract import align_labels

    series = labels if isinstance(labels, pd.Series) else pd.Series(np.asarray(labels, dtype=object))
    if len(series) != rows:
        raise EstimationError(f"{len(series)} labels for {rows} rows of probabilities: pass one label per row, "
                              "in the same order (join the labels by request id first).")
    aligned, unknown = align_labels(series.reset_index(drop=True), classes)
    if len(unknown):
        shown = sorted(map(str, pd.unique(unknown)))[:5]
        raise EstimationError(f"{len(unknown)} labels match none of the model's classes "
                              f"{_class_list(classes)}: {', '.join(shown)}.")
    missing = aligned.isna().to_numpy()
    if missing.any() and not allow_missing:
        raise EstimationError(f"{int(missing.sum())} labels are missing; calibration needs every reference row "
                              "labeled.")
    return pd.Categorical(aligned, categories=np.asarray(classes, dtype=object).tolist()).codes.astype(int)


def _check_common(metric: str, level: float, draws: int) -> None:
    if metric not in ESTIMATED_METRICS:
        raise EstimationError(f"metric '{metric}' cannot be estimated without labels; use one of {ESTIMATED_METRICS}.")
    if not 0.5 <= level < 1.0:
        raise EstimationError(f"band level {level} must be in [0.5, 1), e.g. 0.95.")
    if draws < 20:
        raise EstimationError(f"{draws} Monte Carlo draws are too few for a band; use at least 20 (default 200).")


# --------------------------------------------------------------------------------------------
# Calibration
# --------------------------------------------------------------------------------------------
def _bins(p: np.ndarray, bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Row order sorting p, and the start of each of `bins` equal-count bins in it."""
    order = np.argsort(p, kind="stable")
    return order, np.array([b[0] for b in np.array_split(np.arange(len(p)), bins) if len(b)])


def expected_calibration_error(y: np.ndarray, p: np.ndarray, bins: int = 10) -> float:
    """ECE with equal-count bins: the row-weighted mean |mean p - share positive| over bins of sorted p."""
    order, starts = _bins(p, bins)
    return float(np.abs(np.add.reduceat(p[order] - y[order], starts)).sum() / len(p))


def calibrated_ece_quantile(p: np.ndarray, bins: int = 10, draws: int = 100, q: float = 0.95, seed: int = 0) -> float:
    """The ECE a perfectly calibrated model would show on these rows by chance (its `q` quantile): labels drawn
    from p itself, scored on the same bins. A raw ECE below it is no evidence of miscalibration."""
    order, starts = _bins(p, bins)
    drawn = np.random.default_rng(seed).random((draws, len(p))) < p[order]
    gaps = np.add.reduceat(p[order][None, :] - drawn, starts, axis=1)
    return float(np.quantile(np.abs(gaps).sum(axis=1) / len(p), q))


class ClassCalibration(BaseModel):
    """The calibration map of one class's probability: isotonic knots, or the identity and why."""

    label: str
    method: Literal["isotonic", "identity"]
    reason: str
    ece_raw: float | None = Field(None, description="Reference ECE of the raw probabilities.")
    ece_chance: float | None = Field(None, description="95% quantile of the ECE a calibrated model shows by chance.")
    ece_calibrated: float | None = Field(None, description="Reference ECE after cross-fitted isotonic calibration.")
    x: list[float] = Field(default_factory=list, description="Isotonic knots: raw probability.")
    y: list[float] = Field(default_factory=list, description="Isotonic knots: calibrated probability.")

    def apply(self, p: np.ndarray) -> np.ndarray:
        """Calibrated probabilities (flat beyond the reference's range, like IsotonicRegression's 'clip')."""
        return np.interp(p, self.x, self.y) if self.method == "isotonic" else p


class Calibrator(BaseModel):
    """Maps a model's probabilities to calibrated ones; fitted on labeled reference rows, small and JSON-able."""

    classes: list[bool | int | float | str]
    reference_rows: int
    per_class: list[ClassCalibration] = Field(description="Binary: one map, for classes[1]. Multiclass: one per class.")

    @property
    def method(self) -> str:
        """'isotonic', 'identity', or 'isotonic (j/k classes)' when only some classes needed it."""
        used = sum(c.method == "isotonic" for c in self.per_class)
        if used == 0:
            return "identity"
        return "isotonic" if used == len(self.per_class) else f"isotonic ({used}/{len(self.per_class)} classes)"

    def apply(self, proba: Any) -> np.ndarray:
        """Calibrated (n, k) probabilities for the model's raw ones (rows renormalised for multiclass)."""
        p = _as_proba(proba, self.classes)
        if len(self.classes) == 2:
            pos = self.per_class[0].apply(p[:, 1])
            return np.column_stack([1.0 - pos, pos])
        cal = np.column_stack([c.apply(p[:, j]) for j, c in enumerate(self.per_class)])
        total = cal.sum(axis=1, keepdims=True)
        return np.divide(cal, total, out=np.full_like(cal, 1.0 / cal.shape[1]), where=total > 0)

    def summary(self) -> str:
        """One line: which map, on how many reference rows, and why."""
        return f"{self.method} calibration on {self.reference_rows} reference rows: " + "; ".join(
            f"{c.label}: {c.reason}" for c in self.per_class)


def _fit_class(label: str, p: np.ndarray, y: np.ndarray, min_rows: int, min_class_rows: int, folds: int, bins: int,
               seed: int) -> ClassCalibration:
    from sklearn.isotonic import IsotonicRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold

    positives = int(y.sum())
    fewest = min(positives, len(y) - positives)
    if fewest == 0:
        return ClassCalibration(label=label, method="identity", reason="the reference holds one class only")
    if len(y) < min_rows or fewest < min_class_rows:
        return ClassCalibration(label=label, method="identity",
                                reason=f"reference too small to calibrate ({len(y)} rows, {fewest} in the rarer "
                                       f"outcome; needs {min_rows} and {min_class_rows})")
    if roc_auc_score(y, p) > 0.999:
        return ClassCalibration(label=label, method="identity", reason="the reference is separated perfectly")
    raw, chance = expected_calibration_error(y, p, bins), calibrated_ece_quantile(p, bins, seed=seed)
    if raw <= chance:
        return ClassCalibration(label=label, method="identity", ece_raw=raw, ece_chance=chance,
                                reason=f"already calibrated (ECE {raw:.4f} <= {chance:.4f}, what chance gives a "
                                       "calibrated model here)")
    crossfit = np.empty_like(p)
    for train, test in StratifiedKFold(folds, shuffle=True, random_state=seed).split(p, y):
        iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(p[train], y[train])
        crossfit[test] = iso.predict(p[test])
    cal = expected_calibration_error(y, crossfit, bins)
    if not cal < raw:
        return ClassCalibration(label=label, method="identity", ece_raw=raw, ece_chance=chance, ece_calibrated=cal,
                                reason=f"miscalibrated (ECE {raw:.4f} > chance {chance:.4f}) but isotonic does not "
                                       f"help on held-out rows (ECE {cal:.4f})")
    iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(p, y)
    return ClassCalibration(label=label, method="isotonic", ece_raw=raw, ece_chance=chance, ece_calibrated=cal,
                            reason=f"isotonic: ECE {raw:.4f} (chance {chance:.4f}) -> {cal:.4f} on held-out rows",
                            x=iso.X_thresholds_.tolist(), y=iso.y_thresholds_.tolist())


def fit_calibrator(reference_proba: Any, reference_labels: Any, classes: Sequence, *, min_rows: int = 300,
                   min_class_rows: int = 30, folds: int = 5, bins: int = 10, seed: int = 0) -> Calibrator:
    """Isotonic calibration per class where the raw probabilities are miscalibrated beyond chance and isotonic
    lowers the held-out ECE; else the identity (an unneeded isotonic map costs accuracy: its steps are noise).

    The reference must be labeled rows the model did not train on (its test split): on training rows the
    probabilities are over-confident and the map would be wrong for new data."""
    p = _as_proba(reference_proba, classes, "reference_proba")
    y = _label_indices(reference_labels, classes, len(p), allow_missing=False)
    names = [str(c) for c in _class_list(classes)]
    columns = [1] if len(names) == 2 else list(range(len(names)))
    per_class = [_fit_class(names[j], p[:, j], (y == j).astype(float), min_rows, min_class_rows, folds, bins, seed)
                 for j in columns]
    return Calibrator(classes=_class_list(classes), reference_rows=len(p), per_class=per_class)


fit_calibrator_task = task(fit_calibrator, name="fit-calibrator", cache_policy=NO_CACHE)
