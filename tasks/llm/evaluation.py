"""Evaluating LLM candidates: an evaluation set, each candidate's replies scored (exactly, and by a judge model),
the best candidate gated against the champion on the same items, and the winner kept in the prompt registry.
Results are stored per prompt version and reused only on the same items, judge and provider."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any, Literal

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict, Field, field_validator

from nightshift.errors import TrackingError
from nightshift.runlog import run_logger
from tasks.llm.config import LLMConfig, LLMConfigError, PriceTable, ProviderSettings, placeholders
from tasks.llm.provider import CallResult, CallStats, Progress, item_id, run_items, summarize
from tasks.registry.prompts import load_prompt_version, register_prompt_version
from tasks.registry.runs import finish_run, load_json_artifact, log_dict, log_metrics, log_params, start_run
from tasks.registry.store import RETRY
from tasks.registry.versions import tag_version, version_tags

if TYPE_CHECKING:
    from pathlib import Path

    import openai

    from tasks.llm.scoring import LLMGateConfig, LLMMetric
    from tasks.model.gate import GateDecision
    from tasks.registry.promote import DeployOutcome
    from tasks.registry.store import TrackingConfig


GATE_PROMPT_TAGS = ("nightshift.eval.exact_share", "nightshift.eval.cost_per_1k", "nightshift.eval.p95_ms")
DEFAULT_JUDGE_SYSTEM = ('You grade a reply to one evaluation item against the expected answer. Reply with JSON only: '
                        '{"score": <a number from 0 to 1>, "reason": "<one short sentence>"}. 1: the reply gives the '
                        'expected answer (the wording may differ); 0: wrong or missing; in between: partly right.')
DEFAULT_JUDGE_TEMPLATE = "Item: {{ input }}\n\nExpected answer: {{ expected }}\n\nReply to grade: {{ reply }}"


# The champion's results on an eval set, kept in MLflow: an eval run's JSON artifact, found from a tag on the version.
RESULTS_TAG = "nightshift.eval_results."  # + the key's first 16 hex digits -> the run id
RESULTS_ARTIFACT = "llm_eval/results.json"
RESULTS_FORMAT = 1  # bump when what is stored, or what it is keyed on, changes: old entries then miss
CacheState = Literal["hit", "miss", "off", "none"]


class JudgeConfig(BaseModel):
    """An LLM judge: a rubric prompt that sees the item, the expected answer and one reply and answers
    {"score": 0..1, "reason": "..."}. Called through the same client, retries, timeout, concurrency bound and price
    table as the candidates; only replies that passed the deterministic checks are sent to it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str = Field(min_length=1, title="Judge model", description="The provider model that grades the replies.")
    system: str = Field(DEFAULT_JUDGE_SYSTEM, title="Rubric (system prompt)",
                        description='How to grade; must ask for JSON {"score": 0..1, "reason": "..."}.')
    template: str = Field(DEFAULT_JUDGE_TEMPLATE, title="Judge message template",
                          description="User message: {{ reply }} (the candidate's reply), {{ expected }} (the "
                                      "expected answer), {{ input }} (the item's other fields as JSON) and any of "
                                      "the item's variables.")
    temperature: float = Field(0.0, ge=0.0, le=2.0, title="Temperature", description="0 for repeatable grades.")
    max_tokens: int = Field(200, ge=1, le=4000, title="Max output tokens", description="Longest verdict in tokens.")
    response_format: Literal["text", "json_object"] = Field(
        "json_object", title="Response format", description="json_object asks the provider for a JSON verdict.")

    @field_validator("template")
    @classmethod
    def _sees_the_reply(cls, value: str) -> str:
        if "reply" not in placeholders(value):
            raise ValueError("the judge template must show the reply to grade: add {{ reply }}")
        return value

    def llm_config(self) -> LLMConfig:
        """The judge as a prompt + model configuration, for `complete`."""
        return LLMConfig(**self.model_dump())

    @staticmethod
    def variables(item: Mapping[str, Any], reply: str) -> dict[str, Any]:
        """The judge's variables for one item and reply (input, expected and reply override item fields so named)."""
        other = {k: v for k, v in item.items() if k not in ("id", "expected")}
        return {**item, "input": json.dumps(other, ensure_ascii=False, sort_keys=True, default=str),
                "expected": item["expected"], "reply": reply}


