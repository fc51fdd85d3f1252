"""All MLflow code: runs, params, metrics, dataset lineage, logged models, the model registry and its prompts.

Every call names its run explicitly (no active run is ever left open across threads); the one fluent
block, around `log_model`, opens and closes the run inside a single function.
"""

from __future__ import annotations

import dataclasses
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Literal

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict, Field

from nightshift.errors import ConfigError, TrackingError, TrackingUnavailable

if TYPE_CHECKING:
    from datetime import date

    import pandas as pd
    from mlflow import MlflowClient
    from mlflow.pyfunc import PyFuncModel
    from nightshift.settings import Settings

# skops refuses to load types nobody vouched for. These were reviewed for the pipelines tasks.train builds (numpy
# dtypes, fitted decision trees, histogram gradient boosting's tree predictors: node arrays sklearn indexes without
# bounds checks, safe because models load only from our own registry); anything else fails loudly.
SKOPS_TRUSTED_TYPES = ["numpy.dtype", "sklearn.tree._tree.Tree",
                       "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor"]
# Pinning these skips MLflow's 4-5 s requirement inference on every log_model.
_MODEL_REQUIREMENTS = ("scikit-learn", "pandas", "numpy", "scipy", "skops")
MODEL_ARTIFACT = "model"
CONTRACT_ARTIFACT = "contract/contract.json"
REFERENCE_ARTIFACT = "reference/reference.parquet"


class TrackingConfig(BaseModel):
    """Where runs and models live; passed to every tracking call."""

    model_config = ConfigDict(frozen=True)

    tracking_uri: str
    registry_uri: str
    experiment_name: str
    artifact_location: str | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> TrackingConfig:
        """Tracking config from the project settings (creates the local state dir if it is used)."""
        if settings.tracking_uri.startswith("sqlite:") or settings.artifact_location.startswith("file:"):
            settings.ensure_dirs()
        return cls(tracking_uri=settings.tracking_uri, registry_uri=settings.registry_uri,
                   experiment_name=settings.experiment_name, artifact_location=settings.artifact_location)


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


def _offline() -> None:
    """Before MLflow is imported: no telemetry (MLflow 3 fetches a config URL and reports usage; nightshift runs
    offline) and no artifact progress bars in flow logs. The user's own MLFLOW_* settings win."""
    import os

    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


_INITIALIZED: set[str] = set()  # SQLite stores this process has created or checked (MLflow caches them per process)


def _init_sqlite_store(cfg: TrackingConfig) -> None:
    """Create (or migrate) a local SQLite store under a file lock, once per process: two processes opening a new
    database at once both ran MLflow's migrations and one failed ("table _alembic_tmp_tags already exists")."""
    uris = sorted({u for u in (cfg.tracking_uri, cfg.registry_uri) if u.startswith("sqlite:///")} - _INITIALIZED)
    if not uris:
        return
    from filelock import FileLock
    from mlflow import MlflowClient

    for uri in uris:
        path = Path(uri[len("sqlite:///"):].split("?", 1)[0])
        path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(f"{path}.init.lock"):
            store = MlflowClient(tracking_uri=uri, registry_uri=uri)
            store.search_experiments(max_results=1)  # creates the tracking tables
            store.search_registered_models(max_results=1)  # and the registry's, on the same file
        _INITIALIZED.add(uri)


def _mlflow(cfg: TrackingConfig) -> Any:
    import logging

    _offline()
    _init_sqlite_store(cfg)
    import mlflow

    # uv-made venvs have no pip; MLflow's note about it is noise for models with pinned requirements.
    logging.getLogger("mlflow.utils.environment").setLevel(logging.ERROR)

    mlflow.set_tracking_uri(cfg.tracking_uri)
    mlflow.set_registry_uri(cfg.registry_uri)
    return mlflow


@contextmanager
def _no_int_hint() -> Iterator[None]:
    """Silence two MLflow hints that do not apply: integer labels are ints by design (features are declared
    double), and a local Parquet path is a file source however many source classes claim it."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Integer columns in Python cannot represent missing values.*")
        warnings.filterwarnings("ignore", message=".*dataset source can be interpreted in multiple ways.*")
        yield


def client(cfg: TrackingConfig) -> MlflowClient:
    """An MlflowClient bound to `cfg`'s URIs (no global state)."""
    _offline()
    _init_sqlite_store(cfg)
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=cfg.tracking_uri, registry_uri=cfg.registry_uri)


# Error codes that mean "the store is there but failed" (a retry may help); other codes are the caller's mistake.
_TRANSIENT_CODES = {"INTERNAL_ERROR", "TEMPORARILY_UNAVAILABLE", "REQUEST_LIMIT_EXCEEDED", "DEADLINE_EXCEEDED"}
_ABSENT = object()


