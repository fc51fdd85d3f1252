"""What a catalogue entry configures beyond its data: the estimator and its grid, the promotion gate, alert
thresholds. Plain Pydantic types, checked without importing scikit-learn, so a UI form validates fast."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from nightshift.errors import ConfigError

Task = Literal["classification", "regression"]
Metric = Literal["roc_auc", "accuracy", "f1", "log_loss", "rmse", "mae", "r2"]
CLASSIFICATION_METRICS: tuple[Metric, ...] = ("accuracy", "f1", "roc_auc", "log_loss")
REGRESSION_METRICS: tuple[Metric, ...] = ("rmse", "mae", "r2")
Estimator = Literal["random_forest", "logistic_regression", "hist_gradient_boosting", "ridge"]
ParamValue = int | float | str | bool | None


# Checked without importing scikit-learn (parameter forms must validate fast); a test keeps this
# table equal to each estimator's get_params() minus what nightshift itself controls.
CONTROLLED_PARAMS = frozenset({"random_state", "n_jobs", "verbose", "warm_start"})
# Regressors (task: regression) take their own parameters: REGRESSOR_PARAMS; ridge is regression-only and
# logistic_regression classification-only.
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
REGRESSOR_PARAMS: dict[str, frozenset[str]] = {
    "random_forest": TUNABLE_PARAMS["random_forest"] - {"class_weight"},
    "hist_gradient_boosting": (TUNABLE_PARAMS["hist_gradient_boosting"] - {"class_weight"}) | {"quantile"},
    "ridge": frozenset({"alpha", "fit_intercept", "max_iter", "positive", "solver", "tol"}),
}


FACTORY_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*$"


class EstimatorParams(BaseModel):
    """The model family, or the team's own pipeline factory, and the hyper-parameter grid searched by CV."""

    model_config = ConfigDict(extra="forbid")

    kind: Estimator = Field("random_forest", title="Estimator",
                            description="Built-in model family inside nightshift's preprocessing (ignored when a "
                                        "factory is set).")
    factory: str | None = Field(
        None, pattern=FACTORY_PATTERN, title="Pipeline factory",
        description="'package.module:function' returning an unfitted scikit-learn estimator or Pipeline that takes "
                    "the raw feature columns (your preprocessing inside). Its grid uses set_params names "
                    "(model__max_depth).")
    code_path: str | None = Field(
        None, title="Code path",
        description="Folder the factory's package is imported from (relative to models.yaml); empty: an installed "
                    "package.")
    trusted_types: list[str] = Field(
        default_factory=list, title="Trusted types",
        description="Your own classes inside the fitted pipeline (module.Class) that skops may load back; any other "
                    "unknown type is refused when the version is registered.")
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
        if self.factory is None:
            if self.code_path or self.trusted_types:
                raise ConfigError("code_path and trusted_types belong to a factory: set estimator.factory too.")
            check_param_grid(self.kind, self.param_grid, None)
        else:
            if "kind" in self.model_fields_set:
                raise ConfigError(f"estimator sets both kind '{self.kind}' and factory '{self.factory}': keep one.")
            if "param_grid" not in self.model_fields_set:
                self.param_grid = {}  # the built-in default grid names our estimators' parameters, not yours
            check_param_grid(None, self.param_grid, None)
        return self

    @property
    def name(self) -> str:
        """What trained it, in a few words: the kind or the factory."""
        return self.factory or self.kind


def check_param_grid(kind: Estimator | None, grid: dict[str, list[ParamValue]], task: Task | None = None) -> None:
    """Reject hyper-parameter names the estimator does not take and empty value lists, before any work. A factory's
    (kind None) names are checked with set_params when it is imported; task None accepts either task's names."""
    if kind is not None:
        tables = {"classification": TUNABLE_PARAMS, "regression": REGRESSOR_PARAMS}
        candidates = [tables[task]] if task else list(tables.values())
        known_sets = [t[kind] for t in candidates if kind in t]
        if not known_sets:
            if task is None or kind not in {*TUNABLE_PARAMS, *REGRESSOR_PARAMS}:
                raise ConfigError(f"Unknown estimator '{kind}': use {', '.join(sorted({*TUNABLE_PARAMS, *REGRESSOR_PARAMS}))}.")
            other = "regression" if task == "classification" else "classification"
            raise ConfigError(f"Estimator {kind} is for {other} only; for task {task} use "
                              f"{', '.join(tables[task])} or your own factory.")
        known = frozenset().union(*known_sets)
        unknown = sorted(set(grid) - known)
        if unknown:
            raise ConfigError(
                f"Estimator {kind} has no tunable hyper-parameter {', '.join(map(repr, unknown))}; "
                f"choose from {', '.join(sorted(known))}."
            )
    empty = [k for k, v in grid.items() if not v]
    if empty:
        raise ConfigError(f"Hyper-parameter {empty[0]!r} has an empty list of candidate values.")


def check_metric(task: Task, metric: str, where: str) -> None:
    """A metric must fit the task: roc_auc cannot judge a regressor, rmse not a classifier."""
    allowed = REGRESSION_METRICS if task == "regression" else CLASSIFICATION_METRICS
    if metric not in allowed:
        raise ConfigError(f"{where} {metric} does not fit task: {task}; use {', '.join(allowed)}.")


UNIT_METRICS = frozenset({"rmse", "mae", "log_loss"})  # in the label's units (or nats): no natural upper bound


