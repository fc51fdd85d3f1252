"""Model quality: the metrics every run, check and gate speaks in (classification and regression), their
direction, and how a fitted model's outputs are read (class probabilities, or numbers for a regressor)."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from tasks.catalogue.config import CLASSIFICATION_METRICS, REGRESSION_METRICS, Metric, Task

METRICS: tuple[Metric, ...] = CLASSIFICATION_METRICS
LOWER_IS_BETTER: frozenset[str] = frozenset({"log_loss", "rmse", "mae"})


def higher_is_better(metric: str) -> bool:
    """Direction of a metric, so comparisons never get the sign wrong."""
    return metric not in LOWER_IS_BETTER


def default_metric(task: Task) -> Metric:
    """The metric a model is monitored and selected by unless its catalogue entry says otherwise."""
    return "rmse" if task == "regression" else "roc_auc"


def metrics_of(task: Task) -> tuple[Metric, ...]:
    """The metrics a model of this task is measured in."""
    return REGRESSION_METRICS if task == "regression" else CLASSIFICATION_METRICS


def is_classifier(model: Any) -> bool:
    """True for a fitted classifier (it has classes); a regressor predicts numbers."""
    return hasattr(model, "classes_")


def model_task(model: Any) -> Task:
    """What a fitted model does, read from the model itself."""
    return "classification" if is_classifier(model) else "regression"


def model_classes(model: Any) -> list[Any] | None:
    """A classifier's classes in probability-column order; None for a regressor."""
    return np.asarray(model.classes_).tolist() if is_classifier(model) else None


def predict_scores(model: Any, features: Any) -> np.ndarray:
    """What quality is computed from: class probabilities (rows x classes) for a classifier, the predicted numbers
    (a 1-D float array) for a regressor."""
    if is_classifier(model):
        return np.asarray(model.predict_proba(features), dtype=float)
    return np.asarray(model.predict(features), dtype=float).reshape(-1)


def regression_metrics(y_true: Sequence, predicted: np.ndarray) -> dict[str, float]:
    """RMSE, MAE and R² of numeric predictions (R² is NaN when the labels do not vary)."""
    y = np.asarray(y_true, dtype=float)
    pred = np.asarray(predicted, dtype=float).reshape(-1)
    err = pred - y
    total = float(((y - y.mean()) ** 2).sum()) if len(y) else 0.0
    return {"rmse": float(np.sqrt(np.mean(err ** 2))) if len(y) else float("nan"),
            "mae": float(np.mean(np.abs(err))) if len(y) else float("nan"),
            "r2": float(1.0 - (err ** 2).sum() / total) if total > 0 else float("nan")}


def quality_metrics(y_true: Sequence, scores: np.ndarray, classes: Sequence | None) -> dict[str, float]:
    """The task's metrics: classification from probabilities and classes, regression (classes None) from numbers."""
    if classes is None:
        return regression_metrics(y_true, scores)
    return classification_metrics(y_true, scores, classes)


def classification_metrics(y_true: Sequence, proba: np.ndarray, classes: Sequence) -> dict[str, float]:
    """Accuracy, F1, ROC AUC and log loss from class probabilities (binary or multiclass)."""
    from sklearn.metrics import accuracy_score, f1_score, log_loss, roc_auc_score

    y = np.asarray(y_true)
    classes = np.asarray(classes)
    proba = np.asarray(proba, dtype=float)
    pred = classes[np.argmax(proba, axis=1)]
    out: dict[str, float] = {"accuracy": float(accuracy_score(y, pred))}
    present = np.unique(y)
    if len(classes) == 2:
        out["f1"] = float(f1_score(y, pred, pos_label=classes[1], zero_division=0))
        out["roc_auc"] = float(roc_auc_score(y == classes[1], proba[:, 1])) if len(present) == 2 else float("nan")
    else:
        out["f1"] = float(f1_score(y, pred, average="macro", labels=classes, zero_division=0))
        if len(present) == len(classes):
            out["roc_auc"] = float(roc_auc_score(y, proba, multi_class="ovr", labels=classes))
        else:
            out["roc_auc"] = float("nan")
    out["log_loss"] = float(log_loss(y, np.clip(proba, 1e-15, 1 - 1e-15), labels=classes))
    return out


MIN_MEASURED_ROWS = 30  # fewer labeled rows and a day's metric is noise, not a measurement
MIN_CLASS_ROWS = 5  # ROC AUC needs this many rows of each of two classes to rank anything


def unmeasurable(y_true: Sequence, scores: np.ndarray, classes: Sequence | None, metric: str,
                 min_rows: int = MIN_MEASURED_ROWS) -> str | None:
    """Why `metric` cannot be measured on these labeled rows (one class, too few rows, every prediction equal), as a
    sentence; None when it can. A metric that cannot be measured is never compared, "ok", or logged as NaN."""
    y = np.asarray(y_true)
    if len(y) < min_rows:
        return f"too few labeled rows to measure {metric} ({len(y)} < {min_rows})"
    if classes is None:
        values = np.asarray(y, dtype=float)
        if metric == "r2" and np.ptp(values) == 0:
            return f"every label is {values[0]:g}: r2 needs labels that vary"
        return None
    labels, counts = np.unique(y, return_counts=True)
    labels = np.asarray([v.item() if hasattr(v, "item") else v for v in labels], dtype=object)  # 1, not np.int64(1)
    if metric == "roc_auc":
        if len(labels) < 2:
            return f"every one of the {len(y):,} labels is {labels[0]!r}: roc_auc needs two classes"
        if len(np.asarray(classes)) == 2 and counts.min() < MIN_CLASS_ROWS:
            return (f"only {counts.min()} of {len(y):,} labels are {labels[np.argmin(counts)]!r}: roc_auc needs at "
                    f"least {MIN_CLASS_ROWS} of each class")
        if len(np.asarray(classes)) > 2 and len(labels) < len(np.asarray(classes)):
            missing = sorted(set(np.asarray(classes).tolist()) - set(labels.tolist()), key=str)
            return f"class(es) {', '.join(map(repr, missing))} absent from the labels: multiclass roc_auc needs all"
        proba = np.asarray(scores, dtype=float)
        if np.ptp(proba, axis=0).max() == 0:
            return f"every prediction is the same on the {len(y):,} rows: roc_auc cannot rank them"
    return None


def measured(value: float | None) -> bool:
    """A value that was measured: a finite number."""
    return value is not None and bool(np.isfinite(value))


def drift_predictions(proba: np.ndarray, classes: Sequence | None) -> tuple[np.ndarray, str]:
    """What prediction drift compares: the predicted number for a regressor, P(positive) for binary models, the
    predicted class otherwise."""
    proba = np.asarray(proba, dtype=float)
    if classes is None:
        return proba.reshape(-1), "numeric"
    if len(classes) == 2:
        return proba[:, 1], "numeric"
    return np.asarray(classes).astype(str)[np.argmax(proba, axis=1)], "categorical"