def is_not_found(exc: BaseException) -> bool:
    """MLflow's "no such model/version/alias" answers, and nothing else.

    On the SQL store a missing alias on an existing model is INVALID_PARAMETER_VALUE ("alias ... not found"),
    a missing model or version RESOURCE_DOES_NOT_EXIST; an HTTP tracking server forwards the same codes.
    """
    from mlflow.exceptions import MlflowException

    if not isinstance(exc, MlflowException):
        return False
    return exc.error_code == "RESOURCE_DOES_NOT_EXIST" or (
        exc.error_code == "INVALID_PARAMETER_VALUE" and "not found" in exc.message.lower())


def is_transient(exc: BaseException) -> bool:
    """A store failure a retry may cure: a 5xx, an unreachable server, a locked SQLite database."""
    from mlflow.exceptions import MlflowException

    if isinstance(exc, TrackingUnavailable):
        return True
    if isinstance(exc, MlflowException):
        return exc.error_code in _TRANSIENT_CODES and not is_not_found(exc)
    return isinstance(exc, (OSError, ConnectionError, TimeoutError)) or type(exc).__module__.startswith(
        ("requests", "urllib3", "sqlalchemy"))


def registry_call(cfg: TrackingConfig, what: str, call: Any, *, absent: Any = _ABSENT) -> Any:
    """Run one registry call: not-found gives `absent` (or a TrackingError); any other failure names the store."""
    try:
        return call()
    except TrackingError:
        raise
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        if is_not_found(exc):
            if absent is not _ABSENT:
                return absent
            raise TrackingError(f"{what}: {first}") from exc
        kind = TrackingUnavailable if is_transient(exc) else TrackingError
        raise kind(f"MLflow registry at {cfg.registry_uri} failed while {what}: {first}") from exc


def retry_if_unavailable(task: object, task_run: object, state: object) -> bool:
    """Prefect retry condition: retry a tracking task only when the store failed, never for a real answer."""
    try:
        state.result()  # type: ignore[attr-defined]
    except Exception as exc:  # noqa: BLE001 - the state holds the task's exception
        return is_transient(exc)
    return False


def local_store_dir(cfg: TrackingConfig) -> Path | None:
    """The folder of a local registry (SQLite file or file store), None for a registry server."""
    from urllib.parse import urlparse

    from mlflow.utils.uri import is_local_uri

    uri = cfg.registry_uri
    if uri.startswith("sqlite:///"):
        return Path(uri[len("sqlite:///"):].split("?", 1)[0]).parent
    if is_local_uri(uri):
        return Path(urlparse(uri).path if uri.startswith("file:") else uri)
    return None


def ensure_experiment(cfg: TrackingConfig) -> str:
    """Id of the configured experiment, created with the configured artifact location if missing."""
    from mlflow.exceptions import MlflowException

    c = client(cfg)
    exp = c.get_experiment_by_name(cfg.experiment_name)
    if exp is not None:
        return exp.experiment_id
    try:
        return c.create_experiment(cfg.experiment_name, artifact_location=cfg.artifact_location)
    except MlflowException as exc:  # created by a concurrent run in the meantime
        exp = c.get_experiment_by_name(cfg.experiment_name)
        if exp is None:
            raise exc from None
        return exp.experiment_id


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


def log_sklearn_model(cfg: TrackingConfig, run_id: str, model: Any, input_example: pd.DataFrame) -> LoggedModel:
    """Store a fitted sklearn pipeline (skops format) with its signature and an input example."""
    from mlflow.models import infer_signature

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
                serialization_format="skops", skops_trusted_types=SKOPS_TRUSTED_TYPES,
                pip_requirements=_requirements(),
            )
    return LoggedModel(model_uri=info.model_uri, model_id=getattr(info, "model_id", None), run_id=run_id)


def register_model_version(cfg: TrackingConfig, name: str, logged: LoggedModel,
                           tags: dict[str, Any] | None = None) -> str:
    """Register a logged model as a new version of `name`, its tags set in the same call (no alias: promotion
    is a separate decision). A rerun finds a version by its tags, so none is ever left untagged."""
    from mlflow.exceptions import MlflowException

    c = client(cfg)

    def create() -> None:
        try:
            c.create_registered_model(name, description="Managed by nightshift.")
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":  # else: raced with another registration; exists now
                raise

    if registry_call(cfg, f"reading model '{name}'", lambda: c.get_registered_model(name), absent=None) is None:
        registry_call(cfg, f"creating model '{name}'", create)
    mv = registry_call(cfg, f"registering a version of '{name}'", lambda: c.create_model_version(
        name, source=logged.model_uri, run_id=logged.run_id, tags={k: str(v)[:5000] for k, v in (tags or {}).items()},
        model_id=logged.model_id))
    return str(mv.version)


