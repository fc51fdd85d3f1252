"""A shadow judged on live traffic: the rows the model server scored with both the champion and the shadow (joined on
request id and row), joined to their labels once those land, and the paired comparison of the two on them: the same
paired bootstrap as the promotion gate, its CI, the rows behind it and the slices.

The model server captures the champion's rows under `{served}/{model}/{day}/` and the shadow's predictions of the
same rows under `{served}/{model}/shadow/{day}/` (tasks/data/served.py). A served row's label is the label of its
row id (the model's first id column) in the labels of the same day: the labels file of that day once it has landed
(`labels.lag_days` later), or for labels that come with the rows, the day's landed files.
"""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import BaseModel, Field

from tasks.catalogue.config import GateConfig
from tasks.catalogue.schema import CatalogueModel
from tasks.data.served import PREDICTION, PROBA_PREFIX, NoServedData, read_served, read_shadow
from tasks.data.sources import landed_labels
from tasks.model.gate import SliceResult, paired_bootstrap, slice_results
from tasks.model.metrics import quality_metrics, unmeasurable

if TYPE_CHECKING:
    import pandas as pd

SHADOW_PREFIX = "shadow_"  # the shadow's columns beside the champion's in a paired row
Verdict = Literal["waiting", "not-worse", "worse", "undecided"]


class DayPairs(BaseModel):
    """One served day: rows both models scored, and how many of them have a label so far."""

    day: date
    paired: int = Field(description="Rows the champion answered and the shadow scored (same request id and row).")
    labeled: int = Field(description="Of those, rows whose row id has a label in the day's landed labels.")
    labels: str | None = Field(None, description="Where the day's labels were read (None: not landed yet).")


class LiveComparison(BaseModel):
    """Champion vs shadow on the same labeled live rows: each one's metric, the candidate's improvement with its CI,
    the slices, and the verdict against the tolerated loss."""

    model_name: str
    champion_version: str
    shadow_version: str
    candidate: Literal["shadow", "champion"] = Field(
        "shadow", description="Whose improvement over the other is measured: the shadow (a challenger waiting to be "
                              "promoted) or the champion (a new one, its predecessor shadowing it).")
    metric: str
    rows: int = Field(description="Labeled live rows scored by both models.")
    paired_rows: int = Field(description="Live rows scored by both models, labeled or not.")
    days: list[DayPairs] = Field(default_factory=list)
    champion: float | None = None
    shadow: float | None = None
    difference: float | None = Field(None, description="The candidate's improvement (positive = better).")
    ci_low: float | None = None
    ci_high: float | None = None
    confidence: float
    margin: float = Field(description="Tolerated loss: not worse when the CI's lower bound is above minus this.")
    min_rows: int
    slices: list[SliceResult] = Field(default_factory=list)
    verdict: Verdict
    reason: str

    @property
    def candidate_version(self) -> str:
        return self.shadow_version if self.candidate == "shadow" else self.champion_version

    @property
    def incumbent_version(self) -> str:
        return self.champion_version if self.candidate == "shadow" else self.shadow_version

    def summary(self) -> str:
        """One line: the verdict and the numbers behind it."""
        return f"{self.verdict}: {self.reason}"

    def table(self) -> list[dict[str, str]]:
        """The comparison as table rows (a Prefect table artifact)."""
        rows = [("champion", f"v{self.champion_version}: {_num(self.champion)}"),
                ("shadow", f"v{self.shadow_version}: {_num(self.shadow)}"),
                ("metric", f"{self.metric} on {self.rows:,} labeled live rows ({self.paired_rows:,} scored by both)"),
                (f"improvement of v{self.candidate_version}", "-" if self.difference is None else
                 f"{self.difference:+.4f} ({self.confidence:.0%} CI {self.ci_low:+.4f} .. {self.ci_high:+.4f})"),
                ("not worse when", f"CI low > {-self.margin:+.4f}, with at least {self.min_rows:,} labeled rows"),
                ("verdict", self.summary())]
        rows += [(f"day {d.day}", f"{d.paired:,} scored by both, {d.labeled:,} labeled"
                  + ("" if d.labels else " (labels not landed yet)")) for d in self.days]
        rows += [(f"slice {s.column}={s.value}", f"{s.rows:,} rows: v{self.incumbent_version} {s.champion:.4f}, "
                  f"v{self.candidate_version} {s.challenger:.4f}{' (regressed)' if s.regressed else ''}")
                 for s in self.slices]
        return [{"": k, "live": v} for k, v in rows]

    def markdown(self) -> str:
        """The comparison as a small markdown report (the shadow version's MLflow run)."""
        lines = [f"# Live comparison: {self.verdict}", self.reason, "", "| | live |", "|---|---|"]
        lines += [f"| {r['']} | {r['live']} |" for r in self.table()]
        return "\n".join(lines)


