"""Notifications (deployments/notify.py): the automations `make deploy` creates, their messages, and, on a real
`prefect server`, one webhook message per event naming the model, the night, the reason and the run's URL."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
import uuid
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from deployments.notify import (
    NAMES,
    NIGHT_FAILED,
    PREFIX,
    block_reference,
    configure_notifications,
    notification_automations,
)
from nightshift.events import (
    APPROVAL_WANTED,
    BELOW_FLOOR,
    DATA_MISSING,
    ESTIMATED_DROP,
    LABELS_SUSPECT,
    NOTIFY,
    PROMOTED,
    ROLLED_BACK,
    SHADOW_DISAGREES,
)
from nightshift.settings import PROJECT_ROOT, Settings
from tests.tasks.conftest import decision_for, logged, versions  # noqa: F401 - fixtures: registered versions

BLOCK_ID = uuid.UUID("00000000-0000-0000-0000-00000000b10c")
UI = "http://127.0.0.1:4200"


def _specs() -> dict[str, Any]:
    return {a.name: a for a in notification_automations(BLOCK_ID, UI)}


def test_one_automation_per_kind_of_news_each_firing_once_per_event() -> None:
    specs = _specs()
    assert set(specs) == {NIGHT_FAILED} | {f"{PREFIX}{NAMES[e]}" for e in NOTIFY}
    assert set(NOTIFY) == {DATA_MISSING, BELOW_FLOOR, LABELS_SUSPECT, ESTIMATED_DROP, PROMOTED, ROLLED_BACK,
                           APPROVAL_WANTED, SHADOW_DISAGREES}
    for automation in specs.values():
        trigger = automation.trigger
        assert (trigger.posture, trigger.threshold, trigger.within.total_seconds()) == ("Reactive", 1, 0)
        assert not trigger.for_each and automation.enabled  # immediate: every matching event fires, unbatched
        [action] = automation.actions
        assert (action.type, action.block_document_id) == ("send-notification", BLOCK_ID)
    failed = specs[NIGHT_FAILED].trigger
    assert failed.expect == {"prefect.flow-run.Failed", "prefect.flow-run.Crashed", "prefect.flow-run.TimedOut"}
    assert failed.match.model_dump() == {"prefect.resource.id": "prefect.flow-run.*"}
    assert failed.match_related.model_dump() == {"prefect.resource.role": "flow",
                                                 "prefect.resource.name": ["model-night", "nightly"]}
    for event in NOTIFY:
        trigger = specs[f"{PREFIX}{NAMES[event]}"].trigger
        assert trigger.expect == {event} and trigger.match.model_dump() == {"prefect.resource.id": "nightshift.model.*"}


def test_the_specs_render_the_same_every_time_and_the_server_accepts_their_templates() -> None:
    """Idempotent: deploying twice sends the same automations (updated by name); the server validates templates."""
    from prefect.server.events.actions import SendNotification

    first = [a.model_dump(mode="json") for a in notification_automations(BLOCK_ID, UI)]
    assert first == [a.model_dump(mode="json") for a in notification_automations(BLOCK_ID, UI)]
    for automation in first:
        [action] = automation["actions"]
        SendNotification.model_validate(action)  # raises on a template the server would refuse


def _render(template: str, **context: Any) -> str:
    import anyio
    from prefect.server.events.jinja_filters import all_filters
    from prefect.server.utilities.user_templates import register_user_template_filters, render_user_template

    register_user_template_filters(all_filters)
    return anyio.run(render_user_template, template, context)


def _event(name: str, payload: dict[str, Any], run_id: uuid.UUID | None, **labels: str) -> Any:
    from prefect.server.events.schemas.events import ReceivedEvent

    related = [{"prefect.resource.id": f"prefect.flow-run.{run_id}", "prefect.resource.role": "flow-run"}]
    return ReceivedEvent(occurred=datetime(2026, 11, 26, 2, 5, tzinfo=timezone.utc), event=name, payload=payload,
                         resource={"prefect.resource.id": "nightshift.model.churn", **labels},
                         related=related if run_id else [], id=uuid.uuid4())


def test_an_event_message_names_model_night_reason_and_the_run() -> None:
    from prefect.server.schemas.core import FlowRun

    run = FlowRun(id=uuid.uuid4(), flow_id=uuid.uuid4(), name="crafty-owl")
    automation = _specs()[f"{PREFIX}{NAMES[PROMOTED]}"]
    [action] = automation.actions
    event = _event(PROMOTED, {"model": "churn", "night": "2026-11-25", "reason": "beat the champion",
                              "from_version": "3", "to_version": "4"}, run.id, **{"nightshift.model.version": "4"})
    subject = _render(action.subject, event=event, flow_run=run)
    body = _render(action.body, event=event, flow_run=run)
    assert subject == "nightshift: churn: promoted"
    lines = body.splitlines()
    assert lines[:4] == ["model: churn (v4)", "night: 2026-11-25", "reason: beat the champion", "versions: v3 -> v4"]
    assert re.fullmatch(rf"run: http://\S+/runs/flow-run/{run.id}", lines[4])
    missing = _event(DATA_MISSING, {"model": "churn", "night": None, "reason": "no data for 2026-11-25"}, None)
    body = _render(_specs()[f"{PREFIX}{NAMES[DATA_MISSING]}"].actions[0].body, event=missing, flow_run=None)
    assert body.splitlines()[:4] == ["model: churn", "night: not given", "reason: no data for 2026-11-25",
                                     "run: none (emitted outside a flow run)"]


def test_a_failed_night_message_reads_the_run_parameters_and_state() -> None:
    from prefect.server.schemas.core import Flow, FlowRun
    from prefect.server.schemas.states import Failed

    run = FlowRun(id=uuid.uuid4(), flow_id=uuid.uuid4(), name="crafty-owl", state=Failed(message="boom"),
                  parameters={"params": {"model_name": "churn", "night": "2026-11-25"}})
    event = _event("prefect.flow-run.Failed", {"validated_state": {"type": "FAILED", "message": "it broke"}}, None,
                   **{"prefect.state-name": "Failed"})
    [action] = _specs()[NIGHT_FAILED].actions
    context = {"event": event, "flow_run": run, "flow": Flow(name="model-night")}
    assert _render(action.subject, **context) == "nightshift: churn: night Failed"
    lines = _render(action.body, **context).splitlines()
    assert lines[:3] == ["model: churn", "night: 2026-11-25", "reason: it broke"]
    assert lines[3].endswith(f"/runs/flow-run/{run.id}") and lines[4].startswith("flow run: model-night/crafty-owl")
    run.parameters = {"params": {"model_name": None}}  # the nightly flow on its default model, no night given
    lines = _render(action.body, **context).splitlines()
    assert lines[0] == "model: the default model (NIGHTSHIFT_MODEL_NAME)" and lines[1].startswith("night: not given")


def test_the_setting_names_a_block_by_type_and_name_and_empty_means_off() -> None:
    assert block_reference(Settings().notify_block) == ("custom-webhook", "nightshift-alerts")
    assert block_reference("slack-webhook/team") == ("slack-webhook", "team")
    assert block_reference("alerts") == ("custom-webhook", "alerts")
    assert block_reference("") is None and block_reference(None) is None and block_reference("  ") is None


def _notify_automations() -> dict[str, int]:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        names = [a.name for a in client.read_automations() if a.name.startswith(PREFIX)]
    return {n: names.count(n) for n in names}


@pytest.mark.usefixtures("prefect_harness")
def test_without_a_block_notifications_are_off_and_with_one_deploying_twice_keeps_one_of_each() -> None:
    from prefect.blocks.notifications import CustomWebhookNotificationBlock

    name = f"t-{uuid.uuid4().hex[:8]}"
    assert configure_notifications(Settings(notify_block="")) == "notifications off: NIGHTSHIFT_NOTIFY_BLOCK is empty"
    off = configure_notifications(Settings(notify_block=f"custom-webhook/{name}"))
    assert off.startswith(f"notifications off: no notification block 'custom-webhook/{name}' on the server")
    assert _notify_automations() == {}
    CustomWebhookNotificationBlock(name=name, url="http://127.0.0.1:9/never").save(name)
    settings = Settings(notify_block=f"custom-webhook/{name}")
    try:
        assert configure_notifications(settings).endswith("9 automations (created 9)")
        assert configure_notifications(settings).endswith("9 automations (updated 9)")
        assert _notify_automations() == {n: 1 for n in _specs()}
    finally:
        removed = configure_notifications(Settings(notify_block=""))
    assert removed.startswith("notifications off: NIGHTSHIFT_NOTIFY_BLOCK is empty; removed ")
    assert _notify_automations() == {}


@pytest.mark.usefixtures("prefect_harness")
def test_promote_tells_of_every_promotion_and_rollback_and_a_refused_redeploy(tracking, versions, monkeypatch) -> None:
    """promote() emits nightshift.model.promoted / .rolled_back: a promotion, an operator's rollback, and a redeploy
    the server refused (the move undone)."""
    from datetime import date

    import nightshift.events
    from tasks.registry.promote import DeployRefused, promote
    from tasks.registry.versions import move_champion
    from tests.conftest import free_port

    told: list[tuple[str, str, dict[str, Any]]] = []
    monkeypatch.setattr(nightshift.events, "emit_model_event", lambda event, name, **kw: told.append(
        (event, name, kw)) or event)
    move_champion(tracking, versions, "1")
    promote(tracking, versions, decision_for("2", True, "1"), server_url=None, token=None, night=date(2026, 11, 25))
    promote(tracking, versions, decision_for("1", True), server_url=None, token=None, action="rollback",
            expected_champion="2", reason="operator: v2 misbehaves")
    with pytest.raises(DeployRefused):
        promote(tracking, versions, decision_for("3", True, "1"), server_url=f"http://127.0.0.1:{free_port()}",
                token=None)
    assert [(e, n, kw["version"], kw["payload"]["from_version"], kw["payload"]["to_version"], kw["payload"]["action"])
            for e, n, kw in told] == [(PROMOTED, versions, "2", "1", "2", "promote"),
                                      (ROLLED_BACK, versions, "1", "2", "1", "rollback"),
                                      (ROLLED_BACK, versions, "1", "3", "1", "rollback")]
    promoted, rolled_back, refused = (kw for _, _, kw in told)
    assert (promoted["reason"], promoted["night"]) == ("test decision", date(2026, 11, 25))
    assert (promoted["payload"]["metric"], promoted["payload"]["challenger"], promoted["payload"]["champion"]) == (
        "roc_auc", 0.8, 0.7)
    assert rolled_back["reason"] == "operator: v2 misbehaves" and rolled_back["night"] is None  # outside a run
    assert refused["reason"].startswith("v3 was made champion, then rolled back: redeploy refused: model server")


# ------------------------------------------------------------------------------------------------------------------
# On a real `prefect server`: `python -m deployments.notify`, make deploy's code path, a loopback webhook receiver
# ------------------------------------------------------------------------------------------------------------------

NIGHT = "2026-11-25"
CASES = {DATA_MISSING: "no data for 2026-11-25 at /landing/churn/2026-11-25.parquet",
         BELOW_FLOOR: "live roc_auc 0.51 is under the floor 0.55",
         LABELS_SUSPECT: "label balance 0.93 vs the reference's 0.20: the day's labels are kept out",
         ESTIMATED_DROP: "estimated roc_auc 0.71 vs reference 0.84: drop +0.13, beyond the allowed 0.05",
         PROMOTED: "challenger v4 beat champion v3 on roc_auc (0.88 vs 0.84)",
         ROLLED_BACK: "v4 was made champion, then rolled back: redeploy refused",
         APPROVAL_WANTED: "a close call: the improvement's CI -0.004..+0.021 straddles the margin 0.0"}

_EMIT = """
import json, sys
from datetime import date
from prefect import flow
from prefect.events.worker import EventsWorker
from prefect.runtime import flow_run
from nightshift import events
from flows.model_night import ModelNightParams, model_night

