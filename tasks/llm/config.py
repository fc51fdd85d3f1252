"""What an LLM candidate is: a prompt (system + template with {{ placeholders }}) and a model config, the
provider it is called through and what its tokens cost."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from nightshift.errors import NightshiftError


pass


DEFAULT_BASE_URL = "https://api.openai.com/v1"


# `{{ name }}` as in MLflow's prompt registry; the inside is checked to be an identifier.
PLACEHOLDER = re.compile(r"\{\{\s*(.*?)\s*\}\}", re.DOTALL)


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


# The offline demo's stand-in models (cli/fake_openai.py). Real provider prices change: give yours in the
# flow's price table; an unpriced model fails before anything is sent.
DEFAULT_PRICES = PriceTable(prices={"fake-small": Price(input_per_1m=0.15, output_per_1m=0.60),
                                    "fake-large": Price(input_per_1m=2.50, output_per_1m=10.00),
                                    "fake-judge": Price(input_per_1m=0.10, output_per_1m=0.40)})
