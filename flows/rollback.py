"""Rollback flow: put `champion` back on `previous` (or a named version that passed the gate) and record why."""

from __future__ import annotations

import argparse
import sys

from prefect import flow
from prefect.artifacts import create_markdown_artifact
from pydantic import BaseModel, ConfigDict, Field

from nightshift.errors import PromotionRefused, TrackingError
from nightshift.naming import MODEL_NAME_PATTERN, artifact_key
from nightshift.settings import get_settings
from tasks.registry.approval import passed
from tasks.registry.promote import DeployOutcome, alias_state_task, promote, recorded_decision_task
from tasks.registry.store import TrackingConfig


class RollbackParams(BaseModel):
    """Parameters of a rollback (a Prefect UI form)."""

    model_config = ConfigDict(extra="forbid")

    reason: str = Field(..., min_length=3, max_length=500, title="Reason", description="Why, for the audit trail.")
    model_name: str | None = Field(None, pattern=MODEL_NAME_PATTERN, title="Registered model name",
                                   description="Model to roll back; default NIGHTSHIFT_MODEL_NAME.")
    to_version: str | None = Field(None, pattern=r"^[0-9]+$", title="Target version",
                                   description="Version to make champion; default the 'previous' alias.")


class RollbackResult(BaseModel):
    """Where champion pointed before and after."""

    model_name: str
    from_version: str | None
    to_version: str
    deploy: DeployOutcome


@flow(name="rollback", log_prints=True)
def rollback(params: RollbackParams) -> RollbackResult:
    """Move champion back to previous (or to_version), redeploy, and append an audit record.

    Args:
        params: Why, which model and (optionally) which version to go back to.
    """
    settings = get_settings()
    cfg = TrackingConfig.from_settings(settings)
    name = params.model_name or settings.model_name
    state = alias_state_task(cfg, name)
    target = params.to_version or state.previous
    if target is None:
        raise TrackingError(f"Model '{name}' has no 'previous' alias to roll back to; give to_version.")
    decision = passed(cfg, name, recorded_decision_task(cfg, name, target))  # the gate's, or a person's approval
    if decision is None or not decision.promote:
        raise PromotionRefused(f"Version {target} of '{name}' never passed the promotion gate (nor did a person "
                               f"approve it); refusing to make it champion.")
    token = settings.server_token.get_secret_value() if settings.server_token else None
    outcome = promote(cfg, name, decision, server_url=settings.server_url, token=token, action="rollback",
                      expected_champion=state.champion, reason=params.reason)
    if outcome.status == "superseded":
        raise PromotionRefused(f"Rollback of '{name}' not done: {outcome.detail}. Check the champion and retry.")
    create_markdown_artifact(key=artifact_key("rollback", name),
                             markdown=f"# Rollback of {name}\nchampion v{state.champion} → v{target}: {params.reason}")
    print(f"{name}: champion v{state.champion} -> v{target} ({params.reason})")
    return RollbackResult(model_name=name, from_version=state.champion, to_version=target,
                          deploy=outcome.deploy or DeployOutcome(status="not-deployed", detail=outcome.detail))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m flows.rollback", description=rollback.description)
    parser.add_argument("reason", help="why (recorded in the audit trail)")
    parser.add_argument("--model-name")
    parser.add_argument("--to-version")
    args = parser.parse_args(sys.argv[1:])
    print(rollback(RollbackParams(reason=args.reason, model_name=args.model_name, to_version=args.to_version))
          .model_dump_json(indent=2))
