"""A person decides close calls: with the gate's `approval: close-calls`, a borderline decision (the improvement's CI
straddles the margin, a schema change is needed, the champion is under the floor) waits for a person.

The wait is an `approval` subflow of the night that pauses itself with `pause_flow_run(wait_for_input=…)`: the
Prefect UI shows its typed approve/refuse form, the API takes the same answer (`resume_flow_run(id, run_input=…)`).
Only the subflow pauses, never the night itself: a paused deployment run gives up its concurrency lease and Prefect
3.9 cancels it at the next lease renewal (about 4 minutes), and a suspended one cannot run code at its deadline nor
be a subflow or a run without a deployment (docs/deployments.md, "Approval of close calls"). At the deadline a
watchdog thread answers the form itself ("no answer within N h: the champion stays"), so the wait ends as one clean
answer whatever happens. The answer is recorded on the challenger version before anything acts on it: a rerun of the
night finds it and never asks again.
"""

from __future__ import annotations

import threading
from datetime import date, datetime, timedelta, timezone
from typing import Literal

from prefect import flow, get_run_logger, task
from prefect.input import RunInput
from pydantic import BaseModel, Field

from tasks.catalogue.config import GateConfig
from tasks.model.gate import GateDecision
from tasks.registry.locks import model_lock
from tasks.registry.store import RETRY, TrackingConfig
from tasks.registry.versions import tag_version, version_tags

ANSWER_TAG = "nightshift.approval.answer"  # on the challenger version: the answer for (challenger, champion)
DEADLINE = "nightshift (deadline)"  # who answers the form when nobody did in time (never recorded as `by`)


class ApprovalAnswer(RunInput):
    """A person's answer to a close call: the form of a paused `approval` run in the Prefect UI."""

    decision: Literal["approve", "refuse"] = Field(
        title="Decision", description="approve: the challenger replaces the champion; refuse: the champion stays.")
    reason: str = Field(min_length=1, max_length=1000, title="Reason",
                        description="Why, in a sentence: it goes into the audit trail.")
    who: str = Field(min_length=1, max_length=100, title="Your name",
                     description="Who decides: recorded as the audit record's `by`.")


class RecordedAnswer(BaseModel):
    """The answer to one close call, as recorded on the challenger version (the pair: it and `champion_version`)."""

    decision: Literal["approve", "refuse"]
    reason: str
    who: str | None = Field(None, description="Who answered; None: nobody did before the deadline.")
    champion_version: str | None
    time: str
    approval_run: str | None = Field(None, description="The Prefect flow run that asked.")


class Verdict(BaseModel):
    """What a night acts on: the gate's decision, or a copy with a person's (or the deadline's) verdict."""

    decision: GateDecision
    by: str | None = None
    answer: RecordedAnswer | None = None


def wants_approval(gate: GateConfig, decision: GateDecision) -> bool:
    """A person decides: approval is on and the gate found a close call."""
    return gate.approval == "close-calls" and bool(decision.close_call)


def verdict(decision: GateDecision, answer: RecordedAnswer) -> Verdict:
    """The gate's decision turned by the answer: approved → promotable (even when the gate refused it), refused or
    unanswered → kept; the reason names who and keeps the gate's own."""
    if answer.who is None:
        reason = f"{answer.reason} (gate: {decision.reason})"
    else:
        word = "approved" if answer.decision == "approve" else "refused"
        reason = f"{word} by {answer.who}: {answer.reason} (gate: {decision.reason})"
    decided = decision.model_copy(update={"promote": answer.decision == "approve", "reason": reason})
    return Verdict(decision=decided, by=answer.who, answer=answer)


def recorded_answer(cfg: TrackingConfig, name: str, decision: GateDecision) -> RecordedAnswer | None:
    """The answer recorded for this (challenger, champion) pair; None if none (or one about another champion)."""
    raw = version_tags(cfg, name, str(decision.challenger_version)).get(ANSWER_TAG)
    answer = RecordedAnswer.model_validate_json(raw) if raw else None
    return answer if answer is not None and answer.champion_version == decision.champion_version else None


def passed(cfg: TrackingConfig, name: str, decision: GateDecision | None) -> GateDecision | None:
    """A version's recorded gate decision as it stands: promotable when the gate passed it or a person approved it
    (a rollback may bring back either); None when it was never gated."""
    if decision is None or decision.promote:
        return decision
    answer = recorded_answer(cfg, name, decision)
    return verdict(decision, answer).decision if answer is not None and answer.decision == "approve" else decision


def record_answer(cfg: TrackingConfig, name: str, decision: GateDecision, answer: RecordedAnswer) -> RecordedAnswer:
    """Record the answer on the challenger version, unless one for the pair is there already (two runs asked at
    once: the first answer wins); returns the answer that stands."""
    with model_lock(cfg, name, "approval"):
        earlier = recorded_answer(cfg, name, decision)
        if earlier is not None:
            return earlier
        tag_version(cfg, name, str(decision.challenger_version), {ANSWER_TAG: answer.model_dump_json()})
        return answer


def describe(name: str, d: GateDecision, timeout_hours: float) -> str:
    """The question in one sentence: the close call, the numbers, what the gate says, the deadline."""
    numbers = (f"{d.metric} {d.challenger:.4f} vs {d.champion:.4f}, improvement {d.difference:+.4f} "
               f"({d.confidence:.0%} CI {d.ci_low:+.4f}..{d.ci_high:+.4f}, margin {d.min_margin})"
               if d.champion is not None and d.challenger is not None and d.difference is not None
               else f"{d.metric} {'-' if d.challenger is None else f'{d.challenger:.4f}'}")
    return (f"close call for {name} v{d.challenger_version} vs champion v{d.champion_version}: "
            f"{'; '.join(d.close_call)}; {numbers}; the gate says {'promote' if d.promote else 'keep'} "
            f"({d.reason}); approve or refuse within {timeout_hours:g} h, else the champion stays")


