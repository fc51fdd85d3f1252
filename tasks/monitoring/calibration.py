"""Calibration of a model's probabilities on its reference rows: per-class monotone maps and their expected
calibration error, what the label-free estimate (tasks.monitoring.estimate) rests on; and the map's own
uncertainty, as logistic recalibrations of its output refit on bootstrap resamples of the reference (the band's
calibration part: tasks.monitoring.cbpe)."""

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
RESAMPLES = 40  # bootstrap refits: the spread they give is itself uncertain by ~1/sqrt(2 * 40) = 11%
MIN_RESAMPLE_CLASS_ROWS = 10  # fewer rows of an outcome: no recalibration of that class can be fitted
_RIDGE = 1.0  # one pseudo-row pulling a refit toward (slope 1, intercept 0): finite even if a resample separates
_CELLS = 2_000_000  # resamples x rows fitted at once
SHIFT_FEATURES = 3  # tonight's most shifted inputs the recalibration also conditions on (and their squares)
MAP_KNOTS = 5  # spline knots of the calibration map (quantiles of the logit of p)
MAP_GRID = 65  # quantiles of p the map is kept at (np.interp between them)
MIN_SHIFT = 0.8  # standardised mean difference (tonight vs reference) from which an input is shifted: Cohen's "large"


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
    """The calibration map of one class's probability: a monotone map's knots, or the identity and why."""

    label: str
    method: Literal["monotone", "isotonic", "identity"] = Field(
        description="monotone: a smooth non-decreasing map (a logistic spline of the logit); isotonic: the step "
                    "map of older records, applied the same way; identity: none needed.")
    reason: str
    ece_raw: float | None = Field(None, description="Reference ECE of the raw probabilities.")
    ece_chance: float | None = Field(None, description="95% quantile of the ECE a calibrated model shows by chance.")
    ece_calibrated: float | None = Field(None, description="Reference ECE after cross-fitted calibration.")
    x: list[float] = Field(default_factory=list, description="The map's knots: raw probability.")
    y: list[float] = Field(default_factory=list, description="The map's knots: calibrated probability.")

    def apply(self, p: np.ndarray) -> np.ndarray:
        """Calibrated probabilities (flat beyond the reference's range, like IsotonicRegression's 'clip')."""
        return np.interp(p, self.x, self.y) if self.method != "identity" else p


