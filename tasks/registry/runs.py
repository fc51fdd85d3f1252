"""MLflow runs: params, metrics, tags, dataset lineage, artifacts and the logged model of a training run."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from prefect import task
from prefect.cache_policies import NO_CACHE

from nightshift.errors import TrackingError
from tasks.registry.store import RETRY, TrackingConfig, _mlflow, _no_int_hint, client, ensure_experiment

if TYPE_CHECKING:
    import pandas as pd


# skops refuses to load types nobody vouched for. These were reviewed for the pipelines tasks.model.train builds (numpy
# dtypes, fitted decision trees, histogram gradient boosting's tree predictors: node arrays sklearn indexes without
# bounds checks, safe because models load only from our own registry); anything else fails loudly.
SKOPS_TRUSTED_TYPES = ["numpy.dtype", "sklearn.tree._tree.Tree",
                       "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor"]


# Pinning these skips MLflow's 4-5 s requirement inference on every log_model.
_MODEL_REQUIREMENTS = ("scikit-learn", "pandas", "numpy", "scipy", "skops")
MODEL_ARTIFACT = "model"
CONTRACT_ARTIFACT = "contract/contract.json"
REFERENCE_ARTIFACT = "reference/reference.parquet"


@dataclass(frozen=True)
class DatasetRef:
    """A table to record as a run input: its content fingerprint, where it came from, and its role."""

    frame: pd.DataFrame
    name: str
    source: str
    fingerprint: str
    context: Literal["training", "evaluation", "validation", "monitoring"]
    label: str | None = None


@dataclass(frozen=True)
class LoggedModel:
    """A model stored by MLflow (not yet registered)."""

    model_uri: str
    model_id: str | None
    run_id: str


def start_run(cfg: TrackingConfig, run_name: str, tags: dict[str, str] | None = None) -> str:
    """Create a run and return its id; callers pass this id to every later call."""
    run = client(cfg).create_run(ensure_experiment(cfg), run_name=run_name, tags=tags or {})
    return run.info.run_id


def log_params(cfg: TrackingConfig, run_id: str, params: dict[str, Any]) -> None:
    """Log parameters (values stringified, MLflow's 6000-char limit respected)."""
    from mlflow.entities import Param

    items = [Param(str(k), str(v)[:6000]) for k, v in params.items()]
    client(cfg).log_batch(run_id, params=items)


def log_metrics(cfg: TrackingConfig, run_id: str, metrics: dict[str, float], step: int = 0) -> None:
    """Log numeric metrics in one batch (NaN values are skipped: MLflow cannot plot them)."""
    import math
    import time

    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    items = [Metric(k, float(v), now, step) for k, v in metrics.items() if v is not None and not math.isnan(float(v))]
    client(cfg).log_batch(run_id, metrics=items)


def set_tags(cfg: TrackingConfig, run_id: str, tags: dict[str, Any]) -> None:
    """Set run tags."""
    from mlflow.entities import RunTag

    client(cfg).log_batch(run_id, tags=[RunTag(str(k), str(v)) for k, v in tags.items()])


def log_dict(cfg: TrackingConfig, run_id: str, obj: Any, artifact_file: str) -> None:
    """Store a JSON/YAML-able object as a run artifact."""
    client(cfg).log_dict(run_id, obj, artifact_file)


def log_inputs(cfg: TrackingConfig, run_id: str, datasets: list[DatasetRef]) -> None:
    """Record dataset lineage: each table's schema, source and content fingerprint as run inputs."""
    import mlflow.data
    from mlflow.data.code_dataset_source import CodeDatasetSource
    from mlflow.entities import DatasetInput, InputTag

    inputs = []
    for ds in datasets:
        # Files and URLs are recorded as such; bundled datasets as the code that made them.
        is_file = "://" in ds.source and not ds.source.startswith("nightshift-") or Path(ds.source).exists()
        source = ds.source if is_file else CodeDatasetSource({"nightshift.source": ds.source})
        # MLflow keeps a 36-char digest; the full fingerprint goes in a tag beside it.
        with _no_int_hint():
            data = mlflow.data.from_pandas(ds.frame.head(1000), source=source, name=ds.name,
                                           targets=ds.label, digest=ds.fingerprint[:32])
            entity = data._to_mlflow_entity()
        tags = [InputTag("mlflow.data.context", ds.context), InputTag("nightshift.fingerprint", ds.fingerprint),
                InputTag("nightshift.rows", str(len(ds.frame)))]
        inputs.append(DatasetInput(dataset=entity, tags=tags))
    client(cfg).log_inputs(run_id, datasets=inputs)


def _requirements() -> list[str]:
    return [f"{pkg}=={metadata.version(pkg)}" for pkg in _MODEL_REQUIREMENTS]


class ModelRefused(TrackingError):
    """A fitted model that could not be loaded back from the registry: refused before it is registered."""


def persistable_types(model: Any, trusted: list[str], example: pd.DataFrame) -> list[str]:
    """The skops types to trust when loading `model`, after proving it loads back and predicts the same: a type
    nobody vouched for (SKOPS_TRUSTED_TYPES or the catalogue's `trusted_types`) or that skops cannot store is
    refused here, with its name, and never found at 02:00 by the server."""
    import numpy as np
    import skops.io as sio

    from tasks.model.metrics import predict_scores

    kind = type(model).__name__
    try:
        data = sio.dumps(model)
    except Exception as exc:
        raise ModelRefused(f"not registered: the fitted {kind} cannot be stored with skops ({type(exc).__name__}: "
                           f"{str(exc)[:300]}); define custom classes and functions at a module's top level, "
                           "not as lambdas or inside functions.") from None
    found = sorted(sio.get_untrusted_types(data=data))
    refused = [t for t in found if t not in SKOPS_TRUSTED_TYPES and t not in trusted]
    if refused:
        raise ModelRefused(f"not registered: the fitted {kind} holds type(s) nobody declared trusted: "
                           f"{', '.join(refused)}. Review them, then list them under estimator.trusted_types in "
                           "models.yaml (a type that runs code when loaded must never be listed).")
    try:
        loaded = sio.loads(data, trusted=found)
        same = np.allclose(predict_scores(loaded, example), predict_scores(model, example), equal_nan=True)
    except Exception as exc:
        raise ModelRefused(f"not registered: the stored {kind} does not load back ({type(exc).__name__}: "
                           f"{str(exc)[:300]}).") from None
    if not same:
        raise ModelRefused(f"not registered: the {kind} loaded back from skops predicts differently from the "
                           "fitted one (state kept outside its attributes?).")
    return found


def log_sklearn_model(cfg: TrackingConfig, run_id: str, model: Any, input_example: pd.DataFrame,
                      trusted_types: list[str] | None = None, verified: list[str] | None = None) -> LoggedModel:
    """Store a fitted sklearn pipeline (skops format) with its signature and an input example; a model that does
    not load back with the reviewed types is refused first (ModelRefused, naming the types). `verified`: the
    types persistable_types already returned for this model."""
    from mlflow.models import infer_signature

    trusted = verified if verified is not None else persistable_types(model, list(trusted_types or []), input_example)
    mlflow = _mlflow(cfg)
    import mlflow.sklearn

    example = input_example.copy()
    # Declare integer columns as double so rows with missing values still match the schema.
    ints = example.select_dtypes(include=["integer"]).columns
    example[ints] = example[ints].astype("float64")
    with _no_int_hint():
        signature = infer_signature(example, model.predict(example))
        with mlflow.start_run(run_id=run_id):
            info = mlflow.sklearn.log_model(
                model, name=MODEL_ARTIFACT, signature=signature, input_example=example,
                serialization_format="skops", skops_trusted_types=trusted or SKOPS_TRUSTED_TYPES,
                pip_requirements=_requirements(),
            )
    return LoggedModel(model_uri=info.model_uri, model_id=getattr(info, "model_id", None), run_id=run_id)


def log_training(cfg: TrackingConfig, run_id: str, *, params: dict[str, Any], metrics: dict[str, float],
                 datasets: list[DatasetRef], model: Any, input_example: pd.DataFrame,
                 artifacts: dict[str, Any], frames: dict[str, pd.DataFrame] | None = None,
                 trusted_types: list[str] | None = None) -> LoggedModel:
    """Everything a training run records: params, metrics, dataset lineage, JSON/Parquet artifacts and the model
    (checked to load back first: a refused model leaves a run with nothing logged, marked failed by the caller)."""
    verified = persistable_types(model, list(trusted_types or []), input_example)
    log_params(cfg, run_id, params)
    log_metrics(cfg, run_id, metrics)
    log_inputs(cfg, run_id, datasets)
    for name, obj in artifacts.items():
        log_dict(cfg, run_id, obj, name)
    for name, frame in (frames or {}).items():
        log_frame(cfg, run_id, frame, name)
    return log_sklearn_model(cfg, run_id, model, input_example, verified=verified)


def log_artifact(cfg: TrackingConfig, run_id: str, local_path: str | Path, artifact_path: str | None = None) -> None:
    """Upload a local file (report, contract, ...) to the run's artifacts."""
    client(cfg).log_artifact(run_id, str(local_path), artifact_path)


def log_text(cfg: TrackingConfig, run_id: str, text: str, artifact_file: str) -> None:
    """Store text (markdown reports) as a run artifact."""
    client(cfg).log_text(run_id, text, artifact_file)


def log_frame(cfg: TrackingConfig, run_id: str, frame: pd.DataFrame, artifact_file: str) -> None:
    """Store a table as a Parquet run artifact."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / Path(artifact_file).name
        frame.to_parquet(path, index=False)
        parent = str(Path(artifact_file).parent)
        log_artifact(cfg, run_id, path, None if parent == "." else parent)


def download_artifact(cfg: TrackingConfig, run_id: str, artifact_path: str, dst: str | Path | None = None) -> Path:
    """Fetch one run artifact to a local path."""
    import mlflow.artifacts

    _mlflow(cfg)
    try:
        local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=artifact_path,
                                                    tracking_uri=cfg.tracking_uri, dst_path=str(dst) if dst else None)
    except Exception as exc:
        raise TrackingError(f"Run {run_id} has no artifact '{artifact_path}': {str(exc).splitlines()[0]}") from exc
    return Path(local)


def load_json_artifact(cfg: TrackingConfig, run_id: str, artifact_path: str) -> Any:
    """A JSON run artifact, parsed."""
    import mlflow.artifacts

    _mlflow(cfg)
    try:
        return mlflow.artifacts.load_dict(f"runs:/{run_id}/{artifact_path}")
    except Exception as exc:
        raise TrackingError(f"Run {run_id} has no JSON artifact '{artifact_path}': {str(exc).splitlines()[0]}") from exc


def load_frame_artifact(cfg: TrackingConfig, run_id: str, artifact_path: str) -> pd.DataFrame:
    """A Parquet run artifact as a DataFrame."""
    import tempfile

    import pandas as pd

    with tempfile.TemporaryDirectory() as tmp:
        return pd.read_parquet(download_artifact(cfg, run_id, artifact_path, tmp))


def run_metrics(cfg: TrackingConfig, run_id: str, prefix: str = "") -> dict[str, float]:
    """A run's latest metric values, optionally only those starting with `prefix` (prefix stripped)."""
    metrics = get_run(cfg, run_id).data.metrics
    return {k[len(prefix):]: float(v) for k, v in metrics.items() if k.startswith(prefix)}


def log_outputs(cfg: TrackingConfig, run_id: str, *, metrics: dict[str, float] | None = None,
                files: list[tuple[str | Path, str | None]] | None = None, texts: dict[str, str] | None = None,
                tags: dict[str, Any] | None = None) -> None:
    """Record what a monitoring-style run produced: metrics, files (with artifact dirs), text reports and tags."""
    if metrics:
        log_metrics(cfg, run_id, metrics)
    for path, artifact_dir in files or []:
        log_artifact(cfg, run_id, path, artifact_dir)
    for name, text in (texts or {}).items():
        log_text(cfg, run_id, text, name)
    if tags:
        set_tags(cfg, run_id, tags)


def finish_run(cfg: TrackingConfig, run_id: str, status: Literal["FINISHED", "FAILED", "KILLED"] = "FINISHED") -> None:
    """Close a run with its final status."""
    client(cfg).set_terminated(run_id, status=status)


def get_run(cfg: TrackingConfig, run_id: str) -> Any:
    """The MLflow run entity (params, metrics, tags, inputs)."""
    return client(cfg).get_run(run_id)


start_run_task = task(start_run, name="mlflow-start-run", cache_policy=NO_CACHE)
log_outputs_task = task(log_outputs, name="mlflow-log-outputs", cache_policy=NO_CACHE)
load_json_artifact_task = task(load_json_artifact, name="load-json-artifact", **RETRY)
load_frame_artifact_task = task(load_frame_artifact, name="load-reference", **RETRY)
log_training_task = task(log_training, name="mlflow-log-training", cache_policy=NO_CACHE)
run_metrics_task = task(run_metrics, name="read-test-metrics", **RETRY)
finish_run_task = task(finish_run, name="mlflow-finish-run", cache_policy=NO_CACHE)


@contextmanager
def run_closed(cfg: TrackingConfig, run_id: str) -> Iterator[None]:
    """The run finished when the block completes, failed (and the error raised) when it fails."""
    try:
        yield
    except BaseException:
        finish_run_task(cfg, run_id, "FAILED")
        raise
    finish_run_task(cfg, run_id, "FINISHED")
