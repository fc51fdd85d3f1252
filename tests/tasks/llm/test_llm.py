"""The real openai client against the loopback fake: answers, retries, failures, concurrency and key hygiene."""

from __future__ import annotations

import json
import logging
import os
import time

import pytest
from pydantic import ValidationError

from cli.fake_openai import JUDGE_MODEL, FakeOpenAI, Fault, judge_reply, message_key
from tasks.llm.config import LLMConfig, LLMConfigError, Price, PriceTable, ProviderSettings
from tasks.llm.evaluation import EvalSetup, JudgeConfig, evaluate_candidate
from tasks.llm.provider import CallResult, complete, make_client, run_items, summarize

MODEL = "gpt-fake-mini"
PRICES = PriceTable(prices={MODEL: Price(input_per_1m=2.0, output_per_1m=8.0)})
CONFIG = LLMConfig(model=MODEL, system="You label support tickets.", template="Ticket: {{ text }}\nLabel it.",
                   temperature=0.0, max_tokens=16)


def client_for(fake: FakeOpenAI, timeout: float = 5.0, retries: int = 2):
    """A real client on the fake (URL and key from the fixture's environment)."""
    return make_client(ProviderSettings(timeout_seconds=timeout, max_retries=retries))


def test_normal_answer_has_usage_cost_and_latency(fake_openai: FakeOpenAI) -> None:
    messages = CONFIG.render({"text": "my card was charged twice"})
    fake_openai.canned[message_key(MODEL, messages)] = "billing"
    result = complete(client_for(fake_openai), CONFIG, {"text": "my card was charged twice"}, "t1", PRICES)
    assert result.ok and result.text == "billing" and result.status_code == 200 and result.retries == 0
    prompt_words = sum(len(m["content"].split()) for m in messages)
    assert (result.prompt_tokens, result.completion_tokens) == (prompt_words, 1)
    assert result.cost_usd == pytest.approx((prompt_words * 2.0 + 1 * 8.0) / 1e6)
    assert result.latency_ms > 0 and result.request_id and result.finish_reason == "stop"
    [sent] = fake_openai.chat_requests()
    assert sent.authorized and "authorization" not in sent.headers
    assert sent.body["max_completion_tokens"] == 16 and "response_format" not in sent.body
    assert sent.messages == messages


def test_json_object_format_is_sent() -> None:
    config = CONFIG.model_copy(update={"response_format": "json_object"})
    assert config.request_kwargs()["response_format"] == {"type": "json_object"}


def test_rate_limit_then_success_honours_retry_after(fake_openai: FakeOpenAI) -> None:
    fake_openai.set_fault(MODEL, Fault(status=429, times=2, retry_after=0.2))
    started = time.perf_counter()
    result = complete(client_for(fake_openai), CONFIG, {"text": "hi"}, "t1", PRICES)
    assert result.ok and result.retries == 2, result
    assert time.perf_counter() - started >= 0.4 and result.latency_ms >= 400
    assert [r.status for r in fake_openai.chat_requests()] == [429, 429, 200]
    assert [r.retry_count for r in fake_openai.chat_requests()] == [0, 1, 2]


def test_retry_after_beyond_the_sdk_cap_fails_at_once_saying_so(fake_openai: FakeOpenAI) -> None:
    fake_openai.set_fault(MODEL, Fault(status=429, retry_after=3600))
    result = complete(client_for(fake_openai), CONFIG, {"text": "hi"}, "t1", PRICES)
    assert not result.ok and len(fake_openai.chat_requests()) == 1
    assert result.error.startswith(f"{MODEL}: HTTP 429 (Retry-After 3600 s exceeds the 120 s")
    assert "not retried" in result.error


def test_server_error_on_every_attempt_is_a_failed_item(fake_openai: FakeOpenAI) -> None:
    fake_openai.set_fault(MODEL, Fault(status=500, retry_after_ms=20))
    result = complete(client_for(fake_openai, retries=2), CONFIG, {"text": "hi"}, "t1", PRICES)
    assert not result.ok and result.text is None and result.status_code == 500 and result.retries == 2
    assert result.error.startswith(f"{MODEL}: HTTP 500 after 2 retries: ") and "injected" in result.error
    assert len(fake_openai.chat_requests()) == 3 and result.cost_usd == 0


