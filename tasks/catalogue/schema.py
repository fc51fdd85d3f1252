"""The model catalogue (`models.yaml`): which models nightshift looks after and where each night's data lands."""

from __future__ import annotations

import string
from datetime import date
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from nightshift.errors import ConfigError
from nightshift.naming import MODEL_NAME_PATTERN
from nightshift.settings import known_timezone
from tasks.catalogue.config import (
    EstimatorParams,
    GateConfig,
    MonitorSettings,
    Task,
    check_metric,
    check_param_grid,
    check_tolerances,
    task_defaults,
)

PLACEHOLDERS = ("date", "state_dir")
SAMPLE_NIGHT = date(2026, 11, 25)
GLOB_CHARS = frozenset("*?[")


def check_template(template: str, *, needs_date: bool = True) -> str:
    """A source template may use only {date[:strftime]} and {state_dir}; raises ValueError saying what is wrong."""
    try:
        fields = [(name, spec) for _, name, spec, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as exc:
        raise ValueError(f"template {template!r} is malformed ({exc}); write a brace as {{{{ or }}}}") from None
    unknown = sorted({name for name, _ in fields if name not in PLACEHOLDERS})
    if unknown:
        raise ValueError(f"template {template!r} has unknown placeholder(s) {', '.join('{' + u + '}' for u in unknown)}"
                         "; use {date:%Y-%m-%d} (any strftime format) and {state_dir}")
    if needs_date and not any(name == "date" for name, _ in fields):
        raise ValueError(f"template {template!r} has no {{date}} placeholder: every night would read the same data")
    try:
        render(template, SAMPLE_NIGHT, Path("."))
    except (ValueError, TypeError) as exc:
        raise ValueError(f"template {template!r} cannot be filled in: {exc}") from None
    return template


def render(template: str, night: date, state_dir: Path) -> str:
    """The template filled in for one night."""
    return template.format(date=night, state_dir=state_dir)


class Schedule(BaseModel):
    """When a model's night runs: a cron expression read in an IANA time zone."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cron: str = Field("0 2 * * *", title="Cron", description="Five fields: minute hour day month weekday.")
    timezone: str = Field("UTC", title="Time zone", description="IANA name the cron is read in (the night's date too).")
    night_offset_days: int = Field(0, ge=0, le=31, title="Night offset (days)",
                                   description="The night a run covers: its scheduled date in the time zone minus "
                                               "this many days (1: a 02:00 run covers yesterday's files).")

    @field_validator("cron")
    @classmethod
    def _five_fields(cls, value: str) -> str:
        from prefect.client.schemas.schedules import CronSchedule  # what the deployment's schedule will be

        try:
            CronSchedule(cron=value)
        except ValidationError:
            valid = False
        else:
            valid = len(value.split()) == 5
        if not valid:
            raise ValueError(f"cron {value!r} is not a valid 5-field expression (minute hour day month weekday)")
        return value

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        return known_timezone(value)


class LabelSource(BaseModel):
    """Labels that land apart from the features: a file per night, joined to the features by key, days later."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: str = Field(..., title="Labels source", description="Path/URL template of night D's labels.")
    key: list[str] = Field(..., min_length=1, title="Join key", description="Column(s) that match labels to rows.")
    lag_days: int = Field(1, ge=0, le=365, title="Label lag (days)", description="Night D's labels land on D + lag.")

    @field_validator("key", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("source")
    @classmethod
    def _template(cls, value: str) -> str:
        return value if value == SERVED else check_template(value)


SERVED = "served"  # a model's features: the traffic its server captured that day


class CatalogueModel(BaseModel):
    """One model: its data, how it is trained and gated, when its night runs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(..., pattern=MODEL_NAME_PATTERN, title="Registered model name")
    features: str = Field(..., title="Features source",
                          description="Path/URL template of night D's rows, e.g. data/churn/{date:%Y-%m-%d}.parquet "
                                      "(globs allowed: s3://bucket/dt={date:%Y-%m-%d}/*.parquet), or 'served': "
                                      "the rows the model server scored on day D (traffic capture).")
    label: str = Field(..., min_length=1, title="Label column")
    task: Task = Field("classification", title="Task",
                       description="classification (classes, probabilities) or regression (a number: rmse, mae, r2; "
                                   "the gate's floor is then a ceiling for rmse and mae).")
    labels: LabelSource | None = Field(None, title="Labels source",
                                       description="Set when labels land apart from the features; else they come "
                                                   "with them.")
    id_columns: list[str] = Field(default_factory=list, title="Id columns", description="Never features.")
    time_column: str | None = Field(None, title="Time column", description="Never a feature.")
    exclude_columns: list[str] = Field(default_factory=list, title="Excluded columns", description="Never features.")
    valid_ranges: dict[str, tuple[float, float]] = Field(
        default_factory=dict, title="Valid ranges",
        description="Numeric feature -> [min, max] it can take whatever a training window saw (day_of_week: [0, 6], "
                    "a seasonal temperature): the contract accepts these values even when a short window never "
                    "saw them. Other columns keep the range of the data they were trained on.")
    estimator: EstimatorParams = Field(default_factory=EstimatorParams, title="Estimator")
    cv_folds: int = Field(3, ge=2, le=20, title="CV folds")
    gate: GateConfig = Field(default_factory=GateConfig, title="Promotion gate")
    monitor: MonitorSettings = Field(default_factory=MonitorSettings, title="Alert thresholds")
    window_days: int = Field(7, ge=1, le=365, title="Training window (days)",
                             description="The newest labeled days the challenger trains on.")
    schedule: Schedule = Field(default_factory=Schedule, title="Schedule")
    enabled: bool = Field(True, title="Enabled", description="Disabled models are listed but never run.")

    @field_validator("features")
    @classmethod
    def _template(cls, value: str) -> str:
        return check_template(value)

    @model_validator(mode="before")
    @classmethod
    def _task_defaults(cls, data: Any) -> Any:
        return task_defaults(data)

    @model_validator(mode="after")
    def _fits_task(self) -> CatalogueModel:
        check_metric(self.task, self.gate.metric, "gate.metric")
        check_metric(self.task, self.monitor.metric, "monitor.metric")
        check_tolerances(self.gate.metric, "gate", {"min_margin": self.gate.min_margin,
                                                    "slice_tolerance": self.gate.slice_tolerance,
                                                    "shadow_margin": self.gate.shadow_margin})
        check_tolerances(self.monitor.metric, "monitor", {"max_metric_drop": self.monitor.max_metric_drop})
        if self.estimator.factory is None:
            check_param_grid(self.estimator.kind, self.estimator.param_grid, self.task)
        return self

    @model_validator(mode="after")
    def _columns_agree(self) -> CatalogueModel:
        never = {*self.id_columns, *self.exclude_columns, *([self.time_column] if self.time_column else [])}
        if self.label in never:
            raise ValueError(f"label '{self.label}' is also listed as an id, time or excluded column")
        bad = [f"{c} {lo}..{hi}" for c, (lo, hi) in self.valid_ranges.items() if not lo < hi or c in never
               or c == self.label]
        if bad:
            raise ValueError(f"valid_ranges {', '.join(bad)}: each needs min < max on a feature column")
        if self.features == SERVED and self.labels is None:
            raise ValueError("features: served needs a labels source: served rows never carry their labels")
        if self.gate.shadow != "off":
            self._check_shadow()
        return self

    def _check_shadow(self) -> None:
        """A shadow is judged on served rows joined to their labels by the row id the server captures (the first
        id column): the model needs one, and labels that land apart must be keyed by it alone."""
        if not self.id_columns:
            raise ValueError(f"gate.shadow: {self.gate.shadow} needs id_columns: the model server captures the first "
                             "one as each served row's id, which joins the row to its label")
        if self.labels is not None and self.labels.key != self.id_columns[:1]:
            raise ValueError(f"gate.shadow: {self.gate.shadow} joins served rows to labels by the first id column "
                             f"'{self.id_columns[0]}'; labels.key is {self.labels.key}: key the labels by "
                             f"'{self.id_columns[0]}' alone")

    @property
    def non_features(self) -> tuple[str, ...]:
        """Columns that are never features: ids, time, excluded, and the labels' join key."""
        keys = self.labels.key if self.labels else []
        return tuple(dict.fromkeys([*self.id_columns, *keys, *([self.time_column] if self.time_column else []),
                                    *self.exclude_columns]))


class Catalogue(BaseModel):
    """Every model nightshift looks after; names are unique."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    models: list[CatalogueModel] = Field(..., min_length=1)

    @model_validator(mode="after")
    def _unique_names(self) -> Catalogue:
        seen: set[str] = set()
        for model in self.models:
            if model.name in seen:
                raise ValueError(f"model name '{model.name}' is listed twice")
            seen.add(model.name)
        return self

    def get(self, name: str) -> CatalogueModel:
        """The entry called `name`; ConfigError naming the known ones otherwise."""
        for model in self.models:
            if model.name == name:
                return model
        raise ConfigError(f"model '{name}' is not in the catalogue (known: {', '.join(m.name for m in self.models)})")

    @property
    def enabled(self) -> list[CatalogueModel]:
        """The models whose nights run."""
        return [m for m in self.models if m.enabled]


def _where(loc: tuple[Any, ...], raw: Any) -> str:
    """'model 'churn' field labels.lag_days' for a pydantic error location inside the raw YAML."""
    if len(loc) >= 2 and loc[0] == "models" and isinstance(loc[1], int):
        entries = raw.get("models") if isinstance(raw, dict) else None
        entry = entries[loc[1]] if isinstance(entries, list) and loc[1] < len(entries) else None
        name = entry.get("name") if isinstance(entry, dict) else None
        who = f"model '{name}' (#{loc[1] + 1})" if name else f"model #{loc[1] + 1}"
        field = ".".join(str(p) for p in loc[2:])
        return f"{who}, field '{field}'" if field else who
    return f"field '{'.'.join(map(str, loc))}'" if loc else "the catalogue"


def parse_catalogue(raw: Any, where: str) -> Catalogue:
    """Validate a parsed YAML document; one ConfigError listing every problem by model and field."""
    entries = raw.get("models") if isinstance(raw, dict) else None
    names = [e.get("name") for e in entries if isinstance(e, dict)] if isinstance(entries, list) else []
    twice = sorted({str(n) for n in names if n is not None and names.count(n) > 1})
    lines = [f"  model '{n}': the name is listed {names.count(n)} times; names must be unique" for n in twice]
    try:
        catalogue = Catalogue.model_validate(raw)
    except ValidationError as exc:
        for error in exc.errors():
            message = error["msg"].removeprefix("Value error, ")
            message = "unknown key" if error["type"] == "extra_forbidden" else message
            if "is listed twice" not in message:
                lines.append(f"  {_where(tuple(error['loc']), raw)}: {message}")
    if not lines:
        return catalogue
    raise ConfigError(f"{where} is not a valid model catalogue ({len(lines)} problem(s)):\n" + "\n".join(lines))


def load_catalogue(path: Path) -> Catalogue:
    """Read and validate `models.yaml`; relative paths in templates are read from the file's folder."""
    import yaml

    if not path.is_file():
        raise ConfigError(f"No model catalogue at {path}: create one (see models.yaml in the project) or set "
                          "NIGHTSHIFT_CATALOGUE_PATH.")
    try:
        raw = yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # C: 20x faster
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from None
    catalogue = parse_catalogue(raw, str(path))
    return catalogue.model_copy(update={"models": [_anchored(m, path.parent.resolve()) for m in catalogue.models]})


def _anchored(model: CatalogueModel, base: Path) -> CatalogueModel:
    """Relative local templates made absolute against the catalogue's folder."""
    def absolute(template: str) -> str:
        if "://" in template or template.startswith(("/", "{state_dir}")):
            return template
        return str(base / template)

    labels = model.labels.model_copy(update={"source": absolute(model.labels.source)}) if model.labels else None
    estimator = model.estimator
    if estimator.code_path:
        estimator = estimator.model_copy(update={"code_path": absolute(estimator.code_path)})
    return model.model_copy(update={"features": absolute(model.features), "labels": labels, "estimator": estimator})


def resolve_files(template: str, night: date, state_dir: Path) -> tuple[str, list[str]]:
    """The night's resolved path/URL and the files it names (a glob may name many; none if nothing landed)."""
    import fsspec

    resolved = render(template, night, state_dir)
    fs, path = fsspec.core.url_to_fs(resolved)
    if GLOB_CHARS & set(path):
        matches = sorted(fs.glob(path))
    else:
        matches = [path] if fs.isfile(path) else []
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    return resolved, [m if protocol == "file" else f"{protocol}://{m}" for m in matches]


load_catalogue_task = task(load_catalogue, name="read-catalogue", cache_policy=NO_CACHE)
