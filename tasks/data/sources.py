"""A catalogue model's nights: its features staged as one file, labels joined by key once they land, and the
labeled days a challenger trains and is judged on. Missing data is an outcome with the path it was looked for at."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, Field

from nightshift.errors import DataValidationError
from nightshift.events import DATA_MISSING
from nightshift.naming import slug
from nightshift.runlog import run_logger

pass


from tasks.catalogue.schema import SERVED, CatalogueModel, resolve_files
from tasks.data.datasets import fingerprint, retry_if_transient

if TYPE_CHECKING:
    import pandas as pd


# How far back a night looks for its newest labeled day, beyond the labels' lag.
LABEL_LOOKBACK_DAYS = 14


class StagedDay(BaseModel):
    """One day's rows written as one Parquet file (from one file or a glob of many)."""

    day: date
    resolved: str = Field(description="The source template filled in for this day (what was looked for).")
    files: list[str] = Field(default_factory=list, description="The files it named; empty = no data that day.")
    path: str | None = Field(None, description="The staged Parquet file; None when there was no data.")
    rows: int = 0
    fingerprint: str | None = None

    @property
    def missing(self) -> bool:
        """No rows for this day: nothing landed, or only files without rows."""
        return not self.files or self.rows == 0

    @property
    def empty(self) -> bool:
        """Files landed for this day, none with a row (a header only)."""
        return bool(self.files) and self.rows == 0

    @property
    def landed(self) -> str:
        """What landed, as the catalogue names it (never the staged copy): the one file, or the files the template
        matched, or the day of captured traffic."""
        from tasks.data.served import SERVED_PREFIX

        if self.resolved.startswith(SERVED_PREFIX):
            return f"the traffic captured as {self.resolved}"
        if len(self.files) == 1:
            return self.files[0]
        return f"{len(self.files)} files matching {self.resolved}"

    def describe(self) -> str:
        """One line: rows and files, or where nothing was found, or what landed empty."""
        if not self.files:
            return f"no data for {self.day.isoformat()} at {self.resolved}"
        if self.empty:
            return f"no data for {self.day.isoformat()}: {self.landed} landed empty (no rows)"
        return f"{self.rows} rows for {self.day.isoformat()} from {len(self.files)} file(s)"


class LabelJoin(BaseModel):
    """How one day's labels matched its rows."""

    day: date
    labels_resolved: str
    label_rows: int = Field(0, description="Label rows read, every one counted below or joined.")
    rows: int = 0
    labeled: int = 0
    missing_keys: int = Field(0, description="Label rows with a blank key (dropped).")
    unknown_keys: int = Field(0, description="Label rows whose key matches no feature row (dropped).")
    repeated_labels: int = Field(0, description="Label rows repeating another's key and label (one copy kept).")
    duplicate_keys: int = Field(0, description="Keys given conflicting labels (every copy dropped: ambiguous).")

    def warnings(self) -> list[str]:
        """What a person should hear about this join."""
        out = []
        if self.missing_keys:
            out.append(f"{self.missing_keys} label row(s) for {self.day} have no key (dropped)")
        if self.unknown_keys:
            out.append(f"{self.unknown_keys} label row(s) for {self.day} match no row by key (dropped)")
        if self.repeated_labels:
            out.append(f"{self.repeated_labels} repeated label row(s) for {self.day} (same key, same label: "
                       f"one copy kept)")
        if self.duplicate_keys:
            out.append(f"{self.duplicate_keys} key(s) given conflicting labels for {self.day} (all copies dropped)")
        if self.rows - self.labeled:
            out.append(f"{self.rows - self.labeled} of {self.rows} row(s) for {self.day} have no label")
        return out


def night_dir(state_dir: Path, model: CatalogueModel, day: date) -> Path:
    """Where a model's staged files for one day live."""
    return state_dir / "nights" / slug(model.name, 100) / day.isoformat()


def _read_all(files: list[str]) -> pd.DataFrame:
    import pandas as pd

    from tasks.data.datasets import load_table

    frames = [load_table(f) for f in files]
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]


def _write_once(frame: pd.DataFrame, path: Path) -> str:
    """Write `frame` as Parquet unless an identical file is there already; returns the content fingerprint."""
    from tasks.data.datasets import fingerprint

    fp = fingerprint(frame)
    marker = path.with_suffix(".fingerprint")
    if path.exists() and marker.exists() and marker.read_text() == fp:
        return fp  # a rerun of the night: same input, same file, nothing rewritten
    _atomic_parquet(frame, path)
    marker.write_text(fp)
    return fp


