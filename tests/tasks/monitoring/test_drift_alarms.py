"""False alarms of the dataset-drift decision with a small reference (issue 24, item 4): an undrifted night does not
alarm, a drifted one still does, and every verdict shows its p-value, adjusted p-value and cut-off."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from tasks.data.demo import DEMO_CATEGORICAL, DEMO_NUMERIC, DemoDrift, generate_demo
from tasks.monitoring.drift import ColumnDrift, compute_drift
from tasks.monitoring.drift.decision import (
    TWO_SAMPLE_CHI_SQUARE_DISPLAY,
    adjust,
    benjamini_hochberg,
    chi_square_two_sample_p,
    pooled_counts,
)

NUM, CAT = list(DEMO_NUMERIC), list(DEMO_CATEGORICAL)
RARE_NUM, RARE_CAT = ["amount", "age"], ["merchant", "device", "promo"]


def _rare_levels(rows: int, seed: int, drift: bool = False) -> pd.DataFrame:
    """A 200-level Zipf-like merchant (most levels rare, many absent from a 300-row sample), a device with levels at
    1% and 0.2%, a 2-level promo, two numbers. `drift` moves the merchant mix and shifts the amount."""
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, 201) ** 1.1
    if drift:
        weights = weights[::-1] + weights.mean()  # the tail becomes the head
    merchants = np.asarray([f"m{i:03d}" for i in range(200)], dtype=object)
    return pd.DataFrame({
        "merchant": merchants[rng.choice(200, rows, p=weights / weights.sum())],
        "device": rng.choice(["android", "ios", "web", "tv", "watch"], rows, p=[0.55, 0.3, 0.138, 0.01, 0.002]),
        "promo": rng.choice(["none", "coupon"], rows, p=[0.97, 0.03]),
        "amount": rng.lognormal(3.5 + (0.5 if drift else 0.0), 1.0, rows),
        "age": np.round(rng.normal(40, 13, rows)),
    })


def _no_numpy_warnings(*args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        return compute_drift(*args, **kwargs)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_an_undrifted_night_with_a_300_row_reference_and_rare_levels_does_not_alarm(seed: int) -> None:
    reference, night = _rare_levels(300, seed=seed), _rare_levels(23_000, seed=100 + seed)
    before = compute_drift(reference, night, RARE_NUM, RARE_CAT, drift_share=0.2, decision="preset")
    assert before.dataset_drift and {"merchant", "device"} <= set(before.drifted_columns)  # the false alarm, pinned
    after = _no_numpy_warnings(reference, night, RARE_NUM, RARE_CAT, drift_share=0.2)
    assert not after.dataset_drift and after.drifted_columns == [] and after.alert_reasons() == []
    merchant = next(c for c in after.columns if c.column == "merchant")
    assert merchant.method == TWO_SAMPLE_CHI_SQUARE_DISPLAY and merchant.adjusted is not None
    assert after.fdr == 0.05 and all(c.adjusted is not None for c in after.columns)


def test_a_clearly_drifted_night_with_a_300_row_reference_still_alarms_and_says_why() -> None:
    reference, night = _rare_levels(300, seed=1), _rare_levels(23_000, seed=7, drift=True)
    result = _no_numpy_warnings(reference, night, RARE_NUM, RARE_CAT, drift_share=0.2)
    assert result.dataset_drift and {"merchant", "amount"} <= set(result.drifted_columns)
    reason = result.alert_reasons()[0]
    assert reason.startswith("data drift: ") and "merchant (p " in reason and "adjusted " in reason
    rows = {r["column"]: r for r in result.table()}
    assert rows["merchant"]["drifted"] and rows["merchant"]["adjusted p"] <= 0.05
    assert rows["merchant"]["score"] < rows["merchant"]["threshold"]  # a p-value drifts below its cut-off
    assert "Benjamini-Hochberg adjusted across 5 tests" in result.summary()
    assert "| adjusted p |" in result.markdown()
    assert {c.column for c in result.top(2)} == {"merchant", "amount"}  # the smallest p-values come first


@pytest.mark.parametrize("rows", [300, 1_000])
def test_demo_undrifted_nights_no_longer_alarm_and_the_crowd_day_still_does(rows: int) -> None:
    reference = generate_demo(rows, seed=11)
    quiet = compute_drift(reference, generate_demo(23_000, seed=12, day=1), NUM, CAT, drift_share=0.2)
    assert not quiet.dataset_drift
    crowd = generate_demo(23_000, seed=12, day=6, drift=DemoDrift(covariate_shift=1.0, category_mix=0.5))
    loud = compute_drift(reference, crowd, NUM, CAT, drift_share=0.2)
    assert loud.dataset_drift and set(loud.drifted_columns) >= {"monthly_spend", "sessions_last_30d",
                                                                "days_since_last_login", "plan", "region"}


def test_a_level_absent_from_the_reference_is_pooled_unless_it_is_frequent() -> None:
    reference = pd.Series(["a"] * 150 + ["b"] * 147 + ["c"] * 3)
    current = pd.Series(["a"] * 5_000 + ["b"] * 4_900 + ["c"] * 100 + ["d"] * 80)  # d: never in the reference
    table = pooled_counts(reference, current)  # c and d each expected < 5 times in 300 rows, together > 5: pooled
    assert table.shape == (2, 3) and table[:, -1].tolist() == [3, 180]  # the pooled cell comes last
    assert sorted(table[0]) == [3, 147, 150] and sorted(table[1]) == [180, 4_900, 5_000]
    assert 0.001 < chi_square_two_sample_p(reference, current) < 1  # finite: no empty cell, no division by zero
    rarer = pd.Series(["a"] * 5_000 + ["b"] * 4_900 + ["c"] * 60 + ["d"] * 40)  # c + d still < 5: b joins them
    assert pooled_counts(reference, rarer)[:, -1].tolist() == [150, 5_000]  # b + c + d
    new = pd.Series(["a"] * 3_000 + ["b"] * 3_000 + ["d"] * 4_000)  # d frequent in the batch: its own cell
    assert pooled_counts(reference, new).shape == (2, 3) and chi_square_two_sample_p(reference, new) < 1e-10
    assert chi_square_two_sample_p(pd.Series(["x"] * 300), pd.Series(["x"] * 9_000 + ["y"] * 3)) == 1.0
    categories = pd.Series(pd.Categorical(["a", "b"] * 200, categories=["a", "b", "unused"]))
    assert pooled_counts(categories, categories).shape == (2, 2)  # a category seen on neither side is dropped


def test_benjamini_hochberg_cutoff_flags_exactly_the_adjusted_columns() -> None:
    rng = np.random.default_rng(0)
    for _ in range(200):
        m = int(rng.integers(1, 30))
        p = np.where(rng.random(m) < 0.3, rng.random(m) * 0.01, rng.random(m)).tolist()
        adjusted, cutoff = benjamini_hochberg(p)
        assert [a <= 0.05 for a in adjusted] == [x < cutoff for x in p] == [x <= cutoff for x in p]
    assert benjamini_hochberg([0.01, 0.02, 0.9]) == (pytest.approx([0.03, 0.03, 0.9]), pytest.approx(2.5 * 0.05 / 3))


def test_adjust_leaves_distances_alone() -> None:
    columns = [ColumnDrift(column="a", kind="numeric", method="K-S p_value", score=0.03, threshold=0.05, drifted=True),
               ColumnDrift(column="b", kind="numeric", method="K-S p_value", score=0.5, threshold=0.05, drifted=False),
               ColumnDrift(column="c", kind="numeric", method="Wasserstein distance (normed)", score=0.2,
                           threshold=0.1, drifted=True)]
    a, b, c = adjust(columns)
    assert (a.adjusted, a.drifted, a.threshold) == (pytest.approx(0.06), False, pytest.approx(0.5 * 0.05 / 2))
    assert b.adjusted == pytest.approx(0.5) and c == columns[2]
