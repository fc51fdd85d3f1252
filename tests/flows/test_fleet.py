"""The fleet: every catalogue model's nights over a date range, side by side; one broken model stops nobody."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from flows.fleet import FleetParams, fleet
from tasks.catalogue.schema import load_catalogue
from tasks.data.demo import DEMO_START, land_demo_night
from tasks.registry.versions import CHAMPION, get_alias
from tests.catalogues import SMALL, two_demo_models, write_catalogue

pytestmark = [pytest.mark.usefixtures("prefect_harness"), pytest.mark.integration]


def test_a_backfill_runs_every_model_in_date_order_and_isolates_a_broken_one(tmp_path: Path, tracking,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    models = two_demo_models("")
    models.append({"name": f"broken-{models[0]['name']}", "features": "{state_dir}/broken/{date:%Y-%m-%d}.parquet",
                   "label": "y", **SMALL})
    write_catalogue(tmp_path, models)
    state = tmp_path / "state"
    monkeypatch.setenv("NIGHTSHIFT_CATALOGUE_PATH", str(tmp_path / "models.yaml"))
    monkeypatch.setenv("NIGHTSHIFT_STATE_DIR", str(state))
    churn, fraud, _ = load_catalogue(tmp_path / "models.yaml").models
    for n in range(4):
        night = DEMO_START + timedelta(days=n)
        land_demo_night(churn, night, state, rows=3_000)
        land_demo_night(fraud, night, state, rows=3_000)
        (state / "broken").mkdir(parents=True, exist_ok=True)
        (state / "broken" / f"{night:%Y-%m-%d}.parquet").write_bytes(b"not parquet at all")

    final = fleet(FleetParams(night=DEMO_START, until=DEMO_START + timedelta(days=3)), return_state=True)
    assert final.is_failed() and final.message.startswith("4 of 12 model-nights failed: broken-")
    assert "is not valid Parquet" in final.message
    rows = final.result(raise_on_failure=False)
    assert [r.night for r in rows] == [str(DEMO_START + timedelta(days=n)) for n in range(4) for _ in range(3)]
    by_model = {name: [r for r in rows if r.model_name == name] for name in (churn.name, fraud.name)}
    assert all(r.state == "Completed" for rs in by_model.values() for r in rs)
    assert [r.action for r in by_model[fraud.name]][:2] == ["no-labels", "promoted"]  # labels inline: day 0 → day 1
    assert [r.action for r in by_model[churn.name]][:3] == ["no-labels"] * 3  # labels 2 days late
    assert by_model[churn.name][3].action == "promoted"  # night 3: train on day 0, judge on day 1
    assert get_alias(tracking, churn.name, CHAMPION) == "1" == get_alias(tracking, fraud.name, CHAMPION)


def test_an_unknown_model_or_a_reversed_range_fails_before_any_night() -> None:
    with pytest.raises(ValueError, match="on or before `until`"):
        FleetParams(night=DEMO_START + timedelta(days=2), until=DEMO_START)
    state = fleet(FleetParams(models=["no-such-model"]), return_state=True)
    assert state.is_failed() and "model 'no-such-model' is not in the catalogue" in state.message


def test_a_night_that_cannot_even_start_is_a_failed_row_not_a_failed_fleet() -> None:
    """No model-night deployment on this server: each start raises, yet every model gets its row."""
    state = fleet(FleetParams(via_deployments=True), return_state=True)  # the bundled catalogue's two models
    rows = state.result(raise_on_failure=False)
    assert state.is_failed() and state.message.startswith("2 of 2 model-nights failed")
    assert [(r.model_name, r.state) for r in rows] == [("demo-churn", "Failed"), ("demo-fraud", "Failed")]
    assert all(r.note.startswith("ObjectNotFound") for r in rows), rows
