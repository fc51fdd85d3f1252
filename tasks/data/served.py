"""Captured traffic on disk: the file format the model server writes (serving/capture.py) and everything that
reads it back (the `served:<model>/<day>` dataset source, skew checks, catalogue models whose features are served).

    {root}/{model}/{YYYY-MM-DD}/part-{opened %Y%m%dT%H%M%S%fZ}-{pid}-{seq}.parquet

Each row: `request_id`, `row` (index in its request), `row_id` (the request's id column, when it has one),
`captured_at` (UTC), `model`, `model_version`, the model's feature columns, `prediction` and one `proba_<class>`
column per class. A part is `<name>.parquet.inprogress` until it is closed; readers only ever see closed parts.

A model's shadow (another version the server scores beside the champion on the captured requests, serving/shadow.py)
writes its predictions to its own sub-folder, which no date-named day folder reader above ever lists:

    {root}/{model}/shadow/{YYYY-MM-DD}/part-....parquet

with the same columns minus the features: `request_id`, `row`, `row_id`, `captured_at` (the request's time, equal
to the champion's row), `model`, `model_version` (the shadow's version), `prediction`, `proba_<class>`. Joined on
(`request_id`, `row`) with the champion's rows of the same day, each captured request's rows get both models'
predictions (`read_shadow`).
"""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

from nightshift.errors import DataLoadError
from nightshift.naming import MODEL_NAME_PATTERN

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa


SERVED_PREFIX = "served:"  # a dataset source "served:<model>/<YYYY-MM-DD>": that day's captured traffic
IN_PROGRESS = ".inprogress"
META_COLUMNS = ("request_id", "row", "row_id", "captured_at", "model", "model_version")
PREDICTION = "prediction"
PROBA_PREFIX = "proba_"
SHADOW_FOLDER = "shadow"  # {root}/{model}/shadow/{day}/: a shadow model's predictions of the captured requests


class NoServedData(DataLoadError):
    """No closed capture part holds rows for the model and day (and version) asked for."""


def model_dir(model: str) -> str:
    """A model's folder name: the registry name itself when it is path-safe, else percent-encoded."""
    if re.fullmatch(MODEL_NAME_PATTERN, model):
        return model
    return quote(model, safe="").replace(".", "%2E")


def served_days(root: Path | str, model: str) -> list[date]:
    """The days with at least one closed capture part for `model`, oldest first."""
    folder = Path(root) / model_dir(model)
    if not folder.is_dir():
        return []
    days = []
    for sub in folder.iterdir():
        try:
            day = date.fromisoformat(sub.name)
        except ValueError:
            continue
        if next(sub.glob("part-*.parquet"), None) is not None:
            days.append(day)
    return sorted(days)


def served_parts(root: Path | str, model: str, day: date | str) -> list[Path]:
    """The closed parts of one model and UTC day in name (= opening time) order; `.inprogress` files are not."""
    return sorted((Path(root) / model_dir(model) / _day_name(day)).glob("part-*.parquet"))


def read_served(root: Path | str, model: str, day: date | str, version: str | None = None) -> pd.DataFrame:
    """A UTC day of a model's captured traffic (closed parts only), optionally one version's rows: "current" data.

    Raises NoServedData when there is none, naming the days that have some.
    """
    name = _day_name(day)
    parts = served_parts(root, model, name)
    if not parts:
        days = ", ".join(d.isoformat() for d in served_days(root, model)[-10:]) or "none"
        raise NoServedData(f"no captured traffic of model {model!r} on {name} under {Path(root)} "
                           f"(days with traffic: {days})")
    return _read_parts(parts, version, f"captured traffic of model {model!r}", f"on {name} under {Path(root)}")


def read_shadow(root: Path | str, model: str, day: date | str, version: str | None = None) -> pd.DataFrame:
    """A UTC day of the predictions a model's shadow made on its captured requests (closed parts only), optionally
    one shadow version's; join them with `read_served` on (request_id, row).

    Raises NoServedData when there is none, naming the days that have some.
    """
    name = _day_name(day)
    folder = Path(root) / model_dir(model) / SHADOW_FOLDER
    parts = sorted((folder / name).glob("part-*.parquet"))
    if not parts:
        days = sorted(d.name for d in folder.glob("*") if next(d.glob("part-*.parquet"), None) is not None) \
            if folder.is_dir() else []
        raise NoServedData(f"no shadow predictions of model {model!r} on {name} under {folder} (days with shadow "
                           f"predictions: {', '.join(days[-10:]) or 'none'}; a shadow is loaded with POST "
                           f"/models/{model}/shadow?version=N)")
    return _read_parts(parts, version, f"shadow predictions of model {model!r}", f"on {name} under {folder}")


def _read_parts(parts: list[Path], version: str | None, what: str, where: str) -> pd.DataFrame:
    """Closed parts as one frame, optionally one version's rows (NoServedData naming the versions there are)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    tables = []
    for path in parts:
        try:
            tables.append(pq.read_table(path))
        except Exception as exc:
            raise DataLoadError(f"capture part {path} could not be read: {exc}") from exc
    table = pa.concat_tables(tables, promote_options="permissive")
    if version is not None:
        table = table.filter(pc.equal(table["model_version"], str(version)))
        if table.num_rows == 0:
            raise NoServedData(f"no {what} version {version} {where} (versions that day: "
                               f"{', '.join(_versions(tables))})")
    return table.to_pandas()


def _versions(tables: list[pa.Table]) -> list[str]:
    import pyarrow as pa
    import pyarrow.compute as pc

    return sorted(set(pc.unique(pa.chunked_array([t["model_version"] for t in tables])).to_pylist()))


def _day_name(day: date | str) -> str:
    """A day as YYYY-MM-DD (checked)."""
    return (day if isinstance(day, date) else date.fromisoformat(str(day))).isoformat()


def parse_served(source: str) -> tuple[str, date]:
    """The model and day of a "served:<model>/<YYYY-MM-DD>" source; DataLoadError saying the form otherwise."""
    body = source[len(SERVED_PREFIX):]
    model, _, day = body.rpartition("/")
    try:
        if not model:
            raise ValueError("no model")
        return model, date.fromisoformat(day)
    except ValueError:
        raise DataLoadError(f"served source {source!r}: write served:<model>/<YYYY-MM-DD>, e.g. "
                            f"served:demo-churn/2026-01-05") from None


def load_served(root: Path, model: str, day: date, id_column: str | None = None) -> pd.DataFrame:
    """A day of the model's captured traffic as a batch: its feature columns (and, named `id_column`, the id the
    requests sent), without the capture's bookkeeping, prediction and probability columns."""

    frame = read_served(root, model, day)
    features = [c for c in frame.columns if c not in META_COLUMNS and c != PREDICTION
                and not c.startswith(PROBA_PREFIX)]
    out = frame[features].copy()
    if id_column and "row_id" in frame.columns and frame["row_id"].notna().any():
        out.insert(0, id_column, _ids(frame["row_id"]))
    return out


def _ids(values: pd.Series) -> pd.Series:
    """Captured ids (kept as text) back as integers when every one is an integer, so they join numeric keys."""
    import pandas as pd

    try:
        numbers = pd.to_numeric(values, errors="raise")
    except (ValueError, TypeError):
        return values
    return numbers.astype("int64") if numbers.notna().all() and (numbers % 1 == 0).all() else values
