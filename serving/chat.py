"""Serving a prompt champion: the served prompt (version, LLMConfig, variables), its load from the registry alias
`champion`, the reload checks, and the chat call forwarded to the provider with the champion's configuration.

The call goes through the project's own client code (`tasks.llm.make_client` + `complete`), not `openai.AsyncOpenAI`:
`complete` is the one place that turns the SDK's replies and failures into results naming the model and the HTTP
status with the key redacted, counts the SDK's retries (408/409/429/5xx with backoff honouring Retry-After, a
timeout per attempt) and prices the call, exactly as the evaluation measured the version; an async copy would
duplicate it and could drift from it. The blocking calls run in this module's own thread pool of
`ProviderSettings.concurrency` threads: at most that many provider calls are in flight, at most `queue` more wait
for a thread (the wait is reported as `queued_ms`); beyond that a request is refused at once with 503 and a
Retry-After (QueueFull) rather than piling up. The server's `asyncio.to_thread` work (model loads, reloads, registry
reads) never waits behind a slow provider.
"""

from __future__ import annotations

import asyncio
import json
import math
import statistics
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from nightshift.errors import ConfigError, NightshiftError

if TYPE_CHECKING:  # tasks.* import Prefect, which creates its home dir on import: load them only when serving
    import openai

    from nightshift.settings import Settings
    from tasks.llm.config import LLMConfig, PriceTable, ProviderSettings
    from tasks.llm.provider import CallResult
    from tasks.registry.store import TrackingConfig

KIND = "prompt"
_RECENT_CALLS = 32  # provider call durations kept for the Retry-After estimate


class ChatError(NightshiftError):
    """A chat request or a prompt reload that cannot be answered; carries the HTTP status and what the reply adds."""

    # What the provider call took, when one was made (a failed call's record in the chat capture).
    latency_ms: float | None = None
    queued_ms: float | None = None
    retries: int | None = None

    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.extra = extra


class QueueFull(ChatError):
    """Every provider slot busy and the wait queue full: a 503 whose Retry-After says when to come back."""

    def __init__(self, message: str, retry_after: int, **extra: Any) -> None:
        super().__init__(503, message, **extra)
        self.retry_after = retry_after


class NoPromptChampion(ChatError):
    """The prompt has no champion alias (or is not registered yet): nothing to serve until one is promoted."""


@dataclass(frozen=True)
class ServedPrompt:
    """One loaded prompt champion: the registered version and the LLMConfig it forwards to the provider."""

    name: str
    version: str
    alias: str
    config: LLMConfig
    loaded_at: str

    @property
    def variables(self) -> list[str]:
        """The `{{ name }}` placeholders of its system prompt and template: what a chat request must send."""
        return self.config.variables

    def info(self) -> dict[str, Any]:
        """What /models/{name}/version reports (the prompt's text stays in the registry)."""
        c = self.config
        return {"model_name": self.name, "kind": KIND, "model_version": self.version, "alias": self.alias,
                "loaded_at": self.loaded_at, "provider_model": c.model, "temperature": c.temperature,
                "max_tokens": c.max_tokens, "response_format": c.response_format, "variables": self.variables}


def load_prompt(cfg: TrackingConfig, name: str, alias: str | None = None) -> ServedPrompt:
    """The prompt version behind `alias` (default champion), read from the registry and loaded by number (content
    hash checked); NoPromptChampion when there is none, ChatError when the name is a registered model."""
    from tasks.llm.evaluation import live_config
    from tasks.registry.versions import CHAMPION, get_alias, is_prompt, list_versions

    alias = alias or CHAMPION
    if not is_prompt(cfg, name):
        if list_versions(cfg, name):
            raise ChatError(422, f"'{name}' is a registered model, not a prompt: serve it through the model "
                                 f"catalogue, not NIGHTSHIFT_SERVER_PROMPTS")
        raise NoPromptChampion(503, f"prompt '{name}' has no '{alias}' alias yet (it is not registered): nothing to "
                                    f"serve")
    version = get_alias(cfg, name, alias)
    if version is None:
        raise NoPromptChampion(503, f"prompt '{name}' has no '{alias}' alias yet: nothing to serve")
    return ServedPrompt(name=name, version=version, alias=alias, config=live_config(cfg, name, version),
                        loaded_at=datetime.now(timezone.utc).isoformat())


