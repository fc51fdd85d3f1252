"""A fitted pipeline compiled to plain numpy for small requests; used only where it reproduces sklearn bit for bit.

scikit-learn spends milliseconds per call on input validation, ColumnTransformer plumbing and joblib set-up, which
dominates a one-row request. At load time the server reads the fitted statistics out of the pipeline (imputer
medians, scaler means/scales, one-hot lookup tables, the forest's node arrays) and checks the compiled scorer
against the real pipeline on the model's reference sample plus edge rows (missing and unseen values). Any
difference, or a pipeline shape it does not know, and the server keeps calling the pipeline itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import pandas as pd

UNSEEN = "\x00nightshift-unseen-category"


@dataclass(frozen=True)
class Batch:
    """Request rows already checked against the contract: a float64 block of numbers and one array per category."""

    numeric: np.ndarray  # (rows, len(numeric_names)), NaN = missing
    numeric_names: tuple[str, ...]
    categorical: dict[str, np.ndarray]  # name -> object array of str | None

    def __len__(self) -> int:
        return self.numeric.shape[0]

    def row(self, i: int) -> Batch:
        """Row i alone, as a one-row batch."""
        return Batch(self.numeric[i:i + 1], self.numeric_names, {k: v[i:i + 1] for k, v in self.categorical.items()})

    def frame(self, features: list[str]) -> pd.DataFrame:
        """The same rows as a DataFrame in the contract's feature order (what the pipeline itself takes)."""
        data: dict[str, Any] = {name: self.numeric[:, i] for i, name in enumerate(self.numeric_names)}
        data.update(self.categorical)
        return pd.DataFrame(data, columns=features)


class _Numeric:
    """SimpleImputer(mean/median/constant) followed by StandardScaler, as array arithmetic."""

    def __init__(self, columns: list[int], fill: np.ndarray, mean: np.ndarray | None, scale: np.ndarray | None):
        self.columns, self.fill, self.mean, self.scale = columns, fill, mean, scale

    def __call__(self, batch: Batch) -> np.ndarray:
        x = batch.numeric[:, self.columns]  # fancy indexing copies
        missing = np.isnan(x)
        if missing.any():
            x[missing] = np.broadcast_to(self.fill, x.shape)[missing]
        if self.mean is not None:
            x -= self.mean
        if self.scale is not None:
            x /= self.scale
        return x


class _OneHot:
    """Imputer + OneHotEncoder per column, as lookup tables filled by running the fitted encoder itself."""

    def __init__(self, names: list[str], tables: list[dict[Any, np.ndarray]], missing: list[np.ndarray],
                 unseen: list[np.ndarray]):
        self.names, self.tables, self.missing, self.unseen = names, tables, missing, unseen

    def __call__(self, batch: Batch) -> np.ndarray:
        blocks = []
        for name, table, missing, unseen in zip(self.names, self.tables, self.missing, self.unseen):
            blocks.append(np.stack([missing if v is None else table.get(v, unseen) for v in batch.categorical[name]]))
        return np.hstack(blocks)


def _numeric_step(pipe: Any, columns: list[str], numeric_names: tuple[str, ...]) -> _Numeric | None:
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    steps = [s for _, s in pipe.steps] if isinstance(pipe, Pipeline) else [pipe]
    if any(c not in numeric_names for c in columns) or not steps or len(steps) > 2:
        return None
    imputer, scaler = steps[0], steps[1] if len(steps) == 2 else None
    if type(imputer) is not SimpleImputer or imputer.add_indicator or not _nan_is_missing(imputer):
        return None
    fill = np.asarray(imputer.statistics_, dtype=np.float64)
    if fill.shape != (len(columns),) or np.isnan(fill).any():  # an all-empty training column was dropped
        return None
    if scaler is None:
        return _Numeric([numeric_names.index(c) for c in columns], fill, None, None)
    if type(scaler) is not StandardScaler:
        return None
    mean = np.asarray(scaler.mean_, dtype=np.float64) if scaler.with_mean else None
    scale = np.asarray(scaler.scale_, dtype=np.float64) if scaler.with_std else None
    return _Numeric([numeric_names.index(c) for c in columns], fill, mean, scale)