def log_training(cfg: TrackingConfig, run_id: str, *, params: dict[str, Any], metrics: dict[str, float],
                 datasets: list[DatasetRef], model: Any, input_example: pd.DataFrame,
                 artifacts: dict[str, Any], frames: dict[str, pd.DataFrame] | None = None) -> LoggedModel:
    """Everything a training run records: params, metrics, dataset lineage, JSON/Parquet artifacts and the model."""
    log_params(cfg, run_id, params)
    log_metrics(cfg, run_id, metrics)
    log_inputs(cfg, run_id, datasets)
    for name, obj in artifacts.items():
        log_dict(cfg, run_id, obj, name)
    for name, frame in (frames or {}).items():
        log_frame(cfg, run_id, frame, name)
    return log_sklearn_model(cfg, run_id, model, input_example)


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


@dataclass(frozen=True)
class VersionRef:
    """A registered model version, how it was chosen, and the run that produced it."""

    name: str
    version: str
    run_id: str
    alias: str | None
    tags: dict[str, str]


def resolve_version(cfg: TrackingConfig, name: str, alias: str = "champion") -> VersionRef:
    """The version behind `alias`, or the newest version when no alias is set; fails clearly if none exists."""
    if is_prompt(cfg, name):
        version = get_alias(cfg, name, alias)
        newest = None if version is not None else next((str(v.version) for v in list_versions(cfg, name)), None)
        if version is None and newest is None:
            raise TrackingError(f"Prompt '{name}' has no version yet: register one first.")
        return dataclasses.replace(get_version(cfg, name, version or str(newest)), alias=alias if version else None)
    c = client(cfg)
    mv = registry_call(cfg, f"reading alias '{alias}' of '{name}'", lambda: c.get_model_version_by_alias(name, alias),
                       absent=None)
    chosen: str | None = alias
    if mv is None:
        versions = list_versions(cfg, name)
        if not versions:
            raise TrackingError(
                f"No trained model '{name}' yet: run the train flow first (python -m flows.train --model-name {name})."
            ) from None
        mv, chosen = versions[0], None
    return VersionRef(name=name, version=str(mv.version), run_id=str(mv.run_id), alias=chosen, tags=dict(mv.tags or {}))


@dataclass(frozen=True)
class LoadedVersion:
    """A registered version with what every consumer needs: its run, data contract and fitted pipeline."""

    ref: VersionRef
    contract: Any  # tasks.validate.Contract
    model: Any  # the fitted sklearn pipeline


def load_version(cfg: TrackingConfig, name: str, alias_or_version: str = "champion") -> LoadedVersion:
    """version → run → contract → model in one call; an alias that is not set fails clearly."""
    from tasks.validate import Contract

    if is_prompt(cfg, name):
        raise TrackingError(f"'{name}' is a prompt, not a model: load it with load_prompt_version.")

    if alias_or_version.isdigit():
        ref = get_version(cfg, name, alias_or_version)
    else:
        version = get_alias(cfg, name, alias_or_version)
        if version is None:
            raise TrackingError(f"Model '{name}' has no '{alias_or_version}' version yet: run the nightly flow "
                                f"(or train and promote a version) first.")
        ref = dataclasses.replace(get_version(cfg, name, version), alias=alias_or_version)
    contract = Contract.model_validate(load_json_artifact(cfg, ref.run_id, CONTRACT_ARTIFACT))
    return LoadedVersion(ref=ref, contract=contract, model=load_sklearn(cfg, name, version=ref.version))


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


# --------------------------------------------------------------------------------------------
# Aliases (never the deprecated stages) and the audit trail.
# --------------------------------------------------------------------------------------------
CHAMPION, PREVIOUS, CHALLENGER = "champion", "previous", "challenger"
GATE_TAG = "nightshift.gate.decision"


def get_alias(cfg: TrackingConfig, name: str, alias: str) -> str | None:
    """The version an alias points at, None only when MLflow says it is not set (any other failure raises)."""
    if is_prompt(cfg, name):
        pv = registry_call(cfg, f"reading alias '{alias}' of prompt '{name}'",
                           lambda: client(cfg).get_prompt_version_by_alias(name, alias), absent=None)
        return None if pv is None else str(pv.version)
    mv = registry_call(cfg, f"reading alias '{alias}' of '{name}'",
                       lambda: client(cfg).get_model_version_by_alias(name, alias), absent=None)
    return None if mv is None else str(mv.version)


