"""A person decides close calls, for real: `prefect server start`, make deploy's deployments, a process worker.
Nights of `nightly/nightly` whose gate is a close call pause an `approval` subflow; the test answers through the
Prefect API as a person would (approve, refuse) or leaves it to the deadline, and checks the champion in MLflow and
the audit trail."""

from __future__ import annotations

import json
import re
import time
import uuid
from typing import Any

import psutil
import pytest

from tasks.registry.audit import AuditRecord, read_audit
from tasks.registry.versions import CHAMPION, get_alias
from tests.catalogues import two_demo_models, write_catalogue
from tests.deployments.prefect_stack import PrefectStack, deploy_and_start_worker, start_stack

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1200)]
POOL = "it-approval"


def _stop_tree(stack: PrefectStack) -> None:
    """Every process the stack started and everything under them, children first (the 3.9 process worker may
    ignore SIGTERM, and its flow-run processes run in their own sessions and outlive it)."""
    tree = []
    for proc in stack.processes:
        try:
            tree += psutil.Process(proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            pass
    for child in reversed(tree):
        try:
            child.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(tree, timeout=30)
    stack.stop()


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    base = tmp_path_factory.mktemp("prefect-approval")
    models = two_demo_models("ap-")
    for model in models:  # never a scheduled night during the test
        model["schedule"] = {"cron": "0 0 1 1 *", "timezone": "UTC"}
    (base / "catalogue").mkdir()
    stack = start_stack(base, NIGHTSHIFT_CATALOGUE_PATH=str(write_catalogue(base / "catalogue", models)),
                        PREFECT_WORKER_QUERY_SECONDS="2", PREFECT_LOGGING_LEVEL="INFO")
    try:
        deploy_and_start_worker(stack, POOL)
        yield stack
    finally:
        _stop_tree(stack)


def _night(name: str, day: int, **gate: Any) -> dict[str, Any]:
    """A small forced night on demo day `day`; `gate` on top of a cheap gate."""
    return {"model_name": name, "batches": [{"source": "demo", "day": day, "rows": 3000}], "force_retrain": True,
            "reference": {"source": "demo", "day": 0, "rows": 4000}, "window": 1, "cv_folds": 2,
            "estimator": {"kind": "random_forest", "param_grid": {"n_estimators": [20], "max_depth": [6]}},
            "gate": {"resamples": 200, **gate}}


def _close_call(name: str, day: int, timeout_hours: float = 0.25) -> dict[str, Any]:
    """A floor above both models: the champion misses it, so the decision is a close call whatever the data."""
    return _night(name, day, absolute_floor=0.99, approval="close-calls", approval_timeout_hours=timeout_hours)


def _start(stack: PrefectStack, params: dict[str, Any]) -> str:
    out = stack.cli("deployment", "run", "nightly/nightly", "--params", json.dumps({"params": params}))
    return re.search(r"UUID:\s*([0-9a-f-]{36})", out).group(1)


def _finished(stack: PrefectStack, run_id: str) -> dict[str, Any]:
    run = stack.wait_for_run(run_id, timeout=480)
    assert run["state_type"] == "COMPLETED", (run["state"], (stack.logs / "worker.log").read_text()[-4000:])
    return run


def _approval_runs(stack: PrefectStack, name: str, version: str) -> list[dict[str, Any]]:
    return stack.api("POST", "/flow_runs/filter", json={"flow_runs": {"name": {"any_": [f"{name}-v{version}"]}}})


def _paused_approval(stack: PrefectStack, night_id: str, name: str, version: str) -> dict[str, Any]:
    """The night's approval subflow once it is paused, waiting for the form."""
    deadline = time.monotonic() + 480
    while time.monotonic() < deadline:
        runs = [r for r in _approval_runs(stack, name, version) if r["state_type"] == "PAUSED"]
        if runs:
            return runs[0]
        night = stack.api("GET", f"/flow_runs/{night_id}")
        assert night["state_type"] not in {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}, night["state"]
        time.sleep(1)
    raise TimeoutError(f"no paused approval run for {name} v{version}; logs in {stack.logs}")


def _approval_event(stack: PrefectStack, approval_id: str) -> dict[str, Any]:
    """The nightshift.approval.requested event related to the approval run (what the notifications see)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        page = stack.api("POST", "/events/filter", json={"filter": {
            "event": {"name": ["nightshift.approval.requested"]},
            "related": {"id": [f"prefect.flow-run.{approval_id}"]}, "occurred": {"since": "2020-01-01T00:00:00Z"}}})
        if page["events"]:
            return page["events"][0]
        time.sleep(1)
    raise TimeoutError("no nightshift.approval.requested event")


def _answer(stack: PrefectStack, approval_id: str, **answer: str) -> None:
    """Submit the form through the Prefect API, as the UI's Resume does."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: stack.api_url}), get_client(sync_client=True) as client:
        result = client.resume_flow_run(uuid.UUID(approval_id), run_input=answer)
    assert result.status.value == "ACCEPT", result


def _last(tracking, name: str) -> AuditRecord:
    return read_audit(tracking, name)[-1]


def test_close_calls_wait_for_a_person_and_the_answer_decides(stack: PrefectStack, tracking) -> None:
    name = f"ap-{uuid.uuid4().hex[:6]}"
    _finished(stack, _start(stack, _night(name, 1, approval="close-calls")))  # no champion: no close call
    assert get_alias(tracking, name, CHAMPION) == "1" and _approval_runs(stack, name, "1") == []

    # Approve: the challenger the gate kept out becomes champion; the audit record names who.
    night = _start(stack, _close_call(name, 2))
    approval = _paused_approval(stack, night, name, "2")
    event = _approval_event(stack, approval["id"])
    payload = event["payload"]
    assert event["resource"]["prefect.resource.id"] == f"nightshift.model.{name}"
    assert (payload["challenger_version"], payload["champion_version"]) == ("2", "1")
    assert any(c.startswith("the champion misses the floor 0.99") for c in payload["close_call"])
    assert payload["ci_low"] <= payload["ci_high"] and payload["night_flow_run_id"] == night
    assert payload["reason"].startswith(f"close call for {name} v2 vs champion v1: ")
    _answer(stack, approval["id"], decision="approve", reason="better recall where it matters", who="alice")
    _finished(stack, night)
    assert get_alias(tracking, name, CHAMPION) == "2"
    record = _last(tracking, name)
    assert (record.action, record.by, record.from_version, record.to_version) == ("promote", "alice", "1", "2")
    assert record.reason.startswith("approved by alice: better recall where it matters (gate: ")
    assert record.flow_run_id == night

    # The same night again: the recorded answer stands, nobody is asked twice, nothing is promoted twice.
    _finished(stack, _start(stack, _close_call(name, 2)))
    assert len(_approval_runs(stack, name, "2")) == 1
    assert [r.to_version for r in read_audit(tracking, name) if r.action == "promote"] == ["1", "2"]

    # Refuse: the champion stays, the refusal names who.
    night = _start(stack, _close_call(name, 3))
    approval = _paused_approval(stack, night, name, "3")
    _answer(stack, approval["id"], decision="refuse", reason="wait for the pricing change", who="bob")
    _finished(stack, night)
    assert get_alias(tracking, name, CHAMPION) == "2"
    record = _last(tracking, name)
    assert (record.action, record.by, record.from_version, record.to_version) == ("refuse", "bob", "2", "3")
    assert record.reason.startswith("refused by bob: wait for the pricing change (gate: ")

    # Nobody answers: at the deadline (about 14 s here) the champion stays and the audit says so.
    night = _start(stack, _close_call(name, 4, timeout_hours=0.004))
    approval = _paused_approval(stack, night, name, "4")
    _finished(stack, night)
    assert stack.api("GET", f"/flow_runs/{approval['id']}")["state_type"] == "COMPLETED"
    assert get_alias(tracking, name, CHAMPION) == "2"
    record = _last(tracking, name)
    assert (record.action, record.by, record.to_version) == ("refuse", None, "4")
    assert record.reason.startswith("no answer within 0.004 h: the champion stays (gate: ")
