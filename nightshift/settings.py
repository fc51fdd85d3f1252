"""The one settings object: paths, URIs and thresholds, read from `NIGHTSHIFT_*` env vars."""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def _default_state_dir() -> Path:
    """`.nightshift/` in the project checkout, or in the working directory for a plain install."""
    root = PROJECT_ROOT if (PROJECT_ROOT / "pyproject.toml").exists() else Path.cwd()
    return root / ".nightshift"


def known_timezone(value: str) -> str:
    """An IANA time zone name, or ValueError saying what to use (settings and the model catalogue)."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {value!r} (use an IANA name like 'UTC' or 'Europe/Berlin')") from None
    return value


class Settings(BaseSettings):
    """Everything nightshift needs to know about its surroundings; tasks get values, never this object's globals."""

    model_config = SettingsConfigDict(env_prefix="NIGHTSHIFT_", extra="ignore")

    state_dir: Path = Field(default_factory=_default_state_dir, description="Local state: MLflow DB, artifacts, Prefect home, reports.")
    mlflow_tracking_uri: str | None = Field(None, description="MLflow tracking URI; default SQLite in the state dir.")
    mlflow_registry_uri: str | None = Field(None, description="MLflow registry URI; default same as tracking.")
    mlflow_artifact_location: str | None = Field(None, description="Artifact root for new experiments; default state_dir/mlartifacts.")
    experiment_name: str = Field("nightshift", description="MLflow experiment that holds the runs.")
    model_name: str = Field("nightshift-model", description="Registered model name used when a flow is not given one.")
    catalogue_path: Path = Field(PROJECT_ROOT / "models.yaml",
                                 description="The model catalogue: every model, its data templates and schedule.")
    seed: int = Field(42, description="Default random seed.")
    reference_rows: int = Field(100_000, ge=1_000, description="Rows of held-out data stored with each model version as its drift reference.")
    drift_sample_rows: int = Field(100_000, ge=5_000, description="Cap per side for the Evidently drift report (uniform sample).")
    drift_share_threshold: float = Field(0.2, gt=0, le=1, description="Share of drifted feature columns that counts as dataset drift.")
    max_metric_drop: float = Field(0.05, ge=0, description="Allowed drop of the monitored metric vs the model's test value.")
    range_tolerance: float = Field(0.5, ge=0, description="Contract: tolerated overshoot beyond the training range, as a share of it.")
    capture_enabled: bool = Field(True, description="Model server: capture scored rows (features, prediction, "
                                                    "probabilities) to Parquet for monitoring.")
    capture_dir: Path | None = Field(None, description="Where captured traffic goes ({dir}/{model}/{YYYY-MM-DD}/); "
                                                       "default state_dir/served.")
    capture_sample_rate: float = Field(1.0, ge=0, le=1, description="Share of requests captured (whole requests, "
                                                                     "chosen by a hash of the request id).")
    capture_queue_rows: int = Field(100_000, ge=1, description="Rows the capture queue holds before new ones are "
                                                               "dropped (and counted); requests never wait.")
    capture_queue_batches: int = Field(20_000, ge=1, description="Requests the capture queue holds (bounds its "
                                                                 "memory under single-row traffic).")
    capture_flush_seconds: float = Field(1.0, gt=0, le=60, description="How often the capture writer drains the "
                                                                        "queue into the open Parquet parts.")
    capture_roll_seconds: float = Field(60.0, gt=0, description="A capture part is closed (readable, fsync'd) at "
                                                                "most this long after it opened: a crash loses at "
                                                                "most this much traffic.")
    capture_roll_bytes: int = Field(64 * 2**20, ge=2**16, description="A capture part is closed once it reaches "
                                                                      "this size.")
    server_url: str | None = Field(None, description="Live model server(s) to redeploy after a promotion: one URL, or "
                                                     "several replicas separated by commas (all swap or none).")
    server_token: SecretStr | None = Field(None, description="Bearer token for the model server's /reload.")
    server_host: str = Field("127.0.0.1", description="Model server bind address (loopback unless you mean otherwise).")
    server_port: int = Field(8000, ge=1, le=65535, description="Model server port.")
    server_max_rows: int = Field(10_000, ge=1, description="Largest number of rows one scoring request may carry.")
    server_max_body_bytes: int = Field(10_000_000, ge=1_000, description="Largest request body the server reads.")
    server_shadow_queue_rows: int = Field(10_000, ge=1, description="Rows a shadow model's scoring queue holds; "
                                                                    "beyond it requests are not shadow-scored (their "
                                                                    "rows dropped and counted), never delayed.")
    server_latency_budget_ms: float = Field(250.0, gt=0, description="Reload smoke test: slowest allowed single-row prediction.")
    server_prompts: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["ticket-triage"],
        description="Registered prompts whose champion the model server answers on POST /models/<name>/chat "
                    "(comma-separated; empty = none).")
    server_provider_base_url: str | None = Field(
        None, description="Chat route: the OpenAI-compatible API root the model server calls; default "
                          "OPENAI_BASE_URL, else the SDK's (https://api.openai.com/v1).")
    server_provider_timeout_s: float = Field(30.0, gt=0, le=600, description="Chat route: seconds per provider "
                                                                             "attempt before it is abandoned.")
    server_provider_max_retries: int = Field(2, ge=0, le=10, description="Chat route: SDK retries on "
                                                                         "408/409/429/5xx and timeouts.")
    server_provider_concurrency: int = Field(4, ge=1, le=64, description="Chat route: provider calls in flight "
                                                                         "at once.")
    server_provider_queue: int = Field(32, ge=0, le=10_000, description="Chat route: calls that may wait for a "
                                                                        "free slot; beyond them a request gets 503 "
                                                                        "with Retry-After (0 = no waiting).")
    server_provider_prices: Annotated[dict[str, dict[str, float]] | None, NoDecode] = Field(
        None, description="Chat route's price table, USD per 1M tokens by provider model ('*' = any other): a JSON "
                          "object {\"model\": {\"input_per_1m\": 0.15, \"output_per_1m\": 0.6}}, or the path of a "
                          ".json/.yaml/.yml file holding one; default the offline demo's fake-* prices.")
    server_capture_chat_text: bool = Field(False, description="Chat capture: also keep each request's variables "
                                                              "and the answer's text (off: numbers and outcome "
                                                              "only).")
    prefect_home: Path | None = Field(None, description="PREFECT_HOME used when the environment sets none; default state_dir/prefect.")
    work_pool: str = Field("nightshift-process", min_length=1, description="Prefect work pool the deployments run in.")
    task_runner: Literal["threads", "dask"] = Field(
        "threads", description="Where mapped tasks (CV search, batch-scoring parts) run: threads, or Dask (prefect-dask).")
    task_workers: int = Field(2, ge=1, le=256, description="Threads, or local Dask worker processes.")
    dask_address: str | None = Field(None, description="Existing Dask scheduler (tcp://host:8786); default a local cluster.")
    notify_block: str | None = Field(
        "custom-webhook/nightshift-alerts",
        description="Prefect notification block that `make deploy`'s automations send through, as "
                    "<block-type-slug>/<block-name> (a bare name means custom-webhook/<name>); empty, or no such "
                    "block on the server: notifications off. `python -m deployments.notify --webhook-url URL` "
                    "creates the default one.")

    @field_validator("server_prompts", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        """`a,b` from the environment as ["a", "b"] (blanks dropped, each name once); each a valid model name."""
        import re

        from nightshift.naming import MODEL_NAME_PATTERN

        if isinstance(value, str):
            value = value.split(",")
        if not isinstance(value, (list, tuple)):
            return value
        names = list(dict.fromkeys(str(v).strip() for v in value if str(v).strip()))
        bad = [n for n in names if not re.fullmatch(MODEL_NAME_PATTERN, n)]
        if bad:
            raise ValueError(f"prompt name(s) {', '.join(map(repr, bad))} are not registry names "
                             f"(letters, digits, '_', '.', '-'; up to 100 characters)")
        return names

    @field_validator("server_provider_prices", mode="before")
    @classmethod
    def _price_table(cls, value: Any) -> Any:
        """A JSON object or a .json/.yaml file of model -> {input_per_1m, output_per_1m}; ValueError naming the
        setting and what is wrong otherwise."""
        return _price_table(value)

    @cached_property
    def tracking_uri(self) -> str:
        """Resolved MLflow tracking URI."""
        if self.mlflow_tracking_uri:
            return self.mlflow_tracking_uri
        return f"sqlite:///{(self.state_dir / 'mlflow.db').resolve()}"

    @cached_property
    def registry_uri(self) -> str:
        """Resolved MLflow registry URI."""
        return self.mlflow_registry_uri or self.tracking_uri

    @cached_property
    def artifact_location(self) -> str:
        """Resolved artifact root for experiments this project creates."""
        if self.mlflow_artifact_location:
            return self.mlflow_artifact_location
        return (self.state_dir / "mlartifacts").resolve().as_uri()

    @property
    def reports_dir(self) -> Path:
        """Where drift/validation reports are written before they are logged."""
        return self.state_dir / "reports"

    @property
    def served_dir(self) -> Path:
        """Where the model server's captured traffic is ({dir}/{model}/{YYYY-MM-DD}/part-*.parquet)."""
        return self.capture_dir or self.state_dir / "served"

    def ensure_dirs(self) -> None:
        """Create the local state dir (only when it is used)."""
        self.state_dir.mkdir(parents=True, exist_ok=True)


_PRICES = "NIGHTSHIFT_SERVER_PROVIDER_PRICES"
_PRICE_KEYS = ("input_per_1m", "output_per_1m")


def _price_table(value: Any) -> Any:
    """NIGHTSHIFT_SERVER_PROVIDER_PRICES read (inline JSON, or a file) and checked: model -> two prices >= 0."""
    import json

    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("{"):
            try:
                value = json.loads(text)
            except ValueError as exc:
                raise ValueError(f"{_PRICES} is not valid JSON ({exc}); give "
                                 f'{{"<model>": {{"input_per_1m": 0.15, "output_per_1m": 0.6}}}} or a file path') \
                    from None
        else:
            value = _price_file(Path(text).expanduser())
    if not isinstance(value, dict) or not value:
        raise ValueError(f"{_PRICES} must map provider model names to prices, e.g. "
                         f'{{"gpt-4o-mini": {{"input_per_1m": 0.15, "output_per_1m": 0.6}}}}; got {value!r:.80}')
    for model, price in value.items():
        ok = isinstance(price, dict) and sorted(price) == sorted(_PRICE_KEYS) and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0 for v in price.values())
        if not ok:
            raise ValueError(f"{_PRICES}: the price of model {model!r} must be {{\"input_per_1m\": <USD >= 0>, "
                             f"\"output_per_1m\": <USD >= 0>}} (USD per million tokens); got {price!r:.80}")
    return value


