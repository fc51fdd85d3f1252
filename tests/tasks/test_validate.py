from __future__ import annotations

import pandas as pd
import pytest

from nightshift.errors import DataValidationError
from tasks.data import LoadedDataset, generate_demo, load_iris
from tasks.validate import check_training_data


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
