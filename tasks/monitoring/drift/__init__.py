"""All Evidently code: data and prediction drift between a model's reference data and a new batch.

Decisions: every column is judged by the test Evidently's DataDriftPreset would pick for it, run by Evidently's own
test code (`evidently.legacy.calculations.stattests`: the same functions the preset's `ValueDrift` metrics call, on
the same NaN/inf-cleaned values). The default decision (`decision="adjusted"`) changes two things for references of
at most 1000 rows, where the preset's tests are p-value tests: a column the preset would give its goodness-of-fit
chi-square gets a two-sample chi-square with rare levels pooled, and the p-value tests' verdicts are
Benjamini-Hochberg adjusted across the feature columns and the prediction. Without them an undrifted night with a
small reference alarmed every time; `tasks/monitoring/drift/decision.py` has the tests and the argument. Above 1000
rows (distances) nothing changes. `decision="preset"` decides exactly as the preset does. Either way the preset
behind the HTML report is given the same tests and thresholds, so it shows the verdicts acted on.

What is left out is everything the preset does besides deciding: each column's drift computed three times
(`ValueDrift`, `DriftedColumnsCount`, the preset's render), histograms, correlations and Plotly figures built during
`run`: 6-10x the cost of the tests on 100k-row samples, 15-27x on 10k (`make bench`). So the full preset runs only
for its HTML report (`report`: "on_drift", the default, when any column or the prediction drifted; "always";
"never"), and the verdicts are always saved as JSON. Caching the reference side per model version was measured and
dropped: the tests' cost is the joint sort of both sides (a pre-sorted reference saved nothing).
`compute_drift_preset` is the preset path itself, kept to prove the two agree (tests/tasks/monitoring/test_drift.py)
and to benchmark them.

Scale: both sides are first capped to a uniform random sample of `sample_cap` rows (default 100k). Above 1000
reference rows Evidently's tests are distances (normed Wasserstein for numbers, Jensen-Shannon for categories and
numbers with at most 5 values, drift at >= 0.1), and their sampling error shrinks like 1/sqrt(n): at 100k rows per
side the score of an undrifted column is ~0.005, so a sampled score differs from the full-data score by far less
than the 0.1 threshold; only columns whose full-data score lies within that error of the threshold could flip, and
`make bench` checks decision agreement with full-data Evidently on its drift scenarios.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, Field

from tasks.monitoring.drift.decision import (
    FDR,
    TWO_SAMPLE_CHI_SQUARE,
    TWO_SAMPLE_CHI_SQUARE_DISPLAY,
    adjust,
    chi_square_two_sample,
)

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd


DEFAULT_SAMPLE_ROWS = 100_000
MIN_SAMPLE_ROWS = 5_000  # keeps the sample on the same (distance) tests as big full data
PREDICTION_COLUMN = "__prediction__"
Decision = Literal["adjusted", "preset"]


class ColumnDrift(BaseModel):
    """Drift of one column: the test Evidently used, its score and threshold, and the verdict."""

    column: str
    kind: str
    method: str
    score: float = Field(description="A distance (drift when >= threshold) or a p-value (drift when < threshold).")
    threshold: float
    drifted: bool
    adjusted: float | None = Field(None, description="The p-value Benjamini-Hochberg adjusted across the batch's "
                                   "p-value tests (drift when <= the result's `fdr`); None for distances.")

    @property
    def is_p_value(self) -> bool:
        """Whether `score` is a p-value (Evidently's p-value tests say so in their names) rather than a distance."""
        return "p_value" in self.method

    @property
    def excess(self) -> float:
        """How far past its threshold the column is (> 1: drifted): score/threshold, inverted for p-values."""
        if self.is_p_value:
            return self.threshold / self.score if self.score > 0 else float("inf")
        return self.score / self.threshold if self.threshold else self.score

    def evidence(self) -> str:
        """The column with its p-value (and adjusted p-value) or distance, for alert reasons."""
        if self.adjusted is not None:
            return f"{self.column} (p {self.score:.2g}, adjusted {self.adjusted:.2g})"
        return f"{self.column} ({'p' if self.is_p_value else 'score'} {self.score:.3g})"


class DriftResult(BaseModel):
    """Dataset-level verdict plus every column's drift, and where the full reports were saved."""

    dataset_drift: bool
    drift_share: float = Field(description="Share of feature columns that drifted.")
    drift_share_threshold: float
    fdr: float | None = Field(None, description="False-discovery rate at which the p-value tests' verdicts (feature "
                              "columns and prediction) were Benjamini-Hochberg adjusted; None when none was adjusted.")
    drifted_columns: list[str]
    columns: list[ColumnDrift]
    prediction: ColumnDrift | None = None
    reference_rows: int
    current_rows: int
    sampled_reference_rows: int
    sampled_current_rows: int
    html_path: str | None = Field(None, description="Evidently's HTML report, when one was made (see `report`).")
    json_path: str | None = Field(None, description="This result as JSON: every column's test, score and verdict.")
    seconds: float = 0.0
    report_seconds: float = Field(0.0, description="Part of `seconds` spent on the HTML report.")

    @property
    def any_drift(self) -> bool:
        """Whether any feature column or the prediction drifted (what makes the "on_drift" report)."""
        return bool(self.drifted_columns) or (self.prediction is not None and self.prediction.drifted)

    def top(self, n: int = 5) -> list[ColumnDrift]:
        """The n columns furthest over (or closest to) their thresholds."""
        return sorted(self.columns, key=lambda c: c.excess, reverse=True)[:n]

    def summary(self) -> str:
        """The verdict in one line: share of drifted columns, sample sizes, prediction drift."""
        return " · ".join(self._summary_lines())

    def _summary_lines(self) -> list[str]:
        lines = [f"{len(self.drifted_columns)}/{len(self.columns)} columns drifted (share {self.drift_share:.2f}, "
                 f"dataset drift at >= {self.drift_share_threshold:.2f}) · reference {self.sampled_reference_rows}"
                 f"/{self.reference_rows} rows, current {self.sampled_current_rows}/{self.current_rows} rows"]
        if self.fdr is not None:
            tested = sum(c.adjusted is not None for c in [*self.columns, *filter(None, [self.prediction])])
            lines.append(f"p-values Benjamini-Hochberg adjusted across {tested} tests (false-discovery rate "
                         f"{self.fdr:g}): drift when adjusted p <= {self.fdr:g}")
        if self.prediction is not None:
            p = self.prediction
            lines.append(f"Prediction drift: {'yes' if p.drifted else 'no'} ({p.method} {p.score:.3g}, threshold "
                         f"{p.threshold:.3g}{'' if p.adjusted is None else f', adjusted p {p.adjusted:.3g}'})")
        return lines

    def table(self) -> list[dict[str, Any]]:
        """Every column's test, score and verdict (the prediction first, then furthest over threshold): a table artifact."""
        adjusted = self.fdr is not None  # the column only when some verdict was adjusted
        return [{"column": c.column, "kind": c.kind, "test": c.method, "score": _round(c.score),
                 "threshold": _round(c.threshold), **({"adjusted p": _round(c.adjusted)} if adjusted else {}),
                 "drifted": c.drifted}
                for c in [*([self.prediction] if self.prediction else []), *self.top(len(self.columns))]]

    def metrics(self) -> dict[str, float]:
        """Numbers for the monitoring run: drift share, drifted count, dataset verdict, every column's score."""
        return {"drift_share": self.drift_share, "drifted_columns": len(self.drifted_columns),
                "dataset_drift": float(self.dataset_drift), **{f"drift_score.{c.column}": c.score for c in self.columns},
                **{f"drift_adjusted_p.{c.column}": c.adjusted for c in self.columns if c.adjusted is not None},
                **({"prediction_drift_score": self.prediction.score} if self.prediction is not None else {})}

    def alert_reasons(self) -> list[str]:
        """Why this drift should raise an alert (data drift, prediction drift); empty when it should not."""
        reasons = []
        if self.dataset_drift:
            drifted = [c for c in self.top(len(self.columns)) if c.drifted]
            top = ", ".join(c.evidence() if c.is_p_value else c.column for c in drifted[:5])
            reasons.append(f"data drift: {len(self.drifted_columns)}/{len(self.columns)} columns "
                           f"(share {self.drift_share:.2f} >= {self.drift_share_threshold:.2f}): {top}")
        if self.prediction is not None and self.prediction.drifted:
            p = self.prediction
            if not p.is_p_value:
                reasons.append(f"prediction drift: {p.method} {p.score:.3f} >= {p.threshold}")
            else:
                adjusted = "" if p.adjusted is None else f" (adjusted {p.adjusted:.2g})"
                reasons.append(f"prediction drift: {p.method} {p.score:.2g} < {p.threshold:.2g}{adjusted}")
        return reasons

    def markdown(self) -> str:
        """Report for the monitoring run's MLflow artifacts: verdict, share, top drifted columns, report location."""
        verdict = "DRIFT" if self.dataset_drift else "no dataset drift"
        lines = [f"# Data drift: {verdict}", *self._summary_lines()]
        lines += ["", "| column | kind | test | score | threshold | adjusted p | drifted |", "|---" * 7 + "|"]
        lines += [f"| {c.column} | {c.kind} | {c.method} | {c.score:.4g} | {c.threshold:.4g} | "
                  f"{'-' if c.adjusted is None else f'{c.adjusted:.4g}'} | {'**yes**' if c.drifted else 'no'} |"
                  for c in self.top(10)]
        if self.html_path:
            lines += ["", f"Full report: `{self.html_path}` (JSON: `{self.json_path}`)"]
        return "\n".join(lines)


def _round(value: float | None) -> float | None:
    """4 significant digits: p-values and BH thresholds can be far below 0.0001."""
    return None if value is None else float(f"{value:.4g}")


def sample_rows(frame: pd.DataFrame, cap: int | None, seed: int) -> pd.DataFrame:
    """A uniform random sample of at most `cap` rows (all rows when cap is None or larger)."""
    if cap is None or len(frame) <= cap:
        return frame
    return frame.sample(n=cap, random_state=seed)


def build_reference(model: Any, frame: pd.DataFrame, features: list[str], label: str, cap: int, seed: int) -> pd.DataFrame:
    """The drift reference stored with a model version: held-out rows (capped) plus the model's predictions on them."""
    from tasks.model.metrics import drift_predictions, model_classes, predict_scores

    ref = sample_rows(frame[[*features, label]], cap, seed).reset_index(drop=True)
    ref[PREDICTION_COLUMN], _ = drift_predictions(predict_scores(model, ref[features]), model_classes(model))
    return ref


@dataclass(frozen=True)
class CurrentSample:
    """The batch side of a drift comparison: up to `cap` rows with the model's predictions added, and its scores
    (probabilities, or a regressor's predicted numbers)."""

    frame: pd.DataFrame
    proba: np.ndarray
    prediction_kind: str


def current_sample(model: Any, frame: pd.DataFrame, features: list[str], cap: int | None, seed: int) -> CurrentSample:
    """A uniform sample of the batch scored by the model, its predictions in PREDICTION_COLUMN (like the reference)."""
    from tasks.model.metrics import drift_predictions, model_classes, predict_scores

    current = sample_rows(frame, cap, seed).copy()
    proba = predict_scores(model, current[features])
    current[PREDICTION_COLUMN], kind = drift_predictions(proba, model_classes(model))
    return CurrentSample(frame=current, proba=proba, prediction_kind=kind)


def _parse_snapshot(snapshot: dict[str, Any], kinds: dict[str, str]) -> tuple[list[ColumnDrift], float]:
    metrics = {m["id"]: m for m in snapshot["metrics"]}
    verdicts: dict[str, bool] = {}
    for test in snapshot.get("tests", []):
        metric = metrics.get(test.get("metric_config", {}).get("metric_id"))
        if metric and metric["config"].get("type", "").endswith("ValueDrift"):
            verdicts[metric["config"]["column"]] = test["status"] == "FAIL"
    columns: list[ColumnDrift] = []
    share_threshold = 0.5
    for metric in snapshot["metrics"]:
        config = metric["config"]
        if config.get("type", "").endswith("DriftedColumnsCount"):
            share_threshold = float(config.get("drift_share", share_threshold))
        if not config.get("type", "").endswith("ValueDrift"):
            continue
        name, score, threshold = config["column"], float(metric["value"]), float(config["threshold"])
        method = str(config["method"])
        if method == TWO_SAMPLE_CHI_SQUARE:  # a method we passed by its registry name: shown by its display name
            method = TWO_SAMPLE_CHI_SQUARE_DISPLAY
        # p-value tests drift when the score is *below* the threshold; distances when above.
        fallback = score < threshold if "p_value" in method or "test" in method.lower() else score >= threshold
        columns.append(ColumnDrift(column=name, kind=kinds.get(name, "numeric"), method=method, score=score,
                                   threshold=threshold, drifted=verdicts.get(name, fallback)))
    return columns, share_threshold


@dataclass(frozen=True)
class _Sides:
    """Both samples, reduced to the compared columns, and each column's kind."""

    reference: pd.DataFrame
    current: pd.DataFrame
    numeric: list[str]
    categorical: list[str]

    @property
    def kinds(self) -> dict[str, str]:
        return {**{c: "numeric" for c in self.numeric}, **{c: "categorical" for c in self.categorical}}


def _sides(reference: pd.DataFrame, current: pd.DataFrame, numeric: list[str], categorical: list[str],
           prediction_kind: str | None, sample_cap: int | None, seed: int) -> _Sides:
    num, cat = list(numeric), list(categorical)
    if prediction_kind == "numeric":
        num.append(PREDICTION_COLUMN)
    elif prediction_kind == "categorical":
        cat.append(PREDICTION_COLUMN)
    if sample_cap is not None and sample_cap < MIN_SAMPLE_ROWS:
        raise ValueError(f"sample_cap={sample_cap} is below {MIN_SAMPLE_ROWS}: a small sample would switch Evidently "
                         "from distance tests to p-value tests and change the decisions.")
    # Sample first, then pick columns: never copies the full table.
    cols = num + cat
    return _Sides(sample_rows(reference, sample_cap, seed)[cols], sample_rows(current, sample_cap, seed + 1)[cols],
                  num, cat)


def _run_preset(sides: _Sides, drift_share: float, methods: dict[str, str] | None = None,
                thresholds: dict[str, float] | None = None) -> Any:
    """Evidently's full DataDriftPreset on both samples: the snapshot behind the HTML report. `methods` and
    `thresholds` replace the preset's own choice for some columns (by registry name; per-column p-value cut-off)."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    chi_square_two_sample()  # registered before the preset looks it up by name
    definition = DataDefinition(numerical_columns=sides.numeric, categorical_columns=sides.categorical)
    report = Report([DataDriftPreset(columns=sides.numeric + sides.categorical, drift_share=drift_share,
                                     per_column_method=methods or None, per_column_threshold=thresholds or None)],
                    include_tests=True)
    return report.run(current_data=Dataset.from_pandas(sides.current, data_definition=definition),
                      reference_data=Dataset.from_pandas(sides.reference, data_definition=definition))


def _finite(values: pd.Series, column: str, side: str) -> pd.Series:
    """The values Evidently tests: +-inf and missing values dropped (same result, faster for floats and strings)."""
    import numpy as np
    from pandas.api.types import infer_dtype

    if isinstance(values.dtype, np.dtype) and values.dtype.kind == "f":
        kept = values[np.isfinite(values.to_numpy())]
    elif infer_dtype(values, skipna=True) == "string":  # no string equals +-inf: only the missing values go
        kept = values.dropna()
    else:
        kept = values.replace([-np.inf, np.inf], np.nan).dropna()
    if kept.empty:
        raise ValueError(f"An empty column '{column}' was provided for drift calculation in the {side} dataset.")
    return kept


def _more_distinct_than(reference: pd.Series, current: pd.Series, limit: int, head: int = 512) -> bool:
    """Whether both sides together hold more than `limit` distinct values, counted as Evidently counts them.

    A prefix of the same concatenation has at most as many distinct values as the whole, so a prefix with more
    than `limit` answers without hashing every row; otherwise every row is counted."""
    import pandas as pd

    if pd.concat([reference.iloc[:head], current.iloc[:head]]).nunique() > limit:
        return True
    return pd.concat([reference, current]).nunique() > limit


def _default_test(reference: pd.Series, current: pd.Series, column_type: Any) -> Any:
    """The test DataDriftPreset picks for a column (Evidently's `_get_default_stattest`), its distinct count cut short.

    Above 1000 reference rows: Jensen-Shannon for categories and for numbers with at most 5 distinct values,
    normed Wasserstein for other numbers. Evidently counts every distinct value of both sides for that (twice for
    numbers); only "more than 5?" matters. Small samples go to Evidently's own chooser (K-S, chi-square, Z-test)."""
    from evidently.legacy.calculations import stattests
    from evidently.legacy.calculations.stattests.registry import get_stattest
    from evidently.legacy.core import ColumnType

    if reference.shape[0] <= 1000 or column_type not in (ColumnType.Numerical, ColumnType.Categorical):
        return get_stattest(reference, current, column_type, None)
    if column_type == ColumnType.Categorical or not _more_distinct_than(reference, current, 5):
        return stattests.jensenshannon_stat_test
    return stattests.wasserstein_stat_test


def _chosen_test(reference: pd.Series, current: pd.Series, column_type: Any, decision: Decision) -> Any:
    """The preset's test for a column; with the "adjusted" decision, the two-sample chi-square test where the preset
    would run its goodness-of-fit chi-square (which takes a small reference's frequencies as exact)."""
    from evidently.legacy.calculations import stattests

    test = _default_test(reference, current, column_type)
    if decision == "adjusted" and test is stattests.chi_stat_test:
        return chi_square_two_sample()
    return test


def column_drift(reference: pd.Series, current: pd.Series, column: str, kind: str,
                 decision: Decision = "adjusted") -> ColumnDrift:
    """One column judged as DataDriftPreset's `ValueDrift` judges it: the same cleaning, test choice and test code
    (the "adjusted" decision: a two-sample chi-square instead of the preset's; the verdict before any adjustment)."""
    from evidently.legacy.core import ColumnType
    from pandas.api.types import is_numeric_dtype

    column_type = ColumnType.Numerical if kind == "numeric" else ColumnType.Categorical
    ref, cur = _finite(reference, column, "reference"), _finite(current, column, "current")
    if column_type == ColumnType.Numerical:
        for side, values in (("reference", ref), ("current", cur)):
            if not is_numeric_dtype(values):
                raise ValueError(f"Column '{column}' in {side} dataset should contain numerical values only.")
    test = _chosen_test(ref, cur, column_type, decision)
    outcome = test(ref, cur, column_type, None)
    return ColumnDrift(column=column, kind=kind, method=test.display_name, score=float(outcome.drift_score),
                       threshold=float(outcome.actual_threshold), drifted=bool(outcome.drifted))


def _result(columns: list[ColumnDrift], share_threshold: float, reference: pd.DataFrame, current: pd.DataFrame,
            sides: _Sides, decision: Decision) -> DriftResult:
    """The dataset verdict from the feature columns' verdicts, and the prediction's verdict (with the "adjusted"
    decision, the p-value verdicts of both adjusted together first)."""
    if decision == "adjusted":  # the prediction in the family too: a night alarms on either
        columns = adjust(columns, FDR)
    prediction = next((c for c in columns if c.column == PREDICTION_COLUMN), None)
    features = [c for c in columns if c.column != PREDICTION_COLUMN]
    drifted = [c.column for c in features if c.drifted]
    share = len(drifted) / len(features) if features else 0.0
    return DriftResult(
        dataset_drift=share >= share_threshold, drift_share=share, drift_share_threshold=share_threshold,
        fdr=FDR if any(c.adjusted is not None for c in columns) else None,
        drifted_columns=drifted, columns=features, prediction=prediction, reference_rows=len(reference),
        current_rows=len(current), sampled_reference_rows=len(sides.reference),
        sampled_current_rows=len(sides.current))


ReportMode = Literal["on_drift", "always", "never"]


def compute_drift(reference: pd.DataFrame, current: pd.DataFrame, numeric: list[str], categorical: list[str], *,
                  prediction_kind: str | None = None, sample_cap: int | None = DEFAULT_SAMPLE_ROWS,
                  drift_share: float = 0.5, seed: int = 0, report_dir: Path | None = None,
                  report: ReportMode = "on_drift", decision: Decision = "adjusted") -> DriftResult:
    """Every column's drift by Evidently's tests (capped samples), decided as `decision` says ("adjusted": see the
    module docstring; "preset": as DataDriftPreset decides); in report_dir the verdicts as JSON, and Evidently's HTML
    report when `report` asks for it ("on_drift": a column or the prediction drifted)."""
    start = time.perf_counter()
    sides = _sides(reference, current, numeric, categorical, prediction_kind, sample_cap, seed)
    kinds = sides.kinds
    columns = [column_drift(sides.reference[c], sides.current[c], c, kinds[c], decision) for c in kinds]
    result = _result(columns, drift_share, reference, current, sides, decision)
    if report_dir is None:
        if report == "always":
            raise ValueError("report='always' needs a report_dir to write the HTML report to.")
        return result.model_copy(update={"seconds": time.perf_counter() - start})
    report_dir.mkdir(parents=True, exist_ok=True)
    html_path, json_path = report_dir / "drift_report.html", report_dir / "drift_report.json"
    html_path.unlink(missing_ok=True)  # never leave an older night's report behind this result
    report_seconds = 0.0
    if report == "always" or (report == "on_drift" and result.any_drift):
        begun = time.perf_counter()
        try:
            snapshot = _run_preset(sides, drift_share, *_preset_overrides(result))
            snapshot.save_html(str(html_path))
        except Exception as error:  # noqa: BLE001 - the verdicts stand; only the pictures are missing
            # e.g. a bool column, or nullable floats with inf: the tests take them, the preset's plots do not
            logging.getLogger(__name__).warning("No Evidently HTML report: its preset failed (%s: %s); the drift "
                                                "verdicts are unaffected", type(error).__name__, error)
        else:
            _warn_if_preset_disagrees(result, snapshot.dict(), kinds)
        report_seconds = time.perf_counter() - begun
    result = result.model_copy(update={"html_path": str(html_path) if html_path.exists() else None,
                                       "json_path": str(json_path), "report_seconds": report_seconds})
    result = result.model_copy(update={"seconds": time.perf_counter() - start})
    json_path.write_text(result.model_dump_json(indent=2))
    return result


def _preset_overrides(result: DriftResult) -> tuple[dict[str, str], dict[str, float]]:
    """What the preset must be told to decide as `result` did: the columns run with the two-sample chi-square test,
    and the adjusted columns' cut-offs."""
    ours = [*result.columns, *([result.prediction] if result.prediction else [])]
    return ({c.column: TWO_SAMPLE_CHI_SQUARE for c in ours if c.method == TWO_SAMPLE_CHI_SQUARE_DISPLAY},
            {c.column: c.threshold for c in ours if c.adjusted is not None})


def _warn_if_preset_disagrees(result: DriftResult, snapshot: dict[str, Any], kinds: dict[str, str]) -> None:
    """The HTML report must show the verdicts we act on: log any column where the preset decided otherwise."""
    preset = {c.column: c for c in _parse_snapshot(snapshot, kinds)[0]}
    ours = [*result.columns, *([result.prediction] if result.prediction else [])]
    differ = [c.column for c in ours if (p := preset.get(c.column)) is None
              or (p.method, p.drifted) != (c.method, c.drifted) or abs(p.score - c.score) > 1e-9]
    if differ:
        logging.getLogger(__name__).warning("Evidently's report decided differently on %s than the drift verdicts "
                                            "acted on; please report this with the Evidently version", differ)


def compute_drift_preset(reference: pd.DataFrame, current: pd.DataFrame, numeric: list[str], categorical: list[str],
                         *, prediction_kind: str | None = None, sample_cap: int | None = DEFAULT_SAMPLE_ROWS,
                         drift_share: float = 0.5, seed: int = 0, report_dir: Path | None = None,
                         decision: Decision = "adjusted") -> DriftResult:
    """The same comparison run by Evidently's full DataDriftPreset (HTML and Evidently's JSON to report_dir): with the
    "adjusted" decision, given the two-sample chi-square where `compute_drift` uses it, its p-values then adjusted.

    Slow (the preset computes each column three times and builds every figure): kept as the yardstick that
    `compute_drift` must match, in tests and benchmarks."""
    start = time.perf_counter()
    sides = _sides(reference, current, numeric, categorical, prediction_kind, sample_cap, seed)
    snapshot = _run_preset(sides, drift_share, _two_sample_columns(sides) if decision == "adjusted" else None)
    columns, share_threshold = _parse_snapshot(snapshot.dict(), sides.kinds)
    result = _result(columns, share_threshold, reference, current, sides, decision)
    if report_dir is not None:
        report_dir.mkdir(parents=True, exist_ok=True)
        html_path, json_path = str(report_dir / "drift_report.html"), str(report_dir / "drift_report.json")
        snapshot.save_html(html_path)
        snapshot.save_json(json_path)
        result = result.model_copy(update={"html_path": html_path, "json_path": json_path})
    return result.model_copy(update={"seconds": time.perf_counter() - start})


def _two_sample_columns(sides: _Sides) -> dict[str, str]:
    """The columns the preset would give its goodness-of-fit chi-square, to be run with the two-sample one instead."""
    from evidently.legacy.calculations import stattests
    from evidently.legacy.core import ColumnType

    chosen = {}
    for column, kind in sides.kinds.items():
        ref = _finite(sides.reference[column], column, "reference")
        cur = _finite(sides.current[column], column, "current")
        column_type = ColumnType.Numerical if kind == "numeric" else ColumnType.Categorical
        if _default_test(ref, cur, column_type) is stattests.chi_stat_test:
            chosen[column] = TWO_SAMPLE_CHI_SQUARE
    return chosen


build_reference_task = task(build_reference, name="build-drift-reference", cache_policy=NO_CACHE)
current_sample_task = task(current_sample, name="score-drift-sample", cache_policy=NO_CACHE)
compute_drift_task = task(compute_drift, name="compute-drift", cache_policy=NO_CACHE)
