"""Datasets: file/URL loaders, the bundled iris set, and the demo stream generator with drift knobs."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import date, timedelta
from contextlib import contextmanager
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from prefect import task
from prefect.cache_policies import NO_CACHE

from nightshift.errors import DataLoadError, TransientLoadError

if TYPE_CHECKING:
    import pandas as pd

IRIS = "iris"
DEMO = "demo"
BUILTIN_DATASETS = (IRIS, DEMO)
IRIS_LABEL = "species"
DEMO_LABEL = "churned"
DEMO_DATE = "event_date"
DEMO_START = date(2026, 1, 1)
# Rows are generated in fixed blocks, each from its own seed, so any prefix of the stream is the
# same whatever size is asked for, and huge sizes can be produced one block at a time.
DEMO_BLOCK_ROWS = 100_000
CSV_SUFFIXES = (".csv", ".csv.gz", ".csv.bz2", ".csv.zip")
PARQUET_SUFFIXES = (".parquet", ".pq")
READABLE_SUFFIXES = CSV_SUFFIXES + PARQUET_SUFFIXES


class DemoDrift(BaseModel):
    """Drift injected into one demo day: covariate (feature) shift, category-mix change, concept change."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    covariate_shift: float = Field(
        0.0, ge=-5.0, le=5.0, title="Covariate shift",
        description="Mean shift of the drifted numeric columns, in their standard deviations.",
    )
    covariate_scale: float = Field(
        1.0, gt=0.0, le=10.0, title="Covariate scale",
        description="Factor applied to the spread of the drifted numeric columns (1 = unchanged).",
    )
    drifted_columns: tuple[str, ...] = Field(
        ("monthly_spend", "sessions_last_30d", "days_since_last_login"), title="Drifted columns",
        description="Numeric columns that the covariate shift/scale applies to.",
    )
    category_mix: float = Field(
        0.0, ge=0.0, le=1.0, title="Category mix change",
        description="0 = usual category frequencies, 1 = fully moved to a different mix (including a new, unseen region).",
    )
    concept: float = Field(
        0.0, ge=0.0, le=1.0, title="Concept drift",
        description="0 = usual label relationship, 1 = a different relationship between features and churn.",
    )

    @property
    def is_none(self) -> bool:
        """True when this spec changes nothing."""
        return self.covariate_shift == 0 and self.covariate_scale == 1 and self.category_mix == 0 and self.concept == 0


class DatasetParams(BaseModel):
    """Which table to use: a bundled dataset or a file/URL, its label, and (for the demo) which day and drift."""

    model_config = ConfigDict(extra="forbid")

    source: str = Field(
        IRIS, min_length=1, title="Dataset",
        description="'iris', 'demo' (bundled generator), or a path/fsspec URL to a .csv or .parquet file.",
    )
    label: str | None = Field(
        None, title="Label column",
        description="Column to predict; default 'species' for iris, 'churned' for demo, 'label' for files.",
    )
    rows: int | None = Field(
        None, ge=1, le=50_000_000, title="Rows",
        description="Demo: rows to generate (default 20000). Files/iris: a seeded random sample of this many rows.",
    )
    day: int = Field(0, ge=0, le=3650, title="Demo day", description="Demo only: which day of the stream (0 = reference).")
    drift: DemoDrift = Field(default_factory=DemoDrift, title="Demo drift", description="Demo only: drift to inject.")
    exclude_columns: list[str] = Field(
        default_factory=list, title="Excluded columns", description="Columns never used as features (ids, timestamps).",
    )


@dataclass(frozen=True)
class _Numeric:
    name: str
    kind: str
    a: float
    b: float = 0.0
    missing: float = 0.0
    clip: tuple[float, float] | None = None


