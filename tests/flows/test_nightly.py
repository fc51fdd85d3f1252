"""The nightly loop end to end on small demo data, in the Prefect test harness, against a real MLflow registry."""

from __future__ import annotations

import threading
import uuid
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from flows.nightly import NightlyParams, nightly
from flows.rollback import RollbackParams, rollback
from flows.train import EstimatorParams
from tasks.catalogue.config import GateConfig
from tasks.data.datasets import DatasetParams
from tasks.data.demo import DemoDrift, generate_demo
from tasks.registry.audit import read_audit
from tasks.registry.versions import CHAMPION, AliasState, alias_state, get_alias, list_versions

pytestmark = [pytest.mark.usefixtures("prefect_harness"), pytest.mark.integration]
CONCEPT = DemoDrift(concept=1.0)


def _night(name: str, day: int, drift: DemoDrift = DemoDrift(), *, reference: bool = False, force: bool = False,
           source: str | None = None) -> NightlyParams:
    batch = DatasetParams(source=source or "demo", day=day, rows=2_500, drift=drift) if source is None else \
        DatasetParams(source=source)
    return NightlyParams(
        model_name=name, batches=[batch], window=1, force_retrain=force,
        reference=DatasetParams(source="demo", day=0, rows=3_000) if reference else None,
        estimator=EstimatorParams(param_grid={"n_estimators": [25], "min_samples_leaf": [5]}), cv_folds=2,
        gate=GateConfig(resamples=200, absolute_floor=0.55), seed=7)


class _Refuser(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 - http.server API
        self.send_response(503)
        self.end_headers()
        self.wfile.write(b"smoke test failed: predictions contain NaN")

    def log_message(self, *args: object) -> None:
        pass


def test_a_week_in_the_life(tracking, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"nightly-{uuid.uuid4().hex[:8]}"

    # Night 1: no champion yet → train, first model promoted above the floor.
    first = nightly(_night(name, 1, reference=True))
    assert (first.action, first.champion_after) == ("promoted", "1")
    assert first.retrain_reasons == ["no champion yet"] and first.decision.champion is None

    # Night 2: quiet → nothing to do.
    quiet = nightly(_night(name, 2))
    assert quiet.action == "no-retrain" and quiet.champion_after == "1" and quiet.alert_reasons == []

    # Night 3: the world changed (concept drift) → degradation → a better challenger is promoted.
    drifted = nightly(_night(name, 3, CONCEPT))
    assert any(r.startswith("performance degraded") for r in drifted.retrain_reasons)
    assert drifted.action == "promoted" and drifted.decision.ci_low > 0
    assert alias_state(tracking, name) == AliasState(drifted.challenger_version, "1")
    assert drifted.deploy.status == "not-deployed"

    # Rerunning the same night is idempotent: same window fingerprint → no new version, no second promotion.
    audit_before, versions_before = len(read_audit(tracking, name)), len(list_versions(tracking, name))
    # Unforced, the rerun has no reason to retrain: v2's drift reference is ~350 rows of night 3 itself (it raised a
    # false drift alarm here before Benjamini-Hochberg); forced, it must find its version and promotion done.
    assert nightly(_night(name, 3, CONCEPT)).action == "no-retrain"
    again = nightly(_night(name, 3, CONCEPT, force=True))
    assert again.action == "already-promoted" and again.challenger_version == drifted.challenger_version
    assert len(read_audit(tracking, name)) == audit_before and len(list_versions(tracking, name)) == versions_before

    # Night 4: forced retrain on the same world → not measurably better → refused, champion kept.
    forced = nightly(_night(name, 4, CONCEPT, force=True))
    assert forced.retrain_reasons[0] == "forced"
    if forced.action == "refused":
        assert forced.champion_after == drifted.challenger_version and not forced.decision.promote

    # A CSV with one blank label cell (read as 0.0/1.0/NaN) is a normal night: validated, retrained, gated.
    blank = tmp_path / "blank-label.csv"
    frame = generate_demo(2_500, seed=3, day=4, drift=CONCEPT)
    frame["churned"] = frame["churned"].astype(object)
    frame.loc[100, "churned"] = None
    frame.to_csv(blank, index=False)
    csv_night = nightly(_night(name, 4, source=str(blank), force=True))
    assert csv_night.action in ("promoted", "refused") and "2500 rows valid" in csv_night.validation

    # A batch that breaks the contract stops the night before any training; champion untouched.
    champion = get_alias(tracking, name, CHAMPION)
    broken = tmp_path / "broken.parquet"
    generate_demo(500, seed=1, day=5).drop(columns=["plan"]).to_parquet(broken)
    state = nightly(_night(name, 5, source=str(broken)), return_state=True)
    assert state.is_failed() and "required column 'plan' is missing" in state.message
    assert get_alias(tracking, name, CHAMPION) == champion

    # The model server refuses the new champion → aliases rolled back, audit record, flow Failed.
    server = HTTPServer(("127.0.0.1", 0), _Refuser)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("NIGHTSHIFT_SERVER_URL", f"http://127.0.0.1:{server.server_port}")
    monkeypatch.setenv("NIGHTSHIFT_SERVER_TOKEN", "secret")
    before = alias_state(tracking, name)
    state = nightly(_night(name, 6), return_state=True)  # back to the old world: the challenger wins
    server.shutdown()
    assert state.is_failed() and "refused the new model (503)" in state.message
    assert alias_state(tracking, name) == before
    assert read_audit(tracking, name)[-1].action == "rollback"
    monkeypatch.delenv("NIGHTSHIFT_SERVER_URL")

    # A human rolls back to the previous champion, with a reason on record.
    result = rollback(RollbackParams(reason="latency regression reported by the app team", model_name=name))
    assert result.to_version == before.previous and get_alias(tracking, name, CHAMPION) == before.previous
    last = read_audit(tracking, name)[-1]
    assert last.action == "rollback" and last.reason.startswith("latency regression")
