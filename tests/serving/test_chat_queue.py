"""The chat route's bounded queue (503 + Retry-After beyond `concurrency` in flight and `queue` waiting) and its
NIGHTSHIFT_SERVER_PROVIDER_* settings."""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from pydantic import ValidationError

from nightshift.errors import ConfigError
from nightshift.settings import Settings
from serving import chat
from serving.server import create_app
from tests.conftest import free_port
from tests.serving.conftest import TOKEN, register_prompt

TICKET = {"variables": {"ticket": "I was charged twice"}}


@pytest.fixture
def prompt(tracking) -> str:
    """Prompt v1 (fake-small, one variable `ticket`), champion."""
    from tasks.registry.versions import move_champion

    name = f"queue-{uuid.uuid4().hex[:8]}"
    move_champion(tracking, name, register_prompt(tracking, name))
    return name


def _settings(tmp_path: Path, prompt: str, **values: Any) -> Settings:
    return Settings(model_name=f"no-model-{uuid.uuid4().hex[:6]}", catalogue_path=tmp_path / "none.yaml",
                    server_prompts=[prompt], server_token=TOKEN, capture_enabled=False, **values)


@contextmanager
def _blocking_provider(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[threading.Event, list[str]]]:
    """tasks.llm.provider.complete replaced by a call that waits for the event (50 ms when it is set)."""
    from tasks.llm.provider import CallResult

    release, entered = threading.Event(), []

    def complete(client: Any, config: Any, variables: Any, item_id: str, prices: Any) -> CallResult:
        entered.append(item_id)
        release.wait(10)
        return CallResult(item_id=item_id, model=config.model, text="done", prompt_tokens=3, completion_tokens=2,
                          latency_ms=50.0)

    monkeypatch.setenv("OPENAI_API_KEY", "sk-queue-test")
    monkeypatch.setattr("tasks.llm.provider.complete", complete)
    try:
        yield release, entered
    finally:
        release.set()


def _until(condition: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.005)


