"""Calling a hosted chat model through the official `openai` client: a prompt + model config, its price, one call
per eval item (never raising for a provider error), bounded concurrency and the run's token/cost/latency stats.

Retries are the SDK's own (`max_retries`): 408/409/429/5xx, timeouts and connection errors, with exponential
backoff, honouring `retry-after-ms`/`Retry-After` up to 120 s. A Retry-After beyond 120 s makes the SDK give up at
once; the item then fails with a message naming the model, the status and the Retry-After (we do not wait longer:
an eval run that sleeps for minutes per item is worse than a failed item the gate counts).
The API key is read from OPENAI_API_KEY only in `make_client` and lives only inside the client object.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from tasks.llm.config import LLMConfig, LLMConfigError, PriceTable, ProviderSettings


pass


if TYPE_CHECKING:
    import openai


# The SDK honours a Retry-After up to this many seconds and does not retry beyond it (openai 3.x _base_client).
SDK_MAX_RETRY_AFTER_SECONDS = 120.0
ERROR_DETAIL_CHARS = 300
Progress = Callable[[int, int, "CallResult"], None]


def make_client(settings: ProviderSettings) -> openai.OpenAI:
    """A sync client sharable across threads; LLMConfigError at once when OPENAI_API_KEY is unset."""
    key = os.environ.get("OPENAI_API_KEY", "").strip()
    if not key:
        raise LLMConfigError(f"OPENAI_API_KEY is not set: export it (e.g. from a Prefect Secret block) before "
                             f"calling {settings.base_url}; nothing was sent")
    import openai

    return openai.OpenAI(api_key=key, base_url=settings.base_url, timeout=settings.timeout_seconds,
                         max_retries=settings.max_retries)


class CallResult(BaseModel):
    """One item's call: the answer or why there is none, and what it cost."""

    item_id: str
    model: str
    text: str | None = None
    error: str | None = Field(None, description="None on success; else names the model and the HTTP status.")
    status_code: int | None = Field(None, description="The last HTTP status; None when no reply came.")
    finish_reason: str | None = None
    request_id: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_ms: float = Field(0.0, description="Wall time of the call, retries and their waits included.")
    retries: int = Field(0, description="Retries the SDK took.")
    cost_usd: float = 0.0

    @property
    def ok(self) -> bool:
        """An answer came back."""
        return self.error is None


class CallStats(BaseModel):
    """A run's totals: what the gate's budgets compare."""

    n: int
    errors: int
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    cost_usd: float
    cost_per_1k_items: float
    latency_p50_ms: float = Field(description="Over every call, failed ones included (a timeout is slow).")
    latency_p95_ms: float
    retries: int

    @property
    def error_rate(self) -> float:
        """Share of calls that failed."""
        return self.errors / self.n if self.n else 0.0


def _timeout_seconds(client: openai.OpenAI) -> float | None:
    """The client's per-attempt read timeout in seconds."""
    timeout = client.timeout
    if isinstance(timeout, (int, float)):
        return float(timeout)
    return getattr(timeout, "read", None)


def _retry_count(request: Any) -> int:
    """Retries taken before the failing attempt, from the SDK's x-stainless-retry-count request header."""
    try:
        return int(request.headers.get("x-stainless-retry-count", 0))
    except (AttributeError, TypeError, ValueError, RuntimeError):
        return 0


def _retry_after(headers: Any) -> float | None:
    """The reply's retry-after-ms / Retry-After in seconds, if numeric."""
    for name, divisor in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is not None:
            try:
                return float(value) / divisor
            except ValueError:
                continue
    return None


def _detail(text: str, secret: str) -> str:
    """A provider message fit to store: one line, short, the key (if echoed back) redacted."""
    if secret:
        text = text.replace(secret, "[redacted]")
    text = " ".join(text.split())
    return text if len(text) <= ERROR_DETAIL_CHARS else text[:ERROR_DETAIL_CHARS] + "…"


def _after(retries: int) -> str:
    """" after N retries", or nothing for none."""
    return f" after {retries} retr{'y' if retries == 1 else 'ies'}" if retries else ""


def _status_error(model: str, err: openai.APIStatusError, secret: str) -> tuple[str, int]:
    """The message for an HTTP error reply, and the retries taken."""
    retries = _retry_count(err.response.request)
    after = _retry_after(err.response.headers)
    where = f"{model}: HTTP {err.status_code}{_after(retries)}"
    if after is not None and after > SDK_MAX_RETRY_AFTER_SECONDS:
        where += (f" (Retry-After {after:g} s exceeds the {SDK_MAX_RETRY_AFTER_SECONDS:g} s the client waits: "
                  f"not retried)")
    body = err.body
    message = body["message"] if isinstance(body, dict) and isinstance(body.get("message"), str) else str(err)
    return f"{where}: {_detail(message, secret)}", retries


