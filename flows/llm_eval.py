"""LLM evaluation flow: prompt + model candidates on an evaluation set through the OpenAI client → per-item scores
(deterministic, then an optional LLM judge), cost, latency → the best registered and gated against the champion (its
stored results reused when unchanged) → promoted or refused like a scikit-learn model (aliases, audit, redeploy)."""

from __future__ import annotations

import argparse
import json
import sys

from prefect import flow
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from pydantic import BaseModel, ConfigDict, Field, model_validator

from nightshift.naming import MODEL_NAME_PATTERN, artifact_key
from nightshift.settings import PROJECT_ROOT, get_settings
from tasks.llm.config import DEFAULT_PRICES, LLMConfig, PriceTable, ProviderSettings
from tasks.llm.evaluation import (
    CacheState,
    Candidate,
    EvalSetup,
    JudgeConfig,
    best_candidate,
    evaluate_candidate_task,
    evaluate_champion,
    gate_candidate,
    load_eval_set_task,
    register_candidate_task,
    settle,
    spent_usd,
)
from tasks.llm.provider import make_client
from tasks.llm.scoring import LLMGateConfig
from tasks.model.gate import GateDecision
from tasks.registry.promote import DeployOutcome, alias_state_task
from tasks.registry.store import TrackingConfig


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
                               description="USD per 1M tokens by provider model (judge included), for the budgets.")
    judge: JudgeConfig | None = Field(None, title="LLM judge (optional)",
                                      description="Grades replies that passed the deterministic checks, 0..1.")
    gate: LLMGateConfig = Field(default_factory=LLMGateConfig, title="Promotion gate",
                                description="Metric, margin, floor and the cost and latency budgets vs the champion.")
    champion_cache_hours: float = Field(168.0, ge=0, le=8760, title="Reuse champion results (hours)",
                                        description="Same champion, items, judge, provider: not re-run (0: always).")

    @model_validator(mode="after")
    def _judge_for_judge_metric(self) -> LLMEvalParams:
        if self.gate.metric == "judge" and self.judge is None:
            raise ValueError("gate.metric 'judge' needs a judge: set judge.model (or use gate.metric 'exact')")
        return self


class LLMEvalResult(BaseModel):
    """The evaluation table, the decision and where the champion points now."""

    prompt_name: str
    candidates: list[Candidate]
    challenger_version: str
    decision: GateDecision | None = Field(description="None when the champion's own content won.")
    action: str
    champion_before: str | None
    champion_after: str | None
    champion_cache: CacheState = Field(description="hit: the champion's stored results reused, nothing sent.")
    spent_usd: float = Field(description="USD sent to the provider in this run, the judge's included.")
    deploy: DeployOutcome | None = None


@flow(name="llm-eval", log_prints=True)
def llm_eval(params: LLMEvalParams) -> LLMEvalResult:
    """Evaluate prompt + model candidates on the same items, gate the best against the champion, promote or keep.

    Args:
        params: The candidates, the evaluation set, the provider, the judge and the gate with its budgets.
    """
    cfg = TrackingConfig.from_settings(settings := get_settings())
    client = make_client(params.provider)  # no OPENAI_API_KEY: fails here, before anything is read or sent
    items, schema = load_eval_set_task(params.dataset, params.answer_schema, PROJECT_ROOT)
    setup = EvalSetup(items, schema, params.prices, params.provider, params.judge)  # an unpriced judge fails here
    name, champion = params.prompt_name, alias_state_task(cfg, params.prompt_name).champion

    # 1. Every candidate, and the champion (stored results when unchanged), on the same items: the gate pairs by id.
    mine = [evaluate_candidate_task(client, c, setup) for c in params.candidates]
    theirs, cache = evaluate_champion(cfg, client, name, champion, setup, params.champion_cache_hours)
    judged = [*mine, *([theirs] if theirs else [])]
    create_table_artifact(key=artifact_key("llm-eval", name), table=[c.row() for c in judged],
                          description=f"{len(items)} items, {len(judged)} prompt + model configurations")

    # 2. The best candidate (on the gate's metric, then exact answers, then cheapest) registered and gated.
    best = best_candidate(mine, params.gate.metric)
    version = register_candidate_task(cfg, name, best)
    done = dict(prompt_name=name, candidates=judged, challenger_version=version, champion_before=champion,
                champion_cache=cache, spent_usd=spent_usd(judged))
    if version == champion:  # the champion's own content won: nothing to decide
        print(f"{name}: the best candidate is the champion v{champion} itself")
        return LLMEvalResult(**done, decision=None, action="already-champion", champion_after=champion)
    decision = gate_candidate(best, theirs, params.gate, version, champion)
    create_markdown_artifact(key=artifact_key("llm-gate", name), markdown=decision.markdown(),
                             description=decision.reason)

    # 3. Recorded, then promoted through the one promotion path (locked, audited, live servers reloaded) or refused.
    token = settings.server_token.get_secret_value() if settings.server_token else None
    action, after, deploy = settle(cfg, name, decision, best, setup, server_url=settings.server_url, token=token,
                                   keep_results=params.champion_cache_hours > 0)
    print(f"{name}: {action}; champion {champion or '-'} -> {after or '-'} ({decision.reason}); champion cache {cache}")
    return LLMEvalResult(**done, decision=decision, action=action, champion_after=after, deploy=deploy)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m flows.llm_eval", description=llm_eval.description)
    parser.add_argument("--params", required=True, help="all parameters as one JSON object (see the deployment form)")
    args = parser.parse_args(sys.argv[1:])
    print(llm_eval(LLMEvalParams.model_validate(json.loads(args.params))).model_dump_json(indent=2))
