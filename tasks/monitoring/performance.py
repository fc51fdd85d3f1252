"""Realized quality: a model's metrics on a labeled batch against what it measured when it was tested."""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np
from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, Field

from tasks.model.metrics import higher_is_better, quality_metrics

if TYPE_CHECKING:
    import pandas as pd


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

    def metrics(self) -> dict[str, float]:
        """The batch's metrics for the monitoring run, as batch_<metric>."""
        return {f"batch_{k}": v for k, v in self.batch_metrics.items()}

    def alert_reasons(self) -> list[str]:
        """Why this check should raise an alert (degradation); empty when it should not."""
        return [f"performance degraded: {self.summary()}"] if self.degraded else []


def performance_check(y_true: Sequence, proba: np.ndarray, classes: Sequence | None,
                      reference_metrics: dict[str, float], metric: str = "roc_auc",
                      max_drop: float = 0.05) -> PerformanceCheck:
    """Flag degradation when `metric` got worse by more than `max_drop` than the model's recorded test value
    (classes None: a regressor's predictions; rmse and mae get worse by rising)."""
    batch = quality_metrics(y_true, proba, classes)
    ref = reference_metrics.get(metric, float("nan"))
    change = batch[metric] - ref
    worse_by = -change if higher_is_better(metric) else change
    degraded = bool(np.isfinite(worse_by) and worse_by > max_drop)
    return PerformanceCheck(metric=metric, rows=len(np.asarray(y_true)), batch_metrics=batch,
                            reference_metrics=reference_metrics, change=float(change), max_drop=max_drop,
                            degraded=degraded)


def batch_performance(frame: pd.DataFrame, proba: np.ndarray, label: str, classes: Sequence | None,
                      reference_metrics: dict[str, float], metric: str = "roc_auc",
                      max_drop: float = 0.05) -> PerformanceCheck | None:
    """performance_check on the rows of a scored batch whose label is one of `classes` (for a regressor, classes
    None: a number); None when none is."""
    import pandas as pd

    from tasks.data.contract import align_labels

    if label not in frame.columns:
        return None
    if classes is None:
        numbers = pd.to_numeric(frame[label], errors="coerce").to_numpy(dtype=float)
        known = np.isfinite(numbers)
        if not known.any():
            return None
        return performance_check(numbers[known], np.asarray(proba)[known], None, reference_metrics, metric, max_drop)
    aligned, _ = align_labels(frame[label], classes)  # 1.0, "1" and 1 are the same class
    labeled = aligned.notna().to_numpy()
    if not labeled.any():
        return None
    y = aligned[labeled].to_numpy().astype(np.asarray(classes).dtype)
    return performance_check(y, np.asarray(proba)[labeled], classes, reference_metrics, metric, max_drop)


batch_performance_task = task(batch_performance, name="check-performance", cache_policy=NO_CACHE)
