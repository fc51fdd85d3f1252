"""A catalogue model's nights from landed files: staging, delayed labels joined by key, the labeled window."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import pandas as pd
import pytest

from nightshift.errors import DataValidationError
from nightshift.settings import PROJECT_ROOT
from tasks.catalogue.schema import CatalogueModel, load_catalogue
from tasks.data.demo import DEMO_START, demo_day, land_demo_night
from tasks.data.sources import join_labels, labeled_window, stage_features
from tasks.registry.quality import landed_quality

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


# --------------------------------------------------------------------------------------------
# Realized quality: every labeled day measured once, late labels included, recorded in MLflow.
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def churn_model(tracking):
    """A small churn model logged once, with a test-time roc_auc no real day reaches (every day degrades)."""
    from tasks.data.contract import infer_contract
    from tasks.data.datasets import infer_features
    from tasks.model.train import fit_pipeline
    from tasks.registry.runs import CONTRACT_ARTIFACT, log_dict, log_metrics, log_sklearn_model, start_run

    frame = demo_day("churned", DEMO_START, 600, 7).drop(columns=["customer_id"])
    spec = infer_features(frame, "churned")
    model = fit_pipeline(frame, spec, "random_forest", {"n_estimators": 5}, seed=0)
    run_id = start_run(tracking, "quality-tests")
    log_dict(tracking, run_id, infer_contract(frame, spec).model_dump(mode="json"), CONTRACT_ARTIFACT)
    log_metrics(tracking, run_id, {"test_roc_auc": 0.999, "test_accuracy": 0.99})
    return log_sklearn_model(tracking, run_id, model, frame[spec.features].head(3))


@pytest.fixture
def champion(demo, tracking, churn_model, model_name):
    """Demo churn (labels 2 days late) under a fresh name, with v1 as its champion."""
    from tasks.registry.versions import CHAMPION, register_model_version, set_alias

    version = register_model_version(tracking, model_name, churn_model)
    set_alias(tracking, model_name, CHAMPION, version)
    return demo[0].model_copy(update={"name": model_name}), version


def test_quality_is_measured_once_per_labeled_day_and_late_labels_are_picked_up(
        champion, tracking, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tasks.registry import quality, versions
    from tasks.registry.quality import quality_run
    from tasks.registry.runs import get_run
    from tasks.registry.store import client

    model, version = champion
    loads = []
    real_load = versions.load_version
    monkeypatch.setattr(quality, "load_version", lambda *a, **k: loads.append(a) or real_load(*a, **k))
    day = lambda n: DEMO_START + timedelta(days=n)  # noqa: E731

    def night(n: int):
        return landed_quality(tracking, model, version, labeled_window(model, day(n), tmp_path), day(n), tmp_path)

    _land(model, tmp_path, range(0, 5))
    first = night(4)  # the record starts at the day whose labels landed tonight (older days trained the champion)
    assert [q.day for q in first.measured] == [day(2)] and first.newest.day == day(2) and len(loads) == 1
    assert first.alert_reasons() and first.alert_reasons()[0].startswith("performance degraded")
    rerun = night(4)  # nothing measured twice, the same night's alert kept, the champion not even loaded
    assert rerun.measured == [] and rerun.alert_reasons() == first.alert_reasons() and len(loads) == 1

    _land(model, tmp_path, range(5, 6))
    late = tmp_path / "landing" / "churn" / "labels" / f"{day(3)}.parquet"
    late.rename(late.with_suffix(".later"))  # day 3's labels miss night 5
    quiet = night(5)
    assert quiet.measured == [] and quiet.alert_reasons() == [] and len(loads) == 1  # day 2 does not alarm twice

    _land(model, tmp_path, range(6, 7))
    late.with_suffix(".later").rename(late)  # ... and land before night 6, with day 4's
    caught = night(6)
    assert [q.day for q in caught.measured] == [day(3), day(4)] and len(loads) == 2  # one load for both days
    assert caught.newest.day == day(4) and [q.day for q in caught.late()] == [day(3)]
    assert caught.alert_reasons() and all(f"labeled day {day(4)}" in r for r in caught.alert_reasons())
    assert night(7).measured == [] and night(7).alert_reasons() == []  # nothing new landed for night 7
    assert night(5).alert_reasons() == []  # a backfill of night 5 still sees what night 5 knew

    run_id, records = quality_run(tracking, model.name)
    assert sorted(records) == [str(day(n)) for n in (2, 3, 4)]
    history = client(tracking).get_metric_history(run_id, "realized_roc_auc")
    assert [m.step for m in history] == [int(f"{day(n):%Y%m%d}") for n in (2, 3, 4)]
    run = get_run(tracking, run_id)
    assert run.info.run_name == model.name and run.data.params["model_name"] == model.name
    assert client(tracking).get_experiment(run.info.experiment_id).name == f"{tracking.experiment_name}-quality"
    assert {m.key for m in history} == {"realized_roc_auc"} and run.data.metrics["champion_version"] == float(version)


def test_labels_that_come_with_the_rows_are_left_to_the_monitor(demo, tracking, tmp_path: Path) -> None:
    _, fraud = demo
    _land(fraud, tmp_path, range(0, 2))
    assert landed_quality(tracking, fraud, "1", labeled_window(fraud, DEMO_START + timedelta(days=1), tmp_path),
                          DEMO_START + timedelta(days=1), tmp_path) is None


def test_an_estimate_made_before_the_labels_is_compared_when_they_land(champion, tracking, tmp_path: Path) -> None:
    """The night of day 2 records its CBPE estimate; the night its labels land records realized - estimated."""
    from tasks.monitoring.estimate import Estimate, EstimateCheck
    from tasks.registry.quality import ESTIMATE_DAY_TAG, quality_run, record_estimate
    from tasks.registry.runs import get_run
    from tasks.registry.store import client

    model, version = champion
    day = lambda n: DEMO_START + timedelta(days=n)  # noqa: E731
    estimate = Estimate(metric="roc_auc", value=0.5, lower=0.45, upper=0.55, level=0.95, rows=6000, sampling_mean=0.5,
                        sampling_std=0.02, draws=200, calibration="identity", method="cbpe")
    check = EstimateCheck(estimate=estimate, calibration="identity")
    first = record_estimate(tracking, model, day(2), version, check)
    rerun = record_estimate(tracking, model, day(2), version,
                            check.model_copy(update={"estimate": estimate.model_copy(update={"value": 0.9})}))
    assert rerun == first and first.value == 0.5  # a rerun of the night keeps the first estimate
    record_estimate(tracking, model, day(3), "999", check)  # another version's estimate is never compared

    _land(model, tmp_path, range(0, 6))
    quality = landed_quality(tracking, model, version, labeled_window(model, day(4), tmp_path), day(4), tmp_path)
    measured = quality.measured[0]
    assert measured.day == day(2) and measured.estimate == first
    realized = measured.check.batch_metrics["roc_auc"]
    assert measured.estimate_error() == pytest.approx(realized - 0.5)
    assert f"error {realized - 0.5:+.3f}" in measured.describe()
    later = landed_quality(tracking, model, version, labeled_window(model, day(5), tmp_path), day(5), tmp_path)
    assert later.measured[0].day == day(3) and later.measured[0].estimate is None

    run_id, estimates = quality_run(tracking, model.name, ESTIMATE_DAY_TAG)
    assert sorted(estimates) == [str(day(2)), str(day(3))]
    run = get_run(tracking, run_id)
    assert run.data.metrics["estimate_error_roc_auc"] == pytest.approx(realized - 0.5)
    steps = [m.step for m in client(tracking).get_metric_history(run_id, "estimated_roc_auc")]
    assert steps == [int(f"{day(n):%Y%m%d}") for n in (2, 3)]


def test_a_model_fed_by_served_traffic_stages_the_days_captured_rows_and_joins_labels_by_id(
        demo, tmp_path: Path) -> None:
    """features: served: the night's rows are what the server scored that UTC day, ids as the model's key."""
    from datetime import datetime, timezone

    from serving.capture import Capture, CaptureConfig

    churn, _ = demo
    model = churn.model_copy(update={"features": "served"})
    _land(churn, tmp_path, range(9, 12))  # labels of NIGHT land 2 days later
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
