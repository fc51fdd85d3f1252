from __future__ import annotations

import pandas as pd
import pytest

from nightshift.errors import DataValidationError
from tasks.data.datasets import LoadedDataset
from tasks.data.demo import generate_demo, load_iris
from tasks.data.validate import check_training_data


def _ds(frame: pd.DataFrame, label: str = "species") -> LoadedDataset:
    return LoadedDataset(frame=frame, label=label, name="t", source="t.csv")


def test_valid_iris_passes() -> None:
    checked = check_training_data(_ds(load_iris()), test_size=0.3, cv_folds=5)
    assert len(checked.frame) == 150 and checked.dropped_unlabeled == 0
    assert len(checked.spec.numeric) == 4


def test_missing_label_column_names_it_and_the_file() -> None:
    with pytest.raises(DataValidationError, match=r"Label column 'target' is not in t\.csv \(columns: sepal_length_cm"):
        check_training_data(_ds(load_iris(), label="target"), test_size=0.3, cv_folds=5)


def test_one_class_label() -> None:
    frame = load_iris().query("species == 'setosa'")
    with pytest.raises(DataValidationError, match="has only one class \\('setosa'\\)"):
        check_training_data(_ds(frame), test_size=0.3, cv_folds=5)


def test_fewer_rows_than_folds() -> None:
    frame = load_iris().groupby("species").head(2)  # 6 rows
    with pytest.raises(DataValidationError, match="fewer than cv_folds=5"):
        check_training_data(_ds(frame), test_size=0.3, cv_folds=5)


def test_rare_class_cannot_fill_the_folds() -> None:
    frame = pd.concat([load_iris().query("species != 'virginica'"), load_iris().query("species == 'virginica'").head(4)])
    with pytest.raises(DataValidationError, match="Class 'virginica' of label 'species' in t.csv has 4 rows"):
        check_training_data(_ds(frame), test_size=0.3, cv_folds=5)


def test_empty_and_unlabeled() -> None:
    with pytest.raises(DataValidationError, match="has no rows"):
        check_training_data(_ds(load_iris().head(0)), test_size=0.3, cv_folds=5)
    frame = load_iris()
    frame["species"] = None
    with pytest.raises(DataValidationError, match="empty in all 150 rows"):
        check_training_data(_ds(frame), test_size=0.3, cv_folds=5)


def test_unlabeled_rows_are_dropped_and_counted() -> None:
    frame = generate_demo(1_000, seed=1).astype({"churned": "float"})
    frame.loc[:9, "churned"] = None
    checked = check_training_data(_ds(frame, "churned"), test_size=0.3, cv_folds=5)
    assert checked.dropped_unlabeled == 10 and len(checked.frame) == 990


def test_no_features() -> None:
    frame = pd.DataFrame({"species": ["a", "b"] * 20, "when": pd.Timestamp("2026-01-01")})
    with pytest.raises(DataValidationError, match="no usable feature columns"):
        check_training_data(_ds(frame), test_size=0.3, cv_folds=2)


# ----------------------------------------------------------------------------- data contract
import numpy as np  # noqa: E402

from tasks.data.contract import Contract, infer_contract
from tasks.data.datasets import infer_features
from tasks.data.demo import DemoDrift
from tasks.data.validate import validate_batch


@pytest.fixture(scope="module")
def contract() -> Contract:
    ref = generate_demo(5_000, seed=1)
    return infer_contract(ref, infer_features(ref, "churned"), range_tolerance=0.5)


def _checks(report) -> dict[tuple[str | None, str], str]:
    return {(f.column, f.check): f.severity for f in report.failures}


def test_contract_describes_the_reference(contract: Contract) -> None:
    assert len(contract.numeric) == 20 and len(contract.categorical) == 5
    assert contract.label_classes == [0, 1] and contract.optional == ["event_date"]
    region = next(c for c in contract.columns if c.name == "region")
    assert region.categories == ["central", "east", "north", "south", "west"]
    credit = next(c for c in contract.columns if c.name == "credit_score")
    assert credit.nullable and 300 <= credit.min < credit.max <= 850
    assert Contract.model_validate_json(contract.model_dump_json()).fingerprint() == contract.fingerprint()


def test_clean_batch_passes(contract: Contract) -> None:
    report, batch = validate_batch(generate_demo(3_000, seed=2, day=1), contract, "day1.parquet")
    assert report.ok, report.summary()
    assert not [f for f in report.failures if f.check in ("column_present", "dtype", "unseen_category")]
    assert batch.shape == (3_000, 27)


