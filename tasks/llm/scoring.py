"""LLM replies scored per item (exact fields, refusals, a judge's verdict) and the LLM gate: a paired bootstrap on
per-item scores with cost and latency budgets."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from tasks.model.gate import GateDecision


Scores = Mapping[str, float] | Sequence[float]  # per-item scores: {item id: score}, or a list in item order
REFUSAL = (r"\bI(?:'m| am) (?:sorry|unable|not able)\b", r"\bI can(?:not|'t|’t) (?:help|assist|comply|do that)\b",
           r"\bas an AI\b")
LLMMetric = Literal["exact", "judge"]
METRIC_NAMES: dict[str, tuple[str, str]] = {"exact": ("exact_match", "exact-match share"),
                                            "judge": ("judge_score", "mean judge score")}


class ItemScore(BaseModel):
    """One evaluation item's reply judged: valid JSON for the schema, the expected answer, a refusal, and (when an
    LLM judge is configured) the judge's score."""

    item_id: str
    json_valid: bool
    exact: bool
    refusal: bool
    error: str | None = Field(None, description="Why the reply is unusable (provider error, bad JSON, schema).")
    judge: float | None = Field(None, description="The judge's score 0..1; 0 for an item not sent to it or whose "
                                                  "verdict was unusable; None without a judge.")
    judge_note: str | None = Field(None, description="The judge's reason, why the item was not judged, or why "
                                                     "its verdict is unusable.")
    judge_error: bool = Field(False, description="The judge was asked and failed (provider error, not JSON, a "
                                                 "score outside 0..1).")

    @property
    def score(self) -> float:
        """The exact-match score: 1 for the expected answer, else 0 (errors and refusals included)."""
        return 1.0 if self.exact else 0.0

    def metric(self, metric: LLMMetric) -> float:
        """The gate's per-item score for `metric` (the judge's is 0 when there is none)."""
        return self.score if metric == "exact" else float(self.judge or 0.0)


def _parse_json(reply: str) -> Any:
    """The JSON object in a reply (a ```json fence around it is tolerated)."""
    import json
    import re

    fenced = re.fullmatch(r"\s*```(?:json)?\s*(.*?)\s*```\s*", reply, flags=re.DOTALL)
    return json.loads(fenced.group(1) if fenced else reply)


def _same(answer: Any, expected: Any) -> bool:
    """Exact match, forgiving only case and surrounding spaces of strings."""
    if isinstance(expected, dict):
        return isinstance(answer, dict) and set(answer) >= set(expected) and all(
            _same(answer[k], v) for k, v in expected.items())
    if isinstance(expected, str):
        return isinstance(answer, str) and answer.strip().casefold() == expected.strip().casefold()
    return bool(answer == expected)


def score_reply(item_id: str, reply: str | None, expected: Any, schema: dict[str, Any] | None = None,
                error: str | None = None) -> ItemScore:
    """Judge one reply: JSON-schema validity (when a schema is given), exact expected answer, refusal."""
    import re

    if reply is None:
        return ItemScore(item_id=item_id, json_valid=False, exact=False, refusal=False, error=error or "no reply")
    refusal = any(re.search(p, reply, flags=re.IGNORECASE) for p in REFUSAL)
    if schema is None and isinstance(expected, str):
        return ItemScore(item_id=item_id, json_valid=False, exact=_same(reply, expected), refusal=refusal)
    try:
        answer = _parse_json(reply)
    except ValueError as exc:
        return ItemScore(item_id=item_id, json_valid=False, exact=False, refusal=refusal,
                         error=f"reply is not JSON: {exc}")
    problem = None
    if schema is not None:
        import jsonschema

        errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(answer), key=lambda e: list(e.path))
        problem = f"reply breaks the schema: {errors[0].message}" if errors else None
    return ItemScore(item_id=item_id, json_valid=problem is None, exact=problem is None and _same(answer, expected),
                     refusal=refusal, error=problem)


def not_judged(score: ItemScore) -> str | None:
    """Why a reply is kept from the judge (it failed the deterministic checks first), or None to send it."""
    if score.error is not None:
        return f"not judged: {score.error}"
    return "not judged: a refusal" if score.refusal else None


def parse_verdict(reply: str | None, error: str | None) -> tuple[float | None, str]:
    """The judge's score and reason from its reply ({"score": 0..1, "reason": "..."}); (None, why) when unusable."""
    if reply is None:
        return None, f"judge failed: {error or 'no reply'}"
    try:
        verdict = _parse_json(reply)
    except ValueError:
        return None, f"judge reply is not JSON: {' '.join(reply.split())[:120]!r}"
    value = verdict.get("score") if isinstance(verdict, dict) else None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        return None, f"judge score {value!r} is not a number from 0 to 1"
    reason = verdict.get("reason")
    return float(value), reason if isinstance(reason, str) and reason.strip() else "no reason given"


