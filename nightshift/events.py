"""The Prefect events nightshift emits, one place: their names and one way to emit them about a model.

Every event's resource is the model (`nightshift.model.<name>`, with its version when there is one), related to the
flow run that emitted it; its payload always carries `model`, `night` (ISO date or None) and `reason` (one
sentence a person can act on), plus the event's own numbers. Deployment triggers and the notification
automations (`make deploy`) match on these names.
"""

from __future__ import annotations

from datetime import date
from typing import Any

DRIFT = "nightshift.drift.detected"
DEGRADED = "nightshift.performance.degraded"
ESTIMATED_DROP = "nightshift.performance.estimated_drop"
DATA_MISSING = "nightshift.data.missing"
BELOW_FLOOR = "nightshift.model.below_floor"  # the live model's realized metric under the floor, or under chance
LABELS_SUSPECT = "nightshift.labels.suspect"  # a day's labels far from the reference's balance: kept out
PROMOTED = "nightshift.model.promoted"
ROLLED_BACK = "nightshift.model.rolled_back"
APPROVAL_WANTED = "nightshift.approval.requested"  # a close call paused for a person
SHADOW_DISAGREES = "nightshift.shadow.disagrees"  # live traffic judged a gate-passed version worse (or never sure)

ALL = (DRIFT, DEGRADED, ESTIMATED_DROP, DATA_MISSING, BELOW_FLOOR, LABELS_SUSPECT, PROMOTED, ROLLED_BACK,
       APPROVAL_WANTED, SHADOW_DISAGREES)


def model_resource(name: str, version: str | None = None) -> dict[str, str]:
    """The resource every nightshift event is about: the model (and its version)."""
    resource = {"prefect.resource.id": f"nightshift.model.{name}", "prefect.resource.name": name}
    if version:
        resource["nightshift.model.version"] = str(version)
    return resource


def emit_model_event(event: str, name: str, *, reason: str, version: str | None = None,
                     night: date | str | None = None, payload: dict[str, Any] | None = None) -> str:
    """Emit `event` about model `name`, related to the current flow run; returns the event's id (its name when
    events are off, e.g. outside a Prefect client)."""
    from prefect.events import emit_event
    from prefect.runtime import flow_run

    related = []
    if flow_run.get_id():
        related.append({"prefect.resource.id": f"prefect.flow-run.{flow_run.get_id()}",
                        "prefect.resource.role": "flow-run",
                        "prefect.resource.name": str(flow_run.get_name() or "")})
    day = night.isoformat() if isinstance(night, date) else night
    emitted = emit_event(event, resource=model_resource(name, version), related=related,
                         payload={**(payload or {}), "model": name, "night": day, "reason": reason})
    return str(emitted.id) if emitted else event


# The events a person is told about (`make deploy`'s notification automations, one message per event), besides a
# night's flow run that ends Failed or Crashed.
NOTIFY = (DATA_MISSING, BELOW_FLOOR, LABELS_SUSPECT, ESTIMATED_DROP, PROMOTED, ROLLED_BACK, APPROVAL_WANTED,
          SHADOW_DISAGREES)


def night_of_run(field: str = "night") -> str | None:
    """The night the current flow run was given (`params.<field>`, ISO date); None outside a run or when the run was
    not given one (a scheduled night resolves its own). Never raises: an event must not fail the work it reports."""
    try:
        from prefect.runtime import flow_run

        if not flow_run.get_id():
            return None
        params = (flow_run.get_parameters() or {}).get("params")
        value = params.get(field) if isinstance(params, dict) else getattr(params, field, None)
    except Exception:
        return None
    if isinstance(value, date):
        return value.isoformat()
    return str(value) if value else None