def test_malformed_json_is_a_failed_item(fake_openai: FakeOpenAI) -> None:
    fake_openai.set_fault(MODEL, Fault(kind="malformed"))
    result = complete(client_for(fake_openai), CONFIG, {"text": "hi"}, "t1", PRICES)
    assert not result.ok and result.error.startswith(f"{MODEL}: malformed JSON reply (HTTP 200)")


def test_non_json_reply_is_a_failed_item(fake_openai: FakeOpenAI) -> None:
    fake_openai.set_fault(MODEL, Fault(kind="not_json"))
    result = complete(client_for(fake_openai), CONFIG, {"text": "hi"}, "t1", PRICES)
    assert not result.ok and "not a chat completion (HTTP 200, text/html" in result.error


def test_slow_reply_times_out(fake_openai: FakeOpenAI) -> None:
    fake_openai.set_fault(MODEL, Fault(kind="slow", delay=2.0))
    result = complete(client_for(fake_openai, timeout=0.3, retries=0), CONFIG, {"text": "hi"}, "t1", PRICES)
    assert not result.ok and result.error == f"{MODEL}: timed out after 0.3 s" and result.status_code is None
    assert 300 <= result.latency_ms < 1500


def test_unknown_model_is_a_failed_item_naming_it(fake_openai: FakeOpenAI) -> None:
    fake = FakeOpenAI(answers={"other": "x"})
    url, stop = fake.start()
    try:
        client = make_client(ProviderSettings(base_url=url, max_retries=0))
        result = complete(client, CONFIG, {"text": "hi"}, "t1", PRICES)
    finally:
        stop()
    assert result.error.startswith(f"{MODEL}: HTTP 404: ") and "does not exist" in result.error


def test_run_items_bounds_concurrency_keeps_order_and_reports_progress(fake_openai: FakeOpenAI) -> None:
    fake_openai.set_fault(MODEL, Fault(kind="slow", delay=0.1))
    items = [{"id": f"i{n}", "text": f"ticket number {n}", "expected": "x"} for n in range(8)]
    seen: list[tuple[int, int]] = []
    results = run_items(client_for(fake_openai), CONFIG, items, PRICES, concurrency=3,
                        progress=lambda done, total, result: seen.append((done, total)))
    assert [r.item_id for r in results] == [f"i{n}" for n in range(8)]
    assert all(r.ok and r.text.endswith(f"ticket number {n}\nLabel it.") for n, r in enumerate(results))
    assert 1 < fake_openai.max_in_flight <= 3  # 3 expected; a loaded CI box may overlap less, never more
    assert seen == [(n, 8) for n in range(1, 9)]
    stats = summarize(results)
    assert (stats.n, stats.errors, stats.retries) == (8, 0, 0)
    assert stats.total_tokens == sum(r.prompt_tokens + r.completion_tokens for r in results)
    assert stats.cost_per_1k_items == pytest.approx(stats.cost_usd / 8 * 1000)
    assert 100 <= stats.latency_p50_ms <= stats.latency_p95_ms


def test_one_failing_item_fails_alone(fake_openai: FakeOpenAI) -> None:
    items = [{"text": "a"}, {"text": "b"}, {"text": "c"}]
    fake_openai.set_fault(message_key(MODEL, CONFIG.render(items[1])), Fault(status=503))
    results = run_items(client_for(fake_openai, retries=0), CONFIG, items, PRICES, concurrency=2)
    assert [r.ok for r in results] == [True, False, True] and [r.item_id for r in results] == ["0", "1", "2"]
    stats = summarize(results)
    assert stats.errors == 1 and stats.error_rate == pytest.approx(1 / 3)


def test_no_key_fails_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(LLMConfigError, match="^OPENAI_API_KEY is not set: "):
        make_client(ProviderSettings(base_url="http://127.0.0.1:9/v1"))
    monkeypatch.setenv("OPENAI_API_KEY", "  ")
    with pytest.raises(LLMConfigError, match="OPENAI_API_KEY is not set"):
        make_client(ProviderSettings(base_url="http://127.0.0.1:9/v1"))


