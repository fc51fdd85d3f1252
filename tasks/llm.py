"""Calling a hosted chat model through the official `openai` client: a prompt + model config, its price, one call
per eval item (never raising for a provider error), bounded concurrency and the run's token/cost/latency stats.

Retries are the SDK's own (`max_retries`): 408/409/429/5xx, timeouts and connection errors, with exponential
backoff, honouring `retry-after-ms`/`Retry-After` up to 120 s. A Retry-After beyond 120 s makes the SDK give up at
once; the item then fails with a message naming the model, the status and the Retry-After (we do not wait longer:
an eval run that sleeps for minutes per item is worse than a failed item the gate counts).
The API key is read from OPENAI_API_KEY only in `make_client` and lives only inside the client object.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any, Literal

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict, Field, field_validator

from nightshift.errors import NightshiftError, TrackingError
from nightshift.runlog import run_logger
from tasks import tracking

if TYPE_CHECKING:
    from pathlib import Path

    import openai

    from tasks.evaluate import GateDecision, LLMGateConfig, LLMMetric
    from tasks.promote import DeployOutcome
    from tasks.tracking import TrackingConfig

DEFAULT_BASE_URL = "https://api.openai.com/v1"
# `{{ name }}` as in MLflow's prompt registry; the inside is checked to be an identifier.
PLACEHOLDER = re.compile(r"\{\{\s*(.*?)\s*\}\}", re.DOTALL)
# The SDK honours a Retry-After up to this many seconds and does not retry beyond it (openai 3.x _base_client).
SDK_MAX_RETRY_AFTER_SECONDS = 120.0
ERROR_DETAIL_CHARS = 300

Progress = Callable[[int, int, "CallResult"], None]


class LLMError(NightshiftError):
    """A hosted-LLM call or its set-up cannot proceed."""


class LLMConfigError(LLMError, ValueError):
    """The LLM set-up is unusable as given: no API key, a bad template, a missing variable, an unpriced model."""


def placeholders(text: str) -> list[str]:
    """The `{{ name }}` placeholders of a template, in order of first use; LLMConfigError if one is not a name."""
    names: list[str] = []
    for match in PLACEHOLDER.finditer(text):
        name = match.group(1)
        if not name.isidentifier():
            raise LLMConfigError(f"template placeholder {match.group(0)!r} is not a variable name "
                                 f"(use letters, digits and _ as in {{{{ ticket_text }}}})")
        if name not in names:
            names.append(name)
    return names


def _fill(text: str, variables: Mapping[str, Any]) -> str:
    """`text` with every placeholder replaced by its variable (strings as they are, other values as JSON)."""
    def value(match: re.Match[str]) -> str:
        item = variables[match.group(1)]
        return item if isinstance(item, str) else json.dumps(item, ensure_ascii=False, default=str)

    return PLACEHOLDER.sub(value, text)


class LLMConfig(BaseModel):
    """A prompt plus its model configuration: the thing that is versioned, evaluated, gated and promoted."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str = Field(min_length=1, title="Provider model",
                       description="The provider's model name as the API expects it, e.g. gpt-4o-mini.")
    system: str = Field("", title="System prompt",
                        description="System message text; may use {{ variable }} placeholders. Empty = none sent.")
    template: str = Field(min_length=1, title="User message template",
                          description="User message with {{ variable }} placeholders (MLflow prompt-registry syntax), "
                                      "filled from each item.")
    temperature: float = Field(0.0, ge=0.0, le=2.0, title="Temperature",
                               description="Sampling temperature, 0-2; 0 for the most repeatable answers.")
    max_tokens: int = Field(256, ge=1, le=32_000, title="Max output tokens",
                            description="Longest answer in tokens (sent as max_completion_tokens).")
    response_format: Literal["text", "json_object"] = Field(
        "text", title="Response format",
        description="text, or json_object to ask the provider for a JSON object (the scorer still validates it).")

    @field_validator("system", "template")
    @classmethod
    def _names_only(cls, value: str) -> str:
        placeholders(value)
        return value

    @property
    def variables(self) -> list[str]:
        """Every variable the system prompt and template need."""
        return list(dict.fromkeys(placeholders(self.system) + placeholders(self.template)))

    def render(self, variables: Mapping[str, Any]) -> list[dict[str, str]]:
        """The chat messages for one item; LLMConfigError naming any variable the item lacks."""
        missing = [name for name in self.variables if name not in variables]
        if missing:
            has = ", ".join(sorted(map(str, variables))) or "nothing"
            raise LLMConfigError(f"template variable(s) {', '.join(map(repr, missing))} missing for model "
                                 f"{self.model!r} (the item has: {has})")
        messages = [{"role": "system", "content": _fill(self.system, variables)}] if self.system else []
        return messages + [{"role": "user", "content": _fill(self.template, variables)}]

    def request_kwargs(self) -> dict[str, Any]:
        """The `chat.completions.create` arguments besides the messages (text format is the default: not sent)."""
        kwargs: dict[str, Any] = {"model": self.model, "temperature": self.temperature,
                                  "max_completion_tokens": self.max_tokens}
        if self.response_format != "text":
            kwargs["response_format"] = {"type": self.response_format}
        return kwargs


