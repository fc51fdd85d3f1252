from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from nightshift.errors import DataLoadError
from tasks.data.datasets import fingerprint, infer_features, load_dataset, load_table
from tasks.data.demo import DEMO_CATEGORICAL, DEMO_DATE, DEMO_LABEL, DEMO_NUMERIC, generate_demo


def test_fingerprint_sees_any_value_change() -> None:
    frame = generate_demo(500, seed=1)
    edited = frame.copy()
    edited.loc[123, "age"] += 1e-9
    assert fingerprint(frame) == fingerprint(frame.copy())
    assert fingerprint(frame) != fingerprint(edited)


def test_load_table_csv_parquet_and_fsspec_url(tmp_path: Path) -> None:
    frame = generate_demo(300, seed=1)
    frame.to_csv(tmp_path / "d.csv", index=False)
    frame.to_parquet(tmp_path / "d.parquet")
    with gzip.open(tmp_path / "d.csv.gz", "wt") as fh:
        frame.to_csv(fh, index=False)
    pd.testing.assert_frame_equal(load_table(str(tmp_path / "d.parquet")), frame)
    assert load_table(str(tmp_path / "d.csv")).shape == frame.shape
    assert load_table(str(tmp_path / "d.csv.gz")).shape == frame.shape
    assert load_table((tmp_path / "d.parquet").as_uri()).shape == frame.shape

    import fsspec

    with fsspec.open("memory://bucket/d.parquet", "wb") as fh:
        frame.to_parquet(fh)
    assert load_table("memory://bucket/d.parquet").shape == frame.shape


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("missing.csv", None, "not found"),
        ("empty.csv", b"", "is empty"),
        ("corrupt.parquet", b"PAR1 this is not parquet", "not valid Parquet"),
        ("bad.csv", b'a,b\n1,"unterminated\n', "not valid CSV"),
        ("data.xlsx", b"whatever", "Cannot tell the format"),
    ],
)
def test_load_table_errors_name_the_file(tmp_path: Path, name: str, content: bytes | None, expected: str) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(DataLoadError, match=expected) as info:
        load_table(str(path))
    assert name in str(info.value)


def test_unknown_dataset_name_lists_the_choices() -> None:
    with pytest.raises(DataLoadError, match="Unknown dataset 'irs'.*iris, demo"):
        load_dataset("irs")


def test_load_dataset_defaults_and_sampling() -> None:
    demo = load_dataset("demo", rows=1_234, seed=5)
    assert (len(demo.frame), demo.label, demo.name) == (1_234, "churned", "demo")
    iris = load_dataset("iris", rows=40, seed=1)
    assert (len(iris.frame), iris.label) == (40, "species")
    assert load_dataset("iris", rows=40, seed=1).fingerprint == iris.fingerprint


def test_infer_features_declares_types() -> None:
    frame = generate_demo(200, seed=1)
    frame["empty"] = np.nan
    frame["flag"] = frame["age"] > 40
    spec = infer_features(frame, DEMO_LABEL)
    assert set(spec.numeric) == set(DEMO_NUMERIC) | {"flag"}
    assert spec.categorical == DEMO_CATEGORICAL
    assert set(spec.ignored) == {DEMO_DATE, "empty"}
    assert DEMO_LABEL not in spec.features
