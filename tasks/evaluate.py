"""Model quality: the classification metrics every run and gate speaks in."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal, Sequence

import numpy as np
from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    import pandas as pd

Metric = Literal["roc_auc", "accuracy", "f1", "log_loss"]
METRICS: tuple[Metric, ...] = ("accuracy", "f1", "roc_auc", "log_loss")
LOWER_IS_BETTER: frozenset[str] = frozenset({"log_loss"})


def higher_is_better(metric: str) -> bool:
    """Direction of a metric, so comparisons never get the sign wrong."""
    return metric not in LOWER_IS_BETTER


def classification_metrics(y_true: Sequence, proba: np.ndarray, classes: Sequence) -> dict[str, float]:
    """Accuracy, F1, ROC AUC and log loss from class probabilities (binary or multiclass)."""
    from sklearn.metrics import accuracy_score, f1_score, log_loss, roc_auc_score

    y = np.asarray(y_true)
    classes = np.asarray(classes)
    proba = np.asarray(proba, dtype=float)
    pred = classes[np.argmax(proba, axis=1)]
    out: dict[str, float] = {"accuracy": float(accuracy_score(y, pred))}
    present = np.unique(y)
    if len(classes) == 2:
        out["f1"] = float(f1_score(y, pred, pos_label=classes[1], zero_division=0))
        out["roc_auc"] = float(roc_auc_score(y == classes[1], proba[:, 1])) if len(present) == 2 else float("nan")
    else:
        out["f1"] = float(f1_score(y, pred, average="macro", labels=classes, zero_division=0))
        if len(present) == len(classes):
            out["roc_auc"] = float(roc_auc_score(y, proba, multi_class="ovr", labels=classes))
        else:
            out["roc_auc"] = float("nan")
    out["log_loss"] = float(log_loss(y, np.clip(proba, 1e-15, 1 - 1e-15), labels=classes))
    return out


def drift_predictions(proba: np.ndarray, classes: Sequence) -> tuple[np.ndarray, str]:
    """What prediction drift compares: P(positive) for binary models, the predicted class otherwise."""
    proba = np.asarray(proba, dtype=float)
    if len(classes) == 2:
        return proba[:, 1], "numeric"
    return np.asarray(classes).astype(str)[np.argmax(proba, axis=1)], "categorical"


class PerformanceCheck(BaseModel):
    """Model quality on a labeled batch against the quality recorded when the model was tested."""

    metric: str
    rows: int
    batch_metrics: dict[str, float]
    reference_metrics: dict[str, float]
    change: float = Field(description="Batch minus reference for the chosen metric (negative = worse for most metrics).")
    max_drop: float
    degraded: bool

    def summary(self) -> str:
        """One line for logs and artifacts."""
        ref = self.reference_metrics.get(self.metric, float("nan"))
        state = "DEGRADED" if self.degraded else "ok"
        return (f"{self.metric} {self.batch_metrics[self.metric]:.4f} on {self.rows} labeled rows vs {ref:.4f} at test time "
                f"({self.change:+.4f}, allowed drop {self.max_drop}): {state}")

    def metrics(self) -> dict[str, float]:
        """The batch's metrics for the monitoring run, as batch_<metric>."""
        return {f"batch_{k}": v for k, v in self.batch_metrics.items()}

    def alert_reasons(self) -> list[str]:
        """Why this check should raise an alert (degradation); empty when it should not."""
        return [f"performance degraded: {self.summary()}"] if self.degraded else []


def performance_check(y_true: Sequence, proba: np.ndarray, classes: Sequence, reference_metrics: dict[str, float],
                      metric: str = "roc_auc", max_drop: float = 0.05) -> PerformanceCheck:
    """Flag degradation when `metric` fell by more than `max_drop` from the model's recorded test value."""
    batch = classification_metrics(y_true, proba, classes)
    ref = reference_metrics.get(metric, float("nan"))
    change = batch[metric] - ref
    worse_by = -change if higher_is_better(metric) else change
    degraded = bool(np.isfinite(worse_by) and worse_by > max_drop)
    return PerformanceCheck(metric=metric, rows=len(np.asarray(y_true)), batch_metrics=batch,
                            reference_metrics=reference_metrics, change=float(change), max_drop=max_drop,
                            degraded=degraded)


