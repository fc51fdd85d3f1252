"""The promotion gate: challenger vs champion on the same fresh labeled holdout, a paired bootstrap on the
difference, a margin, a floor and slices; its verdict is a typed decision with every number behind it."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from pydantic import BaseModel, Field

from tasks.catalogue.config import GateConfig
from tasks.model.metrics import higher_is_better, measured, quality_metrics, unmeasurable


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
    challenger: float | None = Field(description="The challenger's metric on the holdout; None: not measurable there.")
    champion: float | None
    difference: float | None = Field(None, description="Improvement of challenger over champion (positive = better).")
    ci_low: float | None = None
    ci_high: float | None = None
    confidence: float
    min_margin: float
    absolute_floor: float | None
    resamples: int
    slices: list[SliceResult] = Field(default_factory=list)
    challenger_version: str | None = None
    champion_version: str | None = None
    schema_changes: list[str] = Field(default_factory=list,
                                      description="How the challenger's input schema differs from the champion's.")
    budgets: list[str] = Field(default_factory=list,
                               description="Budget checks beside the metric (LLM: cost per 1k items, p95 latency).")
    champion_below_floor: bool = Field(False, description="The champion itself misses the floor on this holdout.")
    close_call: list[str] = Field(default_factory=list,
                                  description="Why a person should decide (CI straddles the margin, a schema change "
                                              "is needed, the champion is under the floor); empty when it is clear.")

    def markdown(self) -> str:
        """The decision as a small markdown report."""
        verdict = "PROMOTE" if self.promote else "KEEP CHAMPION"
        lines = [f"# Gate: {verdict}", self.reason, "",
                 "| | value |", "|---|---|",
                 f"| metric | {self.metric} on {self.rows} fresh labeled rows |",
                 f"| challenger{f' v{self.challenger_version}' if self.challenger_version else ''} | {_num(self.challenger)} |"]
        if self.champion is not None:
            lines += [f"| champion{f' v{self.champion_version}' if self.champion_version else ''} | {self.champion:.4f} |",
                      f"| improvement | {self.difference:+.4f} ({self.confidence:.0%} CI {self.ci_low:+.4f} .. {self.ci_high:+.4f}) |",
                      f"| required | CI low > {self.min_margin} |"]
        word = "floor" if higher_is_better(self.metric) else "ceiling"
        lines.append(f"| {word} | {'none' if self.absolute_floor is None else self.absolute_floor} |")
        if self.schema_changes:
            lines += ["", "Input schema changes vs the champion:", *(f"- {c}" for c in self.schema_changes)]
        if self.budgets:
            lines += ["", "Budgets:", *(f"- {b}" for b in self.budgets)]
        if self.close_call:
            lines += ["", "A close call:", *(f"- {c}" for c in self.close_call)]
        if self.slices:
            lines += ["", "| slice | rows | champion | challenger | change | regressed |", "|---|---|---|---|---|---|"]
            lines += [f"| {s.column}={s.value} | {s.rows} | {s.champion:.4f} | {s.challenger:.4f} | {s.change:+.4f} | "
                      f"{'**yes**' if s.regressed else 'no'} |" for s in self.slices]
        return "\n".join(lines)


def _num(value: float | None) -> str:
    return "not measurable" if value is None else f"{value:.4f}"


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


def _regression_over_samples(metric: str, y: np.ndarray, predicted: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """RMSE, MAE or R² of each bootstrap sample from the per-row losses (rows of idx)."""
    err = np.asarray(predicted, dtype=float).reshape(-1) - y
    if metric == "mae":
        return np.abs(err)[idx].mean(axis=1)
    squared = (err ** 2)[idx]
    if metric == "rmse":
        return np.sqrt(squared.mean(axis=1))
    drawn = y[idx]
    total = ((drawn - drawn.mean(axis=1, keepdims=True)) ** 2).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, 1.0 - squared.sum(axis=1) / total, np.nan)


def _metric_over_samples(metric: str, y: np.ndarray, proba: np.ndarray, classes: np.ndarray | None,
                         idx: np.ndarray) -> np.ndarray:
    """The metric on each bootstrap sample (rows of idx)."""
    if classes is None:
        return _regression_over_samples(metric, y, proba, idx)
    if metric == "roc_auc" and len(classes) == 2:
        return _binary_auc(y == classes[1], proba[:, 1], idx)
    if metric == "accuracy":
        return (classes[np.argmax(proba, axis=1)] == y)[idx].mean(axis=1)
    if metric == "log_loss" and np.isin(y, classes).all():  # classes are sorted by the caller
        picked = proba[np.arange(len(y)), np.searchsorted(classes, y)]
        return -np.log(np.clip(picked, 1e-15, 1.0))[idx].mean(axis=1)
    return np.array([quality_metrics(y[i], proba[i], classes)[metric] for i in idx])


def paired_bootstrap(y_true: Sequence, challenger: np.ndarray, champion: np.ndarray, classes: Sequence | None,
                     metric: str, resamples: int, confidence: float, seed: int) -> tuple[float, float, float]:
    """Improvement of challenger over champion on the same rows, with a percentile CI from paired resamples
    (classes None: a regressor's predictions, each resample's metric from the same rows' losses)."""
    if classes is None:
        y, cls = np.asarray(y_true, dtype=float), None
        challenger, champion = np.asarray(challenger, dtype=float), np.asarray(champion, dtype=float)
    else:
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


def slice_results(frame: Any, columns: list[str], y: np.ndarray, challenger: np.ndarray, champion: np.ndarray,
                  classes: np.ndarray | None, config: GateConfig) -> list[SliceResult]:
    """The metric of both models within each category of each slice column (big enough, both classes present);
    `regressed` when the challenger's drop there is beyond the slice tolerance."""
    sign = 1.0 if higher_is_better(config.metric) else -1.0
    out = []
    for column in columns:
        values = np.asarray(frame[column].astype(str))
        for value in sorted(set(values)):
            mask = values == value
            if mask.sum() < config.min_slice_rows or len(np.unique(y[mask])) < 2:
                continue
            champ = quality_metrics(y[mask], champion[mask], classes)[config.metric]
            chal = quality_metrics(y[mask], challenger[mask], classes)[config.metric]
            change = sign * (chal - champ)
            out.append(SliceResult(column=column, value=value, rows=int(mask.sum()), champion=champ, challenger=chal,
                                   change=change, regressed=bool(change < -config.slice_tolerance)))
    return out


def _meets(value: float, floor: float | None, higher: bool) -> bool:
    return True if floor is None else value >= floor if higher else value <= floor


def gate(y_true: Sequence, challenger: np.ndarray, champion: np.ndarray | None, classes: Sequence | None,
         config: GateConfig, slice_frame: Any = None, challenger_version: str | None = None,
         champion_version: str | None = None, schema_changes: Sequence[str] = ()) -> GateDecision:
    """Decide promotion: same input schema (or allowed), the metric measurable on the holdout, CI lower bound above
    the margin, challenger above the floor (under the ceiling, for an error metric) unless the champion misses it
    too on the same rows, no slice regressed. A champion given without comparable scores (other classes) is not
    compared. classes None: regressors' predictions."""
    y = np.asarray(y_true, dtype=float) if classes is None else np.asarray(y_true)
    cls = None if classes is None else np.asarray(classes)
    metric = config.metric
    why = unmeasurable(y, challenger, cls, metric) or (
        unmeasurable(y, champion, cls, metric) if champion is not None else None)
    chal_value = quality_metrics(y, challenger, cls)[metric] if why is None and len(y) else float("nan")
    higher = higher_is_better(metric)
    floor = config.absolute_floor
    above_floor = _meets(chal_value, floor, higher)
    floor_word = "floor" if higher else "ceiling"
    common = dict(metric=metric, rows=len(y), confidence=config.confidence,
                  min_margin=config.min_margin, absolute_floor=config.absolute_floor, resamples=config.resamples,
                  challenger_version=challenger_version, champion_version=champion_version,
                  schema_changes=list(schema_changes))
    if why is not None or not measured(chal_value):
        reason = f"cannot judge on this holdout: {why or f'{metric} is undefined on these rows'}; the champion stays"
        return GateDecision(promote=False, reason=reason, challenger=None, champion=None, **common)
    common["challenger"] = chal_value
    if schema_changes and not config.allow_schema_change:
        reason = (f"input schema differs from champion v{champion_version}: {'; '.join(schema_changes)} "
                  "(set the gate's allow_schema_change to promote it anyway)")
        return GateDecision(promote=False, reason=reason, champion=None, close_call=["a schema change is needed"],
                            **common)
    if champion is None:
        first = "first model" if champion_version is None else f"champion v{champion_version} not comparable"
        reason = (f"{first}: {metric} {chal_value:.4f} {'meets' if above_floor else 'misses'} the "
                  f"{floor_word} {config.absolute_floor}" if floor is not None else
                  f"{first}: {metric} {chal_value:.4f} (no {floor_word} set)")
        return GateDecision(promote=bool(above_floor), reason=reason, champion=None, **common)
    champ_value = quality_metrics(y, champion, cls)[metric]
    champion_below = not _meets(champ_value, floor, higher)
    diff, lo, hi = paired_bootstrap(y, challenger, champion, cls, metric, config.resamples, config.confidence,
                                    config.seed)
    slices = slice_results(slice_frame, config.slice_columns, y, challenger, champion, cls, config) if config.slice_columns else []
    regressed = [s for s in slices if s.regressed]
    ci = f"{diff:+.4f} ({config.confidence:.0%} CI {lo:+.4f}..{hi:+.4f})"
    better = lo > config.min_margin
    if not above_floor and not (champion_below and better):
        promote, reason = False, f"challenger {metric} {chal_value:.4f} misses the {floor_word} {config.absolute_floor}"
        if champion_below:
            reason += (f"; the champion misses it too ({champ_value:.4f}), and the challenger is not measurably "
                       f"better: improvement {ci}, needs CI low > {config.min_margin}")
    elif not better:
        promote, reason = False, f"not measurably better: improvement {ci}, needs CI low > {config.min_margin}"
    elif regressed:
        worst = min(regressed, key=lambda s: s.change)
        promote, reason = False, (f"improvement {ci} but slice {worst.column}={worst.value} regressed by "
                                  f"{-worst.change:.4f} (> {config.slice_tolerance})")
    elif not above_floor:  # both under the floor: the measurably better one serves, and people are told
        promote, reason = True, (f"both {'below' if higher else 'above'} the {floor_word} {config.absolute_floor}: "
                                 f"challenger {metric} "
                                 f"{chal_value:.4f} vs champion {champ_value:.4f}, improvement {ci}; the better of two "
                                 f"models under the {floor_word} replaces the live one")
    else:
        promote, reason = True, f"challenger better: {metric} {chal_value:.4f} vs {champ_value:.4f}, improvement {ci}"
    close = ([f"the improvement's CI {lo:+.4f}..{hi:+.4f} straddles the margin {config.min_margin}"]
             if lo <= config.min_margin < hi else [])
    close += [f"the champion misses the {floor_word} {floor} ({champ_value:.4f})"] if champion_below else []
    close += ["a schema change is needed"] if schema_changes else []
    return GateDecision(promote=promote, reason=reason, champion=champ_value, difference=diff, ci_low=lo, ci_high=hi,
                        slices=slices, champion_below_floor=champion_below, close_call=close, **common)
