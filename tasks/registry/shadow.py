"""The shadow's life cycle in the registry and on the model servers: start (alias `shadow`, every replica loads it or
none does), judge each night on labeled live rows, then promote through `promote()` (compare-and-swap), drop, or
end it; every step audited, every judgment recorded on the model's quality run in MLflow.

A shadow has a role. `challenger` (gate.shadow: required): a version that passed the offline gate against champion
`against`, promoted only once live rows show it not worse. `previous` (gate.shadow: advisory): the champion the
offline gate just replaced, scored beside its successor until the live comparison is recorded next to that
promotion; people are told when live disagrees, nothing moves by itself.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Literal

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, Field

from nightshift.errors import NightshiftError
from nightshift.runlog import run_logger
from tasks.catalogue.schema import CatalogueModel
from tasks.model.gate import GateDecision
from tasks.monitoring.shadow import LiveComparison, compare_live, live_pairs
from tasks.registry.audit import append_audit, read_audit
from tasks.registry.locks import model_lock
from tasks.registry.promote import PromotionOutcome, audit_record, promote, server_urls
from tasks.registry.quality import log_realized_quality, quality_run
from tasks.registry.runs import log_outputs
from tasks.registry.store import RETRY, TrackingConfig
from tasks.registry.versions import SHADOW, alias_state, delete_alias, get_alias, set_alias, tag_version, version_run_id
from tasks.registry.versions import version_tags as read_version_tags

STARTED_TAG = "nightshift.shadow.started"  # the night (ISO date) a version went into shadow
AGAINST_TAG = "nightshift.shadow.against"  # the champion it is compared with (and must still be, to be promoted)
ROLE_TAG = "nightshift.shadow.role"  # challenger | previous
SHADOW_NIGHT_TAG = "nightshift.shadow.night."  # + YYYY-MM-DD, on the quality run: that night's live comparison
Role = Literal["challenger", "previous"]


class ShadowRefused(NightshiftError):
    """A model server would not load the shadow (or could not be reached): no replica keeps it."""


class ShadowState(BaseModel):
    """The version in shadow, the champion it is judged against, since when, and why it is there."""

    version: str
    against: str | None
    started: date
    role: Role


class ShadowNight(BaseModel):
    """What a night did about the shadow: its live comparison and the step taken."""

    model_name: str
    state: ShadowState
    action: Literal["waiting", "promoted", "dropped", "ended", "superseded"]
    detail: str
    comparison: LiveComparison | None = None
    promotion: PromotionOutcome | None = None
    event: str | None = Field(None, description="The nightshift.shadow.disagrees event sent, if any.")


def shadow_state(cfg: TrackingConfig, name: str) -> ShadowState | None:
    """The model's shadow (alias `shadow`) with its tags; None when there is none."""
    version = get_alias(cfg, name, SHADOW)
    if version is None:
        return None
    tags = read_version_tags(cfg, name, version)
    started = tags.get(STARTED_TAG)
    return ShadowState(version=version, against=tags.get(AGAINST_TAG) or None,
                       started=date.fromisoformat(started) if started else datetime.now(timezone.utc).date(),
                       role="previous" if tags.get(ROLE_TAG) == "previous" else "challenger")


def load_on_servers(server_url: str | list[str] | None, token: str | None, name: str, version: str,
                    timeout_seconds: float = 120) -> list[str]:
    """Ask every replica to load `version` as `name`'s shadow, in order; all do, or ShadowRefused after the ones that
    had loaded it were asked to drop it again (every replica shadows the same version or none). Returns the
    replicas; an empty list when no model server is configured."""
    import httpx

    urls, loaded = server_urls(server_url), []
    for url in urls:
        try:
            reply = httpx.post(_shadow_url(url, name), params={"version": version}, timeout=timeout_seconds,
                               headers=_auth(token))
        except httpx.HTTPError as exc:
            problem = f"model server {url} unreachable: {exc}"
        else:
            if reply.status_code < 300:
                loaded.append(url)
                continue
            problem = f"model server {url} refused v{version} as shadow ({reply.status_code}): {reply.text[:300]}"
        left = drop_on_servers(loaded, token, name, timeout_seconds)
        raise ShadowRefused(problem + (f"; dropping it again failed on: {'; '.join(left)}" if left else ""))
    return loaded


