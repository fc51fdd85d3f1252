"""What a catalogue entry configures beyond its data: the estimator and its grid, the promotion gate, alert
thresholds. Plain Pydantic types, checked without importing scikit-learn, so a UI form validates fast."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from nightshift.errors import ConfigError


Metric = Literal["roc_auc", "accuracy", "f1", "log_loss"]
Estimator = Literal["random_forest", "logistic_regression", "hist_gradient_boosting"]
ParamValue = int | float | str | bool | None


# Checked without importing scikit-learn (parameter forms must validate fast); a test keeps this
# table equal to each estimator's get_params() minus what nightshift itself controls.
CONTROLLED_PARAMS = frozenset({"random_state", "n_jobs", "verbose", "warm_start"})
TUNABLE_PARAMS: dict[str, frozenset[str]] = {
    "random_forest": frozenset({
        "bootstrap", "ccp_alpha", "class_weight", "criterion", "max_depth", "max_features", "max_leaf_nodes",
        "max_samples", "min_impurity_decrease", "min_samples_leaf", "min_samples_split", "min_weight_fraction_leaf",
        "monotonic_cst", "n_estimators", "oob_score",
    }),
    "logistic_regression": frozenset({
        "C", "class_weight", "dual", "fit_intercept", "intercept_scaling", "l1_ratio", "max_iter", "penalty",
        "solver", "tol",
    }),
    "hist_gradient_boosting": frozenset({
        "categorical_features", "class_weight", "early_stopping", "interaction_cst", "l2_regularization",
        "learning_rate", "loss", "max_bins", "max_depth", "max_features", "max_iter", "max_leaf_nodes",
        "min_samples_leaf", "monotonic_cst", "n_iter_no_change", "scoring", "tol", "validation_fraction",
    }),
}


class EstimatorParams(BaseModel):
    """The model family and the hyper-parameter grid searched by cross-validation."""

    model_config = ConfigDict(extra="forbid")

    kind: Estimator = Field("random_forest", title="Estimator", description="Model family inside the pipeline.")
    param_grid: dict[str, list[ParamValue]] = Field(
        default_factory=lambda: {"max_depth": [None, 12], "min_samples_leaf": [1, 4]},
        title="Hyper-parameter grid",
        description="Estimator parameter → candidate values; every combination is cross-validated. {} = defaults.",
    )
    search_rows: int | None = Field(
        100_000, ge=1_000, title="Search sample rows",
        description="The CV search sees a stratified sample of at most this many training rows (empty = all); the "
                    "chosen candidate is then fitted on every training row.",
    )

    @model_validator(mode="after")
    def _known_params(self) -> EstimatorParams:
        check_param_grid(self.kind, self.param_grid)
        return self


def check_param_grid(kind: Estimator, grid: dict[str, list[ParamValue]]) -> None:
    """Reject hyper-parameter names the estimator does not take and empty value lists, before any work."""
    known = TUNABLE_PARAMS.get(kind)
    if known is None:
        raise ConfigError(f"Unknown estimator '{kind}': use {', '.join(TUNABLE_PARAMS)}.")
    unknown = sorted(set(grid) - known)
    if unknown:
        raise ConfigError(
            f"Estimator {kind} has no tunable hyper-parameter {', '.join(map(repr, unknown))}; "
            f"choose from {', '.join(sorted(known))}."
        )
    empty = [k for k, v in grid.items() if not v]
    if empty:
        raise ConfigError(f"Hyper-parameter {empty[0]!r} has an empty list of candidate values.")


class GateConfig(BaseModel):
    """How much better a challenger must be, and how sure we must be, before it replaces the champion."""

    model_config = ConfigDict(extra="forbid")

    metric: Metric = Field("roc_auc", title="Gate metric", description="Metric the challenger must improve.")
    resamples: int = Field(1000, ge=100, le=20_000, title="Bootstrap resamples",
                           description="Paired bootstrap resamples of the holdout.")
    confidence: float = Field(0.95, gt=0.5, lt=1.0, title="Confidence",
                              description="Two-sided confidence level of the interval on the difference.")
    min_margin: float = Field(0.0, ge=0.0, le=1.0, title="Minimum margin",
                              description="The lower bound of (challenger - champion) must exceed this.")
    absolute_floor: float = Field(0.6, title="Absolute floor",
                                  description="Challenger must reach this (a ceiling for log loss).")
    slice_columns: list[str] = Field(default_factory=list, title="Slice columns",
                                     description="Categorical columns whose every category must not regress.")
    slice_tolerance: float = Field(0.02, ge=0.0, le=1.0, title="Slice tolerance",
                                   description="Largest allowed drop of the metric within any slice.")
    min_slice_rows: int = Field(200, ge=10, title="Minimum slice rows", description="Smaller slices are not judged.")
    seed: int = Field(0, ge=0, le=2**32 - 1, title="Bootstrap seed", description="Seeds the paired bootstrap resampling.")
    allow_schema_change: bool = Field(
        False, title="Allow a schema change",
        description="Promote a challenger whose input columns, column kinds or classes differ from the champion's "
                    "(every caller of the model server must change with it). Off: such a challenger is refused.")


class MonitorSettings(BaseModel):
    """When a night raises an alert: drift share, and the allowed drop of the monitored metric."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    drift_share: float = Field(0.2, gt=0, le=1, title="Dataset drift share",
                               description="Share of drifted feature columns that raises an alert.")
    drift_sample_rows: int = Field(100_000, ge=5_000, le=10_000_000, title="Drift sample cap",
                                   description="Rows per side for the drift report.")
    metric: Metric = Field("roc_auc", title="Monitored metric", description="Metric compared once labels land.")
    max_metric_drop: float = Field(0.05, ge=0, le=1, title="Allowed metric drop",
                                   description="Drop vs the model's test value that counts as degradation.")
    slice_columns: list[str] = Field(default_factory=list, title="Slice columns",
                                     description="Columns whose categories get their own performance estimate on "
                                                 "nights whose labels have not landed.")