class Price(BaseModel):
    """What one provider model costs, in USD per million tokens."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    input_per_1m: float = Field(ge=0, title="Input USD / 1M tokens", description="USD per million prompt tokens.")
    output_per_1m: float = Field(ge=0, title="Output USD / 1M tokens",
                                 description="USD per million completion tokens.")


class PriceTable(BaseModel):
    """Prices by provider model name; a "*" entry prices every model not listed."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    prices: dict[str, Price] = Field(default_factory=dict, title="Prices",
                                     description='USD per 1M input/output tokens by provider model; "*" = default.')

    def price(self, model: str) -> Price:
        """The model's price; LLMConfigError naming the model when the table has neither it nor "*"."""
        found = self.prices.get(model) or self.prices.get("*")
        if found is None:
            raise LLMConfigError(f"no price for model {model!r} in the price table (known: "
                                 f"{', '.join(sorted(self.prices)) or 'none'}); add it, or a '*' default, "
                                 f"so the gate can compare costs")
        return found

    def cost(self, model: str, prompt_tokens: int, completion_tokens: int) -> float:
        """USD for one call's tokens."""
        price = self.price(model)
        return (prompt_tokens * price.input_per_1m + completion_tokens * price.output_per_1m) / 1_000_000


def _default_base_url() -> str:
    """OPENAI_BASE_URL when set (any OpenAI-compatible endpoint), else the SDK's default."""
    return os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL


