"""The prompt champion served like a model: a chat route forwarding to the provider with the champion's prompt and
config, loaded at start-up, hot-swapped by the same reload (so promote() and the rollback flow reach it unchanged)."""

from __future__ import annotations

import json
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import httpx
import pytest
import yaml
from fastapi.testclient import TestClient

from cli.fake_openai import Fault
from nightshift.errors import ConfigError
from nightshift.settings import Settings
from serving.server import create_app
from serving.state import check_prompt_names
from tests.conftest import FAKE_OPENAI_KEY, free_port
from tests.serving.conftest import TOKEN, register_prompt, start_server, stop_server

AUTH = {"Authorization": f"Bearer {TOKEN}"}
SYSTEM = "You triage tickets for {{ product }}. Reply with JSON only."


@pytest.fixture
def prompt(tracking) -> str:
    """Prompt v1 (fake-small, JSON replies, variables product + ticket), champion."""
    from tasks.registry.versions import move_champion

    name = f"chat-{uuid.uuid4().hex[:8]}"
    version = register_prompt(tracking, name, system=SYSTEM, temperature=0.3, max_tokens=50,
                              response_format="json_object")
    move_champion(tracking, name, version)
    return name


@contextmanager
def serve(tmp_path: Path, *prompts: str, **provider: object) -> Iterator[TestClient]:
    """The app in-process with `prompts` served, a default model without champion, no catalogue."""
    from tasks.llm.config import ProviderSettings

    settings = Settings(model_name=f"no-model-{uuid.uuid4().hex[:6]}", catalogue_path=tmp_path / "none.yaml",
                        server_prompts=list(prompts), server_token=TOKEN)
    options = {"timeout_seconds": 5.0, "max_retries": 2, "concurrency": 4, **provider}
    with TestClient(create_app(settings, ProviderSettings(**options))) as client:
        yield client


def _ticket(text: str = "I was charged twice") -> dict:
    return {"variables": {"product": "nightshift", "ticket": text}}


def test_chat_answers_with_the_champions_prompt_and_config(fake_openai, prompt, tmp_path) -> None:
    fake_openai.answers["fake-small"] = json.dumps({"category": "billing", "priority": "high"})
    with serve(tmp_path, prompt) as client:
        reply = client.post(f"/models/{prompt}/chat", json=_ticket(), headers={"X-Request-Id": "req-42"})
        assert reply.status_code == 200, reply.text
        body = reply.json()
        assert reply.headers["x-request-id"] == body["request_id"] == "req-42"
        assert (body["prompt"], body["prompt_version"], body["model"]) == (prompt, "1", "fake-small")
        assert body["json"] == {"category": "billing", "priority": "high"} and body["json_error"] is None
        assert body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"] + body["usage"]["completion_tokens"] > 0
        expected_cost = (body["usage"]["prompt_tokens"] * 0.15 + body["usage"]["completion_tokens"] * 0.6) / 1e6
        assert body["cost_usd"] == pytest.approx(expected_cost) and body["retries"] == 0 and body["latency_ms"] > 0

        sent = fake_openai.chat_requests()[-1]
        assert sent.authorized and (sent.body["model"], sent.body["temperature"]) == ("fake-small", 0.3)
        assert sent.body["max_completion_tokens"] == 50 and sent.body["response_format"] == {"type": "json_object"}
        assert sent.messages == [
            {"role": "system", "content": "You triage tickets for nightshift. Reply with JSON only."},
            {"role": "user", "content": "Ticket: I was charged twice"}]

        generated = client.post(f"/models/{prompt}/chat", json=_ticket())
        assert len(generated.json()["request_id"]) == 32 == len(generated.headers["x-request-id"])

        listing = client.get("/models").json()["models"][prompt]
        assert listing["status"] == "loaded" and listing["kind"] == "prompt"
        assert (listing["model_version"], listing["provider_model"], listing["variables"]) == (
            "1", "fake-small", ["product", "ticket"])
        info = client.get(f"/models/{prompt}/version").json()
        assert (info["model_version"], info["temperature"], info["response_format"]) == ("1", 0.3, "json_object")
        assert client.get(f"/models/{prompt}/ready").json() == {"status": "ready", "model_version": "1"}

        schema = client.get("/openapi.json").json()
        route = schema["paths"]["/models/{name}/chat"]["post"]
        assert route["parameters"][0]["schema"]["enum"] == [prompt]
        assert route["requestBody"]["content"]["application/json"]["schema"] == {
            "$ref": f"#/components/schemas/{prompt}.ChatRequest"}
        variables = schema["components"]["schemas"][f"{prompt}.ChatRequest"]["properties"]["variables"]
        assert variables["required"] == ["product", "ticket"] and variables["additionalProperties"] is False
        assert route["responses"]["200"]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/ChatResponse"}
        assert {"json", "usage", "cost_usd", "request_id"} <= set(schema["components"]["schemas"]["ChatResponse"]
                                                                   ["properties"])
        assert {"502", "503", "504"} <= set(route["responses"])
        assert prompt not in schema["paths"]["/models/{name}/predict"]["post"]["parameters"][0]["schema"]["enum"]


