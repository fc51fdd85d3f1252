"""What the routes share: one slot per served name (its champion, why none is loaded, its reload lock, its shadow),
the server's settings and registry config, and the start-up load and hot-swap reload of every champion; loading and
removing a shadow beside a champion (the shadow itself: serving/shadow.py)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterator, Literal

from fastapi import FastAPI
from fastapi.responses import JSONResponse

from nightshift.errors import ConfigError, NightshiftError
from serving import chat
from serving.champion import Served, check_schema, load_champion, smoke_test
from serving.errors import NoChampionError, ScoringError
from serving.shadow import Shadow, load_shadow, schema_differences

if TYPE_CHECKING:  # tasks.* import Prefect, which creates its home dir on import: load them only when serving
    from nightshift.settings import Settings
    from serving.capture import Capture, CaptureConfig
    from serving.chat_capture import ChatCapture
    from serving.metrics import ServerMetrics
    from tasks.registry.store import TrackingConfig


def served_model_names(settings: Settings) -> list[str]:
    """The default model, then the catalogue's enabled ones (if it exists); ConfigError if the catalogue is invalid."""
    from tasks.catalogue.schema import load_catalogue
    from tasks.model.factory import allow_code_path

    path = settings.catalogue_path
    if not path.exists():  # no catalogue: the single default model, as before catalogues existed
        return [settings.model_name]
    enabled = load_catalogue(path).enabled
    for m in enabled:  # a pipeline of the team's own classes loads only with their code, from where the catalogue says
        if m.estimator.code_path:
            allow_code_path(m.estimator.code_path, f"model '{m.name}'")
    return list(dict.fromkeys([settings.model_name, *(m.name for m in enabled)]))


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
    shadow: Shadow | None = None  # a second version scored beside the champion, off the request path
    shadow_error: str | None = None  # why the start-up could not load the registry's `shadow` version

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
        shadow = {} if self.kind == chat.KIND else {"shadow": self.shadow_summary()}
        if self.served is None:
            why = "no champion yet" if self.no_champion else "not loaded"
            return {"status": f"{why}: {self.load_error or 'start-up in progress'}", "kind": self.kind, **shadow}
        info = self.served.info()
        keys = (("model_version", "alias", "loaded_at", "provider_model", "response_format", "variables")
                if self.kind == chat.KIND else
                ("model_version", "run_id", "alias", "loaded_at", "contract_fingerprint", "scorer"))
        return {"status": "loaded", "kind": self.kind, **{k: info[k] for k in keys}, **shadow}

    def shadow_summary(self) -> dict[str, Any] | None:
        """The shadow's version and counters, why the start-up could not load one, or None."""
        shadow = self.shadow
        if shadow is not None:
            return shadow.summary()
        return {"error": self.shadow_error} if self.shadow_error else None

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
    backend: chat.ChatBackend = field(default_factory=chat.ChatBackend)  # the chat route's provider client and pool
    slots: dict[str, ModelSlot] = field(init=False)
    capture: Capture | None = None  # set while the app runs (lifespan), when capture is enabled
    shadow_config: CaptureConfig | None = None  # where shadows write their predictions (None: capture is off)
    retired: dict[tuple[str, str], dict[str, int]] = field(default_factory=dict)  # removed shadows' final counts
    chat_capture: ChatCapture | None = None  # ... and the chat requests' records
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

    def shadow_stats(self) -> Iterator[tuple[str, str, dict[str, int], bool]]:
        """(model, version, counters, loaded) of every shadow loaded now or earlier in this process: /metrics'
        nightshift_shadow_* series (a version's counters go on from where they were if it is loaded again)."""
        live = {(name, slot.shadow.version): slot.shadow for name, slot in list(self.slots.items())
                if slot.shadow is not None}
        for key in {**self.retired, **live}:
            counts = dict(self.retired.get(key, {}))
            if key in live:
                for k, v in live[key].counts().items():
                    counts[k] = v if k == "queue_rows" else counts.get(k, 0) + v
            yield key[0], key[1], counts, key in live

    def capture_stats(self) -> dict[str, dict[str, int]]:
        """The capture writers' counters per served name: scored rows of models, chat records of prompts (none
        before start-up or when capture is off)."""
        stats = self.capture.stats() if self.capture is not None else {}
        if self.chat_capture is not None:
            stats.update(self.chat_capture.stats())  # prompt names are never model names (check_prompt_names)
        return stats

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
                    return
                if slot.kind != chat.KIND:
                    await self._start_shadow(slot)

        await asyncio.gather(*(load_one(slot) for slot in self.slots.values()))

    async def _start_shadow(self, slot: ModelSlot) -> None:
        """At start-up: the version the registry's `shadow` alias names, loaded beside the champion with the same
        checks as POST /models/{name}/shadow; any failure (the registry's included) is shown in /models, never
        keeps the champion from serving."""
        from tasks.registry.versions import SHADOW, get_alias

        champion = slot.served
        try:
            version = await asyncio.to_thread(get_alias, self.cfg, slot.name, SHADOW)
            if version is None or not isinstance(champion, Served) or version == champion.version:
                return
            if self.shadow_config is None:
                raise ScoringError(409, _NO_CAPTURE)
            candidate = await asyncio.to_thread(load_shadow, self.cfg, champion, version,
                                                self.settings.server_latency_budget_ms)
            slot.shadow = await asyncio.to_thread(Shadow, candidate, self.shadow_config,
                                                  self.settings.server_shadow_queue_rows)
        except Exception as exc:
            slot.shadow_error = f"the registry's '{SHADOW}' alias could not be served: {exc}"

    async def set_shadow(self, name: str, version: str) -> JSONResponse:
        """Load registry version `version` of model `name` as its shadow, checked like a reload and against the
        live champion; any shadow already loaded is replaced only once the new one passed (else it stays)."""
        slot = self.slot(name)
        if slot.kind == chat.KIND:
            raise ScoringError(400, f"'{name}' is a prompt: only a scikit-learn model can have a shadow")
        async with slot.reload_lock:
            champion = slot.served
            if not isinstance(champion, Served):
                raise ScoringError(409, f"model '{name}' has no champion loaded: a shadow is scored beside one "
                                        f"({slot.load_error or 'start-up in progress'})")
            if str(version) == champion.version:
                raise ScoringError(409, f"v{version} is the champion of '{name}': a shadow is another version")
            if self.shadow_config is None:
                raise ScoringError(409, _NO_CAPTURE)
            try:
                candidate = await asyncio.to_thread(load_shadow, self.cfg, champion, str(version),
                                                    self.settings.server_latency_budget_ms)
            except ScoringError:
                raise
            except Exception as exc:  # the registry or the model's loading failed: as a reload, 422 naming it
                raise ScoringError(422, f"v{version} of '{name}' could not be loaded as its shadow: {exc}") from None
            new = await asyncio.to_thread(Shadow, candidate, self.shadow_config, self.settings.server_shadow_queue_rows)
            old, slot.shadow = slot.shadow, new
            slot.shadow_error = None
        if old is not None:
            await self._retire(name, old)
        return JSONResponse({"status": "shadowing", "model_version": champion.version,
                             "shadow_version": candidate.version, "replaced": old.version if old else None})

    async def remove_shadow(self, name: str) -> JSONResponse:
        """Stop and drop model `name`'s shadow (its queue discarded); `{"status": "none"}` when it had none."""
        slot = self.slot(name)
        async with slot.reload_lock:
            old, slot.shadow, slot.shadow_error = slot.shadow, None, None
        if old is None:
            return JSONResponse({"status": "none"})
        await self._retire(name, old)
        return JSONResponse({"status": "removed", "shadow_version": old.version})

    async def _retire(self, name: str, shadow: Shadow, drain: bool = False) -> None:
        """Stop a shadow taken off its slot, keeping its final counters for /metrics."""
        await asyncio.to_thread(shadow.close, drain)
        counts = self.retired.setdefault((name, shadow.version), {})
        for key, value in shadow.counts().items():
            counts[key] = value if key == "queue_rows" else counts.get(key, 0) + value

    async def close_shadows(self) -> None:
        """Shutdown: every shadow finishes its queue (then the shadow capture can write it) and stops."""
        for name, slot in list(self.slots.items()):
            shadow, slot.shadow = slot.shadow, None
            if shadow is not None:
                await self._retire(name, shadow, drain=True)

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
        self.count_reload(slot.name, body["status"])
        return JSONResponse(body, status_code=status)

    def count_reload(self, name: str, outcome: str) -> None:
        """Count one reload's outcome in /metrics (swapped, unloaded, kept, refused)."""
        if self.metrics is not None:
            self.metrics.reload(name, outcome)

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
                await self._drop_stale_shadow(slot)
                return {"status": "unloaded", "from_version": old.version, "to_version": None, "reason": str(exc)}, 200
            except Exception as exc:  # the old model keeps serving whatever went wrong
                status = exc.status if isinstance(exc, (ScoringError, chat.ChatError)) else 422
                return {"status": "kept", "model_version": old.version if old else None, "reason": str(exc)}, status
            slot.served = candidate  # one reference assignment: requests see old or new, never half
            slot.load_error, slot.no_champion = None, False
            app.openapi_schema = None  # /predict's schema follows the new contract
            await self._drop_stale_shadow(slot)
        return {"status": "swapped", "from_version": old.version if old else None, "to_version": candidate.version,
                "schema_changes": changes}, 200

    async def _drop_stale_shadow(self, slot: ModelSlot) -> None:
        """After a reload (under the slot's lock): the shadow goes when it is the champion now, when there is no
        champion to compare it with, or when the new champion reads other rows than it does."""
        shadow, champion = slot.shadow, slot.served
        if shadow is None:
            return
        if isinstance(champion, Served) and champion.version != shadow.version and \
                not schema_differences(champion, shadow.served):
            return
        slot.shadow = None
        await self._retire(slot.name, shadow)

    def listing(self) -> dict[str, dict[str, Any]]:
        """Every served model's summary, the default first."""
        return {name: slot.summary() for name, slot in self.slots.items()}


_NO_CAPTURE = "a shadow is judged on captured rows; NIGHTSHIFT_CAPTURE_ENABLED is off"


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
