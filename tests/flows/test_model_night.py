"""A catalogue model's nights from landed files: delayed labels, a missing night, reruns that change nothing."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
import yaml

from flows.model_night import ModelNightParams, model_night
from nightshift.naming import artifact_key
from tasks.catalogue.schema import load_catalogue
from tasks.data.demo import DEMO_START, DemoDrift, land_demo_night
from tasks.registry.audit import read_audit
from tasks.registry.versions import CHAMPION, get_alias, list_versions

pytestmark = pytest.mark.usefixtures("prefect_harness")


def _day(n: int):
    return DEMO_START + timedelta(days=n)


@pytest.fixture
def catalogue(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The demo churn entry (labels 2 days late) under a fresh name, in a catalogue of its own."""
    name = f"churn-{uuid.uuid4().hex[:8]}"
    entry = {"name": name, "features": "{state_dir}/landing/churn/features/{date:%Y-%m-%d}.parquet",
             "label": "churned", "labels": {"source": "{state_dir}/landing/churn/labels/{date:%Y-%m-%d}.parquet",
                                            "key": "customer_id", "lag_days": 2},
             "id_columns": ["customer_id"], "time_column": "event_date", "window_days": 3, "cv_folds": 2,
             "estimator": {"kind": "random_forest", "param_grid": {"n_estimators": [25], "min_samples_leaf": [5]}},
             "gate": {"resamples": 200, "absolute_floor": 0.55}}
    path = tmp_path / "models.yaml"
    path.write_text(yaml.safe_dump({"models": [entry]}))
    monkeypatch.setenv("NIGHTSHIFT_CATALOGUE_PATH", str(path))
    monkeypatch.setenv("NIGHTSHIFT_STATE_DIR", str(tmp_path / "state"))
    return load_catalogue(path).models[0], tmp_path / "state"


def _runs_since(since: datetime) -> list:
    """Flow runs started at or after `since` (the session's harness is shared: earlier tests' runs are older)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterStartTime

    with get_client(sync_client=True) as client:
        return client.read_flow_runs(flow_run_filter=FlowRunFilter(start_time=FlowRunFilterStartTime(after_=since)),
                                     limit=200)


def _artifact_keys(flow_run_id) -> set[str]:
    """The keys of the artifacts a flow run created."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(
            any_=[flow_run_id])))
    return {a.key for a in found if a.key}


def test_a_night_is_one_flow_run_with_monitoring_and_training_as_its_tasks(catalogue, tracking) -> None:
    """A first night (training inside) and a forced night on the champion (the monitor inside) are one flow run
    each, with no subflows; train's and the monitor's artifacts land on that run, training's tags name it."""
    model, state = catalogue
    for n in range(4):
        land_demo_night(model, _day(n), state, rows=1_000)
    nights = []
    for params in (ModelNightParams(model_name=model.name, night=_day(3)),  # no champion: trains one
                   ModelNightParams(model_name=model.name, night=_day(3), force_retrain=True)):  # v1 reused
        since = datetime.now(UTC)
        final = model_night(params, return_state=True)
        assert final.is_completed(), final.message
        runs = _runs_since(since)
        assert [r.id for r in runs] == [final.state_details.flow_run_id], [(r.name, r.flow_id) for r in runs]
        nights.append((final.result(), runs[0]))

    (first, run), (forced, forced_run) = nights
    assert (first.action, first.champion_after) == ("promoted", "1") and first.challenger_version == "1"
    assert forced.retrain_reasons[0] == "forced" and forced.challenger_version == "1"  # same window: not retrained
    assert forced.drift_share is not None  # the monitor's checks ran on the champion, inside the same run
    keys = {kind: artifact_key(kind, model.name) for kind in ("train", "nightly", "gate", "validation", "drift")}
    assert {keys["train"], keys["nightly"], keys["gate"]} <= _artifact_keys(run.id)
    assert {keys["validation"], keys["drift"], keys["nightly"]} <= _artifact_keys(forced_run.id)
    (version,) = list_versions(tracking, model.name)
    assert version.tags["prefect.flow_run_id"] == str(run.id)  # training's tags name the night's run


