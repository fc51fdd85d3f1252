"""The data contract a model version carries: its feature columns, their kinds and ranges, its classes; how
labels are keyed and aligned to those classes; and what changes between two contracts."""

from __future__ import annotations

import hashlib
import math
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict, Field

from tasks.data.datasets import FeatureSpec

if TYPE_CHECKING:
    import pandas as pd


CONTRACT_FORMAT = "nightshift.contract/1"
Severity = Literal["error", "warning"]
Scalar = str | int | float | bool
MAX_EXAMPLES = 5


class ColumnContract(BaseModel):
    """What one feature column promised at training time."""

    model_config = ConfigDict(frozen=True)

    name: str
    kind: Literal["numeric", "categorical"]
    dtype: str
    nullable: bool = Field(description="The reference had missing values here.")
    min: float | None = None
    max: float | None = None
    categories: list[str] | None = None


class Contract(BaseModel):
    """The data a model version was trained under: columns, types, ranges, categories, label classes."""

    model_config = ConfigDict(frozen=True)

    format: str = CONTRACT_FORMAT
    label: str
    task: Literal["classification", "regression"] = "classification"
    label_classes: list[Scalar] = Field(description="The classes a classifier predicts; empty for regression.")
    columns: list[ColumnContract]
    optional: list[str] = Field(default_factory=list, description="Known non-feature columns (dates, ids).")
    range_tolerance: float = Field(description="Allowed overshoot beyond [min, max], as a share of max - min.")
    max_far_share: float = Field(
        0.01, description="Share of rows beyond the widened range above which a column is an error, not a warning.")
    reference_rows: int

    @property
    def numeric(self) -> tuple[str, ...]:
        """Numeric feature names."""
        return tuple(c.name for c in self.columns if c.kind == "numeric")

    @property
    def categorical(self) -> tuple[str, ...]:
        """Categorical feature names."""
        return tuple(c.name for c in self.columns if c.kind == "categorical")

    @property
    def features(self) -> list[str]:
        """Feature names in model input order."""
        return [c.name for c in self.columns]

    def spec(self) -> FeatureSpec:
        """The feature spec this contract describes."""
        return FeatureSpec(label=self.label, numeric=self.numeric, categorical=self.categorical,
                           ignored=tuple(self.optional))

    def fingerprint(self) -> str:
        """Content hash of the contract (what /version and audit records quote)."""
        # A classifier's contract hashes as it did before contracts named their task.
        exclude = {"task"} if self.task == "classification" else None
        return hashlib.sha256(self.model_dump_json(exclude=exclude).encode()).hexdigest()

    def bounds(self, col: ColumnContract) -> tuple[float, float]:
        """The tolerated range of a numeric column."""
        assert col.min is not None and col.max is not None
        slack = self.range_tolerance * max(col.max - col.min, abs(col.max), 1e-9)
        return col.min - slack, col.max + slack


def _json_scalar(value: object) -> Scalar:
    return value.item() if hasattr(value, "item") else value  # type: ignore[return-value]


def infer_contract(frame: pd.DataFrame, spec: FeatureSpec, range_tolerance: float = 0.5,
                   max_far_share: float = 0.01, task: Literal["classification", "regression"] = "classification",
                   valid_ranges: dict[str, tuple[float, float]] | None = None) -> Contract:
    """Describe the reference data as a contract that later batches are checked against; a numeric column's range
    spans `valid_ranges[column]` too (what it can take whatever this data saw)."""
    import pandas as pd

    valid_ranges = valid_ranges or {}
    unknown = sorted(set(valid_ranges) - set(spec.numeric))
    if unknown:
        raise ValueError(f"valid_ranges names {', '.join(map(repr, unknown))}, not numeric feature(s) of this data "
                         f"(numeric: {', '.join(spec.numeric[:20])})")
    columns = []
    for name in spec.features:
        s = frame[name]
        if name in spec.numeric:
            values = pd.to_numeric(s, errors="coerce").astype(float)
            lo, hi = valid_ranges.get(name, (np.inf, -np.inf))
            columns.append(ColumnContract(name=name, kind="numeric", dtype=str(s.dtype), nullable=bool(s.isna().any()),
                                          min=float(np.fmin(values.min(), lo)), max=float(np.fmax(values.max(), hi))))
        else:
            cats = sorted(map(str, s.dropna().unique()))
            columns.append(ColumnContract(name=name, kind="categorical", dtype=str(s.dtype),
                                          nullable=bool(s.isna().any()), categories=cats))
    classes = [] if task == "regression" else sorted(
        (_json_scalar(v) for v in frame[spec.label].dropna().unique()), key=str)
    return Contract(label=spec.label, task=task, label_classes=classes, columns=columns, optional=list(spec.ignored),
                    range_tolerance=range_tolerance, max_far_share=max_far_share, reference_rows=len(frame))