@dataclass(frozen=True, eq=False)
class EvalSetup:
    """What every candidate is run and scored with: the items, the answer schema, prices, provider and judge.
    Checked when made, before anything is sent (an unpriced judge, a judge variable an item lacks)."""

    items: list[dict[str, Any]]
    schema: dict[str, Any] | None
    prices: PriceTable
    provider: ProviderSettings
    judge: JudgeConfig | None = None

    def __post_init__(self) -> None:
        if self.judge is not None:
            self.prices.price(self.judge.model)
            config = self.judge.llm_config()
            for index, item in enumerate(self.items):
                try:
                    config.render(self.judge.variables(item, ""))
                except LLMConfigError as err:
                    raise LLMConfigError(f"judge, item {item_id(item, index)!r}: {err}") from None

    @cached_property
    def fingerprint(self) -> str:
        """sha256 of the items (in id order, so a reordered file is the same set) and the answer schema."""
        items = sorted(self.items, key=lambda item: str(item["id"]))
        return _digest({"items": items, "schema": self.schema})


def _digest(value: Any) -> str:
    """sha256 of a value's canonical JSON."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


class Candidate(BaseModel):
    """One prompt + model configuration run on every item: the replies, their scores and what they cost."""

    config: LLMConfig
    results: list[CallResult]
    scores: list[Any] = Field(description="tasks.llm.scoring.ItemScore per item, in item order.")
    stats: CallStats = Field(description="The candidate's own calls: what serving it costs (the judge's apart).")
    judge_results: list[CallResult] = Field(default_factory=list,
                                            description="The judge's calls, one per reply sent to it.")
    judge_stats: CallStats | None = Field(None, description="The judge's tokens and cost; None without a judge.")
    cached: bool = Field(False, description="Results stored by an earlier run on the same items, judge and provider "
                                            "(champion cache): nothing was sent for them now.")

    @property
    def item_scores(self) -> list[float]:
        """The exact-match score per item (1 = the expected answer), in item order."""
        return [s.score for s in self.scores]

    def by_item(self, metric: LLMMetric) -> dict[str, float]:
        """The gate's per-item scores for `metric`, by item id (what the paired bootstrap pairs on)."""
        return {s.item_id: s.metric(metric) for s in self.scores}

    def share(self, metric: LLMMetric) -> float:
        """Mean per-item score for `metric`."""
        return sum(s.metric(metric) for s in self.scores) / len(self.scores) if self.scores else 0.0

    @property
    def exact_share(self) -> float:
        """Share of items answered exactly as expected."""
        return self.share("exact")

    def row(self) -> dict[str, str]:
        """One row of the evaluation table artifact (judge columns when a judge graded the replies)."""
        n = len(self.scores) or 1
        s = self.stats
        row = {"model": self.config.model, "temperature": str(self.config.temperature),
               "exact match": f"{self.exact_share:.3f}",
               "valid JSON": f"{sum(x.json_valid for x in self.scores) / n:.3f}",
               "refusals": str(sum(x.refusal for x in self.scores)), "errors": str(s.errors),
               "tokens": str(s.total_tokens), "USD per 1k items": f"{s.cost_per_1k_items:.4f}",
               "p50 ms": f"{s.latency_p50_ms:.0f}", "p95 ms": f"{s.latency_p95_ms:.0f}", "retries": str(s.retries)}
        if self.judge_stats is not None:
            row |= {"judge score": f"{self.share('judge'):.3f}",
                    "judge errors": str(sum(x.judge_error for x in self.scores)),
                    "judge USD": f"{self.judge_stats.cost_usd:.4f}"}
        return row | {"cached": "yes" if self.cached else "no"}


def load_eval_set(path: str | Path, schema_path: str | Path | None,
                  root: Path | None = None) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """The evaluation items (JSON lines, each with a unique "id" and an "expected" answer) and the answer schema,
    relative paths read from `root`; LLMConfigError naming the file and line of any problem."""
    from pathlib import Path

    path = Path(root or ".") / path
    schema_path = None if schema_path is None else Path(root or ".") / schema_path
    if not path.is_file():
        raise LLMConfigError(f"evaluation set {path} does not exist")
    items, seen = [], set()
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except ValueError as exc:
            raise LLMConfigError(f"{path}, line {number}: not JSON ({exc})") from None
        if not isinstance(item, dict) or "expected" not in item or "id" not in item:
            raise LLMConfigError(f"{path}, line {number}: an item needs an \"id\" and an \"expected\" answer")
        if str(item["id"]) in seen:
            raise LLMConfigError(f"{path}, line {number}: id {item['id']!r} appears twice")
        seen.add(str(item["id"]))
        items.append(item)
    if not items:
        raise LLMConfigError(f"evaluation set {path} has no items")
    schema = None
    if schema_path is not None:
        import jsonschema

        try:
            schema = json.loads(schema_path.read_text())
            jsonschema.Draft202012Validator.check_schema(schema)
        except (OSError, ValueError, jsonschema.SchemaError) as exc:
            raise LLMConfigError(f"answer schema {schema_path} is unusable: {str(exc).splitlines()[0]}") from None
    return items, schema