def set_alias(cfg: TrackingConfig, name: str, alias: str, version: str) -> None:
    """Point an alias at a version."""
    if is_prompt(cfg, name):
        registry_call(cfg, f"setting alias '{alias}' of prompt '{name}' to v{version}",
                      lambda: client(cfg).set_prompt_alias(name, alias, str(version)))
        return
    registry_call(cfg, f"setting alias '{alias}' of '{name}' to v{version}",
                  lambda: client(cfg).set_registered_model_alias(name, alias, str(version)))


def delete_alias(cfg: TrackingConfig, name: str, alias: str) -> None:
    """Remove an alias if it exists."""
    if is_prompt(cfg, name):
        registry_call(cfg, f"deleting alias '{alias}' of prompt '{name}'",
                      lambda: client(cfg).delete_prompt_alias(name, alias), absent=None)
        return
    registry_call(cfg, f"deleting alias '{alias}' of '{name}'",
                  lambda: client(cfg).delete_registered_model_alias(name, alias), absent=None)


def tag_version(cfg: TrackingConfig, name: str, version: str, tags: dict[str, Any]) -> None:
    """Set tags on a model or prompt version (a prompt's content and its hash are not tags to set)."""
    c = client(cfg)
    if is_prompt(cfg, name):
        reserved = [k for k in tags if _reserved_prompt_tag(k)]
        if reserved:
            raise TrackingError(f"Not tagging v{version} of prompt '{name}' with {reserved}: MLflow keeps the "
                                f"prompt's content in these keys and nightshift its hash; register a new version.")
        for key, value in tags.items():
            registry_call(cfg, f"tagging v{version} of prompt '{name}'",
                          lambda k=key, v=value: c.set_prompt_version_tag(name, str(version), k, str(v)[:5000]))
        return
    for key, value in tags.items():
        registry_call(cfg, f"tagging v{version} of '{name}'",
                      lambda k=key, v=value: c.set_model_version_tag(name, str(version), k, str(v)[:5000]))


def get_version(cfg: TrackingConfig, name: str, version: str) -> VersionRef:
    """One registered version (fails clearly if it does not exist); a prompt's run is its eval run tag ('' if none)."""
    if is_prompt(cfg, name):
        pv = registry_call(cfg, f"reading version {version} of prompt '{name}'",
                           lambda: client(cfg).get_prompt_version(name, str(version)), absent=None)
        if pv is None:
            raise TrackingError(f"Prompt '{name}' has no version {version}.")
        tags = dict(pv.tags or {})
        return VersionRef(name=name, version=str(pv.version), run_id=tags.get(EVAL_RUN_TAG, ""), alias=None, tags=tags)
    mv = registry_call(cfg, f"reading version {version} of '{name}'",
                       lambda: client(cfg).get_model_version(name, str(version)), absent=None)
    if mv is None:
        raise TrackingError(f"Model '{name}' has no version {version}.")
    return VersionRef(name=name, version=str(mv.version), run_id=str(mv.run_id), alias=None, tags=dict(mv.tags or {}))


def version_tags(cfg: TrackingConfig, name: str, version: str) -> dict[str, str]:
    """A model version's tags."""
    return get_version(cfg, name, version).tags


def version_run_id(cfg: TrackingConfig, name: str, version: str) -> str:
    """The MLflow run that produced a model version (for a prompt version: its eval run)."""
    run_id = get_version(cfg, name, version).run_id
    if not run_id:
        raise TrackingError(f"Prompt '{name}' v{version} has no eval run: register it with tag {EVAL_RUN_TAG}.")
    return run_id


def find_version_by_tag(cfg: TrackingConfig, name: str, key: str, value: str) -> str | None:
    """Newest version of `name` (a model or a prompt) whose tag `key` equals `value`."""
    for mv in list_versions(cfg, name):
        if (mv.tags or {}).get(key) == value:
            return str(mv.version)
    return None


@dataclass(frozen=True)
class AliasState:
    """Where champion and previous pointed (None = unset): what a rollback restores."""

    champion: str | None
    previous: str | None


def alias_state(cfg: TrackingConfig, name: str) -> AliasState:
    """Current champion/previous versions."""
    return AliasState(champion=get_alias(cfg, name, CHAMPION), previous=get_alias(cfg, name, PREVIOUS))


def move_champion(cfg: TrackingConfig, name: str, version: str) -> AliasState:
    """previous := champion, then champion := version; returns the state before (idempotent for the same version).

    The order matters for crashes: killed between the two writes, champion still points at the old,
    gated version and previous at that same version.
    """
    from nightshift.faults import fault_point

    before = alias_state(cfg, name)
    if before.champion == str(version):
        return before
    if before.champion is not None:
        set_alias(cfg, name, PREVIOUS, before.champion)
    fault_point("between-aliases")
    set_alias(cfg, name, CHAMPION, str(version))
    fault_point("after-champion")
    return before


