"""Live model server: every catalogued model's champion, each hot-swapped on its own reload after a smoke test.

Start with `make serve` or `python -m serving.server [--port 8000]`. Binds 127.0.0.1 by default.
Every served model answers under `/models/{name}/...`; the top-level routes are the default model's
(NIGHTSHIFT_MODEL_NAME). A model enabled in the catalogue after start-up is served from its first reload; a reload
that finds no champion alias unloads the model (503 until one is promoted). The prompts named by
NIGHTSHIFT_SERVER_PROMPTS are served the same way (a slot each, their champion loaded from the prompt registry,
swapped by the same reload) and answer `POST /models/{name}/chat`, forwarded to the provider with the champion's
prompt and model configuration.

Every scoring request gets a request id (the caller's `X-Request-Id` when usable, else a new one), returned in the
`X-Request-Id` header and the body's `request_id`; its scored rows are captured to Parquet off the request path
(serving/capture.py, NIGHTSHIFT_CAPTURE_*). `GET /metrics` answers Prometheus' text format (serving/metrics.py).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import secrets
import sys
import time
from collections import Counter
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import cached_property, partial
from typing import TYPE_CHECKING, Annotated, Any, AsyncIterator, Callable, Iterator, Literal, NamedTuple

import numpy as np
import pandas as pd
from fastapi import Depends, FastAPI, Path, Query, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, create_model

from nightshift.errors import ConfigError, NightshiftError
from nightshift.settings import Settings, get_settings
from serving import chat
from serving.capture import Capture, CaptureConfig, request_id
from serving.compiled import Batch, CompiledScorer, compile_pipeline
from serving.metrics import MetricsMiddleware, ServerMetrics, mark

if TYPE_CHECKING:  # tasks.* import Prefect, which creates its home dir on import: load them only when serving
    from tasks.data.contract import Contract
    from tasks.llm.config import PriceTable, ProviderSettings
    from tasks.registry.store import TrackingConfig


MAX_ABS_VALUE = 1e30
COMPILED_MAX_ROWS = 64  # above this the pipeline's vectorised path is as fast and needs no per-row walk
SAMPLE_ROWS = 64  # reference rows kept for the compile check and the smoke test
REQUEST_ID_KEY = "nightshift_request_id"  # request.state key: the request's id, for error replies' header
MAX_NESTING = 64  # MLflow's scoring JSON nests 4 deep; far deeper bodies only make the parser and validators recurse
_BRACKET_STEP = np.zeros(256, dtype=np.int8)  # per byte: +1 opens an array/object, -1 closes one
_BRACKET_STEP[[ord("["), ord("{")]] = 1
_BRACKET_STEP[[ord("]"), ord("}")]] = -1
_SCORING_BODY_RULES = (
    "The body must be JSON sent with `Content-Type: application/json` (or `application/*+json`; a charset "
    "parameter is fine): any other or a missing content type gets 415, as in MLflow's scoring server. "
    "Bodies over NIGHTSHIFT_SERVER_MAX_BODY_BYTES get 413 (chunked uploads are cut off as they pass the limit), "
    f"JSON nesting deeper than {MAX_NESTING} levels gets 400.")
_INVOCATIONS_BODY = {
    "required": True,
    "content": {"application/json": {"schema": {"oneOf": [
        {"type": "object", "required": ["dataframe_split"], "properties": {"dataframe_split": {
            "type": "object", "required": ["columns", "data"],
            "properties": {"columns": {"type": "array", "items": {"type": "string"}},
                           "data": {"type": "array", "items": {"type": "array"}}}}}},
        {"type": "object", "required": ["dataframe_records"], "properties": {"dataframe_records": {
            "type": "array", "items": {"type": "object"}}}},
    ]}}},
}
_ALLOW_CHANGE = "swap in a champion whose input schema or classes differ from the live model's (callers must change)"
_BEARER = HTTPBearer(auto_error=False, description="NIGHTSHIFT_SERVER_TOKEN; only the reload routes need it")
ModelName = Annotated[str, Path(description="A served model's registered name (see GET /models)")]
AllowChange = Annotated[bool, Query(description=_ALLOW_CHANGE)]
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_BEARER)]


class ScoringError(NightshiftError):
    """A request the server cannot score; carries the HTTP status and a message naming the problem."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class NoChampionError(ScoringError):
    """The model has no champion alias yet: nothing to serve until one is promoted and reloaded."""


@dataclass(frozen=True)
class Served:
    """One loaded champion: the fitted pipeline, where it came from, its request schema and its scorers."""

    model: Any
    name: str
    version: str
    run_id: str
    alias: str
    contract: Contract
    loaded_at: str
    request_model: type[BaseModel] = field(repr=False)
    sample: Batch = field(repr=False)
    compiled: CompiledScorer | None = field(default=None, repr=False)
    compiled_note: str = ""

    @cached_property
    def classes(self) -> list[Any]:
        """Class labels in probability-column order."""
        return np.asarray(self.model.classes_).tolist()

    @property
    def scorer(self) -> str:
        """What scores small requests, in a word or two (the `scorer` label of /metrics)."""
        return f"compiled {self.compiled.kind}" if self.compiled is not None else "sklearn pipeline"

    def predict_proba(self, batch: Batch) -> np.ndarray:
        """Probabilities: the compiled scorer for small batches (verified equal at load), else the pipeline."""
        if self.compiled is not None and len(batch) <= COMPILED_MAX_ROWS:
            return self.compiled(batch)
        return np.asarray(self.model.predict_proba(batch.frame(self.contract.features)))

    def info(self) -> dict[str, Any]:
        """What /version reports."""
        return {"model_name": self.name, "model_version": self.version, "run_id": self.run_id, "alias": self.alias,
                "contract_fingerprint": self.contract.fingerprint(), "loaded_at": self.loaded_at,
                "features": self.contract.features, "classes": self.classes, "scorer": self.compiled_note}