def check_tolerances(metric: str, where: str, values: dict[str, float]) -> None:
    """Margins and allowed drops are in the metric's units: at most 1 for a metric bounded by 1 (ROC AUC, accuracy,
    F1, R²); any size for rmse, mae and log loss."""
    if metric in UNIT_METRICS:
        return
    for name, value in values.items():
        if value > 1:
            raise ConfigError(f"{where}.{name} {value} is more than {metric} can move (at most 1).")


class GateConfig(BaseModel):
    """How much better a challenger must be, and how sure we must be, before it replaces the champion."""

    model_config = ConfigDict(extra="forbid")

    metric: Metric = Field("roc_auc", title="Gate metric", description="Metric the challenger must improve.")
    resamples: int = Field(1000, ge=100, le=20_000, title="Bootstrap resamples",
                           description="Paired bootstrap resamples of the holdout.")
    confidence: float = Field(0.95, gt=0.5, lt=1.0, title="Confidence",
                              description="Two-sided confidence level of the interval on the difference.")
    min_margin: float = Field(0.0, ge=0.0, title="Minimum margin",
                              description="The lower bound of (challenger - champion) must exceed this.")
    absolute_floor: float | None = Field(0.6, title="Absolute floor",
                                         description="Challenger must reach this (a ceiling for error metrics: "
                                                     "log_loss, rmse, mae); empty = none.")
    slice_columns: list[str] = Field(default_factory=list, title="Slice columns",
                                     description="Categorical columns whose every category must not regress.")
    slice_tolerance: float = Field(0.02, ge=0.0, title="Slice tolerance",
                                   description="Largest allowed drop of the metric within any slice.")
    min_slice_rows: int = Field(200, ge=10, title="Minimum slice rows", description="Smaller slices are not judged.")
    seed: int = Field(0, ge=0, le=2**32 - 1, title="Bootstrap seed", description="Seeds the paired bootstrap resampling.")
    allow_schema_change: bool = Field(
        False, title="Allow a schema change",
        description="Promote a challenger whose input columns, column kinds or classes differ from the champion's "
                    "(every caller of the model server must change with it). Off: such a challenger is refused.")
    approval: Literal["off", "close-calls"] = Field(
        "off", title="Ask a person",
        description="close-calls: a borderline decision (the improvement's CI straddles the margin, a schema change "
                    "is needed, or the champion is under the floor) waits for a person's approve/refuse form on a "
                    "paused 'approval' run in the Prefect UI; off: the gate decides alone.")
    approval_timeout_hours: float = Field(
        12.0, gt=0, le=168, title="Approval timeout (hours)",
        description="With no answer by then the champion stays (recorded as a refusal: no answer).")
    shadow: Literal["off", "advisory", "required"] = Field(
        "off", title="Judge on live traffic (shadow)",
        description="required: a challenger that passes this gate is first loaded beside the champion on the model "
                    "servers (a shadow: scored off the request path, never answering) and promoted by a later night "
                    "only once labeled live rows show it not worse; advisory: this gate's decision stands, and the "
                    "champion it replaced shadows the new one until the live comparison is recorded beside it (a "
                    "person is told when live disagrees); off: this gate alone.")
    shadow_min_rows: int = Field(500, ge=50, le=10_000_000, title="Shadow: labeled live rows",
                                 description="Labeled live rows, scored by both models, needed before the live "
                                             "comparison decides.")
    shadow_margin: float = Field(0.01, ge=0.0, title="Shadow: tolerated loss",
                                 description="Live, the shadow counts as not worse when the lower bound of its "
                                             "improvement's CI is above minus this (in the gate metric's units).")
    shadow_max_days: int = Field(14, ge=1, le=365, title="Shadow: longest run (days)",
                                 description="A shadow still undecided this many days after it started is dropped, "
                                             "with the numbers so far.")


class MonitorSettings(BaseModel):
    """When a night raises an alert: drift share, and the allowed drop of the monitored metric."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    drift_share: float = Field(0.2, gt=0, le=1, title="Dataset drift share",
                               description="Share of drifted feature columns that raises an alert.")
    drift_sample_rows: int = Field(100_000, ge=5_000, le=10_000_000, title="Drift sample cap",
                                   description="Rows per side for the drift report.")
    metric: Metric = Field("roc_auc", title="Monitored metric", description="Metric compared once labels land.")
    max_metric_drop: float = Field(0.05, ge=0, title="Allowed metric drop",
                                   description="Drop vs the model's test value that counts as degradation.")
    slice_columns: list[str] = Field(default_factory=list, title="Slice columns",
                                     description="Columns whose categories get their own performance estimate on "
                                                 "nights whose labels have not landed.")


REGRESSION_DEFAULTS = {"gate": {"metric": "rmse", "absolute_floor": None}, "monitor": {"metric": "rmse"}}


def task_defaults(data: Any, sections: dict[str, dict[str, Any]] = REGRESSION_DEFAULTS) -> Any:
    """Raw input of a model with `task: regression` given the regression defaults its sections leave unset (rmse,
    no floor): the classification defaults (roc_auc, floor 0.6) would not fit it."""
    if not isinstance(data, dict) or data.get("task") != "regression":
        return data
    data = dict(data)
    for section, defaults in sections.items():
        given = data.get(section)
        if isinstance(given, BaseModel):
            unset = {k: v for k, v in defaults.items() if k not in given.model_fields_set}
            data[section] = given.model_copy(update=unset) if unset else given
        elif given is None or isinstance(given, dict):
            data[section] = {**defaults, **(given or {})}
    return data
