"""Performance before labels for a regressor: Direct Loss Estimation (DLE, as NannyML's) of MAE and RMSE.

Method: a second model learns the monitored model's loss from its inputs. On the version's labeled held-out
reference, each row's loss L = |y - ŷ| (MAE) or (y - ŷ)² (RMSE, through the MSE) is the target of a
HistGradientBoostingRegressor (100 trees of 15 leaves, >= 40 rows a leaf) whose inputs are the model's features
plus its prediction ŷ: numeric columns as they are (missing values native), the others ordinal-encoded (categories
seen < 5 times or beyond the 50 most frequent pooled, unseen ones missing) and split on natively as categories.
It is fitted 5-fold, so every reference row gets an out-of-fold expected loss ĝ from a model that never saw it
(the reference's own estimate is honest; the band below is read off these), then once on all rows: that fit
scores the batches. A batch's MAE estimate is the mean of its rows' expected losses; its MSE likewise, and RMSE
the square root. If the loss depends on (x, ŷ) as on the reference (P(y | x) unchanged), the estimate follows
covariate shift: a batch crowding a region where the model errs more gets a higher estimate.

Band: normal, two independent errors, both from the out-of-fold residuals r = L - ĝ. The reference is cut into
up to 20 equal-count bins of ĝ (>= 50 rows each); per bin b, s²_b is the variance of r and n_b its rows.
- sampling: the batch's own losses scatter around their expectation: Var = sum_i s²_{b(i)} / n², each row taking
  its bin's residual variance (heteroscedastic: a batch in a noisy region gets a wider band);
- loss model: ĝ is learnt from a finite reference, an error shared by every night it scores. In a region it is
  uncertain by about s_b / sqrt(n_b) (what a per-bin mean of the reference's losses would be), so a batch with the
  share w_b of its rows in bin b inherits Var = sum_b w²_b s²_b / n_b: for a batch like the reference, the
  reference's own sampling error of the mean loss, Var(r) / N; more for a batch crowding thinly filled bins.
  K-fold residuals cannot show this error (the reference's deviation from the population is inside every fold
  model): the term is a model of it, checked by simulation. At 1000 reference rows it is larger than the
  sampling term; without it, 95% bands held the realized MAE on 63% of nights instead of 91%.
value ± z·sqrt(both) on the loss scale (lower end >= 0); RMSE square-roots both ends of the MSE band. The band of
the sampling term alone is kept as sampling_lower / sampling_upper. On the demand world (benchmarks/bands.py) the
band held 90% (MAE) and 91% (RMSE) of 256 nights over 16 references of 4,200 rows.

Simulated (tests/tasks/monitoring/test_dle.py's world: noise sd from 0.25 to 1 with x0, a linear model missing two
curved terms; nights of 1000-5000 rows, x0 shifted by 0, +0.5, +1 (toward the noise) or -0.7; 20 references of
5000 rows x 60 nights): 95% bands held the realized value on 94% (MAE) and 94% (RMSE) of nights, mean |estimate -
realized| 0.011 / 0.013 against 0.057 / 0.074 for the reference's value; per reference, coverage ranged 62-100%
(the loss model's error is shared by a reference's nights). 12 references of 1000 rows: 91% / 92%, with 75% on
the +1 shift; 8 of 20000 rows: 92% / 94%. A gradient-boosted monitored model (it extrapolates flat beyond its
training range, and so does the loss model): 95% / 90%, 85% / 73% on the +1 shift. Tried and dropped: correcting
ĝ by the mean residual of its bin (out-of-fold ĝ is noisier than the full fit's, so the correction over-shoots:
coverage fell to 77-80%). A bootstrap band (refitting per resample) would cost tens of fits a night.

Not covered: concept drift (P(y | x) changed: the loss model keeps the old relation, as CBPE does); rows beyond the
reference's range (trees extrapolate flat); non-random labels when comparing with a labeled subset. R² is not
estimated: R² = 1 - MSE / Var(y) needs the variance of the batch's labels; the MSE is label-free, Var(y) is not (it
would need a model of how y spreads around ŷ on the new rows, which is the very thing the labels will tell).
Why not nannyml's DLE: as for its CBPE (tasks.monitoring.estimate): the dependencies (LightGBM among them), and a
band of +/-3 sampling errors taken from the reference, which leaves out the loss model's own error.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Sequence

import numpy as np

from tasks.monitoring.calibration import EstimationError

if TYPE_CHECKING:
    import pandas as pd


DLEMetric = Literal["mae", "rmse"]
DLE_METRICS: tuple[DLEMetric, ...] = ("mae", "rmse")
MIN_REFERENCE_ROWS = 500  # 5 folds of 100 rows: fewer, and the loss model is mostly noise
FOLDS = 5
BINS = 20
MIN_BIN_ROWS = 50
MAX_CATEGORIES = 50


# --------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------
def as_predictions(predictions: Any, rows: int | None = None, what: str = "predictions") -> np.ndarray:
    """A regressor's predictions as a finite 1-D float array (one per row)."""
    try:
        pred = np.asarray(predictions, dtype=float)
    except (TypeError, ValueError) as exc:
        raise EstimationError(f"{what} are not numbers ({exc}); pass the regressor's predict output.") from exc
    if pred.ndim == 2 and pred.shape[1] == 1:
        pred = pred[:, 0]
    if pred.ndim != 1:
        raise EstimationError(f"{what}: shape {np.shape(predictions)}, expected (rows,): one predicted number per "
                              "row (a regressor's predict output).")
    bad = ~np.isfinite(pred)
    if bad.any():
        raise EstimationError(f"{what}: NaN or infinite values ({int(bad.sum())} rows, first row "
                              f"{int(np.flatnonzero(bad)[0])}); the model must predict a number for every row.")
    if rows is not None and len(pred) != rows:
        raise EstimationError(f"{len(pred)} {what} for {rows} rows: score the same rows, in the same order.")
    return pred