def test_every_problem_is_reported_at_once_with_severity(contract: Contract) -> None:
    frame = generate_demo(2_000, seed=3, day=1, drift=DemoDrift(category_mix=0.6))
    frame = frame.drop(columns=["plan"])
    frame["age"] = frame["age"].astype(object)
    frame.loc[[3, 7], "age"] = ["forty", "n/a"]
    frame["nps_score"] = np.nan
    frame["debug_id"] = range(len(frame))
    frame.loc[:9, "tenure_months"] = -1_000.0  # far below anything seen, but rare (10 of 2000 rows)
    frame.loc[:1, "churned"] = 7
    report, _ = validate_batch(frame, contract, "night.csv")
    checks = _checks(report)
    assert checks[("plan", "column_present")] == "error"
    assert checks[("age", "dtype")] == "error"
    assert checks[("nps_score", "all_null")] == "error"
    assert checks[("churned", "label_classes")] == "error"
    assert checks[("debug_id", "unexpected_column")] == "warning"
    assert checks[("region", "unseen_category")] == "warning"
    assert checks[("tenure_months", "far_out_of_range")] == "warning"
    assert not report.ok
    dtype = next(f for f in report.failures if f.check == "dtype")
    assert dtype.rows == 2 and dtype.examples == ["forty", "n/a"]
    assert "column 'age' should be numeric" in dtype.message
    unseen = next(f for f in report.failures if f.check == "unseen_category")
    assert unseen.examples == ["international"] and unseen.rows == (frame["region"] == "international").sum()
    assert "night.csv breaks the data contract" in report.summary()
    assert "| error | age | dtype | 2 |" in report.markdown()


def test_out_of_range_within_tolerance_is_a_warning_and_a_broken_feed_is_an_error(contract: Contract) -> None:
    age = next(c for c in contract.columns if c.name == "age")
    frame = generate_demo(1_000, seed=4)
    frame.loc[:4, "age"] = age.max + 1  # just outside what training saw
    report, _ = validate_batch(frame, contract, "b.csv")
    assert _checks(report)[("age", "out_of_range")] == "warning" and report.ok
    frame["monthly_spend"] = frame["monthly_spend"] * 100  # cents instead of dollars
    report, _ = validate_batch(frame, contract, "b.csv")
    far = next(f for f in report.failures if f.column == "monthly_spend" and f.check == "far_out_of_range")
    assert far.severity == "error" and "more than the allowed 1.0%" in far.message


def test_empty_batch_is_an_error(contract: Contract) -> None:
    report, _ = validate_batch(generate_demo(10, seed=1).head(0), contract, "empty.parquet")
    assert [f.check for f in report.errors] == ["not_empty"] and "empty.parquet has no rows" in report.summary()


def test_safely_coercible_types_pass(contract: Contract) -> None:
    frame = generate_demo(500, seed=5)
    frame["age"] = frame["age"].round().astype(int).astype(str)  # "41" reads back as 41.0
    frame["sessions_last_30d"] = frame["sessions_last_30d"].astype("int64")
    report, batch = validate_batch(frame, contract, "typed.csv")
    assert report.ok, report.summary()
    assert batch["age"].dtype == "float64"


def test_new_missing_values_in_a_column_that_had_none_are_a_warning(contract: Contract) -> None:
    frame = generate_demo(500, seed=6)
    frame.loc[:9, "age"] = np.nan
    report, _ = validate_batch(frame, contract, "b.csv")
    assert report.ok and _checks(report)[("age", "not_nullable")] == "warning"


def test_report_table_and_counts(contract: Contract) -> None:
    frame = generate_demo(500, seed=4, day=1).drop(columns=["plan"])
    frame["debug_id"] = range(len(frame))
    report, _ = validate_batch(frame, contract, "night.csv")
    rows = {(r["column"], r["check"]): r for r in report.table()}
    assert len(rows) == len(report.failures)
    assert rows[("plan", "column_present")]["severity"] == "error"
    extra = next(f for f in report.failures if f.check == "unexpected_column")
    assert rows[("debug_id", "unexpected_column")] == {"severity": "warning", "column": "debug_id",
                                                        "check": "unexpected_column", "rows": extra.rows,
                                                        "examples": ", ".join(extra.examples), "message": extra.message}
    assert report.metrics() == {"validation_errors": len(report.errors), "validation_warnings": len(report.warnings)}
    assert report.metrics()["validation_errors"] >= 1
    clean, _ = validate_batch(generate_demo(500, seed=4, day=1), contract, "day1.csv")
    assert all(r["severity"] == "warning" for r in clean.table()) and clean.metrics()["validation_errors"] == 0


