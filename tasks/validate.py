"""Checks that a dataset can be trained on, each failing with one sentence that names the problem."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from prefect import task
from prefect.cache_policies import NO_CACHE

from nightshift.errors import DataValidationError
from tasks.data import FeatureSpec, LoadedDataset, infer_features

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True)
class TrainingData:
    """A dataset that passed the training checks, with its feature spec and what was dropped."""

    frame: pd.DataFrame
    spec: FeatureSpec
    dropped_unlabeled: int


def check_training_data(dataset: LoadedDataset, *, test_size: float, cv_folds: int,
                        exclude: tuple[str, ...] = ()) -> TrainingData:
    """Fail early, with a clear sentence, when `dataset` cannot support a split + cross-validated training."""
    frame, label, where = dataset.frame, dataset.label, dataset.source
    if label not in frame.columns:
        shown = ", ".join(map(str, frame.columns[:12])) + (" ..." if len(frame.columns) > 12 else "")
        raise DataValidationError(
            f"Label column '{label}' is not in {where} (columns: {shown}); set the label parameter to the right column."
        )
    if frame.empty:
        raise DataValidationError(f"Dataset {where} has no rows.")
    unlabeled = int(frame[label].isna().sum())
    if unlabeled == len(frame):
        raise DataValidationError(f"Label column '{label}' in {where} is empty in all {len(frame)} rows.")
    if unlabeled:
        frame = frame.loc[frame[label].notna()].reset_index(drop=True)
    spec = infer_features(frame, label, exclude=exclude)
    if not spec.features:
        raise DataValidationError(f"Dataset {where} has no usable feature columns besides label '{label}'.")
    counts = frame[label].value_counts()
    if len(counts) < 2:
        raise DataValidationError(
            f"Label column '{label}' in {where} has only one class ({counts.index[0]!r}); a classifier needs at least two."
        )
    n_train = len(frame) - math.ceil(len(frame) * test_size)
    if n_train < cv_folds:
        raise DataValidationError(
            f"Dataset {where} has {len(frame)} labeled rows, leaving {n_train} for training: fewer than cv_folds={cv_folds}; "
            "add rows or lower cv_folds."
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
    return TrainingData(frame=frame, spec=spec, dropped_unlabeled=unlabeled)


check_training_data_task = task(check_training_data, name="check-training-data", cache_policy=NO_CACHE)