def _atomic_parquet(frame: pd.DataFrame, path: Path) -> None:
    """Write Parquet through a temporary file of this writer's own, then rename: a concurrent run of the same night
    never sees (or truncates) half a file."""
    import uuid

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.partial")
    try:
        frame.to_parquet(tmp, index=False)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def stage_features(model: CatalogueModel, day: date, state_dir: Path, served_root: Path | None = None) -> StagedDay:
    """The day's feature rows (every file its template names, or the traffic the server captured) as one Parquet
    file; `missing` if no rows landed (no file, or files with a header only). Rows without the catalogue's id
    columns or the labels' join key are refused (DataValidationError naming the column and the landed file)."""
    if model.features == SERVED:
        from tasks.data.served import SERVED_PREFIX, load_served, served_parts

        resolved = f"{SERVED_PREFIX}{model.name}/{day} ({served_root})"
        files = [str(p) for p in served_parts(served_root, model.name, day)] if served_root else []
        if not files:
            return StagedDay(day=day, resolved=resolved)
        frame = load_served(served_root, model.name, day, model.id_columns[0] if model.id_columns else None)
    else:
        resolved, files = resolve_files(model.features, day, state_dir)
        if not files:
            return StagedDay(day=day, resolved=resolved)
        frame = _read_all(files)
    if len(frame) == 0:  # a header and no rows: no data tonight, as if nothing had landed
        return StagedDay(day=day, resolved=resolved, files=files)
    _require_keys(model, StagedDay(day=day, resolved=resolved, files=files, rows=len(frame)), frame)
    path = night_dir(state_dir, model, day) / "features.parquet"
    fp = _write_once(frame, path)
    return StagedDay(day=day, resolved=resolved, files=files, path=str(path), rows=len(frame), fingerprint=fp)


def _require_keys(model: CatalogueModel, landed: StagedDay, frame: pd.DataFrame) -> None:
    """Refuse a night whose rows lack the catalogue's id columns or the labels' join key: staged anyway, its labels
    could never be joined to them (nor its rows told apart), and nothing would say so until the labels landed."""
    keys = list(model.labels.key) if model.labels else []
    absent = [c for c in dict.fromkeys([*model.id_columns, *keys]) if c not in frame.columns]
    if not absent:
        return

    def role(column: str) -> str:
        roles = [name for name, listed in (("id_columns", model.id_columns), ("labels.key", keys)) if column in listed]
        return f"'{column}' ({' and '.join(roles)})"

    why = ("their labels could never be joined to them" if set(absent) & set(keys)
           else "they could not be told apart by id")
    it = "it" if len(absent) == 1 else "them"
    fix = (f"requests to the model server must send {it} for capture to record {it}" if model.features == SERVED
           else f"land the night's rows with {it} and run the night again")
    raise DataValidationError(
        f"model '{model.name}': the rows for {landed.day.isoformat()} in {landed.landed} lack column(s) "
        f"{', '.join(map(role, absent))}, so {why}; {fix}")


def day_rows(model: CatalogueModel, day: date, state_dir: Path) -> tuple[str, list[str]]:
    """Where a day's rows are and the files holding them: the template's files, or for a model fed by served traffic
    the copy its night staged (what the server captured can roll off; the night's copy is what was monitored)."""
    if model.features != SERVED:
        return resolve_files(model.features, day, state_dir)
    staged = night_dir(state_dir, model, day) / "features.parquet"
    return str(staged), [str(staged)] if staged.is_file() else []


