"""All Evidently code: data and prediction drift between a model's reference data and a new batch.

Scale: Evidently's DataDriftPreset costs ~10x bare scipy (it computes each column's drift several
times and builds Plotly widgets), so both sides are first capped to a uniform random sample of
`sample_cap` rows (default 100k). Above 1000 reference rows Evidently's tests are distances
(normed Wasserstein for numbers, Jensen-Shannon for categories, drift at >= 0.1), and their
sampling error shrinks like 1/sqrt(n): at 100k rows per side the score of an undrifted column is
~0.005, so a sampled score differs from the full-data score by far less than the 0.1 threshold;
only columns whose full-data score lies within that error of the threshold could flip, and
`make bench` checks decision agreement with full-data Evidently on its drift scenarios.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, Field

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

DEFAULT_SAMPLE_ROWS = 100_000
MIN_SAMPLE_ROWS = 5_000  # keeps the sample on the same (distance) tests as big full data
PREDICTION_COLUMN = "__prediction__"


class ColumnDrift(BaseModel):
    """Drift of one column: the test Evidently used, its score and threshold, and the verdict."""

    column: str
    kind: str
    method: str
    score: float
    threshold: float
    drifted: bool


class DriftResult(BaseModel):
    """Dataset-level verdict plus every column's drift, and where the full reports were saved."""

    dataset_drift: bool
    drift_share: float = Field(description="Share of feature columns that drifted.")
    drift_share_threshold: float
    drifted_columns: list[str]
    columns: list[ColumnDrift]
    prediction: ColumnDrift | None = None
    reference_rows: int
    current_rows: int
    sampled_reference_rows: int
    sampled_current_rows: int
    html_path: str | None = None
    json_path: str | None = None
    seconds: float = 0.0

    def top(self, n: int = 5) -> list[ColumnDrift]:
        """The n columns furthest over (or closest to) their thresholds."""
        return sorted(self.columns, key=lambda c: c.score / c.threshold if c.threshold else c.score, reverse=True)[:n]

    def summary(self) -> str:
        """The verdict in one line: share of drifted columns, sample sizes, prediction drift."""
        return " · ".join(self._summary_lines())

    def _summary_lines(self) -> list[str]:
        lines = [f"{len(self.drifted_columns)}/{len(self.columns)} columns drifted (share {self.drift_share:.2f}, "
                 f"dataset drift at >= {self.drift_share_threshold:.2f}) · reference {self.sampled_reference_rows}"
                 f"/{self.reference_rows} rows, current {self.sampled_current_rows}/{self.current_rows} rows"]
        if self.prediction is not None:
            p = self.prediction
            lines.append(f"Prediction drift: {'yes' if p.drifted else 'no'} ({p.method} {p.score:.3f}, threshold {p.threshold})")
        return lines

    def table(self) -> list[dict[str, Any]]:
        """Every column's test, score and verdict (the prediction first, then furthest over threshold): a table artifact."""
        return [{"column": c.column, "kind": c.kind, "test": c.method, "score": round(c.score, 4),
                 "threshold": c.threshold, "drifted": c.drifted}
                for c in [*([self.prediction] if self.prediction else []), *self.top(len(self.columns))]]

    def metrics(self) -> dict[str, float]:
        """Numbers for the monitoring run: drift share, drifted count, dataset verdict, every column's score."""
        return {"drift_share": self.drift_share, "drifted_columns": len(self.drifted_columns),
                "dataset_drift": float(self.dataset_drift), **{f"drift_score.{c.column}": c.score for c in self.columns},
                **({"prediction_drift_score": self.prediction.score} if self.prediction is not None else {})}

    def alert_reasons(self) -> list[str]:
        """Why this drift should raise an alert (data drift, prediction drift); empty when it should not."""
        reasons = []
        if self.dataset_drift:
            top = ", ".join(self.drifted_columns[:5])
            reasons.append(f"data drift: {len(self.drifted_columns)}/{len(self.columns)} columns "
                           f"(share {self.drift_share:.2f} >= {self.drift_share_threshold:.2f}): {top}")
        if self.prediction is not None and self.prediction.drifted:
            reasons.append(f"prediction drift: {self.prediction.method} {self.prediction.score:.3f} "
                           f">= {self.prediction.threshold}")
        return reasons

    def markdown(self) -> str:
        """Report for the monitoring run's MLflow artifacts: verdict, share, top drifted columns, report location."""
        verdict = "DRIFT" if self.dataset_drift else "no dataset drift"
        lines = [f"# Data drift: {verdict}", *self._summary_lines()]
        lines += ["", "| column | kind | test | score | threshold | drifted |", "|---|---|---|---|---|---|"]
        lines += [f"| {c.column} | {c.kind} | {c.method} | {c.score:.4f} | {c.threshold} | {'**yes**' if c.drifted else 'no'} |"
                  for c in self.top(10)]
        if self.html_path:
            lines += ["", f"Full report: `{self.html_path}` (JSON: `{self.json_path}`)"]
        return "\n".join(lines)