class ProviderSettings(BaseModel):
    """Where and how to call the provider; holds no credential (the key is read only when the client is made)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    base_url: str = Field(default_factory=_default_base_url, title="Base URL",
                          description="OpenAI-compatible API root (default: OPENAI_BASE_URL, else the SDK's).")
    timeout_seconds: float = Field(30.0, gt=0, le=600, title="Timeout (s)",
                                   description="Per attempt: a reply slower than this is abandoned (and retried).")
    max_retries: int = Field(2, ge=0, le=10, title="Max retries",
                             description="SDK retries on 408/409/429/5xx, timeouts and connection errors, with "
                                         "backoff honouring Retry-After up to 120 s.")
    concurrency: int = Field(4, ge=1, le=64, title="Concurrency", description="Calls in flight at once.")

    @field_validator("base_url")
    @classmethod
    def _no_credentials_in_url(cls, value: str) -> str:
        if "@" in value.split("//", 1)[-1].split("/", 1)[0] or "key=" in value.lower():
            raise ValueError("base_url must not carry credentials (the URL is logged); use OPENAI_API_KEY")
        return value


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


# --------------------------------------------------------------------------------------------
# Evaluating candidates on an evaluation set, and keeping them in the prompt registry (Prefect tasks below).
# --------------------------------------------------------------------------------------------
# The offline demo's stand-in models (serving/fake_openai.py). Real provider prices change: give yours in the
# flow's price table; an unpriced model fails before anything is sent.
DEFAULT_PRICES = PriceTable(prices={"fake-small": Price(input_per_1m=0.15, output_per_1m=0.60),
                                    "fake-large": Price(input_per_1m=2.50, output_per_1m=10.00),
                                    "fake-judge": Price(input_per_1m=0.10, output_per_1m=0.40)})
GATE_PROMPT_TAGS = ("nightshift.eval.exact_share", "nightshift.eval.cost_per_1k", "nightshift.eval.p95_ms")
DEFAULT_JUDGE_SYSTEM = ('You grade a reply to one evaluation item against the expected answer. Reply with JSON only: '
                        '{"score": <a number from 0 to 1>, "reason": "<one short sentence>"}. 1: the reply gives the '
                        'expected answer (the wording may differ); 0: wrong or missing; in between: partly right.')
DEFAULT_JUDGE_TEMPLATE = "Item: {{ input }}\n\nExpected answer: {{ expected }}\n\nReply to grade: {{ reply }}"
# The champion's results on an eval set, kept in MLflow: an eval run's JSON artifact, found from a tag on the version.
RESULTS_TAG = "nightshift.eval_results."  # + the key's first 16 hex digits -> the run id
RESULTS_ARTIFACT = "llm_eval/results.json"
RESULTS_FORMAT = 1  # bump when what is stored, or what it is keyed on, changes: old entries then miss
CacheState = Literal["hit", "miss", "off", "none"]


class JudgeConfig(BaseModel):
    """An LLM judge: a rubric prompt that sees the item, the expected answer and one reply and answers
    {"score": 0..1, "reason": "..."}. Called through the same client, retries, timeout, concurrency bound and price
    table as the candidates; only replies that passed the deterministic checks are sent to it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str = Field(min_length=1, title="Judge model", description="The provider model that grades the replies.")
    system: str = Field(DEFAULT_JUDGE_SYSTEM, title="Rubric (system prompt)",
                        description='How to grade; must ask for JSON {"score": 0..1, "reason": "..."}.')
    template: str = Field(DEFAULT_JUDGE_TEMPLATE, title="Judge message template",
                          description="User message: {{ reply }} (the candidate's reply), {{ expected }} (the "
                                      "expected answer), {{ input }} (the item's other fields as JSON) and any of "
                                      "the item's variables.")
    temperature: float = Field(0.0, ge=0.0, le=2.0, title="Temperature", description="0 for repeatable grades.")
    max_tokens: int = Field(200, ge=1, le=4000, title="Max output tokens", description="Longest verdict in tokens.")
    response_format: Literal["text", "json_object"] = Field(
        "json_object", title="Response format", description="json_object asks the provider for a JSON verdict.")

    @field_validator("template")
    @classmethod
    def _sees_the_reply(cls, value: str) -> str:
        if "reply" not in placeholders(value):
            raise ValueError("the judge template must show the reply to grade: add {{ reply }}")
        return value

    def llm_config(self) -> LLMConfig:
        """The judge as a prompt + model configuration, for `complete`."""
        return LLMConfig(**self.model_dump())

    @staticmethod
    def variables(item: Mapping[str, Any], reply: str) -> dict[str, Any]:
        """The judge's variables for one item and reply (input, expected and reply override item fields so named)."""
        other = {k: v for k, v in item.items() if k not in ("id", "expected")}
        return {**item, "input": json.dumps(other, ensure_ascii=False, sort_keys=True, default=str),
                "expected": item["expected"], "reply": reply}


@dataclass(frozen=True, eq=False)
class EvalSetup:
    """What every candidate is run and scored with: the items, the answer schema, prices, provider and judge.
    Checked when made, before anything is sent (an unpriced judge, a judge variable an item lacks)."""

    items: list[dict[str, Any]]
    schema: dict[str, Any] | None
    prices: PriceTable
    provider: ProviderSettings
    judge: JudgeConfig | None = None

    def __post_init__(self) -> None:
        if self.judge is not None:
            self.prices.price(self.judge.model)
            config = self.judge.llm_config()
            for index, item in enumerate(self.items):
                try:
                    config.render(self.judge.variables(item, ""))
                except LLMConfigError as err:
                    raise LLMConfigError(f"judge, item {item_id(item, index)!r}: {err}") from None

    @cached_property
    def fingerprint(self) -> str:
        """sha256 of the items (in id order, so a reordered file is the same set) and the answer schema."""
        items = sorted(self.items, key=lambda item: str(item["id"]))
        return _digest({"items": items, "schema": self.schema})