def _request_model(contract: Contract) -> type[BaseModel]:
    """The typed /predict body for a contract: one field per feature (numbers or category strings)."""
    fields: dict[str, Any] = {}
    for col in contract.columns:
        if col.kind == "numeric":
            desc = f"number (training range {col.min:g} .. {col.max:g}); null = missing"
            fields[col.name] = (float | None, Field(..., description=desc))
        else:
            shown = ", ".join((col.categories or [])[:20])
            fields[col.name] = (str | None, Field(..., description=f"category, e.g. {shown}; unseen ones are tolerated"))
    row = create_model("PredictRow", __config__=ConfigDict(extra="ignore"), **fields)
    return create_model("PredictRequest", rows=(list[row], Field(..., min_length=1)))  # type: ignore[valid-type]


def load_champion(cfg: TrackingConfig, name: str, alias: str | None = None) -> Served:
    """Load the version behind `alias` (default champion) from the registry, never a local file, with its contract."""
    from tasks.registry.runs import REFERENCE_ARTIFACT, load_frame_artifact
    from tasks.registry.versions import CHAMPION, get_alias, load_version

    alias = alias or CHAMPION
    version = get_alias(cfg, name, alias)
    if version is None:
        raise NoChampionError(503, f"model '{name}' has no '{alias}' alias yet: nothing to serve")
    loaded = load_version(cfg, name, version)  # by number: exactly the version the alias named just now
    model, contract, run_id = loaded.model, loaded.contract, loaded.ref.run_id
    reference = load_frame_artifact(cfg, run_id, REFERENCE_ARTIFACT)
    frame = reference[contract.features].head(SAMPLE_ROWS)
    sample = prepare(_columns_of(frame), len(frame), contract, max(len(frame), 1))
    categories = {c.name: list(c.categories or []) for c in contract.columns if c.kind != "numeric"}
    try:
        compiled, note = compile_pipeline(model, contract.features, contract.numeric, categories, sample)
    except Exception as exc:  # an unexpected pipeline shape: serve it through sklearn
        compiled, note = None, f"not compiled: {type(exc).__name__}: {str(exc)[:200]}"
    return Served(model=model, name=name, version=version, run_id=run_id, alias=alias, contract=contract,
                  loaded_at=datetime.now(timezone.utc).isoformat(), request_model=_request_model(contract),
                  sample=sample, compiled=compiled, compiled_note=note if compiled else f"sklearn pipeline ({note})")


def smoke_test(served: Served, latency_budget_ms: float) -> None:
    """Contract-valid sample rows must give finite probabilities of the right shape, fast enough; raises otherwise."""
    rows = served.sample
    if len(rows) == 0:
        raise ScoringError(422, "smoke test: the model's reference sample is empty")
    proba = served.predict_proba(rows)
    if proba.shape != (len(rows), len(served.classes)):
        raise ScoringError(422, f"smoke test: probabilities have shape {proba.shape}, expected "
                                f"({len(rows)}, {len(served.classes)})")
    if not np.isfinite(proba).all():
        raise ScoringError(422, f"smoke test: {int((~np.isfinite(proba)).sum())} predicted probabilities are NaN/inf")
    timings = []
    for i in range(5):
        start = time.perf_counter()
        served.predict_proba(rows.row(i % len(rows)))
        timings.append((time.perf_counter() - start) * 1000)
    if sorted(timings)[2] > latency_budget_ms:
        raise ScoringError(422, f"smoke test: single-row latency {sorted(timings)[2]:.1f} ms exceeds the budget "
                                f"{latency_budget_ms:g} ms")


def _columns_of(frame: pd.DataFrame) -> dict[str, list[Any]]:
    """A frame as request columns (missing values as null, the way JSON carries them)."""
    return {c: frame[c].astype(object).where(frame[c].notna(), None).tolist() for c in frame.columns}


def _split_columns(split: Any) -> tuple[dict[str, list[Any]], int]:
    """Columns and row count from `dataframe_split`; each column named once, each row one value per column."""
    if not isinstance(split, dict) or not isinstance(split.get("columns"), list) or not isinstance(split.get("data"), list):
        raise ScoringError(400, "'dataframe_split' needs 'columns' (list) and 'data' (list of rows)")
    names, data = [str(c) for c in split["columns"]], split["data"]
    repeated = [name for name, count in Counter(names).items() if count > 1]
    if repeated:
        raise ScoringError(400, f"duplicate column(s) in 'dataframe_split': {', '.join(map(repr, repeated[:10]))}")
    bad = next((i for i, r in enumerate(data) if not isinstance(r, list) or len(r) != len(names)), None)
    if bad is not None:
        raise ScoringError(400, f"'dataframe_split' row {bad} does not have {len(names)} values (one per column)")
    return {name: [row[i] for row in data] for i, name in enumerate(names)}, len(data)


def columns_from_scoring_json(payload: Any) -> tuple[dict[str, list[Any]], int]:
    """Columns and row count from MLflow's scoring-server JSON (`dataframe_split` or `dataframe_records`)."""
    if not isinstance(payload, dict):
        raise ScoringError(400, "expected a JSON object with 'dataframe_split' or 'dataframe_records'")
    if "dataframe_split" in payload:
        return _split_columns(payload["dataframe_split"])
    if "dataframe_records" in payload:
        records = payload["dataframe_records"]
        if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
            raise ScoringError(400, "'dataframe_records' must be a list of objects (one per row)")
        names = dict.fromkeys(k for r in records for k in r)
        return {str(c): [r.get(c) for r in records] for c in names}, len(records)
    raise ScoringError(400, "expected 'dataframe_split' or 'dataframe_records' (MLflow scoring format)")


def _numeric_column(values: list[Any], name: str) -> np.ndarray:
    """One request column as float64 (null = NaN), or a 422 naming the column and the first bad value."""
    if all(v is None or type(v) is float or type(v) is int and abs(v) < 2**63 for v in values):
        return np.array([np.nan if v is None else v for v in values], dtype=np.float64)
    out = np.empty(len(values), dtype=np.float64)
    for i, v in enumerate(values):
        if v is None:
            out[i] = np.nan
            continue
        if isinstance(v, (bool, dict, list)) or not isinstance(v, (int, float, str, np.number)):
            raise ScoringError(422, f"column '{name}' must be numeric; got a non-number ({type(v).__name__})")
        try:
            out[i] = float(v.strip() if isinstance(v, str) else v)
        except ValueError:
            raise ScoringError(422, f"column '{name}' must be numeric; got {str(v)[:40]!r}") from None
        except OverflowError:
            raise ScoringError(422, f"column '{name}' has a value out of range: {str(v)[:40]}") from None
    return out


