"""Training: a scikit-learn Pipeline that carries its preprocessing, a CV search on the training split only."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from prefect import task
from prefect.cache_policies import NO_CACHE

from nightshift.errors import ConfigError
from tasks.catalogue.config import Estimator, EstimatorParams, ParamValue, Task
from tasks.data.datasets import FeatureSpec
from tasks.model.metrics import higher_is_better, metrics_of, model_classes, predict_scores, quality_metrics

if TYPE_CHECKING:
    import pandas as pd
    from sklearn.pipeline import Pipeline


def make_estimator(kind: Estimator, params: dict[str, Any], seed: int, task: Task = "classification") -> Any:
    """A fresh, unfitted built-in estimator of `kind` for the task, with `params` and a fixed random state."""
    if task == "regression":
        if kind == "random_forest":
            from sklearn.ensemble import RandomForestRegressor

            base: Any = RandomForestRegressor(random_state=seed)
        elif kind == "hist_gradient_boosting":
            from sklearn.ensemble import HistGradientBoostingRegressor

            base = HistGradientBoostingRegressor(random_state=seed)
        elif kind == "ridge":
            from sklearn.linear_model import Ridge

            base = Ridge(random_state=seed)
        else:
            raise ConfigError(f"Estimator '{kind}' does not do regression: use random_forest, hist_gradient_boosting, "
                              "ridge or your own factory.")
    elif kind == "random_forest":
        from sklearn.ensemble import RandomForestClassifier

        base = RandomForestClassifier(random_state=seed)
    elif kind == "logistic_regression":
        from sklearn.linear_model import LogisticRegression

        base = LogisticRegression(max_iter=2000, random_state=seed)
    elif kind == "hist_gradient_boosting":
        from sklearn.ensemble import HistGradientBoostingClassifier

        base = HistGradientBoostingClassifier(random_state=seed)
    else:
        raise ConfigError(f"Unknown estimator '{kind}': use random_forest, logistic_regression or hist_gradient_boosting.")
    return base.set_params(**params)


def candidate_grid(grid: dict[str, list[ParamValue]]) -> list[dict[str, ParamValue]]:
    """Every combination of the grid's values, in scikit-learn's ParameterGrid order ({} = the estimator's defaults)."""
    from sklearn.model_selection import ParameterGrid

    return list(ParameterGrid(grid))


def new_model(spec: FeatureSpec, estimator: Estimator | EstimatorParams, params: dict[str, Any], seed: int,
              task: Task = "classification") -> Any:
    """An unfitted model for one candidate: the team's factory with the candidate's set_params, or nightshift's
    preprocessing + a built-in estimator (`estimator` a kind name or the catalogue's estimator settings)."""
    if isinstance(estimator, EstimatorParams) and estimator.factory:
        from tasks.model.factory import build_from_factory

        model = build_from_factory(estimator.factory, estimator.code_path, seed)
        try:
            return model.set_params(**params)
        except ValueError as exc:
            raise ConfigError(f"factory '{estimator.factory}': {str(exc).splitlines()[0]}") from None
    kind = estimator.kind if isinstance(estimator, EstimatorParams) else estimator
    return build_pipeline(spec, kind, params, seed, task)


def build_pipeline(spec: FeatureSpec, kind: Estimator, params: dict[str, Any], seed: int,
                   task: Task = "classification") -> Pipeline:
    """Impute + scale numbers, impute + one-hot categories (unknown ones tolerated), then the estimator."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    transformers = []
    if spec.numeric:
        numeric = Pipeline([("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())])
        transformers.append(("num", numeric, list(spec.numeric)))
    if spec.categorical:
        categorical = Pipeline([
            ("impute", SimpleImputer(strategy="constant", fill_value="missing")),
            ("onehot", OneHotEncoder(handle_unknown="infrequent_if_exist", min_frequency=5, max_categories=50,
                                     sparse_output=False)),
        ])
        transformers.append(("cat", categorical, list(spec.categorical)))
    pre = ColumnTransformer(transformers, remainder="drop")
    return Pipeline([("pre", pre), ("model", make_estimator(kind, params, seed, task))])


def split_train_test(frame: pd.DataFrame, label: str, test_size: float, seed: int,
                     stratify: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Hold out `test_size` of the rows for the final, untouched evaluation (stratified: classification only)."""
    from sklearn.model_selection import train_test_split

    train, test = train_test_split(frame, test_size=test_size, random_state=seed,
                                   stratify=frame[label] if stratify else None)
    return train, test


def cv_sample(frame: pd.DataFrame, label: str, max_rows: int | None, seed: int,
              task: Task = "classification") -> pd.DataFrame:
    """The rows the CV search sees: all of them, or a (class-stratified) sample of `max_rows` (the refit uses all)."""
    if max_rows is None or len(frame) <= max_rows:
        return frame
    from sklearn.model_selection import train_test_split

    if task == "regression":
        return frame.sample(n=max_rows, random_state=seed)
    try:
        sample, _ = train_test_split(frame, train_size=max_rows, random_state=seed, stratify=frame[label])
    except ValueError:  # a class too rare to stratify: a uniform sample keeps the search going
        sample = frame.sample(n=max_rows, random_state=seed)
    return sample


@dataclass
class CandidateScore:
    """Cross-validated metrics of one hyper-parameter candidate (means and standard deviations over folds)."""

    index: int
    params: dict[str, ParamValue]
    mean: dict[str, float]
    std: dict[str, float]
    folds: int
    seconds: float = 0.0
    fold_metrics: list[dict[str, float]] = field(default_factory=list)


def _set_threads(model: Any, n_jobs: int) -> None:
    # Only the forests parallelise over n_jobs (LogisticRegression ignores it since sklearn 1.8); a factory's
    # pipeline is left as its author built it.
    steps = getattr(model, "named_steps", None)
    final = steps.get("model") if steps else None
    if type(final).__name__ in ("RandomForestClassifier", "RandomForestRegressor"):
        model.set_params(model__n_jobs=n_jobs)


def _labels(frame: pd.DataFrame, label: str, task: Task) -> np.ndarray:
    """The label column as the estimator is fitted on it: numbers for regression."""
    y = frame[label].to_numpy()
    return y.astype(float) if task == "regression" else y


def cross_validate_candidate(frame: pd.DataFrame, spec: FeatureSpec, kind: Estimator | EstimatorParams,
                             params: dict[str, ParamValue], folds: int, seed: int, index: int = 0, n_jobs: int = 1,
                             task: Task = "classification") -> CandidateScore:
    """K-fold CV of one candidate on the training split, stratified by class when classifying (`n_jobs`: the
    forest's threads; same scores)."""
    import time

    from sklearn.base import clone
    from sklearn.model_selection import KFold, StratifiedKFold

    start = time.perf_counter()
    X, y = frame[spec.features], _labels(frame, spec.label, task)
    template = new_model(spec, kind, params, seed, task)
    _set_threads(template, n_jobs)  # candidates run side by side: 1 each, unless there are more cores than them
    per_fold: list[dict[str, float]] = []
    splitter = (KFold if task == "regression" else StratifiedKFold)(n_splits=folds, shuffle=True, random_state=seed)
    for train_idx, val_idx in splitter.split(X, y):
        model = clone(template).fit(X.iloc[train_idx], y[train_idx])
        _set_threads(model, 1)  # threaded prediction sums the trees in any order: scores would differ in the 5th digit
        scores = predict_scores(model, X.iloc[val_idx])
        per_fold.append(quality_metrics(y[val_idx], scores, model_classes(model)))
    names = metrics_of(task)
    mean = {m: float(np.nanmean([f[m] for f in per_fold])) for m in names}
    std = {m: float(np.nanstd([f[m] for f in per_fold])) for m in names}
    return CandidateScore(index=index, params=params, mean=mean, std=std, folds=folds,
                          seconds=time.perf_counter() - start, fold_metrics=per_fold)


def select_best(scores: list[CandidateScore], metric: str) -> CandidateScore:
    """The candidate with the best mean CV `metric`; ties go to the earlier (simpler-listed) candidate."""
    if not scores:
        raise ConfigError("No hyper-parameter candidates were evaluated.")
    sign = 1.0 if higher_is_better(metric) else -1.0
    return max(scores, key=lambda s: (sign * np.nan_to_num(s.mean[metric], nan=-np.inf), -s.index))


def candidates_table(scores: list[CandidateScore], metric: str, selected: int) -> list[dict[str, Any]]:
    """One row per CV candidate (a table artifact): its parameters, mean and std of `metric`, time, and the pick."""
    import json

    return [{"candidate": s.index, "params": json.dumps(s.params), f"cv {metric} mean": round(s.mean[metric], 4),
             f"cv {metric} std": round(s.std[metric], 4), "seconds": round(s.seconds, 1), "selected": s.index == selected}
            for s in scores]


def training_metrics(best: CandidateScore, test: dict[str, float], rows_train: int, rows_test: int) -> dict[str, float]:
    """What a training run records as metrics: the chosen candidate's CV means, the test metrics, the split sizes."""
    return {**{f"cv_{k}": v for k, v in best.mean.items()}, **{f"test_{k}": v for k, v in test.items()},
            "rows_train": rows_train, "rows_test": rows_test}


def fit_pipeline(frame: pd.DataFrame, spec: FeatureSpec, kind: Estimator | EstimatorParams,
                 params: dict[str, ParamValue], seed: int, task: Task = "classification") -> Pipeline:
    """Fit the final pipeline on the whole training split, using all cores, then make it single-threaded for serving."""
    model = new_model(spec, kind, params, seed, task)
    _set_threads(model, -1)
    model.fit(frame[spec.features], _labels(frame, spec.label, task))
    _set_threads(model, 1)  # per-request joblib pools would dominate single-row latency
    return model


def evaluate_model(model: Pipeline, frame: pd.DataFrame, spec: FeatureSpec) -> dict[str, float]:
    """Metrics of a fitted model on a labeled frame (its task read from the model)."""
    classes = model_classes(model)
    y = frame[spec.label].to_numpy()
    return quality_metrics(y if classes is not None else y.astype(float), predict_scores(model, frame[spec.features]),
                           classes)


split_task = task(split_train_test, name="split-train-test", cache_policy=NO_CACHE)


def candidate_threads(workers: int, candidates: int) -> int:
    """Threads per candidate so a grid smaller than the runner's workers still keeps every core busy."""
    return max(1, workers // max(1, candidates))


cross_validate_task = task(cross_validate_candidate, name="cross-validate", task_run_name="cv-candidate-{index}",
                           cache_policy=NO_CACHE)
fit_task = task(fit_pipeline, name="fit-final-model", cache_policy=NO_CACHE)
evaluate_task = task(evaluate_model, name="evaluate-on-test", cache_policy=NO_CACHE)
