"""Traffic capture's Arrow conversion: queued requests grouped by column layout, cut into chunks that hold the GIL
briefly, each turned into one table (metadata, features, prediction, probabilities) in the layout of
tasks/data/served.py."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeAlias

import numpy as np

from serving.compiled import Batch
from tasks.data.served import META_COLUMNS, PREDICTION, PROBA_PREFIX

if TYPE_CHECKING:
    import pyarrow as pa


# A group of queued items -> (table, rows, None), or (None, rows, why) for the items that could not be converted.
Tables: TypeAlias = Callable[[list[tuple[Any, ...]]], "list[tuple[pa.Table | None, int, str | None]]"]
_CHUNK_ITEMS, _CHUNK_ROWS = 1024, 65_536  # at most this much converted and written in one go (one row group)


def layout(features: Any) -> tuple[Any, ...]:
    """What decides a request's feature columns (requests with the same layout are written as one table)."""
    if isinstance(features, Batch):
        return ("batch", features.numeric_names, tuple(features.categorical))
    return ("columns", tuple(features.keys() if isinstance(features, Mapping) else features.columns))


def chunked(group: list[tuple[Any, ...]]) -> list[list[tuple[Any, ...]]]:
    """A group cut into pieces of at most _CHUNK_ITEMS requests or about _CHUNK_ROWS rows.

    Each piece is converted by a few numpy/Arrow calls that hold the GIL throughout: small pieces keep the wait
    of a request thread short (a 100k-request piece held it for ~30 ms).
    """
    chunks, current, rows = [], [], 0
    for item in group:
        current.append(item)
        rows += len(item[5])
        if len(current) >= _CHUNK_ITEMS or rows >= _CHUNK_ROWS:
            chunks.append(current)
            current, rows = [], 0
    if current:
        chunks.append(current)
    return chunks


def tables(group: list[tuple[Any, ...]]) -> list[tuple[pa.Table | None, int, str | None]]:
    """One Arrow table for a group of same-layout requests; if that fails, one per request, the bad ones reported."""
    rows = sum(len(item[5]) for item in group)
    try:
        return [(_table(group), rows, None)]
    except Exception as exc:
        if len(group) == 1:
            return [(None, rows, f"{type(exc).__name__}: {str(exc)[:300]}")]
    return [result for item in group for result in tables([item])]


def _table(group: list[tuple[Any, ...]]) -> pa.Table:
    """The rows of same-layout requests as one table: metadata, features, prediction, probabilities."""
    import pyarrow as pa

    sizes = np.fromiter((len(item[5]) for item in group), dtype=np.int64, count=len(group))
    total = int(sizes.sum())
    starts = np.repeat(np.cumsum(sizes) - sizes, sizes)
    model = group[0][0]
    columns: dict[str, pa.Array] = {
        "request_id": pa.array(np.repeat(np.array([item[2] for item in group], dtype=object), sizes), pa.string()),
        "row": pa.array((np.arange(total, dtype=np.int64) - starts).astype(np.int32)),
        "row_id": _row_ids(group, total),
        "captured_at": pa.array((np.repeat(np.array([item[3] for item in group], dtype=np.float64), sizes)
                                 * 1e6).astype(np.int64), pa.timestamp("us", tz="UTC")),
        "model": pa.repeat(pa.scalar(model, pa.string()), total),
        "model_version": pa.array(np.repeat(np.array([str(item[1]) for item in group], dtype=object), sizes),
                                  pa.string()),
    }
    for name, values in _features(group).items():
        column = pa.array(values) if not isinstance(values, pa.Array) else values
        if len(column) != total:
            raise ValueError(f"feature {name!r} has {len(column)} values for {total} predictions")
        columns[f"feature_{name}" if name in META_COLUMNS or name == PREDICTION or name.startswith(PROBA_PREFIX)
                else name] = column
    columns[PREDICTION] = _concat([item[5] for item in group])
    if group[0][6] is not None:
        classes = list(group[0][7])
        proba = np.vstack([np.asarray(item[6], dtype=np.float64).reshape(len(item[5]), -1) for item in group])
        if proba.shape[1] != len(classes):
            raise ValueError(f"{proba.shape[1]} probability columns for {len(classes)} classes {classes[:10]}")
        for j, label in enumerate(classes):
            columns[f"{PROBA_PREFIX}{label}"] = pa.array(proba[:, j])
    return pa.table(columns)


def _features(group: list[tuple[Any, ...]]) -> dict[str, Any]:
    """Feature name -> values for the whole group (typed: Batch numbers as float64, categories as strings)."""
    import pyarrow as pa

    first = group[0][4]
    if isinstance(first, Batch):
        block = np.concatenate([item[4].numeric for item in group]) if len(group) > 1 else first.numeric
        out: dict[str, Any] = {name: block[:, j] for j, name in enumerate(first.numeric_names)}
        for name in first.categorical:
            values = np.concatenate([item[4].categorical[name] for item in group])
            out[name] = pa.array(values, pa.string(), from_pandas=True)
        return out
    frames = [item[4] if isinstance(item[4], Mapping) else {c: item[4][c].to_numpy() for c in item[4].columns}
              for item in group]
    return {name: _concat([frame[name] for frame in frames]) for name in frames[0]}


def _concat(parts: list[Any]) -> pa.Array:
    """Values of one column from several requests as one Arrow array (mixed types as strings, all-null as null)."""
    import pyarrow as pa

    if all(isinstance(p, np.ndarray) and p.dtype != object for p in parts):
        return pa.array(np.concatenate(parts) if len(parts) > 1 else parts[0])
    values = list(itertools.chain.from_iterable(parts))
    try:
        return pa.array(values, from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pa.array([None if v is None else str(v) for v in values], pa.string())


def _row_ids(group: list[tuple[Any, ...]], total: int) -> pa.Array:
    """The requests' own row ids as strings (null where a request has none)."""
    import pyarrow as pa

    if all(item[8] is None for item in group):
        return pa.nulls(total, pa.string())
    values = itertools.chain.from_iterable([None] * len(item[5]) if item[8] is None else item[8] for item in group)
    return pa.array([None if v is None else str(v) for v in values], pa.string())