def sample_rows(frame: pd.DataFrame, cap: int | None, seed: int) -> pd.DataFrame:
    """A uniform random sample of at most `cap` rows (all rows when cap is None or larger)."""
    if cap is None or len(frame) <= cap:
        return frame
    return frame.sample(n=cap, random_state=seed)


def build_reference(model: Any, frame: pd.DataFrame, features: list[str], label: str, cap: int, seed: int) -> pd.DataFrame:
    """The drift reference stored with a model version: held-out rows (capped) plus the model's predictions on them."""
    from tasks.evaluate import drift_predictions

    ref = sample_rows(frame[[*features, label]], cap, seed).reset_index(drop=True)
    ref[PREDICTION_COLUMN], _ = drift_predictions(model.predict_proba(ref[features]), model.classes_)
    return ref


@dataclass(frozen=True)
class CurrentSample:
    """The batch side of a drift comparison: up to `cap` rows with the model's predictions added, and its probabilities."""

    frame: pd.DataFrame
    proba: np.ndarray
    prediction_kind: str


def current_sample(model: Any, frame: pd.DataFrame, features: list[str], cap: int | None, seed: int) -> CurrentSample:
    """A uniform sample of the batch scored by the model, its predictions in PREDICTION_COLUMN (like the reference)."""
    from tasks.evaluate import drift_predictions

    current = sample_rows(frame, cap, seed).copy()
    proba = model.predict_proba(current[features])
    current[PREDICTION_COLUMN], kind = drift_predictions(proba, model.classes_)
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
        # p-value tests drift when the score is *below* the threshold; distances when above.
        fallback = score < threshold if "p_value" in method or "test" in method.lower() else score >= threshold
        columns.append(ColumnDrift(column=name, kind=kinds.get(name, "numeric"), method=method, score=score,
                                   threshold=threshold, drifted=verdicts.get(name, fallback)))
    return columns, share_threshold


def compute_drift(reference: pd.DataFrame, current: pd.DataFrame, numeric: list[str], categorical: list[str], *,
                  prediction_kind: str | None = None, sample_cap: int | None = DEFAULT_SAMPLE_ROWS,
                  drift_share: float = 0.5, seed: int = 0, report_dir: Path | None = None) -> DriftResult:
    """Evidently DataDriftPreset over declared columns (on capped samples); HTML/JSON saved to report_dir."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    start = time.perf_counter()
    num, cat = list(numeric), list(categorical)
    if prediction_kind == "numeric":
        num.append(PREDICTION_COLUMN)
    elif prediction_kind == "categorical":
        cat.append(PREDICTION_COLUMN)
    cols = num + cat
    if sample_cap is not None and sample_cap < MIN_SAMPLE_ROWS:
        raise ValueError(f"sample_cap={sample_cap} is below {MIN_SAMPLE_ROWS}: a small sample would switch Evidently "
                         "from distance tests to p-value tests and change the decisions.")
    # Sample first, then pick columns: never copies the full table.
    ref = sample_rows(reference, sample_cap, seed)[cols]
    cur = sample_rows(current, sample_cap, seed + 1)[cols]
    definition = DataDefinition(numerical_columns=num, categorical_columns=cat)
    report = Report([DataDriftPreset(columns=cols, drift_share=drift_share)], include_tests=True)
    snapshot = report.run(current_data=Dataset.from_pandas(cur, data_definition=definition),
                          reference_data=Dataset.from_pandas(ref, data_definition=definition))
    kinds = {**{c: "numeric" for c in num}, **{c: "categorical" for c in cat}}
    all_columns, share_threshold = _parse_snapshot(snapshot.dict(), kinds)
    prediction = next((c for c in all_columns if c.column == PREDICTION_COLUMN), None)
    columns = [c for c in all_columns if c.column != PREDICTION_COLUMN]
    drifted = [c.column for c in columns if c.drifted]
    share = len(drifted) / len(columns) if columns else 0.0
    html_path = json_path = None
    if report_dir is not None:
        report_dir.mkdir(parents=True, exist_ok=True)
        html_path, json_path = str(report_dir / "drift_report.html"), str(report_dir / "drift_report.json")
        snapshot.save_html(html_path)
        snapshot.save_json(json_path)
    return DriftResult(
        dataset_drift=share >= share_threshold, drift_share=share, drift_share_threshold=share_threshold,
        drifted_columns=drifted, columns=columns, prediction=prediction, reference_rows=len(reference),
        current_rows=len(current), sampled_reference_rows=len(ref), sampled_current_rows=len(cur),
        html_path=html_path, json_path=json_path, seconds=time.perf_counter() - start,
    )


build_reference_task = task(build_reference, name="build-drift-reference", cache_policy=NO_CACHE)
current_sample_task = task(current_sample, name="score-drift-sample", cache_policy=NO_CACHE)
compute_drift_task = task(compute_drift, name="compute-drift", cache_policy=NO_CACHE)
