"""Validation: a table checked before training, and each night's batch checked against the champion's contract
(pandera), every failure one sentence naming the column, the value and the file."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, Field

from nightshift.errors import DataValidationError
from tasks.catalogue.config import Task
from tasks.data.contract import MAX_EXAMPLES, Contract, Severity, align_labels, canonical_labels
from tasks.data.datasets import FeatureSpec, LoadedDataset, infer_features

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True)
class TrainingData:
    """A dataset that passed the training checks, with its feature spec and what was dropped."""

    frame: pd.DataFrame
    spec: FeatureSpec
    dropped_unlabeled: int


def check_training_data(dataset: LoadedDataset, *, test_size: float, cv_folds: int,
                        exclude: tuple[str, ...] = (), task: Task = "classification") -> TrainingData:
    """Fail early, with a clear sentence, when `dataset` cannot support a split + cross-validated training of the
    task (a label that does not fit the task is refused: classes for classification, numbers for regression)."""
    frame, label, where = dataset.frame, dataset.label, dataset.source
    if label not in frame.columns:
        shown = ", ".join(map(str, frame.columns[:12])) + (" ..." if len(frame.columns) > 12 else "")
        raise DataValidationError(
            f"Label column '{label}' is not in {where} (columns: {shown}); set the label parameter to the right column."
        )
    if frame.empty:
        raise DataValidationError(f"Dataset {where} has no rows.")
    original = frame[label]
    labels = regression_labels(original, label, where) if task == "regression" else canonical_labels(original)
    if labels is not original:  # a blank cell must not turn classes 0/1 into 0.0/1.0
        frame = frame.assign(**{label: labels})
    unlabeled = int(frame[label].isna().sum())
    if unlabeled == len(frame):
        raise DataValidationError(f"Label column '{label}' in {where} is empty in all {len(frame)} rows.")
    if unlabeled:
        frame = frame.loc[frame[label].notna()].reset_index(drop=True)
    if labels is not original and task == "classification":  # integers held as objects beside the blanks: int64
        frame[label] = frame[label].infer_objects()
    spec = infer_features(frame, label, exclude=exclude)
    if not spec.features:
        raise DataValidationError(f"Dataset {where} has no usable feature columns besides label '{label}'.")
    n_train = len(frame) - math.ceil(len(frame) * test_size)
    if n_train < cv_folds:
        raise DataValidationError(
            f"Dataset {where} has {len(frame)} labeled rows, leaving {n_train} for training: fewer than cv_folds={cv_folds}; "
            "add rows or lower cv_folds."
        )
    if task == "regression":
        _check_regression_label(frame[label], label, where)
    else:
        _check_classes(frame[label], label, where, test_size, cv_folds)
    return TrainingData(frame=frame, spec=spec, dropped_unlabeled=unlabeled)


MAX_NUMERIC_CLASSES = 50  # a numeric label with more distinct values is a quantity, not a set of classes


def _check_classes(labels: pd.Series, label: str, where: str, test_size: float, cv_folds: int) -> None:
    """Classification: a label of a few classes, each frequent enough for stratified splits and folds."""
    import pandas as pd

    counts = labels.value_counts()
    numeric = pd.api.types.is_numeric_dtype(labels) and not pd.api.types.is_bool_dtype(labels)
    fractional = numeric and bool((labels.astype(float) % 1 != 0).any())
    if numeric and (len(counts) > MAX_NUMERIC_CLASSES or (fractional and len(counts) > 10)):
        raise DataValidationError(f"label '{label}' in {where} has {len(counts)} distinct numeric values: set task: "
                                  "regression (a classifier would read each value as a class).")
    if len(counts) < 2:
        raise DataValidationError(
            f"Label column '{label}' in {where} has only one class ({counts.index[0]!r}); a classifier needs at least two."
        )
    # Stratified splitting and K folds need every class often enough in the training split.
    needed = math.ceil(cv_folds / (1 - test_size)) + 1
    rare = counts[counts < needed]
    if not rare.empty:
        cls, n = rare.index[0], int(rare.iloc[0])
        raise DataValidationError(
            f"Class {cls!r} of label '{label}' in {where} has {n} rows; cv_folds={cv_folds} with test_size={test_size} "
            f"needs at least {needed} per class: add rows or lower cv_folds."
        )


def regression_labels(values: pd.Series, label: str, where: str) -> pd.Series:
    """A regression label as float64 (blanks stay missing); a value that is not a number is refused, naming it."""
    import pandas as pd

    if pd.api.types.is_bool_dtype(values):
        raise DataValidationError(f"label '{label}' in {where} is true/false: that is classification, set task: "
                                  "classification.")
    numbers = pd.to_numeric(values, errors="coerce").astype("float64")
    bad = values[numbers.isna() & values.notna()]
    if len(bad):
        raise DataValidationError(f"label '{label}' in {where} has {len(bad)} value(s) that are not numbers, like "
                                  f"{str(bad.iloc[0])[:60]!r}: task: regression needs a numeric label.")
    infinite = numbers[~numbers.isna() & ~np.isfinite(numbers)]
    if len(infinite):
        raise DataValidationError(f"label '{label}' in {where} has {len(infinite)} infinite value(s).")
    return numbers


def _check_regression_label(labels: pd.Series, label: str, where: str) -> None:
    """Regression: a label that varies, with more than two values (two is a class label)."""
    distinct = labels.nunique()
    if distinct <= 2:
        shown = ", ".join(f"{v:g}" for v in sorted(labels.unique())[:2])
        raise DataValidationError(f"label '{label}' in {where} has only {distinct} distinct value(s) ({shown}): "
                                  "a regression needs a varying number; for classes set task: classification.")


class Failure(BaseModel):
    """One broken promise: which column, which check, how bad, how many rows, a few example values."""

    column: str | None
    check: str
    severity: Severity
    rows: int
    examples: list[str] = Field(default_factory=list)
    message: str


class ValidationReport(BaseModel):
    """Everything wrong with a batch at once (checks run lazily), split by severity."""

    source: str
    rows: int
    columns: int
    contract_fingerprint: str
    failures: list[Failure] = Field(default_factory=list)

    @property
    def errors(self) -> list[Failure]:
        """Failures that stop the flow."""
        return [f for f in self.failures if f.severity == "error"]

    @property
    def warnings(self) -> list[Failure]:
        """Failures that are reported and let the flow continue."""
        return [f for f in self.failures if f.severity == "warning"]

    @property
    def ok(self) -> bool:
        """True when nothing stops the flow."""
        return not self.errors

    def summary(self) -> str:
        """One line: the verdict and the first errors' messages."""
        if self.ok:
            return f"{self.source}: {self.rows} rows valid ({len(self.warnings)} warning(s))."
        head = "; ".join(f.message for f in self.errors[:3])
        more = f" (+{len(self.errors) - 3} more)" if len(self.errors) > 3 else ""
        return f"{self.source} breaks the data contract: {head}{more}"

    def table(self) -> list[dict[str, Any]]:
        """One row per failure, errors and warnings alike (a table artifact)."""
        return [{"severity": f.severity, "column": f.column or "-", "check": f.check, "rows": f.rows,
                 "examples": ", ".join(f.examples), "message": f.message} for f in self.failures]

    def metrics(self) -> dict[str, float]:
        """Error and warning counts for the monitoring run."""
        return {"validation_errors": len(self.errors), "validation_warnings": len(self.warnings)}

    def markdown(self) -> str:
        """The report as a markdown file (the monitoring run's MLflow artifact)."""
        lines = [f"# Data validation: {'passed' if self.ok else 'FAILED'}",
                 f"`{self.source}` · {self.rows} rows · {self.columns} columns · contract `{self.contract_fingerprint[:12]}`",
                 f"{len(self.errors)} error(s), {len(self.warnings)} warning(s)", ""]
        if self.failures:
            lines += ["| severity | column | check | rows | examples | message |", "|---|---|---|---|---|---|"]
            lines += [f"| {f.severity} | {f.column or '-'} | {f.check} | {f.rows} | "
                      f"{', '.join(f'`{e}`' for e in f.examples)} | {f.message} |" for f in self.failures]
        return "\n".join(lines)


