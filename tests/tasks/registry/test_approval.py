"""A person decides close calls (tasks/registry/approval.py): who is asked, what each answer does to the champion
and the audit trail, that a rerun never asks again, and the pause itself (in-process, on the session's harness)."""

from __future__ import annotations

import threading
import time
from functools import partial
from uuid import UUID

import pytest
from prefect import flow

import nightshift.events
from flows import nightly as nightly_module
from flows.nightly import NightlyResult, gate_and_promote
from tasks.catalogue.config import GateConfig
from tasks.model.gate import GateDecision
from tasks.registry import approval as approval_module
from tasks.registry.approval import (
    ANSWER_TAG,
    ApprovalAnswer,
    RecordedAnswer,
    verdict,
    wait_for_answer,
    wants_approval,
)
from tasks.registry.audit import read_audit
from tasks.registry.versions import CHAMPION, get_alias, move_champion, version_tags

pytestmark = pytest.mark.usefixtures("prefect_harness")  # the night's tasks, the approval subflow, promote()
ON = GateConfig(approval="close-calls", approval_timeout_hours=12)
STRADDLES = "the improvement's CI -0.0100..+0.0300 straddles the margin 0.0"


def close_call(promote: bool = False, close: list[str] | None = None) -> GateDecision:
    """v2 against champion v1: +0.01, CI straddling 0 (the gate keeps the champion unless told otherwise)."""
    reason = ("not measurably better: improvement +0.0100 (95% CI -0.0100..+0.0300), needs CI low > 0.0"
              if not promote else "both below the floor 0.9: the better of two models under the floor replaces it")
    return GateDecision(promote=promote, reason=reason, metric="roc_auc", rows=500, challenger=0.81, champion=0.80,
                        difference=0.01, ci_low=-0.01, ci_high=0.03, confidence=0.95, min_margin=0.0,
                        absolute_floor=0.6, resamples=200, challenger_version="2", champion_version="1",
                        close_call=[STRADDLES] if close is None else close)


@pytest.fixture
def night(tracking, versions, monkeypatch):
    """Run gate_and_promote for (v2, champion v1) with the gate's decision given and the pause replaced: returns
    run(decision, gate, answer) → (NightlyResult, how many times a person was asked, events emitted)."""
    name = versions
    move_champion(tracking, name, "1")
    asked, events = [], []
    emit = nightshift.events.emit_model_event
    monkeypatch.setattr(nightshift.events, "emit_model_event",
                        lambda event, *a, **kw: events.append((event, kw)) or emit(event, *a, **kw))

    def run(decision: GateDecision, gate: GateConfig, answer: ApprovalAnswer | None) -> NightlyResult:
        monkeypatch.setattr(nightly_module, "gate_challenger_task", lambda *a, **kw: decision)
        monkeypatch.setattr(approval_module, "wait_for_answer", lambda form, seconds: asked.append(seconds) or answer)
        result = partial(NightlyResult, model_name=name, batch="b", rows=500, validation="ok", drift_share=None,
                         alert_reasons=[], retrain_reasons=["forced"], champion_before="1", report=None)
        return flow(name="night-under-test")(gate_and_promote)(tracking, name, "2", "1", "unused", gate, "fp", result)

    return name, run, asked, events


def test_only_a_close_call_with_approval_on_asks() -> None:
    assert wants_approval(ON, close_call())
    assert not wants_approval(GateConfig(), close_call())  # off by default
    assert not wants_approval(ON, close_call(close=[]))  # a clear decision
    assert GateConfig().approval == "off" and GateConfig().approval_timeout_hours == 12


def test_an_answer_turns_the_gates_decision_and_keeps_its_reason() -> None:
    gate = close_call()
    approved = verdict(gate, RecordedAnswer(decision="approve", reason="the new features are worth it", who="alice",
                                            champion_version="1", time="t"))
    assert approved.decision.promote and approved.by == "alice"
    assert approved.decision.reason == f"approved by alice: the new features are worth it (gate: {gate.reason})"
    assert approved.decision.model_dump(exclude={"promote", "reason"}) == gate.model_dump(exclude={"promote", "reason"})
    refused = verdict(close_call(promote=True), RecordedAnswer(decision="refuse", reason="too thin", who="bob",
                                                               champion_version="1", time="t"))
    assert not refused.decision.promote and refused.decision.reason.startswith("refused by bob: too thin (gate: ")
    silent = verdict(gate, RecordedAnswer(decision="refuse", reason="no answer within 12 h: the champion stays",
                                          champion_version="1", time="t"))
    assert not silent.decision.promote and silent.by is None