def _digest(value: Any) -> str:
    """sha256 of a value's canonical JSON."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


class Candidate(BaseModel):
    """One prompt + model configuration run on every item: the replies, their scores and what they cost."""

    config: LLMConfig
    results: list[CallResult]
    scores: list[Any] = Field(description="tasks.evaluate.ItemScore per item, in item order.")
    stats: CallStats = Field(description="The candidate's own calls: what serving it costs (the judge's apart).")
    judge_results: list[CallResult] = Field(default_factory=list,
                                            description="The judge's calls, one per reply sent to it.")
    judge_stats: CallStats | None = Field(None, description="The judge's tokens and cost; None without a judge.")
    cached: bool = Field(False, description="Results stored by an earlier run on the same items, judge and provider "
                                            "(champion cache): nothing was sent for them now.")

    @property
    def item_scores(self) -> list[float]:
        """The exact-match score per item (1 = the expected answer), in item order."""
        return [s.score for s in self.scores]

    def by_item(self, metric: LLMMetric) -> dict[str, float]:
        """The gate's per-item scores for `metric`, by item id (what the paired bootstrap pairs on)."""
        return {s.item_id: s.metric(metric) for s in self.scores}

    def share(self, metric: LLMMetric) -> float:
        """Mean per-item score for `metric`."""
        return sum(s.metric(metric) for s in self.scores) / len(self.scores) if self.scores else 0.0

    @property
    def exact_share(self) -> float:
        """Share of items answered exactly as expected."""
        return self.share("exact")

    def row(self) -> dict[str, str]:
        """One row of the evaluation table artifact (judge columns when a judge graded the replies)."""
        n = len(self.scores) or 1
        s = self.stats
        row = {"model": self.config.model, "temperature": str(self.config.temperature),
               "exact match": f"{self.exact_share:.3f}",
               "valid JSON": f"{sum(x.json_valid for x in self.scores) / n:.3f}",
               "refusals": str(sum(x.refusal for x in self.scores)), "errors": str(s.errors),
               "tokens": str(s.total_tokens), "USD per 1k items": f"{s.cost_per_1k_items:.4f}",
               "p50 ms": f"{s.latency_p50_ms:.0f}", "p95 ms": f"{s.latency_p95_ms:.0f}", "retries": str(s.retries)}
        if self.judge_stats is not None:
            row |= {"judge score": f"{self.share('judge'):.3f}",
                    "judge errors": str(sum(x.judge_error for x in self.scores)),
                    "judge USD": f"{self.judge_stats.cost_usd:.4f}"}
        return row | {"cached": "yes" if self.cached else "no"}


def load_eval_set(path: str | Path, schema_path: str | Path | None,
                  root: Path | None = None) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """The evaluation items (JSON lines, each with a unique "id" and an "expected" answer) and the answer schema,
    relative paths read from `root`; LLMConfigError naming the file and line of any problem."""
    from pathlib import Path

    path = Path(root or ".") / path
    schema_path = None if schema_path is None else Path(root or ".") / schema_path
    if not path.is_file():
        raise LLMConfigError(f"evaluation set {path} does not exist")
    items, seen = [], set()
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except ValueError as exc:
            raise LLMConfigError(f"{path}, line {number}: not JSON ({exc})") from None
        if not isinstance(item, dict) or "expected" not in item or "id" not in item:
            raise LLMConfigError(f"{path}, line {number}: an item needs an \"id\" and an \"expected\" answer")
        if str(item["id"]) in seen:
            raise LLMConfigError(f"{path}, line {number}: id {item['id']!r} appears twice")
        seen.add(str(item["id"]))
        items.append(item)
    if not items:
        raise LLMConfigError(f"evaluation set {path} has no items")
    schema = None
    if schema_path is not None:
        import jsonschema

        try:
            schema = json.loads(schema_path.read_text())
            jsonschema.Draft202012Validator.check_schema(schema)
        except (OSError, ValueError, jsonschema.SchemaError) as exc:
            raise LLMConfigError(f"answer schema {schema_path} is unusable: {str(exc).splitlines()[0]}") from None
    return items, schema