def complete(client: openai.OpenAI, config: LLMConfig, variables: Mapping[str, Any], item_id: str,
             prices: PriceTable) -> CallResult:
    """One chat completion for one item; a provider failure is a failed CallResult, never an exception."""
    import openai
    from openai.types.chat import ChatCompletion

    prices.price(config.model)  # an unpriced model fails before anything is spent
    messages = config.render(variables)
    model, secret = config.model, client.api_key or ""
    result: dict[str, Any] = {"item_id": str(item_id), "model": model}
    started = time.perf_counter()
    try:
        raw = client.chat.completions.with_raw_response.create(messages=messages, **config.request_kwargs())
        result.update(status_code=raw.status_code, retries=raw.retries_taken,
                      request_id=raw.headers.get("x-request-id"))
        try:
            completion = raw.parse()
        except ValueError as err:  # json.JSONDecodeError: a 200 whose JSON body is broken
            result["error"] = f"{model}: malformed JSON reply (HTTP {raw.status_code}): {_detail(str(err), secret)}"
            completion = None
        if completion is not None and not (isinstance(completion, ChatCompletion) and completion.choices):
            kind = raw.headers.get("content-type", "unknown content type")
            result["error"] = f"{model}: reply is not a chat completion (HTTP {raw.status_code}, {kind})"
        elif completion is not None:
            choice = completion.choices[0]
            usage = completion.usage
            prompt_tokens = (usage.prompt_tokens or 0) if usage else 0
            completion_tokens = (usage.completion_tokens or 0) if usage else 0
            result.update(text=choice.message.content if choice.message else None,
                          finish_reason=choice.finish_reason, prompt_tokens=prompt_tokens,
                          completion_tokens=completion_tokens)
    except openai.APITimeoutError as err:
        retries = _retry_count(err.request)
        after = f" ({_after(retries).strip()})" if retries else ""
        result.update(retries=retries, error=f"{model}: timed out after {_timeout_seconds(client)} s{after}")
    except openai.APIConnectionError as err:
        retries = _retry_count(err.request)
        cause = type(err.__cause__).__name__ if err.__cause__ else "no reply"
        result.update(retries=retries, error=f"{model}: connection failed{_after(retries)} ({cause}): "
                                             f"{_detail(str(err), secret)}")
    except openai.APIStatusError as err:
        message, retries = _status_error(model, err, secret)
        result.update(status_code=err.status_code, retries=retries, error=message, request_id=err.request_id)
    except openai.APIError as err:  # e.g. a response-validation error
        result["error"] = f"{model}: {type(err).__name__}: {_detail(str(err), secret)}"
    result["latency_ms"] = (time.perf_counter() - started) * 1000
    result["cost_usd"] = prices.cost(model, result.get("prompt_tokens", 0), result.get("completion_tokens", 0))
    return CallResult(**result)


def item_id(item: Mapping[str, Any], index: int) -> str:
    """An item's "id" field, else its position."""
    return str(item["id"]) if item.get("id") is not None else str(index)


def run_items(client: openai.OpenAI, config: LLMConfig, items: list[dict[str, Any]], prices: PriceTable,
              concurrency: int, progress: Progress | None = None) -> list[CallResult]:
    """Every item through `complete` with at most `concurrency` calls in flight; results in item order.

    Each item is a dict of the template's variables (other keys, e.g. "id" and "expected", are ignored by the
    prompt). Config problems (price, missing variables) are raised before the first call. `progress(done, total,
    result)` is called in the caller's thread as each call finishes.
    """
    if concurrency < 1:
        raise LLMConfigError(f"concurrency must be at least 1, got {concurrency}")
    prices.price(config.model)
    for index, item in enumerate(items):
        try:
            config.render(item)
        except LLMConfigError as err:
            raise LLMConfigError(f"item {item_id(item, index)!r}: {err}") from None
    results: list[CallResult | None] = [None] * len(items)
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="llm") as pool:
        futures = {pool.submit(complete, client, config, item, item_id(item, i), prices): i
                   for i, item in enumerate(items)}
        for done, future in enumerate(as_completed(futures), start=1):
            result = future.result()
            results[futures[future]] = result
            if progress is not None:
                progress(done, len(items), result)
    return [r for r in results if r is not None]


def _percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default), q in [0, 100]."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summarize(results: list[CallResult]) -> CallStats:
    """Totals, cost per 1k items and latency p50/p95 over a run's results."""
    n = len(results)
    prompt = sum(r.prompt_tokens for r in results)
    completion = sum(r.completion_tokens for r in results)
    cost = sum(r.cost_usd for r in results)
    latencies = [r.latency_ms for r in results]
    return CallStats(n=n, errors=sum(not r.ok for r in results), prompt_tokens=prompt, completion_tokens=completion,
                     total_tokens=prompt + completion, cost_usd=cost, cost_per_1k_items=cost / n * 1000 if n else 0.0,
                     latency_p50_ms=_percentile(latencies, 50), latency_p95_ms=_percentile(latencies, 95),
                     retries=sum(r.retries for r in results))