def with_verdicts(scores: list[ItemScore], verdicts: Mapping[str, tuple[str | None, str | None]]) -> list[ItemScore]:
    """Scores with the judge's verdicts ({item id: (reply, error)} for the items sent to it) applied; every other
    item scores 0 for the judge, saying why."""
    out = []
    for s in scores:
        held = not_judged(s)
        if held is not None or s.item_id not in verdicts:
            update = {"judge": 0.0, "judge_note": held or "not judged: no verdict"}
        else:
            value, note = parse_verdict(*verdicts[s.item_id])
            update = {"judge": value if value is not None else 0.0, "judge_note": note, "judge_error": value is None}
        out.append(s.model_copy(update=update))
    return out


class LLMGateConfig(BaseModel):
    """When a prompt + model challenger may replace the champion: measurably better on the same items, above a
    floor, within the cost and latency budgets."""

    model_config = ConfigDict(extra="forbid")

    resamples: int = Field(2000, ge=100, le=20_000, title="Bootstrap resamples",
                           description="Paired bootstrap resamples of the evaluation items.")
    confidence: float = Field(0.95, gt=0.5, lt=1.0, title="Confidence",
                              description="Two-sided confidence level of the interval on the difference.")
    min_margin: float = Field(0.0, ge=0.0, le=1.0, title="Minimum margin",
                              description="The lower bound of (challenger - champion) exact-match share must exceed "
                                          "this.")
    absolute_floor: float = Field(0.7, ge=0.0, le=1.0, title="Absolute floor",
                                  description="Exact-match share the challenger must reach.")
    max_cost_increase: float = Field(0.25, ge=0.0, le=100.0, title="Allowed cost increase",
                                     description="Cost per 1k items may exceed the champion's by this share at most "
                                                 "(0.25 = 25%).")
    max_p95_latency_increase: float = Field(0.5, ge=0.0, le=100.0, title="Allowed p95 latency increase",
                                            description="p95 latency may exceed the champion's by this share at "
                                                        "most.")
    latency_slack_ms: float = Field(100.0, ge=0.0, le=60_000, title="Latency slack (ms)",
                                    description="p95 differences below this never breach the budget (network "
                                                "jitter on a small evaluation set).")
    seed: int = Field(0, ge=0, le=2**32 - 1, title="Bootstrap seed", description="Seeds the paired resampling.")
    metric: LLMMetric = Field("exact", title="Gate metric",
                              description="Per-item score the gate compares: exact (1 for the expected answer) or "
                                          "judge (the LLM judge's 0..1; needs a judge). The floor and margin apply to "
                                          "its mean.")
    allow_schema_change: bool = Field(False, title="Allow an interface change",
                                      description="Promote a challenger whose template variables or response format "
                                                  "differ from the champion's (callers of the chat route must "
                                                  "change with it); otherwise such a challenger is refused.")


def paired_bootstrap_mean(challenger: Sequence[float], champion: Sequence[float], resamples: int, confidence: float,
                          seed: int) -> tuple[float, float, float]:
    """Mean per-item improvement of challenger over champion on the same items, with a paired percentile CI."""
    diff = np.asarray(challenger, dtype=float) - np.asarray(champion, dtype=float)
    idx = np.random.default_rng(seed).integers(0, len(diff), size=(resamples, len(diff)))
    alpha = (1 - confidence) / 2
    lo, hi = np.quantile(diff[idx].mean(axis=1), [alpha, 1 - alpha])
    return float(diff.mean()), float(lo), float(hi)


def _over_budget(what: str, challenger: float, champion: float, allowed: float, unit: str,
                 slack: float = 0.0) -> str | None:
    """The breach of one budget as a sentence, or None when the challenger is within it."""
    limit = champion * (1 + allowed) + slack
    return None if challenger <= limit + 1e-12 else (
        f"{what} {challenger:.4g} {unit} exceeds the champion's {champion:.4g} {unit} by more than {allowed:.0%}")