def batch_performance(frame: pd.DataFrame, proba: np.ndarray, label: str, classes: Sequence,
                      reference_metrics: dict[str, float], metric: str = "roc_auc",
                      max_drop: float = 0.05) -> PerformanceCheck | None:
    """performance_check on the rows of a scored batch whose label is one of `classes`; None when none is."""
    from tasks.validate import align_labels

    if label not in frame.columns:
        return None
    aligned, _ = align_labels(frame[label], classes)  # 1.0, "1" and 1 are the same class
    labeled = aligned.notna().to_numpy()
    if not labeled.any():
        return None
    y = aligned[labeled].to_numpy().astype(np.asarray(classes).dtype)
    return performance_check(y, np.asarray(proba)[labeled], classes, reference_metrics, metric, max_drop)


# --------------------------------------------------------------------------------------------
# The promotion gate: challenger vs champion on the same fresh labeled holdout.
# --------------------------------------------------------------------------------------------
class GateConfig(BaseModel):
    """How much better a challenger must be, and how sure we must be, before it replaces the champion."""

    model_config = ConfigDict(extra="forbid")

    metric: Metric = Field("roc_auc", title="Gate metric", description="Metric the challenger must improve.")
    resamples: int = Field(1000, ge=100, le=20_000, title="Bootstrap resamples",
                           description="Paired bootstrap resamples of the holdout.")
    confidence: float = Field(0.95, gt=0.5, lt=1.0, title="Confidence",
                              description="Two-sided confidence level of the interval on the difference.")
    min_margin: float = Field(0.0, ge=0.0, le=1.0, title="Minimum margin",
                              description="The lower bound of (challenger - champion) must exceed this.")
    absolute_floor: float = Field(0.6, title="Absolute floor",
                                  description="Challenger must reach this (a ceiling for log loss).")
    slice_columns: list[str] = Field(default_factory=list, title="Slice columns",
                                     description="Categorical columns whose every category must not regress.")
    slice_tolerance: float = Field(0.02, ge=0.0, le=1.0, title="Slice tolerance",
                                   description="Largest allowed drop of the metric within any slice.")
    min_slice_rows: int = Field(200, ge=10, title="Minimum slice rows", description="Smaller slices are not judged.")
    seed: int = Field(0, ge=0, le=2**32 - 1, title="Bootstrap seed", description="Seeds the paired bootstrap resampling.")
    allow_schema_change: bool = Field(
        False, title="Allow a schema change",
        description="Promote a challenger whose input columns, column kinds or classes differ from the champion's "
                    "(every caller of the model server must change with it). Off: such a challenger is refused.")


class SliceResult(BaseModel):
    """The metric of both models within one category of a slice column."""

    column: str
    value: str
    rows: int
    champion: float
    challenger: float
    change: float
    regressed: bool


class GateDecision(BaseModel):
    """The gate's verdict with every number behind it and a one-line reason."""

    promote: bool
    reason: str
    metric: str
    rows: int
    challenger: float
    champion: float | None
    difference: float | None = Field(None, description="Improvement of challenger over champion (positive = better).")
    ci_low: float | None = None
    ci_high: float | None = None
    confidence: float
    min_margin: float
    absolute_floor: float
    resamples: int
    slices: list[SliceResult] = Field(default_factory=list)
    challenger_version: str | None = None
    champion_version: str | None = None
    schema_changes: list[str] = Field(default_factory=list,
                                      description="How the challenger's input schema differs from the champion's.")
    budgets: list[str] = Field(default_factory=list,
                               description="Budget checks beside the metric (LLM: cost per 1k items, p95 latency).")

    def markdown(self) -> str:
        """The decision as a small markdown report."""
        verdict = "PROMOTE" if self.promote else "KEEP CHAMPION"
        lines = [f"# Gate: {verdict}", self.reason, "",
                 "| | value |", "|---|---|",
                 f"| metric | {self.metric} on {self.rows} fresh labeled rows |",
                 f"| challenger{f' v{self.challenger_version}' if self.challenger_version else ''} | {self.challenger:.4f} |"]
        if self.champion is not None:
            lines += [f"| champion{f' v{self.champion_version}' if self.champion_version else ''} | {self.champion:.4f} |",
                      f"| improvement | {self.difference:+.4f} ({self.confidence:.0%} CI {self.ci_low:+.4f} .. {self.ci_high:+.4f}) |",
                      f"| required | CI low > {self.min_margin} |"]
        lines.append(f"| floor | {self.absolute_floor} |")
        if self.schema_changes:
            lines += ["", "Input schema changes vs the champion:", *(f"- {c}" for c in self.schema_changes)]
        if self.budgets:
            lines += ["", "Budgets:", *(f"- {b}" for b in self.budgets)]
        if self.slices:
            lines += ["", "| slice | rows | champion | challenger | change | regressed |", "|---|---|---|---|---|---|"]
            lines += [f"| {s.column}={s.value} | {s.rows} | {s.champion:.4f} | {s.challenger:.4f} | {s.change:+.4f} | "
                      f"{'**yes**' if s.regressed else 'no'} |" for s in self.slices]
        return "\n".join(lines)


