"""A week where the offline gate and live traffic disagree, on a real model server with real captured traffic.

Two segments of customers. Until four days ago half were segment b, whose churn follows the opposite of segment a's
pattern; since then b is 1% of the landed files and a's pattern changed. The champion v1 learned the old world; the
challenger v2 learns the new files (b barely in them) and beats v1 on the newest labeled day's files. Live traffic,
though, is 80% segment b. With gate.shadow: off the challenger is promoted that night; with gate.shadow: required it
goes into shadow on the model server instead, scores the live rows beside the champion, and when their labels land
the next night drops it for being worse live. The champion never changes.
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
import yaml

from flows.model_night import ModelNightParams, model_night
from tasks.data.segments import land_segment_day, segment_day
from tasks.data.served import NoServedData, read_served, read_shadow
from tasks.registry.audit import read_audit
from tasks.registry.versions import CHAMPION, SHADOW, get_alias
from tests.serving.conftest import TOKEN, start_server, stop_server

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("prefect_harness")]
LIVE_ROWS = 1_500
FEATURES = "{state_dir}/landing/features/{date:%Y-%m-%d}.parquet"
LABELS = "{state_dir}/landing/labels/{date:%Y-%m-%d}.parquet"


def world(day: date, n: int, b_share: float, new: bool) -> pd.DataFrame:
    """A day's customers: segment a churns with x1 (and, in the new world, x3 too), segment b against x1 and with x2."""
    return segment_day(day, n, b_share, new_world=new)


def land(state: Path, day: date, frame: pd.DataFrame, labels: bool = True) -> None:
    """The day's features file, and (unless not yet) its labels file keyed by customer_id."""
    land_segment_day(frame, day, state, FEATURES, LABELS if labels else None)


def entry(name: str, shadow: str) -> dict:
    return {"name": name, "features": FEATURES, "label": "churned",
            "labels": {"source": LABELS, "key": "customer_id", "lag_days": 1},
            "id_columns": ["customer_id"], "window_days": 3, "cv_folds": 2,
            "estimator": {"kind": "hist_gradient_boosting", "param_grid": {"max_iter": [100]}},
            "gate": {"resamples": 500, "absolute_floor": 0.6, "shadow": shadow, "shadow_min_rows": 500,
                     "shadow_margin": 0.01},
            "monitor": {"drift_share": 0.5}}


def night(name: str, day: date, force: bool = False):
    final = model_night(ModelNightParams(model_name=name, night=day, force_retrain=force), return_state=True)
    assert final.is_completed(), final.message
    return final.result()