def test_approved_close_call_is_promoted_audited_with_who_and_never_asked_again(tracking, night) -> None:
    name, run, asked, events = night
    result = run(close_call(), ON, ApprovalAnswer(decision="approve", reason="worth it", who="alice"))
    assert asked == [12 * 3600]  # asked once, with the configured timeout
    assert (result.action, result.champion_after, get_alias(tracking, name, CHAMPION)) == ("promoted", "2", "2")
    record = read_audit(tracking, name)[-1]
    assert (record.action, record.by, record.from_version, record.to_version) == ("promote", "alice", "1", "2")
    assert record.reason.startswith("approved by alice: worth it (gate: not measurably better")
    [(_, wanted)] = [(e, kw) for e, kw in events if e == nightshift.events.APPROVAL_WANTED]
    assert wanted["version"] == "2" and STRADDLES in wanted["reason"] and "within 12 h" in wanted["reason"]
    payload = wanted["payload"]
    assert (payload["challenger_version"], payload["champion_version"], payload["ci_low"], payload["ci_high"],
            payload["challenger"], payload["champion"]) == ("2", "1", -0.01, 0.03, 0.81, 0.80)
    assert RecordedAnswer.model_validate_json(version_tags(tracking, name, "2")[ANSWER_TAG]).who == "alice"

    again = run(close_call(), ON, None)  # a rerun: the recorded answer, no second question, no second promotion
    assert asked == [12 * 3600] and again.action == "already-promoted"
    assert len([r for r in read_audit(tracking, name) if r.action == "promote"]) == 1
    # A rollback may bring back a version a person approved over the gate's refusal (and only then).
    from tasks.registry.approval import passed
    from tasks.registry.promote import record_decision, recorded_decision

    record_decision(tracking, name, "2", close_call())
    assert passed(tracking, name, recorded_decision(tracking, name, "2")).promote
    assert not passed(tracking, name, close_call().model_copy(update={"champion_version": "7"})).promote


def test_refused_close_call_keeps_the_champion_and_is_audited_with_who(tracking, night) -> None:
    name, run, asked, _ = night
    result = run(close_call(promote=True), ON, ApprovalAnswer(decision="refuse", reason="wait for Monday", who="bob"))
    assert (result.action, result.champion_after, get_alias(tracking, name, CHAMPION)) == ("refused", "1", "1")
    record = read_audit(tracking, name)[-1]
    assert (record.action, record.by, record.to_version) == ("refuse", "bob", "2")
    assert record.reason.startswith("refused by bob: wait for Monday (gate: both below the floor")
    again = run(close_call(promote=True), ON, None)
    assert len(asked) == 1 and again.action == "already-decided" and len(read_audit(tracking, name)) == 1


def test_no_answer_in_time_keeps_the_champion_even_when_the_gate_would_promote(tracking, night) -> None:
    name, run, asked, _ = night
    result = run(close_call(promote=True), ON.model_copy(update={"approval_timeout_hours": 0.5}), None)
    assert asked == [1800] and (result.action, get_alias(tracking, name, CHAMPION)) == ("refused", "1")
    [record] = read_audit(tracking, name)
    assert (record.action, record.by) == ("refuse", None)
    assert record.reason.startswith("no answer within 0.5 h: the champion stays (gate: both below the floor")


def test_approval_off_never_pauses_and_the_gate_decides_as_before(tracking, night) -> None:
    name, run, asked, events = night
    result = run(close_call(), GateConfig(), ApprovalAnswer(decision="approve", reason="x", who="alice"))
    assert asked == [] and result.action == "refused" and get_alias(tracking, name, CHAMPION) == "1"
    [record] = read_audit(tracking, name)
    assert record.by is None and record.reason == close_call().reason
    assert nightshift.events.APPROVAL_WANTED not in [e for e, _ in events]


@pytest.mark.integration  # a real pause on the harness's server: seconds of waiting
def test_the_pause_ends_at_the_deadline_by_itself() -> None:
    """The real pause (in-process): nobody answers, the watchdog answers for the deadline, the run completes."""
    @flow(name="approval-deadline-under-test")
    def waits() -> ApprovalAnswer | None:
        return wait_for_answer(ApprovalAnswer, 3)

    started = time.monotonic()
    state = waits(return_state=True)
    assert state.is_completed() and state.result() is None and time.monotonic() - started < 60


@pytest.mark.integration
def test_the_pause_returns_the_answer_given_through_the_api() -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName, FlowRunFilter, FlowRunFilterState
    from prefect.client.schemas.filters import FlowRunFilterStateType
    from prefect.client.schemas.objects import StateType

    got: list[object] = []

    @flow(name="approval-answer-under-test")
    def waits() -> None:
        got.append(wait_for_answer(ApprovalAnswer, 120))

    thread = threading.Thread(target=waits)
    thread.start()
    with get_client(sync_client=True) as client:
        deadline = time.monotonic() + 60
        paused = []
        while not paused and time.monotonic() < deadline:
            time.sleep(0.5)
            paused = client.read_flow_runs(
                flow_filter=FlowFilter(name=FlowFilterName(any_=["approval-answer-under-test"])),
                flow_run_filter=FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(
                    any_=[StateType.PAUSED]))))
        assert paused, "the flow never paused"
        bad = client.resume_flow_run(paused[0].id, run_input={"decision": "maybe", "reason": "x", "who": "carol"})
        assert bad.status.value == "REJECT"  # the server checks the form: approve or refuse only
        client.resume_flow_run(UUID(str(paused[0].id)), run_input={"decision": "approve", "reason": "ok",
                                                                   "who": "carol"})
    thread.join(timeout=60)
    assert [(a.decision, a.who) for a in got] == [("approve", "carol")]
