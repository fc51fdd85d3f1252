"""The MLflow store behind every registry call: where it is (TrackingConfig), a client bound to it, and what a
failure means (not found, transient, the caller's mistake). tasks/registry/ is the only package importing mlflow.

Every call names its run explicitly (no active run is ever left open across threads); the one fluent block,
around `log_model`, opens and closes the run inside a single function (runs.log_sklearn_model)."""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict

from nightshift.errors import TrackingError, TrackingUnavailable

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from nightshift.settings import Settings


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
        # A tracking server decides where artifacts go (and proxies them) unless an artifact root is set.
        remote = settings.tracking_uri.startswith(("http://", "https://"))
        return cls(tracking_uri=settings.tracking_uri, registry_uri=settings.registry_uri,
                   experiment_name=settings.experiment_name,
                   artifact_location=settings.mlflow_artifact_location if remote else settings.artifact_location)


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


# Registry reads/writes whose failure a retry may cure (a locked SQLite file, a 5xx): retried, with backoff.
RETRY: dict[str, Any] = dict(cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[2, 10],
                             retry_condition_fn=retry_if_unavailable)