def _metric(text: str, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    return None


def test_a_full_queue_is_a_503_with_retry_after_counted_and_it_clears(prompt, tmp_path, monkeypatch) -> None:
    from tasks.llm.config import ProviderSettings

    chat_url = f"/models/{prompt}/chat"
    provider = ProviderSettings(timeout_seconds=7.0, max_retries=1, concurrency=2)
    with _blocking_provider(monkeypatch) as (release, entered), \
            TestClient(create_app(_settings(tmp_path, prompt), provider, chat_queue=3)) as client, \
            ThreadPoolExecutor(5) as pool:
        backend = client.app.state.nightshift.backend
        admitted = [pool.submit(client.post, chat_url, json=TICKET) for _ in range(5)]
        _until(lambda: backend.load() == (2, 3))  # two at the provider, three waiting: the limit exactly
        refused = client.post(chat_url, json=TICKET, headers={"X-Request-Id": "over"})
        assert refused.status_code == 503, refused.text
        assert refused.headers["retry-after"] == "7"  # no call finished yet: one provider timeout
        body = refused.json()
        assert (body["error_code"], body["request_id"], refused.headers["x-request-id"], body["prompt_version"]) \
            == ("QUEUE_FULL", "over", "over", "1")
        assert "2 provider call(s) are all in flight and its queue of 3 is full" in body["message"]
        assert "NIGHTSHIFT_SERVER_PROVIDER_QUEUE" in body["message"]
        scrape = client.get("/metrics").text
        assert _metric(scrape, "nightshift_chat_rejected_total", model=prompt) == 1
        assert (_metric(scrape, "nightshift_chat_calls_in_flight"), _metric(scrape, "nightshift_chat_calls_waiting")) \
            == (2, 3)
        assert len(entered) == 2

        release.set()
        assert [f.result().status_code for f in admitted] == [200] * 5
        assert client.post(chat_url, json=TICKET).status_code == 200
        assert backend.load() == (0, 0) and backend.retry_after() == 1  # now from the calls' 50 ms: at least 1 s
        route = client.get("/openapi.json").json()["paths"]["/models/{name}/chat"]["post"]
        assert "QUEUE_FULL" in route["responses"]["503"]["description"]
        assert "Retry-After" in route["responses"]["503"]["headers"]


def test_a_zero_queue_refuses_as_soon_as_every_slot_is_busy(prompt, tmp_path, monkeypatch) -> None:
    from tasks.llm.config import ProviderSettings

    provider = ProviderSettings(timeout_seconds=2.5, concurrency=1)
    with _blocking_provider(monkeypatch) as (release, _), \
            TestClient(create_app(_settings(tmp_path, prompt), provider, chat_queue=0)) as client, \
            ThreadPoolExecutor(1) as pool:
        busy = pool.submit(client.post, f"/models/{prompt}/chat", json=TICKET)
        _until(lambda: client.app.state.nightshift.backend.load() == (1, 0))
        refused = client.post(f"/models/{prompt}/chat", json=TICKET)
        assert (refused.status_code, refused.headers["retry-after"]) == (503, "3")  # 2.5 s rounded up
        release.set()
        assert busy.result().status_code == 200


def test_provider_settings_from_the_environment_reach_the_backend(fake_openai, prompt, tmp_path,
                                                                  monkeypatch) -> None:
    from tasks.llm.config import ProviderSettings

    base = os.environ["OPENAI_BASE_URL"]  # the fake provider's (fixture fake_openai)
    monkeypatch.setenv("OPENAI_BASE_URL", f"http://127.0.0.1:{free_port()}/v1")  # nobody there: the setting wins
    monkeypatch.setenv("NIGHTSHIFT_SERVER_PROVIDER_BASE_URL", base)
    monkeypatch.setenv("NIGHTSHIFT_SERVER_PROVIDER_TIMEOUT_S", "4.5")
    monkeypatch.setenv("NIGHTSHIFT_SERVER_PROVIDER_MAX_RETRIES", "0")
    monkeypatch.setenv("NIGHTSHIFT_SERVER_PROVIDER_CONCURRENCY", "3")
    monkeypatch.setenv("NIGHTSHIFT_SERVER_PROVIDER_QUEUE", "5")
    monkeypatch.setenv("NIGHTSHIFT_SERVER_PROVIDER_PRICES",
                       json.dumps({"fake-small": {"input_per_1m": 1000, "output_per_1m": 2000}}))
    settings = _settings(tmp_path, prompt)
    with TestClient(create_app(settings)) as client:
        backend = client.app.state.nightshift.backend
        assert (backend.provider.base_url, backend.provider.timeout_seconds, backend.provider.max_retries,
                backend.provider.concurrency, backend.queue) == (base, 4.5, 0, 3, 5)
        reply = client.post(f"/models/{prompt}/chat", json=TICKET)
        assert reply.status_code == 200, reply.text
        usage = reply.json()["usage"]
        assert reply.json()["cost_usd"] == pytest.approx((usage["prompt_tokens"] * 1000 +
                                                          usage["completion_tokens"] * 2000) / 1e6)
    assert len(fake_openai.chat_requests()) == 1
    given = create_app(settings, ProviderSettings(concurrency=1), chat_queue=0).state.nightshift.backend
    assert (given.provider.concurrency, given.queue, given.provider.timeout_seconds) == (1, 0, 30.0)  # arguments win


def test_unset_provider_settings_keep_todays_defaults(monkeypatch) -> None:
    from tasks.llm.config import DEFAULT_PRICES, ProviderSettings

    for key in ("BASE_URL", "TIMEOUT_S", "MAX_RETRIES", "CONCURRENCY", "QUEUE", "PRICES"):
        monkeypatch.delenv(f"NIGHTSHIFT_SERVER_PROVIDER_{key}", raising=False)
    monkeypatch.setenv("OPENAI_BASE_URL", "http://provider.example/v1")
    settings = Settings(_env_file=None)
    assert chat.provider_from_settings(settings) == ProviderSettings()
    assert chat.prices_from_settings(settings) == DEFAULT_PRICES
    assert (settings.server_provider_queue, settings.server_capture_chat_text) == (32, False)


def test_bad_provider_settings_fail_naming_the_setting(tmp_path, monkeypatch) -> None:
    for value, problem in (('{"fake-small": {"input_per_1m": 1}}', "the price of model 'fake-small' must be"),
                           ('{"fake-small": ', "is not valid JSON"),
                           ("prices.txt", "is neither a JSON object nor a .json/.yaml/.yml file path"),
                           (str(tmp_path / "missing.yaml"), "cannot read"),
                           ("[1, 2]", "neither a JSON object")):
        monkeypatch.setenv("NIGHTSHIFT_SERVER_PROVIDER_PRICES", value)
        with pytest.raises(ValidationError, match=rf"NIGHTSHIFT_SERVER_PROVIDER_PRICES.*{problem}"):
            Settings()
    table = tmp_path / "prices.yaml"
    table.write_text("gpt-4o-mini: {input_per_1m: 0.15, output_per_1m: 0.6}\n"
                     "'*': {input_per_1m: 1, output_per_1m: 2}\n")
    monkeypatch.setenv("NIGHTSHIFT_SERVER_PROVIDER_PRICES", str(table))
    prices = chat.prices_from_settings(Settings())
    assert prices.cost("anything-else", 1_000_000, 0) == 1.0 and prices.price("gpt-4o-mini").output_per_1m == 0.6

    monkeypatch.delenv("NIGHTSHIFT_SERVER_PROVIDER_PRICES")
    monkeypatch.setenv("NIGHTSHIFT_SERVER_PROVIDER_BASE_URL", "https://user:secret@provider.example/v1")
    with pytest.raises(ConfigError, match="NIGHTSHIFT_SERVER_PROVIDER_BASE_URL: .*must not carry credentials"):
        chat.provider_from_settings(Settings())
    monkeypatch.setenv("NIGHTSHIFT_SERVER_PROVIDER_BASE_URL", "")
    monkeypatch.setenv("NIGHTSHIFT_SERVER_PROVIDER_QUEUE", "-1")
    with pytest.raises(ValidationError, match="server_provider_queue"):
        Settings()
