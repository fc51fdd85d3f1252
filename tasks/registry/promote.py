"""Promotion: the gate step, per-model locks, and the one `promote()` every flow uses to move `champion`.

`promote()` takes the gate's typed decision, takes the model's lock, re-reads `champion` under it and moves the
aliases only if `champion` is still the version the decision was made against (compare-and-swap); then it
redeploys the live server and writes the audit record, inside a transaction that undoes the move on failure.
"""

from __future__ import annotations

from datetime import date, datetime, timezone
from typing import Any, Literal

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.transactions import Transaction, get_transaction, transaction
from pydantic import BaseModel

from nightshift.errors import NightshiftError, PromotionRefused
from nightshift.faults import fault_point
from nightshift.runlog import run_logger
from tasks.catalogue.config import GateConfig
from tasks.model.gate import GateDecision, gate
from tasks.model.metrics import model_classes, predict_scores
from tasks.registry.audit import AuditRecord, append_audit, read_audit
from tasks.registry.locks import model_lock
from tasks.registry.runs import log_outputs
from tasks.registry.store import RETRY, TrackingConfig
from tasks.registry.versions import (
    GATE_TAG,
    AliasState,
    alias_state,
    load_version,
    move_champion,
    restore_aliases,
    tag_version,
    version_run_id,
    version_tags,
)


class DeployRefused(NightshiftError):
    """A model server would not take the new champion (its smoke test failed or it is unreachable)."""

    def __init__(self, message: str, swapped: list[str] | None = None) -> None:
        super().__init__(message)
        self.swapped = swapped or []  # replicas that had already loaded it: they must load the old one again


class DeployOutcome(BaseModel):
    """What the redeploy step did."""

    status: Literal["not-deployed", "deployed"]
    detail: str
    servers: list[str] = []


class PromotionOutcome(BaseModel):
    """What `promote()` did, and where `champion` points now."""

    status: Literal["promoted", "completed", "already-promoted", "superseded"]
    champion_before: str | None
    champion_after: str | None
    deploy: DeployOutcome | None = None
    detail: str


def gate_versions(cfg: TrackingConfig, name: str, challenger: str, champion: str | None, holdout: Any,
                  config: GateConfig) -> GateDecision:
    """Score both registry versions on the same fresh holdout's labeled rows and decide."""
    from tasks.data.contract import schema_changes

    chal = load_version(cfg, name, challenger)
    holdout, y, classes = _judged_rows(holdout, chal.contract.label, model_classes(chal.model))
    chal_scores = predict_scores(chal.model, holdout[chal.contract.features])
    champ_scores, changes = None, []
    if champion is not None:
        champ = load_version(cfg, name, champion)
        changes = schema_changes(champ.contract, chal.contract)
        champ_scores = _comparable_scores(champ.model, champ.contract.features, holdout, classes)
    return gate(y, chal_scores, champ_scores, classes, config, slice_frame=holdout, challenger_version=challenger,
                champion_version=champion, schema_changes=changes)


def _judged_rows(holdout: Any, label: str, classes: list[Any] | None) -> tuple[Any, Any, Any]:
    """The holdout rows whose label can judge (a known class; a number for a regressor), their labels, the classes."""
    import numpy as np
    import pandas as pd

    from tasks.data.contract import align_labels

    if classes is None:
        numbers = pd.to_numeric(holdout[label], errors="coerce").to_numpy(dtype=float)
        known = np.isfinite(numbers)
        return holdout.loc[known], numbers[known], None
    cls = np.asarray(classes)
    labels, _ = align_labels(holdout[label], cls)  # blank or unknown labels are not judged
    return holdout.loc[labels.notna().to_numpy()], labels.dropna().to_numpy().astype(cls.dtype), cls


def _comparable_scores(model: Any, features: list[str], holdout: Any, classes: Any) -> Any:
    """The champion's scores in the challenger's terms (its probability columns in the challenger's class order);
    None when the two cannot be compared (other classes, or one classifies and the other regresses)."""
    from tasks.data.contract import class_order

    champ_classes = model_classes(model)
    if (champ_classes is None) != (classes is None):
        return None
    if classes is None:
        return predict_scores(model, holdout[features])
    order = class_order(champ_classes, classes)
    return None if order is None else predict_scores(model, holdout[features])[:, order]


