"""A catalogue model's nights from landed files: staging, delayed labels joined by key, the labeled window."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import pandas as pd
import pytest

from nightshift.errors import DataValidationError
from tasks.catalogue.schema import CatalogueModel
from tasks.data.demo import DEMO_START, demo_day
from tasks.data.sources import join_labels, labeled_day, labeled_window, stage_features
from tests.tasks.conftest import land_nights

NIGHT = DEMO_START + timedelta(days=9)


def test_a_globbed_night_is_staged_as_one_file_once(demo, tmp_path: Path) -> None:
    _, fraud = demo
    land_nights(fraud, tmp_path, range(9, 10))
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


def test_a_night_without_its_id_or_join_key_fails_naming_the_column_and_the_landed_file(demo, tmp_path: Path) -> None:
    """Staged anyway, rows without their join key could never meet their labels, and nothing would say so."""
    churn, fraud = demo
    land_nights(churn, tmp_path, range(9, 10))
    landed = tmp_path / "landing" / "churn" / "features" / f"{NIGHT}.parquet"
    pd.read_parquet(landed).drop(columns=["customer_id"]).to_parquet(landed)
    with pytest.raises(DataValidationError) as err:
        stage_features(churn, NIGHT, tmp_path)
    assert str(err.value) == (
        f"model 'demo-churn': the rows for {NIGHT} in {landed} lack column(s) 'customer_id' (id_columns and "
        f"labels.key), so their labels could never be joined to them; land the night's rows with it and run the "
        f"night again")
    assert not (tmp_path / "nights").exists()  # nothing staged

    land_nights(fraud, tmp_path, range(9, 10))  # labels inline: its id column is still a must
    for part in (tmp_path / "landing" / "fraud").glob(f"{NIGHT:%Y/%m/%d}/*.parquet"):
        pd.read_parquet(part).drop(columns=["transaction_id"]).to_parquet(part)
    with pytest.raises(DataValidationError) as err:
        stage_features(fraud, NIGHT, tmp_path)
    message = str(err.value)
    for part in (f"2 files matching {tmp_path}/landing/fraud/{NIGHT:%Y/%m/%d}/*.parquet",
                 "lack column(s) 'transaction_id' (id_columns), so they could not be told apart by id"):
        assert part in message, (part, message)


def test_a_file_with_a_header_and_no_rows_is_no_data(demo, tmp_path: Path) -> None:
    churn, fraud = demo
    land_nights(fraud, tmp_path, range(9, 10))
    for part in (tmp_path / "landing" / "fraud").glob(f"{NIGHT:%Y/%m/%d}/*.parquet"):
        pd.read_parquet(part).iloc[:0].to_parquet(part)
    staged = stage_features(fraud, NIGHT, tmp_path)
    assert staged.missing and staged.empty and staged.rows == 0 and staged.path is None and len(staged.files) == 2
    assert staged.describe() == (f"no data for {NIGHT}: 2 files matching {tmp_path}/landing/fraud/"
                                 f"{NIGHT:%Y/%m/%d}/*.parquet landed empty (no rows)")
    assert labeled_day(fraud, NIGHT, tmp_path)[1] == [f"no labeled data for {NIGHT}"]
    land_nights(churn, tmp_path, range(9, 10))
    landed = tmp_path / "landing" / "churn" / "features" / f"{NIGHT}.parquet"
    pd.read_parquet(landed).iloc[:0].drop(columns=["customer_id"]).to_parquet(landed)  # no rows: no key to miss
    assert stage_features(churn, NIGHT, tmp_path).describe() == f"no data for {NIGHT}: {landed} landed empty (no rows)"


def test_labels_land_days_later_and_join_by_key(demo, tmp_path: Path) -> None:
    churn, _ = demo
    land_nights(churn, tmp_path, range(0, 10))
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
    land_nights(churn, tmp_path, range(0, 3))
    path = tmp_path / "landing" / "churn" / "labels" / f"{DEMO_START:%Y-%m-%d}.parquet"
    labels = pd.read_parquet(path)
    extra = pd.DataFrame({"customer_id": ["nobody-1", "nobody-2", labels.customer_id[0]],
                          "churned": [1, 0, 1 - labels.churned[0]]})
    pd.concat([labels.iloc[5:], extra], ignore_index=True).to_parquet(path)  # 5 rows unlabeled, 1 relabeled
    joined, report = join_labels(churn, DEMO_START, tmp_path)
    assert (report.unknown_keys, report.duplicate_keys, report.labeled) == (2, 0, 395 + 1)
    relabeled = labels.iloc[:3].assign(churned=1 - labels.churned.iloc[:3])
    pd.concat([labels, relabeled], ignore_index=True).to_parquet(path)
    joined, report = join_labels(churn, DEMO_START, tmp_path)
    assert (report.unknown_keys, report.duplicate_keys, report.labeled) == (0, 3, 397)
    assert report.warnings() == [f"3 key(s) given conflicting labels for {DEMO_START} (all copies dropped)",
                                 f"3 of 400 row(s) for {DEMO_START} have no label"]
    labels.drop(columns=["churned"]).to_parquet(path)
    with pytest.raises(DataValidationError, match=r"lack column\(s\) 'churned'"):
        join_labels(churn, DEMO_START, tmp_path)


def test_the_window_is_the_newest_labeled_days_and_a_missing_day_is_skipped(demo, tmp_path: Path) -> None:
    churn, fraud = demo  # churn: labels 2 days late, window 5; fraud: labels inline, window 3
    land_nights(churn, tmp_path, range(0, 10), skip=(5,))
    window = labeled_window(churn, NIGHT, tmp_path)
    day = lambda n: DEMO_START + timedelta(days=n)  # noqa: E731
    assert window.holdout_day == day(7)  # night 9 - lag 2
    # Night 5 landed nothing: neither day 5's rows nor day 3's labels (due that night).
    assert window.window == [day(2), day(4), day(6)] and window.missing == [day(3), day(5)]
    assert f"missing, skipped: {day(3)}, {day(5)}" in window.describe()
    # A backfill of night 4 ignores labels that had not landed by then, even though the files exist now.
    assert labeled_window(churn, day(4), tmp_path).holdout_day == day(2)
    land_nights(fraud, tmp_path, range(7, 10))
    inline = labeled_window(fraud, NIGHT, tmp_path)
    assert inline.holdout_day == NIGHT and inline.window == [day(7), day(8)] and inline.missing == [day(6)]
    assert labeled_window(fraud, day(3), tmp_path).holdout_day is None


def test_the_night_is_explicit_or_today_in_the_schedules_time_zone() -> None:
    from datetime import datetime
    from zoneinfo import ZoneInfo

    from tasks.data.sources import resolve_night

    assert resolve_night(date(2026, 11, 25), "UTC") == date(2026, 11, 25)
    for zone in ("Pacific/Kiritimati", "Pacific/Pago_Pago"):  # UTC+14 and UTC-11: often different dates
        assert resolve_night(None, zone) == datetime.now(ZoneInfo(zone)).date()


# --------------------------------------------------------------------------------------------
# Joining labels by key on tiny frames: key dtypes, repeated labels, blank keys.
# --------------------------------------------------------------------------------------------
DAY = date(2026, 3, 2)


def _tiny(tmp_path: Path, rows: dict, labels: dict) -> CatalogueModel:
    """A model whose rows and labels for DAY are the two given tables."""
    model = CatalogueModel(name="tiny", features="{state_dir}/rows/{date:%Y-%m-%d}.parquet", label="y",
                           labels={"source": "{state_dir}/labels/{date:%Y-%m-%d}.parquet", "key": "id",
                                   "lag_days": 1})
    for folder, table in (("rows", rows), ("labels", labels)):
        (tmp_path / folder).mkdir(exist_ok=True)
        pd.DataFrame(table).to_parquet(tmp_path / folder / f"{DAY}.parquet")
    return model


@pytest.mark.parametrize(("row_ids", "label_ids", "row_dtype", "label_dtype"), [
    ([1, 2, 3], ["1", "2", "3"], "int64", "object"),
    (["a", "b", "c"], [1, 2, 3], "object", "int64"),
])
def test_a_join_key_of_another_type_is_a_clear_error(tmp_path: Path, row_ids, label_ids, row_dtype,
                                                     label_dtype) -> None:
    model = _tiny(tmp_path, {"id": row_ids, "x": [0.1, 0.2, 0.3]}, {"id": label_ids, "y": [0, 1, 0]})
    with pytest.raises(DataValidationError) as err:
        join_labels(model, DAY, tmp_path)
    message = str(err.value)
    for part in ("model 'tiny'", "key column 'id'", f"{tmp_path}/rows/{DAY}.parquet",
                 f"{tmp_path}/labels/{DAY}.parquet", row_dtype, label_dtype):
        assert part in message, (part, message)


def test_int_and_float_keys_join(tmp_path: Path) -> None:
    model = _tiny(tmp_path, {"id": [1, 2, 3], "x": [0.1, 0.2, 0.3]}, {"id": [1.0, 2.0, 3.0], "y": [0, 1, 0]})
    joined, report = join_labels(model, DAY, tmp_path)
    assert report.labeled == 3 and joined["y"].tolist() == [0, 1, 0]


def test_a_repeated_label_is_kept_once_and_a_conflicting_one_is_dropped(tmp_path: Path) -> None:
    model = _tiny(tmp_path, {"id": [1, 2, 3, 4], "x": [0.1, 0.2, 0.3, 0.4]},
                  {"id": [1, 1, 1, 2, 2, 3], "y": [1, 1, 1, 0, 1, 0]})
    joined, report = join_labels(model, DAY, tmp_path)
    assert (report.label_rows, report.repeated_labels, report.duplicate_keys, report.labeled) == (6, 2, 1, 2)
    assert joined.set_index("id")["y"].fillna(-1).to_dict() == {1: 1, 2: -1, 3: 0, 4: -1}
    assert report.warnings() == [f"2 repeated label row(s) for {DAY} (same key, same label: one copy kept)",
                                 f"1 key(s) given conflicting labels for {DAY} (all copies dropped)",
                                 f"2 of 4 row(s) for {DAY} have no label"]


def test_label_rows_without_a_key_are_counted(tmp_path: Path) -> None:
    model = _tiny(tmp_path, {"id": [1, 2], "x": [0.1, 0.2]}, {"id": [1.0, None, 2.0, None], "y": [1, 0, 0, 1]})
    joined, report = join_labels(model, DAY, tmp_path)
    assert (report.label_rows, report.missing_keys, report.unknown_keys, report.labeled) == (4, 2, 0, 2)
    assert report.warnings() == [f"2 label row(s) for {DAY} have no key (dropped)"]


def test_a_model_fed_by_served_traffic_stages_the_days_captured_rows_and_joins_labels_by_id(
        demo, tmp_path: Path) -> None:
    """features: served: the night's rows are what the server scored that UTC day, ids as the model's key."""
    from datetime import datetime, timezone

    from serving.capture import Capture, CaptureConfig

    churn, _ = demo
    model = churn.model_copy(update={"features": "served"})
    land_nights(churn, tmp_path, range(9, 12))  # labels of NIGHT land 2 days later
    rows = pd.read_parquet(tmp_path / "landing" / "churn" / "features" / f"{NIGHT}.parquet")
    features = [c for c in rows.columns if c not in churn.non_features]
    root = tmp_path / "served"
    with Capture(CaptureConfig(root=root)) as capture:
        at = datetime(NIGHT.year, NIGHT.month, NIGHT.day, 8, tzinfo=timezone.utc).timestamp()
        capture.offer(churn.name, "1", "one-request", rows[features], [0] * len(rows), None, (),
                      row_ids=rows["customer_id"].tolist(), at=at)
    assert stage_features(model, NIGHT - timedelta(days=1), tmp_path, root).missing  # nothing served that day
    staged = stage_features(model, NIGHT, tmp_path, root)
    assert staged.rows == len(rows) and staged.resolved.startswith(f"served:{churn.name}/{NIGHT}")
    frame = pd.read_parquet(staged.path)
    assert frame["customer_id"].tolist() == rows["customer_id"].tolist()
    joined = join_labels(model, NIGHT, tmp_path)
    assert joined is not None and joined[0]["churned"].notna().all() and len(joined[0]) == len(rows)
    with Capture(CaptureConfig(root=root)) as capture:  # a day served without ids: its labels could never join
        capture.offer(churn.name, "1", "no-ids", rows[features], [0] * len(rows), None, (), at=at + 86_400)
    with pytest.raises(DataValidationError) as err:
        stage_features(model, NIGHT + timedelta(days=1), tmp_path, root)
    assert str(err.value) == (
        f"model 'demo-churn': the rows for {NIGHT + timedelta(days=1)} in the traffic captured as "
        f"served:demo-churn/{NIGHT + timedelta(days=1)} ({root}) lack column(s) 'customer_id' (id_columns and "
        f"labels.key), so their labels could never be joined to them; requests to the model server must send it "
        f"for capture to record it")
