"""A two-segment churn world where the offline gate and live traffic disagree (the shadow demo and its test).

Customers belong to segment a or b. Segment a churns with x1 (and, in the new world, with x3 too); segment b churns
against x1 and with x2. In the old world half the customers are b; in the new one the landed files are almost all a,
while the live traffic a model server is asked about can be mostly b. A challenger trained on the new files beats
the champion on them, yet is worse on that traffic: only a shadow on live rows shows it.

Every day is drawn from its own seed (the calendar date), so a day is the same whichever call draws it: the labels
landed a day later match the rows served the day before. Plain functions, no Prefect: `land_segment_day` writes a
day's features file (and, once they are known, its labels file keyed by customer_id) where a catalogue entry's
templates look.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

SEGMENT_ID = "customer_id"
SEGMENT_LABEL = "churned"
SEGMENT_FEATURES = (SEGMENT_ID, "segment", "x1", "x2", "x3")  # what a features file (and a request) carries


def segment_day(day: date, rows: int, b_share: float, new_world: bool) -> pd.DataFrame:
    """A day's customers: customer_id (unique per day), segment, x1..x3 and churned (0/1).

    Segment a churns with x1 (and, if `new_world`, with x3 as strongly); segment b against x1 and with x2. About
    `b_share` of the rows are segment b. Seeded by the day alone: the same arguments give the same frame.
    """
    import pandas as pd

    if rows < 1 or not 0.0 <= b_share <= 1.0:
        raise ValueError(f"segment_day needs rows >= 1 and 0 <= b_share <= 1, got rows={rows}, b_share={b_share}")
    seed = day.toordinal()
    rng = np.random.default_rng(seed)
    segment = np.where(rng.random(rows) < b_share, "b", "a")
    x1, x2, x3 = rng.normal(size=(3, rows))
    logit = np.where(segment == "b", -2.0 * x1 + 1.5 * x2, 2.0 * x1 + (2.0 * x3 if new_world else 0.0))
    churned = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(int)
    return pd.DataFrame({SEGMENT_ID: seed * 100_000 + np.arange(rows), "segment": segment, "x1": x1, "x2": x2,
                         "x3": x3, SEGMENT_LABEL: churned})


def landing_path(template: str, day: date, state_dir: Path) -> Path:
    """A catalogue template ({state_dir}, {date:...}) filled in for `day`: one local file (no glob, no URL)."""
    if "://" in template or any(c in template for c in "*?["):
        raise ValueError(f"land_segment_day writes one local file per day; the template {template!r} is a URL or "
                         f"a glob")
    return Path(template.format(date=day, state_dir=state_dir))


def land_segment_day(frame: pd.DataFrame, day: date, state_dir: Path, features_template: str,
                     labels_template: str | None = None) -> list[Path]:
    """Write `day`'s rows where a catalogue entry looks: the features file (every column but the label) at
    `features_template`, and, when `labels_template` is given (the labels have landed), the labels file
    (customer_id, churned) there. Returns the paths written."""
    missing = [c for c in (*SEGMENT_FEATURES, SEGMENT_LABEL) if c not in frame.columns]
    if missing:
        raise ValueError(f"land_segment_day: the frame lacks column(s) {', '.join(missing)} (use segment_day)")
    written = []
    targets = [(features_template, frame.drop(columns=[SEGMENT_LABEL]))]
    if labels_template is not None:
        targets.append((labels_template, frame[[SEGMENT_ID, SEGMENT_LABEL]]))
    for template, part in targets:
        path = landing_path(template, day, Path(state_dir))
        path.parent.mkdir(parents=True, exist_ok=True)
        part.to_parquet(path, index=False)
        written.append(path)
    return written
