"""Training-serving skew: a day's batch file vs the traffic the model server captured that day."""

from __future__ import annotations

from datetime import date, datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from nightshift.errors import DataLoadError
from serving.capture import Capture, CaptureConfig
from tasks.data.datasets import load_dataset
from tasks.data.demo import generate_demo
from tasks.data.served import load_served, parse_served
from tasks.monitoring.skew import skew_check, training_serving_skew

DAY = date(2026, 1, 5)
NUMERIC = ["age", "monthly_spend", "tenure_months"]
CATEGORICAL = ["plan", "region"]


def serve(root: Path, frame: pd.DataFrame, model: str = "churn", ids: str | None = "customer_id") -> None:
    """Capture `frame` as the server would: one request per 100 rows, scored on DAY."""
    at = datetime(DAY.year, DAY.month, DAY.day, 12, tzinfo=timezone.utc).timestamp()
    with Capture(CaptureConfig(root=root)) as capture:
        for start in range(0, len(frame), 100):
            chunk = frame.iloc[start:start + 100]
            features = {c: chunk[c].tolist() for c in [*NUMERIC, *CATEGORICAL]}
            proba = np.full((len(chunk), 2), 0.5)
            capture.offer(model, "3", f"req-{start}", features, [0] * len(chunk), proba, [0, 1],
                          row_ids=chunk[ids].tolist() if ids else None, at=at)


@pytest.fixture
def day_file() -> pd.DataFrame:
    frame = generate_demo(1_000, seed=5, day=1)
    frame.insert(0, "customer_id", np.arange(10_000, 11_000))
    return frame


def test_identical_rows_show_no_skew_and_a_changed_feature_is_named_with_an_example(tmp_path: Path,
                                                                                   day_file) -> None:
    served = day_file.copy()
    served.loc[served.index[:50], "monthly_spend"] *= 1.2  # the online pipeline computes spend differently for 5%
    serve(tmp_path, served)
    report = skew_check("churn", DAY, day_file, tmp_path, NUMERIC, CATEGORICAL, "customer_id")
    assert report is not None and report.view == "rows" and report.matched_rows == 1_000
    assert report.skewed_columns == ["monthly_spend"]
    spend = next(c for c in report.columns if c.column == "monthly_spend")
    assert spend.differing_share == pytest.approx(0.05) and spend.example.startswith("customer_id=10000: file ")
    assert "skew in 1 column(s): monthly_spend" in report.summary()
    assert report.table()[0]["column"] == "monthly_spend" and report.metrics()["skew_columns"] == 1.0


def test_without_ids_distributions_are_compared_and_no_traffic_means_no_report(tmp_path: Path, day_file) -> None:
    assert skew_check("churn", DAY, day_file, tmp_path, NUMERIC, CATEGORICAL, "customer_id") is None
    served = day_file.copy()
    served["age"] = served["age"] + 15  # every served age is off
    serve(tmp_path, served, ids=None)
    report = skew_check("churn", DAY, day_file, tmp_path, NUMERIC, CATEGORICAL, "customer_id")
    assert report.view == "distribution" and report.matched_rows == 0 and "age" in report.skewed_columns
    assert "monthly_spend" not in report.skewed_columns


def test_a_served_day_loads_as_a_batch_with_its_ids(tmp_path: Path, day_file) -> None:
    serve(tmp_path, day_file)
    frame = load_served(tmp_path, "churn", DAY, "customer_id")
    assert list(frame.columns) == ["customer_id", *NUMERIC, *CATEGORICAL] and len(frame) == 1_000
    assert sorted(frame["customer_id"]) == list(range(10_000, 11_000))
    loaded = load_dataset(f"served:churn/{DAY}", served_root=tmp_path)
    assert len(loaded.frame) == 1_000 and "prediction" not in loaded.frame and "request_id" not in loaded.frame
    assert training_serving_skew("churn", DAY, day_file, frame, NUMERIC, CATEGORICAL, "customer_id").skewed_columns \
        == []


@pytest.mark.parametrize("source", ["served:churn", "served:churn/yesterday", "served:/2026-01-05"])
def test_a_malformed_served_source_says_how_to_write_it(source: str) -> None:
    with pytest.raises(DataLoadError, match="served:<model>/<YYYY-MM-DD>"):
        parse_served(source)


def test_no_traffic_that_day_names_the_days_that_have_some(tmp_path: Path, day_file) -> None:
    serve(tmp_path, day_file)
    with pytest.raises(DataLoadError, match=str(DAY)):
        load_dataset(f"served:churn/{date(2026, 1, 6)}", served_root=tmp_path)
