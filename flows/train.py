"""Train flow: load → check → split → cross-validate candidates → fit → test → track in MLflow → register."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from prefect import flow, get_run_logger, unmapped
from prefect.artifacts import create_table_artifact
from prefect.context import FlowRunContext
from prefect.runtime import flow_run
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from flows.runners import SettingsTaskRunner, search_runner
from nightshift.errors import ConfigError
from nightshift.naming import MODEL_NAME_PATTERN, artifact_key
from nightshift.settings import get_settings
from tasks.catalogue.config import EstimatorParams, Metric, Task, check_metric, check_param_grid
from tasks.data.contract import infer_contract_task
from tasks.data.datasets import DatasetParams, fingerprint, load_dataset_task
from tasks.data.validate import check_training_data_task
from tasks.model.factory import check_code_path_named, check_factory_task
from tasks.model.train import (
    CandidateScore,
    candidate_grid,
    candidate_threads,
    candidates_table,
    cross_validate_task,
    cv_sample,
    evaluate_task,
    fit_task,
    select_best,
    split_task,
    training_metrics,
)
from tasks.monitoring.drift import build_reference_task
from tasks.registry.runs import (
    CONTRACT_ARTIFACT,
    REFERENCE_ARTIFACT,
    DatasetRef,
    log_training_task,
    run_closed,
    start_run_task,
)
from tasks.registry.store import TrackingConfig
from tasks.registry.versions import model_uri, register_task

if TYPE_CHECKING:
    import pandas as pd

    from tasks.data.contract import Contract
    from tasks.data.datasets import FeatureSpec, LoadedDataset


class TrainParams(BaseModel):
    """Parameters of one training run (they become the Prefect UI form)."""

    model_config = ConfigDict(extra="forbid")

    dataset: DatasetParams = Field(default_factory=DatasetParams, title="Dataset",
                                   description="Training table: bundled iris/demo data or a file/URL.")
    model_name: str | None = Field(
        None, pattern=MODEL_NAME_PATTERN, title="Registered model name",
        description="MLflow registered model to add a version to; default from NIGHTSHIFT_MODEL_NAME.",
    )
    task: Task = Field("classification", title="Task",
                       description="classification (a label of classes) or regression (a numeric label).")
    estimator: EstimatorParams = Field(default_factory=EstimatorParams, title="Estimator",
                                       description="Model family (or your pipeline factory) and hyper-parameter grid.")
    test_size: float = Field(0.3, gt=0.0, lt=0.9, title="Test size", description="Share of rows held out for the final test.")
    cv_folds: int = Field(5, ge=2, le=20, title="CV folds",
                          description="Folds for the candidate search (stratified by class when classifying).")
    selection_metric: Metric = Field("roc_auc", title="Selection metric", description="CV metric that picks the candidate.")
    stratify: bool = Field(
        False, title="Stratified split",
        description="Keep class shares equal in train and test (off by default, like train_test_split).",
    )
    seed: int = Field(42, ge=0, le=2**32 - 1, title="Seed", description="Seeds the split, the folds and the estimator.")
    valid_ranges: dict[str, tuple[float, float]] = Field(
        default_factory=dict, title="Valid ranges",
        description="Numeric feature -> [min, max] the contract accepts whatever the training data saw.")
    version_tags: dict[str, str] = Field(
        default_factory=dict, title="Version tags",
        description="Extra tags registered with the version in the same call (the nightly flow sets its window).")

    @field_validator("model_name")
    @classmethod
    def _strip(cls, v: str | None) -> str | None:
        return v.strip() if v else v

    @model_validator(mode="before")
    @classmethod
    def _task_defaults(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("task") == "regression" and "selection_metric" not in data:
            data = {**data, "selection_metric": "rmse"}
        return data

    @model_validator(mode="after")
    def _fits_task(self) -> TrainParams:
        check_metric(self.task, self.selection_metric, "selection_metric")
        if self.estimator.factory is None:
            check_param_grid(self.estimator.kind, self.estimator.param_grid, self.task)
        return self


class TrainResult(BaseModel):
    """What a training run produced: where to find it and how good it is."""

    model_name: str
    model_version: str
    model_uri: str
    run_id: str
    dataset_fingerprint: str
    rows_train: int
    rows_test: int
    task: Task = "classification"
    estimator: str
    best_params: dict[str, Any]
    cv_metrics: dict[str, float]
    test_metrics: dict[str, float]
    candidates: int


def _run_tags(name: str, dataset: LoadedDataset) -> dict[str, str]:
    """Tags of the training run in MLflow: what it is, for which model, from which flow run and data."""
    return {"nightshift.kind": "train", "nightshift.model_name": name,
            "prefect.flow_run_id": str(flow_run.get_id() or ""), "prefect.flow_run_name": str(flow_run.get_name() or ""),
            "nightshift.dataset": dataset.name, "nightshift.dataset_fingerprint": dataset.fingerprint}


def _version_tags(dataset: LoadedDataset, contract: Contract, test_metrics: dict[str, float]) -> dict[str, str]:
    """Tags registered with the version: its data and contract fingerprints, flow run and test metrics."""
    return {"nightshift.dataset_fingerprint": dataset.fingerprint, "prefect.flow_run_id": str(flow_run.get_id() or ""),
            "nightshift.contract_fingerprint": contract.fingerprint(),
            **{f"test_{k}": f"{v:.6f}" for k, v in test_metrics.items()}}


def _run_params(params: TrainParams, label: str, rows: int, best: CandidateScore) -> dict[str, Any]:
    """The MLflow run's parameters: the run's settings plus the chosen candidate's (as model.<name>)."""
    return {"estimator": params.estimator.name, "task": params.task, "test_size": params.test_size, "cv_folds": params.cv_folds,
            "selection_metric": params.selection_metric, "seed": params.seed, "stratify": params.stratify,
            "dataset": params.dataset.source, "label": label, "rows": rows,
            "search_rows": params.estimator.search_rows,
            **{f"model.{k}": v for k, v in best.params.items()}}


