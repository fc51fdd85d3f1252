from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score, log_loss, roc_auc_score

from tasks.model.metrics import classification_metrics, higher_is_better


def test_binary_metrics_match_scikit_learn() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 500)
    p1 = np.clip(y * 0.6 + rng.random(500) * 0.5, 0, 1)
    proba = np.column_stack([1 - p1, p1])
    got = classification_metrics(y, proba, [0, 1])
    assert got["accuracy"] == pytest.approx(accuracy_score(y, p1 >= 0.5))
    assert got["f1"] == pytest.approx(f1_score(y, p1 >= 0.5))
    assert got["roc_auc"] == pytest.approx(roc_auc_score(y, p1))
    assert got["log_loss"] == pytest.approx(log_loss(y, proba))


def test_multiclass_and_string_labels() -> None:
    y = np.array(["a", "b", "c", "a", "b", "c"])
    proba = np.array([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6], [0.5, 0.4, 0.1], [0.3, 0.3, 0.4],
                      [0.1, 0.1, 0.8]])
    got = classification_metrics(y, proba, ["a", "b", "c"])
    assert got["accuracy"] == pytest.approx(5 / 6)
    assert got["roc_auc"] == pytest.approx(roc_auc_score(y, proba, multi_class="ovr"))


def test_single_class_batch_has_no_auc_but_other_metrics() -> None:
    got = classification_metrics([1, 1, 1], np.array([[0.2, 0.8], [0.6, 0.4], [0.1, 0.9]]), [0, 1])
    assert np.isnan(got["roc_auc"]) and got["accuracy"] == pytest.approx(2 / 3)


def test_direction() -> None:
    assert higher_is_better("roc_auc") and not higher_is_better("log_loss")


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


def test_drift_predictions_by_model_type() -> None:
    from tasks.model.metrics import drift_predictions

    values, kind = drift_predictions(np.array([[0.2, 0.8], [0.9, 0.1]]), [0, 1])
    assert kind == "numeric" and values.tolist() == [0.8, 0.1]
    values, kind = drift_predictions(np.array([[0.2, 0.5, 0.3]]), ["a", "b", "c"])
    assert kind == "categorical" and values.tolist() == ["b"]


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
