from __future__ import annotations

from pathlib import Path

import json

import numpy as np
import pandas as pd
import pytest

from tasks.demo_data import DEMO_CATEGORICAL, DEMO_NUMERIC, DemoDrift, generate_demo
from tasks.drift import PREDICTION_COLUMN, compute_drift, sample_rows

NUM, CAT = list(DEMO_NUMERIC), list(DEMO_CATEGORICAL)


@pytest.fixture(scope="module")
def reference() -> pd.DataFrame:
    return generate_demo(6_000, seed=1)


def test_no_drift_means_no_drifted_columns(reference, tmp_path: Path) -> None:
    result = compute_drift(reference, generate_demo(6_000, seed=1, day=1), NUM, CAT, report_dir=tmp_path)
    assert result.drifted_columns == [] and not result.dataset_drift
    assert len(result.columns) == 25
    assert {c.method for c in result.columns} == {"Wasserstein distance (normed)", "Jensen-Shannon distance"}
    assert all(c.threshold == 0.1 for c in result.columns)
    assert Path(result.html_path).stat().st_size > 100_000
    assert "metrics" in json.loads(Path(result.json_path).read_text())


def test_covariate_drift_flags_exactly_the_shifted_columns(reference) -> None:
    drifted = ("age", "credit_score", "monthly_spend")
    current = generate_demo(6_000, seed=1, day=2, drift=DemoDrift(covariate_shift=1.0, drifted_columns=drifted))
    result = compute_drift(reference, current, NUM, CAT, drift_share=0.1)
    assert sorted(result.drifted_columns) == sorted(drifted)
    assert result.drift_share == pytest.approx(3 / 25) and result.dataset_drift
    age = next(c for c in result.columns if c.column == "age")
    assert age.kind == "numeric" and age.score > 0.5
    assert result.top(1)[0].column in drifted


def test_category_mix_shift_flags_categorical_columns(reference) -> None:
    current = generate_demo(6_000, seed=1, day=3, drift=DemoDrift(category_mix=0.7))
    result = compute_drift(reference, current, NUM, CAT)
    assert {"region", "plan", "channel"} <= set(result.drifted_columns)
    assert not set(result.drifted_columns) & set(NUM)
    assert next(c for c in result.columns if c.column == "region").kind == "categorical"


def test_prediction_drift_is_reported_separately(reference) -> None:
    rng = np.random.default_rng(0)
    ref = reference.assign(**{PREDICTION_COLUMN: rng.beta(2, 5, len(reference))})
    cur = generate_demo(6_000, seed=1, day=1).assign(**{PREDICTION_COLUMN: rng.beta(5, 2, 6_000)})
    result = compute_drift(ref, cur, NUM, CAT, prediction_kind="numeric")
    assert result.prediction is not None and result.prediction.drifted
    assert PREDICTION_COLUMN not in {c.column for c in result.columns}
    assert "Prediction drift: yes" in result.markdown()


def test_sampling_caps_both_sides_and_small_data_uses_p_value_tests() -> None:
    big = generate_demo(12_000, seed=2)
    assert len(sample_rows(big, 5_000, 0)) == 5_000 and sample_rows(big, None, 0) is big
    small_ref, small_cur = generate_demo(400, seed=1), generate_demo(400, seed=1, day=1, drift=DemoDrift(covariate_shift=2))
    result = compute_drift(small_ref, small_cur, NUM, CAT)
    methods = {c.column: c.method for c in result.columns}
    assert "K-S" in methods["age"] or "p_value" in methods["age"]
    assert set(result.drifted_columns) >= {"monthly_spend", "sessions_last_30d", "days_since_last_login"}
    assert "age" not in result.drifted_columns