def test_live_traffic_keeps_a_challenger_the_offline_gate_would_promote(tmp_path, monkeypatch, tracking) -> None:
    suffix = uuid.uuid4().hex[:6]
    required, off = f"sw-required-{suffix}", f"sw-off-{suffix}"
    state = tmp_path / "state"
    catalogue = tmp_path / "models.yaml"
    catalogue.write_text(yaml.safe_dump({"models": [entry(required, "required"), entry(off, "off")]}))
    for key, value in {"NIGHTSHIFT_CATALOGUE_PATH": str(catalogue), "NIGHTSHIFT_STATE_DIR": str(state),
                       "NIGHTSHIFT_CAPTURE_DIR": str(state / "served"), "NIGHTSHIFT_SERVER_TOKEN": TOKEN}.items():
        monkeypatch.setenv(key, value)
    today = datetime.now(UTC).date()  # the server captures live rows under today's UTC date
    for back in range(8, 0, -1):  # old world until T-5, new world since T-4
        day = today - timedelta(days=back)
        land(state, day, world(day, 2_000, 0.5, new=False) if back >= 5 else world(day, 2_000, 0.01, new=True))
    live = world(today, LIVE_ROWS, 0.8, new=True)
    land(state, today, live, labels=False)  # today's rows are what the server is asked; labels land tomorrow

    first = [night(name, today - timedelta(days=4)) for name in (required, off)]
    assert [r.action for r in first] == ["promoted", "promoted"]  # v1 of each, on the old world

    server = start_server(required, tmp_path / "server.log", NIGHTSHIFT_CATALOGUE_PATH=str(catalogue),
                          NIGHTSHIFT_CAPTURE_DIR=str(state / "served"), NIGHTSHIFT_CAPTURE_ROLL_SECONDS="1",
                          NIGHTSHIFT_CAPTURE_FLUSH_SECONDS="0.2")
    try:
        monkeypatch.setenv("NIGHTSHIFT_SERVER_URL", server.url)
        # Tonight the challenger v2, trained on the new files, beats v1 on the newest labeled day's files.
        promoted = night(off, today, force=True)
        assert (promoted.action, promoted.champion_after) == ("promoted", "2"), promoted.decision
        shadowing = night(required, today, force=True)
        assert (shadowing.action, shadowing.champion_after) == ("shadowing", "1"), shadowing.decision
        assert shadowing.decision.promote and shadowing.decision.difference > 0.05  # the same offline verdict
        listed = httpx.get(f"{server.url}/models").json()["models"]
        assert listed[required]["model_version"] == "1" and listed[required]["shadow"]["model_version"] == "2"
        assert listed[off]["model_version"] == "2" and listed[off]["shadow"] is None

        # The day's live traffic, 80% segment b: answered by v1 alone, scored by v2 in shadow, both captured.
        features = ["customer_id", "segment", "x1", "x2", "x3"]
        rng = np.random.default_rng(0)
        with httpx.Client(base_url=server.url, timeout=30) as client:
            start = 0
            while start < LIVE_ROWS:
                size = int(rng.integers(1, 6))
                chunk = live.iloc[start:start + size]
                reply = client.post(f"/models/{required}/invocations", json={"dataframe_split": {
                    "columns": features, "data": chunk[features].astype(object).values.tolist()}})
                assert reply.status_code == 200 and reply.json()["model_version"] == "1", reply.text
                start += size

        def captured() -> bool:
            try:
                return len(read_served(state / "served", required, today)) == LIVE_ROWS and \
                    len(read_shadow(state / "served", required, today, version="2")) == LIVE_ROWS
            except NoServedData:
                return False

        deadline = time.monotonic() + 60
        while not captured():  # parts close every second (NIGHTSHIFT_CAPTURE_ROLL_SECONDS=1)
            assert time.monotonic() < deadline, "the champion's and the shadow's rows were not captured in 60 s"
            time.sleep(0.5)
        metrics = httpx.get(f"{server.url}/metrics").text
        assert f'nightshift_shadow_rows_total{{model="{required}",outcome="scored",version="2"}} {LIVE_ROWS}' \
            in metrics.replace(".0\n", "\n"), [m for m in metrics.splitlines() if "shadow" in m]

        # Tomorrow their labels land; the night judges v2 on the live rows both scored, and drops it.
        land(state, today, live)
        land(state, today + timedelta(days=1), world(today + timedelta(days=1), 2_000, 0.01, new=True), labels=False)
        judged = night(required, today + timedelta(days=1))
        print("\n".join(f"{r['']}: {r['live']}" for r in _comparison(tracking, required).table()))
        assert judged.shadow.startswith("dropped after live comparison: v2 is worse live"), judged.shadow
        assert judged.champion_after == "1" and get_alias(tracking, required, CHAMPION) == "1"
        assert get_alias(tracking, required, SHADOW) != "2"
        drops = [r for r in read_audit(tracking, required) if r.action == "shadow-drop"]
        assert [(r.from_version, r.to_version) for r in drops] == [("2", "1")]
        assert drops[0].challenger < drops[0].champion and drops[0].ci_high < -0.01  # v2's live ROC AUC vs v1's
        assert (httpx.get(f"{server.url}/models").json()["models"][required]["shadow"] or {}).get("model_version") != "2"
    finally:
        stop_server(server)