def numeric_labels(labels: Any, what: str = "labels") -> np.ndarray:
    """Regression labels as floats, NaN where missing; text that is not a number raises."""
    import pandas as pd

    series = (labels if isinstance(labels, pd.Series) else pd.Series(np.asarray(labels, dtype=object))).reset_index(
        drop=True)
    values = pd.to_numeric(series, errors="coerce")
    unreadable = values.isna() & series.notna()
    if unreadable.any():
        shown = sorted(map(str, pd.unique(series[unreadable])))[:5]
        raise EstimationError(f"{int(unreadable.sum())} {what} are not numbers ({', '.join(shown)}): a regressor's "
                              "labels must be numeric.")
    out = values.to_numpy(dtype=float)
    if np.isinf(out).any():
        raise EstimationError(f"{int(np.isinf(out).sum())} {what} are infinite.")
    return out


def _check_metric(metric: str) -> None:
    if metric not in DLE_METRICS:
        raise EstimationError(f"metric '{metric}' cannot be estimated without labels for a regressor; use one of "
                              f"{DLE_METRICS} (r2 needs the variance of the batch's labels).")


# --------------------------------------------------------------------------------------------
# The loss model
# --------------------------------------------------------------------------------------------
@dataclass
class RowLosses:
    """Per batch row: the loss model's expected loss and the reference bin (of expected loss) it falls in."""

    loss: np.ndarray
    bin: np.ndarray


@dataclass
class LossEstimate:
    """A regressor's MAE or RMSE estimated without labels, its band and the band's two parts."""

    metric: DLEMetric
    value: float
    lower: float
    upper: float
    level: float
    rows: int
    std: float  # of the estimate's error (sampling and loss model), on the metric's scale (delta method for RMSE)
    sampling_std: float  # of the mean loss (MAE or MSE scale): the batch's own scatter
    model_std: float  # of the mean loss: the loss model's level where the batch lies
    method: str
    sampling_lower: float | None = None  # the band of the batch's own scatter alone (without the loss model's term)
    sampling_upper: float | None = None

    def estimate_fields(self) -> dict[str, Any]:
        """The fields of tasks.monitoring.estimate.Estimate (no Monte Carlo draws: a normal band)."""
        return {"metric": self.metric, "value": self.value, "lower": self.lower, "upper": self.upper,
                "level": self.level, "rows": self.rows, "sampling_mean": self.value, "sampling_std": self.std,
                "draws": 0, "calibration": "loss model", "method": self.method, "sampling_lower": self.sampling_lower,
                "sampling_upper": self.sampling_upper}


