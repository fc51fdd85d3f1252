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


def test_drift_predictions_by_model_type() -> None:
    from tasks.model.metrics import drift_predictions

    values, kind = drift_predictions(np.array([[0.2, 0.8], [0.9, 0.1]]), [0, 1])
    assert kind == "numeric" and values.tolist() == [0.8, 0.1]
    values, kind = drift_predictions(np.array([[0.2, 0.5, 0.3]]), ["a", "b", "c"])
    assert kind == "categorical" and values.tolist() == ["b"]