def gate_challenger(cfg: TrackingConfig, name: str, challenger: str, champion: str | None, holdout_path: str,
                    config: GateConfig) -> GateDecision:
    """The gate's decision for (challenger, champion): decided once and recorded on the version, else reused."""
    import pandas as pd

    decision = recorded_decision(cfg, name, challenger)
    overridden = decision is not None and bool(decision.schema_changes) and config.allow_schema_change
    if decision is not None and champion in (decision.champion_version, challenger) and not overridden:
        return decision  # the same pair (or promoted since); a schema refusal is decided again when now allowed
    decision = gate_versions(cfg, name, challenger, champion, pd.read_parquet(holdout_path), config)
    record_decision(cfg, name, challenger, decision)
    numbers = decision.model_dump(include={"challenger", "champion", "ci_low", "ci_high"}, exclude_none=True)
    log_outputs(cfg, version_run_id(cfg, name, challenger),
                         metrics={f"gate_{k}": v for k, v in numbers.items()},
                         texts={"gate/decision.md": decision.markdown()},
                         tags={"nightshift.gate.promote": decision.promote, "nightshift.gate.reason": decision.reason})
    return decision


def record_decision(cfg: TrackingConfig, name: str, version: str, decision: GateDecision) -> None:
    """Record the gate's decision on the version: a rollback brings back only versions that passed it."""
    tag_version(cfg, name, version, {GATE_TAG: decision.model_dump_json()})


def recorded_decision(cfg: TrackingConfig, name: str, version: str) -> GateDecision | None:
    """The gate decision recorded on a version (None if it was never gated); fails if the version does not exist."""
    recorded = version_tags(cfg, name, version).get(GATE_TAG)
    if not recorded:
        return None
    return GateDecision.model_validate_json(recorded).model_copy(update={"challenger_version": str(version)})


def record_refusal(cfg: TrackingConfig, name: str, decision: GateDecision, fingerprint: str | None) -> bool:
    """Audit a refused challenger once (a rerun of the night finds the record); True if written now."""
    target = decision.challenger_version
    if any(r.action == "refuse" and r.to_version == target for r in read_audit(cfg, name)):
        return False
    append_audit(cfg, audit_record(name, "refuse", decision.reason, decision.champion_version, target,
                                            decision, fingerprint))
    return True


@task(name="move-champion-alias", cache_policy=NO_CACHE)
def move_champion_task(cfg: TrackingConfig, model_name: str, version: str) -> AliasState:
    """champion := version (previous := old champion); registers its own undo with the transaction."""
    before = move_champion(cfg, model_name, version)
    txn = get_transaction()
    if txn is not None:
        txn.set("undo", {"cfg": cfg.model_dump(), "model_name": model_name,
                         "champion": before.champion, "previous": before.previous})
    return before


@move_champion_task.on_rollback
def _restore_aliases(txn: Transaction) -> None:
    undo = txn.get("undo")
    restore_aliases(TrackingConfig(**undo["cfg"]), undo["model_name"],
                             AliasState(champion=undo["champion"], previous=undo["previous"]))


def server_urls(server_url: str | list[str] | None) -> list[str]:
    """NIGHTSHIFT_SERVER_URL as a list: one URL, or several replicas separated by commas."""
    urls = server_url if isinstance(server_url, list) else (server_url or "").split(",")
    return [u.strip().rstrip("/") for u in urls if u and u.strip()]