def drop_on_servers(server_url: str | list[str] | None, token: str | None, name: str,
                    timeout_seconds: float = 120) -> list[str]:
    """Ask every replica to drop `name`'s shadow; returns what failed (empty: every replica has none now)."""
    import httpx

    failed = []
    for url in server_urls(server_url):
        try:
            reply = httpx.delete(_shadow_url(url, name), timeout=timeout_seconds, headers=_auth(token))
            if reply.status_code >= 300:
                failed.append(f"{url} ({reply.status_code}): {reply.text[:200]}")
        except httpx.HTTPError as exc:
            failed.append(f"{url} unreachable: {exc}")
    return failed


def _shadow_url(url: str, name: str) -> str:
    from urllib.parse import quote

    return f"{url}/models/{quote(name, safe='')}/shadow"


def _auth(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


def dropped_before(cfg: TrackingConfig, name: str, version: str) -> str | None:
    """Why `version` may not go into shadow again: the reason it was dropped after a live comparison; None if never."""
    drops = [r for r in read_audit(cfg, name) if r.action == "shadow-drop" and r.from_version == str(version)]
    return drops[-1].reason if drops else None


def start_shadow(cfg: TrackingConfig, name: str, version: str, against: str, night: date, role: Role,
                 reason: str, *, server_url: str | list[str] | None, token: str | None,
                 decision: GateDecision | None = None) -> str:
    """Put `version` in shadow against champion `against`: tags, alias `shadow`, every replica loads it (or none,
    and the alias goes back: ShadowRefused). A newer version replaces the one in shadow (its end audited). Returns
    one sentence saying what happened; starting the same version again changes nothing."""
    with model_lock(cfg, name, "promote"):
        old = shadow_state(cfg, name)
        if old is not None and old.version == str(version) and old.against == str(against):
            return f"v{version} has been in shadow against champion v{against} since {old.started}"
        tag_version(cfg, name, version, {STARTED_TAG: night.isoformat(), AGAINST_TAG: against, ROLE_TAG: role})
        set_alias(cfg, name, SHADOW, version)
        try:
            servers = load_on_servers(server_url, token, name, version)
        except ShadowRefused:
            if old is None:
                delete_alias(cfg, name, SHADOW)
            else:
                set_alias(cfg, name, SHADOW, old.version)
            raise
        if old is not None and old.version != str(version):
            append_audit(cfg, audit_record(name, "shadow-end", f"replaced in shadow by v{version}", old.version,
                                           str(version)))
        where = f"{len(servers)} model server(s)" if servers else "no model server configured (NIGHTSHIFT_SERVER_URL)"
        detail = (f"v{version} in shadow against champion v{against} on {where}: {reason}" if role == "challenger"
                  else f"previous champion v{version} in shadow beside v{against} on {where}: {reason}")
        append_audit(cfg, audit_record(name, "shadow-start", detail, against, str(version), decision))
    run_logger(__name__).info("%s: %s", name, detail)
    return detail


def end_shadow(cfg: TrackingConfig, name: str, state: ShadowState, action: Literal["shadow-drop", "shadow-end"],
               reason: str, *, server_url: str | list[str] | None, token: str | None,
               comparison: LiveComparison | None = None) -> str:
    """Take `state.version` out of shadow: the alias (if it still names it), every replica, an audit record with the
    live numbers. A replica that cannot be reached is named in the returned sentence (it drops its shadow when it
    restarts: the alias is gone)."""
    with model_lock(cfg, name, "promote"):
        if get_alias(cfg, name, SHADOW) == state.version:
            delete_alias(cfg, name, SHADOW)
        failed = drop_on_servers(server_url, token, name)
        numbers = _decision(comparison, name) if comparison is not None and comparison.difference is not None else None
        detail = reason + (f"; still loaded on: {'; '.join(failed)}" if failed else "")
        append_audit(cfg, audit_record(name, action, detail, state.version, state.against, numbers))
    return detail


def _decision(comparison: LiveComparison, name: str, promote_it: bool = False) -> GateDecision:
    """The live comparison in the gate's terms (what promote() and the audit trail take)."""
    return GateDecision(promote=promote_it, reason=f"live: {comparison.reason}", metric=comparison.metric,
                        rows=comparison.rows, challenger=comparison.shadow, champion=comparison.champion,
                        difference=comparison.difference, ci_low=comparison.ci_low, ci_high=comparison.ci_high,
                        confidence=comparison.confidence, min_margin=-comparison.margin, absolute_floor=None,
                        resamples=0, challenger_version=comparison.shadow_version,
                        champion_version=comparison.champion_version)


def record_comparison(cfg: TrackingConfig, night: date, comparison: LiveComparison) -> None:
    """The night's live comparison on the model's quality run (metrics at the night's step, the record as a tag)
    and as a report on the shadow version's run."""
    metrics = {"shadow_rows": float(comparison.rows), "shadow_paired_rows": float(comparison.paired_rows),
               f"shadow_champion_{comparison.metric}": comparison.champion,
               f"shadow_shadow_{comparison.metric}": comparison.shadow, "shadow_improvement": comparison.difference,
               "shadow_ci_low": comparison.ci_low, "shadow_ci_high": comparison.ci_high}
    run_id, _ = quality_run(cfg, comparison.model_name)
    log_realized_quality(cfg, run_id, night, {k: v for k, v in metrics.items() if v is not None},
                         comparison.model_dump_json(), SHADOW_NIGHT_TAG)
    try:
        log_outputs(cfg, version_run_id(cfg, comparison.model_name, comparison.shadow_version),
                    texts={f"shadow/live-{night.isoformat()}.md": comparison.markdown()})
    except Exception as exc:  # noqa: BLE001 - an adopted version without a run: the quality run has the record
        run_logger(__name__).warning("%s: live comparison not attached to v%s's run: %s", comparison.model_name,
                                     comparison.shadow_version, exc)


def judge_shadow(cfg: TrackingConfig, model: CatalogueModel, night: date, state_dir: Path, served_root: Path,
                 kept_out: list[date] | None = None, *, server_url: str | list[str] | None = None,
                 token: str | None = None) -> ShadowNight | None:
    """Tonight's step for the model's shadow (None when there is none): ended if the champion it was judged against
    has moved; else compared with the champion on every labeled live row since it started, the comparison
    recorded, then — by its role and the verdict — promoted, dropped, ended or left waiting."""
    state = shadow_state(cfg, model.name)
    if state is None:
        return None
    champion = alias_state(cfg, model.name).champion
    if state.against is None and champion is not None:  # the alias set by hand (MLflow UI): judged from tonight on
        state = state.model_copy(update={"against": champion, "started": night})
        tag_version(cfg, model.name, state.version, {STARTED_TAG: night.isoformat(), AGAINST_TAG: champion,
                                                     ROLE_TAG: state.role})
    if champion != state.against:
        what = f"champion is v{champion} now, not v{state.against} it was judged against"
        detail = end_shadow(cfg, model.name, state, "shadow-end", f"superseded: {what}", server_url=server_url,
                            token=token)
        return ShadowNight(model_name=model.name, state=state, action="superseded", detail=detail)
    frame, days = live_pairs(model, served_root, state_dir, state.against, state.version, state.started, night,
                             kept_out or [])
    candidate: Literal["shadow", "champion"] = "shadow" if state.role == "challenger" else "champion"
    comparison = compare_live(model, frame, days, state.against, state.version, candidate)
    record_comparison(cfg, night, comparison)
    _publish(comparison, night)
    expired = night - state.started >= timedelta(days=model.gate.shadow_max_days)
    acts = state.role == "challenger" and model.gate.shadow == "required"  # else the comparison is for people
    step = _act_challenger if acts else _record_only
    return step(cfg, model, night, state, comparison, expired, server_url, token)


def _act_challenger(cfg: TrackingConfig, model: CatalogueModel, night: date, state: ShadowState,
                    comparison: LiveComparison, expired: bool, server_url: Any, token: str | None) -> ShadowNight:
    """gate.shadow required: promote a shadow that is not worse live, drop one that is worse or never got sure."""
    result = {"model_name": model.name, "state": state, "comparison": comparison}
    days = f"{(night - state.started).days} day(s) in shadow"
    if comparison.verdict == "not-worse":
        decision = _decision(comparison, model.name, promote_it=True)
        outcome = promote(cfg, model.name, decision, server_url=server_url, token=token,
                          expected_champion=state.against, night=night)
        if outcome.status in ("promoted", "completed", "already-promoted"):
            end_shadow(cfg, model.name, state, "shadow-end", f"promoted after {days}: {comparison.reason}",
                       server_url=None, token=None)  # the servers swapped it in as champion: no shadow left there
            return ShadowNight(action="promoted", detail=f"v{state.version} promoted after {days}: {comparison.reason}",
                               promotion=outcome, **result)
        detail = end_shadow(cfg, model.name, state, "shadow-end", outcome.detail, server_url=server_url, token=token)
        return ShadowNight(action="superseded", detail=detail, promotion=outcome, **result)
    if comparison.verdict == "worse" or (expired and comparison.verdict != "not-worse"):
        why = comparison.reason if comparison.verdict == "worse" else (
            f"still {comparison.verdict} after {days} (gate.shadow_max_days {model.gate.shadow_max_days}): "
            f"{comparison.reason}")
        detail = end_shadow(cfg, model.name, state, "shadow-drop", f"dropped after live comparison: {why}",
                            server_url=server_url, token=token, comparison=comparison)
        event = _tell(model.name, state, night, f"v{state.version} passed the offline gate but was dropped: {why}",
                      comparison)
        return ShadowNight(action="dropped", detail=detail, event=event, **result)
    return ShadowNight(action="waiting", detail=f"v{state.version} in shadow ({days}): {comparison.reason}", **result)


def _record_only(cfg: TrackingConfig, model: CatalogueModel, night: date, state: ShadowState,
                 comparison: LiveComparison, expired: bool, server_url: Any, token: str | None) -> ShadowNight:
    """A shadow whose comparison is for people (gate.shadow advisory: the champion the gate replaced shadowing its
    successor; or a version a person put in shadow while the gate is not `required`): once the comparison has
    decided (or the shadow has run its days), record it and end the shadow; tell people when live says the
    candidate is worse. Nothing is promoted or rolled back by itself."""
    result = {"model_name": model.name, "state": state, "comparison": comparison}
    if comparison.verdict in ("waiting", "undecided") and not expired:
        who = (f"previous v{state.version} shadows v{state.against}" if state.role == "previous"
               else f"v{state.version} in shadow beside v{state.against} (gate.shadow {model.gate.shadow}: recorded, "
                    "never promoted by itself)")
        return ShadowNight(action="waiting", detail=f"{who}: {comparison.reason}", **result)
    event = None
    if comparison.verdict == "worse" and state.role == "previous":
        event = _tell(model.name, state, night, f"champion v{state.against} (promoted by the offline gate) is worse "
                      f"live than v{state.version} it replaced: {comparison.reason}; roll back with "
                      f"`python -m flows.rollback \"<why>\" --model-name {model.name}` if you agree", comparison)
    elif comparison.verdict == "worse":
        event = _tell(model.name, state, night, f"v{state.version} is worse live than champion v{state.against}: "
                      f"{comparison.reason}", comparison)
    detail = end_shadow(cfg, model.name, state, "shadow-end", f"live comparison recorded: {comparison.reason}",
                        server_url=server_url, token=token, comparison=comparison)
    return ShadowNight(action="ended", detail=detail, event=event, **result)


def _tell(name: str, state: ShadowState, night: date, reason: str, comparison: LiveComparison) -> str:
    """nightshift.shadow.disagrees about the model: the live numbers a person needs to act."""
    from nightshift.events import SHADOW_DISAGREES, emit_model_event

    run_logger(__name__).warning("%s: %s", name, reason)
    return emit_model_event(SHADOW_DISAGREES, name, reason=reason, version=state.version, night=night, payload={
        "shadow_version": state.version, "champion_version": state.against, "role": state.role,
        **comparison.model_dump(include={"metric", "rows", "champion", "shadow", "difference", "ci_low", "ci_high",
                                         "verdict"})})


def _publish(comparison: LiveComparison, night: date) -> None:
    """The comparison as a table artifact, inside a flow run."""
    from prefect.artifacts import create_table_artifact
    from prefect.runtime import flow_run

    from nightshift.naming import artifact_key

    if flow_run.get_id():
        create_table_artifact(key=artifact_key("shadow", comparison.model_name), table=comparison.table(),
                              description=f"{comparison.model_name} on live traffic, night {night}: "
                                          f"{comparison.summary()}")


judge_shadow_task = task(judge_shadow, name="judge-shadow-on-live-traffic", cache_policy=NO_CACHE)
start_shadow_task = task(start_shadow, name="start-shadow", cache_policy=NO_CACHE)
shadow_state_task = task(shadow_state, name="read-shadow", **RETRY)
dropped_before_task = task(dropped_before, name="shadow-dropped-before", **RETRY)