def _nan_is_missing(imputer: Any) -> bool:
    value = imputer.missing_values
    return isinstance(value, float) and np.isnan(value)


def _categorical_step(pipe: Any, columns: list[str], categories: dict[str, list[str]]) -> _OneHot | None:
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    steps = [s for _, s in pipe.steps] if isinstance(pipe, Pipeline) else [pipe]
    if any(c not in categories for c in columns) or not isinstance(steps[-1], OneHotEncoder):
        return None
    if any(type(s) is not SimpleImputer for s in steps[:-1]) or getattr(steps[-1], "sparse_output", True):
        return None
    widths = getattr(steps[-1], "_n_features_outs", None)
    if widths is None or len(widths) != len(columns):
        return None
    offsets = np.cumsum([0, *widths])
    tables, missing, unseen = [], [], []
    for j, name in enumerate(columns):
        known = sorted({*categories[name], *map(str, steps[-1].categories_[j])})
        values: list[Any] = [*known, None, UNSEEN]
        probe = pd.DataFrame({c: values if c == name else [categories[c][0] if categories[c] else "x"] * len(values)
                              for c in columns}, columns=columns)
        encoded = np.asarray(pipe.transform(probe), dtype=np.float64)[:, offsets[j]:offsets[j + 1]]
        tables.append({v: encoded[i] for i, v in enumerate(known)})
        missing.append(encoded[len(known)])
        unseen.append(encoded[len(known) + 1])
    return _OneHot(columns, tables, missing, unseen)


def compile_preprocessing(pre: Any, numeric_names: tuple[str, ...],
                          categories: dict[str, list[str]]) -> Callable[[Batch], np.ndarray] | None:
    """A numpy version of a fitted ColumnTransformer of the shapes nightshift trains, or None."""
    from sklearn.compose import ColumnTransformer

    if type(pre) is not ColumnTransformer or getattr(pre, "sparse_output_", False):
        return None
    parts: list[Callable[[Batch], np.ndarray]] = []
    for name, transformer, columns in pre.transformers_:
        if name == "remainder":
            if transformer != "drop":
                return None
            continue
        if transformer == "drop" or not len(columns):
            continue
        if not all(isinstance(c, str) for c in columns):
            return None
        columns = list(columns)
        step = (_numeric_step(transformer, columns, numeric_names) if all(c in numeric_names for c in columns)
                else _categorical_step(transformer, columns, categories))
        if step is None:
            return None
        parts.append(step)
    if not parts:
        return None
    return lambda batch: np.hstack([part(batch) for part in parts]) if len(parts) > 1 else parts[0](batch)


class _Forest:
    """A RandomForestClassifier's trees flattened into one set of node arrays, walked for all trees at once."""

    def __init__(self, forest: Any) -> None:
        trees = [t.tree_ for t in forest.estimators_]
        n_classes = int(np.atleast_1d(forest.n_classes_)[0])
        sizes = [t.node_count for t in trees]
        self.roots = np.cumsum([0, *sizes[:-1]])
        self.n_trees = len(trees)
        left, right, feature, threshold, go_left_if_nan, value = [], [], [], [], [], []
        for offset, t in zip(self.roots, trees):
            leaf = t.children_left == -1
            nodes = np.arange(t.node_count)
            left.append(np.where(leaf, nodes, t.children_left) + offset)  # a leaf points at itself
            right.append(np.where(leaf, nodes, t.children_right) + offset)
            feature.append(np.where(leaf, 0, t.feature))
            threshold.append(t.threshold)
            go_left_if_nan.append(np.asarray(t.missing_go_to_left, dtype=bool))
            value.append(t.value[:, 0, :n_classes])
        self.left, self.right = np.concatenate(left), np.concatenate(right)
        self.feature, self.threshold = np.concatenate(feature), np.concatenate(threshold)
        self.go_left_if_nan = np.concatenate(go_left_if_nan)
        self.value = np.concatenate(value)
        self.depth = max(t.max_depth for t in trees)

    def __call__(self, features: np.ndarray) -> np.ndarray:
        x = np.asarray(features, dtype=np.float32)  # the trees compare float32 features to float64 thresholds
        rows = np.arange(len(x))[:, None]
        node = np.broadcast_to(self.roots, (len(x), self.n_trees)).copy()
        for _ in range(self.depth):
            value = x[rows, self.feature[node]].astype(np.float64)
            go_left = np.where(np.isnan(value), self.go_left_if_nan[node], value <= self.threshold[node])
            node = np.where(go_left, self.left[node], self.right[node])
        # sklearn adds the trees' probabilities one after another, then divides: cumsum keeps that order exactly
        return np.cumsum(self.value[node], axis=1)[:, -1] / self.n_trees


