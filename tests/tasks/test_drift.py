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


# ----------------------------------------------------------------------------- what the monitor reads off a result
from tasks.drift import ColumnDrift, DriftResult, current_sample  # noqa: E402


def _column(name: str, score: float, kind: str = "numeric") -> ColumnDrift:
    return ColumnDrift(column=name, kind=kind, method="Wasserstein distance (normed)", score=score, threshold=0.1,
                       drifted=score >= 0.1)


def _result(scores: dict[str, float], prediction: float | None, share_threshold: float = 0.5) -> DriftResult:
    columns = [_column(name, score) for name, score in scores.items()]
    drifted = [c.column for c in columns if c.drifted]
    return DriftResult(dataset_drift=len(drifted) / len(columns) >= share_threshold,
                       drift_share=len(drifted) / len(columns), drift_share_threshold=share_threshold,
                       drifted_columns=drifted, columns=columns,
                       prediction=None if prediction is None else _column(PREDICTION_COLUMN, prediction),
                       reference_rows=100, current_rows=80, sampled_reference_rows=100, sampled_current_rows=80)


def test_drift_table_lists_the_prediction_then_columns_furthest_over_threshold() -> None:
    result = _result({"age": 0.02, "spend": 0.4, "tenure": 0.15}, prediction=0.05)
    rows = result.table()
    assert [r["column"] for r in rows] == [PREDICTION_COLUMN, "spend", "tenure", "age"]
    assert rows[1] == {"column": "spend", "kind": "numeric", "test": "Wasserstein distance (normed)", "score": 0.4,
                       "threshold": 0.1, "drifted": True}
    assert "2/3 columns drifted" in result.summary() and "Prediction drift: no" in result.summary()


def test_drift_metrics_and_alert_reasons() -> None:
    quiet = _result({"age": 0.02, "spend": 0.03}, prediction=0.01)
    assert quiet.alert_reasons() == []
    assert quiet.metrics() == {"drift_share": 0.0, "drifted_columns": 0, "dataset_drift": 0.0,
                               "drift_score.age": 0.02, "drift_score.spend": 0.03, "prediction_drift_score": 0.01}
    loud = _result({"age": 0.3, "spend": 0.03}, prediction=0.2)
    assert loud.alert_reasons() == ["data drift: 1/2 columns (share 0.50 >= 0.50): age",
                                    "prediction drift: Wasserstein distance (normed) 0.200 >= 0.1"]
    assert "prediction_drift_score" not in _result({"age": 0.3}, prediction=None).metrics()


def test_current_sample_scores_a_capped_sample_like_the_reference() -> None:
    from tasks.data import infer_features
    from tasks.drift import build_reference
    from tasks.train import fit_pipeline

    frame = generate_demo(8_000, seed=3)
    spec = infer_features(frame, "churned")
    model = fit_pipeline(frame, spec, "random_forest", {"n_estimators": 10}, seed=0)
    sample = current_sample(model, frame, spec.features, cap=5_000, seed=1)
    assert len(sample.frame) == 5_000 and sample.proba.shape == (5_000, 2) and sample.prediction_kind == "numeric"
    np.testing.assert_array_equal(sample.frame[PREDICTION_COLUMN].to_numpy(), sample.proba[:, 1])
    reference = build_reference(model, frame, spec.features, spec.label, 5_000, seed=1)
    np.testing.assert_array_equal(np.sort(reference[PREDICTION_COLUMN].to_numpy()),
                                  np.sort(sample.frame[PREDICTION_COLUMN].to_numpy()))  # same rows, same scores
    assert current_sample(model, frame.head(100), spec.features, cap=5_000, seed=1).frame.index.equals(
        frame.head(100).index)  # below the cap: every row