def _num(value: float | None) -> str:
    return "not measured" if value is None else f"{value:.4f}"


def paired_rows(root: Path, model_name: str, day: date, champion: str, shadow: str) -> pd.DataFrame | None:
    """The day's served rows of `champion` with the `shadow` version's prediction (and probabilities) beside each,
    as `shadow_<column>`; only rows both scored. None when either side has no closed capture part that day.

    A request id repeated by a client (a retry) counts once: its first capture on each side.
    """
    try:
        served = read_served(root, model_name, day, version=champion)
        shadowed = read_shadow(root, model_name, day, version=shadow)
    except NoServedData:
        return None
    keys = ["request_id", "row"]
    scores = [c for c in shadowed.columns if c == PREDICTION or c.startswith(PROBA_PREFIX)]
    theirs = shadowed[keys + scores].drop_duplicates(subset=keys)
    theirs = theirs.rename(columns={c: f"{SHADOW_PREFIX}{c}" for c in scores})
    return served.drop_duplicates(subset=keys).merge(theirs, on=keys, how="inner")


def live_pairs(model: CatalogueModel, served_root: Path, state_dir: Path, champion: str, shadow: str, since: date,
               night: date, kept_out: list[date] | tuple[date, ...] = ()) -> tuple[pd.DataFrame, list[DayPairs]]:
    """Every served day from `since` to `night`: the rows both versions scored, with the label of each row's id
    where the day's labels have landed as of `night` (a day whose labels are kept out as suspect gets none).
    Returns the labeled rows (label in the model's label column) and what each day had."""
    import pandas as pd

    label, frames, days = model.label, [], []
    day = since
    while day <= night:
        pairs = paired_rows(served_root, model.name, day, champion, shadow)
        if pairs is not None and len(pairs):
            landed = None if day in kept_out else landed_labels(model, day, night, state_dir)
            labeled = _with_labels(pairs, landed[0], label) if landed else pairs.iloc[:0]
            days.append(DayPairs(day=day, paired=len(pairs), labeled=len(labeled),
                                 labels=landed[1] if landed else None))
            frames.append(labeled.assign(served_day=day))
        day += timedelta(days=1)
    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    return frame, days


def _with_labels(pairs: pd.DataFrame, labels: pd.DataFrame, label: str) -> pd.DataFrame:
    """Served rows with their label, joined by row id (as text on both sides: ids are captured as text); ids with
    conflicting labels are not judged."""
    key = labels.columns[0]
    known = labels.dropna().assign(**{key: lambda f: f[key].astype(str)}).drop_duplicates()
    known = known.loc[~known.duplicated(subset=[key], keep=False)].rename(columns={key: "row_id"})
    rows = pairs.loc[pairs["row_id"].notna()].drop(columns=[label], errors="ignore")
    return rows.merge(known, on="row_id", how="inner")


def _scores(frame: pd.DataFrame, prefix: str) -> tuple[np.ndarray, list[str] | None]:
    """One side's scores: probabilities (rows x classes, classes as captured) or a regressor's predictions."""
    proba = [c for c in frame.columns if c.startswith(f"{prefix}{PROBA_PREFIX}")]
    if not proba:
        return frame[f"{prefix}{PREDICTION}"].to_numpy(dtype=float), None
    return frame[proba].to_numpy(dtype=float), [c[len(prefix) + len(PROBA_PREFIX):] for c in proba]


