from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tasks.data.demo import DEMO_CATEGORICAL, DEMO_NUMERIC, DemoDrift, generate_demo
from tasks.monitoring.drift import PREDICTION_COLUMN, DriftResult, compute_drift, compute_drift_preset, sample_rows

NUM, CAT = list(DEMO_NUMERIC), list(DEMO_CATEGORICAL)


@pytest.fixture(scope="module")
def reference() -> pd.DataFrame:
    return generate_demo(6_000, seed=1)


def test_no_drift_means_no_drifted_columns_and_no_html(reference, tmp_path: Path) -> None:
    result = compute_drift(reference, generate_demo(6_000, seed=1, day=1), NUM, CAT, report_dir=tmp_path)
    assert result.drifted_columns == [] and not result.dataset_drift and not result.any_drift
    assert len(result.columns) == 25
    assert {c.method for c in result.columns} == {"Wasserstein distance (normed)", "Jensen-Shannon distance"}
    assert all(c.threshold == 0.1 for c in result.columns)
    assert result.html_path is None and not (tmp_path / "drift_report.html").exists()  # "on_drift": nothing drifted
    assert DriftResult.model_validate_json(Path(result.json_path).read_text()).columns == result.columns


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
from tasks.monitoring.drift import ColumnDrift, current_sample


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
    from tasks.data.datasets import infer_features
    from tasks.model.train import fit_pipeline
    from tasks.monitoring.drift import build_reference

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


# ----------------------------------------------------------------------------- the fast path decides as the preset does
MIXED_NUM = ["wide", "skewed", "counts", "flag", "tiny_ints", "holes", "nullable_ints"]
MIXED_CAT = ["colour", "yes_no", "sparse", "coded", "tier"]


def _mixed(rows: int, seed: int, drift: bool, prediction: str | None = None) -> pd.DataFrame:
    """Columns that reach every test DataDriftPreset picks: many values, <= 5 values, 2 values, NaN, inf, codes."""
    rng = np.random.default_rng(seed)
    shift = 0.6 if drift else 0.0
    frame = pd.DataFrame({
        "wide": rng.normal(shift, 1, rows),
        "skewed": rng.lognormal(shift, 1, rows),
        "counts": rng.poisson(3 + 3 * shift, rows),  # ints, > 5 values
        "flag": rng.binomial(1, 0.3 + 0.3 * shift, rows).astype(float),  # 2 values: Z-test / Jensen-Shannon
        "tiny_ints": rng.integers(0, 4 + int(drift), rows),  # 4 or 5 values: chi-square / Jensen-Shannon
        "holes": np.where(rng.random(rows) < 0.1, np.nan, rng.normal(shift, 2, rows)),
        "colour": rng.choice(["red", "green", "blue", "grey"], rows, p=[0.4, 0.3, 0.2, 0.1] if not drift
                             else [0.1, 0.2, 0.3, 0.4]),
        "yes_no": rng.choice(["yes", "no"], rows, p=[0.5 + 0.3 * shift, 0.5 - 0.3 * shift]),
        "sparse": pd.Series(rng.choice(["a", "b", "c", None], rows, p=[0.3, 0.3, 0.1, 0.3]), dtype=object),
        "coded": rng.integers(1, 8, rows),  # numbers declared categorical
        "tier": pd.Categorical(rng.choice(["gold", "silver", "bronze"], rows, p=[0.2, 0.3, 0.5] if drift
                                          else [0.1, 0.3, 0.6])),
    })
    frame.loc[frame.index[:3], "holes"] = [np.inf, -np.inf, np.nan]
    frame["nullable_ints"] = pd.array(rng.poisson(5 + 2 * shift, rows), dtype="Int64")
    frame.loc[frame.index[3:9], "nullable_ints"] = pd.NA
    if prediction == "numeric":
        frame[PREDICTION_COLUMN] = rng.beta(2 + 3 * shift, 5, rows)
    elif prediction == "categorical":
        frame[PREDICTION_COLUMN] = rng.choice(["setosa", "versicolor", "virginica"], rows,
                                              p=[0.2, 0.3, 0.5] if drift else [0.4, 0.3, 0.3])
    return frame