@pytest.mark.integration
def test_a_week_of_nights_with_delayed_labels(catalogue, tracking) -> None:
    model, state = catalogue
    # 6,000 rows a night: the first champion (trained on one day) keeps a 1,200-row drift reference; below 1,000
    # rows Evidently switches to p-value tests, which flagged 6 of 25 undrifted columns on a 300-row reference.
    world = {n: (DemoDrift(concept=1.0) if n >= 5 else None) for n in range(8)}
    for n in (0, 1, 2, 3, 4, 5, 7):  # night 6 lands nothing
        land_demo_night(model, _day(n), state, rows=6_000, drift_for=lambda d: world[(d - DEMO_START).days])

    def run(n: int):
        return model_night(ModelNightParams(model_name=model.name, night=_day(n)))

    early = [run(n) for n in (0, 1, 2)]  # no champion, and no labeled day before the newest one yet
    assert [r.action for r in early] == ["no-labels"] * 3 and all(r.night == _day(i) for i, r in enumerate(early))
    first = run(3)  # day 1's labels landed: train on day 0, judge on day 1
    assert (first.action, first.champion_after) == ("promoted", "1") and first.decision.champion is None
    versions = len(list_versions(tracking, model.name))
    rerun = run(3)  # the champion exists now, so the rerun finds nothing to do: no new version, no move
    assert rerun.action == "no-retrain" and rerun.champion_after == "1"
    assert len(list_versions(tracking, model.name)) == versions and len(read_audit(tracking, model.name)) == 1

    quiet = run(4)
    assert quiet.action == "no-retrain" and quiet.champion_after == "1" and quiet.rows == 6_000, quiet.retrain_reasons

    missing = run(6)
    assert missing.action == "no-data" and missing.champion_after == "1" and missing.rows == 0
    assert len(missing.events) == 1 and missing.events[0] != "nightshift.data.missing"  # a real event id
    assert missing.validation == f"no data for {_day(6)} at {state}/landing/churn/features/{_day(6)}.parquet"

    changed = run(7)  # day 5's labels (a changed world) landed tonight: the champion's quality dropped on them
    assert any(r.startswith("performance degraded") for r in changed.retrain_reasons), changed.retrain_reasons
    assert changed.action in ("promoted", "refused") and changed.decision is not None
    assert get_alias(tracking, model.name, CHAMPION) == changed.champion_after
    champion, versions = changed.champion_after, len(list_versions(tracking, model.name))

    # An older night run again with a reason to retrain: the champion already learned from labels that new.
    old = model_night(ModelNightParams(model_name=model.name, night=_day(3), reason="backfill"))
    assert old.action == "champion-newer" and old.champion_after == champion, old
    assert len(list_versions(tracking, model.name)) == versions


@pytest.mark.integration
def test_a_changed_grid_trains_a_new_challenger_on_the_same_window(catalogue, tracking, tmp_path) -> None:
    """The window is the same, the estimator is not: the version trained before must not be reused."""
    model, state = catalogue
    for n in range(4):
        land_demo_night(model, _day(n), state, rows=6_000)
    first = model_night(ModelNightParams(model_name=model.name, night=_day(3)))
    assert (first.action, first.champion_after) == ("promoted", "1")
    entry = yaml.safe_load((tmp_path / "models.yaml").read_text())
    entry["models"][0]["estimator"]["param_grid"]["n_estimators"] = [30]
    (tmp_path / "models.yaml").write_text(yaml.safe_dump(entry))
    forced = model_night(ModelNightParams(model_name=model.name, night=_day(3), force_retrain=True))
    assert forced.challenger_version == "2" and forced.window_fingerprint == first.window_fingerprint, forced
    assert forced.action in ("promoted", "refused")