def _comparison(tracking, name: str):
    """The newest live comparison recorded on the model's quality run."""
    from tasks.monitoring.shadow import LiveComparison
    from tasks.registry.quality import quality_run
    from tasks.registry.shadow import SHADOW_NIGHT_TAG

    _, records = quality_run(tracking, name, SHADOW_NIGHT_TAG)
    return LiveComparison.model_validate_json(records[max(records)])


def _week(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *entries: dict) -> tuple[Path, date]:
    """The week's files (old world until T-5, new since T-4, today's rows without labels) and a catalogue."""
    state = tmp_path / "state"
    catalogue = tmp_path / "models.yaml"
    catalogue.write_text(yaml.safe_dump({"models": list(entries)}))
    monkeypatch.setenv("NIGHTSHIFT_CATALOGUE_PATH", str(catalogue))
    monkeypatch.setenv("NIGHTSHIFT_STATE_DIR", str(state))
    today = datetime.now(UTC).date()
    for back in range(8, 0, -1):
        day = today - timedelta(days=back)
        land(state, day, world(day, 2_000, 0.5, new=False) if back >= 5 else world(day, 2_000, 0.01, new=True))
    land(state, today, world(today, LIVE_ROWS, 0.8, new=True), labels=False)
    return state, today


def test_advisory_promotes_and_the_replaced_champion_shadows_it(tmp_path, monkeypatch, tracking) -> None:
    """gate.shadow: advisory: the gate's promotion stands that night; v1 goes into shadow beside v2 (recorded in
    the registry, so a model server started later loads it from the alias)."""
    from tasks.registry.shadow import shadow_state

    name = f"sw-advisory-{uuid.uuid4().hex[:6]}"
    _, today = _week(tmp_path, monkeypatch, entry(name, "advisory"))
    monkeypatch.delenv("NIGHTSHIFT_SERVER_URL", raising=False)
    assert night(name, today - timedelta(days=4)).action == "promoted"
    result = night(name, today, force=True)
    assert (result.action, result.champion_after) == ("promoted", "2")
    assert result.shadow.startswith("previous champion v1 in shadow beside v2 on no model server configured")
    assert shadow_state(tracking, name).model_dump() == {"version": "1", "against": "2", "started": today,
                                                         "role": "previous"}
    assert [r.action for r in read_audit(tracking, name)] == ["promote", "promote", "shadow-start"]


def test_a_server_that_refuses_the_shadow_fails_the_night_and_changes_nothing(tmp_path, monkeypatch,
                                                                              tracking) -> None:
    """gate.shadow: required with a model server that cannot be reached: the night ends Failed naming it, the
    champion stays v1, no `shadow` alias is left; once the server is reachable the rerun shadows v2."""
    import socket

    name = f"sw-refused-{uuid.uuid4().hex[:6]}"
    _, today = _week(tmp_path, monkeypatch, entry(name, "required"))
    monkeypatch.delenv("NIGHTSHIFT_SERVER_URL", raising=False)
    assert night(name, today - timedelta(days=4)).action == "promoted"
    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("NIGHTSHIFT_SERVER_URL", f"http://127.0.0.1:{port}")
    final = model_night(ModelNightParams(model_name=name, night=today, force_retrain=True), return_state=True)
    assert final.is_failed() and f"model server http://127.0.0.1:{port} unreachable" in final.message
    assert get_alias(tracking, name, CHAMPION) == "1" and get_alias(tracking, name, SHADOW) is None
    assert [r.action for r in read_audit(tracking, name)] == ["promote"]
    monkeypatch.delenv("NIGHTSHIFT_SERVER_URL")
    rerun = night(name, today, force=True)  # the same challenger (found by its window), shadowed this time
    assert (rerun.action, rerun.challenger_version, get_alias(tracking, name, SHADOW)) == ("shadowing", "2", "2")
