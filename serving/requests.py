"""A scoring request's body, from bytes to checked feature columns: read under a size limit, parsed as JSON (content
type, nesting depth), its columns taken from MLflow's scoring JSON and coerced to the model's data contract."""

from __future__ import annotations

import json
from collections import Counter
from typing import TYPE_CHECKING, Any

import numpy as np
from fastapi import Request
from pydantic import BaseModel, ConfigDict, Field, create_model

from serving.compiled import Batch
from serving.errors import ScoringError

if TYPE_CHECKING:
    import pandas as pd

    from tasks.data.contract import Contract


MAX_ABS_VALUE = 1e30
MAX_NESTING = 64  # MLflow's scoring JSON nests 4 deep; far deeper bodies only make the parser and validators recurse
_BRACKET_STEP = np.zeros(256, dtype=np.int8)  # per byte: +1 opens an array/object, -1 closes one
_BRACKET_STEP[[ord("["), ord("{")]] = 1
_BRACKET_STEP[[ord("]"), ord("}")]] = -1
BODY_RULES = (
    "The body must be JSON sent with `Content-Type: application/json` (or `application/*+json`; a charset "
    "parameter is fine): any other or a missing content type gets 415, as in MLflow's scoring server. "
    "Bodies over NIGHTSHIFT_SERVER_MAX_BODY_BYTES get 413 (chunked uploads are cut off as they pass the limit), "
    f"JSON nesting deeper than {MAX_NESTING} levels gets 400.")


def request_model(contract: Contract) -> type[BaseModel]:
    """The typed /predict body for a contract: one field per feature (numbers or category strings)."""
    fields: dict[str, Any] = {}
    for col in contract.columns:
        if col.kind == "numeric":
            desc = f"number (training range {col.min:g} .. {col.max:g}); null = missing"
            fields[col.name] = (float | None, Field(..., description=desc))
        else:
            shown = ", ".join((col.categories or [])[:20])
            fields[col.name] = (str | None, Field(..., description=f"category, e.g. {shown}; unseen ones are tolerated"))
    row = create_model("PredictRow", __config__=ConfigDict(extra="ignore"), **fields)
    return create_model("PredictRequest", rows=(list[row], Field(..., min_length=1)))  # type: ignore[valid-type]


def columns_of(frame: pd.DataFrame) -> dict[str, list[Any]]:
    """A frame as request columns (missing values as null, the way JSON carries them)."""
    return {c: frame[c].astype(object).where(frame[c].notna(), None).tolist() for c in frame.columns}


def _split_columns(split: Any) -> tuple[dict[str, list[Any]], int]:
    """Columns and row count from `dataframe_split`; each column named once, each row one value per column."""
    if not isinstance(split, dict) or not isinstance(split.get("columns"), list) or not isinstance(split.get("data"), list):
        raise ScoringError(400, "'dataframe_split' needs 'columns' (list) and 'data' (list of rows)")
    names, data = [str(c) for c in split["columns"]], split["data"]
    repeated = [name for name, count in Counter(names).items() if count > 1]
    if repeated:
        raise ScoringError(400, f"duplicate column(s) in 'dataframe_split': {', '.join(map(repr, repeated[:10]))}")
    bad = next((i for i, r in enumerate(data) if not isinstance(r, list) or len(r) != len(names)), None)
    if bad is not None:
        raise ScoringError(400, f"'dataframe_split' row {bad} does not have {len(names)} values (one per column)")
    return {name: [row[i] for row in data] for i, name in enumerate(names)}, len(data)


def columns_from_scoring_json(payload: Any) -> tuple[dict[str, list[Any]], int]:
    """Columns and row count from MLflow's scoring-server JSON (`dataframe_split` or `dataframe_records`)."""
    if not isinstance(payload, dict):
        raise ScoringError(400, "expected a JSON object with 'dataframe_split' or 'dataframe_records'")
    if "dataframe_split" in payload:
        return _split_columns(payload["dataframe_split"])
    if "dataframe_records" in payload:
        records = payload["dataframe_records"]
        if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
            raise ScoringError(400, "'dataframe_records' must be a list of objects (one per row)")
        names = dict.fromkeys(k for r in records for k in r)
        return {str(c): [r.get(c) for r in records] for c in names}, len(records)
    raise ScoringError(400, "expected 'dataframe_split' or 'dataframe_records' (MLflow scoring format)")