class Calibrator(BaseModel):
    """Maps a model's probabilities to calibrated ones; fitted on labeled reference rows, small and JSON-able."""

    classes: list[bool | int | float | str]
    reference_rows: int
    per_class: list[ClassCalibration] = Field(description="Binary: one map, for classes[1]. Multiclass: one per class.")
    resamples: list[list[tuple[float, ...]]] = Field(
        default_factory=list, description="Per bootstrap resample of the reference, per map of per_class: slope and "
                                          "intercept of the logistic recalibration of the calibrated probability "
                                          "(on the logit scale) refit on that resample; with `shift_inputs`, then "
                                          "the coefficients of those inputs. Empty: no calibration term.")
    shift_inputs: list[int] = Field(default_factory=list, description="Columns of the model's inputs (domain_inputs) "
                                    "shifted tonight that the recalibration conditions on. Empty: the score only.")
    shift_mean: list[float] = Field(default_factory=list, description="Their reference means (standardisation).")
    shift_std: list[float] = Field(default_factory=list, description="Their reference standard deviations.")
    shift_fit: list[list[float]] = Field(default_factory=list, description="Per map: slope, intercept and the shifted "
                                         "inputs' coefficients of the recalibration on the whole reference, applied "
                                         "after the map (P(y | score, inputs) holds under covariate shift).")

    @property
    def method(self) -> str:
        """'monotone', 'identity', or 'monotone (j/k classes)' when only some classes needed a map."""
        used = sum(c.method != "identity" for c in self.per_class)
        if used == 0:
            return "identity"
        return "monotone" if used == len(self.per_class) else f"monotone ({used}/{len(self.per_class)} classes)"

    def shifted(self, inputs: Any) -> np.ndarray | None:
        """The rows' shifted inputs, standardised on the reference (None without shift_inputs)."""
        if not self.shift_inputs:
            return None
        if inputs is None:
            raise EstimationError("this calibrator conditions on tonight's shifted inputs: pass the rows' "
                                  "domain_inputs as `inputs`.")
        x = np.asarray(inputs, dtype=float)[:, self.shift_inputs]
        return (np.nan_to_num(x) - np.asarray(self.shift_mean)) / np.asarray(self.shift_std)

    def mapped(self, proba: Any) -> np.ndarray:
        """The maps' (n, k) probabilities for the model's raw ones (rows renormalised for multiclass)."""
        p = _as_proba(proba, self.classes)
        if len(self.classes) == 2:
            pos = self.per_class[0].apply(p[:, 1])
            return np.column_stack([1.0 - pos, pos])
        cal = np.column_stack([c.apply(p[:, j]) for j, c in enumerate(self.per_class)])
        total = cal.sum(axis=1, keepdims=True)
        return np.divide(cal, total, out=np.full_like(cal, 1.0 / cal.shape[1]), where=total > 0)

    def apply(self, proba: Any, inputs: Any = None) -> np.ndarray:
        """Calibrated (n, k) probabilities for the model's raw ones: the maps, then, with shift_inputs, their
        recalibration on the rows' `inputs` (domain_inputs) too."""
        cal = self.mapped(proba)
        return self.recalibrate(cal, None, self.shifted(inputs)) if self.shift_fit else cal

    def recalibrate(self, calibrated: np.ndarray, resample: int | None, z: np.ndarray | None = None) -> np.ndarray:
        """The maps' (n, k) probabilities (mapped's output) as bootstrap resample `resample` recalibrates them
        (None: shift_fit); `z` the rows' standardised shifted inputs (Calibrator.shifted)."""
        from scipy.special import expit

        fits = self.shift_fit if resample is None else self.resamples[resample]

        def one(q: np.ndarray, fit: Sequence[float]) -> np.ndarray:
            if len(fit) > 2 and z is not None:
                return _design(_logit(q), z) @ np.asarray(fit)
            return fit[0] * _logit(q) + fit[1]

        if len(self.classes) == 2:
            pos = expit(one(calibrated[:, 1], fits[0]))
            return np.column_stack([1.0 - pos, pos])
        out = np.column_stack([expit(one(calibrated[:, j], fit)) for j, fit in enumerate(fits)])
        return out / out.sum(axis=1, keepdims=True)

    def summary(self) -> str:
        """One line: which map, on how many reference rows, and why."""
        refits = f"; its uncertainty: {len(self.resamples)} bootstrap refits" if self.resamples else ""
        if self.shift_inputs:
            refits += f"; recalibrated on {len(self.shift_inputs)} inputs shifted tonight"
        return f"{self.method} calibration on {self.reference_rows} reference rows: " + "; ".join(
            f"{c.label}: {c.reason}" for c in self.per_class) + refits