def check_schema(live: ServedPrompt | None, candidate: ServedPrompt, allow_change: bool) -> list[str]:
    """The candidate's interface changes vs the live prompt; a 422 unless the caller allows a change."""
    if live is None:  # nothing served yet: no caller to break
        return []
    from tasks.llm.evaluation import interface_changes

    changes = interface_changes(live.config, candidate.config)
    if changes and not allow_change:
        raise ChatError(422, f"prompt interface differs from the live v{live.version}: {'; '.join(changes)}; "
                             "pass allow_schema_change=true to swap anyway")
    return changes


def smoke_test(candidate: ServedPrompt) -> None:
    """Render the candidate's messages with a dummy value per variable, and its request arguments; no provider call."""
    try:
        messages = candidate.config.render({name: f"<{name}>" for name in candidate.variables})
        candidate.config.request_kwargs()
    except Exception as exc:  # a config the client could not send: keep the old one
        raise ChatError(422, f"smoke test: prompt v{candidate.version} does not render: {exc}") from None
    if not messages or not messages[-1]["content"].strip():
        raise ChatError(422, f"smoke test: prompt v{candidate.version} renders an empty user message")


class ChatRequest(BaseModel):
    """A chat request: a value for each of the prompt's `{{ name }}` placeholders."""

    model_config = ConfigDict(extra="forbid")

    variables: dict[str, Any] = Field(default_factory=dict, description=(
        "One value per template variable of the served prompt (see its `<name>.ChatRequest` schema or GET "
        "/models/{name}/version); strings are inserted as they are, other JSON values as JSON. Missing or "
        "unknown variables get 400."))


def parse_request(payload: Any, served: ServedPrompt) -> dict[str, Any]:
    """The request's variables, exactly the prompt's: 400 naming any missing or unknown one."""
    try:
        variables = ChatRequest.model_validate(payload).variables
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise ChatError(400, f"{where}: {first['msg']}; send {{\"variables\": {{...}}}}") from None
    expected = served.variables
    missing = [v for v in expected if v not in variables]
    unknown = [v for v in variables if v not in expected]
    if missing or unknown:
        problems = ([f"missing variable(s) {', '.join(map(repr, missing))}"] if missing else []) + (
            [f"unknown variable(s) {', '.join(map(repr, unknown[:10]))}"] if unknown else [])
        raise ChatError(400, f"{'; '.join(problems)} for prompt '{served.name}' v{served.version} "
                             f"(it takes: {', '.join(map(repr, expected)) or 'no variables'})")
    # JSON allows a lone surrogate escape ("\ud800"); UTF-8, and so the provider request, does not.
    broken = [name for name, value in variables.items() if not _utf8(value)]
    if broken:
        raise ChatError(400, f"variable(s) {', '.join(map(repr, broken))} are not valid Unicode text (a lone "
                             "\\ud800-\\udfff escape)")
    return variables


def _utf8(value: Any) -> bool:
    """Whether a variable's value can be sent as UTF-8."""
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def request_id(header: str | None) -> str:
    """The caller's X-Request-Id when usable, else a new one: the server's one rule (serving.capture's, whose sampling
    hashes it)."""
    from serving.capture import request_id as server_request_id

    return server_request_id(header)