def _paired(challenger: Scores, champion: Scores) -> tuple[np.ndarray, np.ndarray]:
    """Both score sets as arrays in the same item order: by item id (sorted) for mappings, else as given."""
    if isinstance(challenger, Mapping) and isinstance(champion, Mapping):
        missing, extra = set(challenger) - set(champion), set(champion) - set(challenger)
        if missing or extra:
            raise ValueError(f"champion scored {len(champion)} items, challenger {len(challenger)}: not the same "
                             f"items (only the challenger's: {sorted(missing)[:5]}, only the champion's: "
                             f"{sorted(extra)[:5]})")
        ids = sorted(challenger)  # the same resamples whatever order the items came in
        return np.array([challenger[i] for i in ids], dtype=float), np.array([champion[i] for i in ids], dtype=float)
    chal, champ = np.asarray(list(_values(challenger)), dtype=float), np.asarray(list(_values(champion)), dtype=float)
    if len(champ) != len(chal):
        raise ValueError(f"champion scored {len(champ)} items, challenger {len(chal)}: not the same items")
    return chal, champ


def _values(scores: Scores) -> Sequence[float]:
    return list(scores.values()) if isinstance(scores, Mapping) else scores


def gate_scores(challenger: Scores, champion: Scores | None, config: LLMGateConfig, *,
                challenger_cost_per_1k: float, challenger_p95_ms: float, champion_cost_per_1k: float | None = None,
                champion_p95_ms: float | None = None, challenger_version: str | None = None,
                champion_version: str | None = None, schema_changes: Sequence[str] = ()) -> GateDecision:
    """The gate on per-item scores of `config.metric` (challenger and champion on the same items: paired by item id
    when given as {id: score}, else by position): above the floor, CI lower bound above the margin, cost per 1k
    items and p95 latency within the budgets."""
    values = _values(challenger)
    chal = float(np.mean(values)) if len(values) else 0.0
    metric, label = METRIC_NAMES[config.metric]
    common = dict(metric=metric, rows=len(values), challenger=chal, confidence=config.confidence,
                  min_margin=config.min_margin, absolute_floor=config.absolute_floor, resamples=config.resamples,
                  challenger_version=challenger_version, champion_version=champion_version,
                  schema_changes=list(schema_changes))
    floor = f"{label} {chal:.4f} {'meets' if chal >= config.absolute_floor else 'misses'} the floor " \
            f"{config.absolute_floor}"
    if champion is None:
        return GateDecision(promote=chal >= config.absolute_floor, reason=f"first version: {floor}", champion=None,
                            budgets=[f"cost {challenger_cost_per_1k:.4g} USD per 1k items",
                                     f"p95 latency {challenger_p95_ms:.0f} ms"], **common)
    paired_chal, paired_champ = _paired(challenger, champion)
    champ = float(np.mean(paired_champ))
    diff, lo, hi = paired_bootstrap_mean(paired_chal, paired_champ, config.resamples, config.confidence, config.seed)
    ci = f"{diff:+.4f} ({config.confidence:.0%} CI {lo:+.4f}..{hi:+.4f})"
    breaches = [b for b in (
        _over_budget("cost per 1k items", challenger_cost_per_1k, champion_cost_per_1k or 0.0,
                     config.max_cost_increase, "USD"),
        _over_budget("p95 latency", challenger_p95_ms, champion_p95_ms or 0.0, config.max_p95_latency_increase, "ms",
                     config.latency_slack_ms),
    ) if b]
    budgets = [f"cost per 1k items {challenger_cost_per_1k:.4g} USD vs champion {champion_cost_per_1k or 0:.4g} USD "
               f"(allowed +{config.max_cost_increase:.0%})",
               f"p95 latency {challenger_p95_ms:.0f} ms vs champion {champion_p95_ms or 0:.0f} ms "
               f"(allowed +{config.max_p95_latency_increase:.0%} + {config.latency_slack_ms:.0f} ms)"]
    if schema_changes and not config.allow_schema_change:
        promote, reason = False, (f"interface differs from champion v{champion_version}: {'; '.join(schema_changes)} "
                                  "(set the gate's allow_schema_change to promote it anyway)")
    elif chal < config.absolute_floor:
        promote, reason = False, f"challenger {floor}"
    elif not lo > config.min_margin:
        promote, reason = False, f"not measurably better: improvement {ci}, needs CI low > {config.min_margin}"
    elif breaches:
        promote, reason = False, f"improvement {ci} but over budget: " + "; ".join(breaches)
    else:
        promote, reason = True, f"challenger better: {metric.replace('_', ' ')} {chal:.4f} vs {champ:.4f}, " \
                                f"improvement {ci}"
    return GateDecision(promote=promote, reason=reason, champion=champ, difference=diff, ci_low=lo, ci_high=hi,
                        budgets=budgets, **common)