def prepare(columns: dict[str, list[Any]], n_rows: int, contract: Contract, max_rows: int) -> Batch:
    """Check and coerce request columns to the contract's features; errors name the column and value."""
    if n_rows == 0:
        raise ScoringError(400, "the request has no rows")
    if n_rows > max_rows:
        raise ScoringError(413, f"the request has {n_rows} rows; at most {max_rows} per request")
    missing = [c for c in contract.features if c not in columns]
    if missing:
        raise ScoringError(400, f"missing column(s): {', '.join(repr(c) for c in missing[:10])}")
    numeric, categorical = contract.numeric, contract.categorical
    block = (np.column_stack([_numeric_column(columns[n], n) for n in numeric]) if numeric
             else np.empty((n_rows, 0), dtype=np.float64))
    # Beyond MAX_ABS_VALUE the model's float32 trees overflow: no real feature is that large.
    bad = ~(np.isnan(block) | (np.abs(block) <= MAX_ABS_VALUE))
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise ScoringError(422, f"column '{numeric[col]}' has a value out of range: {block[row, col]!r}")
    cats: dict[str, np.ndarray] = {}
    for name in categorical:
        values = columns[name]
        if any(isinstance(v, (dict, list)) for v in values):
            raise ScoringError(422, f"column '{name}' must be a category string; got an object/list")
        cats[name] = np.array([v if v is None or isinstance(v, str) else str(v) for v in values], dtype=object)
    return Batch(block, tuple(numeric), cats)


def check_schema(live: Served | None, candidate: Served, allow_change: bool) -> list[str]:
    """How the candidate's inputs or classes differ from the live model's; a 422 unless the caller allows a change."""
    from tasks.data.contract import schema_changes

    if live is None:  # nothing served yet: no caller to break
        return []
    changes = schema_changes(live.contract, candidate.contract)
    if changes and not allow_change:
        raise ScoringError(422, f"input schema differs from the live v{live.version}: {'; '.join(changes)}; "
                                "pass allow_schema_change=true to swap anyway")
    return changes


def served_model_names(settings: Settings) -> list[str]:
    """The default model, then the catalogue's enabled ones (if it exists); ConfigError if the catalogue is invalid."""
    from tasks.catalogue.schema import load_catalogue

    path = settings.catalogue_path
    if not path.exists():  # no catalogue: the single default model, as before catalogues existed
        return [settings.model_name]
    return list(dict.fromkeys([settings.model_name, *(m.name for m in load_catalogue(path).enabled)]))


def id_columns(settings: Settings) -> dict[str, str]:
    """Each catalogue model's first id column (its rows' own ids, captured as `row_id` when a request carries them)."""
    from tasks.catalogue.schema import load_catalogue

    path = settings.catalogue_path
    if not path.exists():
        return {}
    return {m.name: m.id_columns[0] for m in load_catalogue(path).models if m.id_columns}


def not_in_catalogue(settings: Settings, name: str) -> str | None:
    """None if `name` is an enabled model of the catalogue as it is on disk now, else why not (naming the file)."""
    from tasks.catalogue.schema import load_catalogue

    path = settings.catalogue_path
    if not path.exists():
        return f"there is no catalogue at {path}"
    try:
        catalogue = load_catalogue(path)
    except (NightshiftError, OSError) as exc:
        return f"the catalogue {path} cannot be read: {exc}"
    listed = {m.name: m.enabled for m in catalogue.models}
    if listed.get(name):
        return None
    return f"it is {'disabled in' if name in listed else 'not in'} the catalogue {path}"


@dataclass
class ModelSlot:
    """One served name: its loaded champion (or why there is none) and the lock that serialises its reloads.

    `kind` "model" holds a scikit-learn champion (the scoring routes), "prompt" a prompt champion (the chat route).
    """

    name: str
    served: Served | chat.ServedPrompt | None = None
    load_error: str | None = None
    no_champion: bool = False
    reload_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    kind: Literal["model", "prompt"] = "model"

    def loaded_or_503(self) -> Served | chat.ServedPrompt:
        """The champion being served (a model or a prompt), or a 503 saying why there is none."""
        if self.served is None:
            what = "no champion yet" if self.kind == chat.KIND and self.no_champion else f"no {self.kind} loaded"
            raise ScoringError(503, f"{what}: {self.load_error or 'start-up in progress'}")
        return self.served

    def served_or_503(self) -> Served:
        """The model being served for a scoring route: 400 for a prompt, 503 saying why when none is loaded."""
        if self.kind == chat.KIND:
            raise ScoringError(400, f"'{self.name}' is a prompt, not a model: it answers POST /models/{self.name}/chat "
                                    f"with {{\"variables\": {{...}}}}, not the scoring routes")
        return self.loaded_or_503()  # type: ignore[return-value]

    def prompt_or_503(self) -> chat.ServedPrompt:
        """The prompt being served for the chat route: 400 for a model, 503 saying why when none is loaded."""
        if self.kind != chat.KIND:
            raise ScoringError(400, f"'{self.name}' is a scikit-learn model, not a prompt: score it with "
                                    f"/models/{self.name}/invocations or /models/{self.name}/predict; chat answers the "
                                    f"prompts in NIGHTSHIFT_SERVER_PROMPTS")
        return self.loaded_or_503()  # type: ignore[return-value]

    def summary(self) -> dict[str, Any]:
        """What /models and /version's `models` say about this name: its kind, version and load time, or why none."""
        if self.served is None:
            why = "no champion yet" if self.no_champion else "not loaded"
            return {"status": f"{why}: {self.load_error or 'start-up in progress'}", "kind": self.kind}
        info = self.served.info()
        keys = (("model_version", "alias", "loaded_at", "provider_model", "response_format", "variables")
                if self.kind == chat.KIND else
                ("model_version", "run_id", "alias", "loaded_at", "contract_fingerprint", "scorer"))
        return {"status": "loaded", "kind": self.kind, **{k: info[k] for k in keys}}

    def load(self, cfg: TrackingConfig) -> Served | chat.ServedPrompt:
        """Blocking: this name's current champion from the registry (NoChampionError / NoPromptChampion if none)."""
        return chat.load_prompt(cfg, self.name) if self.kind == chat.KIND else load_champion(cfg, self.name)

    def check(self, candidate: Served | chat.ServedPrompt, allow_change: bool, latency_budget_ms: float) -> list[str]:
        """Blocking: the candidate's interface changes vs the live one (422 unless allowed), then its smoke test:
        scoring sample rows for a model, rendering the template with dummy variables for a prompt (no provider
        call: a reload costs nothing)."""
        if self.kind == chat.KIND:
            changes = chat.check_schema(self.served, candidate, allow_change)  # type: ignore[arg-type]
            chat.smoke_test(candidate)  # type: ignore[arg-type]
            return changes
        changes = check_schema(self.served, candidate, allow_change)  # type: ignore[arg-type]
        smoke_test(candidate, latency_budget_ms)  # type: ignore[arg-type]
        return changes


