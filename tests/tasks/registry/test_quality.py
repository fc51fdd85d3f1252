"""Realized quality of the champion on each labeled day, and the estimate made before the labels, in MLflow."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from tasks.data.demo import DEMO_START, demo_day
from tasks.data.sources import labeled_window
from tasks.registry.quality import landed_quality
from tests.tasks.conftest import land_nights


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

    land_nights(model, tmp_path, range(0, 5))
    first = night(4)  # the record starts at the day whose labels landed tonight (older days trained the champion)
    assert [q.day for q in first.measured] == [day(2)] and first.newest.day == day(2) and len(loads) == 1
    assert first.alert_reasons() and first.alert_reasons()[0].startswith("performance degraded")
    rerun = night(4)  # nothing measured twice, the same night's alert kept, the champion not even loaded
    assert rerun.measured == [] and rerun.alert_reasons() == first.alert_reasons() and len(loads) == 1

    land_nights(model, tmp_path, range(5, 6))
    late = tmp_path / "landing" / "churn" / "labels" / f"{day(3)}.parquet"
    late.rename(late.with_suffix(".later"))  # day 3's labels miss night 5
    quiet = night(5)
    assert quiet.measured == [] and quiet.alert_reasons() == [] and len(loads) == 1  # day 2 does not alarm twice

    land_nights(model, tmp_path, range(6, 7))
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
    land_nights(fraud, tmp_path, range(0, 2))
    assert landed_quality(tracking, fraud, "1", labeled_window(fraud, DEMO_START + timedelta(days=1), tmp_path),
                          DEMO_START + timedelta(days=1), tmp_path) is None


def test_an_estimate_made_before_the_labels_is_compared_when_theyland_nights(champion, tracking, tmp_path: Path) -> None:
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

    land_nights(model, tmp_path, range(0, 6))
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
