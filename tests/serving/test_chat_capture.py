"""Chat capture: one record per chat request under <capture dir>/<prompt>/chat/<day>/, read back by
read_chat_capture; raw variables and answer text only with NIGHTSHIFT_SERVER_CAPTURE_CHAT_TEXT."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from cli.fake_openai import Fault
from nightshift.settings import Settings
from serving.chat_capture import chat_parts, read_chat_capture
from serving.server import create_app
from tests.serving.conftest import TOKEN, register_prompt


@pytest.fixture
def prompt(tracking) -> str:
    """Prompt v1 (fake-small, one variable `ticket`), champion."""
    from tasks.registry.versions import move_champion

    name = f"cap-{uuid.uuid4().hex[:8]}"
    move_champion(tracking, name, register_prompt(tracking, name))
    return name


def _app(tmp_path: Path, prompt: str, **values: object):
    from tasks.llm.config import ProviderSettings

    settings = Settings(model_name=f"no-model-{uuid.uuid4().hex[:6]}", catalogue_path=tmp_path / "none.yaml",
                        server_prompts=[prompt], server_token=TOKEN, capture_dir=tmp_path / "served", **values)
    return create_app(settings, ProviderSettings(timeout_seconds=5.0, max_retries=0))


def test_chat_requests_are_recorded_without_their_text(fake_openai, prompt, tmp_path) -> None:
    root = tmp_path / "served"
    with TestClient(_app(tmp_path, prompt)) as client:
        chat = f"/models/{prompt}/chat"
        ok = client.post(chat, json={"variables": {"ticket": "secret card 4111"}}, headers={"X-Request-Id": "ok-1"})
        assert ok.status_code == 200, ok.text
        assert client.post(chat, json={"variables": {}}, headers={"X-Request-Id": "bad-1"}).status_code == 400
        fake_openai.set_fault("*", Fault(status=503))
        assert client.post(chat, json={"variables": {"ticket": "x"}}, headers={"X-Request-Id": "down-1"}
                           ).status_code == 502
        assert client.post("/models/not-served/chat", json={}).status_code == 404  # no prompt: no record
    frame = read_chat_capture(root, prompt)
    assert list(frame["request_id"]) == ["ok-1", "bad-1", "down-1"]
    assert [p.relative_to(root).parts[:2] for p in chat_parts(root, prompt)] == [(prompt, "chat")]
    assert "variables" not in frame.columns and "text" not in frame.columns
    assert "secret card" not in "".join(p.read_bytes().decode("latin-1") for p in root.rglob("*.parquet"))
    good, bad, down = (frame.iloc[i] for i in range(3))
    body = ok.json()
    assert (good["prompt"], good["prompt_version"], good["provider_model"], good["status"], good["outcome"]) == (
        prompt, "1", "fake-small", 200, "ok")
    assert (good["prompt_tokens"], good["completion_tokens"]) == (body["usage"]["prompt_tokens"],
                                                                   body["usage"]["completion_tokens"])
    assert good["cost_usd"] == pytest.approx(body["cost_usd"]) and good["cost_usd"] > 0
    assert good["latency_ms"] == body["latency_ms"] > 0 and good["queued_ms"] == body["queued_ms"]
    assert isinstance(good["captured_at"], pd.Timestamp) and str(good["captured_at"].tz) == "UTC"
    assert (bad["status"], bad["outcome"], bad["prompt_version"]) == (400, "INVALID_PARAMETER_VALUE", "1")
    assert "missing variable(s) 'ticket'" in bad["error"] and pd.isna(bad["latency_ms"])
    assert (down["status"], down["outcome"], down["provider_status"], down["provider_model"]) == (
        502, "PROVIDER_ERROR", 503, "fake-small")
    assert down["latency_ms"] > 0 and pd.isna(down["cost_usd"]) and pd.isna(down["prompt_tokens"])


def test_chat_text_is_recorded_when_the_setting_says_so(fake_openai, prompt, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("NIGHTSHIFT_SERVER_CAPTURE_CHAT_TEXT", "true")
    with TestClient(_app(tmp_path, prompt)) as client:
        reply = client.post(f"/models/{prompt}/chat", json={"variables": {"ticket": "I was charged twice"}})
        assert reply.status_code == 200, reply.text
    record = read_chat_capture(tmp_path / "served", prompt).iloc[0]
    assert json.loads(record["variables"]) == {"ticket": "I was charged twice"}
    assert record["text"] == reply.json()["text"] == "echo: Ticket: I was charged twice"


def test_a_capture_failure_never_fails_the_reply_and_is_counted(fake_openai, prompt, tmp_path) -> None:
    with TestClient(_app(tmp_path, prompt)) as client:
        capture = client.app.state.nightshift.chat_capture

        def broken(*args: object, **kwargs: object) -> bool:
            raise OSError("disk gone")

        capture.capture.offer = broken
        assert client.post(f"/models/{prompt}/chat", json={"variables": {"ticket": "hi"}}).status_code == 200
        scrape = client.get("/metrics").text
    assert f'nightshift_capture_write_errors_total{{model="{prompt}"}} 1.0' in scrape
    assert read_chat_capture(tmp_path / "served", prompt).empty