@dataclass
class ServerState:
    """What the routes share: settings, the registry config and one slot per served name (the default model first,
    then the catalogue's models, then the prompts)."""

    settings: Settings
    cfg: TrackingConfig
    names: list[str] | None = None
    prompts: list[str] = field(default_factory=list)
    id_columns: dict[str, str] = field(default_factory=dict)  # model -> the request column that identifies a row
    slots: dict[str, ModelSlot] = field(init=False)
    capture: Capture | None = None  # set while the app runs (lifespan), when capture is enabled
    metrics: ServerMetrics | None = None

    def __post_init__(self) -> None:
        self.slots = {name: ModelSlot(name) for name in (self.names or [self.settings.model_name])}
        self.slots.update({name: ModelSlot(name, kind=chat.KIND) for name in self.prompts})

    def names_of(self, kind: str) -> list[str]:
        """The served names of one kind ("model" or "prompt"), in slot order."""
        return [name for name, slot in self.slots.items() if slot.kind == kind]

    def live(self) -> Iterator[tuple[str, str, str]]:
        """(name, version, scorer) of every loaded champion: what /metrics' nightshift_model_loaded reports."""
        for name, slot in list(self.slots.items()):
            served = slot.served
            if isinstance(served, Served):
                yield name, served.version, served.scorer
            elif served is not None:
                yield name, served.version, f"prompt {served.config.model}"

    def capture_stats(self) -> dict[str, dict[str, int]]:
        """The capture writer's counters per model (none before start-up or when capture is off)."""
        return self.capture.stats() if self.capture is not None else {}

    @property
    def default(self) -> ModelSlot:
        """The default model's slot (NIGHTSHIFT_MODEL_NAME): what the top-level routes serve."""
        return self.slots[self.settings.model_name]

    @property
    def served(self) -> Served | None:
        """The default model being served, if any."""
        return self.default.served

    def slot(self, name: str) -> ModelSlot:
        """The slot called `name`, or a 404 naming the served models."""
        if name not in self.slots:
            raise ScoringError(404, f"model '{name}' is not served here (served: {', '.join(self.slots)})")
        return self.slots[name]

    async def reload_slot(self, app: FastAPI, name: str) -> ModelSlot:
        """The slot to reload: a served model's, or a new one for a model enabled in the catalogue since start-up."""
        if name in self.slots:
            return self.slots[name]
        why = await asyncio.to_thread(not_in_catalogue, self.settings, name)  # re-read: it may have been added
        if why is not None:
            if await asyncio.to_thread(_is_prompt, self.cfg, name):
                why = ("it is a prompt: prompts are served when NIGHTSHIFT_SERVER_PROMPTS names them at start-up "
                       f"(now: {', '.join(self.names_of(chat.KIND)) or 'none'})")
            raise ScoringError(404, f"model '{name}' is not served here (served: {', '.join(self.slots)}) and {why}")
        slot = self.slots.setdefault(name, ModelSlot(name))  # no await since the check: one slot, one lock per name
        app.openapi_schema = None  # the {name} enum lists it from now on
        if name not in self.id_columns:  # its rows' id column, for capture (read before its champion is loaded)
            column = (await asyncio.to_thread(id_columns, self.settings)).get(name)
            if column is not None:
                self.id_columns.setdefault(name, column)
        return slot

    async def load(self, concurrency: int = 4) -> None:
        """Load every champion at start-up, a few at a time; one failing leaves the others serving (503 for it)."""
        gate = asyncio.Semaphore(concurrency)

        async def load_one(slot: ModelSlot) -> None:
            async with gate:
                try:
                    slot.served = await asyncio.to_thread(slot.load, self.cfg)
                except Exception as exc:  # recorded and answered as a 503 on this model's routes
                    slot.load_error = str(exc)
                    slot.no_champion = isinstance(exc, (NoChampionError, chat.NoPromptChampion))

        await asyncio.gather(*(load_one(slot) for slot in self.slots.values()))

    def served_or_503(self) -> Served:
        """The default model being served, or a 503 saying why there is none."""
        return self.default.served_or_503()

    async def reload(self, app: FastAPI, allow_schema_change: bool = False, name: str | None = None) -> JSONResponse:
        """Load one model's current champion, check its schema, smoke-test it, swap it in; else its old one stays.

        With no champion alias at all (the registry says so; a registry error is not that) the model is unloaded:
        the server never keeps serving a version the registry no longer names, e.g. after a first promotion was
        rolled back. The outcome (swapped, unloaded, kept) is counted in /metrics.
        """
        slot = await self.reload_slot(app, name or self.settings.model_name)
        body, status = await self._swap(app, slot, allow_schema_change)
        if self.metrics is not None:
            self.metrics.reload(slot.name, body["status"])
        return JSONResponse(body, status_code=status)

    async def _swap(self, app: FastAPI, slot: ModelSlot, allow_schema_change: bool) -> tuple[dict[str, Any], int]:
        """The reload of one slot under its lock: the reply's body and status."""
        async with slot.reload_lock:
            old = slot.served
            try:
                candidate = await asyncio.to_thread(slot.load, self.cfg)
                changes = await asyncio.to_thread(slot.check, candidate, allow_schema_change,
                                                  self.settings.server_latency_budget_ms)
            except (NoChampionError, chat.NoPromptChampion) as exc:
                if old is None:  # nothing served, nothing to serve: unchanged
                    return {"status": "kept", "model_version": None, "reason": str(exc)}, exc.status
                slot.served = None  # its routes answer 503 "no champion" from now on
                slot.load_error, slot.no_champion = str(exc), True
                app.openapi_schema = None
                return {"status": "unloaded", "from_version": old.version, "to_version": None, "reason": str(exc)}, 200
            except Exception as exc:  # the old model keeps serving whatever went wrong
                status = exc.status if isinstance(exc, (ScoringError, chat.ChatError)) else 422
                return {"status": "kept", "model_version": old.version if old else None, "reason": str(exc)}, status
            slot.served = candidate  # one reference assignment: requests see old or new, never half
            slot.load_error, slot.no_champion = None, False
            app.openapi_schema = None  # /predict's schema follows the new contract
        return {"status": "swapped", "from_version": old.version if old else None, "to_version": candidate.version,
                "schema_changes": changes}, 200

    def listing(self) -> dict[str, dict[str, Any]]:
        """Every served model's summary, the default first."""
        return {name: slot.summary() for name, slot in self.slots.items()}