def _progress(what: str, total: int) -> Progress:
    """Logs a run's progress about every quarter, with the last error."""
    logger, step = run_logger(__name__), max(1, total // 4)

    def progress(done: int, total: int, result: CallResult) -> None:
        if done % step == 0 or done == total:
            logger.info("%s: %d/%d items%s", what, done, total, f" (last error: {result.error})"
                        if result.error else "")

    return progress


def evaluate_candidate(client: openai.OpenAI, config: LLMConfig, setup: EvalSetup) -> Candidate:
    """Every item through the candidate, each reply scored (schema, exact answer, refusal, then the judge on the
    replies that passed), the run's stats."""
    items, prices, concurrency = setup.items, setup.prices, setup.provider.concurrency
    results = run_items(client, config, items, prices, concurrency, _progress(config.model, len(items)))
    return score_candidate(config, setup, results, judge_replies(client, setup, results))


def judge_replies(client: openai.OpenAI, setup: EvalSetup, results: list[CallResult]) -> list[CallResult]:
    """The judge's calls on the replies that passed the deterministic checks (none without a judge); replies that
    errored, broke the schema or refused are never sent."""
    from tasks.llm.scoring import not_judged, score_reply

    judge = setup.judge
    if judge is None:
        return []
    send = [judge.variables(item, r.text or "") for r, item in zip(results, setup.items)
            if not_judged(score_reply(r.item_id, r.text, item["expected"], setup.schema, r.error)) is None]
    if not send:
        return []
    return run_items(client, judge.llm_config(), send, setup.prices, setup.provider.concurrency,
                     _progress(f"judge {judge.model} on {results[0].model}", len(send)))


def score_candidate(config: LLMConfig, setup: EvalSetup, results: list[CallResult], judge_results: list[CallResult],
                    cached: bool = False) -> Candidate:
    """A candidate from its calls (in item order) and the judge's: the deterministic scores, then the verdicts."""
    from tasks.llm.scoring import score_reply, with_verdicts

    scores = [score_reply(r.item_id, r.text, item["expected"], setup.schema, r.error)
              for r, item in zip(results, setup.items)]
    if setup.judge is not None:
        scores = with_verdicts(scores, {r.item_id: (r.text, r.error) for r in judge_results})
    return Candidate(config=config, results=results, scores=scores, stats=summarize(results),
                     judge_results=judge_results, judge_stats=summarize(judge_results) if setup.judge else None,
                     cached=cached)


def best_candidate(candidates: list[Candidate], metric: LLMMetric) -> Candidate:
    """The candidate the gate will judge: best mean `metric`, then most exact answers, then the cheapest."""
    return max(candidates, key=lambda c: (c.share(metric), c.exact_share, -c.stats.cost_per_1k_items))


def gate_candidate(challenger: Candidate, champion: Candidate | None, config: LLMGateConfig,
                   challenger_version: str, champion_version: str | None) -> GateDecision:
    """The gate on `config.metric`, challenger and champion paired by item id, with the serving cost and p95
    latency budgets (the judge's cost is not serving cost)."""
    from tasks.llm.scoring import gate_scores

    other = champion.by_item(config.metric) if champion else None
    return gate_scores(challenger.by_item(config.metric), other, config,
                       challenger_cost_per_1k=challenger.stats.cost_per_1k_items,
                       challenger_p95_ms=challenger.stats.latency_p95_ms,
                       champion_cost_per_1k=champion.stats.cost_per_1k_items if champion else None,
                       champion_p95_ms=champion.stats.latency_p95_ms if champion else None,
                       challenger_version=challenger_version, champion_version=champion_version,
                       schema_changes=interface_changes(champion.config, challenger.config) if champion else ())


def interface_changes(live: LLMConfig, candidate: LLMConfig) -> list[str]:
    """How a candidate's interface differs from the live config's: template variables (callers send exactly these)
    and the response format (callers read `json` for json_object); empty when callers need not change."""
    added = [v for v in candidate.variables if v not in live.variables]
    dropped = [v for v in live.variables if v not in candidate.variables]
    changes = []
    if added:
        changes.append(f"new template variable(s) {', '.join(map(repr, added))}: callers must send them")
    if dropped:
        changes.append(f"template variable(s) {', '.join(map(repr, dropped))} no longer used: callers still "
                       f"sending them get 400")
    if live.response_format != candidate.response_format:
        changes.append(f"response format {live.response_format} -> {candidate.response_format}")
    return changes


def _model_config(config: LLMConfig) -> dict[str, Any]:
    """What the prompt registry stores beside the messages."""
    return config.model_dump(include={"model", "temperature", "max_tokens", "response_format"})


def register_candidate(cfg: TrackingConfig, name: str, candidate: Candidate) -> str:
    """The candidate as a version of prompt `name` (the same content registered before is that version)."""
    from tasks.registry.locks import model_lock

    s = candidate.stats
    tags = dict(zip(GATE_PROMPT_TAGS, (f"{candidate.exact_share:.4f}", f"{s.cost_per_1k_items:.6f}",
                                       f"{s.latency_p95_ms:.1f}")))
    with model_lock(cfg, name, "register"):  # two runs registering the same new content make one version
        return register_prompt_version(cfg, name, candidate.config.system, candidate.config.template,
                                                _model_config(candidate.config), tags)


def live_config(cfg: TrackingConfig, name: str, version: str) -> LLMConfig:
    """A registered prompt version as the LLMConfig it was registered from."""
    snap = load_prompt_version(cfg, name, version)
    known = {k: v for k, v in snap.llm_config.items() if k in {"model", "temperature", "max_tokens",
                                                                "response_format"}}
    return LLMConfig(system=snap.system, template=snap.template, **known)


def results_key(name: str, version: str, config: LLMConfig, setup: EvalSetup) -> str:
    """What a version's stored results are valid for: the prompt version and its content, the eval set (items and
    schema), the judge and the provider endpoint. Prices are not in it: stored tokens are priced anew."""
    judge = setup.judge.model_dump(mode="json") if setup.judge else None
    return _digest({"format": RESULTS_FORMAT, "prompt": name, "version": str(version),
                    "config": config.model_dump(mode="json"), "eval_set": setup.fingerprint, "judge": judge,
                    "base_url": setup.provider.base_url.rstrip("/")})


def load_results(cfg: TrackingConfig, name: str, version: str, key: str, setup: EvalSetup,
                 max_age_hours: float) -> tuple[tuple[list[CallResult], list[CallResult]] | None, str]:
    """A version's stored calls for `key` (its own and the judge's, in the setup's item order, priced with today's
    table), or None; and a sentence saying where they came from or why none are usable."""
    run_id = version_tags(cfg, name, version).get(RESULTS_TAG + key[:16])
    if not run_id:
        return None, "no stored results for this version, eval set, judge and provider"
    try:
        data = load_json_artifact(cfg, run_id, RESULTS_ARTIFACT)
        stored = [CallResult.model_validate(r) for r in data["results"]]
        judged = [CallResult.model_validate(r) for r in data["judge_results"]]
        age = (time.time() - float(data["created"])) / 3600
    except (TrackingError, KeyError, TypeError, ValueError) as exc:
        return None, f"stored results of run {run_id} are unreadable ({str(exc).splitlines()[0][:200]})"
    if data.get("key") != key:
        return None, f"run {run_id} holds results for another key"
    if age > max_age_hours:
        return None, f"stored results are {age:.1f} h old (reused up to {max_age_hours:g} h)"
    by_id = {r.item_id: r for r in stored}
    ids = [item_id(item, i) for i, item in enumerate(setup.items)]
    if set(by_id) != set(ids) or len(stored) != len(ids):
        return None, f"run {run_id} holds results for other items"

    def priced(r: CallResult) -> CallResult:
        return r.model_copy(update={"cost_usd": setup.prices.cost(r.model, r.prompt_tokens, r.completion_tokens)})

    return ([priced(by_id[i]) for i in ids], [priced(r) for r in judged]), \
        f"results of run {run_id}, {age:.1f} h old"


def store_results(cfg: TrackingConfig, name: str, version: str, candidate: Candidate, setup: EvalSetup) -> str | None:
    """Keep a version's results on these items as an MLflow eval run (metrics, params, the calls as a JSON
    artifact), tagged on the version, so evaluating it as champion again sends nothing; the run id, or None when
    not stored (a failed call would be repeated forever, or the tracking store failed: logged, the run goes on)."""
    logger = run_logger(__name__)
    failed = sum(not r.ok for r in [*candidate.results, *candidate.judge_results])
    if failed:
        logger.warning("%s v%s: results not stored for reuse: %d call(s) failed", name, version, failed)
        return None
    key = results_key(name, version, candidate.config, setup)
    payload = {"format": RESULTS_FORMAT, "key": key, "created": time.time(), "prompt": name, "version": str(version),
               "eval_set": setup.fingerprint, "results": [r.model_dump(mode="json") for r in candidate.results],
               "judge_results": [r.model_dump(mode="json") for r in candidate.judge_results]}
    metrics = {"exact_share": candidate.exact_share, "cost_per_1k_items": candidate.stats.cost_per_1k_items,
               "latency_p95_ms": candidate.stats.latency_p95_ms}
    if candidate.judge_stats is not None:
        metrics |= {"judge_score": candidate.share("judge"), "judge_cost_usd": candidate.judge_stats.cost_usd}
    try:
        run_id = start_run(cfg, f"llm-eval {name} v{version}", tags={
            "nightshift.kind": "llm-eval", "nightshift.prompt": name, "nightshift.prompt_version": str(version),
            "nightshift.eval_results_key": key})
        log_params(cfg, run_id, {"eval_set": setup.fingerprint, "items": len(setup.items),
                                          "judge": setup.judge.model if setup.judge else "",
                                          "base_url": setup.provider.base_url})
        log_metrics(cfg, run_id, metrics)
        log_dict(cfg, run_id, payload, RESULTS_ARTIFACT)
        finish_run(cfg, run_id)
        tag_version(cfg, name, version, {RESULTS_TAG + key[:16]: run_id})
    except Exception as exc:  # noqa: BLE001 - a cache write must not fail a run whose evaluation is done
        logger.warning("%s v%s: results not stored for reuse: %s", name, version, str(exc).splitlines()[0][:300])
        return None
    return run_id


def evaluate_champion(cfg: TrackingConfig, client: openai.OpenAI, name: str, version: str | None, setup: EvalSetup,
                      max_age_hours: float) -> tuple[Candidate | None, CacheState]:
    """The champion on the same items: its stored results when this version already ran on this eval set with this
    judge and provider within `max_age_hours` (nothing sent), else run again and stored; and whether it was a hit."""
    if version is None:
        return None, "none"
    config = live_config_task(cfg, name, version)
    if max_age_hours <= 0:
        return evaluate_candidate_task(client, config, setup), "off"
    stored, note = load_results_task(cfg, name, version, results_key(name, version, config, setup), setup,
                                     max_age_hours)
    if stored is not None:
        run_logger(__name__).info("%s: champion v%s cache hit, nothing sent: %s", name, version, note)
        return score_candidate(config, setup, *stored, cached=True), "hit"
    run_logger(__name__).info("%s: champion v%s cache miss (%s): running it again", name, version, note)
    champion = evaluate_candidate_task(client, config, setup)
    store_results_task(cfg, name, version, champion, setup)
    return champion, "miss"


def settle(cfg: TrackingConfig, name: str, decision: GateDecision, challenger: Candidate, setup: EvalSetup, *,
           server_url: str | list[str] | None, token: str | None,
           keep_results: bool) -> tuple[str, str | None, DeployOutcome | None]:
    """Record the gate's decision on the version, then promote a challenger that passed through the one `promote()`
    (locked, compare-and-swap, audited, the live model servers reloaded), keeping its results as the next run's
    champion's; or audit the refusal. Returns the action, where `champion` points now and the redeploy outcome."""
    from tasks.registry.promote import promote, record_decision_task, record_refusal_task

    record_decision_task(cfg, name, str(decision.challenger_version), decision)
    if not decision.promote:
        refused = record_refusal_task(cfg, name, decision, None)
        return "refused" if refused else "already-decided", decision.champion_version, None
    outcome = promote(cfg, name, decision, server_url=server_url, token=token)
    if keep_results and outcome.champion_after == decision.challenger_version:
        store_results_task(cfg, name, str(decision.challenger_version), challenger, setup)
    return outcome.status, outcome.champion_after, outcome.deploy


def spent_usd(candidates: list[Candidate]) -> float:
    """USD sent to the provider for these candidates now, the judge's included (stored results cost nothing)."""
    return sum(c.stats.cost_usd + (c.judge_stats.cost_usd if c.judge_stats else 0.0)
               for c in candidates if not c.cached)


load_eval_set_task = task(load_eval_set, name="load-eval-set", cache_policy=NO_CACHE)
evaluate_candidate_task = task(evaluate_candidate, name="evaluate-candidate", cache_policy=NO_CACHE)
register_candidate_task = task(register_candidate, name="register-prompt-version", **RETRY)
live_config_task = task(live_config, name="load-champion-prompt", **RETRY)
load_results_task = task(load_results, name="load-stored-eval-results", **RETRY)
store_results_task = task(store_results, name="store-eval-results", cache_policy=NO_CACHE)