def redeploy(server_url: str | list[str] | None, token: str | None, model_name: str,
             allow_schema_change: bool = False, timeout_seconds: float = 120) -> DeployOutcome:
    """Ask every model server replica to load `model_name`'s champion, in order; all swap or DeployRefused names
    the replicas that already did (the caller reloads those once the aliases are back; with no champion left, a
    server unloads the model instead of serving the refused version).

    A server refuses a model whose input schema differs from the live one unless `allow_schema_change`
    (a gate decision that allowed it, a rollback, or putting the old champion back).
    """
    from urllib.parse import quote

    urls = server_urls(server_url)
    if not urls:
        return DeployOutcome(status="not-deployed", detail="no model server configured (NIGHTSHIFT_SERVER_URL)")
    import httpx

    swapped: list[str] = []
    replies = []
    for url in urls:
        try:
            response = httpx.post(f"{url}/models/{quote(model_name, safe='')}/reload", timeout=timeout_seconds,
                                  params={"allow_schema_change": "true"} if allow_schema_change else None,
                                  headers={"Authorization": f"Bearer {token}"} if token else {})
        except httpx.HTTPError as exc:
            raise DeployRefused(f"model server {url} unreachable: {exc}", swapped) from exc
        if response.status_code >= 300:
            raise DeployRefused(f"model server {url} refused the new model ({response.status_code}): "
                                f"{response.text[:300]}", swapped)
        swapped.append(url)
        replies.append(response.text[:300])
    detail = replies[0] if len(urls) == 1 else f"{len(urls)} replicas swapped: {replies[0]}"
    return DeployOutcome(status="deployed", detail=detail, servers=swapped)


def audit_record(name: str, action: str, reason: str, from_version: str | None, to_version: str | None,
                 decision: GateDecision | None = None, fingerprint: str | None = None) -> AuditRecord:
    """An audit record stamped with the time and the current Prefect flow run."""
    from prefect.runtime import flow_run

    numbers = decision.model_dump(include={"metric", "challenger", "champion", "ci_low", "ci_high"}) if decision else {}
    return AuditRecord(time=datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ"), model_name=name, action=action,
                       from_version=from_version, to_version=to_version, reason=reason,
                       flow_run_id=str(flow_run.get_id() or "") or None, dataset_fingerprint=fingerprint, **numbers)


redeploy_task = task(redeploy, name="redeploy-model-server", cache_policy=NO_CACHE)
append_audit_task = task(append_audit, name="append-audit-record", **RETRY)
read_audit_task = task(read_audit, name="read-audit-trail", **RETRY)
alias_state_task = task(alias_state, name="read-aliases", **RETRY)
gate_challenger_task = task(gate_challenger, name="gate-challenger", **RETRY)
record_refusal_task = task(record_refusal, name="audit-refusal", **RETRY)
recorded_decision_task = task(recorded_decision, name="read-gate-decision", **RETRY)
record_decision_task = task(record_decision, name="record-gate-decision", **RETRY)


def _reload_old_champion(cause: Exception, urls: list[str], token: str | None, name: str, target: str) -> str:
    """Once the aliases are back, every replica that took v{target} reloads the old champion (with none, a server
    unloads the model); each is tried. What failed is added to `cause` as a note and returned ('' if nothing)."""
    failed = []
    for url in urls:
        try:
            redeploy_task([url], token, name, allow_schema_change=True)
        except DeployRefused as exc:
            failed.append(str(exc))
    if not failed:
        return ""
    stuck = f"; putting the old champion back failed, so these replicas may still serve v{target}: {'; '.join(failed)}"
    cause.add_note(stuck[2:])
    return stuck