def _is_prompt(cfg: TrackingConfig, name: str) -> bool:
    """Whether `name` is a prompt in the registry; False when the registry cannot say (only a 404's wording)."""
    from tasks.registry.versions import is_prompt

    try:
        return is_prompt(cfg, name)
    except Exception:
        return False


def check_prompt_names(settings: Settings) -> list[str]:
    """NIGHTSHIFT_SERVER_PROMPTS, each name clear of the default model and every catalogue model (enabled or not:
    a disabled one may be enabled and reloaded later); ConfigError naming both otherwise."""
    from tasks.catalogue.schema import load_catalogue

    prompts = settings.server_prompts
    if not prompts:
        return []
    if settings.model_name in prompts:
        raise ConfigError(f"NIGHTSHIFT_SERVER_PROMPTS names '{settings.model_name}', which is also the default model "
                          f"NIGHTSHIFT_MODEL_NAME: one served name, one thing; rename one of them")
    path = settings.catalogue_path
    models = [m.name for m in load_catalogue(path).models] if path.exists() else []
    clash = [name for name in prompts if name in models]
    if clash:
        raise ConfigError(f"NIGHTSHIFT_SERVER_PROMPTS names {', '.join(map(repr, clash))}, also model(s) of the "
                          f"catalogue {path}: one served name, one thing; rename the prompt or drop it from the setting")
    return prompts


async def _scoring_error(request: Request, exc: ScoringError) -> JSONResponse:
    """ScoringError as MLflow's error JSON with its status (and the request's X-Request-Id once it has one)."""
    rid = getattr(request.state, REQUEST_ID_KEY, None)
    return JSONResponse({"error_code": "INVALID_PARAMETER_VALUE" if exc.status < 500 else "UNAVAILABLE",
                         "message": str(exc)}, status_code=exc.status, headers={"X-Request-Id": rid} if rid else None)


def _token_refusal(credentials: HTTPAuthorizationCredentials | None, token: SecretStr | None) -> JSONResponse | None:
    """401 without a bearer token, 403 for a wrong one (or when none is configured), None when it matches."""
    if credentials is None:
        return JSONResponse({"message": "missing bearer token"}, status_code=401, headers={"WWW-Authenticate": "Bearer"})
    expected = token.get_secret_value() if token else None
    if expected is None or not secrets.compare_digest(credentials.credentials.encode(), expected.encode()):
        return JSONResponse({"message": "invalid token" if expected else "reload disabled: no token configured"},
                            status_code=403)
    return None