def join_labels(model: CatalogueModel, day: date, state_dir: Path) -> tuple[pd.DataFrame, LabelJoin] | None:
    """Day `day`'s rows with their labels joined by key; None while its labels (or its rows) have not landed."""
    assert model.labels is not None, "join_labels is for models whose labels land apart"
    labels_resolved, label_files = resolve_files(model.labels.source, day, state_dir)
    features_resolved, feature_files = day_rows(model, day, state_dir)
    if not label_files or not feature_files:
        return None
    key, label = model.labels.key, model.label
    labels = _read_all(label_files)
    absent = [c for c in (*key, label) if c not in labels.columns]
    if absent:
        raise DataValidationError(f"labels for {day} at {labels_resolved} lack column(s) "
                                  f"{', '.join(map(repr, absent))} (model '{model.name}' joins on {key})")
    rows = _read_all(feature_files).drop(columns=[label], errors="ignore")
    absent = [c for c in key if c not in rows.columns]
    if absent:
        raise DataValidationError(f"rows for {day} at {features_resolved} lack the join key column(s) "
                                  f"{', '.join(map(repr, absent))} (model '{model.name}')")
    for column in key:
        _same_key_kind(model, column, (rows[column], features_resolved, feature_files),
                       (labels[column], labels_resolved, label_files))
    keyed = labels[[*key, label]].dropna(subset=key)
    unique = keyed.drop_duplicates()  # the same label delivered twice is still one label
    conflicting = unique.duplicated(subset=key, keep=False)
    duplicate_keys = int(unique.loc[conflicting, key].drop_duplicates().shape[0])
    joinable = unique.loc[~conflicting]
    try:
        found = joinable[key].merge(rows[key].drop_duplicates(), on=key, how="left", indicator=True)["_merge"]
        joined = rows.merge(joinable, on=key, how="left", validate="many_to_one")
    except (TypeError, ValueError) as exc:  # key types pandas cannot compare (e.g. dates with and without zone)
        dtypes = ", ".join(f"'{c}' {rows[c].dtype} vs {labels[c].dtype}" for c in key)
        raise DataValidationError(f"model '{model.name}': rows at {features_resolved} and labels at "
                                  f"{labels_resolved} cannot be joined on {dtypes}: {exc}") from exc
    report = LabelJoin(day=day, labels_resolved=labels_resolved, label_rows=len(labels), rows=len(rows),
                       labeled=int(joined[label].notna().sum()), missing_keys=len(labels) - len(keyed),
                       unknown_keys=int((found != "both").sum()), repeated_labels=len(keyed) - len(unique),
                       duplicate_keys=duplicate_keys)
    return joined, report


def _key_kind(values: pd.Series) -> str:
    """What a key column holds, in the terms pandas joins by: numbers, text, dates... ('empty' joins anything)."""
    import pandas as pd

    if isinstance(values.dtype, pd.CategoricalDtype):
        values = pd.Series(values.cat.categories)
    kind = pd.api.types.infer_dtype(values, skipna=True)
    return {"integer": "number", "floating": "number", "mixed-integer-float": "number", "decimal": "number",
            "datetime64": "datetime", "datetime": "datetime", "date": "datetime"}.get(kind, kind)


def _same_key_kind(model: CatalogueModel, column: str, rows: tuple[pd.Series, str, list[str]],
                   labels: tuple[pd.Series, str, list[str]]) -> None:
    """Refuse to join a key holding numbers on one side and text on the other: pandas would raise a bare error,
    and no normalisation is safe ('007' and 7 may or may not be the same customer)."""
    kinds = [_key_kind(values) for values, _, _ in (rows, labels)]
    if "empty" in kinds or kinds[0] == kinds[1]:
        return

    def where(side: tuple[pd.Series, str, list[str]], kind: str) -> str:
        values, resolved, files = side
        source = files[0] if len(files) == 1 else f"{resolved} ({len(files)} files)"
        return f"{source} (dtype {values.dtype}, {kind})"

    raise DataValidationError(
        f"model '{model.name}': key column '{column}' holds different types in the rows at {where(rows, kinds[0])} "
        f"and the labels at {where(labels, kinds[1])}; write the key with one type on both sides "
        f"(labels cannot be joined to rows until then)")


class LabeledWindow(BaseModel):
    """The days a night trains and judges on: the holdout is the newest labeled day, the window the days before."""

    night: date
    holdout_day: date | None
    window: list[date] = Field(default_factory=list, description="Labeled days the challenger trains on.")
    missing: list[date] = Field(default_factory=list, description="Days inside the window with no labeled data.")
    kept_out: list[date] = Field(default_factory=list, description="Labeled days kept out: their labels are suspect.")

    def describe(self) -> str:
        """One line for logs and artifacts."""
        if self.holdout_day is None:
            return f"no labeled day yet as of {self.night}"
        gaps = f"; missing, skipped: {', '.join(d.isoformat() for d in self.missing)}" if self.missing else ""
        kept = f"; labels kept out: {', '.join(d.isoformat() for d in self.kept_out)}" if self.kept_out else ""
        return (f"train on {len(self.window)} labeled day(s) {self.window[0] if self.window else '-'}.."
                f"{self.window[-1] if self.window else '-'}, judge on {self.holdout_day}{gaps}{kept}")

    def without(self, days: list[date]) -> LabeledWindow:
        """The window with `days` kept out (suspect labels): out of training, and a kept-out holdout day gives way
        to the newest labeled day before it."""
        out = sorted(set(days) & ({*self.window} | ({self.holdout_day} if self.holdout_day else set())))
        if not out:
            return self
        landed = [d for d in [*self.window, *([self.holdout_day] if self.holdout_day else [])] if d not in out]
        return LabeledWindow(night=self.night, holdout_day=landed[-1] if landed else None, window=landed[:-1],
                             missing=self.missing, kept_out=[*self.kept_out, *out])