# A churn-like customer table: 20 numeric features with realistic shapes, 5 categorical ones.
_NUMERIC: tuple[_Numeric, ...] = (
    _Numeric("age", "normal", 41, 12, clip=(18, 90)),
    _Numeric("tenure_months", "gamma", 2.0, 14.0, clip=(0, 240)),
    _Numeric("monthly_spend", "lognormal", 4.0, 0.55),
    _Numeric("sessions_last_30d", "poisson", 18),
    _Numeric("avg_session_minutes", "gamma", 3.0, 4.0, missing=0.03),
    _Numeric("support_tickets_90d", "poisson", 0.8),
    _Numeric("days_since_last_login", "exponential", 6.0),
    _Numeric("discount_rate", "beta", 2.0, 12.0),
    _Numeric("payment_delays_12m", "poisson", 0.6),
    _Numeric("pages_per_session", "gamma", 4.0, 1.5),
    _Numeric("cart_abandon_rate", "beta", 3.0, 5.0),
    _Numeric("referrals", "poisson", 0.4),
    _Numeric("account_balance", "normal", 120, 80),
    _Numeric("credit_score", "normal", 680, 60, missing=0.02, clip=(300, 850)),
    _Numeric("device_count", "poisson1", 1.2),
    _Numeric("email_open_rate", "beta", 2.0, 5.0),
    _Numeric("avg_order_value", "lognormal", 3.6, 0.45),
    _Numeric("orders_last_90d", "poisson", 3.0),
    _Numeric("returns_last_90d", "poisson", 0.3),
    _Numeric("nps_score", "nps", 7.0),
)
_CATEGORICAL: dict[str, tuple[tuple[str, ...], tuple[float, ...]]] = {
    "plan": (("basic", "standard", "premium", "enterprise"), (0.45, 0.32, 0.17, 0.06)),
    "region": (("north", "south", "east", "west", "central"), (0.22, 0.24, 0.18, 0.21, 0.15)),
    "channel": (("web", "app", "store", "partner"), (0.41, 0.35, 0.16, 0.08)),
    "device_os": (("android", "ios", "windows", "macos", "linux"), (0.38, 0.30, 0.20, 0.09, 0.03)),
    "payment_method": (("card", "paypal", "bank_transfer", "invoice"), (0.55, 0.22, 0.15, 0.08)),
}
# Where category_mix moves the frequencies to; "international" is a region the reference never saw.
_SHIFTED_MIX: dict[str, tuple[tuple[str, ...], tuple[float, ...]]] = {
    "plan": (("basic", "standard", "premium", "enterprise"), (0.15, 0.20, 0.35, 0.30)),
    "region": (("north", "south", "east", "west", "central", "international"), (0.10, 0.10, 0.10, 0.10, 0.10, 0.50)),
    "channel": (("web", "app", "store", "partner"), (0.20, 0.60, 0.05, 0.15)),
    "device_os": (("android", "ios", "windows", "macos", "linux"), (0.38, 0.30, 0.20, 0.09, 0.03)),
    "payment_method": (("card", "paypal", "bank_transfer", "invoice"), (0.55, 0.22, 0.15, 0.08)),
}
DEMO_NUMERIC = tuple(n.name for n in _NUMERIC)
DEMO_CATEGORICAL = tuple(_CATEGORICAL)


@dataclass
class LoadedDataset:
    """A table with what is known about it: where it came from, its label and its fingerprint."""

    frame: pd.DataFrame
    label: str
    name: str
    source: str
    fingerprint: str = field(default="")

    def __post_init__(self) -> None:
        if not self.fingerprint:
            self.fingerprint = fingerprint(self.frame)


def fingerprint(frame: pd.DataFrame) -> str:
    """Content hash of a table (column names, dtypes and every value; row order matters)."""
    import pandas as pd

    digest = hashlib.sha256()
    digest.update(repr([(str(c), str(t)) for c, t in frame.dtypes.items()]).encode())
    digest.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return digest.hexdigest()


@contextmanager
def read_errors(uri: str) -> Iterator[None]:
    """Turn the many ways a read can fail into one DataLoadError sentence naming the file."""
    import pandas as pd

    try:
        yield
    except DataLoadError:
        raise
    except FileNotFoundError as exc:
        raise DataLoadError(f"Dataset file not found: {uri}") from exc
    except PermissionError as exc:
        raise DataLoadError(f"Dataset file {uri} is not readable (permission denied).") from exc
    except IsADirectoryError as exc:
        raise DataLoadError(f"Dataset path {uri} is a directory; give a .csv or .parquet file.") from exc
    except pd.errors.EmptyDataError as exc:
        raise DataLoadError(f"Dataset file {uri} is empty.") from exc
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DataLoadError(f"Dataset file {uri} is not valid CSV: {_first_line(exc)}") from exc
    except ImportError:
        raise
    except OSError as exc:
        remote = "://" in uri and not uri.startswith("file://")
        error = TransientLoadError if remote else DataLoadError
        raise error(f"Could not read dataset {uri}: {_first_line(exc)}") from exc
    except Exception as exc:  # pyarrow raises its own types for corrupt Parquet
        if type(exc).__module__.startswith("pyarrow"):
            raise DataLoadError(f"Dataset file {uri} is not valid Parquet: {_first_line(exc)}") from exc
        raise