def test_bad_chat_requests_get_a_4xx_naming_the_problem(fake_openai, prompt, tmp_path) -> None:
    with serve(tmp_path, prompt) as client:
        chat = f"/models/{prompt}/chat"
        missing = client.post(chat, json={"variables": {"ticket": "hi"}})
        assert missing.status_code == 400 and "missing variable(s) 'product'" in missing.json()["message"]
        assert missing.json()["request_id"] == missing.headers["x-request-id"]
        unknown = client.post(chat, json={"variables": {"product": "x", "ticket": "y", "mood": "z"}})
        assert unknown.status_code == 400 and "unknown variable(s) 'mood'" in unknown.json()["message"]
        assert "it takes: 'product', 'ticket'" in unknown.json()["message"]
        for payload in ([1, 2], {"variables": [1]}, {"vars": {}}):
            bad = client.post(chat, json=payload)
            assert bad.status_code == 400 and bad.json()["error_code"] == "INVALID_PARAMETER_VALUE", bad.text
        assert client.post(chat, content=b"{", headers={"content-type": "application/json"}).status_code == 400
        surrogate = client.post(chat, content=b'{"variables": {"product": "x", "ticket": "\\ud800"}}',
                                headers={"content-type": "application/json"})
        assert surrogate.status_code == 400 and "variable(s) 'ticket' are not valid Unicode" in surrogate.text
        assert client.post(chat, content=json.dumps(_ticket())).status_code == 415

        for route in ("invocations", "predict"):
            scoring = client.post(f"/models/{prompt}/{route}", json={"rows": []})
            assert scoring.status_code == 400 and f"POST /models/{prompt}/chat" in scoring.json()["message"]
        model = client.get("/models").json()["default_model"]
        on_model = client.post(f"/models/{model}/chat", json=_ticket())
        assert on_model.status_code == 400 and "is a scikit-learn model, not a prompt" in on_model.json()["message"]
        nowhere = client.post("/models/no-such-name/chat", json=_ticket())
        assert nowhere.status_code == 404 and "not served here" in nowhere.json()["message"]
    assert fake_openai.chat_requests() == []  # nothing above reached the provider


def test_provider_429_and_500_are_retried_then_answered(fake_openai, prompt, tmp_path) -> None:
    with serve(tmp_path, prompt) as client:
        fake_openai.set_fault("fake-small", Fault(status=429, times=1, retry_after=0.4))
        limited = client.post(f"/models/{prompt}/chat", json=_ticket())
        assert limited.status_code == 200 and limited.json()["retries"] == 1, limited.text
        first, second = fake_openai.chat_requests()[-2:]
        assert (first.status, second.status, second.retry_count) == (429, 200, 1)
        assert second.at - first.at >= 0.35  # the Retry-After was honoured
        fake_openai.set_fault("fake-small", Fault(status=500, times=1))
        flaky = client.post(f"/models/{prompt}/chat", json=_ticket())
        assert flaky.status_code == 200 and flaky.json()["retries"] == 1, flaky.text


def test_provider_down_is_a_502_naming_model_and_status_and_never_the_key(fake_openai, prompt, tmp_path) -> None:
    fake_openai.set_fault("*", Fault(status=503))
    with serve(tmp_path, prompt, max_retries=1) as client:
        down = client.post(f"/models/{prompt}/chat", json=_ticket())
        assert down.status_code == 502, down.text
        body = down.json()
        assert (body["error_code"], body["model"], body["provider_status"], body["prompt_version"]) == (
            "PROVIDER_ERROR", "fake-small", 503, "1")
        assert "fake-small: HTTP 503 after 1 retry" in body["message"]
        assert len(fake_openai.chat_requests()) == 2
        texts = [down.text, client.get("/models").text, client.get(f"/models/{prompt}/version").text]
    with serve(tmp_path, prompt, base_url=f"http://127.0.0.1:{free_port()}/v1", max_retries=0) as client:
        refused = client.post(f"/models/{prompt}/chat", json=_ticket())
        assert refused.status_code == 502 and "fake-small: connection failed" in refused.json()["message"]
        assert refused.json()["provider_status"] is None
        texts.append(refused.text)
    assert not [t for t in texts if FAKE_OPENAI_KEY in t]


