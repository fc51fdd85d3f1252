"""The p-value side of the drift decision (references of at most 1000 rows): a two-sample chi-square test registered
with Evidently, and Benjamini-Hochberg across columns. Imported only by the drift package
(`tasks/monitoring/drift/__init__.py`).

Why not Evidently's own chi-square: `chi_stat_test` is a goodness-of-fit test. It scales the reference's counts to
the batch's size and takes them as the exact expected counts, so the reference's own sampling noise counts as drift:
with n_ref reference rows and n_cur batch rows its statistic is inflated about (1 + n_cur / n_ref) times. On undrifted
demo data with a 300-row reference and a 23,000-row night each of the five categorical columns "drifted" on 39-40 of
40 nights, rare levels or not; a level absent from the reference gets an expected count of 0 (numpy divide
warnings, an infinite statistic, p = 0). Pooling rare levels does not fix the inflation (still 36-40 alarms out of 40
with Benjamini-Hochberg). So where Evidently would run its chi-square, the test of homogeneity of the 2 x k table
(reference and batch as rows, levels as columns) runs instead: a two-sample test, whose expected counts come from
both sides together, so both sides' noise counts. Before it, every level expected fewer than `MIN_EXPECTED` times on
the smaller side goes into one "other" cell, grown from the rarest level up until it is itself expected
`MIN_EXPECTED` times (the usual validity rule of the chi-square approximation). The rule looks only at the levels'
pooled totals, which the test conditions on, so it does not bias the p-value; a level new in the batch and frequent
there keeps its own cell. The test is registered in Evidently's stattest registry (`TWO_SAMPLE_CHI_SQUARE`), so
DataDriftPreset's HTML report runs and shows the same test.

Why Benjamini-Hochberg: a batch is tested on every column (and on the model's prediction), each test alarming at 5%
on its own: with m tests about 0.05·m columns drift by chance, and with few columns the dataset share threshold is
one or two of them (4 columns at share 0.2: one is enough, an 18.5% false-alarm rate from perfectly calibrated
tests). The step-up procedure at false-discovery rate q flags a test when its adjusted p-value is <= q. When nothing
drifted every flag is a false one, so the chance of any flag is at most q (independent or positively dependent
tests): the night's drift alarm (dataset drift, or the prediction's) fires on at most q of undrifted nights, whatever
the number of columns. A reference-size rule (no p-value tests below some size, or thresholds scaled by it) has no
such bound: its rate depends on the columns and their levels, and it needs a magic size. Bonferroni or Holm give the
same bound on undrifted nights but flag fewer columns when several really drift, which is what real drift looks
like. The threshold shown for an adjusted column is BH's cut-off on the raw p-value (drift exactly when p <
threshold), halfway between k·q/m and (k+1)·q/m with k flagged, where no p-value lies, so `<` and Evidently's `<=`
(K-S) agree.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

FDR = 0.05  # Evidently's default per-column threshold of its p-value tests, now a false-discovery rate
MIN_EXPECTED = 5.0  # a level expected fewer times than this on the smaller side is pooled
TWO_SAMPLE_CHI_SQUARE = "chisquare_two_sample"  # its name in Evidently's stattest registry
TWO_SAMPLE_CHI_SQUARE_DISPLAY = "chi-square two-sample p_value"


def pooled_counts(reference: pd.Series, current: pd.Series, min_expected: float = MIN_EXPECTED) -> np.ndarray:
    """The 2 x k table of counts (reference row, batch row), with every level expected fewer than `min_expected`
    times on the smaller side pooled into one last column. That column grows from the rarest level up until it is
    expected `min_expected` times itself. Levels seen on neither side (unused categories) are dropped."""
    import numpy as np
    import pandas as pd

    def counts(values: pd.Series) -> pd.Series:
        return (values.astype(object) if isinstance(values.dtype, pd.CategoricalDtype) else values).value_counts()

    table = pd.concat([counts(reference), counts(current)], axis=1).fillna(0).to_numpy(dtype=np.float64).T
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2:
        return table
    totals = table.sum(axis=0)
    expected = totals / totals.sum() * table.sum(axis=1).min()
    order = np.argsort(expected, kind="stable")
    pooled = int((expected < min_expected).sum())
    while 0 < pooled < len(order) and expected[order[:pooled]].sum() < min_expected:
        pooled += 1
    if pooled == 0:
        return table
    return np.column_stack([table[:, order[pooled:]], table[:, order[:pooled]].sum(axis=1)])


def chi_square_two_sample_p(reference: pd.Series, current: pd.Series) -> float:
    """p-value of the chi-square test of homogeneity of reference and batch, rare levels pooled (1.0 when fewer
    than two cells are left: nothing to compare)."""
    from scipy.stats import chi2_contingency

    table = pooled_counts(reference, current)
    if table.shape[1] < 2:
        return 1.0
    return float(chi2_contingency(table, correction=False).pvalue)


def _chi_square_two_sample(reference: pd.Series, current: pd.Series, feature_type: Any,
                           threshold: float) -> tuple[float, bool]:
    p_value = chi_square_two_sample_p(reference, current)
    return p_value, p_value < threshold


@lru_cache(maxsize=1)
def chi_square_two_sample() -> Any:
    """The two-sample chi-square test as an Evidently `StatTest`, registered once (DataDriftPreset finds it by name)."""
    from evidently.legacy.calculations.stattests.registry import StatTest, register_stattest
    from evidently.legacy.core import ColumnType

    test = StatTest(name=TWO_SAMPLE_CHI_SQUARE, display_name=TWO_SAMPLE_CHI_SQUARE_DISPLAY,
                    allowed_feature_types=[ColumnType.Categorical, ColumnType.Numerical], default_threshold=FDR)
    register_stattest(test, default_impl=_chi_square_two_sample)
    return test


def benjamini_hochberg(p_values: list[float], fdr: float = FDR) -> tuple[list[float], float]:
    """Benjamini-Hochberg adjusted p-values, and the cut-off on the raw p-values that flags exactly the columns whose
    adjusted p-value is <= fdr (halfway between k·fdr/m and (k+1)·fdr/m, k of m flagged: no p-value lies there)."""
    import numpy as np
    from scipy.stats import false_discovery_control

    if not p_values:
        return [], fdr
    raw = np.nan_to_num(np.clip(np.asarray(p_values, dtype=np.float64), 0.0, 1.0), nan=1.0)
    adjusted = false_discovery_control(raw, method="bh")
    flagged = int((adjusted <= fdr).sum())
    return [float(a) for a in adjusted], (flagged + 0.5) * fdr / len(raw)


def adjust(columns: list[Any], fdr: float = FDR) -> list[Any]:
    """The columns (drift.ColumnDrift) with their p-value tests' verdicts Benjamini-Hochberg adjusted across them: each
    gets its adjusted p-value, BH's cut-off on the raw p-value as threshold, and drifted = adjusted <= fdr. Columns
    judged by a distance are returned unchanged."""
    tested = [i for i, c in enumerate(columns) if c.is_p_value]
    adjusted, cutoff = benjamini_hochberg([columns[i].score for i in tested], fdr)
    out = list(columns)
    for i, p in zip(tested, adjusted):
        out[i] = columns[i].model_copy(update={"adjusted": p, "threshold": cutoff, "drifted": p <= fdr})
    return out
