"""Model quality: the classification metrics every run, check and gate speaks in, and their direction."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from tasks.catalogue.config import Metric


METRICS: tuple[Metric, ...] = ("accuracy", "f1", "roc_auc", "log_loss")
LOWER_IS_BETTER: frozenset[str] = frozenset({"log_loss"})


def higher_is_better(metric: str) -> bool:
    """Direction of a metric, so comparisons never get the sign wrong."""
    return metric not in LOWER_IS_BETTER


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


def drift_predictions(proba: np.ndarray, classes: Sequence) -> tuple[np.ndarray, str]:
    """What prediction drift compares: P(positive) for binary models, the predicted class otherwise."""
    proba = np.asarray(proba, dtype=float)
    if len(classes) == 2:
        return proba[:, 1], "numeric"
    return np.asarray(classes).astype(str)[np.argmax(proba, axis=1)], "categorical"