def restore_aliases(cfg: TrackingConfig, name: str, state: AliasState) -> None:
    """Put champion/previous back exactly as in `state`."""
    for alias, version in ((CHAMPION, state.champion), (PREVIOUS, state.previous)):
        if version is None:
            delete_alias(cfg, name, alias)
        else:
            set_alias(cfg, name, alias, version)


class AuditRecord(BaseModel):
    """One promotion, refusal or rollback: when, which versions, the numbers, why, and which Prefect run."""

    time: str
    model_name: str
    action: Literal["promote", "refuse", "rollback", "rollback-undone", "superseded"]
    from_version: str | None = None
    to_version: str | None = None
    metric: str | None = None
    challenger: float | None = None
    champion: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    reason: str
    flow_run_id: str | None = None
    dataset_fingerprint: str | None = None


def _audit_experiment(cfg: TrackingConfig) -> str:
    return ensure_experiment(cfg.model_copy(update={"experiment_name": f"{cfg.experiment_name}-audit"}))


def append_audit(cfg: TrackingConfig, record: AuditRecord) -> str:
    """Append a record: an MLflow run in the '<experiment>-audit' experiment plus tags on the versions involved."""
    import json

    c = client(cfg)
    tags = {"nightshift.audit.model": record.model_name, "nightshift.audit.action": record.action,
            "nightshift.audit.record": record.model_dump_json(), "mlflow.note.content": record.reason}
    run = c.create_run(_audit_experiment(cfg), run_name=f"{record.action}-{record.model_name}-{record.time}", tags=tags)
    numbers = {k: getattr(record, k) for k in ("challenger", "champion", "ci_low", "ci_high")}
    log_metrics(cfg, run.info.run_id, {k: v for k, v in numbers.items() if v is not None})
    c.set_terminated(run.info.run_id)
    entry = json.dumps(record.model_dump(exclude_none=True))
    set_tag = c.set_prompt_version_tag if is_prompt(cfg, record.model_name) else c.set_model_version_tag
    for version in {record.from_version, record.to_version} - {None}:
        # A deleted version is skipped (absent); the audit run still holds the record.
        registry_call(cfg, f"tagging v{version} of '{record.model_name}' with its audit record",
                      lambda v=version: set_tag(record.model_name, str(v),
                                                f"nightshift.audit.{record.time}.{record.action}",
                                                entry[:5000]), absent=None)
    return run.info.run_id


def read_audit(cfg: TrackingConfig, name: str | None = None) -> list[AuditRecord]:
    """The audit trail, oldest first (optionally for one model)."""
    c = client(cfg)
    exp = c.get_experiment_by_name(f"{cfg.experiment_name}-audit")
    if exp is None:
        return []
    filt = f"tags.`nightshift.audit.model` = '{name}'" if name else ""
    runs = c.search_runs([exp.experiment_id], filter_string=filt, max_results=50_000,
                         order_by=["attributes.start_time ASC"])
    return [AuditRecord.model_validate_json(r.data.tags["nightshift.audit.record"]) for r in runs]


def finish_run(cfg: TrackingConfig, run_id: str, status: Literal["FINISHED", "FAILED", "KILLED"] = "FINISHED") -> None:
    """Close a run with its final status."""
    client(cfg).set_terminated(run_id, status=status)


def get_run(cfg: TrackingConfig, run_id: str) -> Any:
    """The MLflow run entity (params, metrics, tags, inputs)."""
    return client(cfg).get_run(run_id)


def list_versions(cfg: TrackingConfig, name: str) -> list[Any]:
    """All registered versions of `name`, newest first (empty if the model does not exist); MLflow PromptVersions
    (version, tags, template, model_config; no run_id, aliases always empty) for a prompt."""
    if is_prompt(cfg, name):
        return _prompt_versions(cfg, name)
    versions = registry_call(cfg, f"listing versions of '{name}'",
                             lambda: client(cfg).search_model_versions(f"name = '{name}'"))
    return sorted(versions, key=lambda v: int(v.version), reverse=True)


def model_uri(name: str, version: str | None = None, alias: str | None = None) -> str:
    """Registry URI of a version or alias: models only ever load from the registry."""
    if (version is None) == (alias is None):
        raise TrackingError("Give exactly one of version or alias.")
    return f"models:/{name}/{version}" if version is not None else f"models:/{name}@{alias}"


def load_pyfunc(cfg: TrackingConfig, name: str, version: str | None = None, alias: str | None = None) -> PyFuncModel:
    """Load a registered model as an MLflow pyfunc."""
    mlflow = _mlflow(cfg)
    import mlflow.pyfunc

    return mlflow.pyfunc.load_model(model_uri(name, version, alias))