def compare_live(model: CatalogueModel, frame: pd.DataFrame, days: list[DayPairs], champion: str, shadow: str,
                 candidate: Literal["shadow", "champion"] = "shadow", gate: GateConfig | None = None) -> LiveComparison:
    """Champion vs shadow on the labeled live rows of `live_pairs`, with the gate's paired bootstrap; the verdict:
    waiting (fewer rows than `shadow_min_rows`, or the metric cannot be measured on them yet), not-worse (the
    candidate's CI lower bound above minus `shadow_margin` and no slice regressed), worse (the whole CI below it, or
    a slice regressed), undecided (the CI straddles it)."""
    import pandas as pd

    from tasks.data.contract import align_labels

    config = gate or model.gate
    metric, margin = config.metric, config.shadow_margin
    common: dict[str, Any] = dict(model_name=model.name, champion_version=champion, shadow_version=shadow,
                                  candidate=candidate, metric=metric, rows=0, paired_rows=sum(d.paired for d in days),
                                  days=days, confidence=config.confidence, margin=margin,
                                  min_rows=config.shadow_min_rows)
    if frame.empty:
        return LiveComparison(verdict="waiting", reason=_waiting(0, config, days), **common)
    champ, classes = _scores(frame, "")
    theirs, shadow_classes = _scores(frame, SHADOW_PREFIX)
    if classes is not None and shadow_classes is not None and shadow_classes != classes:  # same set, other order
        theirs = theirs[:, [shadow_classes.index(c) for c in classes]]
    if classes is None:
        y = pd.to_numeric(frame[model.label], errors="coerce").to_numpy(dtype=float)
        known = np.isfinite(y)
    else:
        aligned, _ = align_labels(frame[model.label], classes)
        known = aligned.notna().to_numpy()
        y = aligned.to_numpy(dtype=object)
    y, champ, theirs, judged = y[known], champ[known], theirs[known], frame.loc[known].reset_index(drop=True)
    cls = None if classes is None else np.asarray(classes, dtype=object)
    common["rows"] = len(y)
    why = unmeasurable(y, champ, cls, metric) or unmeasurable(y, theirs, cls, metric)
    if len(y) < config.shadow_min_rows or why:
        return LiveComparison(verdict="waiting", reason=why and f"{metric} cannot be measured on the "
                              f"{len(y):,} labeled live rows yet: {why}" or _waiting(len(y), config, days), **common)
    values = {"champion": quality_metrics(y, champ, cls)[metric], "shadow": quality_metrics(y, theirs, cls)[metric]}
    better, worse = (theirs, champ) if candidate == "shadow" else (champ, theirs)
    diff, lo, hi = paired_bootstrap(y, better, worse, cls, metric, config.resamples, config.confidence, config.seed)
    columns = [c for c in config.slice_columns if c in judged.columns]
    slices = slice_results(judged, columns, y, better, worse, cls, config) if columns else []
    regressed = [s for s in slices if s.regressed]
    who = f"v{shadow if candidate == 'shadow' else champion}"
    ci = f"{diff:+.4f} ({config.confidence:.0%} CI {lo:+.4f}..{hi:+.4f}) on {len(y):,} labeled live rows"
    if hi < -margin:
        verdict: Verdict = "worse"
        reason = f"{who} is worse live: {metric} improvement {ci}, all of it below -{margin}"
    elif regressed:
        s = min(regressed, key=lambda r: r.change)
        verdict, reason = "worse", (f"{who}: improvement {ci}, but slice {s.column}={s.value} regressed by "
                                    f"{-s.change:.4f} ({s.rows:,} rows; tolerance {config.slice_tolerance})")
    elif lo > -margin:
        verdict, reason = "not-worse", f"{who} is not worse live: {metric} improvement {ci}, CI low above -{margin}"
    else:
        verdict, reason = "undecided", f"{who}: {metric} improvement {ci} straddles -{margin}: more rows needed"
    return LiveComparison(verdict=verdict, reason=reason, difference=diff, ci_low=lo, ci_high=hi, slices=slices,
                          **values, **common)


def _waiting(rows: int, config: GateConfig, days: list[DayPairs]) -> str:
    scored = sum(d.paired for d in days)
    pending = [d.day.isoformat() for d in days if d.labels is None]
    return (f"{rows:,} of {config.shadow_min_rows:,} labeled live rows so far ({scored:,} scored by both"
            + (f"; labels not landed yet for {', '.join(pending)}" if pending else "") + ")")

