"""Prompts: a chat template + model config versioned in MLflow's prompt registry, promoted like a model."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict, Field

from nightshift.errors import ConfigError, TrackingError
from tasks.registry.store import RETRY, TrackingConfig, _offline, client, registry_call
from tasks.registry.versions import (
    CONTENT_HASH_TAG,
    KNOWN_PROMPTS,
    get_alias,
    is_prompt,
    is_reserved_prompt_tag,
    prompt_versions,
)


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
    for pv in prompt_versions(cfg, name):
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
    reserved = [k for k in values if is_reserved_prompt_tag(k)]
    if reserved:
        raise TrackingError(f"Not registering prompt '{name}' with tags {reserved}: MLflow keeps the prompt's "
                            f"content in these keys and nightshift its hash.")
    pv = registry_call(cfg, f"registering a version of prompt '{name}'", lambda: client(cfg).register_prompt(
        name, messages, commit_message=f"nightshift content {digest[:12]}", tags={**values, CONTENT_HASH_TAG: digest},
        model_config=config or None))
    KNOWN_PROMPTS.add((cfg.registry_uri, name))
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


register_prompt_task = task(register_prompt_version, name="mlflow-register-prompt", cache_policy=NO_CACHE)
load_prompt_task = task(load_prompt_version, name="load-prompt-version", **RETRY)