def table_format(uri: str) -> str:
    lowered = uri.lower().split("?", 1)[0]
    if lowered.endswith(PARQUET_SUFFIXES):
        return "parquet"
    if lowered.endswith(CSV_SUFFIXES):
        return "csv"
    raise DataLoadError(f"Cannot tell the format of {uri}: use one of {', '.join(READABLE_SUFFIXES)}.")


def load_table(uri: str) -> pd.DataFrame:
    """Read a CSV or Parquet file from a local path or any fsspec URL into a DataFrame."""
    import pandas as pd

    kind = table_format(uri)
    with read_errors(uri):
        return pd.read_parquet(uri) if kind == "parquet" else pd.read_csv(uri)


def iter_parquet_batches(uri: str, batch_rows: int = 200_000, row_groups: list[int] | None = None) -> Iterator[Any]:
    """Stream a Parquet file's record batches (optionally only some row groups) with flat memory."""
    import fsspec
    import pyarrow.parquet as pq

    with read_errors(uri), fsspec.open(uri, "rb") as fh:
        # pre_buffer (pyarrow's default) keeps every row group read so far: RSS grew by the file's size.
        yield from pq.ParquetFile(fh, pre_buffer=False).iter_batches(batch_size=batch_rows, row_groups=row_groups)


def iter_table(uri: str, chunk_rows: int = 200_000) -> Iterator[pd.DataFrame]:
    """Read a CSV/Parquet file or URL in chunks of at most `chunk_rows` rows (memory stays flat)."""
    import pandas as pd

    if table_format(uri) == "parquet":
        for batch in iter_parquet_batches(uri, chunk_rows):
            yield batch.to_pandas()
        return
    with read_errors(uri), pd.read_csv(uri, chunksize=chunk_rows) as reader:
        yield from reader


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def load_iris() -> pd.DataFrame:
    """The iris table shipped inside scikit-learn (no download): four measurements and `species`."""
    import pandas as pd

    from sklearn.datasets import load_iris as sk_load_iris

    bunch = sk_load_iris(as_frame=True)
    frame = bunch.data.rename(columns=lambda c: c.replace(" (cm)", "_cm").replace(" ", "_"))
    frame[IRIS_LABEL] = pd.Categorical.from_codes(bunch.target, bunch.target_names).astype(str)
    return frame


def _draw_numeric(spec: _Numeric, rng: np.random.Generator, n: int) -> np.ndarray:
    if spec.kind == "normal":
        values = rng.normal(spec.a, spec.b, n)
    elif spec.kind == "gamma":
        values = rng.gamma(spec.a, spec.b, n)
    elif spec.kind == "lognormal":
        values = rng.lognormal(spec.a, spec.b, n)
    elif spec.kind == "poisson":
        values = rng.poisson(spec.a, n).astype(float)
    elif spec.kind == "poisson1":
        values = 1.0 + rng.poisson(spec.a, n)
    elif spec.kind == "exponential":
        values = rng.exponential(spec.a, n)
    elif spec.kind == "beta":
        values = rng.beta(spec.a, spec.b, n)
    elif spec.kind == "nps":
        values = np.clip(np.round(rng.normal(spec.a, 2.2, n)), 0, 10)
    else:  # pragma: no cover - table above is fixed
        raise ValueError(spec.kind)
    if spec.clip is not None:
        values = np.clip(values, *spec.clip)
    return values.astype(np.float64)


