"""Training-serving skew: the features a batch file says a day's rows had vs what the model server was sent.

Two views, on the same day of one model:
- row by row, when both sides carry the model's id column (the server records it as `row_id` when requests send
  it): for each feature, the share of matched rows whose values differ (numbers beyond a relative tolerance, other
  values as text; missing on one side only counts as different). This is the skew that bites: the online feature
  pipeline computing something else than the offline one, for the same entity;
- as distributions otherwise (no ids, or none matched): Evidently's per-column drift test, the file as reference
  and served traffic as current (tasks.monitoring.drift); a drifted column is a skewed one.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, Field

from tasks.data.served import load_served, served_parts

if TYPE_CHECKING:
    import pandas as pd


SKEW_TOLERANCE = 1e-6  # relative: float32/float64 round trips are not skew
MAX_SKEW_SHARE = 0.01  # a column whose values differ on more than 1% of matched rows is skewed


class ColumnSkew(BaseModel):
    """One feature compared between the batch file and served traffic."""

    column: str
    differing_share: float = Field(description="Row view: share of matched rows whose values differ. Distribution "
                                               "view: the drift score.")
    skewed: bool
    example: str | None = Field(None, description="One differing row: id, file value, served value.")


class SkewReport(BaseModel):
    """Training-serving skew of one model's day: which features differ between the file and what was served."""

    model_name: str
    day: date
    view: Literal["rows", "distribution"]
    file_rows: int
    served_rows: int
    matched_rows: int = Field(0, description="Rows found on both sides by id (row view).")
    columns: list[ColumnSkew]

    @property
    def skewed_columns(self) -> list[str]:
        """Features that differ beyond tolerance."""
        return [c.column for c in self.columns if c.skewed]

    def summary(self) -> str:
        """One line: how compared, and which columns are skewed."""
        how = (f"{self.matched_rows} rows matched by id" if self.view == "rows" else
               "distributions compared (no ids to match rows)")
        skewed = self.skewed_columns
        verdict = f"skew in {len(skewed)} column(s): {', '.join(skewed[:8])}" if skewed else "no skew"
        return (f"{self.model_name} {self.day}: file {self.file_rows} rows vs served {self.served_rows}; {how}; "
                f"{verdict}")

    def table(self) -> list[dict[str, Any]]:
        """One row per feature, skewed first: a table artifact."""
        return [{"column": c.column, "differing": f"{c.differing_share:.4f}", "skewed": "yes" if c.skewed else "no",
                 "example": c.example or ""} for c in sorted(self.columns, key=lambda c: (not c.skewed, c.column))]

    def metrics(self) -> dict[str, float]:
        """MLflow metrics of the monitoring run."""
        return {"skew_columns": float(len(self.skewed_columns)), "skew_matched_rows": float(self.matched_rows),
                "served_rows": float(self.served_rows)}


def _differs(a: pd.Series, b: pd.Series) -> pd.Series:
    """Row-wise: the two sides' values differ (beyond tolerance for numbers; missing on one side only)."""
    import numpy as np
    import pandas as pd

    both_missing = a.isna().to_numpy() & b.isna().to_numpy()
    if pd.api.types.is_numeric_dtype(a) and pd.api.types.is_numeric_dtype(b):
        x, y = a.to_numpy(dtype=float), b.to_numpy(dtype=float)
        close = np.isclose(x, y, rtol=SKEW_TOLERANCE, atol=0.0, equal_nan=True)
        return pd.Series(~close & ~both_missing, index=a.index)
    return pd.Series((a.astype(str).to_numpy() != b.astype(str).to_numpy()) & ~both_missing, index=a.index)


def training_serving_skew(model_name: str, day: date, file_frame: pd.DataFrame, served: pd.DataFrame,
                          numeric: list[str], categorical: list[str], id_column: str | None = None,
                          max_share: float = MAX_SKEW_SHARE, seed: int = 0) -> SkewReport:
    """Compare a day's batch file with the traffic the server scored that day, row by row when ids match."""
    features = [c for c in [*numeric, *categorical] if c in file_frame.columns and c in served.columns]
    if id_column and id_column in file_frame.columns and id_column in served.columns:
        left = file_frame.drop_duplicates(id_column)
        right = served.drop_duplicates(id_column, keep="last")
        left, right = (side.set_index(side[id_column].astype(str)) for side in (left, right))  # ids as captured
        shared = left.index.intersection(right.index)
        if len(shared):
            columns = []
            for column in features:
                differs = _differs(left.loc[shared, column], right.loc[shared, column])
                share = float(differs.mean())
                first = differs[differs].index[:1]
                example = (f"{id_column}={first[0]}: file {left.at[first[0], column]!r}, served "
                           f"{right.at[first[0], column]!r}") if len(first) else None
                columns.append(ColumnSkew(column=column, differing_share=share, skewed=share > max_share,
                                          example=example))
            return SkewReport(model_name=model_name, day=day, view="rows", file_rows=len(file_frame),
                              served_rows=len(served), matched_rows=len(shared), columns=columns)
    from tasks.monitoring.drift import compute_drift

    drift = compute_drift(file_frame, served, [c for c in numeric if c in features],
                          [c for c in categorical if c in features], seed=seed)
    columns = [ColumnSkew(column=c.column, differing_share=c.score, skewed=c.drifted) for c in drift.columns]
    return SkewReport(model_name=model_name, day=day, view="distribution", file_rows=len(file_frame),
                      served_rows=len(served), columns=columns)


def skew_check(model_name: str, day: date, file_frame: pd.DataFrame, served_root: Path, numeric: list[str],
               categorical: list[str], id_column: str | None = None, seed: int = 0) -> SkewReport | None:
    """The day's skew report when the server captured traffic of the model that day, else None."""
    if not served_parts(served_root, model_name, day):
        return None
    served = load_served(served_root, model_name, day, id_column)
    return training_serving_skew(model_name, day, file_frame, served, numeric, categorical, id_column, seed=seed)


skew_check_task = task(skew_check, name="training-serving-skew", cache_policy=NO_CACHE)
