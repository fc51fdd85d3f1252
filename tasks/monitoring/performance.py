"""Realized quality: a model's metrics on a labeled batch against what it measured when it was tested."""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np
from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, Field

from tasks.model.metrics import higher_is_better, measured, quality_metrics, unmeasurable

if TYPE_CHECKING:
    import pandas as pd


CHANCE = {"roc_auc": 0.5, "r2": 0.0}  # a model at or under these ranks or predicts no better than a coin or the mean


class PerformanceCheck(BaseModel):
    """Model quality on a labeled batch against the quality recorded when the model was tested."""

    metric: str
    rows: int
    batch_metrics: dict[str, float] = Field(description="The metrics that could be measured (never NaN).")
    reference_metrics: dict[str, float]
    change: float | None = Field(None, description="Batch minus reference for the chosen metric (negative = worse for "
                                                   "most metrics); None when it could not be measured.")
    max_drop: float
    degraded: bool
    unmeasurable: str | None = Field(None, description="Why the chosen metric could not be measured on the batch "
                                                       "(then it is neither ok nor degraded).")
    floor: float | None = Field(None, description="The gate's floor for this metric (a ceiling for error metrics).")

    @property
    def value(self) -> float | None:
        """The chosen metric on the batch; None when it could not be measured."""
        return self.batch_metrics.get(self.metric)

    def below_floor(self) -> str | None:
        """Why the model is under its floor on this batch (or under chance: ROC AUC < 0.5, R² < 0), as a sentence;
        None when it is not, or when the metric could not be measured."""
        value = self.value
        if value is None:
            return None
        higher = higher_is_better(self.metric)
        under_floor = self.floor is not None and (value < self.floor if higher else value > self.floor)
        chance = CHANCE.get(self.metric)
        under_chance = chance is not None and value < chance
        if not (under_floor or under_chance):
            return None
        word = "floor" if higher else "ceiling"
        parts = [f"under the {word} {self.floor}" if under_floor else "",
                 f"worse than chance ({chance})" if under_chance else ""]
        return f"{self.metric} {value:.4f} on {self.rows:,} labeled rows is {' and '.join(p for p in parts if p)}"

    def summary(self) -> str:
        """One line for logs and artifacts."""
        ref = self.reference_metrics.get(self.metric)
        at_test = f"{ref:.4f}" if ref is not None and np.isfinite(ref) else "unknown"
        if self.value is None or self.change is None:
            return (f"{self.metric} not measurable on {self.rows} labeled rows ({self.unmeasurable}); {at_test} at "
                    "test time: NOT MEASURED")
        state = "DEGRADED" if self.degraded else "ok"
        below = self.below_floor()
        return (f"{self.metric} {self.value:.4f} on {self.rows} labeled rows vs {at_test} at test time "
                f"({self.change:+.4f}, allowed drop {self.max_drop}): {state}" + (f"; {below}" if below else ""))

    def metrics(self) -> dict[str, float]:
        """The batch's measured metrics for the monitoring run, as batch_<metric>."""
        return {f"batch_{k}": v for k, v in self.batch_metrics.items()}

    def alert_reasons(self) -> list[str]:
        """Why this check should raise an alert (degradation); empty when it should not."""
        return [f"performance degraded: {self.summary()}"] if self.degraded else []


def performance_check(y_true: Sequence, proba: np.ndarray, classes: Sequence | None,
                      reference_metrics: dict[str, float], metric: str = "roc_auc",
                      max_drop: float = 0.05, floor: float | None = None) -> PerformanceCheck:
    """Flag degradation when `metric` got worse by more than `max_drop` than the model's recorded test value
    (classes None: a regressor's predictions; rmse and mae get worse by rising). A metric that cannot be measured on
    the batch (one class, too few rows, every prediction equal) is reported as such, never compared."""
    y = np.asarray(y_true)
    why = unmeasurable(y, proba, classes, metric)
    batch = {} if len(y) == 0 else quality_metrics(y, proba, classes)
    batch = {k: float(v) for k, v in batch.items() if measured(v)}
    if why is None and metric not in batch:
        why = f"{metric} is undefined on these rows"
    if why is not None:
        batch.pop(metric, None)
        return PerformanceCheck(metric=metric, rows=len(y), batch_metrics=batch, reference_metrics=reference_metrics,
                                max_drop=max_drop, degraded=False, unmeasurable=why, floor=floor)
    ref = reference_metrics.get(metric, float("nan"))
    change = batch[metric] - ref
    worse_by = -change if higher_is_better(metric) else change
    degraded = bool(np.isfinite(worse_by) and worse_by > max_drop)
    return PerformanceCheck(metric=metric, rows=len(y), batch_metrics=batch, reference_metrics=reference_metrics,
                            change=float(change) if np.isfinite(change) else None, max_drop=max_drop,
                            degraded=degraded, floor=floor)


def batch_performance(frame: pd.DataFrame, proba: np.ndarray, label: str, classes: Sequence | None,
                      reference_metrics: dict[str, float], metric: str = "roc_auc",
                      max_drop: float = 0.05, floor: float | None = None) -> PerformanceCheck | None:
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
        return performance_check(numbers[known], np.asarray(proba)[known], None, reference_metrics, metric, max_drop,
                                 floor)
    aligned, _ = align_labels(frame[label], classes)  # 1.0, "1" and 1 are the same class
    labeled = aligned.notna().to_numpy()
    if not labeled.any():
        return None
    y = aligned[labeled].to_numpy().astype(np.asarray(classes).dtype)
    return performance_check(y, np.asarray(proba)[labeled], classes, reference_metrics, metric, max_drop, floor)


batch_performance_task = task(batch_performance, name="check-performance", cache_policy=NO_CACHE)
