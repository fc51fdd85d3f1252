"""The audit trail: one record per promotion decision, kept as MLflow runs of an audit experiment."""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from typing import Iterator, Literal

from pydantic import BaseModel

from tasks.registry.runs import log_metrics
from tasks.registry.store import TrackingConfig, client, ensure_experiment, registry_call
from tasks.registry.versions import is_prompt


class AuditRecord(BaseModel):
    """One promotion, refusal or rollback: when, which versions, the numbers, why, and which Prefect run."""

    time: str
    model_name: str
    action: Literal["promote", "refuse", "rollback", "rollback-undone", "superseded", "adopted", "shadow-start",
                    "shadow-drop", "shadow-end"]
    from_version: str | None = None
    to_version: str | None = None
    metric: str | None = None
    challenger: float | None = None
    champion: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    reason: str
    flow_run_id: str | None = None
    dataset_fingerprint: str | None = None
    by: str | None = None  # who, when a person acted (an adoption: --by, else the login name; a close call: who
    # answered the approval form, with the reason starting "approved by" / "refused by")


_DECIDED_BY: ContextVar[str | None] = ContextVar("nightshift_audit_decided_by", default=None)


@contextmanager
def decided_by(person: str | None) -> Iterator[None]:
    """Inside, every audit record appended without a `by` names `person` (a person's answer to a close call is
    carried through promote() and record_refusal(), which write their own records); None changes nothing."""
    token = _DECIDED_BY.set(person) if person else None
    try:
        yield
    finally:
        if token is not None:
            _DECIDED_BY.reset(token)


def _audit_experiment(cfg: TrackingConfig) -> str:
    return ensure_experiment(cfg.model_copy(update={"experiment_name": f"{cfg.experiment_name}-audit"}))


def append_audit(cfg: TrackingConfig, record: AuditRecord) -> str:
    """Append a record: an MLflow run in the '<experiment>-audit' experiment plus tags on the versions involved."""
    import json

    if record.by is None and _DECIDED_BY.get():
        record = record.model_copy(update={"by": _DECIDED_BY.get()})
    c = client(cfg)
    tags = {"nightshift.audit.model": record.model_name, "nightshift.audit.action": record.action,
            "nightshift.audit.record": record.model_dump_json(), "mlflow.note.content": record.reason}
    run = c.create_run(_audit_experiment(cfg), run_name=f"{record.action}-{record.model_name}-{record.time}", tags=tags)
    numbers = {k: getattr(record, k) for k in ("challenger", "champion", "ci_low", "ci_high")}
    log_metrics(cfg, run.info.run_id, {k: v for k, v in numbers.items() if v is not None})
    c.set_terminated(run.info.run_id)
    entry = json.dumps(record.model_dump(exclude_none=True))
    set_tag = c.set_prompt_version_tag if is_prompt(cfg, record.model_name) else c.set_model_version_tag
    for version in {record.from_version, record.to_version} - {None}:
        # A deleted version is skipped (absent); the audit run still holds the record.
        registry_call(cfg, f"tagging v{version} of '{record.model_name}' with its audit record",
                      lambda v=version: set_tag(record.model_name, str(v),
                                                f"nightshift.audit.{record.time}.{record.action}",
                                                entry[:5000]), absent=None)
    return run.info.run_id


def read_audit(cfg: TrackingConfig, name: str | None = None) -> list[AuditRecord]:
    """The audit trail, oldest first (optionally for one model)."""
    c = client(cfg)
    exp = c.get_experiment_by_name(f"{cfg.experiment_name}-audit")
    if exp is None:
        return []
    filt = f"tags.`nightshift.audit.model` = '{name}'" if name else ""
    runs = c.search_runs([exp.experiment_id], filter_string=filt, max_results=50_000,
                         order_by=["attributes.start_time ASC"])
    return [AuditRecord.model_validate_json(r.data.tags["nightshift.audit.record"]) for r in runs]
