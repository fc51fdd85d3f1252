"""Chunked batch scoring as plain functions: sequential, and in parts (the Dask path) joined to the same file."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from nightshift.errors import DataValidationError
from tasks.data.contract import infer_contract
from tasks.data.datasets import infer_features
from tasks.data.demo import generate_demo
from tasks.model.score import combine_parts, plan_parts, score_file, score_part
from tasks.model.train import fit_pipeline


@pytest.fixture(scope="module")
def fitted():
    frame = generate_demo(3_000, seed=1)
    spec = infer_features(frame, "churned", exclude=("event_date",))
    return fit_pipeline(frame, spec, "random_forest", {"n_estimators": 10}, seed=1), infer_contract(frame, spec)


@pytest.mark.integration  # parallel parts of a real file (~6 s); the Dask variants are here too
def test_parts_joined_equal_the_sequential_file(fitted, tmp_path: Path) -> None:
    model, contract = fitted
    source = tmp_path / "in.parquet"
    generate_demo(5_000, seed=4, day=2).to_parquet(source, index=False, row_group_size=700)
    parts = plan_parts(str(source), chunk_rows=1_500)
    assert [p.row_groups for p in parts] == [[0, 1, 2], [3, 4, 5], [6, 7]]
    assert [p.first_row for p in parts] == [0, 2_100, 4_200]
    sequential = score_file(model, contract, str(source), str(tmp_path / "seq.parquet"), 1_500, ("event_date",))
    scored = [score_part(model, contract, str(source), p, str(tmp_path / "parts"), 1_500, ("event_date",))
              for p in reversed(parts)][::-1]  # finishing order does not matter
    joined = combine_parts(scored, str(source), str(tmp_path / "par.parquet"))
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "seq.parquet"), pd.read_parquet(tmp_path / "par.parquet"))
    assert joined.model_dump(exclude={"output", "chunks", "peak_rss_mb"}) == \
        sequential.model_dump(exclude={"output", "chunks", "peak_rss_mb"})
    assert not (tmp_path / "par.parquet.partial").exists()


def test_csv_has_no_parts_and_an_empty_input_is_an_error(fitted, tmp_path: Path) -> None:
    model, contract = fitted
    source = tmp_path / "in.csv"
    generate_demo(10, seed=4).to_csv(source, index=False)
    assert plan_parts(str(source), 5) == []
    with pytest.raises(DataValidationError, match="has no rows"):
        combine_parts([], str(source), str(tmp_path / "out.parquet"))


def test_summary_tables_for_the_artifacts() -> None:
    from tasks.model.score import ScoreSummary

    summary = ScoreSummary(source="in.csv", output="out.parquet", rows=200, chunks=2, classes=["0", "1"],
                           class_counts={"0": 150, "1": 50}, histogram_edges=[i / 10 for i in range(11)],
                           histogram_counts=[100, 50, 0, 0, 0, 0, 0, 0, 25, 25], warnings=["age: out_of_range"],
                           peak_rss_mb=1.0)
    assert summary.class_table() == [{"class": "0", "rows": 150, "share": "75.0%"},
                                     {"class": "1", "rows": 50, "share": "25.0%"}]
    histogram = summary.histogram_table()
    assert [r["rows"] for r in histogram] == summary.histogram_counts and histogram[0]["bin"] == "0.0–0.1"
    assert [len(r["bar"]) for r in histogram][:3] == [20, 10, 0]
    assert summary.describe() == ("200 rows of `in.csv` → `out.parquet` in 2 chunks. "
                                  "Validation warnings: age: out_of_range.")