@dataclass
class LossModel:
    """DLE fitted on a labeled reference: the loss model, and its out-of-fold residuals (K-fold) per bin."""

    metric: DLEMetric
    features: list[str]
    categorical: list[str]
    encoder: Any  # OrdinalEncoder of the categorical columns (None without any)
    regressor: Any = None  # fitted on every reference row: it scores the batches
    folds: int = FOLDS
    edges: np.ndarray = field(default_factory=lambda: np.empty(0))  # interior bin edges on the expected loss
    bin_var: np.ndarray = field(default_factory=lambda: np.empty(0))  # out-of-fold residual variance per bin
    bin_rows: np.ndarray = field(default_factory=lambda: np.empty(0))
    reference_rows: int = 0
    reference_loss: float = float("nan")  # realized mean loss on the reference
    reference_estimate: float = float("nan")  # mean out-of-fold expected loss on the reference
    unlabeled: int = 0  # reference rows left out for want of a label

    def design(self, frame: pd.DataFrame, predictions: np.ndarray) -> np.ndarray:
        """The loss model's inputs: the numeric features, the encoded categorical ones, then the prediction."""
        import pandas as pd

        missing = [c for c in self.features if c not in frame.columns]
        if missing:
            raise EstimationError(f"feature column(s) {missing[:5]} not in the batch: the loss model was fitted on "
                                  f"{self.features[:12]}.")
        numeric = [c for c in self.features if c not in self.categorical]
        parts = [frame[numeric].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=float)] if numeric else []
        if self.categorical:
            parts.append(self.encoder.transform(_category_text(frame[self.categorical])))
        return np.column_stack([*parts, predictions])

    def row_losses(self, frame: pd.DataFrame, predictions: Any) -> RowLosses:
        """Each row's expected loss and its bin."""
        from threadpoolctl import threadpool_limits

        x = self.design(frame, as_predictions(predictions, len(frame)))
        with threadpool_limits(1, user_api="openmp"):  # small trees: threads cost more than they save
            loss = np.clip(self.regressor.predict(x), 0.0, None)
        return RowLosses(loss=loss, bin=np.searchsorted(self.edges, loss, side="right"))

    def estimate(self, rows: RowLosses, mask: np.ndarray | None = None, *, level: float = 0.95,
                 min_rows: int = 100) -> LossEstimate:
        """The metric on the rows (or the masked ones) and its band (see the module's docstring)."""
        from scipy.stats import norm

        _check_level(level)
        loss, bins = (rows.loss, rows.bin) if mask is None else (rows.loss[mask], rows.bin[mask])
        n = len(loss)
        if n < min_rows:
            raise EstimationError(f"{n} rows are too few to estimate {self.metric} (needs at least {min_rows}).")
        mean = float(loss.mean())
        sampling_var = float(self.bin_var[bins].sum()) / n**2
        share = np.bincount(bins, minlength=len(self.bin_rows)) / n
        model_var = float((share**2 * self.bin_var / self.bin_rows).sum())
        std = float(np.sqrt(sampling_var + model_var))
        z = float(norm.ppf(0.5 + level / 2))
        value, lower, upper = mean, max(mean - z * std, 0.0), mean + z * std
        sampled = [max(mean - z * np.sqrt(sampling_var), 0.0), mean + z * np.sqrt(sampling_var)]
        if self.metric == "rmse":  # the band of the MSE, square-rooted: the same probability
            value, lower, upper = float(np.sqrt(mean)), float(np.sqrt(lower)), float(np.sqrt(upper))
            sampled = [np.sqrt(v) for v in sampled]
            std = std / (2 * value) if value > 0 else upper / z
        what = "|y - ŷ|" if self.metric == "mae" else "(y - ŷ)²"
        return LossEstimate(metric=self.metric, value=value, lower=lower, upper=upper, level=level, rows=n, std=std,
                            sampling_std=float(np.sqrt(sampling_var)), model_std=float(np.sqrt(model_var)),
                            sampling_lower=float(sampled[0]), sampling_upper=float(sampled[1]),
                            method=f"DLE: mean expected {what} from a loss model on "
                                   f"{self.reference_rows} reference rows; band: normal {level:.0%}, the batch's "
                                   "sampling and the loss model's error, from out-of-fold residuals")

    def summary(self) -> str:
        """One line: what the loss model was fitted on, and its honest (out-of-fold) estimate of the reference."""
        name = "MAE" if self.metric == "mae" else "MSE"
        left_out = f", {self.unlabeled} rows without a label left out" if self.unlabeled else ""
        return (f"DLE loss model (gradient boosting on {len(self.features)} features and the prediction, "
                f"{self.reference_rows} reference rows{left_out}): {self.folds}-fold out-of-fold reference {name} "
                f"{self.reference_estimate:.4g} vs realized {self.reference_loss:.4g}")


def _check_level(level: float) -> None:
    if not 0.5 <= level < 1.0:
        raise EstimationError(f"band level {level} must be in [0.5, 1), e.g. 0.95.")


def _category_text(frame: pd.DataFrame) -> np.ndarray:
    """Categorical columns as text, missing values as 'missing' (as the training pipeline imputes them)."""
    return frame.astype(object).where(frame.notna(), "missing").astype(str).to_numpy()


def _regressor(categorical: np.ndarray, seed: int) -> Any:
    from sklearn.ensemble import HistGradientBoostingRegressor

    return HistGradientBoostingRegressor(max_iter=100, learning_rate=0.1, max_leaf_nodes=15, min_samples_leaf=40,
                                         l2_regularization=1.0, early_stopping=False,
                                         categorical_features=categorical if categorical.any() else None,
                                         random_state=seed)