@pytest.mark.integration
def test_a_night_must_carry_its_join_key_and_its_errors_name_the_landed_file(catalogue, tracking) -> None:
    """Rows without the labels' key fail the night (they could never be joined); a header without rows is no data;
    a broken contract is told about the file that landed, not nightshift's staged copy of it."""
    model, state = catalogue
    for n in range(7):
        land_demo_night(model, _day(n), state, rows=2_000)
    first = model_night(ModelNightParams(model_name=model.name, night=_day(3)))
    assert (first.action, first.champion_after) == ("promoted", "1")

    def landed(n: int) -> tuple[Path, pd.DataFrame]:
        path = state / "landing" / "churn" / "features" / f"{_day(n)}.parquet"
        return path, pd.read_parquet(path)

    path, rows = landed(4)
    rows.iloc[:0].to_parquet(path)  # a header, no rows
    empty = model_night(ModelNightParams(model_name=model.name, night=_day(4)))
    assert (empty.action, empty.champion_after, empty.rows, len(empty.events)) == ("no-data", "1", 0, 1)
    assert empty.validation == f"no data for {_day(4)}: {path} landed empty (no rows)"
    assert get_alias(tracking, model.name, CHAMPION) == "1"

    path, rows = landed(5)
    rows.drop(columns=["customer_id"]).to_parquet(path)
    keyless = model_night(ModelNightParams(model_name=model.name, night=_day(5)), return_state=True)
    assert keyless.is_failed(), keyless
    for part in ("DataValidationError", f"the rows for {_day(5)} in {path} lack column(s) 'customer_id' "
                 "(id_columns and labels.key), so their labels could never be joined to them"):
        assert part in keyless.message, (part, keyless.message)

    path, rows = landed(6)
    rows.drop(columns=["tenure_months"]).to_parquet(path)
    broken = model_night(ModelNightParams(model_name=model.name, night=_day(6)), return_state=True)
    assert broken.is_failed(), broken
    assert f"required column 'tenure_months' is missing from {path}" in broken.message, broken.message
    assert "features.parquet" not in broken.message, broken.message
    assert get_alias(tracking, model.name, CHAMPION) == "1" and len(list_versions(tracking, model.name)) == 1


@pytest.mark.integration
def test_an_unknown_model_fails_before_any_work(catalogue) -> None:
    state = model_night(ModelNightParams(model_name="not-in-the-catalogue"), return_state=True)
    assert state.is_failed() and "model 'not-in-the-catalogue' is not in the catalogue" in state.message


@pytest.mark.integration
def test_broken_labels_are_kept_out_and_a_champion_under_chance_gives_way(catalogue, tracking, tmp_path) -> None:
    """Day 2's labels land all 1: reported (labels.suspect), kept out of the window and the gate. The world then
    turns so the champion ranks worse than chance: below_floor is sent, and a measurably better challenger replaces
    it although it is under the floor too ("both below the floor")."""
    from tasks.registry.quality import recorded_quality

    model, state = catalogue
    world = {n: (DemoDrift(concept=1.0) if n >= 3 else None) for n in range(8)}
    for n in range(7):
        land_demo_night(model, _day(n), state, rows=3_000, drift_for=lambda d: world[(d - DEMO_START).days])
    labels = state / "landing" / "churn" / "labels" / f"{_day(2)}.parquet"
    pd.read_parquet(labels).assign(churned=1).to_parquet(labels)

    def run(n: int):
        return model_night(ModelNightParams(model_name=model.name, night=_day(n)))

    assert run(3).champion_after == "1"  # trained on day 0, judged on day 1
    broken = run(4)  # day 2's labels landed, every one of them 1
    assert len(broken.labels_kept_out) == 1 and broken.labels_kept_out[0].startswith(
        f"labels of {_day(2)} suspect (kept out): label balance far from the reference's: 1 100% on "), broken
    # Without day 2, the newest labeled day is day 1, which the champion was gated on: nothing newer to learn from.
    assert len(broken.events) == 1 and broken.action == "champion-newer" and _day(2) not in recorded_quality(
        tracking, model.name)
    entry = yaml.safe_load((tmp_path / "models.yaml").read_text())
    entry["models"][0]["gate"]["absolute_floor"] = 0.75  # the team raises the bar: no model of this week meets it
    (tmp_path / "models.yaml").write_text(yaml.safe_dump(entry))
    turned = run(5)  # day 3: the world turned, v1 ranks worse than chance on it; day 2 stays out of the window
    assert turned.floor and turned.floor.startswith(f"champion v1 on labeled day {_day(3)}: roc_auc 0.") and \
        "under the floor 0.75 and worse than chance (0.5)" in turned.floor, turned.floor
    assert len(turned.events) == 1 and any(r.startswith("live model below the floor") for r in turned.retrain_reasons)
    assert turned.decision is not None and turned.decision.champion < 0.5 and turned.decision.champion_below_floor
    assert turned.action == "refused" and "the champion misses it too" in turned.decision.reason, turned
    learnt = run(6)  # trained on a turned day too: measurably better than v1, though still under the floor
    assert learnt.action == "promoted" and learnt.decision.reason.startswith("both below the floor 0.75"), learnt
    [record] = [r for r in read_audit(tracking, model.name) if r.to_version == learnt.challenger_version]
    assert record.action == "promote" and record.reason.startswith("both below the floor 0.75")