def test_the_key_never_lands_in_results_stats_or_logs(fake_openai: FakeOpenAI,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    key = os.environ["OPENAI_API_KEY"]
    for name in ("openai", "httpx2", "httpcore2", "tasks", ""):
        caplog.set_level(logging.DEBUG, logger=name)
    items = [{"text": "fine"}, {"text": "fails"}, {"text": "slow"}]
    fake_openai.set_fault(message_key(MODEL, CONFIG.render(items[1])), Fault(status=500, retry_after_ms=10))
    fake_openai.set_fault(message_key(MODEL, CONFIG.render(items[2])), Fault(kind="slow", delay=1.0))
    client = client_for(fake_openai, timeout=0.2, retries=1)
    results = run_items(client, CONFIG, items, PRICES, concurrency=3)
    assert [r.ok for r in results] == [True, False, False]
    dumped = json.dumps([r.model_dump(mode="json") for r in results]) + summarize(results).model_dump_json()
    dumped += ProviderSettings().model_dump_json() + CONFIG.model_dump_json()
    assert key not in dumped
    logged = "\n".join(f"{r.name} {r.getMessage()} {r.args!r}" for r in caplog.records)
    assert caplog.records and key not in logged and "Bearer" not in logged
    assert all(r.authorized for r in fake_openai.chat_requests())


def test_provider_message_echoing_the_key_is_redacted(fake_openai: FakeOpenAI) -> None:
    from tasks.llm.provider import _detail

    key = os.environ["OPENAI_API_KEY"]
    assert key not in _detail(f"Incorrect API key provided: {key}.", key)


def test_unknown_price_names_the_model() -> None:
    with pytest.raises(LLMConfigError, match="no price for model 'gpt-nope'"):
        PRICES.cost("gpt-nope", 10, 10)
    with pytest.raises(LLMConfigError, match="'gpt-nope'"):
        unpriced = CONFIG.model_copy(update={"model": "gpt-nope"})
        run_items(None, unpriced, [{"text": "a"}], PRICES, 1)  # type: ignore[arg-type]
    default = PriceTable(prices={"*": Price(input_per_1m=1, output_per_1m=1)})
    assert default.cost("gpt-nope", 500_000, 500_000) == pytest.approx(1.0)


def test_template_missing_variable_names_it() -> None:
    with pytest.raises(LLMConfigError, match="'text' missing"):
        CONFIG.render({"body": "x"})
    with pytest.raises(LLMConfigError, match="item 'b': template variable"):
        run_items(None, CONFIG, [{"id": "a", "text": "x"}, {"id": "b"}], PRICES, 1)  # type: ignore[arg-type]


def test_config_validation() -> None:
    with pytest.raises(ValidationError, match="not a variable name"):
        LLMConfig(model=MODEL, template="Hello {{ first name }}")
    with pytest.raises(ValidationError):
        LLMConfig(model=MODEL, template="x", temperature=2.5)
    with pytest.raises(ValidationError):
        LLMConfig(model=MODEL, template="x", max_tokens=0)
    with pytest.raises(ValidationError):
        LLMConfig(model=MODEL, template="x", api_key="nope")  # extra=forbid
    with pytest.raises(ValidationError, match="credentials"):
        ProviderSettings(base_url="https://user:pw@example.invalid/v1")
    config = LLMConfig(model=MODEL, system="Answer as {{ persona }}.", template="{{q}} {{ q }} {\"json\": 1}")
    assert config.variables == ["persona", "q"]
    assert config.render({"q": 3, "persona": "a clerk"}) == [
        {"role": "system", "content": "Answer as a clerk."}, {"role": "user", "content": '3 3 {"json": 1}'}]
    schema = LLMConfig.model_json_schema()["properties"]
    assert all(field.get("title") and field.get("description") for field in schema.values())


def test_fake_requires_a_bearer_token_and_lists_models(fake_openai: FakeOpenAI) -> None:
    import httpx

    fake_openai.answers[MODEL] = "x"
    with httpx.Client(trust_env=False) as http:
        assert http.post(f"{fake_openai.url}/chat/completions", json={"model": MODEL}).status_code == 401
        assert http.get(f"{fake_openai.url}/models", headers={"Authorization": "Bearer"}).status_code == 401
        listed = http.get(f"{fake_openai.url}/models", headers={"Authorization": "Bearer k"}).json()
        control = http.post(f"{fake_openai.url.removesuffix('/v1')}/_fake/faults",
                            json={"key": MODEL, "fault": {"status": 503, "times": 1}})
        assert control.status_code == 200 and fake_openai.faults[MODEL].status == 503
        recorded = http.get(f"{fake_openai.url.removesuffix('/v1')}/_fake/requests").json()["requests"]
    assert [m["id"] for m in listed["data"]] == [MODEL]
    assert [r["authorized"] for r in recorded] == [False, False, True]
    assert all("authorization" not in r["headers"] for r in recorded)


def test_fake_loads_answers_from_jsonl(tmp_path) -> None:
    messages = [{"role": "user", "content": "2+2?"}]
    path = tmp_path / "answers.jsonl"
    path.write_text(json.dumps({"model": "a", "messages": messages, "answer": "4"}) + "\n"
                    + json.dumps({"model": "b", "answer": "no idea"}) + "\n")
    fake = FakeOpenAI.from_file(path)
    assert fake.answer("a", messages) == "4" and fake.answer("b", messages) == "no idea"
    assert fake.answer("a", [{"role": "user", "content": "3+3?"}]) is None and fake.models == ["a", "b"]


def test_call_result_round_trips() -> None:
    result = CallResult(item_id="1", model=MODEL, error=f"{MODEL}: HTTP 500: boom", status_code=500)
    assert CallResult.model_validate_json(result.model_dump_json()) == result and not result.ok
    assert summarize([]).n == 0


def test_a_provider_going_down_mid_run_fails_the_rest_of_the_items_not_the_run(fake_openai: FakeOpenAI) -> None:
    """Six items answer, then the provider answers 503 to everything: the run ends with 6 answers and 3 failed items
    naming the model and the status, each retried first (so the outage is not a blip)."""
    fake_openai.answers[MODEL] = "billing"
    fake_openai.set_fault(MODEL, Fault(status=503, after=6))
    items = [{"id": f"t{i}", "text": f"ticket {i}"} for i in range(9)]
    results = run_items(client_for(fake_openai, retries=1), CONFIG, items, PRICES, concurrency=1)
    assert [r.item_id for r in results] == [f"t{i}" for i in range(9)]
    assert [r.ok for r in results] == [True] * 6 + [False] * 3
    assert all(r.error.startswith(f"{MODEL}: HTTP 503 after 1 retry") for r in results[6:]), results[6].error
    stats = summarize(results)
    assert (stats.n, stats.errors, stats.retries) == (9, 3, 3) and stats.cost_usd == sum(r.cost_usd for r in results)


JUDGE = JudgeConfig(model=JUDGE_MODEL)
TRIAGE_SCHEMA = {"type": "object", "properties": {"category": {"type": "string"}, "priority": {"type": "string"}},
                 "required": ["category", "priority"], "additionalProperties": False}
RIGHT = {"category": "billing", "priority": "high"}


def _triage_items(n: int) -> list[dict]:
    return [{"id": f"t{i}", "text": f"ticket {i}", "expected": RIGHT} for i in range(n)]


def test_the_judge_sees_only_replies_that_passed_the_checks_and_its_cost_is_its_own(fake_openai: FakeOpenAI) -> None:
    """Six items: right, half right, a refusal, a schema break, a provider error (then the judge is not asked), and
    one the judge cannot grade (provider error on the judge's call): counted as a judge error, the run goes on."""
    replies = {"ticket 0": json.dumps(RIGHT), "ticket 1": json.dumps({**RIGHT, "priority": "low"}),
               "ticket 2": "I'm sorry, I cannot help with that.", "ticket 3": json.dumps({"category": "billing"}),
               "ticket 5": json.dumps(RIGHT)}
    fake_openai.answers[MODEL] = lambda messages: next(v for k, v in replies.items() if k in messages[-1]["content"])
    fake_openai.answers[JUDGE_MODEL] = judge_reply
    items = _triage_items(6)
    fake_openai.set_fault(message_key(MODEL, CONFIG.render(items[4])), Fault(status=500, retry_after_ms=10))
    fake_openai.set_fault(message_key(JUDGE_MODEL, JUDGE.llm_config().render(JUDGE.variables(
        items[5], json.dumps(RIGHT)))), Fault(status=503, retry_after_ms=10))
    prices = PriceTable(prices={**PRICES.prices, JUDGE_MODEL: Price(input_per_1m=1.0, output_per_1m=1.0)})
    setup = EvalSetup(items, TRIAGE_SCHEMA, prices, ProviderSettings(max_retries=1, concurrency=2), JUDGE)
    candidate = evaluate_candidate(client_for(fake_openai, retries=1), CONFIG, setup)

    judged = fake_openai.chat_requests(JUDGE_MODEL)
    assert sorted(r.messages[-1]["content"].split('"text": "')[1].split('"')[0] for r in judged if r.status == 200) \
        == ["ticket 0", "ticket 1"] and len(judged) == 4  # two graded, ticket 5 tried twice (one retry)
    assert judged[0].body["temperature"] == 0 and judged[0].body["response_format"] == {"type": "json_object"}
    assert [(s.judge, s.judge_error) for s in candidate.scores] == [
        (1.0, False), (0.5, False), (0.0, False), (0.0, False), (0.0, False), (0.0, True)]
    assert candidate.scores[3].judge_note.startswith("not judged: reply breaks the schema")
    assert candidate.scores[5].judge_note.startswith(f"judge failed: {JUDGE_MODEL}: HTTP 503 after 1 retry")
    assert candidate.share("judge") == pytest.approx(1.5 / 6) and candidate.exact_share == pytest.approx(2 / 6)
    assert candidate.by_item("judge") == {"t0": 1.0, "t1": 0.5, "t2": 0.0, "t3": 0.0, "t4": 0.0, "t5": 0.0}
    # Priced from the same table, apart from the candidate's own (serving) cost.
    assert candidate.judge_stats.n == 3 and candidate.judge_stats.errors == 1
    assert candidate.judge_stats.cost_usd == pytest.approx(sum(r.prompt_tokens + r.completion_tokens
                                                               for r in candidate.judge_results) / 1e6)
    assert candidate.stats.cost_usd == pytest.approx(sum(r.cost_usd for r in candidate.results))
    row = candidate.row()
    assert (row["judge score"], row["judge errors"], row["cached"]) == ("0.250", "1", "no")


def test_an_unpriced_judge_or_one_missing_a_variable_fails_before_anything_is_sent(fake_openai: FakeOpenAI) -> None:
    provider = ProviderSettings()
    with pytest.raises(LLMConfigError, match="no price for model 'fake-judge'"):
        EvalSetup(_triage_items(2), None, PRICES, provider, JUDGE)
    asks_for_more = JUDGE.model_copy(update={"template": "{{ reply }} for {{ customer }}"})
    priced = PriceTable(prices={"*": Price(input_per_1m=1, output_per_1m=1)})
    with pytest.raises(LLMConfigError, match=r"judge, item 't0': template variable\(s\) 'customer' missing"):
        EvalSetup(_triage_items(2), None, priced, provider, asks_for_more)
    with pytest.raises(ValidationError, match=r"add \{\{ reply \}\}"):
        JudgeConfig(model=JUDGE_MODEL, template="Grade {{ expected }}")
    assert fake_openai.chat_requests() == []


def test_the_fake_judge_scores_the_share_of_expected_fields_matched() -> None:
    def ask(expected: dict, reply: str) -> dict:
        item = {"id": "1", "ticket": "x", "expected": expected}
        return json.loads(judge_reply(JUDGE.llm_config().render(JUDGE.variables(item, reply))))

    assert ask(RIGHT, json.dumps({"priority": "HIGH", "category": "billing"})) == {
        "score": 1.0, "reason": "every expected field matches"}
    assert ask(RIGHT, json.dumps({**RIGHT, "priority": "low"})) == {
        "score": 0.5, "reason": "priority: 'low' instead of 'high'"}
    assert ask(RIGHT, "no JSON here")["score"] == 0