def load_sklearn(cfg: TrackingConfig, name: str, version: str | None = None, alias: str | None = None) -> Any:
    """Load a registered model as the fitted sklearn pipeline (for probabilities)."""
    mlflow = _mlflow(cfg)
    import mlflow.sklearn

    return mlflow.sklearn.load_model(model_uri(name, version, alias))


# --------------------------------------------------------------------------------------------
# Prompts: a chat template + model config versioned in MLflow's prompt registry, promoted like a model.
# --------------------------------------------------------------------------------------------
CONTENT_HASH_TAG = "nightshift.content_hash"  # sha256 of a prompt version's messages + model config, set at register
EVAL_RUN_TAG = "nightshift.eval_run_id"  # a prompt version has no run: the run that evaluated it, as a version tag
_PROMPTS: set[tuple[str, str]] = set()  # (registry URI, name) known to be prompts: a name never changes kind


class PromptContentMismatch(TrackingError):
    """A prompt version's stored content no longer matches the hash recorded when it was registered."""


class PromptSnapshot(BaseModel):
    """One prompt version as registered: its chat messages, model config and tags, content hash checked."""

    model_config = ConfigDict(frozen=True, populate_by_name=True, serialize_by_alias=True)

    name: str
    version: str
    alias: str | None = None
    messages: list[dict[str, str]]
    system: str
    template: str
    llm_config: dict[str, Any] = Field(alias="model_config")
    tags: dict[str, str]
    content_hash: str


def is_prompt(cfg: TrackingConfig, name: str) -> bool:
    """Whether `name` is a prompt in the registry (False for a model or a missing name); a store failure raises.

    MLflow keeps prompts and models in one namespace, so a True answer is cached per registry. Not `get_prompt`:
    it answers None for any failure, which would send a prompt down the model path that reads "no alias".
    """
    key = (cfg.registry_uri, name)
    if key in _PROMPTS:
        return True
    found = registry_call(cfg, f"checking whether '{name}' is a prompt", lambda: client(cfg).search_prompts(
        filter_string=f"name = '{name}'", max_results=1))
    if not any(p.name == name for p in found):
        return False
    _PROMPTS.add(key)
    return True


def _reserved_prompt_tag(key: str) -> bool:
    """Tag keys holding a prompt version's content (MLflow's) or its hash (ours): never set them by hand."""
    return key.startswith(("mlflow.prompt.", "_mlflow_prompt_")) or key == CONTENT_HASH_TAG


def _prompt_versions(cfg: TrackingConfig, name: str) -> list[Any]:
    """Every version of prompt `name`, newest first, page by page (empty if it was deleted)."""
    c = client(cfg)
    found: list[Any] = []
    token: str | None = None
    while True:
        page = registry_call(cfg, f"listing versions of prompt '{name}'", absent=None,
                             call=lambda t=token: c.search_prompt_versions(name, max_results=1000, page_token=t))
        if page is None:
            return []
        found.extend(page)
        token = page.token
        if not token:
            return sorted(found, key=lambda v: int(v.version), reverse=True)


def _normalized_config(model_config: dict[str, Any]) -> dict[str, Any]:
    """The model config as MLflow stores and returns it (unknown keys flattened from extra_params, None dropped)."""
    import json

    _offline()
    from mlflow.entities.model_registry import PromptModelConfig
    from pydantic import ValidationError

    try:
        return json.loads(json.dumps(PromptModelConfig.from_dict(dict(model_config)).to_dict()))
    except (ValidationError, TypeError, ValueError) as exc:
        raise ConfigError(f"Invalid prompt model config {model_config!r}: {str(exc).splitlines()[0]}") from exc


def _content_hash(messages: Any, model_config: dict[str, Any], response_format: Any = None) -> str:
    """sha256 of the canonical JSON of (messages, model config[, response format])."""
    import hashlib
    import json

    content: dict[str, Any] = {"messages": messages, "model_config": model_config}
    if response_format:  # never set by nightshift: only a version edited by hand has one
        content["response_format"] = response_format
    text = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def _chat(system: str, template: str) -> list[dict[str, str]]:
    """The two chat messages a nightshift prompt version holds."""
    return [{"role": "system", "content": system}, {"role": "user", "content": template}]


def prompt_content_hash(system: str, template: str, model_config: dict[str, Any]) -> str:
    """The content hash a [system, user] prompt with this model config is registered under."""
    return _content_hash(_chat(system, template), _normalized_config(model_config))


