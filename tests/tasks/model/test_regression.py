"""Regression: its metrics, a label that fits the task, and the gate on per-row losses with a ceiling."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from nightshift.errors import DataValidationError
from tasks.catalogue.config import GateConfig
from tasks.data.contract import infer_contract, schema_changes
from tasks.data.datasets import FeatureSpec, LoadedDataset
from tasks.data.validate import check_training_data, validate_batch
from tasks.model.gate import gate, paired_bootstrap
from tasks.model.metrics import regression_metrics
from tasks.monitoring.performance import batch_performance


def _dataset(frame: pd.DataFrame, label: str = "target") -> LoadedDataset:
    from tasks.data.datasets import fingerprint

    return LoadedDataset(frame=frame, label=label, name="t", source="t.parquet", fingerprint=fingerprint(frame))


@pytest.fixture(scope="module")
def diabetes() -> pd.DataFrame:
    from sklearn.datasets import load_diabetes

    return load_diabetes(as_frame=True).frame


def test_regression_metrics_by_hand() -> None:
    m = regression_metrics([1.0, 2.0, 3.0, 4.0], np.array([1.0, 2.0, 3.0, 6.0]))
    assert m["mae"] == pytest.approx(0.5) and m["rmse"] == pytest.approx(1.0)
    assert m["r2"] == pytest.approx(1 - 4 / 5)


def test_a_numeric_label_of_many_values_is_refused_as_classes_and_accepted_as_regression(diabetes) -> None:
    with pytest.raises(DataValidationError, match="label 'target' in t.parquet has 214 distinct numeric values: "
                                                  "set task: regression"):
        check_training_data(_dataset(diabetes), test_size=0.3, cv_folds=5)
    checked = check_training_data(_dataset(diabetes), test_size=0.3, cv_folds=5, task="regression")
    assert checked.frame["target"].dtype == "float64" and len(checked.spec.features) == 10


def test_a_label_that_is_not_a_number_or_barely_varies_is_refused_under_regression(diabetes) -> None:
    text = diabetes.assign(target=diabetes["target"].astype(object))
    text.loc[7, "target"] = "n/a"
    with pytest.raises(DataValidationError, match="1 value\\(s\\) that are not numbers, like 'n/a'"):
        check_training_data(_dataset(text), test_size=0.3, cv_folds=5, task="regression")
    binary = diabetes.assign(target=(diabetes["target"] > 140).astype(int))
    with pytest.raises(DataValidationError, match="only 2 distinct value\\(s\\) \\(0, 1\\).*set task: classification"):
        check_training_data(_dataset(binary), test_size=0.3, cv_folds=5, task="regression")


def test_a_regression_contract_has_no_classes_and_checks_numbers(diabetes) -> None:
    spec = FeatureSpec(label="target", numeric=tuple(diabetes.columns[:-1]), categorical=())
    contract = infer_contract(diabetes, spec, task="regression")
    assert contract.task == "regression" and contract.label_classes == []
    batch = diabetes.head(20).assign(target=diabetes["target"].head(20).astype(object))
    batch.loc[3, "target"] = "lots"
    report, _ = validate_batch(batch, contract, "night.parquet")
    assert [f.message for f in report.errors] == ["label 'target' has 1 value(s) that are not numbers, like 'lots'"]
    classifier = infer_contract(diabetes.assign(target=diabetes["target"] > 140), spec)
    assert schema_changes(classifier, contract) == ["predicts for task regression, the live model for task "
                                                    "classification"]


def test_the_gate_judges_regressors_on_per_row_losses_with_a_ceiling() -> None:
    rng = np.random.default_rng(0)
    y = rng.normal(100, 20, size=2000)
    good, bad = y + rng.normal(0, 5, size=2000), y + rng.normal(0, 8, size=2000)
    config = GateConfig(metric="rmse", absolute_floor=None, resamples=300)
    better = gate(y, good, bad, None, config, challenger_version="2", champion_version="1")
    assert better.promote and better.challenger == pytest.approx(5, abs=0.3) and better.ci_low > 2
    worse = gate(y, bad, good, None, config, challenger_version="2", champion_version="1")
    assert not worse.promote and worse.reason.startswith("not measurably better") and worse.ci_high < 0
    capped = gate(y, bad, good, None, config.model_copy(update={"absolute_floor": 6.0}))
    assert not capped.promote and "misses the ceiling 6.0" in capped.reason and "| ceiling | 6.0 |" in capped.markdown()
    both = gate(y, good, bad, None, config.model_copy(update={"absolute_floor": 4.0}))
    assert both.promote and both.reason.startswith("both above the ceiling 4.0: challenger rmse") and \
        both.champion_below_floor
    first = gate(y, good, None, None, config)
    assert first.promote and first.reason == f"first model: rmse {first.challenger:.4f} (no ceiling set)"
    diff, lo, hi = paired_bootstrap(y, good, bad, None, "mae", 300, 0.95, 0)
    assert lo < diff < hi and diff == pytest.approx(np.abs(bad - y).mean() - np.abs(good - y).mean())
    r2_diff, r2_lo, _ = paired_bootstrap(y, good, bad, None, "r2", 300, 0.95, 0)
    assert r2_diff > 0 and r2_lo > 0  # r2: higher is better, same sign as the error metrics' improvement


def test_a_slice_where_the_challenger_errs_more_is_caught() -> None:
    rng = np.random.default_rng(1)
    frame = pd.DataFrame({"region": np.repeat(["north", "south"], 1000)})
    y = rng.normal(50, 10, size=2000)
    champion = y + rng.normal(0, 4, size=2000)
    challenger = y + np.where(frame["region"] == "north", rng.normal(0, 0.5, 2000), rng.normal(0, 5, 2000))
    config = GateConfig(metric="rmse", absolute_floor=None, resamples=200, slice_columns=["region"],
                        slice_tolerance=0.5)
    decision = gate(y, challenger, champion, None, config, slice_frame=frame)
    south = next(s for s in decision.slices if s.value == "south")
    assert south.regressed and not decision.promote and "slice region=south regressed" in decision.reason


def test_realized_quality_of_a_regressor_rises_when_it_errs_more() -> None:
    frame = pd.DataFrame({"y": [10.0, 20.0, None, "x", 40.0] * 10})
    predicted = np.array([12.0, 18.0, 30.0, 30.0, 50.0] * 10)
    check = batch_performance(frame, predicted, "y", None, {"rmse": 2.0}, "rmse", 3.0)
    assert check is not None and check.rows == 30 and check.batch_metrics["rmse"] == pytest.approx(np.sqrt(36))
    assert check.degraded and check.change == pytest.approx(4.0)
    few = batch_performance(frame.head(5), predicted[:5], "y", None, {"rmse": 2.0}, "rmse", 3.0)
    assert few is not None and few.value is None and not few.degraded and "rmse" not in few.batch_metrics
    assert few.summary() == ("rmse not measurable on 3 labeled rows (too few labeled rows to measure rmse (3 < 30)); "
                             "2.0000 at test time: NOT MEASURED")


def test_valid_ranges_let_a_short_window_accept_what_it_never_saw() -> None:
    monday = pd.DataFrame({"day_of_week": [0] * 50, "price": np.linspace(1, 2, 50), "y": np.arange(50.0)})
    spec = FeatureSpec(label="y", numeric=("day_of_week", "price"), categorical=())
    friday = monday.assign(day_of_week=4)
    narrow = infer_contract(monday, spec, task="regression")
    report, _ = validate_batch(friday, narrow, "friday.parquet")
    assert any("day_of_week" in f.message and "beyond the training range" in f.message for f in report.errors)
    wide = infer_contract(monday, spec, task="regression", valid_ranges={"day_of_week": (0, 6)})
    assert (wide.columns[0].min, wide.columns[0].max) == (0, 6) and validate_batch(friday, wide, "f")[0].ok
    assert (wide.columns[1].min, wide.columns[1].max) == (1, 2)  # other columns: the data's own range
    with pytest.raises(ValueError, match="valid_ranges names 'weekday', not numeric feature"):
        infer_contract(monday, spec, valid_ranges={"weekday": (0, 6)})