_BOOTSTRAP_CELLS = 4_000_000  # resampled rows held at once by the gate's bootstrap (~100 MB at any holdout size)


def _binary_auc(y_pos: np.ndarray, score: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """ROC AUC of each bootstrap sample (rows of idx: row numbers into y_pos/score) as Mann-Whitney U with midranks,
    from each sample's row counts: the scores are sorted once, not once per sample (the same numbers as ranking every
    sample, which took minutes and gigabytes on a 300k-row holdout)."""
    order = np.argsort(score, kind="stable")
    tied = np.r_[False, np.diff(score[order]) == 0]  # same score as the row before: same group
    group = np.empty(len(score), dtype=np.int64)
    group[order] = np.cumsum(~tied) - 1  # each row's group of tied scores, in ascending score order
    n_groups = int(group.max()) + 1 if len(score) else 0
    keys = (group[idx] + n_groups * np.arange(len(idx))[:, None]).ravel()  # (sample, group) of every drawn row
    total = np.bincount(keys, minlength=n_groups * len(idx)).reshape(len(idx), n_groups).astype(np.float64)
    pos_w = np.bincount(keys, weights=y_pos[idx].ravel().astype(np.float64),
                        minlength=n_groups * len(idx)).reshape(len(idx), n_groups)  # positives per sample and group
    neg_w = total - pos_w
    n_pos, n_neg = pos_w.sum(axis=1), neg_w.sum(axis=1)
    u = (pos_w * (np.cumsum(neg_w, axis=1) - neg_w + 0.5 * neg_w)).sum(axis=1)  # negatives below (+ half the ties)
    with np.errstate(invalid="ignore", divide="ignore"):
        return u / (n_pos * n_neg)


def _metric_over_samples(metric: str, y: np.ndarray, proba: np.ndarray, classes: np.ndarray,
                         idx: np.ndarray) -> np.ndarray:
    """The metric on each bootstrap sample (rows of idx)."""
    if metric == "roc_auc" and len(classes) == 2:
        return _binary_auc(y == classes[1], proba[:, 1], idx)
    if metric == "accuracy":
        return (classes[np.argmax(proba, axis=1)] == y)[idx].mean(axis=1)
    if metric == "log_loss" and np.isin(y, classes).all():  # classes are sorted by the caller
        picked = proba[np.arange(len(y)), np.searchsorted(classes, y)]
        return -np.log(np.clip(picked, 1e-15, 1.0))[idx].mean(axis=1)
    return np.array([classification_metrics(y[i], proba[i], classes)[metric] for i in idx])


def paired_bootstrap(y_true: Sequence, challenger: np.ndarray, champion: np.ndarray, classes: Sequence,
                     metric: str, resamples: int, confidence: float, seed: int) -> tuple[float, float, float]:
    """Improvement of challenger over champion on the same rows, with a percentile CI from paired resamples."""
    y = np.asarray(y_true)
    cls = np.asarray(classes)
    order = np.argsort(cls)
    cls, challenger, champion = cls[order], np.asarray(challenger)[:, order], np.asarray(champion)[:, order]
    sign = 1.0 if higher_is_better(metric) else -1.0
    full = np.arange(len(y))[None, :]
    point = sign * (_metric_over_samples(metric, y, challenger, cls, full)[0]
                    - _metric_over_samples(metric, y, champion, cls, full)[0])
    rng = np.random.default_rng(seed)  # drawn in chunks of resamples: the same numbers as one draw, bounded memory
    chunk = max(1, _BOOTSTRAP_CELLS // max(1, len(y)))
    diffs = np.concatenate([
        sign * (_metric_over_samples(metric, y, challenger, cls, idx) - _metric_over_samples(metric, y, champion, cls, idx))
        for idx in (rng.integers(0, len(y), size=(min(chunk, resamples - done), len(y)))
                    for done in range(0, resamples, chunk))])
    diffs = diffs[np.isfinite(diffs)]
    alpha = (1 - confidence) / 2
    lo, hi = np.quantile(diffs, [alpha, 1 - alpha]) if len(diffs) else (np.nan, np.nan)
    return float(point), float(lo), float(hi)


def _slices(frame: Any, columns: list[str], y: np.ndarray, challenger: np.ndarray, champion: np.ndarray,
            classes: np.ndarray, config: GateConfig) -> list[SliceResult]:
    sign = 1.0 if higher_is_better(config.metric) else -1.0
    out = []
    for column in columns:
        values = np.asarray(frame[column].astype(str))
        for value in sorted(set(values)):
            mask = values == value
            if mask.sum() < config.min_slice_rows or len(np.unique(y[mask])) < 2:
                continue
            champ = classification_metrics(y[mask], champion[mask], classes)[config.metric]
            chal = classification_metrics(y[mask], challenger[mask], classes)[config.metric]
            change = sign * (chal - champ)
            out.append(SliceResult(column=column, value=value, rows=int(mask.sum()), champion=champ, challenger=chal,
                                   change=change, regressed=bool(change < -config.slice_tolerance)))
    return out


def gate(y_true: Sequence, challenger: np.ndarray, champion: np.ndarray | None, classes: Sequence,
         config: GateConfig, slice_frame: Any = None, challenger_version: str | None = None,
         champion_version: str | None = None, schema_changes: Sequence[str] = ()) -> GateDecision:
    """Decide promotion: same input schema (or allowed), CI lower bound above the margin, challenger above the
    floor, no slice regressed. A champion given without probabilities (other classes) is not compared."""
    y, cls = np.asarray(y_true), np.asarray(classes)
    metric = config.metric
    chal_value = classification_metrics(y, challenger, cls)[metric]
    higher = higher_is_better(metric)
    above_floor = chal_value >= config.absolute_floor if higher else chal_value <= config.absolute_floor
    floor_word = "floor" if higher else "ceiling"
    common = dict(metric=metric, rows=len(y), challenger=chal_value, confidence=config.confidence,
                  min_margin=config.min_margin, absolute_floor=config.absolute_floor, resamples=config.resamples,
                  challenger_version=challenger_version, champion_version=champion_version,
                  schema_changes=list(schema_changes))
    if schema_changes and not config.allow_schema_change:
        reason = (f"input schema differs from champion v{champion_version}: {'; '.join(schema_changes)} "
                  "(set the gate's allow_schema_change to promote it anyway)")
        return GateDecision(promote=False, reason=reason, champion=None, **common)
    if champion is None:
        first = "first model" if champion_version is None else f"champion v{champion_version} not comparable"
        reason = (f"{first}: {metric} {chal_value:.4f} {'meets' if above_floor else 'misses'} the "
                  f"{floor_word} {config.absolute_floor}")
        return GateDecision(promote=bool(above_floor), reason=reason, champion=None, **common)
    champ_value = classification_metrics(y, champion, cls)[metric]
    diff, lo, hi = paired_bootstrap(y, challenger, champion, cls, metric, config.resamples, config.confidence,
                                    config.seed)
    slices = _slices(slice_frame, config.slice_columns, y, challenger, champion, cls, config) if config.slice_columns else []
    regressed = [s for s in slices if s.regressed]
    ci = f"{diff:+.4f} ({config.confidence:.0%} CI {lo:+.4f}..{hi:+.4f})"
    if not above_floor:
        promote, reason = False, f"challenger {metric} {chal_value:.4f} misses the {floor_word} {config.absolute_floor}"
        if lo > config.min_margin:  # say so: the live model is worse still, and stays
            reason += (f" (it beats the champion's {champ_value:.4f} by {ci}, but the {floor_word} holds for every "
                       "promotion: the champion stays)")
    elif not lo > config.min_margin:
        promote, reason = False, f"not measurably better: improvement {ci}, needs CI low > {config.min_margin}"
    elif regressed:
        worst = min(regressed, key=lambda s: s.change)
        promote, reason = False, (f"improvement {ci} but slice {worst.column}={worst.value} regressed by "
                                  f"{-worst.change:.4f} (> {config.slice_tolerance})")
    else:
        promote, reason = True, f"challenger better: {metric} {chal_value:.4f} vs {champ_value:.4f}, improvement {ci}"
    return GateDecision(promote=promote, reason=reason, champion=champ_value, difference=diff, ci_low=lo, ci_high=hi,
                        slices=slices, **common)


batch_performance_task = task(batch_performance, name="check-performance", cache_policy=NO_CACHE)


# --------------------------------------------------------------------------------------------
# Hosted LLMs: deterministic scorers of a reply, and the same gate on per-item scores plus budgets.
# --------------------------------------------------------------------------------------------
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
