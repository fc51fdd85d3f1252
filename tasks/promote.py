"""Promotion and redeploy: move the champion alias under a lock, inside a transaction that can undo it."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator, Literal

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.transactions import Transaction, get_transaction
from pydantic import BaseModel

from nightshift.errors import NightshiftError
from tasks import tracking
from tasks.tracking import AliasState, TrackingConfig


class DeployRefused(NightshiftError):
    """The model server would not take the new champion (its smoke test failed or it is unreachable)."""


class DeployOutcome(BaseModel):
    """What the redeploy step did."""

    status: Literal["not-deployed", "deployed"]
    detail: str


@contextmanager
def promotion_lock(model_name: str, timeout_seconds: float = 600) -> Iterator[None]:
    """At most one promotion per model at a time (a Prefect global concurrency limit of 1)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.concurrency.sync import concurrency
    from prefect.exceptions import ObjectNotFound

    name = f"nightshift-promote-{model_name}"[:120]
    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            try:
                client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))
            except Exception:  # created concurrently by another promotion: fine
                client.read_global_concurrency_limit_by_name(name)
    with concurrency(name, occupy=1, timeout_seconds=timeout_seconds, strict=True):
        yield


@task(name="move-champion-alias", cache_policy=NO_CACHE)
def move_champion_task(cfg: TrackingConfig, model_name: str, version: str) -> AliasState:
    """champion := version (previous := old champion); registers its own undo with the transaction."""
    before = tracking.move_champion(cfg, model_name, version)
    txn = get_transaction()
    if txn is not None:
        txn.set("undo", {"cfg": cfg.model_dump(), "model_name": model_name,
                         "champion": before.champion, "previous": before.previous})
    return before


@move_champion_task.on_rollback
def _restore_aliases(txn: Transaction) -> None:
    undo = txn.get("undo")
    tracking.restore_aliases(TrackingConfig(**undo["cfg"]), undo["model_name"],
                             AliasState(champion=undo["champion"], previous=undo["previous"]))


def redeploy(server_url: str | None, token: str | None, timeout_seconds: float = 120) -> DeployOutcome:
    """Ask the live model server to load the new champion; raises DeployRefused when it will not."""
    if not server_url:
        return DeployOutcome(status="not-deployed", detail="no model server configured (NIGHTSHIFT_SERVER_URL)")
    import httpx

    try:
        response = httpx.post(f"{server_url.rstrip('/')}/reload", timeout=timeout_seconds,
                              headers={"Authorization": f"Bearer {token}"} if token else {})
    except httpx.HTTPError as exc:
        raise DeployRefused(f"model server {server_url} unreachable: {exc}") from exc
    if response.status_code >= 300:
        raise DeployRefused(f"model server {server_url} refused the new model ({response.status_code}): "
                            f"{response.text[:300]}")
    return DeployOutcome(status="deployed", detail=response.text[:300])


redeploy_task = task(redeploy, name="redeploy-model-server", cache_policy=NO_CACHE)
append_audit_task = task(tracking.append_audit, name="append-audit-record", cache_policy=NO_CACHE)