def _price_file(path: Path) -> Any:
    """A price table file: .json, or .yaml/.yml."""
    import json

    import yaml

    if path.suffix.lower() not in (".json", ".yaml", ".yml"):
        raise ValueError(f"{_PRICES}={str(path)!r} is neither a JSON object nor a .json/.yaml/.yml file path")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"{_PRICES}: cannot read {path}: {exc.strerror or exc}") from None
    try:
        return json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise ValueError(f"{_PRICES}: {path} is not valid {path.suffix.lstrip('.').upper()}: {exc}") from None


def get_settings() -> Settings:
    """Settings read fresh from the environment (cheap; tests change env between calls)."""
    return Settings()


def apply_prefect_defaults(settings: Settings | None = None) -> None:
    """Programs only (`make demo`), before importing prefect: Prefect's home in the state dir unless configured."""
    # Importable modules never call this: runs from the project root get the same defaults from the [tool.prefect]
    # table in pyproject.toml, without writing os.environ or creating directories at import time.
    settings = settings or get_settings()
    if "PREFECT_HOME" not in os.environ and "PREFECT_API_URL" not in os.environ:
        home = (settings.prefect_home or settings.state_dir / "prefect").resolve()
        home.mkdir(parents=True, exist_ok=True)
        os.environ["PREFECT_HOME"] = str(home)
    # Offline by default: the embedded server must not phone home.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
