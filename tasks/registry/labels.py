"""Suspect labels on record: a labeled day whose labels look wrong is kept out of training and judging until a
person clears it (`python -m cli.labels clear`) or a later night finds its labels landed again and right.

Each record is a tag on the model's realized-quality run (`nightshift.labels.suspect.<day>`), holding the reason,
the night that found it and a digest of the labels it judged: the same labels are never reported twice, and a
clearance holds only for the labels a person looked at.
"""

from __future__ import annotations

from datetime import date, datetime, timezone
from typing import Any

from pydantic import BaseModel, Field

from tasks.registry.store import TrackingConfig, client

SUSPECT_DAY_TAG = "nightshift.labels.suspect."  # + YYYY-MM-DD


class SuspectLabels(BaseModel):
    """One day's labels that looked wrong, and who or what cleared them."""

    day: date
    night: date = Field(description="The night that found them.")
    version: str = Field(description="The champion whose reference they were compared with.")
    reason: str
    rows: int
    digest: str = Field(description="Content hash of the labeled rows judged.")
    event_id: str | None = None
    cleared_by: str | None = Field(None, description="A person (clear-labels) or 'night YYYY-MM-DD' (relanded).")
    cleared_reason: str | None = None
    cleared_at: str | None = None

    @property
    def kept_out(self) -> bool:
        """Whether the day is still kept out of training and judging."""
        return self.cleared_by is None

    def describe(self) -> str:
        """One line for logs and the night's table."""
        state = "kept out" if self.kept_out else f"cleared by {self.cleared_by}"
        return f"labels of {self.day} suspect ({state}): {self.reason}"


def suspect_records(tags: dict[str, str]) -> dict[date, SuspectLabels]:
    """The suspect-label records among a quality run's tags, by day."""
    return {date.fromisoformat(k[len(SUSPECT_DAY_TAG):]): SuspectLabels.model_validate_json(v)
            for k, v in tags.items() if k.startswith(SUSPECT_DAY_TAG)}


def write_suspect(cfg: TrackingConfig, run_id: str, record: SuspectLabels) -> None:
    """Write (or overwrite) a day's record on the quality run."""
    client(cfg).set_tag(run_id, f"{SUSPECT_DAY_TAG}{record.day.isoformat()}", record.model_dump_json())


def cleared(record: SuspectLabels, by: str, reason: str) -> SuspectLabels:
    """The record cleared by `by` (a person or a night), stamped now."""
    return record.model_copy(update={"cleared_by": by, "cleared_reason": reason,
                                     "cleared_at": datetime.now(timezone.utc).isoformat(timespec="seconds")})


def labels_digest(frame: Any, label: str) -> str:
    """What a clearance and a report are about: the day's labeled rows' content."""
    from tasks.data.datasets import fingerprint

    return fingerprint(frame.reset_index(drop=True))[:16] if label in frame.columns else ""
