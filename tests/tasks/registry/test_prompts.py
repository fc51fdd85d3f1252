"""Prompts in MLflow's prompt registry: versioned, hashed and promoted through the same alias/audit path as models."""

from __future__ import annotations

import json
import uuid

import pytest

from cli.fake_openai import Fault
from nightshift.errors import ConfigError, TrackingError, TrackingUnavailable
from tasks.registry import store, versions
from tasks.registry.audit import AuditRecord, append_audit, read_audit
from tasks.registry.promote import promote, record_refusal, recorded_decision
from tasks.registry.prompts import (
    PromptContentMismatch,
    find_prompt_version_by_content,
    load_prompt_version,
    prompt_content_hash,
    register_prompt_version,
)
from tasks.registry.runs import LoggedModel, get_run, start_run
from tasks.registry.versions import (
    CHAMPION,
    CONTENT_HASH_TAG,
    EVAL_RUN_TAG,
    GATE_TAG,
    PREVIOUS,
    AliasState,
    alias_state,
    find_version_by_tag,
    is_prompt,
    list_versions,
    move_champion,
    register_model_version,
    resolve_version,
    restore_aliases,
    tag_version,
    version_run_id,
    version_tags,
)
from tests.tasks.conftest import decision_for

CONFIG = {"provider": "openai", "model_name": "gpt-4o-mini", "temperature": 0.0, "max_tokens": 200}


