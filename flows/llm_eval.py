"""LLM evaluation flow: candidates (prompt + model config) → the bundled or given evaluation set through the OpenAI
client → per-item scores, cost, latency → the best candidate registered and gated against the champion → promoted
or refused, with the same aliases, audit trail and rollback as a scikit-learn model."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from prefect import flow
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from pydantic import BaseModel, ConfigDict, Field

from nightshift.naming import MODEL_NAME_PATTERN, artifact_key
from nightshift.settings import PROJECT_ROOT, get_settings
from tasks.evaluate import GateDecision, LLMGateConfig, gate_scores
from tasks.llm import (DEFAULT_PRICES, Candidate, LLMConfig, PriceTable, ProviderSettings, evaluate_candidate_task,
                       live_config_task, load_eval_set_task, make_client, register_candidate_task)
from tasks.promote import PromotionOutcome, alias_state_task, promote, record_decision_task, record_refusal_task
from tasks.tracking import TrackingConfig


class LLMEvalParams(BaseModel):
    """Which prompt + model candidates, on which items, judged how (a Prefect UI form)."""

    model_config = ConfigDict(extra="forbid")

    prompt_name: str = Field("ticket-triage", pattern=MODEL_NAME_PATTERN, title="Prompt name",
                             description="The registered prompt whose champion the candidates challenge.")
    candidates: list[LLMConfig] = Field(..., min_length=1, max_length=10, title="Candidates",
                                        description="Prompt templates with their model configuration.")
    dataset: str = Field("evalsets/support_tickets.jsonl", title="Evaluation set",
                         description="JSON lines: id, the template's variables, and the exact expected answer.")
    answer_schema: str | None = Field("evalsets/support_tickets.schema.json", title="Answer JSON schema",
                                      description="Replies must be JSON valid for it (empty: plain-text answers).")
    provider: ProviderSettings = Field(default_factory=ProviderSettings, title="Provider",
                                       description="OpenAI-compatible endpoint, timeout, retries, concurrency.")
    prices: PriceTable = Field(default_factory=lambda: DEFAULT_PRICES, title="Price table",
                               description="USD per 1M tokens by provider model, for the cost budget.")
    gate: LLMGateConfig = Field(default_factory=LLMGateConfig, title="Promotion gate",
                                description="Margin, floor and the cost and latency budgets vs the champion.")


class LLMEvalResult(BaseModel):
    """The evaluation table, the decision and where the champion points now."""

    prompt_name: str
    candidates: list[Candidate]
    challenger_version: str
    decision: GateDecision | None = Field(description="None when the champion's own content won.")
    action: str
    champion_before: str | None
    champion_after: str | None


@flow(name="llm-eval", log_prints=True)
def llm_eval(params: LLMEvalParams) -> LLMEvalResult:
    """Evaluate prompt + model candidates on the same items, gate the best against the champion, promote or keep.

    Args:
        params: The candidates, the evaluation set, the provider and the gate with its budgets.
    """
    cfg = TrackingConfig.from_settings(get_settings())
    client = make_client(params.provider)  # no OPENAI_API_KEY: fails here, before anything is read or sent
    items, schema = load_eval_set_task(_path(params.dataset), _path(params.answer_schema))
    name, champion = params.prompt_name, alias_state_task(cfg, params.prompt_name).champion

    # 1. Every candidate, and the champion again, on the same items (the gate pairs them item by item).
    live = live_config_task(cfg, name, champion) if champion else None
    judged = [evaluate_candidate_task(client, c, items, schema, params.prices, params.provider.concurrency)
              for c in [*params.candidates, *([live] if live else [])]]
    mine, theirs = judged[:len(params.candidates)], judged[len(params.candidates):]
    create_table_artifact(key=artifact_key("llm-eval", name), table=[c.row() for c in judged],
                          description=f"{len(items)} items, {len(judged)} prompt + model configurations")

    # 2. The best candidate (most exact answers, then cheapest) is registered, gated against the champion.
    best = max(mine, key=lambda c: (c.exact_share, -c.stats.cost_per_1k_items))
    version = register_candidate_task(cfg, name, best)
    if version == champion:  # the champion's own content won: nothing to decide
        print(f"{name}: the best candidate is the champion v{champion} itself")
        return LLMEvalResult(prompt_name=name, candidates=judged, challenger_version=version, decision=None,
                             action="already-champion", champion_before=champion, champion_after=champion)
    other = theirs[0] if theirs else None
    decision = gate_scores(best.item_scores, other.item_scores if other else None, params.gate,
                           challenger_cost_per_1k=best.stats.cost_per_1k_items,
                           challenger_p95_ms=best.stats.latency_p95_ms,
                           champion_cost_per_1k=other.stats.cost_per_1k_items if other else None,
                           champion_p95_ms=other.stats.latency_p95_ms if other else None,
                           challenger_version=version, champion_version=champion)
    record_decision_task(cfg, name, version, decision)
    create_markdown_artifact(key=artifact_key("llm-gate", name), markdown=decision.markdown(),
                             description=decision.reason)

    # 3. Promote through the one promotion path (locked, compare-and-swap, audited), or record the refusal.
    if decision.promote:
        outcome: PromotionOutcome = promote(cfg, name, decision, server_url=None, token=None)
        action, after = outcome.status, outcome.champion_after
    else:
        action, after = "refused" if record_refusal_task(cfg, name, decision, None) else "already-decided", champion
    print(f"{name}: {action}; champion {champion or '-'} -> {after or '-'} ({decision.reason})")
    return LLMEvalResult(prompt_name=name, candidates=judged, challenger_version=version, decision=decision,
                         action=action, champion_before=champion, champion_after=after)


def _path(value: str | None) -> Path | None:
    """A dataset path as given, relative ones read from the project root."""
    return None if value is None else (Path(value) if Path(value).is_absolute() else PROJECT_ROOT / value)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m flows.llm_eval", description=llm_eval.description)
    parser.add_argument("--params", required=True, help="all parameters as one JSON object (see the deployment form)")
    args = parser.parse_args(sys.argv[1:])
    print(llm_eval(LLMEvalParams.model_validate(json.loads(args.params))).model_dump_json(indent=2))
