"""Labels that land broken are kept out and reported once; a person or relanded labels clear them. A champion under
its floor is measured beside `previous` on the same rows."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest

from tasks.data.demo import DEMO_START, demo_day
from tasks.data.sources import labeled_window
from tasks.registry.quality import landed_quality
from tests.tasks.conftest import land_nights


def _day(n: int):
    return DEMO_START + timedelta(days=n)


def _register(tracking, name: str, frame: pd.DataFrame, test_auc: float, flip: bool = False,
              label: str = "churned") -> str:
    """A small churn model with a drift reference (held-out rows with their labels) as a registry version;
    `flip` trains it on inverted labels (worse than chance on real days)."""
    from tasks.data.contract import infer_contract
    from tasks.data.datasets import infer_features
    from tasks.model.train import fit_pipeline
    from tasks.registry.runs import (CONTRACT_ARTIFACT, REFERENCE_ARTIFACT, log_dict, log_frame, log_metrics,
                                     log_sklearn_model, start_run)
    from tasks.registry.versions import register_model_version

    train = frame.assign(**{label: 1 - frame[label]}) if flip else frame
    spec = infer_features(train, label)
    model = fit_pipeline(train, spec, "random_forest", {"n_estimators": 20}, seed=0)
    run_id = start_run(tracking, "labels-tests")
    log_dict(tracking, run_id, infer_contract(train, spec).model_dump(mode="json"), CONTRACT_ARTIFACT)
    log_frame(tracking, run_id, frame.head(500), REFERENCE_ARTIFACT)
    log_metrics(tracking, run_id, {"test_roc_auc": test_auc})
    return register_model_version(tracking, name, log_sklearn_model(tracking, run_id, model, train[spec.features].head(3)))


@pytest.fixture
def churn(demo, tracking, model_name, prefect_harness):
    """Demo churn (labels 2 days late) under a fresh name; v1 (good) then v2 (trained on flipped labels) champion."""
    from tasks.registry.versions import CHAMPION, PREVIOUS, set_alias

    frame = demo_day("churned", DEMO_START, 1500, 7).drop(columns=["customer_id"])
    good = _register(tracking, model_name, frame, 0.7)
    bad = _register(tracking, model_name, frame, 0.7, flip=True)
    set_alias(tracking, model_name, PREVIOUS, good)
    set_alias(tracking, model_name, CHAMPION, bad)
    return demo[0].model_copy(update={"name": model_name}), good, bad


def _break_labels(state_dir: Path, day, value: int = 1) -> Path:
    path = state_dir / "landing" / "churn" / "labels" / f"{day}.parquet"
    pd.read_parquet(path).assign(churned=value).to_parquet(path)
    return path


def test_broken_labels_are_kept_out_reported_once_and_cleared_by_a_person(churn, tracking, tmp_path: Path) -> None:
    from tasks.registry.quality import clear_suspect_labels

    model, _, bad = churn
    land_nights(model, tmp_path, range(0, 7), rows=600)

    def night(n: int):
        return landed_quality(tracking, model, bad, labeled_window(model, _day(n), tmp_path), _day(n), tmp_path)

    assert [q.day for q in night(4).measured] == [_day(2)]
    _break_labels(tmp_path, _day(3))  # every label of day 3 is 1, where the reference has about 45%
    broken = night(5)
    assert broken.measured == [] and broken.kept_out == [_day(3)] and [r.day for r in broken.suspect] == [_day(3)]
    reason = broken.suspect[0].reason
    assert reason.startswith("label balance far from the reference's: 1 100% on 600 labeled rows vs 0 ") and \
        "chi-square p" in reason, reason
    assert broken.suspect[0].event_id  # labels.suspect sent
    window = labeled_window(model, _day(5), tmp_path).without(broken.kept_out)
    assert window.holdout_day == _day(2) and _day(3) not in window.window and "labels kept out: " in window.describe()

    again = night(6)  # the same labels a night later: still kept out, not reported again
    assert again.kept_out == [_day(3)] and again.suspect == [] and [q.day for q in again.measured] == [_day(4)]

    cleared = clear_suspect_labels(tracking, model.name, _day(3), by="ana", reason="a real campaign: all churned")
    assert cleared.cleared_by == "ana" and not cleared.kept_out
    with pytest.raises(Exception, match="cleared already by ana"):
        clear_suspect_labels(tracking, model.name, _day(3), by="bob", reason="twice")
    after = night(6)
    assert [q.day for q in after.measured] == [_day(3)] and after.kept_out == []
    assert after.measured[0].check.value is None and "roc_auc needs two classes" in after.measured[0].check.summary()
    assert "NOT MEASURED" in after.measured[0].check.summary() and not after.measured[0].check.degraded


def test_labels_that_land_again_and_look_right_are_cleared_by_the_night(churn, tracking, tmp_path: Path) -> None:
    from tasks.data.demo import land_demo_night
    from tasks.registry.labels import SUSPECT_DAY_TAG, suspect_records
    from tasks.registry.quality import quality_run

    model, _, bad = churn
    land_nights(model, tmp_path, range(0, 6), rows=600)
    landed_quality(tracking, model, bad, labeled_window(model, _day(4), tmp_path), _day(4), tmp_path)
    _break_labels(tmp_path, _day(3), value=0)
    assert landed_quality(tracking, model, bad, labeled_window(model, _day(5), tmp_path), _day(5), tmp_path).kept_out
    land_demo_night(model, _day(5), tmp_path, 600)  # the feed lands day 3's labels again, right this time
    fixed = landed_quality(tracking, model, bad, labeled_window(model, _day(6), tmp_path), _day(6), tmp_path)
    assert fixed.kept_out == [] and [q.day for q in fixed.measured] == [_day(3)], fixed
    record = suspect_records(quality_run(tracking, model.name, "")[1])[_day(3)]
    assert record.cleared_by == f"night {_day(6)}" and SUSPECT_DAY_TAG.endswith(".")


def test_a_champion_under_chance_is_measured_beside_previous(churn, tracking, tmp_path: Path) -> None:
    model, good, bad = churn
    land_nights(model, tmp_path, range(0, 5), rows=600)
    quality = landed_quality(tracking, model, bad, labeled_window(model, _day(4), tmp_path), _day(4), tmp_path)
    q = quality.newest
    assert q.check.value < 0.5 and q.previous is not None and q.previous.version == good and q.previous.better
    below = quality.below_floor()
    assert below.startswith(f"champion v{bad} on labeled day {_day(2)}: roc_auc ") and \
        "is under the floor 0.6 and worse than chance (0.5)" in below, below
    assert f"previous v{good} measured roc_auc {q.previous.value:.4f} on the same rows, better: roll back" in below


def test_labels_that_come_with_the_rows_are_checked_too(demo, tracking, model_name, prefect_harness,
                                                       tmp_path: Path) -> None:
    from tasks.registry.quality import inline_labels
    from tasks.registry.versions import CHAMPION, set_alias

    fraud = demo[1].model_copy(update={"name": model_name})
    frame = demo_day("is_fraud", DEMO_START, 1500, 7).drop(columns=["transaction_id"], errors="ignore")
    set_alias(tracking, model_name, CHAMPION, _register(tracking, model_name, frame, 0.7, label="is_fraud"))
    land_nights(fraud, tmp_path, range(0, 4), rows=600)
    for part in (tmp_path / "landing" / "fraud" / f"{_day(2):%Y/%m/%d}").glob("*.parquet"):
        pd.read_parquet(part).assign(is_fraud=1).to_parquet(part)  # the feed's label column stuck at 1
    window = labeled_window(fraud, _day(3), tmp_path)
    found = inline_labels(tracking, fraud, "1", window, _day(3), tmp_path)
    assert found.kept_out == [_day(2)] and [r.day for r in found.suspect] == [_day(2)] and found.suspect[0].event_id
    assert _day(2) not in window.without(found.kept_out).window
    later = inline_labels(tracking, fraud, "1", labeled_window(fraud, _day(4), tmp_path), _day(4), tmp_path)
    assert later.kept_out == [_day(2)] and later.suspect == []  # still out, reported once