def _lineage(dataset: LoadedDataset, train_df: pd.DataFrame, test_df: pd.DataFrame, label: str) -> list[DatasetRef]:
    """The train and test splits as the MLflow run's inputs, each with its content fingerprint."""
    return [DatasetRef(frame, f"{dataset.name}-{part}", dataset.source, fingerprint(frame), context, label)
            for frame, part, context in ((train_df, "train", "training"), (test_df, "test", "evaluation"))]


def _cross_validate(frame: pd.DataFrame, spec: FeatureSpec, params: TrainParams) -> tuple[list[CandidateScore], int]:
    """Every candidate of the grid cross-validated as its own task, side by side on the flow run's task runner, on
    the search sample; returns the scores and the sample's rows."""
    candidates = candidate_grid(params.estimator.param_grid)
    context = FlowRunContext.get()
    if context is None:
        raise RuntimeError("train_model runs inside a flow run (the train flow, a night): its candidates are tasks")
    sample = cv_sample(frame, spec.label, params.estimator.search_rows, params.seed, params.task)
    with search_runner(context.task_runner) as runner:
        get_run_logger().info("Cross-validating %d candidate(s) x %d folds on %d of %d training rows on %s",
                              len(candidates), params.cv_folds, len(sample), len(frame), type(runner).__name__)
        # Threads share the cores between the candidates (a 1-candidate grid gets them all); a Dask worker has one.
        n_jobs = candidate_threads(getattr(runner, "_max_workers", 1) or 1, len(candidates))
        futures = runner.map(cross_validate_task, {
            "frame": unmapped(sample), "spec": unmapped(spec), "kind": unmapped(params.estimator),
            "params": candidates, "folds": unmapped(params.cv_folds), "seed": unmapped(params.seed),
            "index": list(range(len(candidates))), "n_jobs": unmapped(n_jobs), "task": unmapped(params.task)})
        return futures.result(), len(sample)


def _summary(result: TrainResult, tracking_uri: str) -> str:
    """The prose above the candidates table: the version, its run, its data and its test metrics."""
    metrics = ", ".join(f"{k} {v:.4f}" for k, v in result.test_metrics.items())
    return (f"Trained {result.model_name} v{result.model_version}: test {metrics}. MLflow run `{result.run_id}` in "
            f"`{tracking_uri}`, model `{result.model_uri}`; data `{result.dataset_fingerprint[:16]}`, "
            f"{result.rows_train} train / {result.rows_test} test rows.")


@flow(name="train", log_prints=True, task_runner=SettingsTaskRunner())
def train(params: TrainParams = TrainParams()) -> TrainResult:  # noqa: B008 - Prefect renders the default
    """Train a pipeline on a dataset, record it in MLflow and register a new model version.

    Args:
        params: The training run's dataset, estimator grid, split and model name.
    """
    return train_model(params)