@pytest.fixture
def prompt(tracking, tmp_path, monkeypatch) -> str:
    """A prompt with two versions, registered from an empty cwd with no MLflow URI in the environment."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    name = f"p_{uuid.uuid4().hex[:10]}.v1"
    assert register_prompt_version(tracking, name, "You classify into {{ labels }}.", "{{ text }}", CONFIG,
                                      {EVAL_RUN_TAG: "run-1"}) == "1"
    assert register_prompt_version(tracking, name, "You classify into {{ labels }}. Be brief.", "{{ text }}",
                                      {**CONFIG, "temperature": 0.2}, {}) == "2"
    assert list(tmp_path.iterdir()) == []  # no ./mlflow.db from a fluent default
    return name


def test_prompt_promotes_like_a_model(tracking, prompt) -> None:
    assert is_prompt(tracking, prompt)
    assert alias_state(tracking, prompt) == AliasState(None, None)
    assert move_champion(tracking, prompt, "1") == AliasState(None, None)
    before = move_champion(tracking, prompt, "2")
    assert alias_state(tracking, prompt) == AliasState("2", "1")
    restore_aliases(tracking, prompt, before)
    assert alias_state(tracking, prompt) == AliasState("1", None)  # previous deleted again

    tag_version(tracking, prompt, "2", {GATE_TAG: decision_for("2", True, "1").model_dump_json()})
    assert recorded_decision(tracking, prompt, "2").promote is True
    assert find_version_by_tag(tracking, prompt, EVAL_RUN_TAG, "run-1") == "1"
    assert [str(v.version) for v in list_versions(tracking, prompt)] == ["2", "1"]
    assert version_run_id(tracking, prompt, "1") == "run-1"
    with pytest.raises(TrackingError, match="has no eval run"):
        version_run_id(tracking, prompt, "2")
    assert resolve_version(tracking, prompt).version == "1"

    record = AuditRecord(time="20261126T010203.000000Z", model_name=prompt, action="promote", from_version="1",
                            to_version="2", reason="better answers")
    append_audit(tracking, record)
    assert record_refusal(tracking, prompt, decision_for("2", False, "1"), None)
    assert [r.action for r in read_audit(tracking, prompt)] == ["promote", "refuse"]
    assert read_audit(tracking, prompt)[0] == record
    entry = version_tags(tracking, prompt, "2")["nightshift.audit.20261126T010203.000000Z.promote"]
    assert json.loads(entry)["to_version"] == "2"



@pytest.mark.usefixtures("prefect_harness")  # the session's; promote() runs Prefect tasks in a transaction
def test_promote_and_roll_back_a_prompt(tracking, prompt) -> None:
    for version, champion in (("1", None), ("2", "1")):
        decision = decision_for(version, True, champion)
        tag_version(tracking, prompt, version, {GATE_TAG: decision.model_dump_json()})
        assert promote(tracking, prompt, decision, server_url=None, token=None).status == "promoted"
    assert alias_state(tracking, prompt) == AliasState("2", "1")
    back = promote(tracking, prompt, recorded_decision(tracking, prompt, "1"), server_url=None, token=None,
                   action="rollback", expected_champion="2", reason="answers got worse")
    assert (back.status, alias_state(tracking, prompt).champion) == ("promoted", "1")
    assert [(r.action, r.to_version) for r in read_audit(tracking, prompt)] == [
        ("promote", "1"), ("promote", "2"), ("rollback", "1")]
    assert "nightshift.audit." in " ".join(version_tags(tracking, prompt, "1"))


def test_same_content_registers_once(tracking, prompt) -> None:
    system = "You classify into {{ labels }}."
    config = {**CONFIG, "temperature": 0, "top_p": None}  # as MLflow stores it: 0.0, no None: the same content
    assert register_prompt_version(tracking, prompt, system, "{{ text }}", config, {"other": "x"}) == "1"
    digest = prompt_content_hash(system, "{{ text }}", CONFIG)
    assert find_prompt_version_by_content(tracking, prompt, digest) == "1"
    assert find_prompt_version_by_content(tracking, prompt, "0" * 64) is None
    assert find_prompt_version_by_content(tracking, "no-such-prompt", digest) is None
    assert version_tags(tracking, prompt, "1")[CONTENT_HASH_TAG] == digest
    with pytest.raises(ConfigError, match="Invalid prompt model config"):
        register_prompt_version(tracking, prompt, system, "{{ text }}", {"temperature": -1}, {})


def test_a_version_changed_after_registration_fails_to_load(tracking, prompt) -> None:
    snap = load_prompt_version(tracking, prompt, "1")
    assert (snap.system, snap.template, snap.llm_config, snap.tags[EVAL_RUN_TAG]) == (
        "You classify into {{ labels }}.", "{{ text }}", CONFIG, "run-1")
    assert snap.model_dump()["model_config"] == CONFIG
    with pytest.raises(TrackingError, match="register a new version"):
        tag_version(tracking, prompt, "1", {"_mlflow_prompt_model_config": "{}"})
    tampered = json.dumps({**CONFIG, "temperature": 1.5})
    store.client(tracking).set_prompt_version_tag(prompt, "1", "_mlflow_prompt_model_config", tampered)
    with pytest.raises(PromptContentMismatch, match=f"Prompt '{prompt}' version 1 was changed after registration"):
        load_prompt_version(tracking, prompt, "1")
    # the tampered version is not reused: the original content becomes a new version
    assert register_prompt_version(tracking, prompt, snap.system, snap.template, CONFIG, {}) == "3"


def test_load_by_alias_sees_a_move_at_once(tracking, prompt) -> None:
    with pytest.raises(TrackingError, match="has no 'champion' version yet"):
        load_prompt_version(tracking, prompt)
    move_champion(tracking, prompt, "1")
    cached = store.client(tracking).load_prompt(f"prompts:/{prompt}@champion")  # fills MLflow's 60 s alias cache
    assert (cached.version, load_prompt_version(tracking, prompt).version) == (1, "1")
    move_champion(tracking, prompt, "2")
    snap = load_prompt_version(tracking, prompt, CHAMPION)
    assert (snap.version, snap.alias, snap.llm_config["temperature"]) == ("2", "champion", 0.2)
    assert load_prompt_version(tracking, prompt, PREVIOUS).version == "1"


def test_models_keep_the_model_path(tracking, model_name, monkeypatch) -> None:
    run_id = start_run(tracking, "prompt-tests")
    logged = LoggedModel(model_uri=f"runs:/{run_id}/model", model_id=None, run_id=run_id)
    assert register_model_version(tracking, model_name, logged) == "1"
    assert not is_prompt(tracking, model_name) and not is_prompt(tracking, "no-such-name")
    move_champion(tracking, model_name, "1")
    assert alias_state(tracking, model_name) == AliasState("1", None)
    assert version_run_id(tracking, model_name, "1") == run_id
    with pytest.raises(TrackingError, match="is not a prompt"):
        load_prompt_version(tracking, model_name, "1")
    with pytest.raises(TrackingError, match="registering a version of prompt"):
        register_prompt_version(tracking, model_name, "s", "{{ t }}", CONFIG, {})

    from sqlalchemy.exc import OperationalError

    class Locked:
        def search_prompts(self, **_: object) -> None:
            raise OperationalError("SELECT", {}, Exception("database is locked"))

    monkeypatch.setattr(versions, "client", lambda cfg: Locked())
    with pytest.raises(TrackingUnavailable, match="checking whether"):  # never read as "not a prompt"
        alias_state(tracking, "not-yet-known")


def test_a_versions_results_are_reused_only_on_the_same_items_judge_and_provider(tracking, fake_openai) -> None:
    """Stored as an MLflow eval run tagged on the prompt version: found again for the same version, items (in any
    order), judge and provider, priced with today's table; a changed item, judge, endpoint or age misses."""
    from tasks.llm.config import DEFAULT_PRICES, LLMConfig, Price, PriceTable, ProviderSettings
    from tasks.llm.evaluation import (
        EvalSetup,
        JudgeConfig,
        evaluate_candidate,
        live_config,
        load_results,
        results_key,
        store_results,
    )
    from tasks.llm.provider import make_client

    fake_openai.answers["fake-small"] = json.dumps({"category": "billing", "priority": "high"})
    config = LLMConfig(model="fake-small", system="Triage.", template="Ticket: {{ ticket }}", temperature=0.1,
                       response_format="json_object")
    items = [{"id": f"t{i}", "ticket": f"ticket {i}", "expected": {"category": "billing", "priority": "high"}}
             for i in range(5)]
    provider = ProviderSettings(max_retries=0)
    setup = EvalSetup(items, None, DEFAULT_PRICES, provider)
    candidate = evaluate_candidate(make_client(provider), config, setup)
    name = f"p_{uuid.uuid4().hex[:10]}"
    version = register_prompt_version(tracking, name, config.system, config.template,
                                         config.model_dump(include={"model", "temperature", "max_tokens",
                                                                    "response_format"}))
    run_id = store_results(tracking, name, version, candidate, setup)
    assert run_id and get_run(tracking, run_id).data.metrics["exact_share"] == 1.0

    def found(s: EvalSetup, hours: float = 1.0):
        return load_results(tracking, name, version, results_key(name, version, live_config(tracking, name, version),
                                                                 s), s, hours)

    stored, note = found(setup)
    assert stored is not None and note.startswith(f"results of run {run_id}") and stored[1] == []
    assert [r.model_dump(exclude={"cost_usd"}) for r in stored[0]] == [
        r.model_dump(exclude={"cost_usd"}) for r in candidate.results]
    reordered, _ = found(EvalSetup(items[::-1], None, DEFAULT_PRICES, provider))
    assert [r.item_id for r in reordered[0]] == ["t4", "t3", "t2", "t1", "t0"]
    dearer = PriceTable(prices={"fake-small": Price(input_per_1m=100, output_per_1m=100)})
    repriced, _ = found(EvalSetup(items, None, dearer, provider))
    assert repriced[0][0].cost_usd == pytest.approx((repriced[0][0].prompt_tokens + repriced[0][0].completion_tokens)
                                                    * 100 / 1e6)

    changed = [*items[:4], {**items[4], "expected": {"category": "bug", "priority": "low"}}]
    misses = [EvalSetup(changed, None, DEFAULT_PRICES, provider), EvalSetup(items[:4], None, DEFAULT_PRICES, provider),
              EvalSetup(items, {"type": "object"}, DEFAULT_PRICES, provider),
              EvalSetup(items, None, DEFAULT_PRICES, provider, JudgeConfig(model="fake-judge")),
              EvalSetup(items, None, DEFAULT_PRICES, ProviderSettings(base_url="http://127.0.0.1:9/v1"))]
    for other in misses:
        assert found(other) == (None, "no stored results for this version, eval set, judge and provider")
    stale, why = found(setup, hours=1e-9)
    assert stale is None and why.startswith("stored results are 0.0 h old (reused up to 1e-09 h)")

    fake_openai.set_fault("fake-small", Fault(status=500))
    failed = evaluate_candidate(make_client(provider), config, EvalSetup(items[:2], None, DEFAULT_PRICES, provider))
    assert store_results(tracking, name, version, failed, setup) is None  # a failed call is never reused