def _examples(values: pd.Series) -> list[str]:
    return [str(v)[:60] for v in values.drop_duplicates().head(MAX_EXAMPLES)]


def _coerce_numeric(s: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Numbers as float64, plus the values that could not be converted without inventing data."""
    import pandas as pd

    if pd.api.types.is_bool_dtype(s) or pd.api.types.is_numeric_dtype(s):
        return s.astype("float64"), s.iloc[:0]
    if pd.api.types.is_datetime64_any_dtype(s) or pd.api.types.is_timedelta64_dtype(s):
        return pd.Series(float("nan"), index=s.index), s.dropna()
    converted = pd.to_numeric(s, errors="coerce").astype("float64")
    return converted, s[converted.isna() & s.notna()]


def _contract_schemas(contract: Contract, present: set[str]) -> tuple[Any, Any]:
    """Pandera schemas for the error-level and warning-level checks of a contract."""
    import pandera.pandas as pa

    err_cols: dict[str, Any] = {}
    warn_cols: dict[str, Any] = {}
    for col in contract.columns:
        if col.name not in present:
            continue
        not_all_null = pa.Check(lambda s: bool(s.notna().any()), element_wise=False, name="all_null")
        if col.kind == "numeric":
            lo, hi = contract.bounds(col)
            far = pa.Check(lambda s, lo=lo, hi=hi: s.isna() | s.between(lo, hi), name="far_out_of_range")
            near = pa.Check(lambda s, a=col.min, b=col.max: s.isna() | s.between(a, b), name="out_of_range")
            err_cols[col.name] = pa.Column(float, nullable=True, checks=[not_all_null, far])
            warn_cols[col.name] = pa.Column(float, nullable=col.nullable, checks=[near])
        else:
            allowed = set(col.categories or [])
            seen = pa.Check(lambda s, allowed=allowed: s.isna() | s.isin(allowed), name="unseen_category")
            err_cols[col.name] = pa.Column(object, nullable=True, checks=[not_all_null])
            warn_cols[col.name] = pa.Column(object, nullable=col.nullable, checks=[seen])
    return pa.DataFrameSchema(err_cols, strict=False), pa.DataFrameSchema(warn_cols, strict=False)


_MESSAGES: dict[str, tuple[Severity, str]] = {
    "all_null": ("error", "required column '{col}' is empty in every row"),
    "far_out_of_range": ("warning", "column '{col}' has {n} value(s) beyond the training range widened by the tolerance"),
    "out_of_range": ("warning", "column '{col}' has {n} value(s) outside the training range, within tolerance"),
    "unseen_category": ("warning", "column '{col}' has {n} value(s) of categories never seen in training"),
    "not_nullable": ("warning", "column '{col}' has {n} missing value(s); training had none (they will be imputed)"),
}


def _pandera_failures(schema: Any, frame: pd.DataFrame, max_far_share: float) -> list[Failure]:
    from pandera.errors import SchemaErrors

    try:
        schema.validate(frame, lazy=True)
    except SchemaErrors as exc:
        cases = exc.failure_cases
    else:
        return []
    failures = []
    for (col, check), group in cases.groupby(["column", "check"], dropna=False, sort=False):
        check_name = "not_nullable" if str(check).startswith("not_nullable") else str(check)
        severity, template = _MESSAGES.get(check_name, ("error", "column '{col}' fails check " + check_name))
        n = len(frame) if check_name == "all_null" else int(group["index"].nunique()) if group["index"].notna().any() else len(group)
        examples = [] if check_name in ("all_null", "not_nullable") else _examples(group["failure_case"])
        message = template.format(col=col, n=n)
        if check_name == "far_out_of_range" and n > max_far_share * len(frame):
            # Rare outliers are news; a large share beyond the widened range means changed units or a broken feed.
            severity = "error"
            message += f" ({n / len(frame):.1%} of rows, more than the allowed {max_far_share:.1%})"
        failures.append(Failure(column=str(col), check=check_name, severity=severity, rows=n, examples=examples,
                                message=message))
    return failures


def _label_failures(batch: pd.DataFrame, contract: Contract, source: str) -> list[Failure]:
    """The label checked by class identity (not by how a reader typed it), aligned onto the model's classes in place;
    a regressor's label as numbers. Values that fit neither are errors naming them, blanks a warning."""
    label = contract.label
    if label not in batch.columns:
        return [Failure(column=label, check="label_missing", severity="warning", rows=len(batch),
                        message=f"label column '{label}' is not in {source}: model quality was not checked")]
    if contract.task == "regression":
        batch[label], unknown = _coerce_numeric(batch[label])
        check, what = "label_number", "numbers"
    else:
        batch[label], unknown = align_labels(batch[label], contract.label_classes)
        check, what = "label_classes", f"classes of the model {contract.label_classes}"
    failures = []
    if len(unknown):
        failures.append(Failure(
            column=label, check=check, severity="error", rows=len(unknown), examples=_examples(unknown),
            message=f"label '{label}' has {len(unknown)} value(s) that are not {what}, like {_examples(unknown)[0]!r}"))
    missing = int(batch[label].isna().sum()) - len(unknown)
    if missing:
        failures.append(Failure(
            column=label, check="label_blank", severity="warning", rows=missing,
            message=f"label '{label}' is blank in {missing} of {len(batch)} row(s): they are left out of quality "
                    "checks and training"))
    return failures


def _duplicate_failure(frame: pd.DataFrame) -> list[Failure]:
    """A warning when rows repeat exactly (a feed sent twice, a bad join)."""
    import pandas as pd

    try:
        dupes = int(pd.util.hash_pandas_object(frame, index=False).duplicated().sum())
    except TypeError:  # unhashable cells (lists): not a tabular feed, other checks will say so
        return []
    if not dupes:
        return []
    return [Failure(column=None, check="duplicate_rows", severity="warning", rows=dupes,
                    message=f"{dupes} row(s) ({dupes / len(frame):.1%}) repeat an earlier row exactly")]


def validate_batch(frame: pd.DataFrame, contract: Contract, source: str,
                   check_label: bool = True) -> tuple[ValidationReport, pd.DataFrame]:
    """Check a batch against a contract, collecting every failure; returns the report and the coerced batch.

    With `check_label` the label is matched to the model's classes (blank cells counted, the column's absence a
    warning); scoring passes False and the label column, if any, is ignored.
    """
    failures: list[Failure] = []
    fp = contract.fingerprint()

    def report() -> ValidationReport:
        order = {"error": 0, "warning": 1}
        failures.sort(key=lambda f: (order[f.severity], f.column or ""))
        return ValidationReport(source=source, rows=len(frame), columns=frame.shape[1], contract_fingerprint=fp,
                                failures=failures)

    missing = [c for c in contract.features if c not in frame.columns]
    for col in missing:
        failures.append(Failure(column=col, check="column_present", severity="error", rows=len(frame),
                                message=f"required column '{col}' is missing from {source}"))
    known = set(contract.features) | {contract.label} | set(contract.optional)
    for col in (c for c in frame.columns if c not in known):
        failures.append(Failure(column=str(col), check="unexpected_column", severity="warning", rows=len(frame),
                                message=f"column '{col}' is not in the contract and will be ignored"))
    if frame.empty:
        failures.append(Failure(column=None, check="not_empty", severity="error", rows=0,
                                message=f"batch {source} has no rows"))
        return report(), frame

    batch = frame.copy()
    failures += _duplicate_failure(frame)
    if check_label:
        failures += _label_failures(batch, contract, source)
    for col in contract.columns:
        if col.name not in batch.columns:
            continue
        if col.kind == "numeric":
            batch[col.name], bad = _coerce_numeric(batch[col.name])
            if len(bad):
                failures.append(Failure(
                    column=col.name, check="dtype", severity="error", rows=len(bad), examples=_examples(bad),
                    message=f"column '{col.name}' should be numeric but has {len(bad)} value(s) like "
                            f"{_examples(bad)[0]!r} (dtype {frame[col.name].dtype})"))
        else:
            s = batch[col.name]
            batch[col.name] = s.where(s.isna(), s.astype(str)).astype(object)
    errors_schema, warnings_schema = _contract_schemas(contract, set(batch.columns))
    # Values that are not numbers became NaN above: "empty"/"missing" would only repeat the dtype error, wrongly.
    mistyped = {f.column for f in failures if f.check == "dtype"}
    found = (_pandera_failures(errors_schema, batch, contract.max_far_share)
             + _pandera_failures(warnings_schema, batch, contract.max_far_share))
    failures += [f for f in found if not (f.column in mistyped and f.check in ("all_null", "not_nullable"))]
    return report(), batch


check_training_data_task = task(check_training_data, name="check-training-data", cache_policy=NO_CACHE)
validate_batch_task = task(validate_batch, name="validate-batch", cache_policy=NO_CACHE)
