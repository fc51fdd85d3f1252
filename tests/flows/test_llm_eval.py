"""The LLM evaluation flow with the real openai client against a stand-in provider on loopback: candidates
evaluated on the same items, gated with budgets, promoted, refused and rolled back like a model."""

from __future__ import annotations

import json
import uuid

import pytest

from cli.demo_tickets import PRIORITY_RULES, ticket_answers
from flows.llm_eval import LLMEvalParams, llm_eval
from tasks.llm.evaluation import RESULTS_ARTIFACT, RESULTS_TAG
from tasks.registry.audit import read_audit
from tasks.registry.prompts import load_prompt_version
from tasks.registry.runs import load_json_artifact
from tasks.registry.versions import alias_state
from tests.conftest import FAKE_OPENAI_KEY

pytestmark = pytest.mark.usefixtures("prefect_harness")
SYSTEM = 'You triage customer support tickets. Reply with JSON only: {"category": ..., "priority": ...}.'
RULES = SYSTEM + f" {PRIORITY_RULES.capitalize()}: high when money is lost, an account is locked or nothing works."


def _candidate(model: str, system: str = SYSTEM) -> dict:
    return {"model": model, "system": system, "template": "Ticket: {{ ticket }}", "response_format": "json_object"}


def _params(name: str, *candidates: dict, extra: dict | None = None, **gate: object) -> LLMEvalParams:
    return LLMEvalParams(prompt_name=name, candidates=list(candidates), gate={"resamples": 500, **gate},
                         provider={"timeout_seconds": 5, "max_retries": 1, "concurrency": 4}, **(extra or {}))


@pytest.mark.integration
def test_prompts_are_promoted_refused_and_rolled_back_like_models(fake_openai, tracking) -> None:
    from flows.rollback import RollbackParams, rollback

    fake_openai.answers.update(ticket_answers())
    name = f"triage-{uuid.uuid4().hex[:8]}"

    first = llm_eval(_params(name, _candidate("fake-small"), absolute_floor=0.6))
    assert (first.action, first.champion_after, first.decision.champion) == ("promoted", "1", None), first.decision
    assert 0.6 <= first.decision.challenger < 0.8

    # The rules make the prompt ~35% longer (and dearer): allowed here, up to +50%.
    better = llm_eval(_params(name, _candidate("fake-small"), _candidate("fake-small", RULES), absolute_floor=0.6,
                              max_cost_increase=0.5))
    assert [c.exact_share > 0.85 for c in better.candidates] == [False, True, False]  # the champion is re-run too
    assert (better.action, better.champion_before, better.champion_after) == ("promoted", "1", "2"), better.decision
    assert better.decision.ci_low > 0 and better.decision.budgets

    pricey = llm_eval(_params(name, _candidate("fake-large"), absolute_floor=0.6))
    assert (pricey.action, pricey.champion_after) == ("refused", "2"), pricey.decision.reason
    assert "not measurably better" in pricey.decision.reason or "over budget: cost per 1k items" in \
        pricey.decision.reason

    fake_openai.reset()  # the champion's own content (nothing to decide), its stored results not wanted this time
    again = llm_eval(_params(name, _candidate("fake-small", RULES), extra={"champion_cache_hours": 0}))
    assert (again.action, again.challenger_version, again.champion_after) == ("already-champion", "2", "2")
    assert [r.champion_cache for r in (first, better, pricey, again)] == ["none", "hit", "hit", "off"]
    assert len(fake_openai.chat_requests("fake-small")) == 80  # the candidate and the champion, 40 items each

    back = rollback(RollbackParams(model_name=name, reason="the rules prompt confuses a partner's tickets"))
    assert (back.from_version, back.to_version) == ("2", "1")
    assert alias_state(tracking, name).champion == "1"
    assert [r.action for r in read_audit(tracking, name)] == ["promote", "promote", "refuse", "rollback"]

    # The key never lands in results, registry tags or the audit trail.
    texts = [r.model_dump_json() for r in (first, better, pricey, again)]
    tags = [load_prompt_version(tracking, name, v).tags for v in ("1", "2", "3")]
    texts += [json.dumps(t) for t in tags]
    stored = [run for t in tags for key, run in t.items() if key.startswith(RESULTS_TAG)]
    assert len(stored) == 2  # the two promoted versions' results, kept for their runs as champion
    texts += [json.dumps(load_json_artifact(tracking, run, RESULTS_ARTIFACT)) for run in stored]
    texts += [r.model_dump_json() for r in read_audit(tracking, name)]
    texts += _prefect_records()
    assert not [t for t in texts if FAKE_OPENAI_KEY in t]
    assert all(r.authorized for r in fake_openai.chat_requests())


