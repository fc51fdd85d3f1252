"""Labels that look wrong: a day's label balance (a classifier's class shares; a regressor's label distribution)
far from the reference's, both beyond chance and by a margin no real shift of a day makes. Such labels are kept
out of training and judging until a person or a later night clears them.

A label feed that lands broken (every label 1, a join that matched one class, labels in other units) reads as a
real change of quality otherwise: the champion "degrades", a challenger learns the broken labels, the gate judges
on them. Both conditions must hold, so a real change of the base rate (a few points a day) passes: a proportion
(chi-square goodness-of-fit) or two-sample KS test far beyond chance (p < 1e-6), and a large effect (class
shares moved by a quarter in total variation; a KS distance of 0.5, or labels that no longer vary).
"""

from __future__ import annotations

from typing import Any

import numpy as np

MIN_ROWS = 30  # fewer labels than this say nothing about their balance
P_VALUE = 1e-6  # far beyond chance: a feed's daily sampling noise never gets here
SHARE_SHIFT = 0.25  # total variation distance of the class shares (binary: the positive share moved 25 points)
KS_DISTANCE = 0.5  # two-sample KS statistic of a regressor's labels


def _shares(values: Any) -> dict[Any, float]:
    labels, counts = np.unique(np.asarray(values), return_counts=True)
    total = counts.sum()
    return {(k.item() if hasattr(k, "item") else k): c / total for k, c in zip(labels, counts, strict=True)}


def _p(value: float) -> str:
    return "< 1e-300" if value < 1e-300 else f"{value:.1g}"


def _fmt(shares: dict[Any, float]) -> str:
    return ", ".join(f"{k!r} {v:.0%}" for k, v in sorted(shares.items(), key=lambda kv: str(kv[0])))


def class_balance_suspect(reference: Any, day: Any) -> str | None:
    """Why a classifier's labels on a day look wrong next to the reference's (a sentence); None when they do not."""
    from scipy.stats import chisquare

    day = np.asarray(day)
    if len(day) < MIN_ROWS or len(np.asarray(reference)) == 0:
        return None
    ref, now = _shares(reference), _shares(day)
    levels = sorted(set(ref) | set(now), key=str)
    expected_share = np.array([ref.get(k, 0.0) for k in levels])
    observed = np.array([now.get(k, 0.0) for k in levels]) * len(day)
    shift = 0.5 * float(np.abs(observed / len(day) - expected_share).sum())
    if shift < SHARE_SHIFT:
        return None
    unseen = [k for k in levels if ref.get(k, 0.0) == 0.0]
    if unseen:  # a class the reference never had: no finite statistic, the shift says enough
        p_value = 0.0
    else:
        p_value = float(chisquare(observed, expected_share * len(day)).pvalue)
    if p_value >= P_VALUE:
        return None
    return (f"label balance far from the reference's: {_fmt(now)} on {len(day):,} labeled rows vs {_fmt(ref)} "
            f"(shares moved {shift:.0%}, chi-square p {_p(p_value)})")


def value_distribution_suspect(reference: Any, day: Any) -> str | None:
    """Why a regressor's labels on a day look wrong next to the reference's (a sentence); None when they do not."""
    from scipy.stats import ks_2samp

    day = np.asarray(day, dtype=float)
    ref = np.asarray(reference, dtype=float)
    day, ref = day[np.isfinite(day)], ref[np.isfinite(ref)]
    if len(day) < MIN_ROWS or len(ref) < MIN_ROWS:
        return None
    if np.ptp(day) == 0 and np.ptp(ref) > 0:
        return f"every one of the {len(day):,} labels is {day[0]:g}, where the reference's range {ref.min():g}..{ref.max():g}"
    result = ks_2samp(ref, day)
    if result.statistic < KS_DISTANCE or result.pvalue >= P_VALUE:
        return None
    return (f"label distribution far from the reference's: median {np.median(day):g} (IQR "
            f"{np.subtract(*np.percentile(day, [75, 25])):g}) on {len(day):,} labeled rows vs median "
            f"{np.median(ref):g} (IQR {np.subtract(*np.percentile(ref, [75, 25])):g}) (KS {result.statistic:.2f}, "
            f"p {_p(result.pvalue)})")


def labels_suspect(reference: Any, day: Any, task: str) -> str | None:
    """Why a day's labels look wrong (classification: class shares; regression: the distribution); None if not."""
    if task == "regression":
        return value_distribution_suspect(reference, day)
    return class_balance_suspect(reference, day)