def train_model(params: TrainParams) -> TrainResult:
    """The train flow's steps as tasks of the current flow run (the train flow's own, or a night's: one flow run per
    night); the candidates are cross-validated on that run's task runner."""
    settings = get_settings()
    cfg = TrackingConfig.from_settings(settings)
    name, estimator, seed, task = params.model_name or settings.model_name, params.estimator, params.seed, params.task
    if estimator.factory:  # the team's pipeline imported, called and its grid checked before any data is read
        if estimator.code_path:
            check_code_path_named(estimator.code_path, settings.catalogue_path)
        check_factory_task(estimator.factory, estimator.code_path, task, estimator.param_grid, seed)

    dataset = load_dataset_task(params.dataset, seed=seed)
    data = check_training_data_task(dataset, test_size=params.test_size, cv_folds=params.cv_folds,
                                    exclude=tuple(params.dataset.exclude_columns), task=task)
    spec = data.spec
    if unknown := sorted(set(params.valid_ranges) - set(spec.numeric)):  # before any work, not after the search
        raise ConfigError(f"valid_ranges names {', '.join(map(repr, unknown))}, not numeric feature(s) of "
                          f"{dataset.source}")
    train_df, test_df = split_task(data.frame, spec.label, params.test_size, seed,
                                   params.stratify and task == "classification")
    get_run_logger().info("%s: %d train / %d test rows, %d numeric + %d categorical features", dataset.name,
                          len(train_df), len(test_df), len(spec.numeric), len(spec.categorical))

    run_id = start_run_task(cfg, run_name=f"train-{flow_run.get_name() or name}", tags=_run_tags(name, dataset))
    with run_closed(cfg, run_id):
        scores, rows_search = _cross_validate(train_df, spec, params)
        best = select_best(scores, params.selection_metric)
        model = fit_task(train_df, spec, estimator, best.params, seed, task)
        test_metrics = evaluate_task(model, test_df, spec)
        # What later batches are checked against: the data contract and a held-out drift reference.
        contract = infer_contract_task(data.frame, spec, range_tolerance=settings.range_tolerance, task=task,
                                       valid_ranges=params.valid_ranges)
        reference = build_reference_task(model, test_df, spec.features, spec.label, settings.reference_rows, seed)
        logged = log_training_task(
            cfg, run_id, params=_run_params(params, spec.label, len(data.frame), best),
            metrics={**training_metrics(best, test_metrics, len(train_df), len(test_df)), "rows_search": rows_search},
            datasets=_lineage(dataset, train_df, test_df, spec.label),
            model=model, input_example=train_df[spec.features].head(5),
            artifacts={CONTRACT_ARTIFACT: contract.model_dump(mode="json"),
                       "cv_results.json": [s.__dict__ for s in scores]},
            frames={REFERENCE_ARTIFACT: reference}, trusted_types=estimator.trusted_types,
        )
        version = register_task(cfg, name, logged, tags={
            **_version_tags(dataset, contract, test_metrics), **params.version_tags})

    result = TrainResult(
        model_name=name, model_version=version, model_uri=model_uri(name, version=version), run_id=run_id,
        dataset_fingerprint=dataset.fingerprint, rows_train=len(train_df), rows_test=len(test_df), task=task,
        estimator=estimator.name,
        best_params=best.params, cv_metrics=best.mean, test_metrics=test_metrics, candidates=len(scores),
    )
    table = candidates_table(scores, params.selection_metric, best.index)
    create_table_artifact(key=artifact_key("train", name), table=table, description=_summary(result, cfg.tracking_uri))
    shown = ", ".join(f"{k} {v:.3f}" for k, v in test_metrics.items() if k in ("accuracy", "roc_auc", "rmse", "r2"))
    print(f"Registered {name} v{version}: test {shown} (MLflow run {run_id})")
    return result


def _parse_args(argv: list[str]) -> TrainParams:
    parser = argparse.ArgumentParser(prog="python -m flows.train", description=train.description)
    parser.add_argument("--dataset", default="iris", help="'iris', 'demo', or a path/URL to .csv/.parquet")
    parser.add_argument("--label", help="label column (default per dataset)")
    parser.add_argument("--rows", type=int, help="demo rows to generate / rows to sample")
    parser.add_argument("--model-name", help="registered model name")
    parser.add_argument("--task", default="classification", choices=["classification", "regression"])
    parser.add_argument("--estimator", default="random_forest",
                        choices=["random_forest", "logistic_regression", "hist_gradient_boosting", "ridge"])
    parser.add_argument("--factory", help="your pipeline: 'package.module:function' (replaces --estimator)")
    parser.add_argument("--code-path", help="folder the factory's package is imported from")
    parser.add_argument("--trusted-type", action="append", default=[], help="a class of yours skops may load")
    parser.add_argument("--grid", help='hyper-parameter grid as JSON, e.g. \'{"max_depth": [null, 8]}\'')
    parser.add_argument("--test-size", type=float, default=0.3)
    parser.add_argument("--cv-folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--params", help="all parameters as one JSON object (overrides the flags)")
    args = parser.parse_args(argv)
    if args.params:
        return TrainParams.model_validate_json(args.params)
    estimator: dict[str, Any] = {"kind": args.estimator}
    if args.factory:
        estimator = {"factory": args.factory, "code_path": args.code_path, "trusted_types": args.trusted_type}
    if args.grid:
        estimator["param_grid"] = json.loads(args.grid)
    return TrainParams(
        dataset=DatasetParams(source=args.dataset, label=args.label, rows=args.rows), task=args.task,
        model_name=args.model_name, estimator=EstimatorParams(**estimator),
        test_size=args.test_size, cv_folds=args.cv_folds, seed=args.seed,
    )


if __name__ == "__main__":
    # Run the importable flows.train, not this __main__ copy: a Dask task runner ships tasks to other processes,
    # which can import flows.train but not __main__.
    from flows import train as module

    print(module.train(module._parse_args(sys.argv[1:])).model_dump_json(indent=2))
