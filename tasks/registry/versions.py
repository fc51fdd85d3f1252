"""Registered versions and their aliases (never the deprecated stages): register, tag, find, resolve, move
`champion` and `previous`, and load a version with its contract. Models and prompts share one namespace."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from nightshift.errors import TrackingError
from tasks.registry.runs import CONTRACT_ARTIFACT, LoggedModel, load_json_artifact
from tasks.registry.store import RETRY, TrackingConfig, _mlflow, client, registry_call

if TYPE_CHECKING:
    from mlflow.pyfunc import PyFuncModel


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
    contract: Any  # tasks.data.contract.Contract
    model: Any  # the fitted sklearn pipeline


def load_version(cfg: TrackingConfig, name: str, alias_or_version: str = "champion") -> LoadedVersion:
    """version → run → contract → model in one call; an alias that is not set fails clearly."""
    from tasks.data.contract import Contract

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


# --------------------------------------------------------------------------------------------
# Aliases (never the deprecated stages).
# --------------------------------------------------------------------------------------------
CHAMPION, PREVIOUS, CHALLENGER = "champion", "previous", "challenger"
SHADOW = "shadow"  # the version the model servers score beside the champion, off the request path (judged live)
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
        reserved = [k for k in tags if is_reserved_prompt_tag(k)]
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


def list_versions(cfg: TrackingConfig, name: str) -> list[Any]:
    """All registered versions of `name`, newest first (empty if the model does not exist); MLflow PromptVersions
    (version, tags, template, model_config; no run_id, aliases always empty) for a prompt."""
    if is_prompt(cfg, name):
        return prompt_versions(cfg, name)
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


CONTENT_HASH_TAG = "nightshift.content_hash"  # sha256 of a prompt version's messages + model config, set at register
EVAL_RUN_TAG = "nightshift.eval_run_id"  # a prompt version has no run: the run that evaluated it, as a version tag
KNOWN_PROMPTS: set[tuple[str, str]] = set()  # (registry URI, name) known to be prompts: a name never changes kind


def is_prompt(cfg: TrackingConfig, name: str) -> bool:
    """Whether `name` is a prompt in the registry (False for a model or a missing name); a store failure raises.

    MLflow keeps prompts and models in one namespace, so a True answer is cached per registry. Not `get_prompt`:
    it answers None for any failure, which would send a prompt down the model path that reads "no alias".
    """
    key = (cfg.registry_uri, name)
    if key in KNOWN_PROMPTS:
        return True
    found = registry_call(cfg, f"checking whether '{name}' is a prompt", lambda: client(cfg).search_prompts(
        filter_string=f"name = '{name}'", max_results=1))
    if not any(p.name == name for p in found):
        return False
    KNOWN_PROMPTS.add(key)
    return True


def is_reserved_prompt_tag(key: str) -> bool:
    """Tag keys holding a prompt version's content (MLflow's) or its hash (ours): never set them by hand."""
    return key.startswith(("mlflow.prompt.", "_mlflow_prompt_")) or key == CONTENT_HASH_TAG


def prompt_versions(cfg: TrackingConfig, name: str) -> list[Any]:
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


resolve_version_task = task(resolve_version, name="resolve-model-version", **RETRY)
load_sklearn_task = task(load_sklearn, name="load-model-from-registry", **RETRY)
register_task = task(register_model_version, name="mlflow-register-version", cache_policy=NO_CACHE)
find_version_task = task(find_version_by_tag, name="find-version-by-tag", **RETRY)
get_alias_task = task(get_alias, name="read-alias", **RETRY)
set_alias_task = task(set_alias, name="set-alias", **RETRY)
load_version_task = task(load_version, name="load-model-version", **RETRY)