def labels_landed(model: CatalogueModel, day: date, night: date, state_dir: Path) -> bool:
    """Whether day `day` has labels as of `night`: inline labels come with its rows; separate ones `lag` days later."""
    if day > night:
        return False
    if model.labels is None:
        return bool(day_rows(model, day, state_dir)[1])
    if day > night - timedelta(days=model.labels.lag_days):
        return False  # not landed yet as of this night (a backfill sees files from its future: ignored)
    return bool(resolve_files(model.labels.source, day, state_dir)[1]) and \
        bool(day_rows(model, day, state_dir)[1])


def labeled_window(model: CatalogueModel, night: date, state_dir: Path) -> LabeledWindow:
    """Holdout = the newest labeled day as of `night`; window = the `window_days` calendar days before it, minus
    days with nothing labeled (reported)."""
    lag = model.labels.lag_days if model.labels else 0
    newest = next((night - timedelta(days=back) for back in range(lag, lag + LABEL_LOOKBACK_DAYS + 1)
                   if labels_landed(model, night - timedelta(days=back), night, state_dir)), None)
    if newest is None:
        return LabeledWindow(night=night, holdout_day=None)
    days = [newest - timedelta(days=back) for back in range(model.window_days, 0, -1)]
    landed = [d for d in days if labels_landed(model, d, night, state_dir)]
    return LabeledWindow(night=night, holdout_day=newest, window=landed, missing=[d for d in days if d not in landed])


def resolve_night(explicit: date | None, timezone: str, offset_days: int = 0) -> date:
    """The night a run is for: an explicit date, else its scheduled start (or now) in the schedule's time zone,
    minus the schedule's night offset."""
    from datetime import datetime
    from datetime import timezone as tz
    from zoneinfo import ZoneInfo

    if explicit is not None:
        return explicit
    from prefect.runtime import flow_run

    start = flow_run.scheduled_start_time if flow_run.get_id() else None
    return (start or datetime.now(tz.utc)).astimezone(ZoneInfo(timezone)).date() - timedelta(days=offset_days)


def labeled_day(model: CatalogueModel, day: date, state_dir: Path) -> tuple[pd.DataFrame, list[str]]:
    """One day's rows that carry a label (inline, or joined once landed), and what to warn about."""
    if model.labels is None:
        staged = stage_features(model, day, state_dir)
        frame = None if staged.missing else _read_all(staged.files)
        warnings: list[str] = []
    else:
        joined = join_labels(model, day, state_dir)
        frame, warnings = (joined[0], joined[1].warnings()) if joined else (None, [])
    if frame is None:
        return _empty(), [f"no labeled data for {day}"]
    if model.label not in frame.columns:
        raise DataValidationError(f"rows for {day} of model '{model.name}' have no label column '{model.label}'")
    return frame.loc[frame[model.label].notna()].reset_index(drop=True), warnings


def landed_labels(model: CatalogueModel, day: date, night: date, state_dir: Path) -> tuple[pd.DataFrame, str] | None:
    """Day `day`'s labels as of `night`, keyed by the model's first id column (the id its served rows carry): the
    labels file once it has landed (`lag_days` later), or for labels that come with the rows the day's landed files.
    Returns (rows of key and label, where they were read), None while nothing has landed. A label file without the
    key or the label is refused, naming the file."""
    key = model.id_columns[0] if model.id_columns else None
    if key is None or day > night or (model.labels is not None and day > night - timedelta(days=model.labels.lag_days)):
        return None
    template = model.labels.source if model.labels is not None else model.features
    if template == SERVED:
        return None
    resolved, files = resolve_files(template, day, state_dir)
    if not files:
        return None
    frame = _read_all(files)
    absent = [c for c in (key, model.label) if c not in frame.columns]
    if absent:
        raise DataValidationError(f"labels for {day} at {resolved} lack column(s) {', '.join(map(repr, absent))} "
                                  f"(model '{model.name}' joins its served rows to labels by '{key}')")
    return frame[[key, model.label]], resolved