def _prefect_records() -> list[str]:
    """Everything Prefect kept of the runs: artifacts, flow and task run parameters, states and logs."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowFilter,
        FlowFilterName,
        FlowRunFilter,
        FlowRunFilterId,
        LogFilter,
        LogFilterFlowRunId,
    )

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=["llm-eval"])))
        ids = [r.id for r in runs]
        logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=ids)), limit=200)
        tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=ids)))
        artifacts = client.read_artifacts()
    assert runs and tasks and artifacts  # logs may not have been shipped yet: checked when there
    return [r.model_dump_json() for r in [*runs, *logs, *tasks, *artifacts]]


def _model_server() -> tuple[str, list[tuple[str, str | None]], object]:
    """A stand-in live model server accepting every reload, recording the path and Authorization header."""
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    reloads: list[tuple[str, str | None]] = []

    class Server(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server API
            reloads.append((self.path, self.headers.get("Authorization")))
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b'{"status": "swapped"}')

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Server)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_port}", reloads, server


def _champion_calls(fake, system: str, model: str = "fake-small") -> int:
    """Requests the provider received for a prompt with this system message (the champion's re-run, when it is)."""
    return sum(r.messages[0]["content"] == system for r in fake.chat_requests(model))


@pytest.mark.integration  # three flow runs (~9 s); the judge and cache functions have fast tests in tests/tasks
def test_the_judge_gates_and_an_unchanged_champion_is_not_called_again(fake_openai, tracking, tmp_path,
                                                                      monkeypatch) -> None:
    """Gate metric "judge": the judge grades every reply that passed the schema (its cost reported apart); the
    promoted candidate's results are stored, so the next run reuses them as the champion's (the provider's request
    log shows nothing sent for it) and the promotion reloads the live model server; a changed evaluation set misses
    the cache and the champion runs again."""
    from nightshift.settings import PROJECT_ROOT

    fake_openai.answers.update(ticket_answers())
    name = f"triage-{uuid.uuid4().hex[:8]}"
    tickets = (PROJECT_ROOT / "evalsets" / "support_tickets.jsonl").read_text().splitlines()
    subset = tmp_path / "tickets.jsonl"
    subset.write_text("\n".join(tickets[:16]) + "\n")
    judged = dict(dataset=str(subset), judge={"model": "fake-judge"})

    first = llm_eval(_params(name, _candidate("fake-small"), extra=judged, metric="judge", absolute_floor=0.6))
    assert (first.action, first.champion_cache, first.decision.metric) == ("promoted", "none", "judge_score")
    assert first.deploy.status == "not-deployed"  # no model server configured
    [small] = first.candidates
    assert small.judge_stats.n == len(fake_openai.chat_requests("fake-judge")) == 16  # every reply passed the schema
    assert small.share("judge") > small.exact_share and "judge score" in small.row()
    assert first.spent_usd == pytest.approx(small.stats.cost_usd + small.judge_stats.cost_usd)

    url, reloads, server = _model_server()
    monkeypatch.setenv("NIGHTSHIFT_SERVER_URL", url)
    monkeypatch.setenv("NIGHTSHIFT_SERVER_TOKEN", "reload-token")
    fake_openai.reset()
    try:
        second = llm_eval(_params(name, _candidate("fake-small", RULES), extra=judged, metric="judge",
                                  absolute_floor=0.6, max_cost_increase=0.5))
    finally:
        server.shutdown()
    assert second.champion_cache == "hit" and _champion_calls(fake_openai, SYSTEM) == 0
    assert [c.cached for c in second.candidates] == [False, True]
    assert second.candidates[1].by_item("judge") == small.by_item("judge")  # the stored verdicts, not new ones
    assert len(fake_openai.chat_requests("fake-judge")) == 16  # the challenger's replies only
    assert second.decision.champion == pytest.approx(small.share("judge"))
    assert second.spent_usd == pytest.approx(second.candidates[0].stats.cost_usd
                                             + second.candidates[0].judge_stats.cost_usd)
    assert (second.action, second.deploy.status) == ("promoted", "deployed")
    assert reloads == [(f"/models/{name}/reload", "Bearer reload-token")]

    subset.write_text("\n".join(tickets[:12]) + "\n")  # the eval set changed: the stored results do not apply
    fake_openai.reset()
    third = llm_eval(_params(name, _candidate("fake-large"), extra=judged, metric="judge"))
    assert third.champion_cache == "miss" and third.decision.rows == 12, third.decision
    assert _champion_calls(fake_openai, RULES) == 12


def test_without_a_key_the_flow_fails_before_any_call(fake_openai, monkeypatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY")
    state = llm_eval(_params("triage-nokey", _candidate("fake-small")), return_state=True)
    assert state.is_failed() and "OPENAI_API_KEY is not set" in state.message, state.message
    assert fake_openai.chat_requests() == []