def is_json_media_type(content_type: str | None) -> bool:
    """Whether a Content-Type header names JSON: application/json or application/*+json, any parameters."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


async def read_body(request: Request, max_bytes: int) -> bytes:
    """The request body, refused (413) as soon as it passes `max_bytes` while streaming in, chunked or not."""
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > max_bytes:
        raise ScoringError(413, f"request body of {length} bytes exceeds {max_bytes}")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:  # stop here: uvicorn sends the 413, then reads and drops the rest of the upload
            raise ScoringError(413, f"request body exceeds {max_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def nesting_depth(text: str) -> int:
    """How deep arrays and objects nest in JSON text, brackets inside strings not counted; no parsing, no recursion."""
    # Drop escaped backslashes, then escaped quotes: every quote left opens or closes a string. UTF-8 keeps
    # non-ASCII characters out of the ASCII byte range, so the bytes below are exactly the JSON punctuation.
    raw = text.encode("utf-8", "surrogatepass").replace(b"\\\\", b"").replace(b'\\"', b"")
    codes = np.frombuffer(raw, dtype=np.uint8)
    outside = np.cumsum(codes == ord('"'), dtype=np.uint8) % 2 == 0  # an even number of quotes so far
    steps = _BRACKET_STEP[codes]
    return int(np.cumsum(steps[outside & (steps != 0)], dtype=np.int32).max(initial=0))


def parse_json(body: bytes) -> Any:
    """The body as JSON (UTF-8/16/32 as json.loads detects it); 400 for invalid JSON or nesting past MAX_NESTING."""
    try:
        text = body.decode(json.detect_encoding(body), "surrogatepass")
    except UnicodeDecodeError as exc:
        raise ScoringError(400, f"request body is not valid JSON: {exc}") from None
    brackets = text.count("[") + text.count("{")  # an upper bound on the depth, and cheap
    if brackets > MAX_NESTING and (depth := nesting_depth(text)) > MAX_NESTING:
        raise ScoringError(400, f"request body nests deeper than {MAX_NESTING} levels ({depth}); "
                                "MLflow's scoring JSON needs 4")
    try:
        return json.loads(text)
    except ValueError as exc:
        raise ScoringError(400, f"request body is not valid JSON: {exc}") from None


async def _read_json(request: Request, max_bytes: int) -> Any:
    """The request body as JSON: 415 unless it is declared JSON, 413 past `max_bytes`, 400 if invalid or too deep."""
    content_type = request.headers.get("content-type")
    if not is_json_media_type(content_type):
        got = f"got {content_type!r}" if content_type else "no Content-Type was sent"
        raise ScoringError(415, f"the request body must be JSON: send Content-Type: application/json ({got})")
    return parse_json(await read_body(request, max_bytes))


class Scored(NamedTuple):
    """One scored request: labels and rounded probabilities for the reply; the checked rows and the unrounded
    probabilities for traffic capture."""

    labels: list[Any]
    probabilities: list[list[float]]
    batch: Batch
    raw: np.ndarray


def _score(served: Served, columns: dict[str, list[Any]], n_rows: int, max_rows: int) -> Scored:
    """Labels and rounded probabilities for request columns; input errors become 4xx ScoringErrors."""
    rows = prepare(columns, n_rows, served.contract, max_rows)
    try:
        proba = served.predict_proba(rows)
    except (ValueError, TypeError) as exc:  # input the checks above did not foresee: still the caller's
        raise ScoringError(422, f"could not score these rows: {str(exc).splitlines()[0][:200]}") from None
    labels = np.asarray(served.classes, dtype=object)[np.argmax(proba, axis=1)]
    return Scored([v.item() if hasattr(v, "item") else v for v in labels], np.round(proba, 6).tolist(), rows, proba)


Reply = tuple[dict[str, Any], Scored, list[Any] | None]  # the body, what was scored, the rows' own ids (or None)


def _invocations_reply(served: Served, payload: Any, max_rows: int, id_column: str | None = None) -> Reply:
    """The /invocations answer for MLflow scoring JSON, and the values of `id_column` if the request has it."""
    columns, n_rows = columns_from_scoring_json(payload)
    scored = _score(served, columns, n_rows, max_rows)
    body = {"predictions": scored.labels, "probabilities": scored.probabilities, "classes": served.classes,
            "model_version": served.version}
    return body, scored, columns.get(id_column) if id_column else None


def _predict_reply(served: Served, payload: Any, max_rows: int, id_column: str | None = None) -> Reply:
    """The /predict answer: the body validated against the contract's request model, one labelled row per input."""
    try:
        body = served.request_model.model_validate(payload)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ScoringError(422, f"{where}: {first['msg']} ({len(exc.errors())} problem(s) in the request)") from None
    rows = [r.model_dump() for r in body.rows]  # type: ignore[attr-defined]
    scored = _score(served, {name: [r[name] for r in rows] for name in served.contract.features}, len(rows), max_rows)
    ids = None
    if id_column:  # not a feature: the request model dropped it, the raw rows still have it
        raw = [r.get(id_column) if isinstance(r, dict) else None for r in payload["rows"]]
        ids = raw if any(v is not None for v in raw) else None
    reply = {"model_version": served.version, "predictions": [
        {"label": label, "probabilities": dict(zip(map(str, served.classes), p))}
        for label, p in zip(scored.labels, scored.probabilities)]}
    return reply, scored, ids


