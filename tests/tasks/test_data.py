from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from nightshift.errors import DataLoadError
from tasks.data import (DEMO_CATEGORICAL, DEMO_DATE, DEMO_LABEL, DEMO_NUMERIC, DemoDrift, fingerprint,
                        generate_demo, infer_features, iter_demo, load_dataset, load_iris, load_table)


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