@dataclass(frozen=True)
class CompiledScorer:
    """predict_proba for small batches without sklearn's per-call overhead; verified equal at build time."""

    preprocess: Callable[[Batch], np.ndarray]
    estimator: Callable[[np.ndarray], np.ndarray]
    kind: str

    def __call__(self, batch: Batch) -> np.ndarray:
        return self.estimator(self.preprocess(batch))


def _edge_rows(sample: Batch) -> Batch:
    """The sample's first rows with every value missing, then every category unseen (the paths requests can take)."""
    n = min(len(sample), 4)
    numeric = np.vstack([sample.numeric[:n], np.full((n, sample.numeric.shape[1]), np.nan), sample.numeric[:n]])
    categorical = {name: np.array([*col[:n], *[None] * n, *[UNSEEN] * n], dtype=object)
                   for name, col in sample.categorical.items()}
    return Batch(numeric, sample.numeric_names, categorical)


def _concat(a: Batch, b: Batch) -> Batch:
    return Batch(np.vstack([a.numeric, b.numeric]), a.numeric_names,
                 {k: np.concatenate([v, b.categorical[k]]) for k, v in a.categorical.items()})


def compile_pipeline(model: Any, features: list[str], numeric_names: tuple[str, ...],
                     categories: dict[str, list[str]], sample: Batch) -> tuple[CompiledScorer | None, str]:
    """The compiled scorer and why, or None and why not: it must match model.predict_proba exactly on `sample`."""
    from sklearn.pipeline import Pipeline

    if not isinstance(model, Pipeline) or len(model.steps) != 2 or len(sample) == 0:
        return None, "not a preprocessing + estimator pipeline"
    pre, estimator = model.steps[0][1], model.steps[1][1]
    preprocess = compile_preprocessing(pre, numeric_names, categories)
    if preprocess is None:
        return None, f"preprocessing {type(pre).__name__} has a shape the compiler does not know"
    if type(estimator).__name__ == "RandomForestClassifier" and getattr(estimator, "n_outputs_", 1) == 1:
        scorer = CompiledScorer(preprocess, _Forest(estimator), "forest")
    else:
        scorer = CompiledScorer(preprocess, estimator.predict_proba, "estimator")
    check = _concat(sample, _edge_rows(sample))
    frame = check.frame(features)
    expected_features = np.asarray(pre.transform(frame), dtype=np.float64)
    got_features = preprocess(check)
    if expected_features.shape != got_features.shape or not np.array_equal(expected_features, got_features):
        return None, "compiled preprocessing differs from the pipeline on the reference sample"
    # one row at a time, the request the compiled path exists for, and as one batch
    expected = np.vstack([model.predict_proba(check.row(i).frame(features)) for i in range(len(check))])
    got = np.vstack([scorer(check.row(i)) for i in range(len(check))])
    if expected.shape != got.shape or not np.array_equal(expected, got):
        return None, "compiled probabilities differ from the pipeline on the reference sample"
    if not np.array_equal(scorer(check), np.asarray(model.predict_proba(frame))):
        return None, "compiled probabilities differ from the pipeline on a batch"
    return scorer, f"compiled {scorer.kind} scorer matches the pipeline on {len(check)} rows"