def _request_schema(served: Served, components: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A $ref to the served model's typed request body, its schemas added to `components` under `prefix`."""
    body = served.request_model.model_json_schema(ref_template="#/components/schemas/" + prefix + "{model}")
    components.update({prefix + key: value for key, value in body.pop("$defs", {}).items()})
    components[prefix + "PredictRequest"] = body
    return {"$ref": f"#/components/schemas/{prefix}PredictRequest"}


def _openapi(app: FastAPI, state: ServerState) -> dict[str, Any]:
    """The OpenAPI schema with each typed request body generated from its served model's contract."""
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    paths = schema["paths"]
    if state.served is not None:
        paths["/predict"]["post"]["requestBody"] = {
            "required": True, "content": {"application/json": {"schema": _request_schema(state.served, components)}}}
    per_model = [_request_schema(slot.served, components, f"{slot.name}.") for slot in state.slots.values()
                 if slot.served is not None and slot.kind != chat.KIND]
    if per_model:
        paths["/models/{name}/predict"]["post"]["requestBody"] = {"required": True, "content": {"application/json": {
            "schema": per_model[0] if len(per_model) == 1 else {"anyOf": per_model}}}}
    prompts = state.names_of(chat.KIND)
    if not prompts:  # no prompt served: the chat route only says so (400/404), the docs need not list it
        paths.pop("/models/{name}/chat", None)
    else:
        per_prompt = []
        for slot in state.slots.values():
            if slot.kind == chat.KIND and slot.served is not None:
                components[f"{slot.name}.ChatRequest"] = chat.request_schema(slot.served)  # type: ignore[arg-type]
                per_prompt.append({"$ref": f"#/components/schemas/{slot.name}.ChatRequest"})
        if per_prompt:
            paths["/models/{name}/chat"]["post"]["requestBody"] = {"required": True, "content": {"application/json": {
                "schema": per_prompt[0] if len(per_prompt) == 1 else {"anyOf": per_prompt}}}}
    names = {"/models/{name}/chat": prompts, "/models/{name}/invocations": state.names_of("model"),
             "/models/{name}/predict": state.names_of("model")}
    for path, item in paths.items():
        for parameter in item.get("post", item.get("get", {})).get("parameters", []):
            if path.startswith("/models/{name}") and not path.endswith("/reload") and parameter["name"] == "name":
                # the served names (503 while one has no champion)
                parameter["schema"]["enum"] = names.get(path, list(state.slots))
    app.openapi_schema = schema
    return schema


_RELOAD = (
    " Refused (422, old model kept) when the champion's input schema or classes differ from the live model's, "
    "unless `allow_schema_change=true`; a failed load or smoke test keeps the old model too (4xx/5xx, "
    "`\"status\": \"kept\"`). When the registry says the model has no `champion` alias at all (a first promotion "
    "rolled back, an alias removed), a loaded model is unloaded: 200 `\"status\": \"unloaded\"`, and from then on "
    "its routes answer 503 \"no champion\" (for the default model that includes `/ready`, `/invocations`, `/predict` "
    "and `/version`, as at a start-up without a champion) until a champion is promoted and reloaded; it never goes on "
    "serving a version the registry no longer names. A registry that cannot be reached is not \"no alias\": the "
    "old model stays. With nothing loaded and no champion the answer is 503 `\"status\": \"kept\"`.")
_MODEL_RELOAD = (
    " A name that is not served yet is looked up in the catalogue (NIGHTSHIFT_CATALOGUE_PATH) as it is on disk now: "
    "a model enabled there since start-up is served from this reload on (its champion loaded like any reload; "
    "listed by `GET /models`); any other name gets 404 naming the catalogue file and why (not in it, disabled, "
    "unreadable). A model removed from or disabled in the catalogue since start-up keeps being served, and "
    "reloaded, until the server restarts: dropping it would break its callers without a deploy.")
_MODEL_PREDICT = (" The body follows model `name`'s own data contract: its `<name>.PredictRequest` schema "
                  "(listed under components; one `anyOf` branch per loaded model).")
_PROMPT_RELOAD = (
    " A prompt (NIGHTSHIFT_SERVER_PROMPTS) reloads the same way: its champion's template and model configuration are "
    "read from the prompt registry, its interface checked (the template variables and the response format must "
    "equal the live version's unless `allow_schema_change=true`; 422 otherwise) and its smoke test renders the "
    "template with a dummy value per variable: no provider call is made, so a reload costs nothing.")
_CHAT = (
    "Forwards the request to the provider (OpenAI-compatible, `OPENAI_BASE_URL`, key `OPENAI_API_KEY` in the server's "
    "environment) with the prompt champion's system prompt, template, model, temperature, max tokens and response "
    "format, through the project's openai client: retries with backoff on 408/409/429/5xx honouring Retry-After, a "
    "timeout per attempt, a bounded number of calls in flight (later ones queue: `queued_ms`). The body gives a "
    "value for each `{{ variable }}` of the template: `{\"variables\": {...}}` (the prompt's `<name>.ChatRequest` "
    "schema). `X-Request-Id` is echoed (header and `request_id`), else generated. "
    "400: missing or unknown variables, a model name, a malformed body; 404: a name not served; 503: no champion "
    "yet, or no OPENAI_API_KEY on the server; 502: the provider failed (model and its HTTP status named); 504: the "
    "provider did not answer within the timeout. The API key is never in a reply. " + _SCORING_BODY_RULES)
_METRICS = (
    "Requests by model, version, route and status (`nightshift_requests_total`), their latency "
    "(`nightshift_request_duration_seconds`, by model and route), rows scored (`nightshift_rows_scored_total`), "
    "reloads by outcome (`nightshift_reloads_total`: swapped, unloaded, kept, refused), what is live "
    "(`nightshift_model_loaded{model,version,scorer}`) and traffic capture (`nightshift_capture_*`: queue depth, "
    "buffered, written, dropped, sampled-out rows, write errors).")
_CHAT_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": chat.ChatErrorBody, "description": text} for status, text in (
        (400, "Missing or unknown variables, a scikit-learn model's name, a malformed or non-object body"),
        (404, "No such served name"), (413, "Body too large"), (415, "Not JSON"),
        (502, "The provider failed: model and HTTP status named"),
        (503, "No champion yet, or no OPENAI_API_KEY on the server"),
        (504, "The provider did not answer in time"))}


