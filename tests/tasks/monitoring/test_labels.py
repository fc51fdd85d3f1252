"""A day's labels far from the reference's balance are suspect; a real shift of the base rate is not. A champion
under its floor or under chance says so; a metric that cannot be measured is never "ok"."""

from __future__ import annotations

import numpy as np
import pytest

from tasks.monitoring.labels import labels_suspect
from tasks.monitoring.performance import performance_check

RNG = np.random.default_rng(3)
REFERENCE = (RNG.random(5_000) < 0.45).astype(int)


def test_every_label_one_is_suspect_and_a_real_base_rate_shift_is_not() -> None:
    broken = labels_suspect(REFERENCE, np.ones(23_377, dtype=int), "classification")
    assert broken is not None and broken.startswith("label balance far from the reference's: 1 100% on 23,377 "
                                                    "labeled rows vs 0 ")
    shifted = (RNG.random(20_000) < 0.60).astype(int)  # churn up 15 points: real, large, and not a broken feed
    assert labels_suspect(REFERENCE, shifted, "classification") is None
    assert labels_suspect(REFERENCE, np.ones(20, dtype=int), "classification") is None  # too few to say
    assert "'spam'" in labels_suspect(np.array(["ham"] * 900 + ["spam"] * 100), np.array(["spam"] * 400),
                                      "classification")


def test_regression_labels_in_other_units_or_constant_are_suspect() -> None:
    sales = RNG.gamma(4, 10, 5_000)
    assert labels_suspect(sales, RNG.gamma(4, 10, 700) * 1.2, "regression") is None  # demand up 20%
    assert "KS" in labels_suspect(sales, RNG.gamma(4, 10, 700) * 1000, "regression")  # units, not demand
    assert labels_suspect(sales, np.zeros(700), "regression").startswith("every one of the 700 labels is 0")


def test_under_chance_and_under_the_floor_say_so() -> None:
    y = np.tile([0, 1], 100)
    inverted = np.column_stack([y * 0.7 + 0.15, 1 - (y * 0.7 + 0.15)])  # ranks every positive below every negative
    check = performance_check(y, inverted, [0, 1], {"roc_auc": 0.9}, "roc_auc", 0.05, floor=0.6)
    assert check.value == 0.0 and check.degraded
    assert check.below_floor() == "roc_auc 0.0000 on 200 labeled rows is under the floor 0.6 and worse than chance (0.5)"
    fine = performance_check(y, inverted[:, ::-1], [0, 1], {"roc_auc": 0.9}, "roc_auc", 0.05, floor=0.6)
    assert fine.below_floor() is None


def test_a_metric_that_cannot_be_measured_is_not_ok_and_not_logged() -> None:
    ones = np.ones(23_377, dtype=int)
    proba = np.tile([0.4, 0.6], (len(ones), 1))
    check = performance_check(ones, proba, [0, 1], {"roc_auc": 0.9}, "roc_auc", 0.03, floor=0.6)
    assert check.value is None and check.change is None and not check.degraded and check.below_floor() is None
    assert check.summary() == ("roc_auc not measurable on 23377 labeled rows (every one of the 23,377 labels is 1: "
                               "roc_auc needs two classes); 0.9000 at test time: NOT MEASURED")
    assert "batch_roc_auc" not in check.metrics() and all(np.isfinite(v) for v in check.metrics().values())
    assert check.metrics()["batch_accuracy"] == pytest.approx(1.0)