def _assert_same_decisions(reference: pd.DataFrame, current: pd.DataFrame, numeric: list[str], categorical: list[str],
                           **kwargs) -> DriftResult:
    fast = compute_drift(reference, current, numeric, categorical, **kwargs)
    preset = compute_drift_preset(reference, current, numeric, categorical, **kwargs)
    pairs = list(zip([*fast.columns, fast.prediction], [*preset.columns, preset.prediction], strict=True))
    for ours, theirs in pairs:
        if theirs is None:
            assert ours is None
            continue
        assert (ours.column, ours.kind, ours.method, ours.threshold, ours.drifted) == \
            (theirs.column, theirs.kind, theirs.method, theirs.threshold, theirs.drifted)
        assert ours.score == pytest.approx(theirs.score, abs=1e-9, rel=0), ours.column
    assert (fast.drifted_columns, fast.drift_share, fast.dataset_drift, fast.drift_share_threshold) == \
        (preset.drifted_columns, preset.drift_share, preset.dataset_drift, preset.drift_share_threshold)
    return fast


@pytest.mark.parametrize(("rows", "drift", "prediction", "decision"), [
    (600, True, "categorical", "adjusted"), (600, True, "categorical", "preset"), (4_000, False, "numeric", "adjusted"),
    (4_000, True, "categorical", "adjusted")])
def test_fast_path_matches_the_preset_column_by_column(rows: int, drift: bool, prediction: str, decision: str) -> None:
    reference, current = _mixed(rows, seed=1, drift=False, prediction=prediction), _mixed(rows, 2, drift, prediction)
    result = _assert_same_decisions(reference, current, MIXED_NUM, MIXED_CAT, prediction_kind=prediction,
                                    sample_cap=None, drift_share=0.3, decision=decision)
    methods = {c.method for c in result.columns}
    if rows <= 1000:  # p-value tests: K-S, chi-square (the preset's, or the two-sample one) and Z-test all reached
        chi_square = "chi-square p_value" if decision == "preset" else "chi-square two-sample p_value"
        assert {"K-S p_value", chi_square, "Z-test p_value"} <= methods
        assert (result.fdr is None) == (decision == "preset")
    else:  # distances: Jensen-Shannon on the <= 5-valued numbers too
        assert methods == {"Wasserstein distance (normed)", "Jensen-Shannon distance"}
        assert {c.column: c.method for c in result.columns}["tiny_ints"] == "Jensen-Shannon distance"
    assert bool(result.drifted_columns) == drift


@pytest.mark.integration
@pytest.mark.parametrize("rows", [1_000, 1_001, 20_000])
@pytest.mark.parametrize("drift", [False, True])
@pytest.mark.parametrize("prediction", [None, "numeric", "categorical"])
def test_fast_path_matches_the_preset_on_more_data(rows: int, drift: bool, prediction: str | None) -> None:
    reference, current = _mixed(rows, seed=3, drift=False, prediction=prediction), _mixed(rows, 4, drift, prediction)
    _assert_same_decisions(reference, current, MIXED_NUM, MIXED_CAT, prediction_kind=prediction,
                           sample_cap=None if rows < 20_000 else 8_000, seed=7)


@pytest.mark.integration
@pytest.mark.parametrize("drift", [DemoDrift(), DemoDrift(covariate_shift=0.5), DemoDrift(category_mix=0.5),
                                   DemoDrift(covariate_shift=0.1, category_mix=0.1)])
def test_fast_path_matches_the_preset_on_demo_days(drift: DemoDrift) -> None:
    _assert_same_decisions(generate_demo(30_000, seed=1), generate_demo(30_000, seed=1, day=2, drift=drift), NUM, CAT,
                           sample_cap=20_000)


@pytest.mark.parametrize("rows", [1_000, 1_001, 3_000])
@pytest.mark.parametrize("distinct", [1, 2, 3, 5, 6])
def test_test_choice_is_evidentlys_even_when_the_values_show_up_late(rows: int, distinct: int) -> None:
    from evidently.legacy.calculations.stattests.registry import _get_default_stattest
    from evidently.legacy.core import ColumnType

    from tasks.monitoring.drift import _default_test

    late = pd.Series(np.r_[np.zeros(rows - distinct), np.arange(distinct)])  # the head holds one value only
    for reference, current in [(late, late.iloc[:50]), (late.iloc[: rows - distinct], late)]:
        for column_type in (ColumnType.Numerical, ColumnType.Categorical):
            assert _default_test(reference, current, column_type) is \
                _get_default_stattest(reference, current, column_type)