def _churn_logit(frame: pd.DataFrame, concept: float) -> np.ndarray:
    """Log-odds of churn; `concept` blends towards a different relationship."""

    def z(col: str, mean: float, std: float) -> np.ndarray:
        return (frame[col].fillna(mean).to_numpy() - mean) / std

    plan = frame["plan"].to_numpy()
    channel = frame["channel"].to_numpy()
    usual = (
        -1.35
        - 0.85 * z("tenure_months", 28, 20)
        + 0.70 * z("days_since_last_login", 6, 6)
        + 0.55 * z("support_tickets_90d", 0.8, 0.9)
        + 0.50 * z("payment_delays_12m", 0.6, 0.8)
        - 0.45 * z("sessions_last_30d", 18, 4.2)
        - 0.35 * z("nps_score", 7, 2.2)
        + 0.30 * z("cart_abandon_rate", 0.375, 0.16)
        - 0.25 * z("orders_last_90d", 3, 1.7)
        + 0.40 * (plan == "basic")
        - 0.50 * (plan == "enterprise")
        + 0.25 * (channel == "partner")
        + 0.35 * z("monthly_spend", 63, 38) * z("discount_rate", 0.14, 0.09)
    )
    if concept == 0:
        return usual
    changed = (
        -1.35
        + 0.80 * z("tenure_months", 28, 20)
        - 0.60 * z("days_since_last_login", 6, 6)
        + 0.90 * z("monthly_spend", 63, 38)
        + 0.60 * z("credit_score", 680, 60)
        - 0.40 * z("email_open_rate", 0.29, 0.16)
        + 0.60 * (plan == "premium")
        - 0.30 * (channel == "app")
    )
    return (1.0 - concept) * usual + concept * changed


@lru_cache(maxsize=1)
def _reference_stats() -> dict[str, tuple[float, float]]:
    """Mean and std of each numeric column on undrifted data: fixed units for the covariate shift."""
    rng = np.random.default_rng(0)
    return {spec.name: (float(v.mean()), float(v.std() or 1.0))
            for spec in _NUMERIC for v in [_draw_numeric(spec, rng, 50_000)]}


def _demo_block(seed: int, day: int, block: int, n: int, drift: DemoDrift) -> pd.DataFrame:
    import pandas as pd

    # One stream per column (and for missingness and labels), so the first k rows of a block are
    # the same whatever n is: any prefix of the stream is stable.
    streams = iter(np.random.SeedSequence([seed, day, block]).spawn(2 * len(_NUMERIC) + len(_CATEGORICAL) + 1))
    columns: dict[str, np.ndarray] = {}
    stats = _reference_stats()
    for spec in _NUMERIC:
        values = _draw_numeric(spec, np.random.default_rng(next(streams)), n)
        missing = np.random.default_rng(next(streams)).random(n)
        if spec.name in drift.drifted_columns and (drift.covariate_shift or drift.covariate_scale != 1):
            mean, std = stats[spec.name]
            values = mean + (values - mean) * drift.covariate_scale + drift.covariate_shift * std
            if spec.clip is not None:
                values = np.clip(values, *spec.clip)
        if spec.missing:
            values[missing < spec.missing] = np.nan
        columns[spec.name] = values
    for name, (levels, probs) in _CATEGORICAL.items():
        if drift.category_mix:
            new_levels, new_probs = _SHIFTED_MIX[name]
            base = dict(zip(levels, probs))
            moved = dict(zip(new_levels, new_probs))
            levels = tuple(dict.fromkeys(levels + new_levels))
            probs = tuple((1 - drift.category_mix) * base.get(lv, 0.0) + drift.category_mix * moved.get(lv, 0.0) for lv in levels)
        p = np.asarray(probs, dtype=float)
        codes = np.random.default_rng(next(streams)).choice(len(levels), size=n, p=p / p.sum())
        columns[name] = np.asarray(levels, dtype=object)[codes]
    frame = pd.DataFrame(columns)
    churn_p = 1.0 / (1.0 + np.exp(-_churn_logit(frame, drift.concept)))
    frame[DEMO_LABEL] = (np.random.default_rng(next(streams)).random(n) < churn_p).astype(np.int64)
    frame.insert(0, DEMO_DATE, pd.Series(pd.Timestamp(DEMO_START + timedelta(days=day)), index=frame.index,
                                         dtype="datetime64[ns]"))
    return frame


def iter_demo(rows: int, seed: int = 42, day: int = 0, drift: DemoDrift | None = None,
              block_rows: int = DEMO_BLOCK_ROWS) -> Iterator[pd.DataFrame]:
    """Yield the demo stream for one day in blocks (for sizes that should not sit in memory at once)."""
    if rows < 0:
        raise ValueError(f"rows must be >= 0, got {rows}")
    drift = drift or DemoDrift()
    done, block = 0, 0
    while done < rows:
        n = min(DEMO_BLOCK_ROWS, rows - done)
        yield _demo_block(seed, day, block, n, drift)
        done += n
        block += 1