@pytest.mark.parametrize("typed", ["csv-with-a-blank", "floats", "strings", "padded-strings", "booleans"])
def test_classes_match_however_a_reader_typed_the_label(contract: Contract, tmp_path, typed: str) -> None:
    """One blank label cell made pandas read 0/1 as 0.0/1.0 and rejected the whole batch (issue 12)."""
    frame = generate_demo(3_000, seed=5, day=1)
    if typed == "csv-with-a-blank":
        frame["churned"] = frame["churned"].astype(object)
        frame.loc[17, "churned"] = None
        frame.to_csv(tmp_path / "night.csv", index=False)
        frame = pd.read_csv(tmp_path / "night.csv")
        assert frame["churned"].dtype == float  # what a CSV reader makes of it
    else:
        as_bool = frame["churned"].astype(bool)
        frame["churned"] = {"floats": frame["churned"].astype(float), "strings": frame["churned"].astype(str),
                            "padded-strings": " " + frame["churned"].astype(str) + ".0",
                            "booleans": as_bool}[typed]
    report, batch = validate_batch(frame, contract, "night.csv")
    assert report.ok, report.summary()
    assert set(batch["churned"].dropna()) == {0, 1} and {type(v) for v in batch["churned"].dropna()} == {int}
    blank = [f for f in report.failures if f.check == "label_blank"]
    assert [f.rows for f in blank] == ([1] if typed == "csv-with-a-blank" else [])
    if blank:
        assert "blank in 1 of 3000 row(s)" in blank[0].message and batch["churned"].isna().sum() == 1


def test_unknown_classes_are_named_and_blank_labels_are_not_unknown(contract: Contract) -> None:
    frame = generate_demo(1_000, seed=6, day=1)
    frame["churned"] = frame["churned"].astype(object)
    frame.loc[:2, "churned"] = ["yes", 2, None]
    report, _ = validate_batch(frame, contract, "night.csv")
    unknown = next(f for f in report.errors if f.check == "label_classes")
    assert unknown.rows == 2 and unknown.examples == ["yes", "2"] and "[0, 1]" in unknown.message
    assert next(f for f in report.warnings if f.check == "label_blank").rows == 1


def test_silent_gaps_are_reported(contract: Contract) -> None:
    """No label column, repeated rows and a wrong-typed column each say what they are, once (issue 12)."""
    frame = generate_demo(1_000, seed=7, day=1).drop(columns=["churned"])
    frame = pd.concat([frame, frame.iloc[:30]], ignore_index=True)
    frame["age"] = "forty"
    report, _ = validate_batch(frame, contract, "night.parquet")
    checks = _checks(report)
    assert checks[("churned", "label_missing")] == "warning"
    assert "model quality was not checked" in next(f.message for f in report.failures if f.check == "label_missing")
    duplicates = next(f for f in report.failures if f.check == "duplicate_rows")
    assert duplicates.severity == "warning" and duplicates.rows == 30 and "(2.9%)" in duplicates.message
    assert checks[("age", "dtype")] == "error"
    assert [f.check for f in report.failures if f.column == "age"] == ["dtype"]  # not also "empty"/"missing"
    scoring, _ = validate_batch(frame, contract, "night.parquet", check_label=False)
    assert ("churned", "label_missing") not in _checks(scoring)


def test_training_labels_keep_their_type_despite_blank_cells() -> None:
    frame = generate_demo(600, seed=8)
    frame["churned"] = frame["churned"].astype(float)
    frame.loc[5, "churned"] = float("nan")
    data = check_training_data(_ds(frame, "churned"), test_size=0.2, cv_folds=3)
    assert data.dropped_unlabeled == 1 and set(data.frame["churned"]) == {0, 1}
    assert data.frame["churned"].dtype == "int64"


def test_string_classes_match_exactly_and_numbers_by_value() -> None:
    from tasks.data.contract import align_labels, canonical_labels, class_order

    aligned, unknown = align_labels(pd.Series(["01", " 1 ", "007", 7, 1.0, None, ""]), ["01", "007", "1", "7"])
    assert aligned.tolist() == ["01", "1", "007", "7", "1", None, None] and unknown.empty
    aligned, unknown = align_labels(pd.Series(["1", 1.0, True, " 0.0 ", 2**53 + 1, "yes"]), np.array([0, 1]))
    assert aligned.tolist()[:4] == [1, 1, 1, 0] and unknown.tolist() == [2**53 + 1, "yes"]
    assert class_order([0, 1], [1, 0]) == [1, 0] and class_order(["a", "b"], ["a", "c"]) is None
    blanks = pd.Series([True, None, False], dtype=object)
    assert canonical_labels(blanks).tolist() == [True, None, False]  # booleans stay booleans beside a blank


def test_schema_changes_name_what_would_break_callers(contract: Contract) -> None:
    from tasks.data.contract import schema_changes

    assert schema_changes(contract, contract) == []
    narrower = contract.model_copy(update={"columns": contract.columns[1:]})
    assert schema_changes(contract, narrower) == []  # callers send a column the new model ignores: fine
    assert schema_changes(narrower, contract) == [f"requires column(s) the live model does not: "
                                                  f"'{contract.columns[0].name}'"]
    booleans = contract.model_copy(update={"label_classes": [False, True]})
    assert schema_changes(contract, booleans) == ["predicts classes [False, True] (boolean), the live model [0, 1] "
                                                  "(number)"]
    region = next(c for c in contract.columns if c.name == "region")
    numeric_region = contract.model_copy(update={"columns": [
        c.model_copy(update={"kind": "numeric"}) if c is region else c for c in contract.columns]})
    assert schema_changes(contract, numeric_region) == ["column 'region' is numeric, was categorical"]