def promote(cfg: TrackingConfig, name: str, decision: GateDecision, *, server_url: str | list[str] | None,
            token: str | None, expected_champion: str | None = None, action: Literal["promote", "rollback"] = "promote",
            reason: str | None = None, fingerprint: str | None = None,
            lock_timeout: float = 600, night: date | None = None) -> PromotionOutcome:
    """Make `decision.challenger_version` champion if `champion` is still `expected_champion` (default: the version
    the decision was made against); redeploy and audit; undo the move if the server refuses it.

    Idempotent: a run killed after the move is completed (redeploy + audit) by its rerun, and a version is
    promoted at most once (a later rerun of the same night after a rollback leaves it alone). A move (or a refused
    redeploy's undo) emits nightshift.model.promoted / .rolled_back about `night` (default: the run's params.night).
    """
    from nightshift.events import PROMOTED, ROLLED_BACK, emit_model_event, night_of_run

    def tell(rolled_back: bool, why: str, before: str | None, after: str | None) -> None:
        gated = numbers.model_dump(include={"metric", "challenger", "champion", "ci_low", "ci_high"}) if numbers else {}
        emit_model_event(ROLLED_BACK if rolled_back else PROMOTED, name, reason=why, version=after,
                         night=night or night_of_run(), payload={"action": "rollback" if rolled_back else action,
                                                                 "from_version": before, "to_version": after, **gated})

    target = decision.challenger_version
    if not decision.promote or target is None:
        raise PromotionRefused(f"v{target} of '{name}' did not pass the gate ({decision.reason}); not promoting it.")
    expected = decision.champion_version if action == "promote" and expected_champion is None else expected_champion
    allow = action == "rollback" or bool(decision.schema_changes)  # the gate allowed it, or the operator asks
    reason = reason or decision.reason
    numbers = decision if action == "promote" else None
    with model_lock(cfg, name, "promote", lock_timeout):
        state = alias_state_task(cfg, name)
        done = action == "promote" and any(r.action == "promote" and r.to_version == target
                                           for r in read_audit_task(cfg, name))
        if done or (state.champion == target and action == "rollback"):
            return PromotionOutcome(status="already-promoted", champion_before=state.champion,
                                    champion_after=state.champion, detail=f"v{target} was promoted before")
        if state.champion == target:  # moved by a run killed before its audit record: finish it once
            deploy = redeploy_task(server_url, token, name, allow)
            append_audit_task(cfg, audit_record(name, action, f"{reason} (completed after an interrupted run)",
                                                state.previous, target, numbers, fingerprint))
            tell(action == "rollback", f"{reason} (completed after an interrupted run)", state.previous, target)
            return PromotionOutcome(status="completed", champion_before=state.previous, champion_after=target,
                                    deploy=deploy, detail="finished the promotion an interrupted run had begun")
        if state.champion != expected:
            detail = (f"champion moved to v{state.champion} after the decision against v{expected}; "
                      f"v{target} not promoted")
            append_audit_task(cfg, audit_record(name, "superseded", detail, state.champion, target, numbers,
                                                fingerprint))
            return PromotionOutcome(status="superseded", champion_before=state.champion,
                                    champion_after=state.champion, detail=detail)
        deploy = None
        try:
            with transaction():
                move_champion_task(cfg, name, target)
                fault_point("after-move")
                deploy = redeploy_task(server_url, token, name, allow)
                append_audit_task(cfg, audit_record(name, action, reason, state.champion, target, numbers,
                                                    fingerprint))
        except DeployRefused as exc:
            stuck = _reload_old_champion(exc, exc.swapped, token, name, target)
            append_audit_task(cfg, audit_record(name, "rollback", f"redeploy refused: {exc}{stuck}", target,
                                                state.champion, numbers, fingerprint))
            tell(True, f"v{target} was made champion, then rolled back: redeploy refused: {exc}{stuck}", target,
                 state.champion)
            raise
        except Exception as exc:
            if deploy is not None and deploy.status == "deployed":  # the servers took v{target}: back to the old one
                _reload_old_champion(exc, deploy.servers, token, name, target)
            raise
    run_logger("nightshift.promote").info("%s: champion v%s -> v%s", name, state.champion, target)
    tell(action == "rollback", reason, state.champion, target)
    return PromotionOutcome(status="promoted", champion_before=state.champion, champion_after=target, deploy=deploy,
                            detail=reason)


HOLDOUT_TAG = "nightshift.holdout_day"  # the newest labeled day a catalogue model's version was gated on


def champion_is_newer(cfg: TrackingConfig, name: str, champion: str, holdout_day: date) -> str | None:
    """Why a night should not retrain: the champion was gated on labels at least as new as `holdout_day` (a rerun or
    backfill of an older night would judge an older window against it); None when tonight's labels are newer."""
    gated = version_tags(cfg, name, champion).get(HOLDOUT_TAG)
    if gated is None or date.fromisoformat(gated) < holdout_day:
        return None
    return (f"champion v{champion} was gated on labels of {gated}, not older than this night's newest labeled day "
            f"{holdout_day}: nothing newer to learn from (an older night rerun or backfilled; force_retrain overrides)")


champion_is_newer_task = task(champion_is_newer, name="champion-newer-than-night", **RETRY)