def find_prompt_version_by_content(cfg: TrackingConfig, name: str, content_hash: str) -> str | None:
    """Newest version of prompt `name` registered with `content_hash` whose content still matches it (None if none)."""
    if not is_prompt(cfg, name):
        return None
    for pv in _prompt_versions(cfg, name):
        if (pv.tags or {}).get(CONTENT_HASH_TAG) == content_hash and content_hash == _content_hash(
                pv.template, pv.model_config or {}, pv.response_format):
            return str(pv.version)
    return None


def register_prompt_version(cfg: TrackingConfig, name: str, system: str, template: str, model_config: dict[str, Any],
                            tags: dict[str, Any] | None = None) -> str:
    """Register [system, user] chat messages ({{ var }} placeholders) with their model config as a version of prompt
    `name`, its content hash and `tags` set in the same call; the same content registered before is that version
    (its tags left as they are), so a rerun registers nothing new. No alias: promotion is a separate decision."""
    messages = _chat(system, template)
    config = _normalized_config(model_config)
    digest = _content_hash(messages, config)
    existing = find_prompt_version_by_content(cfg, name, digest)
    if existing is not None:
        return existing
    values = {k: str(v)[:5000] for k, v in (tags or {}).items()}
    reserved = [k for k in values if _reserved_prompt_tag(k)]
    if reserved:
        raise TrackingError(f"Not registering prompt '{name}' with tags {reserved}: MLflow keeps the prompt's "
                            f"content in these keys and nightshift its hash.")
    pv = registry_call(cfg, f"registering a version of prompt '{name}'", lambda: client(cfg).register_prompt(
        name, messages, commit_message=f"nightshift content {digest[:12]}", tags={**values, CONTENT_HASH_TAG: digest},
        model_config=config or None))
    _PROMPTS.add((cfg.registry_uri, name))
    return str(pv.version)


def _snapshot(pv: Any, alias: str | None) -> PromptSnapshot:
    """A PromptSnapshot of an MLflow PromptVersion, after checking its content against the recorded hash."""
    where = f"Prompt '{pv.name}' version {pv.version}"
    tags = dict(pv.tags or {})
    recorded = tags.get(CONTENT_HASH_TAG)
    if recorded is None:
        raise PromptContentMismatch(f"{where} has no {CONTENT_HASH_TAG} tag: it was not registered by nightshift "
                                    f"(register it with register_prompt_version).")
    actual = _content_hash(pv.template, pv.model_config or {}, pv.response_format)
    if actual != recorded:
        raise PromptContentMismatch(f"{where} was changed after registration (content hash {actual[:12]}, registered "
                                    f"as {recorded[:12]}): register the change as a new version instead.")
    messages = pv.template
    if not (isinstance(messages, list) and [m.get("role") for m in messages] == ["system", "user"]):
        raise TrackingError(f"{where} is not a [system, user] chat prompt.")
    return PromptSnapshot(name=pv.name, version=str(pv.version), alias=alias, messages=messages,
                          system=messages[0]["content"], template=messages[1]["content"],
                          model_config=dict(pv.model_config or {}), tags=tags, content_hash=actual)


def load_prompt_version(cfg: TrackingConfig, name: str, version_or_alias: str = "champion") -> PromptSnapshot:
    """A prompt version by number or alias, its content checked against its hash (PromptContentMismatch names it).

    An alias is read from the registry, then the version loaded by number: never MLflow's 60 s alias cache, so
    a promotion or rollback is seen at once.
    """
    if not is_prompt(cfg, name):
        raise TrackingError(f"'{name}' is not a prompt in the registry at {cfg.registry_uri}.")
    version, alias = str(version_or_alias), None
    if not version.isdigit():
        alias, version = version, get_alias(cfg, name, version)
        if version is None:
            raise TrackingError(f"Prompt '{name}' has no '{alias}' version yet: register and promote one first.")
    pv = registry_call(cfg, f"reading version {version} of prompt '{name}'",
                       lambda: client(cfg).get_prompt_version(name, version), absent=None)
    if pv is None:
        raise TrackingError(f"Prompt '{name}' has no version {version}.")
    return _snapshot(pv, alias)


# Registry reads/writes whose failure a retry may cure (a locked SQLite file, a 5xx): retried, with backoff.
RETRY: dict[str, Any] = dict(cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[2, 10],
                             retry_condition_fn=retry_if_unavailable)