cases, drift_model, failing_model = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]

@flow(name="it-notify-events")
def emit_all() -> str:
    for event, (model, reason) in cases.items():
        versions = {"from_version": "3", "to_version": "4"} if event.startswith("nightshift.model.") else {}
        events.emit_model_event(event, model, reason=reason, version="4", night=date(2026, 11, 25), payload=versions)
    events.emit_model_event(events.DRIFT, drift_model, reason="drift is not a notification", night="2026-11-25")
    return str(flow_run.get_id())

emitter = emit_all()
state = model_night(ModelNightParams(model_name=failing_model, night=date(2026, 11, 25)), return_state=True)
EventsWorker.drain_all()
print(json.dumps({"emitter": emitter, "failed": str(state.state_details.flow_run_id), "state": state.type.value}))
"""


class _Receiver(BaseHTTPRequestHandler):
    messages: list[dict[str, Any]] = []
    lock = threading.Lock()

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        with self.lock:
            self.messages.append({"path": self.path, "json": json.loads(body), "raw": body.decode()})
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def webhook():
    from tests.conftest import free_port

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), _Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook/{uuid.uuid4().hex[:8]}", _Receiver.messages
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    from tests.catalogues import two_demo_models, write_catalogue
    from tests.deployments.prefect_stack import start_stack

    tmp = tmp_path_factory.mktemp("prefect-notify")
    models = two_demo_models("nt-")
    for model in models:
        model["schedule"] = {"cron": "0 0 1 1 *", "timezone": "UTC"}  # never meets a real run
    (tmp / "catalogue").mkdir()
    stack = start_stack(tmp, NIGHTSHIFT_CATALOGUE_PATH=str(write_catalogue(tmp / "catalogue", models)),
                        NIGHTSHIFT_STATE_DIR=str(tmp / "state"), NIGHTSHIFT_WORK_POOL="it-notify")
    yield stack
    stack.stop()  # the server's whole process group


def _run(stack: Any, *args: str, timeout: float = 300) -> str:
    out = subprocess.run([sys.executable, *args], env=stack.env, cwd=PROJECT_ROOT, capture_output=True, text=True,
                         timeout=timeout)
    assert out.returncode == 0, f"{args} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out.stdout


def _wait_for(messages: list[dict[str, Any]], count: int, timeout: float) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and len(messages) < count:
        time.sleep(0.5)
    return list(messages)


@pytest.mark.integration
@pytest.mark.timeout(600)
def test_every_event_and_a_failed_night_reach_the_webhook_once(stack, webhook) -> None:
    url, messages = webhook
    out = _run(stack, "-m", "deployments.notify", "--webhook-url", url, "--test")
    assert "saved notification block 'custom-webhook/nightshift-alerts'" in out
    assert "notifications on through block 'custom-webhook/nightshift-alerts': 9 automations (created 9)" in out
    [test_message] = _wait_for(messages, 1, 30)
    assert test_message["json"]["text"].startswith("nightshift: test message\n")
    block = stack.api("GET", "/block_types/slug/custom-webhook/block_documents/name/nightshift-alerts")
    assert url not in json.dumps(block)  # the URL is the block's secret: masked on the API and in the UI

    out = _run(stack, "-m", "deployments.deploy")  # make deploy: the automations updated by name, not duplicated
    assert "notifications on through block 'custom-webhook/nightshift-alerts': 9 automations (updated 9)" in out
    automations = [a["name"] for a in stack.api("POST", "/automations/filter", json={}) if a["name"].startswith(PREFIX)]
    assert sorted(automations) == sorted(_specs())

    messages.clear()
    models = {event: f"nt-{NAMES[event]}-{uuid.uuid4().hex[:4]}" for event in CASES}
    cases = {event: [models[event], reason] for event, reason in CASES.items()}
    started = time.monotonic()
    ran = json.loads(_run(stack, "-c", _EMIT, json.dumps(cases), "nt-drift", "nt-not-in-the-catalogue").splitlines()[-1])
    assert ran["state"] == "FAILED"
    received = _wait_for(messages, len(CASES) + 1, 120)
    seen = time.monotonic() - started
    time.sleep(5.0)  # a duplicate, or a message for the drift event, would arrive by now
    received = list(messages)
    texts = [m["json"]["text"] for m in received]
    (stack.logs / "messages.jsonl").write_text("".join(m["raw"] + "\n" for m in received))  # as received
    assert len(received) == len(CASES) + 1, texts
    assert not [t for t in texts if "nt-drift" in t]
    ui = stack.ui_url
    for event, reason in CASES.items():
        [text] = [t for t in texts if f"model: {models[event]} (v4)\n" in t]
        assert text.startswith(f"nightshift: {models[event]}: ")
        assert f"\nnight: {NIGHT}\nreason: {reason}\n" in text
        assert f"\nrun: {ui}/runs/flow-run/{ran['emitter']}\n" in text
        assert f"\nevent: {event} at " in text
    [failed] = [t for t in texts if "nt-not-in-the-catalogue" in t]
    assert failed.startswith("nightshift: nt-not-in-the-catalogue: night Failed\n")
    assert f"\nnight: {NIGHT}\n" in failed and "\nreason: Flow run encountered an exception" in failed
    assert f"\nrun: {ui}/runs/flow-run/{ran['failed']}\n" in failed and "\nflow run: model-night/" in failed
    print(f"{len(received)} messages, the last {seen:.1f} s after the flows started; as received, e.g.:")
    print("\n".join(m["raw"] for m in received if models[PROMOTED] in m["raw"] or "nt-not-in" in m["raw"]))
