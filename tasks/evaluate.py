"""Model quality: the classification metrics every run and gate speaks in."""

from __future__ import annotations

from typing import Literal, Sequence

import numpy as np
from pydantic import BaseModel, Field

Metric = Literal["roc_auc", "accuracy", "f1", "log_loss"]
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


class PerformanceCheck(BaseModel):
    """Model quality on a labeled batch against the quality recorded when the model was tested."""

    metric: str
    rows: int
    batch_metrics: dict[str, float]
    reference_metrics: dict[str, float]
    change: float = Field(description="Batch minus reference for the chosen metric (negative = worse for most metrics).")
    max_drop: float
    degraded: bool

    def summary(self) -> str:
        """One line for logs and artifacts."""
        ref = self.reference_metrics.get(self.metric, float("nan"))
        state = "DEGRADED" if self.degraded else "ok"
        return (f"{self.metric} {self.batch_metrics[self.metric]:.4f} on {self.rows} labeled rows vs {ref:.4f} at test time "
                f"({self.change:+.4f}, allowed drop {self.max_drop}): {state}")


def performance_check(y_true: Sequence, proba: np.ndarray, classes: Sequence, reference_metrics: dict[str, float],
                      metric: str = "roc_auc", max_drop: float = 0.05) -> PerformanceCheck:
    """Flag degradation when `metric` fell by more than `max_drop` from the model's recorded test value."""
    batch = classification_metrics(y_true, proba, classes)
    ref = reference_metrics.get(metric, float("nan"))
    change = batch[metric] - ref
    worse_by = -change if higher_is_better(metric) else change
    degraded = bool(np.isfinite(worse_by) and worse_by > max_drop)
    return PerformanceCheck(metric=metric, rows=len(np.asarray(y_true)), batch_metrics=batch,
                            reference_metrics=reference_metrics, change=float(change), max_drop=max_drop,
                            degraded=degraded)