def generate_demo(rows: int, seed: int = 42, day: int = 0, drift: DemoDrift | None = None) -> pd.DataFrame:
    """A realistic churn table for one `day`: 20 numeric + 5 categorical features, `churned`, `event_date`."""
    import pandas as pd

    blocks = list(iter_demo(rows, seed=seed, day=day, drift=drift))
    if not blocks:
        return _demo_block(seed, day, 0, 0, drift or DemoDrift())
    return pd.concat(blocks, ignore_index=True) if len(blocks) > 1 else blocks[0]


def is_builtin(source: str) -> bool:
    """True for the names of bundled datasets."""
    return source in BUILTIN_DATASETS


def looks_like_path(source: str) -> bool:
    """True when `source` is meant as a file path or URL rather than a dataset name."""
    return "/" in source or "\\" in source or "://" in source or source.lower().endswith(READABLE_SUFFIXES)


def load_dataset_params(params: DatasetParams, seed: int) -> LoadedDataset:
    """Load the dataset a parameter model describes."""
    return load_dataset(params.source, label=params.label, rows=params.rows, seed=seed, day=params.day, drift=params.drift)


def load_dataset(source: str, *, label: str | None = None, rows: int | None = None, seed: int = 42,
                 day: int = 0, drift: DemoDrift | None = None) -> LoadedDataset:
    """Resolve a dataset name ('iris', 'demo') or a path/URL into a table with its label column."""
    if source == IRIS:
        frame, name, default_label, where = load_iris(), IRIS, IRIS_LABEL, "sklearn.datasets.load_iris"
    elif source == DEMO:
        n = 20_000 if rows is None else rows
        frame = generate_demo(n, seed=seed, day=day, drift=drift)
        name, default_label, where = DEMO, DEMO_LABEL, f"nightshift-demo://seed={seed}/day={day}/rows={n}"
        rows = None  # already the requested size
    elif looks_like_path(source):
        frame, name, default_label, where = load_table(source), source.rstrip("/").rsplit("/", 1)[-1], "label", source
    else:
        raise DataLoadError(
            f"Unknown dataset '{source}': use one of {', '.join(BUILTIN_DATASETS)}, "
            "or a path/URL to a .csv or .parquet file."
        )
    if rows is not None and rows < len(frame):
        frame = frame.sample(n=rows, random_state=seed).sort_index().reset_index(drop=True)
    return LoadedDataset(frame=frame, label=label or default_label, name=name, source=where)


class FeatureSpec(BaseModel):
    """Which columns feed the model, and how: declared, never guessed again downstream."""

    model_config = ConfigDict(frozen=True)

    label: str
    numeric: tuple[str, ...]
    categorical: tuple[str, ...]
    ignored: tuple[str, ...] = ()

    @property
    def features(self) -> list[str]:
        """Model input columns in a stable order."""
        return [*self.numeric, *self.categorical]


def infer_features(frame: pd.DataFrame, label: str, exclude: tuple[str, ...] = ()) -> FeatureSpec:
    """Split columns into numeric and categorical features; dates, all-empty and excluded columns are ignored."""
    import pandas as pd

    numeric: list[str] = []
    categorical: list[str] = []
    ignored: list[str] = []
    for col in frame.columns:
        if col == label:
            continue
        series = frame[col]
        if col in exclude or pd.api.types.is_datetime64_any_dtype(series) or pd.api.types.is_timedelta64_dtype(series):
            ignored.append(str(col))
        elif series.isna().all():
            ignored.append(str(col))
        elif pd.api.types.is_bool_dtype(series) or pd.api.types.is_numeric_dtype(series):
            numeric.append(str(col))
        else:
            categorical.append(str(col))
    return FeatureSpec(label=label, numeric=tuple(numeric), categorical=tuple(categorical), ignored=tuple(ignored))


def _retry_if_transient(task: object, task_run: object, state: object) -> bool:
    """Retry a load only when a remote read failed in a way that may pass (network), never for bad files."""
    return isinstance(getattr(state, "data", None), TransientLoadError)


load_dataset_task = task(load_dataset_params, name="load-dataset", retries=2, retry_delay_seconds=[2, 10],
                         retry_condition_fn=_retry_if_transient, cache_policy=NO_CACHE)