class Usage(BaseModel):
    """Tokens the provider counted for the call."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatResponse(BaseModel):
    """The champion's answer and what it took."""

    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)

    request_id: str = Field(description="The caller's X-Request-Id, else a generated one (also sent as a header).")
    prompt: str = Field(description="The served prompt's registered name.")
    prompt_version: str = Field(description="The prompt version that answered (the champion when it was loaded).")
    model: str = Field(description="The provider model the champion's config names.")
    text: str | None = Field(description="The reply's text (None when the provider sent no content).")
    parsed: Any = Field(None, alias="json", description="The reply parsed as JSON when the config asks for "
                                                        "json_object, else null.")
    json_error: str | None = Field(None, description="Why the reply is not JSON although json_object was asked "
                                                     "for; else null.")
    finish_reason: str | None = None
    usage: Usage
    latency_ms: float = Field(description="The provider call, its retries and their waits included.")
    queued_ms: float = Field(description="Time waiting for a free provider slot (the server's concurrency bound).")
    retries: int = Field(description="Retries the client took (429/5xx/timeouts).")
    cost_usd: float | None = Field(description="From the server's price table; null for a model it does not price.")
    provider_request_id: str | None = Field(None, description="The provider's x-request-id, for support tickets.")


class ChatErrorBody(BaseModel):
    """A chat request that got no answer: why, and (for provider failures) which model and HTTP status."""

    error_code: str = Field(description="INVALID_PARAMETER_VALUE (4xx), UNAVAILABLE (503), QUEUE_FULL (503 with "
                                        "Retry-After), PROVIDER_ERROR (502), PROVIDER_TIMEOUT (504).")
    message: str
    request_id: str
    model: str | None = Field(None, description="The provider model (provider failures).")
    provider_status: int | None = Field(None, description="The provider's last HTTP status; null when none came.")
    prompt_version: str | None = None


def error_code(status: int, exc: Exception | None = None) -> str:
    """The error_code of a chat failure with this HTTP status (QUEUE_FULL for a refused request)."""
    if isinstance(exc, QueueFull):
        return "QUEUE_FULL"
    return {502: "PROVIDER_ERROR", 503: "UNAVAILABLE", 504: "PROVIDER_TIMEOUT"}.get(
        status, "INVALID_PARAMETER_VALUE" if status < 500 else "INTERNAL_ERROR")


def _unpriced_ok(prices: PriceTable, model: str) -> tuple[PriceTable, bool]:
    """The table to call `complete` with (it refuses an unpriced model) and whether `model` is really priced."""
    from tasks.llm.config import Price, PriceTable

    if model in prices.prices or "*" in prices.prices:
        return prices, True
    return PriceTable(prices={**prices.prices, "*": Price(input_per_1m=0, output_per_1m=0)}), False


def _failure(served: ServedPrompt, result: CallResult) -> ChatError:
    """A failed call as a 504 (the provider did not answer in time) or a 502 naming the model and status."""
    # tasks.llm.complete reports an SDK timeout (after its retries) as "<model>: timed out after <t> s".
    timed_out = result.status_code is None and (result.error or "").startswith(f"{result.model}: timed out")
    status = 504 if timed_out else 502
    what = "did not answer in time" if timed_out else "failed"
    error = ChatError(status, f"provider call for prompt '{served.name}' v{served.version} {what}: {result.error}",
                      model=result.model, provider_status=result.status_code, prompt_version=served.version)
    error.latency_ms, error.retries = round(result.latency_ms, 1), result.retries
    return error


def provider_from_settings(settings: Settings) -> ProviderSettings:
    """The NIGHTSHIFT_SERVER_PROVIDER_* endpoint, timeout, retries and concurrency (base URL: OPENAI_BASE_URL, else
    the SDK's, when unset); ConfigError naming the setting when the provider refuses a value."""
    from tasks.llm.config import ProviderSettings

    given = {"timeout_seconds": settings.server_provider_timeout_s, "max_retries": settings.server_provider_max_retries,
             "concurrency": settings.server_provider_concurrency}
    if settings.server_provider_base_url:
        given["base_url"] = settings.server_provider_base_url
    try:
        return ProviderSettings(**given)
    except ValidationError as exc:
        first = exc.errors()[0]
        setting = {"base_url": "BASE_URL", "timeout_seconds": "TIMEOUT_S", "max_retries": "MAX_RETRIES",
                   "concurrency": "CONCURRENCY"}.get(str(first["loc"][0]), str(first["loc"][0]).upper())
        raise ConfigError(f"NIGHTSHIFT_SERVER_PROVIDER_{setting}: {first['msg']}") from None