def create_app(settings: Settings | None = None, provider: ProviderSettings | None = None,
               prices: PriceTable | None = None, *, freeze_heap: bool = False) -> FastAPI:
    """The FastAPI app; loads every served model's and prompt's champion at start-up (one without answers 503).

    `provider` (endpoint, timeout, retries, concurrency; default from OPENAI_BASE_URL) and `prices` (default
    tasks.llm.config.DEFAULT_PRICES) are for the chat route. `freeze_heap` (the server process: `main`): once start-up is
    done, move every object alive into the garbage collector's permanent generation (`gc.freeze`).
    """
    from tasks.registry.store import TrackingConfig

    settings = settings or get_settings()
    state = ServerState(settings, TrackingConfig.from_settings(settings), served_model_names(settings),
                        check_prompt_names(settings), id_columns(settings))
    backend = chat.ChatBackend(provider, prices)
    max_bytes, max_rows = settings.server_max_body_bytes, settings.server_max_rows
    capture_config = CaptureConfig.from_settings(settings)
    metrics = state.metrics = ServerMetrics(state.live, state.capture_stats if capture_config.enabled else None)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state.capture = Capture(capture_config) if capture_config.enabled else None
        try:
            await state.load()
            if freeze_heap:
                # MLflow, sklearn and pandas leave ~2M objects behind: a full collection walks them all, 0.1-0.4 s of
                # GIL held on this machine. Requests whose rows wait in the capture queue outlive the young
                # generations and set such collections off; frozen, the start-up heap is never walked again. (A
                # start-up model swapped out later is still freed by reference counting; only cycles among its
                # objects would stay, once.)
                gc.collect()
                gc.freeze()
            yield
        finally:
            backend.close()
            if state.capture is not None:  # uvicorn's graceful shutdown (SIGTERM): queued rows written, parts closed
                await asyncio.to_thread(state.capture.close)

    app = FastAPI(title="nightshift model server", version="1", description=__doc__, lifespan=lifespan)
    app.add_exception_handler(ScoringError, _scoring_error)  # type: ignore[arg-type]
    app.add_middleware(MetricsMiddleware, metrics=metrics, default_model=settings.model_name,  # type: ignore[arg-type]
                       served=state.slots.__contains__)

    async def answer(request: Request, response: Response, slot: ModelSlot,
                     reply: Callable[[Served, Any, int, str | None], Reply]) -> dict[str, Any]:
        """A scoring route's work: request id, the model's reply, metrics marks, the rows offered to capture.

        The request id goes back in the X-Request-Id header, and in MLflow's scoring reply as `request_id` too (its
        scoring server puts extra keys beside `predictions` the same way); /predict's body stays as it was.
        """
        rid = request_id(request.headers.get("x-request-id"))
        setattr(request.state, REQUEST_ID_KEY, rid)
        served = slot.served_or_503()
        mark(request.state, served.version)
        body, scored, ids = reply(served, await _read_json(request, max_bytes), max_rows,
                                  state.id_columns.get(served.name))
        mark(request.state, served.version, len(scored.labels))
        if state.capture is not None:  # never blocks or raises: a full queue drops (and counts) the rows
            state.capture.offer(served.name, served.version, rid, scored.batch, scored.labels, scored.raw,
                                served.classes, row_ids=ids)
        response.headers["X-Request-Id"] = rid
        if reply is _invocations_reply:
            body["request_id"] = rid
        return body

    @app.get("/health", summary="Liveness")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/ready", summary="Readiness: the default model is loaded")
    async def ready() -> dict[str, Any]:
        return {"status": "ready", "model_version": state.served_or_503().version}

    @app.get("/version", summary="The default model being served, and every served model under `models`")
    async def version() -> dict[str, Any]:
        return {**state.served_or_503().info(), "models": state.listing()}

    @app.post("/invocations", summary="MLflow scoring-server compatible predictions (default model)",
              description=_SCORING_BODY_RULES, openapi_extra={"requestBody": _INVOCATIONS_BODY})
    async def invocations(request: Request, response: Response) -> dict[str, Any]:
        return await answer(request, response, state.default, _invocations_reply)

    @app.post("/predict", summary="Typed predictions (request schema from the default model's data contract)",
              description=_SCORING_BODY_RULES)
    async def predict(request: Request, response: Response) -> dict[str, Any]:
        return await answer(request, response, state.default, _predict_reply)

    @app.post("/reload", summary="Load the default model's champion, smoke-test it, swap atomically (bearer token)",
              description=_RELOAD.lstrip())
    async def reload(credentials: Credentials, allow_schema_change: AllowChange = False) -> JSONResponse:
        if (refusal := _token_refusal(credentials, settings.server_token)) is not None:
            metrics.reload(settings.model_name, "refused")
            return refusal
        return await state.reload(app, allow_schema_change)

    @app.get("/metrics", summary="Prometheus metrics (text exposition format; no token)",
             response_class=PlainTextResponse, description=_METRICS)
    async def scrape() -> Response:
        body, content_type = metrics.exposition()
        return Response(body, media_type=content_type)

    @app.get("/models", summary="Every served model: its loaded version, or why none is loaded")
    async def models() -> dict[str, Any]:
        return {"default_model": settings.model_name, "models": state.listing()}

    @app.get("/models/{name}/ready", summary="Readiness of one model or prompt: its champion is loaded")
    async def model_ready(name: ModelName) -> dict[str, Any]:
        return {"status": "ready", "model_version": state.slot(name).loaded_or_503().version}

    @app.get("/models/{name}/version", summary="The version of one model or prompt being served")
    async def model_version(name: ModelName) -> dict[str, Any]:
        return state.slot(name).loaded_or_503().info()

    @app.post("/models/{name}/invocations", summary="MLflow scoring-server compatible predictions of one model",
              description=_SCORING_BODY_RULES, openapi_extra={"requestBody": _INVOCATIONS_BODY})
    async def model_invocations(name: ModelName, request: Request, response: Response) -> dict[str, Any]:
        return await answer(request, response, state.slot(name), _invocations_reply)

    @app.post("/models/{name}/predict", summary="Typed predictions of one model (request schema from its contract)",
              description=_SCORING_BODY_RULES + _MODEL_PREDICT)
    async def model_predict(name: ModelName, request: Request, response: Response) -> dict[str, Any]:
        return await answer(request, response, state.slot(name), _predict_reply)

    @app.post("/models/{name}/reload", summary="Reload one model's champion only, smoke-tested, swapped atomically "
                                               "(bearer token)",
              description="As `/reload`, for model `name` alone (its own lock; the other models are untouched)."
                          + _RELOAD + _MODEL_RELOAD + _PROMPT_RELOAD)
    async def model_reload(name: ModelName, credentials: Credentials,
                           allow_schema_change: AllowChange = False) -> JSONResponse:
        if (refusal := _token_refusal(credentials, settings.server_token)) is not None:
            metrics.reload(name if name in state.slots else "", "refused")  # made-up names: one label
            return refusal
        return await state.reload(app, allow_schema_change, name)

    @app.post("/models/{name}/chat", summary="The prompt champion's answer: forwarded to the provider with its "
                                             "prompt and model configuration",
              description=_CHAT, response_model=chat.ChatResponse, responses=_CHAT_ERRORS,
              openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
                  "schema": chat.ChatRequest.model_json_schema()}}}})
    async def model_chat(name: ModelName, request: Request) -> JSONResponse:
        rid = chat.request_id(request.headers.get("x-request-id"))
        try:
            served = state.slot(name).prompt_or_503()
            mark(request.state, served.version)
            variables = chat.parse_request(await _read_json(request, max_bytes), served)
            reply: dict[str, Any] = (await backend.answer(served, variables, rid)).model_dump(mode="json")
            status = 200
        except (ScoringError, chat.ChatError) as exc:
            extra = exc.extra if isinstance(exc, chat.ChatError) else {}
            status = exc.status
            reply = chat.ChatErrorBody(error_code=chat.error_code(status), message=str(exc), request_id=rid,
                                       **extra).model_dump(mode="json")
        # The one place a chat request and its answer (or failure) are both known (metrics: the middleware counts it).
        return JSONResponse(reply, status_code=status, headers={"X-Request-Id": rid})

    app.openapi = partial(_openapi, app, state)  # type: ignore[method-assign]
    return app


def main(argv: list[str] | None = None) -> int:
    """Run the server with uvicorn."""
    parser = argparse.ArgumentParser(prog="python -m serving.server", description=__doc__)
    settings = get_settings()
    parser.add_argument("--host", default=settings.server_host)
    parser.add_argument("--port", type=int, default=settings.server_port)
    args = parser.parse_args(argv)
    import uvicorn

    try:
        app = create_app(settings, freeze_heap=True)
    except NightshiftError as exc:  # e.g. an invalid catalogue: never start serving fewer models than configured
        print(f"model server not started: {exc}", file=sys.stderr)
        return 2
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