def _numeric_column(values: list[Any], name: str) -> np.ndarray:
    """One request column as float64 (null = NaN), or a 422 naming the column and the first bad value."""
    if all(v is None or type(v) is float or type(v) is int and abs(v) < 2**63 for v in values):
        return np.array([np.nan if v is None else v for v in values], dtype=np.float64)
    out = np.empty(len(values), dtype=np.float64)
    for i, v in enumerate(values):
        if v is None:
            out[i] = np.nan
            continue
        if isinstance(v, (bool, dict, list)) or not isinstance(v, (int, float, str, np.number)):
            raise ScoringError(422, f"column '{name}' must be numeric; got a non-number ({type(v).__name__})")
        try:
            out[i] = float(v.strip() if isinstance(v, str) else v)
        except ValueError:
            raise ScoringError(422, f"column '{name}' must be numeric; got {str(v)[:40]!r}") from None
        except OverflowError:
            raise ScoringError(422, f"column '{name}' has a value out of range: {str(v)[:40]}") from None
    return out


def prepare(columns: dict[str, list[Any]], n_rows: int, contract: Contract, max_rows: int) -> Batch:
    """Check and coerce request columns to the contract's features; errors name the column and value."""
    if n_rows == 0:
        raise ScoringError(400, "the request has no rows")
    if n_rows > max_rows:
        raise ScoringError(413, f"the request has {n_rows} rows; at most {max_rows} per request")
    missing = [c for c in contract.features if c not in columns]
    if missing:
        raise ScoringError(400, f"missing column(s): {', '.join(repr(c) for c in missing[:10])}")
    numeric, categorical = contract.numeric, contract.categorical
    block = (np.column_stack([_numeric_column(columns[n], n) for n in numeric]) if numeric
             else np.empty((n_rows, 0), dtype=np.float64))
    # Beyond MAX_ABS_VALUE the model's float32 trees overflow: no real feature is that large.
    bad = ~(np.isnan(block) | (np.abs(block) <= MAX_ABS_VALUE))
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise ScoringError(422, f"column '{numeric[col]}' has a value out of range: {block[row, col]!r}")
    cats: dict[str, np.ndarray] = {}
    for name in categorical:
        values = columns[name]
        if any(isinstance(v, (dict, list)) for v in values):
            raise ScoringError(422, f"column '{name}' must be a category string; got an object/list")
        cats[name] = np.array([v if v is None or isinstance(v, str) else str(v) for v in values], dtype=object)
    return Batch(block, tuple(numeric), cats)


def is_json_media_type(content_type: str | None) -> bool:
    """Whether a Content-Type header names JSON: application/json or application/*+json, any parameters."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


async def read_body(request: Request, max_bytes: int) -> bytes:
    """The request body, refused (413) as soon as it passes `max_bytes` while streaming in, chunked or not."""
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > max_bytes:
        raise ScoringError(413, f"request body of {length} bytes exceeds {max_bytes}")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:  # stop here: uvicorn sends the 413, then reads and drops the rest of the upload
            raise ScoringError(413, f"request body exceeds {max_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def nesting_depth(text: str) -> int:
    """How deep arrays and objects nest in JSON text, brackets inside strings not counted; no parsing, no recursion."""
    # Drop escaped backslashes, then escaped quotes: every quote left opens or closes a string. UTF-8 keeps
    # non-ASCII characters out of the ASCII byte range, so the bytes below are exactly the JSON punctuation.
    raw = text.encode("utf-8", "surrogatepass").replace(b"\\\\", b"").replace(b'\\"', b"")
    codes = np.frombuffer(raw, dtype=np.uint8)
    outside = np.cumsum(codes == ord('"'), dtype=np.uint8) % 2 == 0  # an even number of quotes so far
    steps = _BRACKET_STEP[codes]
    return int(np.cumsum(steps[outside & (steps != 0)], dtype=np.int32).max(initial=0))


def parse_json(body: bytes) -> Any:
    """The body as JSON (UTF-8/16/32 as json.loads detects it); 400 for invalid JSON or nesting past MAX_NESTING."""
    try:
        text = body.decode(json.detect_encoding(body), "surrogatepass")
    except UnicodeDecodeError as exc:
        raise ScoringError(400, f"request body is not valid JSON: {exc}") from None
    brackets = text.count("[") + text.count("{")  # an upper bound on the depth, and cheap
    if brackets > MAX_NESTING and (depth := nesting_depth(text)) > MAX_NESTING:
        raise ScoringError(400, f"request body nests deeper than {MAX_NESTING} levels ({depth}); "
                                "MLflow's scoring JSON needs 4")
    try:
        return json.loads(text)
    except ValueError as exc:
        raise ScoringError(400, f"request body is not valid JSON: {exc}") from None


async def read_json(request: Request, max_bytes: int) -> Any:
    """The request body as JSON: 415 unless it is declared JSON, 413 past `max_bytes`, 400 if invalid or too deep."""
    content_type = request.headers.get("content-type")
    if not is_json_media_type(content_type):
        got = f"got {content_type!r}" if content_type else "no Content-Type was sent"
        raise ScoringError(415, f"the request body must be JSON: send Content-Type: application/json ({got})")
    return parse_json(await read_body(request, max_bytes))
