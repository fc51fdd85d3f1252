"""Promotion inside a Prefect transaction (undo on failure) and the promotion lock."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time

import pytest
from prefect import flow
from prefect.transactions import transaction

from nightshift.errors import LockTimeout, PromotionRefused, TrackingUnavailable

pass
from tasks.registry import locks
from tasks.registry import promote as promote_module
from tasks.registry.audit import read_audit
from tasks.registry.locks import model_lock
from tasks.registry.promote import DeployRefused, move_champion_task, promote, redeploy
from tasks.registry.runs import CONTRACT_ARTIFACT, log_dict, log_sklearn_model, start_run
from tasks.registry.versions import CHAMPION, AliasState, alias_state, get_alias, move_champion, register_model_version
from tests.tasks.conftest import decision_for

pytestmark = pytest.mark.usefixtures("prefect_harness")


def test_failure_after_the_move_rolls_the_aliases_back(tracking, versions) -> None:
    name = versions
    move_champion(tracking, name, "1")

    @flow
    def promote_then_fail() -> None:
        with transaction():
            move_champion_task(tracking, name, "2")
            assert get_alias(tracking, name, CHAMPION) == "2"
            raise DeployRefused("server said no")

    with pytest.raises(DeployRefused):
        promote_then_fail()
    assert alias_state(tracking, name) == AliasState("1", None)


def test_successful_transaction_keeps_the_move(tracking, versions) -> None:
    name = versions

    @flow
    def promote() -> None:
        with transaction():
            move_champion_task(tracking, name, "1")

    promote()
    assert alias_state(tracking, name) == AliasState("1", None)


def test_two_promotions_cannot_overlap(tracking, model_name) -> None:
    events: list[str] = []

    def hold() -> None:
        with model_lock(tracking, model_name, "promote"):
            events.append("a-in")
            time.sleep(3)
            events.append("a-out")

    first = threading.Thread(target=hold)
    first.start()
    while "a-in" not in events:
        time.sleep(0.05)
    with model_lock(tracking, model_name, "promote", timeout_seconds=60):
        events.append("b-in")
    first.join()
    assert events == ["a-in", "a-out", "b-in"]


def test_redeploy_without_a_server_records_not_deployed() -> None:
    outcome = redeploy(None, None, "m")
    assert outcome.status == "not-deployed" and "NIGHTSHIFT_SERVER_URL" in outcome.detail
    assert redeploy(" , ", None, "m").status == "not-deployed"
    with pytest.raises(DeployRefused, match="unreachable"):
        redeploy("http://127.0.0.1:9", "t", "m", timeout_seconds=2)


def test_promote_refuses_a_decision_that_says_keep(tracking, versions) -> None:
    with pytest.raises(PromotionRefused, match="did not pass the gate"):
        promote(tracking, versions, decision_for("3", False), server_url=None, token=None)
    assert alias_state(tracking, versions) == AliasState(None, None)


def test_promote_is_compare_and_swap_on_the_champion(tracking, versions) -> None:
    name = versions
    assert promote(tracking, name, decision_for("1", True), server_url=None, token=None).status == "promoted"
    # A decision made against "no champion" is stale once v1 is champion: refused, recorded, nothing moves.
    outcome = promote(tracking, name, decision_for("2", True), server_url=None, token=None)
    assert (outcome.status, outcome.champion_after) == ("superseded", "1")
    assert alias_state(tracking, name) == AliasState("1", None)
    assert [(r.action, r.from_version, r.to_version) for r in read_audit(tracking, name)] == [
        ("promote", None, "1"), ("superseded", "1", "2")]
    # Against the right champion it goes through, once.
    assert promote(tracking, name, decision_for("2", True, "1"), server_url=None, token=None).status == "promoted"
    again = promote(tracking, name, decision_for("2", True, "1"), server_url=None, token=None)
    assert again.status == "already-promoted" and alias_state(tracking, name) == AliasState("2", "1")


def test_promote_completes_a_move_whose_run_died_before_the_audit(tracking, versions) -> None:
    name = versions
    move_champion(tracking, name, "1")  # what a run killed right after the alias move leaves behind
    outcome = promote(tracking, name, decision_for("1", True), server_url=None, token=None)
    assert outcome.status == "completed"
    assert [r.action for r in read_audit(tracking, name)] == ["promote"]
    assert promote(tracking, name, decision_for("1", True), server_url=None, token=None).status == "already-promoted"
    assert len(read_audit(tracking, name)) == 1


@pytest.mark.integration  # a real process SIGKILLed inside the lock (~6 s)
def test_a_lock_whose_holder_is_killed_is_free_at_once(tracking, model_name, monkeypatch, caplog) -> None:
    code = (f"import sys, time\nfrom tasks.registry.locks import model_lock\nfrom tasks.registry.store import TrackingConfig\n"
            f"cfg = TrackingConfig.model_validate_json({tracking.model_dump_json()!r})\n"
            f"with model_lock(cfg, {model_name!r}, 'promote'):\n    print('held', flush=True)\n    time.sleep(600)\n")
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    monkeypatch.setattr(locks, "_WAIT_LOG_SECONDS", 0.5)
    with caplog.at_level("INFO", logger="nightshift.promote"):
        with pytest.raises(LockTimeout, match=f"held by .*{holder.pid}"):
            with model_lock(tracking, model_name, "promote", timeout_seconds=1.2):
                pass
        assert f'"pid": {holder.pid}' in caplog.text  # a waiting run says what it waits for
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=30)
    started = time.monotonic()
    with model_lock(tracking, model_name, "promote", timeout_seconds=30):
        assert time.monotonic() - started < 2


def _replica(status: int = 200, *later: int) -> tuple[str, list[str], object]:
    """A stand-in model server answering reloads with `status`, then `later` ones in turn (the last one repeats),
    recording the paths it was asked for."""
    from http.server import BaseHTTPRequestHandler, HTTPServer

    reloads: list[str] = []
    statuses = [status, *later]

    class Server(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server API
            status = statuses[min(len(reloads), len(statuses) - 1)]
            reloads.append(self.path)
            self.send_response(status)
            self.end_headers()
            self.wfile.write(b'{"status": "swapped"}' if status == 200 else b'{"status": "kept"}')

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Server)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_port}", reloads, server


@pytest.fixture
def reload_server():
    """A stand-in model server that accepts every reload and records the paths it was asked for."""
    url, reloads, server = _replica()
    yield url, reloads
    server.shutdown()


def test_a_failed_audit_write_puts_aliases_and_the_live_server_back(tracking, versions, monkeypatch,
                                                                   reload_server) -> None:
    from prefect import task

    url, reloads = reload_server

    def registry_down(cfg, record) -> None:
        raise TrackingUnavailable("MLflow registry at test failed while appending an audit record")

    monkeypatch.setattr(promote_module, "append_audit_task", task(registry_down, name="append-audit-record"))
    move_champion(tracking, versions, "1")
    with pytest.raises(TrackingUnavailable):
        promote(tracking, versions, decision_for("2", True, "1"), server_url=url, token="t")
    assert alias_state(tracking, versions) == AliasState("1", None)
    path = f"/models/{versions}/reload"
    assert reloads == [path, f"{path}?allow_schema_change=true"]  # v2 loaded, then the restored v1 again


def test_only_an_allowed_schema_change_or_a_rollback_overrides_the_servers_schema_check(tracking, versions,
                                                                                        reload_server) -> None:
    url, reloads = reload_server
    move_champion(tracking, versions, "1")
    promote(tracking, versions, decision_for("2", True, "1"), server_url=url, token="t")
    changed = decision_for("1", True, "2").model_copy(update={"schema_changes": ["column 'age' is categorical"]})
    promote(tracking, versions, changed, server_url=url, token="t")
    promote(tracking, versions, decision_for("2", True), server_url=url, token="t", action="rollback",
            expected_champion="1", reason="operator")
    path = f"/models/{versions}/reload"
    assert reloads == [path, f"{path}?allow_schema_change=true", f"{path}?allow_schema_change=true"]


def test_replicas_all_swap_or_none(tracking, versions) -> None:
    """Three replicas, the third refuses: the first two load the old champion again, aliases back, audited."""
    replicas = [_replica(), _replica(), _replica(status=422)]
    move_champion(tracking, versions, "1")
    urls = ", ".join(url for url, _, _ in replicas)
    with pytest.raises(DeployRefused, match=r"refused the new model \(422\)"):
        promote(tracking, versions, decision_for("2", True, "1"), server_url=urls, token="t")
    path = f"/models/{versions}/reload"
    assert [r for _, r, _ in replicas] == [[path, f"{path}?allow_schema_change=true"]] * 2 + [[path]]
    assert alias_state(tracking, versions) == AliasState("1", None)
    assert read_audit(tracking, versions)[-1].action == "rollback"
    for _, _, server in replicas:
        server.shutdown()
    ok = [_replica(), _replica()]
    outcome = promote(tracking, versions, decision_for("2", True, "1"), server_url=[u for u, _, _ in ok], token="t")
    assert outcome.deploy.servers == [u for u, _, _ in ok] and outcome.deploy.detail.startswith("2 replicas swapped")
    for _, _, server in ok:
        server.shutdown()


def test_every_replica_that_swapped_is_put_back_even_when_one_of_them_fails(tracking, versions) -> None:
    """The first replica cannot load the old champion again: the second is still put back, and the audit says so."""
    replicas = [_replica(200, 503), _replica(), _replica(status=422)]
    move_champion(tracking, versions, "1")
    with pytest.raises(DeployRefused, match=r"refused the new model \(422\)") as refused:
        promote(tracking, versions, decision_for("2", True, "1"), server_url=[u for u, _, _ in replicas], token="t")
    path = f"/models/{versions}/reload"
    assert [r for _, r, _ in replicas] == [[path, f"{path}?allow_schema_change=true"]] * 2 + [[path]]
    assert alias_state(tracking, versions) == AliasState("1", None)
    stuck = f"{replicas[0][0]} refused the new model (503)"
    assert any("these replicas may still serve v2" in note and stuck in note for note in refused.value.__notes__)
    last = read_audit(tracking, versions)[-1]
    assert last.action == "rollback" and "may still serve v2" in last.reason and stuck in last.reason
    for _, _, server in replicas:
        server.shutdown()


@pytest.mark.integration
def test_a_refused_first_promotion_leaves_no_replica_serving_it(tracking, model_name, tmp_path) -> None:
    """No champion before; replica 1 swaps, replica 2 refuses (another token): replica 1 unloads the model again."""
    from urllib.parse import quote

    import httpx

    from tests.serving.conftest import TOKEN, register_servable, start_server, stop_server

    version = register_servable(tracking, model_name)  # the servers' default model: /ready follows it too
    replicas = [start_server(model_name, tmp_path / "1.log", wait_for="/health")]
    try:
        replicas.append(start_server(model_name, tmp_path / "2.log", wait_for="/health",
                                     NIGHTSHIFT_SERVER_TOKEN="another-token"))
        with pytest.raises(DeployRefused, match=rf"{replicas[1].url} refused the new model \(403\)") as refused:
            promote(tracking, model_name, decision_for(version, True), server_url=[r.url for r in replicas],
                    token=TOKEN)
        assert refused.value.swapped == [replicas[0].url] and not getattr(refused.value, "__notes__", [])
        assert alias_state(tracking, model_name) == AliasState(None, None)
        assert [(r.action, r.from_version, r.to_version) for r in read_audit(tracking, model_name)] == [
            ("rollback", version, None)]
        for replica in replicas:
            for route in ("ready", "version", f"models/{quote(model_name, safe='')}/ready"):
                answer = httpx.get(f"{replica.url}/{route}")
                assert answer.status_code == 503, (replica.url, route, answer.text)
                assert f"model '{model_name}' has no 'champion' alias yet" in answer.json()["message"]
        status = httpx.get(f"{replicas[0].url}/models").json()["models"][model_name]["status"]
        assert status.startswith("no champion yet: ")
    finally:
        for replica in replicas:
            stop_server(replica)


def _register(tracking, name: str, frame, label: str, gate_passed: bool | None = None) -> str:
    """Fit a small forest on `frame`, log it with its contract and register it under `name`."""
    from tasks.data.contract import infer_contract
    from tasks.data.datasets import infer_features
    from tasks.model.train import fit_pipeline

    spec = infer_features(frame, label)
    model = fit_pipeline(frame, spec, "random_forest", {"n_estimators": 20}, seed=0)
    run_id = start_run(tracking, "schema-tests")
    log_dict(tracking, run_id, infer_contract(frame, spec).model_dump(mode="json"), CONTRACT_ARTIFACT)
    return register_model_version(tracking, name, log_sklearn_model(tracking, run_id, model,
                                                                          frame[spec.features].head(3)))


def test_gate_refuses_a_challenger_with_another_input_schema_unless_allowed(tracking, model_name, tmp_path) -> None:
    """A challenger needing a column the live callers do not send, or predicting other classes (issue 12)."""
    from tasks.catalogue.config import GateConfig
    from tasks.data.demo import generate_demo, load_iris
    from tasks.registry.promote import gate_versions

    frame = generate_demo(3_000, seed=11)
    champion = _register(tracking, model_name, frame, "churned")
    wider = frame.assign(new_signal=frame["churned"] * 2.0 + 1.0)  # a new feed column, strongly predictive
    challenger = _register(tracking, model_name, wider, "churned")
    iris = _register(tracking, model_name, load_iris(), "species")
    holdout = generate_demo(1_500, seed=12).pipe(lambda f: f.assign(new_signal=f["churned"] * 2.0 + 1.0))

    refused = gate_versions(tracking, model_name, challenger, champion, holdout, GateConfig())
    assert not refused.promote and refused.schema_changes == [
        "requires column(s) the live model does not: 'new_signal'"]
    assert refused.reason.startswith(f"input schema differs from champion v{champion}: requires column(s)")
    assert "allow_schema_change" in refused.reason and "new_signal" in refused.markdown()
    allowed = gate_versions(tracking, model_name, challenger, champion, holdout, GateConfig(allow_schema_change=True))
    assert allowed.promote and allowed.champion is not None and allowed.schema_changes == refused.schema_changes

    # The decision is recorded on the version; a rerun with the override decides again instead of reusing it.
    from tasks.registry.promote import gate_challenger

    holdout_path = str(tmp_path / "holdout.parquet")
    holdout.to_parquet(holdout_path)
    assert not gate_challenger(tracking, model_name, challenger, champion, holdout_path, GateConfig()).promote
    assert gate_challenger(tracking, model_name, challenger, champion, holdout_path,
                           GateConfig(allow_schema_change=True)).promote

    other = gate_versions(tracking, model_name, iris, champion, load_iris(), GateConfig())
    assert not other.promote and any("predicts classes" in c for c in other.schema_changes)
    assert any("'sepal_length_cm'" in c for c in other.schema_changes)


def test_gate_judges_only_labeled_rows_however_typed(tracking, model_name) -> None:
    """A holdout read from a CSV with blank label cells (labels 0.0/1.0 and NaN) is gated on its labeled rows."""
    import numpy as np

    from tasks.catalogue.config import GateConfig
    from tasks.data.demo import generate_demo
    from tasks.registry.promote import gate_versions

    v1 = _register(tracking, model_name, generate_demo(2_000, seed=13), "churned")
    v2 = _register(tracking, model_name, generate_demo(2_000, seed=14), "churned")
    holdout = generate_demo(1_000, seed=15)
    holdout["churned"] = holdout["churned"].astype(float)
    holdout.loc[[3, 30, 300], "churned"] = np.nan
    decision = gate_versions(tracking, model_name, v2, v1, holdout, GateConfig(resamples=200))
    assert decision.rows == 997 and decision.champion is not None and decision.schema_changes == []
