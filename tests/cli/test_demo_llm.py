"""`make demo-llm` (`python -m cli.demo_llm`): the stand-in provider, three evaluations, one promotion after the
first champion and one refusal, the judge's scores beside them and the champion's stored results reused, told from
the real flow's results."""

from __future__ import annotations

import uuid

import pytest

from tasks.registry.audit import read_audit
from tasks.registry.versions import alias_state

pytestmark = [pytest.mark.usefixtures("prefect_harness"), pytest.mark.integration]


def test_the_llm_demo_promotes_the_better_prompt_and_refuses_the_bigger_model(capsys, tracking, monkeypatch) -> None:
    from cli.demo_llm import main

    for key in ("OPENAI_API_KEY", "OPENAI_BASE_URL"):  # the demo sets its own for its stand-in provider
        monkeypatch.setenv(key, "")
    name = f"triage-{uuid.uuid4().hex[:6]}"
    assert main(["--prompt-name", name]) == 0
    out = capsys.readouterr().out
    assert "→ v1: promoted (first version" in out and "→ v2: promoted (challenger better" in out, out
    assert "→ v3: refused (" in out, out
    assert out.count("champion: its stored results reused, nothing sent for it") == 2, out  # runs 2 and 3
    assert "judge score" in out
    assert alias_state(tracking, name).champion == "2"
    assert [r.action for r in read_audit(tracking, name)] == ["promote", "promote", "refuse"]