def fit_loss_model(reference: pd.DataFrame, features: Sequence[str], label: str, predictions: Any,
                   metric: DLEMetric, *, folds: int = FOLDS, bins: int = BINS, seed: int = 0,
                   min_rows: int = MIN_REFERENCE_ROWS) -> LossModel:
    """Fit DLE on labeled rows the model did not train on (its held-out reference) and the model's predictions
    for them; rows without a label are left out. On training rows the losses are too small, and so the estimate."""
    import pandas as pd
    from sklearn.model_selection import KFold
    from sklearn.preprocessing import OrdinalEncoder
    from threadpoolctl import threadpool_limits

    _check_metric(metric)
    features = list(features)
    missing = [c for c in [*features, label] if c not in reference.columns]
    if missing:
        raise EstimationError(f"column(s) {missing[:5]} not in the reference (columns: "
                              f"{list(reference.columns)[:12]}).")
    pred = as_predictions(predictions, len(reference), "reference predictions")
    y = numeric_labels(reference[label], "reference labels")
    known = ~np.isnan(y)
    if known.sum() < min_rows:
        raise EstimationError(f"{int(known.sum())} labeled reference rows are too few to fit the loss model for "
                              f"{metric} (needs at least {min_rows}).")
    frame, y, pred = reference.loc[known, features], y[known], pred[known]
    categorical = [c for c in features if not (pd.api.types.is_numeric_dtype(frame[c])
                                               or pd.api.types.is_bool_dtype(frame[c]))]
    encoder = OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=np.nan, min_frequency=5,
                             max_categories=MAX_CATEGORIES, dtype=float).fit(_category_text(frame[categorical])) \
        if categorical else None
    model = LossModel(metric=metric, features=features, categorical=categorical, encoder=encoder, folds=folds,
                      reference_rows=len(y), unlabeled=int((~known).sum()))
    x = model.design(frame, pred)
    is_category = np.r_[np.zeros(len(features) - len(categorical), bool), np.ones(len(categorical), bool), False]
    loss = np.abs(y - pred) if metric == "mae" else (y - pred) ** 2
    oof = np.empty_like(loss)
    with threadpool_limits(1, user_api="openmp"):  # six small fits: one thread each is faster on shared cores
        for k, (train, test) in enumerate(KFold(folds, shuffle=True, random_state=seed).split(x)):
            oof[test] = np.clip(_regressor(is_category, seed + k).fit(x[train], loss[train]).predict(x[test]), 0, None)
        model.regressor = _regressor(is_category, seed).fit(x, loss)
    count = max(1, min(bins, len(y) // MIN_BIN_ROWS))
    model.edges = np.unique(np.quantile(oof, np.linspace(0, 1, count + 1)[1:-1]))
    which = np.searchsorted(model.edges, oof, side="right")
    rows = np.bincount(which, minlength=len(model.edges) + 1).astype(float)
    resid = loss - oof
    mean = np.bincount(which, weights=resid, minlength=len(rows)) / np.maximum(rows, 1)
    var = np.bincount(which, weights=(resid - mean[which]) ** 2, minlength=len(rows)) / np.maximum(rows - 1, 1)
    thin = rows < MIN_BIN_ROWS / 2  # an (almost) empty bin, from tied expected losses: the overall variance
    model.bin_var, model.bin_rows = np.where(thin, resid.var(ddof=1), var), np.maximum(rows, 1)
    model.reference_loss, model.reference_estimate = float(loss.mean()), float(oof.mean())
    return model


def estimate_loss(model: LossModel, frame: pd.DataFrame, predictions: Any, *, level: float = 0.95,
                  min_rows: int = 100) -> LossEstimate:
    """The loss model's estimate of its metric on an unlabeled batch (its features in `frame`, the model's
    predictions for those rows in `predictions`)."""
    _check_level(level)
    if len(frame) < min_rows:
        raise EstimationError(f"{len(frame)} rows are too few to estimate {model.metric} (needs at least {min_rows}).")
    return model.estimate(model.row_losses(frame, predictions), level=level, min_rows=min_rows)


def realized_loss(metric: str, labels: Any, predictions: Any, rows: int) -> tuple[float, int]:
    """The metric on the rows whose (numeric) label arrived, and how many did: what an estimate is scored against."""
    from tasks.model.metrics import regression_metrics

    pred = as_predictions(predictions)
    if len(pred) != rows:
        raise EstimationError(f"the estimate was made on {rows} rows, {len(pred)} predictions given: pass the same "
                              "rows.")
    y = numeric_labels(labels)
    if len(y) != rows:
        raise EstimationError(f"{len(y)} labels for {rows} predictions: pass one label per row, in the same order "
                              "(join the labels by request id first).")
    labeled = ~np.isnan(y)
    if not labeled.any():
        raise EstimationError("no label has arrived for these rows yet: nothing to compare the estimate with.")
    return regression_metrics(y[labeled], pred[labeled])[metric], int(labeled.sum())
