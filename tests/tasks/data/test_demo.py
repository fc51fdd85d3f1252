"""The bundled datasets: iris, and the demo stream's shape, determinism and drift knobs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tasks.data.datasets import fingerprint
from tasks.data.demo import (
    DEMO_CATEGORICAL,
    DEMO_DATE,
    DEMO_LABEL,
    DEMO_NUMERIC,
    DemoDrift,
    generate_demo,
    iter_demo,
    load_iris,
)


def test_iris_is_bundled_and_complete() -> None:
    frame = load_iris()
    assert frame.shape == (150, 5)
    assert sorted(frame["species"].unique()) == ["setosa", "versicolor", "virginica"]


def test_demo_shape_and_types() -> None:
    frame = generate_demo(5_000, seed=1)
    assert len(frame) == 5_000
    assert len(DEMO_NUMERIC) == 20 and len(DEMO_CATEGORICAL) == 5
    assert list(frame.columns) == [DEMO_DATE, *DEMO_NUMERIC, *DEMO_CATEGORICAL, DEMO_LABEL]
    assert all(pd.api.types.is_float_dtype(frame[c]) for c in DEMO_NUMERIC)
    assert set(frame[DEMO_LABEL].unique()) == {0, 1}
    assert 0.1 < frame[DEMO_LABEL].mean() < 0.45  # a realistic, imbalanced churn rate
    assert frame["credit_score"].isna().mean() == pytest.approx(0.02, abs=0.01)  # some missing values
    assert (frame[DEMO_DATE] == pd.Timestamp("2026-01-01")).all()


def test_demo_is_deterministic_and_prefix_stable() -> None:
    a = generate_demo(1_000, seed=7, day=3)
    b = generate_demo(1_000, seed=7, day=3)
    pd.testing.assert_frame_equal(a, b)
    longer = generate_demo(150_000, seed=7, day=3)  # crosses a generation block
    pd.testing.assert_frame_equal(longer.head(1_000), a)
    assert fingerprint(generate_demo(1_000, seed=8, day=3)) != fingerprint(a)
    assert fingerprint(generate_demo(1_000, seed=7, day=4)) != fingerprint(a)
    assert (generate_demo(10, seed=7, day=4)[DEMO_DATE] == pd.Timestamp("2026-01-05")).all()


def test_demo_blocks_stream_the_same_rows() -> None:
    blocks = list(iter_demo(250_000, seed=3))
    assert [len(b) for b in blocks] == [100_000, 100_000, 50_000]
    pd.testing.assert_frame_equal(blocks[0].head(500), generate_demo(500, seed=3))


def test_covariate_drift_moves_only_the_chosen_columns() -> None:
    base = generate_demo(20_000, seed=2, day=5)
    drifted = generate_demo(20_000, seed=2, day=5, drift=DemoDrift(covariate_shift=1.5, drifted_columns=("age",)))
    shift = (drifted["age"].mean() - base["age"].mean()) / base["age"].std()
    assert shift == pytest.approx(1.5, abs=0.1)
    pd.testing.assert_series_equal(base["tenure_months"], drifted["tenure_months"])


def test_category_mix_adds_an_unseen_region() -> None:
    base = generate_demo(10_000, seed=2)
    mixed = generate_demo(10_000, seed=2, drift=DemoDrift(category_mix=0.8))
    assert "international" not in set(base["region"])
    assert (mixed["region"] == "international").mean() == pytest.approx(0.4, abs=0.03)
    assert (mixed["plan"] == "enterprise").mean() > 3 * (base["plan"] == "enterprise").mean()


def test_concept_drift_changes_the_label_relationship() -> None:
    base = generate_demo(20_000, seed=4)
    changed = generate_demo(20_000, seed=4, drift=DemoDrift(concept=1.0))
    corr_base = np.corrcoef(base["tenure_months"], base[DEMO_LABEL])[0, 1]
    corr_changed = np.corrcoef(changed["tenure_months"], changed[DEMO_LABEL])[0, 1]
    assert corr_base < -0.1 and corr_changed > 0.1
    pd.testing.assert_series_equal(base["tenure_months"], changed["tenure_months"])  # features unchanged