def _number_key(number: float) -> str | None:
    if math.isnan(number):
        return None
    return str(int(number)) if number.is_integer() and abs(number) < 2**53 else repr(number)


def label_key(value: object, string_classes: bool = False) -> str | None:
    """A label's identity whatever a reader typed it as; None if missing.

    Against numeric or boolean classes 1, 1.0, "1", " 1.0 " and True are one class; against string classes a
    string matches only itself (stripped: "01" is not "1"), and a number its plain spelling (1.0 is "1").
    """
    import pandas as pd

    if value is None or value is pd.NA:
        return None
    if isinstance(value, str):
        text = value.strip()
        if string_classes or not text:
            return text or None
        if text.lower() in ("true", "false"):
            return "1" if text.lower() == "true" else "0"
        try:
            return str(int(text))
        except ValueError:
            pass
        try:
            return _number_key(float(text))
        except ValueError:
            return text
    if isinstance(value, (bool, np.bool_)):
        return str(value) if string_classes else str(int(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    try:
        return _number_key(float(value))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return str(value).strip() or None


def _class_kind(classes: Any) -> str:
    """'string', 'boolean' or 'number': what a model's predicted labels look like to its callers."""
    values = np.asarray(classes, dtype=object).tolist()
    if all(isinstance(c, str) for c in values):
        return "string"
    return "boolean" if all(isinstance(c, (bool, np.bool_)) for c in values) else "number"


def align_labels(values: pd.Series, classes: Any) -> tuple[pd.Series, pd.Series]:
    """Labels mapped onto the model's classes (missing stay missing), plus the values that match no class."""
    import pandas as pd

    strings = _class_kind(classes) == "string"
    by_key = {label_key(c, strings): c for c in np.asarray(classes, dtype=object).tolist()}
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    keys = [label_key(u, strings) for u in uniques]
    mapped = np.array([by_key.get(k) for k in keys] + [None], dtype=object)  # code -1 (missing) -> None
    aligned = pd.Series(mapped[codes], index=values.index, dtype=object)
    known = np.array([k is None or k in by_key for k in keys] + [True])
    return aligned, values[~known[codes]]


def class_order(source: Any, target: Any) -> list[int] | None:
    """Where each of `target`'s classes sits among `source`'s (for reordering probability columns); None if the
    two models do not predict the same classes."""
    import pandas as pd

    source_list = np.asarray(source, dtype=object).tolist()
    aligned, unknown = align_labels(pd.Series(np.asarray(target, dtype=object)), source_list)
    if len(unknown) or len(source_list) != len(aligned) or aligned.isna().any():
        return None
    order = [source_list.index(c) for c in aligned]
    return order if len(set(order)) == len(order) else None


def canonical_labels(values: pd.Series) -> pd.Series:
    """A label column with one type: whole floats (0.0, 1.0; from a column with blanks) become integers, and an
    object column of booleans stays boolean. Other columns are left alone."""
    import pandas as pd

    present = values.dropna()
    if pd.api.types.is_float_dtype(values) and len(present) and (present % 1 == 0).all():
        return values.astype("Int64").astype(object).where(values.notna(), None)
    if values.dtype == object and len(present) and all(isinstance(v, (bool, np.bool_)) for v in present.unique()):
        return values.where(values.notna(), None)
    return values


def schema_changes(live: Contract, candidate: Contract) -> list[str]:
    """How a candidate model would break callers of the live one: new required columns, changed kinds or classes."""
    old = {c.name: c for c in live.columns}
    changes = []
    added = [c.name for c in candidate.columns if c.name not in old]
    if added:
        changes.append(f"requires column(s) the live model does not: {', '.join(map(repr, added[:10]))}"
                       + (f" (+{len(added) - 10} more)" if len(added) > 10 else ""))
    changes += [f"column '{c.name}' is {c.kind}, was {old[c.name].kind}" for c in candidate.columns
                if c.name in old and old[c.name].kind != c.kind]
    if live.task != candidate.task:
        return [*changes, f"predicts for task {candidate.task}, the live model for task {live.task}"]
    if live.task == "regression":
        return changes
    live_kind, kind = _class_kind(live.label_classes), _class_kind(candidate.label_classes)
    if kind != live_kind or class_order(live.label_classes, candidate.label_classes) is None:
        changes.append(f"predicts classes {candidate.label_classes} ({kind}), the live model "
                       f"{live.label_classes} ({live_kind})")
    return changes


infer_contract_task = task(infer_contract, name="infer-contract", cache_policy=NO_CACHE)
