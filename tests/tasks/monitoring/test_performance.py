"""A model's quality on a labeled batch against its test-time metrics: degradation and its alert reasons."""

from __future__ import annotations

import numpy as np
import pytest

from tasks.model.metrics import classification_metrics


def test_performance_check_flags_a_real_drop_only() -> None:
    from tasks.monitoring.performance import performance_check

    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 2_000)
    good = np.clip(y * 0.5 + rng.random(2_000) * 0.5, 0, 1)
    proba = np.column_stack([1 - good, good])
    reference = classification_metrics(y, proba, [0, 1])
    same = performance_check(y, proba, [0, 1], reference, "roc_auc", max_drop=0.05)
    assert not same.degraded and same.change == pytest.approx(0)
    noise = rng.random(2_000)
    worse = performance_check(y, np.column_stack([1 - noise, noise]), [0, 1], reference, "roc_auc", 0.05)
    assert worse.degraded and worse.change < -0.3 and "DEGRADED" in worse.summary()
    loss = performance_check(y, np.column_stack([1 - noise, noise]), [0, 1], reference, "log_loss", 0.05)
    assert loss.degraded and loss.change > 0  # log loss went up: worse


def test_batch_performance_uses_only_labeled_rows_and_none_without_labels() -> None:
    import pandas as pd

    from tasks.monitoring.performance import batch_performance, performance_check

    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 1_000).astype(float)
    p = np.clip(y * 0.6 + rng.random(1_000) * 0.4, 0, 1)
    proba = np.column_stack([1 - p, p])
    reference = {"roc_auc": 0.99, "accuracy": 0.9}
    frame = pd.DataFrame({"x": rng.random(1_000), "label": np.where(np.arange(1_000) % 4 == 0, np.nan, y)})
    check = batch_performance(frame, proba, "label", [0.0, 1.0], reference, "roc_auc", 0.05)
    labeled = frame["label"].notna().to_numpy()
    assert check == performance_check(y[labeled], proba[labeled], [0.0, 1.0], reference, "roc_auc", 0.05)
    assert check.rows == 750
    assert batch_performance(frame.assign(label=np.nan), proba, "label", [0.0, 1.0], reference) is None
    assert batch_performance(frame.drop(columns="label"), proba, "label", [0.0, 1.0], reference) is None


def test_performance_metrics_and_alert_reasons() -> None:
    from tasks.monitoring.performance import PerformanceCheck

    check = PerformanceCheck(metric="roc_auc", rows=10, batch_metrics={"roc_auc": 0.7, "accuracy": 0.8},
                             reference_metrics={"roc_auc": 0.9}, change=-0.2, max_drop=0.05, degraded=True)
    assert check.metrics() == {"batch_roc_auc": 0.7, "batch_accuracy": 0.8}
    assert check.alert_reasons() == [f"performance degraded: {check.summary()}"]
    assert check.model_copy(update={"degraded": False}).alert_reasons() == []