@pytest.mark.parametrize("values", [
    pd.Series([1.5, np.nan, np.inf, -np.inf, 2.0]),
    pd.Series(["a", None, "b", np.nan, "inf"], dtype=object),
    pd.Series(["a", np.inf, 3, None, -np.inf], dtype=object),  # mixed: Evidently's own way
    pd.Series([1, None, 3], dtype="Int64"),
    pd.Series(["x", None, "y"], dtype="category"),
    pd.Series(["x", None, "y"], dtype="string"),
    pd.Series([3, 4, 5]),
], ids=["float", "strings", "mixed", "Int64", "category", "string", "int"])
def test_cleaning_keeps_exactly_what_evidently_keeps(values: pd.Series) -> None:
    from tasks.monitoring.drift import _finite

    expected = values.replace([-np.inf, np.inf], np.nan).dropna()  # get_one_column_drift's cleaning
    pd.testing.assert_series_equal(_finite(values.copy(), "c", "current"), expected)


def test_report_modes(tmp_path: Path) -> None:
    reference, current = _mixed(5_000, seed=1, drift=False), _mixed(5_000, seed=2, drift=False)
    quiet = compute_drift(reference, current, MIXED_NUM, MIXED_CAT, report_dir=tmp_path / "never", report="never")
    assert not quiet.any_drift and quiet.html_path is None and Path(quiet.json_path).exists()
    always = compute_drift(reference, current, MIXED_NUM, MIXED_CAT, report_dir=tmp_path / "always", report="always")
    assert Path(always.html_path).stat().st_size > 100_000 and always.report_seconds > 0
    assert always.columns == quiet.columns
    drifted = compute_drift(reference, _mixed(5_000, seed=2, drift=True), MIXED_NUM, MIXED_CAT,
                            report_dir=tmp_path / "on")
    assert drifted.any_drift and Path(drifted.html_path).exists()  # "on_drift", the default
    assert compute_drift(reference, current, MIXED_NUM, MIXED_CAT).json_path is None  # no report_dir: nothing written
    with pytest.raises(ValueError, match="report_dir"):
        compute_drift(reference, current, MIXED_NUM, MIXED_CAT, report="always")


def test_a_column_the_preset_cannot_draw_still_gets_its_verdict(tmp_path: Path, caplog) -> None:
    reference, current = _mixed(5_000, seed=1, drift=False), _mixed(5_000, seed=2, drift=True)
    reference["switch"], current["switch"] = reference["flag"] > 0, current["flag"] > 0  # bool: the preset's plots fail
    result = compute_drift(reference, current, [*MIXED_NUM, "switch"], MIXED_CAT, report_dir=tmp_path, report="always")
    switch = next(c for c in result.columns if c.column == "switch")
    assert switch.method == "Jensen-Shannon distance" and switch.drifted
    assert result.html_path is None and Path(result.json_path).exists() and "No Evidently HTML report" in caplog.text


def test_an_empty_column_fails_like_the_preset() -> None:
    reference, current = _mixed(1_500, seed=1, drift=False), _mixed(1_500, seed=2, drift=False)
    current["holes"] = np.nan
    for path in (compute_drift, compute_drift_preset):
        with pytest.raises(ValueError, match="empty column 'holes'.*current"):
            path(reference, current, MIXED_NUM, MIXED_CAT)


def test_a_small_reference_report_shows_the_adjusted_verdicts(tmp_path: Path, caplog) -> None:
    reference = _mixed(300, seed=1, drift=False, prediction="categorical")
    current = _mixed(2_000, seed=2, drift=True, prediction="categorical")
    result = compute_drift(reference, current, MIXED_NUM, MIXED_CAT, prediction_kind="categorical",
                           report_dir=tmp_path, report="always")
    assert result.fdr == 0.05 and result.prediction is not None and result.prediction.adjusted is not None
    assert result.prediction.method == "chi-square two-sample p_value" and result.prediction.drifted
    assert Path(result.html_path).exists() and "decided differently" not in caplog.text  # same tests, same cut-offs
    assert 0 < result.prediction.threshold < 0.05 and "(adjusted " in result.alert_reasons()[-1]