def test_a_slow_provider_is_a_504(fake_openai, prompt, tmp_path) -> None:
    fake_openai.set_fault("fake-small", Fault(kind="slow", delay=3))
    with serve(tmp_path, prompt, timeout_seconds=0.3, max_retries=0) as client:
        started = time.perf_counter()
        slow = client.post(f"/models/{prompt}/chat", json=_ticket())
        assert slow.status_code == 504, slow.text
        assert time.perf_counter() - started < 2
        assert slow.json()["error_code"] == "PROVIDER_TIMEOUT" and "fake-small: timed out after 0.3 s" in \
            slow.json()["message"]


def test_no_key_on_the_server_is_a_503_at_request_time(fake_openai, prompt, tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY")
    with serve(tmp_path, prompt) as client:
        assert client.get(f"/models/{prompt}/ready").status_code == 200  # the prompt loads without a key
        missing = client.post(f"/models/{prompt}/chat", json=_ticket())
        assert missing.status_code == 503 and "OPENAI_API_KEY is not set" in missing.json()["message"], missing.text
        monkeypatch.setenv("OPENAI_API_KEY", FAKE_OPENAI_KEY)  # set later: the next request makes the client
        assert client.post(f"/models/{prompt}/chat", json=_ticket()).status_code == 200
    assert len(fake_openai.chat_requests()) == 1


def test_reload_swaps_checks_the_interface_and_unloads(fake_openai, prompt, tracking, tmp_path) -> None:
    from tasks.registry.versions import AliasState, move_champion, restore_aliases

    with serve(tmp_path, prompt) as client:
        reload = f"/models/{prompt}/reload"
        assert client.post(reload).status_code == 401
        assert client.post(reload, headers={"Authorization": "Bearer wrong"}).status_code == 403

        v2 = register_prompt(tracking, prompt, "fake-large", system=SYSTEM, temperature=0.7, max_tokens=80,
                             response_format="json_object")
        move_champion(tracking, prompt, v2)
        assert client.post(f"/models/{prompt}/chat", json=_ticket()).json()["prompt_version"] == "1"  # until reload
        swapped = client.post(reload, headers=AUTH)
        assert swapped.json() == {"status": "swapped", "from_version": "1", "to_version": v2, "schema_changes": []}
        answer = client.post(f"/models/{prompt}/chat", json=_ticket()).json()
        assert (answer["prompt_version"], answer["model"]) == (v2, "fake-large")
        assert (fake_openai.chat_requests()[-1].body["temperature"], fake_openai.chat_requests()[-1].body[
            "max_completion_tokens"]) == (0.7, 80)

        v3 = register_prompt(tracking, prompt, "unpriced-model", template="{{ ticket }} (from {{ customer }})")
        move_champion(tracking, prompt, v3)
        kept = client.post(reload, headers=AUTH)
        assert kept.status_code == 422 and kept.json()["status"] == "kept", kept.text
        reason = kept.json()["reason"]
        assert "new template variable(s) 'customer'" in reason and "'product' no longer used" in reason
        assert "response format json_object -> text" in reason and "allow_schema_change=true" in reason
        assert client.get(f"/models/{prompt}/version").json()["model_version"] == v2
        forced = client.post(reload, params={"allow_schema_change": "true"}, headers=AUTH)
        assert forced.status_code == 200 and len(forced.json()["schema_changes"]) == 3, forced.text
        unpriced = client.post(f"/models/{prompt}/chat", json={"variables": {"ticket": "hi", "customer": "ann"}})
        assert unpriced.status_code == 200 and unpriced.json()["cost_usd"] is None, unpriced.text
        assert unpriced.json()["json"] is None and unpriced.json()["text"].startswith("echo: hi (from ann)")

        restore_aliases(tracking, prompt, AliasState(None, None))  # e.g. a first promotion rolled back
        gone = client.post(reload, headers=AUTH)
        assert gone.json() == {"status": "unloaded", "from_version": v3, "to_version": None,
                               "reason": f"prompt '{prompt}' has no 'champion' alias yet: nothing to serve"}
        no_champion = client.post(f"/models/{prompt}/chat", json=_ticket())
        assert no_champion.status_code == 503 and no_champion.json()["message"].startswith("no champion yet: ")
        assert client.get("/models").json()["models"][prompt]["status"].startswith("no champion yet: ")


def test_a_prompt_without_champion_answers_503_on_its_routes_only(fake_openai, tracking, prompt, tmp_path) -> None:
    from tasks.registry.versions import move_champion

    later = f"chat-later-{uuid.uuid4().hex[:6]}"
    with serve(tmp_path, later, prompt) as client:
        for method, route in (("post", "chat"), ("get", "ready"), ("get", "version")):
            response = client.request(method, f"/models/{later}/{route}", json=_ticket())
            assert response.status_code == 503, (route, response.text)
            assert f"prompt '{later}' has no 'champion' alias yet" in response.json()["message"]
        assert client.post(f"/models/{prompt}/chat", json=_ticket()).status_code == 200
        assert client.post(f"/models/{later}/reload", headers=AUTH).status_code == 503  # nothing registered yet
        move_champion(tracking, later, register_prompt(tracking, later))  # its first promotion
        online = client.post(f"/models/{later}/reload", headers=AUTH)
        assert online.json()["status"] == "swapped", online.text
        assert client.post(f"/models/{later}/chat", json={"variables": {"ticket": "hi"}}).json()["text"] == \
            "echo: Ticket: hi"


def test_slow_provider_calls_are_bounded_and_do_not_hold_up_reloads(fake_openai, prompt, tmp_path) -> None:
    fake_openai.set_fault("fake-small", Fault(kind="slow", delay=0.4))
    with serve(tmp_path, prompt, concurrency=2) as client, ThreadPoolExecutor(8) as pool:
        calls = [pool.submit(client.post, f"/models/{prompt}/chat", json=_ticket()) for _ in range(6)]
        time.sleep(0.15)  # two calls at the provider, four queued
        started = time.perf_counter()
        assert client.post(f"/models/{prompt}/reload", headers=AUTH).json()["status"] == "swapped"
        assert client.get("/health").status_code == 200
        assert time.perf_counter() - started < 0.5
        replies = [c.result() for c in calls]
    assert [r.status_code for r in replies] == [200] * 6
    assert fake_openai.max_in_flight == 2
    assert max(r.json()["queued_ms"] for r in replies) > 600  # the last two waited two rounds


def test_prompt_names_must_not_clash_with_models(tmp_path: Path) -> None:
    path = tmp_path / "models.yaml"
    path.write_text(yaml.safe_dump({"models": [{"name": n, "features": "x/{date:%Y-%m-%d}.parquet", "label": "y",
                                                "enabled": n == "a"} for n in ("a", "b")]}))
    settings = Settings(model_name="solo", catalogue_path=path, server_prompts=["p", "b"])
    with pytest.raises(ConfigError, match=rf"NIGHTSHIFT_SERVER_PROMPTS names 'b', also model\(s\) of the catalogue "
                                          rf"{path}"):
        check_prompt_names(settings)
    with pytest.raises(ConfigError, match="names 'solo', which is also the default model NIGHTSHIFT_MODEL_NAME"):
        check_prompt_names(settings.model_copy(update={"server_prompts": ["solo"]}))
    assert check_prompt_names(settings.model_copy(update={"server_prompts": ["p"]})) == ["p"]
    assert Settings(_env_file=None).server_prompts == ["ticket-triage"]
    assert Settings(server_prompts=" x, y ,x,").server_prompts == ["x", "y"]


@pytest.mark.integration
def test_promotion_and_rollback_reach_a_real_server_without_a_failed_chat(fake_openai, tracking, tmp_path,
                                                                          monkeypatch, prefect_harness) -> None:
    """promote() and the rollback flow, unchanged, swap the prompt on a real server under concurrent chat traffic."""
    from flows.rollback import RollbackParams, rollback
    from tasks.llm.scoring import LLMGateConfig, gate_scores
    from tasks.registry.audit import read_audit
    from tasks.registry.promote import promote, record_decision

    name = f"chat-live-{uuid.uuid4().hex[:6]}"
    v1 = register_prompt(tracking, name, "fake-small", system=SYSTEM, temperature=0.1)
    v2 = register_prompt(tracking, name, "fake-large", system=SYSTEM + " Be brief.", temperature=0.9)
    gate = LLMGateConfig(resamples=200, absolute_floor=0.5, max_cost_increase=100.0)
    first = gate_scores([1.0] * 20, None, gate, challenger_cost_per_1k=0.1, challenger_p95_ms=50,
                        challenger_version=v1)
    record_decision(tracking, name, v1, first)
    srv = start_server(f"no-model-{uuid.uuid4().hex[:6]}", tmp_path / "server.log", wait_for="/health",
                       NIGHTSHIFT_SERVER_PROMPTS=name)
    try:
        chat = f"{srv.url}/models/{name}/chat"
        assert httpx.post(chat, json=_ticket()).status_code == 503  # no champion yet
        assert promote(tracking, name, first, server_url=srv.url, token=TOKEN).deploy.status == "deployed"
        assert httpx.post(chat, json=_ticket()).json()["prompt_version"] == v1

        better = gate_scores([1.0] * 20, [0.0] * 20, gate, challenger_cost_per_1k=0.2, challenger_p95_ms=50,
                             champion_cost_per_1k=0.1, champion_p95_ms=50, challenger_version=v2,
                             champion_version=v1)
        assert better.promote, better.reason
        record_decision(tracking, name, v2, better)
        with httpx.Client(timeout=30) as client, ThreadPoolExecutor(4) as pool:
            def hammer(seconds: float) -> list[tuple[int, str | None]]:
                out, end = [], time.monotonic() + seconds
                while time.monotonic() < end:
                    r = client.post(chat, json=_ticket())
                    out.append((r.status_code, r.json().get("prompt_version")))
                return out

            load = [pool.submit(hammer, 4.0) for _ in range(3)]
            time.sleep(1.0)
            outcome = promote(tracking, name, better, server_url=srv.url, token=TOKEN)
            results = [x for f in load for x in f.result()]
        assert outcome.status == "promoted" and outcome.deploy.status == "deployed", outcome
        assert {status for status, _ in results} == {200} and len(results) > 20
        assert {version for _, version in results} == {v1, v2}  # both served, none failed during the swap
        after = httpx.post(chat, json=_ticket()).json()
        assert (after["prompt_version"], after["model"]) == (v2, "fake-large")
        sent = fake_openai.chat_requests()[-1]
        assert (sent.body["temperature"], sent.messages[0]["content"]) == (
            0.9, "You triage tickets for nightshift. Reply with JSON only. Be brief.")

        monkeypatch.setenv("NIGHTSHIFT_SERVER_URL", srv.url)
        monkeypatch.setenv("NIGHTSHIFT_SERVER_TOKEN", TOKEN)
        back = rollback(RollbackParams(model_name=name, reason="the brief prompt drops the priority"))
        assert (back.to_version, back.deploy.status) == (v1, "deployed")
        again = httpx.post(chat, json=_ticket())
        assert (again.json()["prompt_version"], again.json()["model"]) == (v1, "fake-small")
        assert fake_openai.chat_requests()[-1].body["temperature"] == 0.1
        assert httpx.post(f"{srv.url}/models/{name}/reload", headers={"Authorization": "Bearer no"}).status_code == 403
        assert [r.action for r in read_audit(tracking, name)] == ["promote", "promote", "rollback"]
        bodies = [again.text, httpx.get(f"{srv.url}/models").text, httpx.get(f"{srv.url}/openapi.json").text]
    finally:
        stop_server(srv)
    assert FAKE_OPENAI_KEY not in srv.log.read_text() and not [b for b in bodies if FAKE_OPENAI_KEY in b]


@pytest.mark.integration
def test_schemathesis_finds_no_server_errors_on_the_chat_route(fake_openai, tracking, tmp_path) -> None:
    """Fuzz /models/{name}/chat of a real server whose prompt has a champion and whose provider answers."""
    import subprocess
    import sys

    from tasks.registry.versions import move_champion

    name = f"chat-fuzz-{uuid.uuid4().hex[:6]}"
    move_champion(tracking, name, register_prompt(tracking, name, system=SYSTEM))
    srv = start_server(f"no-model-{uuid.uuid4().hex[:6]}", tmp_path / "server.log", wait_for=f"/models/{name}/ready",
                       NIGHTSHIFT_SERVER_PROMPTS=name)
    try:
        exe = Path(sys.executable).with_name("schemathesis")
        proc = subprocess.run(
            [str(exe), "run", f"{srv.url}/openapi.json", "--checks", "not_a_server_error", "--max-examples", "60",
             "--include-path-regex", "/chat$", "--seed", "1", "--no-color"],
            capture_output=True, text=True, timeout=600, cwd=tmp_path)
    finally:
        stop_server(srv)
    (tmp_path / "schemathesis.txt").write_text(proc.stdout + proc.stderr)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "1 selected" in proc.stdout and fake_openai.chat_requests()  # valid bodies reached the provider
    assert FAKE_OPENAI_KEY not in srv.log.read_text()