start_run_task = task(start_run, name="mlflow-start-run", cache_policy=NO_CACHE)
log_outputs_task = task(log_outputs, name="mlflow-log-outputs", cache_policy=NO_CACHE)
resolve_version_task = task(resolve_version, name="resolve-model-version", **RETRY)
load_json_artifact_task = task(load_json_artifact, name="load-json-artifact", **RETRY)
load_frame_artifact_task = task(load_frame_artifact, name="load-reference", **RETRY)
load_sklearn_task = task(load_sklearn, name="load-model-from-registry", **RETRY)
log_training_task = task(log_training, name="mlflow-log-training", cache_policy=NO_CACHE)
register_task = task(register_model_version, name="mlflow-register-version", cache_policy=NO_CACHE)
finish_run_task = task(finish_run, name="mlflow-finish-run", cache_policy=NO_CACHE)
find_version_task = task(find_version_by_tag, name="find-version-by-tag", **RETRY)
set_alias_task = task(set_alias, name="set-alias", **RETRY)
load_version_task = task(load_version, name="load-model-version", **RETRY)
register_prompt_task = task(register_prompt_version, name="mlflow-register-prompt", cache_policy=NO_CACHE)
load_prompt_task = task(load_prompt_version, name="load-prompt-version", **RETRY)


# --------------------------------------------------------------------------------------------
# Realized quality: the champion's metrics on each labeled day, one run per model, a point per day.
# --------------------------------------------------------------------------------------------
QUALITY_MODEL_TAG = "nightshift.quality.model"
QUALITY_DAY_TAG = "nightshift.quality.day."  # + YYYY-MM-DD: that day's record (the days already measured)
ESTIMATE_DAY_TAG = "nightshift.estimate.day."  # + YYYY-MM-DD: the day's metric estimated before its labels


def quality_experiment_name(cfg: TrackingConfig) -> str:
    """The experiment holding every model's realized-quality run: '<experiment>-quality'."""
    return f"{cfg.experiment_name}-quality"


def quality_run(cfg: TrackingConfig, name: str, prefix: str = QUALITY_DAY_TAG) -> tuple[str, dict[str, str]]:
    """The model's realized-quality run (named after it; created on first use) and its records by ISO day (the
    realized ones, or with `prefix` ESTIMATE_DAY_TAG the estimates made before the labels)."""
    from mlflow.entities import Param

    c = client(cfg)
    exp = ensure_experiment(cfg.model_copy(update={"experiment_name": quality_experiment_name(cfg)}))
    runs = c.search_runs([exp], filter_string=f"tags.`{QUALITY_MODEL_TAG}` = '{name}'", max_results=1,
                         order_by=["attributes.start_time ASC"])
    if runs:
        run = runs[0]
    else:
        note = (f"Realized quality of the champion of '{name}' on each labeled day: metrics realized_<metric> at "
                f"step YYYYMMDD, timestamped at that day; estimated_<metric> before the labels landed, and once "
                f"they did estimate_error_<metric> (realized - estimated).")
        run = c.create_run(exp, run_name=name, tags={QUALITY_MODEL_TAG: name, "mlflow.note.content": note})
        c.log_batch(run.info.run_id, params=[Param("model_name", name)])
        c.set_terminated(run.info.run_id)  # a finished run still takes the points of later nights
    records = {k[len(prefix):]: v for k, v in run.data.tags.items() if k.startswith(prefix)}
    return run.info.run_id, records


def log_realized_quality(cfg: TrackingConfig, run_id: str, day: date, metrics: dict[str, float], record: str,
                         prefix: str = QUALITY_DAY_TAG) -> None:
    """One labeled day's point: `metrics` at step YYYYMMDD, timestamped at the day's start (UTC), and its record tag
    in the same batch (a day with a tag has been measured; ESTIMATE_DAY_TAG: estimated)."""
    import math
    from datetime import datetime, timezone

    from mlflow.entities import Metric, RunTag

    at = int(datetime(day.year, day.month, day.day, tzinfo=timezone.utc).timestamp() * 1000)
    step = int(day.strftime("%Y%m%d"))
    points = [Metric(k, float(v), at, step) for k, v in metrics.items() if v is not None and math.isfinite(float(v))]
    client(cfg).log_batch(run_id, metrics=points, tags=[RunTag(f"{prefix}{day.isoformat()}", record)])


def monitored_metric(cfg: TrackingConfig, name: str, metric: str) -> dict[str, float]:
    """`metric` as the monitor measured it on each labeled batch of `name` (its batch_<metric>), by batch source;
    the newest monitoring run of a batch wins. Labels that come with the rows have no other realized record."""
    c = client(cfg)
    exp = c.get_experiment_by_name(cfg.experiment_name)
    if exp is None:
        return {}
    where = f"tags.`nightshift.kind` = 'monitor' and tags.`nightshift.model_name` = '{name}'"
    runs = c.search_runs([exp.experiment_id], filter_string=where, max_results=50_000,
                         order_by=["attributes.start_time ASC"])
    return {r.data.tags.get("nightshift.batch", ""): float(r.data.metrics[f"batch_{metric}"]) for r in runs
            if f"batch_{metric}" in r.data.metrics}