def _empty() -> pd.DataFrame:
    import pandas as pd

    return pd.DataFrame()


class WindowFiles(BaseModel):
    """The challenger's training rows and the gate's holdout, written as Parquet, and what was noticed on the way."""

    window_path: str
    holdout_path: str
    fingerprint: str
    window_rows: int
    holdout_rows: int
    warnings: list[str] = Field(default_factory=list)


def build_labeled_window(model: CatalogueModel, window: LabeledWindow, state_dir: Path) -> WindowFiles:
    """Write the window's labeled days (training) and the holdout day (judging) as Parquet; a row repeated in
    both is judged never."""
    import numpy as np
    import pandas as pd

    from tasks.data.datasets import fingerprint

    assert window.holdout_day is not None, "no labeled day to judge on"
    days = [labeled_day(model, d, state_dir) for d in window.window]
    holdout, holdout_warnings = labeled_day(model, window.holdout_day, state_dir)
    warnings = [w for _, ws in days for w in ws] + holdout_warnings
    frames = [f for f, _ in days if len(f)]
    train = pd.concat(frames, ignore_index=True) if frames else holdout.iloc[:0]
    if len(train):
        hashes = pd.util.hash_pandas_object(pd.concat([train, holdout], ignore_index=True), index=False).to_numpy()
        holdout = holdout.loc[~np.isin(hashes[len(train):], hashes[:len(train)])].reset_index(drop=True)
    fp = fingerprint(train)
    out = state_dir / "windows" / slug(model.name, 100)
    window_path, holdout_path = out / f"window-{fp[:16]}.parquet", out / f"holdout-{fp[:16]}.parquet"
    _atomic_parquet(train, window_path)
    _atomic_parquet(holdout, holdout_path)
    return WindowFiles(window_path=str(window_path), holdout_path=str(holdout_path), fingerprint=fp,
                       window_rows=len(train), holdout_rows=len(holdout), warnings=warnings)


def build_window(frames: list[pd.DataFrame], newest: pd.DataFrame, label: str, holdout_fraction: float, seed: int,
                 out_dir: Path) -> tuple[str, str, str]:
    """Write the challenger's training window and tonight's holdout as Parquet; returns their paths + window fingerprint."""
    import numpy as np
    import pandas as pd

    holdout = newest.sample(frac=holdout_fraction, random_state=seed)
    rest = newest.drop(index=holdout.index)
    window = pd.concat([*frames, rest], ignore_index=True)
    window = window.loc[window[label].notna()].reset_index(drop=True)
    # A row repeated in the feed must not be both trained on and judged (hashed together: same dtypes).
    hashes = pd.util.hash_pandas_object(pd.concat([window, holdout], ignore_index=True), index=False).to_numpy()
    holdout = holdout.loc[~np.isin(hashes[len(window):], hashes[:len(window)])]
    fp = fingerprint(window)
    out_dir.mkdir(parents=True, exist_ok=True)
    window_path, holdout_path = out_dir / f"window-{fp[:16]}.parquet", out_dir / f"holdout-{fp[:16]}.parquet"
    window.to_parquet(window_path, index=False)
    holdout.reset_index(drop=True).to_parquet(holdout_path, index=False)
    return str(window_path), str(holdout_path), fp


MISSING_DATA_EVENT = DATA_MISSING  # the name lives in nightshift.events


def emit_missing_data(model: CatalogueModel, staged: StagedDay) -> str:
    """A Prefect event an automation can alert on: no rows for this model tonight (nothing landed, or files without
    rows); returns its id."""
    from nightshift.events import emit_model_event

    run_logger(__name__).warning("%s: %s", model.name, staged.describe())
    return emit_model_event(MISSING_DATA_EVENT, model.name, reason=staged.describe(), night=staged.day,
                            payload={"looked_at": staged.resolved, "landed_empty": staged.empty})


stage_features_task = task(stage_features, name="stage-features", retries=2, retry_delay_seconds=[2, 10],
                           retry_condition_fn=retry_if_transient, cache_policy=NO_CACHE)
join_labels_task = task(join_labels, name="join-labels", cache_policy=NO_CACHE)
labeled_window_task = task(labeled_window, name="find-labeled-days", cache_policy=NO_CACHE)
build_labeled_window_task = task(build_labeled_window, name="build-labeled-window", cache_policy=NO_CACHE)
labeled_day_task = task(labeled_day, name="labeled-day", cache_policy=NO_CACHE)
build_window_task = task(build_window, name="build-training-window", cache_policy=NO_CACHE)