def _monotone_map(p: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A smooth monotone map of p to P(y | p), as knots for np.interp: a logistic regression of y on a cubic
    spline of logit(p) (MAP_KNOTS knots at quantiles), evaluated on MAP_GRID quantiles of p and made
    non-decreasing. Not the step function of isotonic regression: its steps follow the reference's label noise,
    which spreads the calibrated probabilities wider than P(y | p) and raises the expected ROC AUC (a forest's by
    ~+0.010 on a 3,000-row reference: docs/benchmarks.md#bands)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import SplineTransformer

    x = _logit(p)[:, None]
    spline = SplineTransformer(n_knots=MAP_KNOTS, degree=3, knots="quantile").fit(x)
    fit = LogisticRegression(C=1e4, max_iter=1000).fit(spline.transform(x), y)
    grid = np.unique(np.quantile(p, np.linspace(0.0, 1.0, MAP_GRID)))
    return grid, np.maximum.accumulate(fit.predict_proba(spline.transform(_logit(grid)[:, None]))[:, 1])


def _isotonic_map(p: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Isotonic regression's step map as knots (the map before docs/benchmarks.md#bands: kept to measure against)."""
    from sklearn.isotonic import IsotonicRegression

    fit = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(p, y)
    return np.asarray(fit.X_thresholds_), np.asarray(fit.y_thresholds_)


def _fit_class(label: str, p: np.ndarray, y: np.ndarray, min_rows: int, min_class_rows: int, folds: int, bins: int,
               seed: int, map_kind: Literal["monotone", "isotonic"] = "monotone",
               ) -> tuple[ClassCalibration, np.ndarray]:
    """The class's map, and its calibrated probabilities of the reference rows as rows it did not see would get
    them: out-of-fold for a monotone map (the in-sample fit has learnt their noise), else the raw ones."""
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold

    def _identity(**fields: Any) -> tuple[ClassCalibration, np.ndarray]:
        return ClassCalibration(label=label, method="identity", **fields), p

    positives = int(y.sum())
    fewest = min(positives, len(y) - positives)
    if fewest == 0:
        return _identity(reason="the reference holds one class only")
    if len(y) < min_rows or fewest < min_class_rows:
        return _identity(reason=f"reference too small to calibrate ({len(y)} rows, {fewest} in the rarer outcome; "
                                f"needs {min_rows} and {min_class_rows})")
    if roc_auc_score(y, p) > 0.999:
        return _identity(reason="the reference is separated perfectly")
    raw, chance = expected_calibration_error(y, p, bins), calibrated_ece_quantile(p, bins, seed=seed)
    if raw <= chance:
        return _identity(ece_raw=raw, ece_chance=chance, reason=f"already calibrated (ECE {raw:.4f} <= {chance:.4f}, "
                                                                "what chance gives a calibrated model here)")
    fit_map = _monotone_map if map_kind == "monotone" else _isotonic_map
    crossfit = np.empty_like(p)
    for train, test in StratifiedKFold(folds, shuffle=True, random_state=seed).split(p, y):
        knots = fit_map(p[train], y[train])
        crossfit[test] = np.interp(p[test], *knots)
    cal = expected_calibration_error(y, crossfit, bins)
    if not cal < raw:
        return _identity(ece_raw=raw, ece_chance=chance, ece_calibrated=cal,
                         reason=f"miscalibrated (ECE {raw:.4f} > chance {chance:.4f}) but a monotone map does not help on "
                                f"held-out rows (ECE {cal:.4f})")
    knot_x, knot_y = fit_map(p, y)
    return ClassCalibration(label=label, method=map_kind, ece_raw=raw, ece_chance=chance, ece_calibrated=cal,
                            reason=f"{map_kind} map: ECE {raw:.4f} (chance {chance:.4f}) -> {cal:.4f} on held-out rows",
                            x=knot_x.tolist(), y=knot_y.tolist()), crossfit


def _logit(q: np.ndarray) -> np.ndarray:
    q = np.clip(q, 1e-6, 1.0 - 1e-6)
    return np.log(q / (1.0 - q))


def _recalibrations(q: np.ndarray, y: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(slope, intercept) of the logistic regression of y on logit(q), one fit per row of `weights` (rows drawn per
    resample): Newton steps, all resamples at once, from (1, 0) with a ridge of one pseudo-row toward it."""
    from scipy.special import expit

    x = _logit(q)
    theta = np.tile([1.0, 0.0], (len(weights), 1))
    for _ in range(50):
        p = expit(theta[:, :1] * x + theta[:, 1:])
        r, h = weights * (y - p), weights * p * (1.0 - p)
        g_a, g_c = r @ x - _RIDGE * (theta[:, 0] - 1.0), r.sum(axis=1) - _RIDGE * theta[:, 1]
        h_aa, h_ac, h_cc = h @ (x * x) + _RIDGE, h @ x, h.sum(axis=1) + _RIDGE
        det = h_aa * h_cc - h_ac**2
        step = np.clip(np.column_stack([(h_cc * g_a - h_ac * g_c) / det, (h_aa * g_c - h_ac * g_a) / det]), -2, 2)
        theta += step
        if np.abs(step).max() < 1e-7:
            break
    return theta


def _design(logit: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Columns of the recalibration: the map's logit, 1, the shifted inputs and their squares (a forest's score
    flattens beyond its training range: not linear in how far out a row lies)."""
    return np.column_stack([logit, np.ones(len(logit)), z, z * z])


def _logistic_fits(x: np.ndarray, y: np.ndarray, weights: np.ndarray, prior: np.ndarray,
                   offset: np.ndarray | float = 0.0) -> np.ndarray:
    """Logistic regressions of y on the columns of `x` (n, d) plus `offset`, one per row of `weights`, ridge of
    one pseudo-row toward `prior`: Newton steps, all at once."""
    from scipy.special import expit

    theta = np.tile(prior, (len(weights), 1))
    d = x.shape[1]
    eye = _RIDGE * np.eye(d)
    outer = (x[:, :, None] * x[:, None, :]).reshape(len(x), d * d)  # each row's x x^T, flat
    for _ in range(50):
        p = expit(theta @ x.T + offset)
        g = (weights * (y - p)) @ x - _RIDGE * (theta - prior)
        h = ((weights * p * (1.0 - p)) @ outer).reshape(-1, d, d) + eye
        step = np.clip(np.linalg.solve(h, g[:, :, None])[:, :, 0], -2, 2)
        theta += step
        if np.abs(step).max() < 1e-7:
            break
    return theta


def shifted_inputs(reference: np.ndarray, current: np.ndarray, top: int = SHIFT_FEATURES) -> list[int]:
    """Tonight's `top` most shifted inputs: columns whose standardised mean difference from the reference exceeds
    MIN_SHIFT and four of its standard errors (empty when none does). Smaller shifts keep the score-only
    calibration: tonight stays within the reference's bulk, where P(y | score) barely moves, and the
    recalibration's extrapolation would add more error than it removes (measured: docs/benchmarks.md#bands)."""
    ref, cur = np.nan_to_num(np.asarray(reference, float)), np.nan_to_num(np.asarray(current, float))
    std = ref.std(axis=0)
    smd = np.divide(np.abs(cur.mean(axis=0) - ref.mean(axis=0)), std, out=np.zeros_like(std), where=std > 1e-12)
    floor = max(MIN_SHIFT, 4.0 * np.sqrt(1.0 / len(ref) + 1.0 / len(cur)))
    return [int(c) for c in np.argsort(-smd, kind="stable")[:top] if smd[c] > floor]


def domain_inputs(model: Any, frame: Any) -> np.ndarray:
    """The model's numeric inputs: a pipeline's inputs to its last step (imputed, scaled, one-hot), else the
    frame's numeric columns."""
    steps = getattr(model, "steps", None)
    if steps and len(steps) > 1:
        x = model[:-1].transform(frame)
        x = x.toarray() if hasattr(x, "toarray") else x
    else:
        x = frame.select_dtypes("number") if hasattr(frame, "select_dtypes") else frame
    return np.nan_to_num(np.asarray(x, dtype=float))


def fit_resamples(unseen: np.ndarray, y: np.ndarray, resamples: int = RESAMPLES, seed: int = 0,
                  z: np.ndarray | None = None) -> list[list[tuple[float, ...]]]:
    """Per bootstrap resample of the reference (rows drawn with replacement), per class map, the logistic
    recalibration of the calibrated probabilities refit on it: how far the reference leaves the calibration
    uncertain in level and slope (and, given `z`, the rows' standardised shifted inputs, in their coefficients).
    `unseen`: the reference's calibrated (n, k) probabilities as the map gives them to rows it did not learn from
    (out-of-fold for a monotone map). A class with under MIN_RESAMPLE_CLASS_ROWS rows of an outcome keeps
    (1, 0, 0...)."""
    n, k = unseen.shape
    d = 2 + (0 if z is None else 2 * z.shape[1])
    columns = [1] if k == 2 else list(range(k))
    rng = np.random.default_rng(np.random.SeedSequence([seed, 24, 3]))
    weights = np.stack([np.bincount(rng.integers(0, n, n), minlength=n) for _ in range(resamples)]).astype(float)
    prior = np.r_[1.0, np.zeros(d - 1)]
    fits = []
    for j in columns:
        outcome = (y == j).astype(float)
        if min(outcome.sum(), n - outcome.sum()) < MIN_RESAMPLE_CLASS_ROWS:
            fits.append(np.tile(prior, (resamples, 1)))
            continue
        if z is None:
            step = max(1, _CELLS // n)
            fits.append(np.vstack([_recalibrations(unseen[:, j], outcome, weights[b:b + step])
                                   for b in range(0, resamples, step)]))
            continue
        x = _design(_logit(unseen[:, j]), z)
        step = max(1, _CELLS // n)
        fits.append(np.vstack([_logistic_fits(x, outcome, weights[b:b + step], prior)
                               for b in range(0, resamples, step)]))
    return [[tuple(float(v) for v in f[b]) for f in fits] for b in range(resamples)]


def _shift_fit(cal: np.ndarray, y: np.ndarray, columns: list[int], z: np.ndarray) -> list[list[float]]:
    """Per map, the recalibration on the shifted inputs `z` fitted on the whole reference: the map's logit as an
    offset (slope 1: refit on the map's in-sample output it would learn the map's own noise), an intercept and
    the inputs' terms."""
    fits = []
    for j in columns:
        outcome = (y == j).astype(float)
        if min(outcome.sum(), len(y) - outcome.sum()) < MIN_RESAMPLE_CLASS_ROWS:
            fits.append([1.0] + [0.0] * (1 + 2 * z.shape[1]))
            continue
        x = _design(cal[:, j], z)[:, 1:]
        fits.append([1.0, *_logistic_fits(x, outcome, np.ones((1, len(y))), np.zeros(x.shape[1]),
                                          _logit(cal[:, j]))[0].tolist()])
    return fits


def fit_calibrator(reference_proba: Any, reference_labels: Any, classes: Sequence, *, min_rows: int = 300,
                   min_class_rows: int = 30, folds: int = 5, bins: int = 10, seed: int = 0,
                   resamples: int = RESAMPLES, reference_inputs: Any = None, current_inputs: Any = None,
                   map_kind: Literal["monotone", "isotonic"] = "monotone") -> Calibrator:
    """A monotone calibration map per class where the raw probabilities are miscalibrated beyond chance and the map
    lowers the held-out ECE; else the identity (an unneeded map costs accuracy: it fits noise).
    Then `resamples` bootstrap refits of a recalibration of its output on rows it did not learn from
    (fit_resamples; 0: none, and the band holds the labels' chance only).

    Covariate shift: given the reference's and tonight's inputs (domain_inputs), the inputs shifted tonight
    (shifted_inputs) join the recalibration: a logistic regression of y on the map's logit and them, fitted on
    the whole reference and applied after the map (shift_fit), its refits conditioning on them too. P(y | x) is
    unchanged under covariate shift, so P(y | score, shifted inputs) is; P(y | score) alone is not for a model
    whose score is not P(y | x). The refits' spread then grows with how far tonight lies from the reference.

    The reference must be labeled rows the model did not train on (its test split): on training rows the
    probabilities are over-confident and the map would be wrong for new data."""
    p = _as_proba(reference_proba, classes, "reference_proba")
    y = _label_indices(reference_labels, classes, len(p), allow_missing=False)
    names = [str(c) for c in _class_list(classes)]
    columns = [1] if len(names) == 2 else list(range(len(names)))
    fits = [_fit_class(names[j], p[:, j], (y == j).astype(float), min_rows, min_class_rows, folds, bins, seed,
                       map_kind) for j in columns]
    calibrator = Calibrator(classes=_class_list(classes), reference_rows=len(p), per_class=[f[0] for f in fits])
    z = None
    if reference_inputs is not None and current_inputs is not None:
        ref_x = np.nan_to_num(np.asarray(reference_inputs, dtype=float))
        if len(ref_x) != len(p):
            raise EstimationError(f"{len(ref_x)} rows of reference inputs for {len(p)} reference rows.")
        chosen = shifted_inputs(ref_x, current_inputs)
        if chosen:
            calibrator.shift_inputs = chosen
            calibrator.shift_mean = ref_x[:, chosen].mean(axis=0).tolist()
            calibrator.shift_std = ref_x[:, chosen].std(axis=0).tolist()
            z = calibrator.shifted(ref_x)
            cal = calibrator.mapped(p)
            calibrator.shift_fit = _shift_fit(calibrator.mapped(p), y, columns, z)
    if resamples > 0:
        unseen = p.copy()
        for j, (_, out_of_fold) in zip(columns, fits):
            unseen[:, j] = out_of_fold
        if len(columns) == 1:
            unseen[:, 0] = 1.0 - unseen[:, 1]
        else:  # renormalised as apply does
            total = unseen.sum(axis=1, keepdims=True)
            unseen = np.divide(unseen, total, out=np.full_like(unseen, 1.0 / len(columns)), where=total > 0)
        calibrator.resamples = fit_resamples(unseen, y, resamples, seed, z)
    return calibrator


fit_calibrator_task = task(fit_calibrator, name="fit-calibrator", cache_policy=NO_CACHE)