def _progress(what: str, total: int) -> Progress:
    """Logs a run's progress about every quarter, with the last error."""
    logger, step = run_logger(__name__), max(1, total // 4)

    def progress(done: int, total: int, result: CallResult) -> None:
        if done % step == 0 or done == total:
            logger.info("%s: %d/%d items%s", what, done, total, f" (last error: {result.error})"
                        if result.error else "")

    return progress


def evaluate_candidate(client: openai.OpenAI, config: LLMConfig, setup: EvalSetup) -> Candidate:
    """Every item through the candidate, each reply scored (schema, exact answer, refusal, then the judge on the
    replies that passed), the run's stats."""
    items, prices, concurrency = setup.items, setup.prices, setup.provider.concurrency
    results = run_items(client, config, items, prices, concurrency, _progress(config.model, len(items)))
    return score_candidate(config, setup, results, judge_replies(client, setup, results))


def judge_replies(client: openai.OpenAI, setup: EvalSetup, results: list[CallResult]) -> list[CallResult]:
    """The judge's calls on the replies that passed the deterministic checks (none without a judge); replies that
    errored, broke the schema or refused are never sent."""
    from tasks.evaluate import not_judged, score_reply

    judge = setup.judge
    if judge is None:
        return []
    send = [judge.variables(item, r.text or "") for r, item in zip(results, setup.items)
            if not_judged(score_reply(r.item_id, r.text, item["expected"], setup.schema, r.error)) is None]
    if not send:
        return []
    return run_items(client, judge.llm_config(), send, setup.prices, setup.provider.concurrency,
                     _progress(f"judge {judge.model} on {results[0].model}", len(send)))


def score_candidate(config: LLMConfig, setup: EvalSetup, results: list[CallResult], judge_results: list[CallResult],
                    cached: bool = False) -> Candidate:
    """A candidate from its calls (in item order) and the judge's: the deterministic scores, then the verdicts."""
    from tasks.evaluate import score_reply, with_verdicts

    scores = [score_reply(r.item_id, r.text, item["expected"], setup.schema, r.error)
              for r, item in zip(results, setup.items)]
    if setup.judge is not None:
        scores = with_verdicts(scores, {r.item_id: (r.text, r.error) for r in judge_results})
    return Candidate(config=config, results=results, scores=scores, stats=summarize(results),
                     judge_results=judge_results, judge_stats=summarize(judge_results) if setup.judge else None,
                     cached=cached)


def best_candidate(candidates: list[Candidate], metric: LLMMetric) -> Candidate:
    """The candidate the gate will judge: best mean `metric`, then most exact answers, then the cheapest."""
    return max(candidates, key=lambda c: (c.share(metric), c.exact_share, -c.stats.cost_per_1k_items))


def gate_candidate(challenger: Candidate, champion: Candidate | None, config: LLMGateConfig,
                   challenger_version: str, champion_version: str | None) -> GateDecision:
    """The gate on `config.metric`, challenger and champion paired by item id, with the serving cost and p95
    latency budgets (the judge's cost is not serving cost)."""
    from tasks.evaluate import gate_scores

    other = champion.by_item(config.metric) if champion else None
    return gate_scores(challenger.by_item(config.metric), other, config,
                       challenger_cost_per_1k=challenger.stats.cost_per_1k_items,
                       challenger_p95_ms=challenger.stats.latency_p95_ms,
                       champion_cost_per_1k=champion.stats.cost_per_1k_items if champion else None,
                       champion_p95_ms=champion.stats.latency_p95_ms if champion else None,
                       challenger_version=challenger_version, champion_version=champion_version,
                       schema_changes=interface_changes(champion.config, challenger.config) if champion else ())


def interface_changes(live: LLMConfig, candidate: LLMConfig) -> list[str]:
    """How a candidate's interface differs from the live config's: template variables (callers send exactly these)
    and the response format (callers read `json` for json_object); empty when callers need not change."""
    added = [v for v in candidate.variables if v not in live.variables]
    dropped = [v for v in live.variables if v not in candidate.variables]
    changes = []
    if added:
        changes.append(f"new template variable(s) {', '.join(map(repr, added))}: callers must send them")
    if dropped:
        changes.append(f"template variable(s) {', '.join(map(repr, dropped))} no longer used: callers still "
                       f"sending them get 400")
    if live.response_format != candidate.response_format:
        changes.append(f"response format {live.response_format} -> {candidate.response_format}")
    return changes


def _model_config(config: LLMConfig) -> dict[str, Any]:
    """What the prompt registry stores beside the messages."""
    return config.model_dump(include={"model", "temperature", "max_tokens", "response_format"})


def register_candidate(cfg: TrackingConfig, name: str, candidate: Candidate) -> str:
    """The candidate as a version of prompt `name` (the same content registered before is that version)."""
    from tasks.promote import model_lock

    s = candidate.stats
    tags = dict(zip(GATE_PROMPT_TAGS, (f"{candidate.exact_share:.4f}", f"{s.cost_per_1k_items:.6f}",
                                       f"{s.latency_p95_ms:.1f}")))
    with model_lock(cfg, name, "register"):  # two runs registering the same new content make one version
        return tracking.register_prompt_version(cfg, name, candidate.config.system, candidate.config.template,
                                                _model_config(candidate.config), tags)


def live_config(cfg: TrackingConfig, name: str, version: str) -> LLMConfig:
    """A registered prompt version as the LLMConfig it was registered from."""
    snap = tracking.load_prompt_version(cfg, name, version)
    known = {k: v for k, v in snap.llm_config.items() if k in {"model", "temperature", "max_tokens",
                                                                "response_format"}}
    return LLMConfig(system=snap.system, template=snap.template, **known)


def results_key(name: str, version: str, config: LLMConfig, setup: EvalSetup) -> str:
    """What a version's stored results are valid for: the prompt version and its content, the eval set (items and
    schema), the judge and the provider endpoint. Prices are not in it: stored tokens are priced anew."""
    judge = setup.judge.model_dump(mode="json") if setup.judge else None
    return _digest({"format": RESULTS_FORMAT, "prompt": name, "version": str(version),
                    "config": config.model_dump(mode="json"), "eval_set": setup.fingerprint, "judge": judge,
                    "base_url": setup.provider.base_url.rstrip("/")})


def load_results(cfg: TrackingConfig, name: str, version: str, key: str, setup: EvalSetup,
                 max_age_hours: float) -> tuple[tuple[list[CallResult], list[CallResult]] | None, str]:
    """A version's stored calls for `key` (its own and the judge's, in the setup's item order, priced with today's
    table), or None; and a sentence saying where they came from or why none are usable."""
    run_id = tracking.version_tags(cfg, name, version).get(RESULTS_TAG + key[:16])
    if not run_id:
        return None, "no stored results for this version, eval set, judge and provider"
    try:
        data = tracking.load_json_artifact(cfg, run_id, RESULTS_ARTIFACT)
        stored = [CallResult.model_validate(r) for r in data["results"]]
        judged = [CallResult.model_validate(r) for r in data["judge_results"]]
        age = (time.time() - float(data["created"])) / 3600
    except (TrackingError, KeyError, TypeError, ValueError) as exc:
        return None, f"stored results of run {run_id} are unreadable ({str(exc).splitlines()[0][:200]})"
    if data.get("key") != key:
        return None, f"run {run_id} holds results for another key"
    if age > max_age_hours:
        return None, f"stored results are {age:.1f} h old (reused up to {max_age_hours:g} h)"
    by_id = {r.item_id: r for r in stored}
    ids = [item_id(item, i) for i, item in enumerate(setup.items)]
    if set(by_id) != set(ids) or len(stored) != len(ids):
        return None, f"run {run_id} holds results for other items"

    def priced(r: CallResult) -> CallResult:
        return r.model_copy(update={"cost_usd": setup.prices.cost(r.model, r.prompt_tokens, r.completion_tokens)})

    return ([priced(by_id[i]) for i in ids], [priced(r) for r in judged]), \
        f"results of run {run_id}, {age:.1f} h old"


def store_results(cfg: TrackingConfig, name: str, version: str, candidate: Candidate, setup: EvalSetup) -> str | None:
    """Keep a version's results on these items as an MLflow eval run (metrics, params, the calls as a JSON
    artifact), tagged on the version, so evaluating it as champion again sends nothing; the run id, or None when
    not stored (a failed call would be repeated forever, or the tracking store failed: logged, the run goes on)."""
    logger = run_logger(__name__)
    failed = sum(not r.ok for r in [*candidate.results, *candidate.judge_results])
    if failed:
        logger.warning("%s v%s: results not stored for reuse: %d call(s) failed", name, version, failed)
        return None
    key = results_key(name, version, candidate.config, setup)
    payload = {"format": RESULTS_FORMAT, "key": key, "created": time.time(), "prompt": name, "version": str(version),
               "eval_set": setup.fingerprint, "results": [r.model_dump(mode="json") for r in candidate.results],
               "judge_results": [r.model_dump(mode="json") for r in candidate.judge_results]}
    metrics = {"exact_share": candidate.exact_share, "cost_per_1k_items": candidate.stats.cost_per_1k_items,
               "latency_p95_ms": candidate.stats.latency_p95_ms}
    if candidate.judge_stats is not None:
        metrics |= {"judge_score": candidate.share("judge"), "judge_cost_usd": candidate.judge_stats.cost_usd}
    try:
        run_id = tracking.start_run(cfg, f"llm-eval {name} v{version}", tags={
            "nightshift.kind": "llm-eval", "nightshift.prompt": name, "nightshift.prompt_version": str(version),
            "nightshift.eval_results_key": key})
        tracking.log_params(cfg, run_id, {"eval_set": setup.fingerprint, "items": len(setup.items),
                                          "judge": setup.judge.model if setup.judge else "",
                                          "base_url": setup.provider.base_url})
        tracking.log_metrics(cfg, run_id, metrics)
        tracking.log_dict(cfg, run_id, payload, RESULTS_ARTIFACT)
        tracking.finish_run(cfg, run_id)
        tracking.tag_version(cfg, name, version, {RESULTS_TAG + key[:16]: run_id})
    except Exception as exc:  # noqa: BLE001 - a cache write must not fail a run whose evaluation is done
        logger.warning("%s v%s: results not stored for reuse: %s", name, version, str(exc).splitlines()[0][:300])
        return None
    return run_id


def evaluate_champion(cfg: TrackingConfig, client: openai.OpenAI, name: str, version: str | None, setup: EvalSetup,
                      max_age_hours: float) -> tuple[Candidate | None, CacheState]:
    """The champion on the same items: its stored results when this version already ran on this eval set with this
    judge and provider within `max_age_hours` (nothing sent), else run again and stored; and whether it was a hit."""
    if version is None:
        return None, "none"
    config = live_config_task(cfg, name, version)
    if max_age_hours <= 0:
        return evaluate_candidate_task(client, config, setup), "off"
    stored, note = load_results_task(cfg, name, version, results_key(name, version, config, setup), setup,
                                     max_age_hours)
    if stored is not None:
        run_logger(__name__).info("%s: champion v%s cache hit, nothing sent: %s", name, version, note)
        return score_candidate(config, setup, *stored, cached=True), "hit"
    run_logger(__name__).info("%s: champion v%s cache miss (%s): running it again", name, version, note)
    champion = evaluate_candidate_task(client, config, setup)
    store_results_task(cfg, name, version, champion, setup)
    return champion, "miss"


def settle(cfg: TrackingConfig, name: str, decision: GateDecision, challenger: Candidate, setup: EvalSetup, *,
           server_url: str | list[str] | None, token: str | None,
           keep_results: bool) -> tuple[str, str | None, DeployOutcome | None]:
    """Record the gate's decision on the version, then promote a challenger that passed through the one `promote()`
    (locked, compare-and-swap, audited, the live model servers reloaded), keeping its results as the next run's
    champion's; or audit the refusal. Returns the action, where `champion` points now and the redeploy outcome."""
    from tasks.promote import promote, record_decision_task, record_refusal_task

    record_decision_task(cfg, name, str(decision.challenger_version), decision)
    if not decision.promote:
        refused = record_refusal_task(cfg, name, decision, None)
        return "refused" if refused else "already-decided", decision.champion_version, None
    outcome = promote(cfg, name, decision, server_url=server_url, token=token)
    if keep_results and outcome.champion_after == decision.challenger_version:
        store_results_task(cfg, name, str(decision.challenger_version), challenger, setup)
    return outcome.status, outcome.champion_after, outcome.deploy


def spent_usd(candidates: list[Candidate]) -> float:
    """USD sent to the provider for these candidates now, the judge's included (stored results cost nothing)."""
    return sum(c.stats.cost_usd + (c.judge_stats.cost_usd if c.judge_stats else 0.0)
               for c in candidates if not c.cached)


load_eval_set_task = task(load_eval_set, name="load-eval-set", cache_policy=NO_CACHE)
evaluate_candidate_task = task(evaluate_candidate, name="evaluate-candidate", cache_policy=NO_CACHE)
register_candidate_task = task(register_candidate, name="register-prompt-version", **tracking.RETRY)
live_config_task = task(live_config, name="load-champion-prompt", **tracking.RETRY)
load_results_task = task(load_results, name="load-stored-eval-results", **tracking.RETRY)
store_results_task = task(store_results, name="store-eval-results", cache_policy=NO_CACHE)
