"""A catalogue model's nights from landed files: staging, delayed labels joined by key, the labeled window."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import pandas as pd
import pytest

from nightshift.errors import DataValidationError
from nightshift.settings import PROJECT_ROOT
from tasks.catalogue import load_catalogue
from tasks.demo_data import DEMO_START, demo_day, land_demo_night
from tasks.sources import join_labels, labeled_window, stage_features

NIGHT = DEMO_START + timedelta(days=9)


@pytest.fixture(scope="module")
def demo():
    churn, fraud = load_catalogue(PROJECT_ROOT / "models.yaml").models[:2]
    return churn, fraud


def _land(model, state_dir: Path, nights: range, rows: int = 400, skip: tuple[int, ...] = ()) -> None:
    for n in nights:
        if n not in skip:
            land_demo_night(model, DEMO_START + timedelta(days=n), state_dir, rows, drift_for=lambda d: None)


def test_a_globbed_night_is_staged_as_one_file_once(demo, tmp_path: Path) -> None:
    _, fraud = demo
    _land(fraud, tmp_path, range(9, 10))
    staged = stage_features(fraud, NIGHT, tmp_path)
    assert len(staged.files) == 2 and staged.rows == 400 and not staged.missing
    frame = pd.read_parquet(staged.path)
    assert frame["transaction_id"].is_unique and "is_fraud" in frame.columns
    mtime = Path(staged.path).stat().st_mtime_ns
    again = stage_features(fraud, NIGHT, tmp_path)
    assert again.fingerprint == staged.fingerprint and Path(again.path).stat().st_mtime_ns == mtime  # not rewritten
    nothing = stage_features(fraud, NIGHT + timedelta(days=1), tmp_path)
    assert nothing.missing and nothing.path is None
    assert nothing.describe() == f"no data for {NIGHT + timedelta(days=1)} at {tmp_path}/landing/fraud/" \
                                 f"{(NIGHT + timedelta(days=1)):%Y/%m/%d}/*.parquet"


def test_labels_land_days_later_and_join_by_key(demo, tmp_path: Path) -> None:
    churn, _ = demo
    _land(churn, tmp_path, range(0, 10))
    features = pd.read_parquet(stage_features(churn, NIGHT, tmp_path).path)
    assert "churned" not in features.columns and features["customer_id"].is_unique
    assert join_labels(churn, NIGHT, tmp_path) is None  # tonight's labels land on night + 2
    day = NIGHT - timedelta(days=2)
    joined, report = join_labels(churn, day, tmp_path)
    assert (report.rows, report.labeled, report.unknown_keys, report.duplicate_keys) == (400, 400, 0, 0)
    assert report.warnings() == []
    truth = demo_day("churned", day, 400, 42)
    assert (joined.set_index("customer_id")["churned"] == truth.set_index("customer_id")["churned"]).all()


def test_unknown_and_duplicate_label_keys_are_counted_and_dropped(demo, tmp_path: Path) -> None:
    churn, _ = demo
    _land(churn, tmp_path, range(0, 3))
    path = tmp_path / "landing" / "churn" / "labels" / f"{DEMO_START:%Y-%m-%d}.parquet"
    labels = pd.read_parquet(path)
    extra = pd.DataFrame({"customer_id": ["nobody-1", "nobody-2", labels.customer_id[0]],
                          "churned": [1, 0, 1 - labels.churned[0]]})
    pd.concat([labels.iloc[5:], extra], ignore_index=True).to_parquet(path)  # 5 rows unlabeled, 1 relabeled
    joined, report = join_labels(churn, DEMO_START, tmp_path)
    assert (report.unknown_keys, report.duplicate_keys, report.labeled) == (2, 0, 395 + 1)
    pd.concat([labels, labels.iloc[:3]], ignore_index=True).to_parquet(path)
    joined, report = join_labels(churn, DEMO_START, tmp_path)
    assert (report.unknown_keys, report.duplicate_keys, report.labeled) == (0, 3, 397)
    assert report.warnings() == [f"3 key(s) labeled more than once for {DEMO_START} (all copies dropped)",
                                 f"3 of 400 row(s) for {DEMO_START} have no label"]
    labels.drop(columns=["churned"]).to_parquet(path)
    with pytest.raises(DataValidationError, match=r"lack column\(s\) 'churned'"):
        join_labels(churn, DEMO_START, tmp_path)


def test_the_window_is_the_newest_labeled_days_and_a_missing_day_is_skipped(demo, tmp_path: Path) -> None:
    churn, fraud = demo  # churn: labels 2 days late, window 5; fraud: labels inline, window 3
    _land(churn, tmp_path, range(0, 10), skip=(5,))
    window = labeled_window(churn, NIGHT, tmp_path)
    day = lambda n: DEMO_START + timedelta(days=n)  # noqa: E731
    assert window.holdout_day == day(7)  # night 9 - lag 2
    # Night 5 landed nothing: neither day 5's rows nor day 3's labels (due that night).
    assert window.window == [day(2), day(4), day(6)] and window.missing == [day(3), day(5)]
    assert f"missing, skipped: {day(3)}, {day(5)}" in window.describe()
    # A backfill of night 4 ignores labels that had not landed by then, even though the files exist now.
    assert labeled_window(churn, day(4), tmp_path).holdout_day == day(2)
    _land(fraud, tmp_path, range(7, 10))
    inline = labeled_window(fraud, NIGHT, tmp_path)
    assert inline.holdout_day == NIGHT and inline.window == [day(7), day(8)] and inline.missing == [day(6)]
    assert labeled_window(fraud, day(3), tmp_path).holdout_day is None


def test_the_night_is_explicit_or_today_in_the_schedules_time_zone() -> None:
    from datetime import datetime
    from zoneinfo import ZoneInfo

    from tasks.sources import resolve_night

    assert resolve_night(date(2026, 11, 25), "UTC") == date(2026, 11, 25)
    for zone in ("Pacific/Kiritimati", "Pacific/Pago_Pago"):  # UTC+14 and UTC-11: often different dates
        assert resolve_night(None, zone) == datetime.now(ZoneInfo(zone)).date()