def _tell(name: str, d: GateDecision, timeout_hours: float, night: date | None) -> str:
    """Emit nightshift.approval.requested about the model, related to this (paused) approval run."""
    from prefect.runtime import flow_run

    from nightshift.events import APPROVAL_WANTED, emit_model_event

    deadline = datetime.now(timezone.utc) + timedelta(hours=timeout_hours)
    return emit_model_event(APPROVAL_WANTED, name, version=d.challenger_version, night=night,
                            reason=describe(name, d, timeout_hours), payload={
                                **d.model_dump(include={"challenger_version", "champion_version", "metric",
                                                        "challenger", "champion", "difference", "ci_low", "ci_high",
                                                        "confidence", "min_margin", "absolute_floor", "close_call",
                                                        "schema_changes", "promote"}),
                                "gate_reason": d.reason, "timeout_hours": timeout_hours,
                                "deadline": deadline.isoformat(), "approval_flow_run_id": str(flow_run.get_id()),
                                "night_flow_run_id": str(flow_run.get_parent_flow_run_id() or "") or None})


def wait_for_answer(form: type[ApprovalAnswer], timeout_seconds: float) -> ApprovalAnswer | None:
    """Pause the current flow run until its form is submitted; None when nobody did within `timeout_seconds`.

    At the deadline a watchdog thread resumes the run with the form answered as `DEADLINE`, so the pause ends
    through the API like any answer (whoever resumes first wins, the server decides). Prefect's own pause timeout
    is later still, a backstop should the API be unreachable at the deadline."""
    from uuid import UUID

    from prefect.exceptions import FlowPauseTimeout
    from prefect.flow_runs import pause_flow_run, resume_flow_run
    from prefect.runtime import flow_run

    run_id, expired, log = UUID(str(flow_run.get_id())), threading.Event(), get_run_logger()

    def deadline() -> None:  # in the watchdog's thread: no run context there, hence `log` from the caller's
        try:
            resume_flow_run(run_id, run_input={"decision": "refuse", "reason": "no answer", "who": DEADLINE})
            expired.set()
        except Exception as exc:  # answered meanwhile (not paused any more), or the API is down: the backstop ends it
            log.info("Approval deadline: not resumed by nightshift (%s)", exc)

    watchdog = threading.Timer(timeout_seconds, deadline)
    watchdog.daemon = True
    watchdog.start()
    try:
        answer = pause_flow_run(wait_for_input=form, timeout=int(timeout_seconds) + 120, key="approval",
                                poll_interval=int(min(10, max(1, timeout_seconds // 5))))
    except FlowPauseTimeout:
        answer = None
    finally:
        watchdog.cancel()
        watchdog.join()
    return None if expired.is_set() or answer is None or answer.who == DEADLINE else answer


@flow(name="approval", flow_run_name="{name}-v{decision.challenger_version}", log_prints=True)
def approval(name: str, decision: GateDecision, timeout_hours: float, night: date | None = None) -> RecordedAnswer:
    """Ask a person about a close call: tell (an event for the notifications), pause for the typed answer.

    Args:
        name: The registered model.
        decision: The gate's decision, a close call.
        timeout_hours: How long to wait; then the champion stays.
        night: The night that asks (for the event).
    """
    from prefect.runtime import flow_run

    _tell(name, decision, timeout_hours, night)
    form = ApprovalAnswer.with_initial_data(description=f"**{describe(name, decision, timeout_hours)}**\n\n"
                                                        f"{decision.markdown()}")
    answer = wait_for_answer(form, timeout_hours * 3600)
    now, run = datetime.now(timezone.utc).isoformat(), str(flow_run.get_id())
    if answer is None:
        print(f"{name}: no answer within {timeout_hours:g} h: the champion stays")
        return RecordedAnswer(decision="refuse", reason=f"no answer within {timeout_hours:g} h: the champion stays",
                              champion_version=decision.champion_version, time=now, approval_run=run)
    print(f"{name}: {answer.decision} by {answer.who}: {answer.reason}")
    return RecordedAnswer(decision=answer.decision, reason=answer.reason, who=answer.who,
                          champion_version=decision.champion_version, time=now, approval_run=run)


recorded_answer_task = task(recorded_answer, name="read-approval-answer", **RETRY)
record_answer_task = task(record_answer, name="record-approval-answer", **RETRY)


def decide_close_call(cfg: TrackingConfig, name: str, decision: GateDecision, gate: GateConfig,
                      night: date | None = None) -> Verdict:
    """The gate's decision as is, unless approval is on and it is a close call: then the answer recorded for the
    pair (a rerun never asks again), else a person's (the `approval` subflow), recorded before anyone acts on it."""
    if not wants_approval(gate, decision):
        return Verdict(decision=decision)
    answer = recorded_answer_task(cfg, name, decision)
    if answer is None:
        get_run_logger().info("%s", describe(name, decision, gate.approval_timeout_hours))
        answer = record_answer_task(cfg, name, decision,
                                    approval(name, decision, gate.approval_timeout_hours, night))
    else:
        get_run_logger().info("Close call answered before (%s %s): not asking again", answer.decision,
                              f"by {answer.who}" if answer.who else "by the deadline")
    return verdict(decision, answer)