def prices_from_settings(settings: Settings) -> PriceTable:
    """NIGHTSHIFT_SERVER_PROVIDER_PRICES as the price table, else tasks.llm.config.DEFAULT_PRICES."""
    from tasks.llm.config import DEFAULT_PRICES, PriceTable

    if settings.server_provider_prices is None:
        return DEFAULT_PRICES
    try:
        return PriceTable(prices=settings.server_provider_prices)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise ConfigError(f"NIGHTSHIFT_SERVER_PROVIDER_PRICES: {exc.errors()[0]['msg']}") from None


class ChatBackend:
    """The provider client (made on first use: a missing OPENAI_API_KEY is a 503 at request time, never at start-up),
    the thread pool every chat call runs in, and the bound on calls waiting for it."""

    def __init__(self, provider: ProviderSettings | None = None, prices: PriceTable | None = None,
                 queue: int | None = None) -> None:
        from nightshift.settings import Settings
        from tasks.llm.config import DEFAULT_PRICES, ProviderSettings

        self.provider = provider or ProviderSettings()
        self.prices = prices if prices is not None else DEFAULT_PRICES
        self.queue = Settings.model_fields["server_provider_queue"].default if queue is None else queue
        if self.queue < 0:
            raise ConfigError(f"the chat queue length must be 0 or more, not {self.queue}")
        self._client: openai.OpenAI | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self._admitted = 0  # calls in flight + waiting for a thread
        self._running = 0  # calls in flight
        self._recent: deque[float] = deque(maxlen=_RECENT_CALLS)  # seconds of the latest provider calls

    @classmethod
    def from_settings(cls, settings: Settings, provider: ProviderSettings | None = None,
                      prices: PriceTable | None = None, queue: int | None = None) -> ChatBackend:
        """The backend create_app makes: each argument given wins, else its NIGHTSHIFT_SERVER_PROVIDER_* setting."""
        return cls(provider or provider_from_settings(settings),
                   prices if prices is not None else prices_from_settings(settings),
                   settings.server_provider_queue if queue is None else queue)

    def load(self) -> tuple[int, int]:
        """(calls at the provider, calls waiting for a thread) right now: what /metrics reports."""
        with self._lock:
            return self._running, self._admitted - self._running

    def retry_after(self) -> int:
        """Seconds a refused caller should wait: about one provider call (the median of the latest ones, else the
        timeout), by when the calls in flight have ended and freed as many places; 1 at least, at most what one call
        may take with all its retries."""
        with self._lock:
            typical = statistics.median(self._recent) if self._recent else self.provider.timeout_seconds
        longest = self.provider.timeout_seconds * (self.provider.max_retries + 1)
        return max(1, math.ceil(min(typical, longest)))

    def _admit(self, served: ServedPrompt) -> None:
        """Count one more call in, or QueueFull when `concurrency` are in flight and `queue` more are waiting."""
        limit = self.provider.concurrency + self.queue
        with self._lock:
            if self._admitted < limit:
                self._admitted += 1
                return
        seconds = self.retry_after()
        raise QueueFull(f"chat request for prompt '{served.name}' refused: the server's {self.provider.concurrency} "
                        f"provider call(s) are all in flight and its queue of {self.queue} is full "
                        f"(NIGHTSHIFT_SERVER_PROVIDER_CONCURRENCY, NIGHTSHIFT_SERVER_PROVIDER_QUEUE); retry after "
                        f"{seconds} s", retry_after=seconds, prompt_version=served.version)

    def _release(self, _done: Future[Any] | None = None) -> None:
        with self._lock:
            self._admitted -= 1

    def client(self) -> openai.OpenAI:
        """The shared client; ChatError 503 naming OPENAI_API_KEY when the server's environment has none."""
        from tasks.llm.config import LLMConfigError
        from tasks.llm.provider import make_client

        with self._lock:
            if self._client is None:
                try:
                    self._client = make_client(self.provider)
                except LLMConfigError as exc:
                    raise ChatError(503, f"the model server cannot call the provider: {exc}") from None
            return self._client

    def _executor(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=self.provider.concurrency, thread_name_prefix="chat")
            return self._pool

    def _call(self, served: ServedPrompt, variables: dict[str, Any], rid: str,
              submitted: float) -> tuple[CallResult, bool, float]:
        """In a pool thread: the provider call, whether its model is priced, and how long it waited for the thread."""
        from tasks.llm.provider import complete

        queued_ms = (time.perf_counter() - submitted) * 1000
        prices, priced = _unpriced_ok(self.prices, served.config.model)
        with self._lock:
            self._running += 1
        try:
            result = complete(self.client(), served.config, variables, rid, prices)
        except ChatError as exc:  # no API key: no call made
            exc.queued_ms = round(queued_ms, 1)
            raise
        finally:
            with self._lock:
                self._running -= 1
        with self._lock:
            self._recent.append(result.latency_ms / 1000)
        return result, priced, queued_ms

    async def answer(self, served: ServedPrompt, variables: dict[str, Any], rid: str) -> ChatResponse:
        """The champion's reply to these variables; ChatError 502/504 for a provider failure, 503 without a key,
        QueueFull (503) when every slot is busy and the queue is full."""
        self._admit(served)
        try:
            future = self._executor().submit(self._call, served, variables, rid, time.perf_counter())
        except BaseException:  # the pool is shut down (server stopping)
            self._release()
            raise
        future.add_done_callback(self._release)  # run, failed or cancelled: its place is free again
        result, priced, queued_ms = await asyncio.wrap_future(future)
        if not result.ok:
            error = _failure(served, result)
            error.queued_ms = round(queued_ms, 1)
            raise error
        parsed, json_error = None, None
        if served.config.response_format == "json_object" and result.text is not None:
            try:
                parsed = json.loads(result.text)
            except ValueError as exc:
                json_error = f"the reply is not JSON although json_object was asked for: {exc}"
        usage = Usage(prompt_tokens=result.prompt_tokens, completion_tokens=result.completion_tokens,
                      total_tokens=result.prompt_tokens + result.completion_tokens)
        return ChatResponse(request_id=rid, prompt=served.name, prompt_version=served.version, model=result.model,
                            text=result.text, parsed=parsed, json_error=json_error,
                            finish_reason=result.finish_reason, usage=usage, latency_ms=round(result.latency_ms, 1),
                            queued_ms=round(queued_ms, 1), retries=result.retries,
                            cost_usd=result.cost_usd if priced else None, provider_request_id=result.request_id)

    def close(self) -> None:
        """Stop the pool: queued calls are dropped, running ones finish on their own."""
        with self._lock:
            pool, self._pool = self._pool, None
            client, self._client = self._client, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
        if client is not None:
            client.close()


def request_schema(served: ServedPrompt) -> dict[str, Any]:
    """The JSON schema of a chat body for this prompt: exactly its variables."""
    return {"title": f"{served.name}.ChatRequest", "type": "object", "required": ["variables"],
            "additionalProperties": False,
            "properties": {"variables": {"type": "object", "required": served.variables, "additionalProperties": False,
                                         "properties": {v: {"description": f"the prompt's {{{{ {v} }}}}"}
                                                        for v in served.variables}}}}
