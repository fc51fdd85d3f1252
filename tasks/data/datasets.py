"""Datasets: file/URL loaders, content fingerprints and feature inference (bundled data: tasks.data.demo)."""

from __future__ import annotations

import hashlib
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterator

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict, Field

from nightshift.errors import DataLoadError, TransientLoadError
from tasks.data.demo import DemoDrift

if TYPE_CHECKING:
    from pathlib import Path

    import pandas as pd


IRIS = "iris"
DEMO = "demo"
BUILTIN_DATASETS = (IRIS, DEMO)
CSV_SUFFIXES = (".csv", ".csv.gz", ".csv.bz2", ".csv.zip")
PARQUET_SUFFIXES = (".parquet", ".pq")
READABLE_SUFFIXES = CSV_SUFFIXES + PARQUET_SUFFIXES


class DatasetParams(BaseModel):
    """Which table to use: a bundled dataset or a file/URL, its label, and (for the demo) which day and drift."""

    model_config = ConfigDict(extra="forbid")

    source: str = Field(
        IRIS, min_length=1, title="Dataset",
        description="'iris', 'demo' (bundled generator), a path/fsspec URL to a .csv or .parquet file, or "
                    "'served:<model>/<YYYY-MM-DD>' (the model server's captured traffic of that UTC day).",
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


def looks_like_path(source: str) -> bool:
    """True when `source` is meant as a file path or URL rather than a dataset name."""
    return "/" in source or "\\" in source or "://" in source or source.lower().endswith(READABLE_SUFFIXES)


def load_dataset_params(params: DatasetParams, seed: int, served_root: Path | None = None) -> LoadedDataset:
    """Load the dataset a parameter model describes (captured traffic from `served_root`)."""
    return load_dataset(params.source, label=params.label, rows=params.rows, seed=seed, day=params.day,
                        drift=params.drift, served_root=served_root)


def load_dataset(source: str, *, label: str | None = None, rows: int | None = None, seed: int = 42,
                 day: int = 0, drift: DemoDrift | None = None, served_root: Path | None = None) -> LoadedDataset:
    """Resolve a dataset name ('iris', 'demo'), a path/URL or a day of served traffic into a table with its label
    column."""
    from tasks.data.served import SERVED_PREFIX

    if source.startswith(SERVED_PREFIX):
        from tasks.data.served import load_served, parse_served

        if served_root is None:
            raise DataLoadError(f"{source}: no capture directory given (NIGHTSHIFT_CAPTURE_DIR)")
        model, served_day = parse_served(source)
        frame, name, default_label = load_served(served_root, model, served_day), source, "label"
        where = f"{source} ({served_root})"
    elif source == IRIS:
        from tasks.data.demo import IRIS_LABEL, load_iris

        frame, name, default_label, where = load_iris(), IRIS, IRIS_LABEL, "sklearn.datasets.load_iris"
    elif source == DEMO:
        from tasks.data.demo import DEMO_LABEL, generate_demo

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


def retry_if_transient(task: object, task_run: object, state: object) -> bool:
    """Retry a load only when a remote read failed in a way that may pass (network), never for bad files."""
    return isinstance(getattr(state, "data", None), TransientLoadError)


load_dataset_task = task(load_dataset_params, name="load-dataset", retries=2, retry_delay_seconds=[2, 10],
                         retry_condition_fn=retry_if_transient, cache_policy=NO_CACHE)
