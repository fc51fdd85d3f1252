"""Request-body checks of the model server, in process: nesting depth, streamed size limit, content type, columns."""

from __future__ import annotations

import asyncio
import json
import random
from typing import Any

import pytest
from starlette.requests import Request

from serving.champion import check_schema
from serving.errors import ScoringError
from serving.requests import (
    MAX_NESTING,
    columns_from_scoring_json,
    is_json_media_type,
    nesting_depth,
    parse_json,
    read_body,
)


@pytest.mark.parametrize(("text", "depth"), [
    ("1", 0), ("[]", 1), ('{"a": [1, {"b": []}]}', 4), ('["[[[[", "{{{"]', 1), ('["\\"[[[", "\\\\", [2]]', 2),
    ("[" * 5000 + "]" * 5000, 5000), ('{"a":' * 300 + "1" + "}" * 300, 300), ("", 0),
    ('["a\\\\", [[1]]]', 3), ('["\\\\\\"[", [1]]', 2), ('["\u00e9[", {"\U0001f600]": []}]', 3),
])
def test_nesting_depth_counts_brackets_outside_strings(text: str, depth: int) -> None:
    assert nesting_depth(text) == depth


def _depth(value: Any) -> int:
    """Reference: nesting depth of a parsed JSON value."""
    children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else None
    return 0 if children is None else 1 + max(map(_depth, children), default=0)


def test_nesting_depth_agrees_with_the_parsed_value() -> None:
    rng = random.Random(0)
    tricky = ["a[b", 'x"]{', "\\", "\\\\", '\\"[[', '\\\\"]]', "\u5b5b\u7d7d", "\U0001f600[", None, 1.5]

    def value(level: int) -> Any:
        roll = rng.random()
        if level > 7 or roll < 0.3:
            return rng.choice(tricky)
        if roll < 0.65:
            return [value(level + 1) for _ in range(rng.randint(0, 3))]
        return {f"{rng.choice(tricky[:6])}{i}": value(level + 1) for i in range(rng.randint(0, 3))}

    for _ in range(500):
        v = value(0)
        for ascii_only in (True, False):
            assert nesting_depth(json.dumps(v, ensure_ascii=ascii_only)) == _depth(v)


@pytest.mark.parametrize("body", [b"[" * 5000 + b"]" * 5000, b'{"a":' * 2000 + b"1" + b"}" * 2000,
                                  b"[" * (MAX_NESTING + 1) + b"]" * (MAX_NESTING + 1), b"[" * 100_000])
def test_deep_json_is_a_400_not_a_recursion_error(body: bytes) -> None:
    with pytest.raises(ScoringError, match=f"nests deeper than {MAX_NESTING} levels") as info:
        parse_json(body)
    assert info.value.status == 400


def test_json_at_the_nesting_limit_and_utf16_still_parse() -> None:
    assert parse_json(b"[" * MAX_NESTING + b"]" * MAX_NESTING) is not None
    assert parse_json('{"a": ["\u5b5b"]}'.encode("utf-16")) == {"a": ["\u5b5b"]}  # 0x5b bytes inside a character


@pytest.mark.parametrize(("content_type", "ok"), [
    ("application/json", True), ("Application/JSON; charset=utf-8", True), ("application/vnd.api+json", True),
    ("text/plain", False), ("application/x-www-form-urlencoded", False), (None, False), ("", False),
    ("application/jsonx", False), ("text/json", False), ("multipart/form-data; boundary=x", False),
])
def test_only_json_media_types_are_accepted(content_type: str | None, ok: bool) -> None:
    assert is_json_media_type(content_type) is ok


def _request(chunks: int, chunk: bytes, pulled: list[int], headers: list[tuple[bytes, bytes]] | None = None) -> Request:
    """A chunked request whose body arrives `chunk` at a time; `pulled` counts what the server read."""
    async def receive() -> dict[str, Any]:
        pulled.append(len(chunk))
        return {"type": "http.request", "body": chunk, "more_body": len(pulled) < chunks}

    return Request({"type": "http", "method": "POST", "headers": headers or [], "path": "/", "query_string": b""},
                   receive)


def test_a_chunked_body_over_the_limit_stops_being_read_at_the_limit() -> None:
    pulled: list[int] = []
    with pytest.raises(ScoringError, match="exceeds 1000000 bytes") as info:
        asyncio.run(read_body(_request(100_000, b" " * 65_536, pulled), 1_000_000))  # 6.5 GB offered
    assert info.value.status == 413 and sum(pulled) <= 1_000_000 + 65_536


def test_a_body_within_the_limit_is_read_whole() -> None:
    pulled: list[int] = []
    assert asyncio.run(read_body(_request(10, b"ab", pulled), 1_000)) == b"ab" * 10


def test_a_declared_length_over_the_limit_is_refused_before_reading() -> None:
    pulled: list[int] = []
    request = _request(1, b"x", pulled, headers=[(b"content-length", b"2000000")])
    with pytest.raises(ScoringError, match="2000000 bytes exceeds 1000000") as info:
        asyncio.run(read_body(request, 1_000_000))
    assert info.value.status == 413 and pulled == []


@pytest.mark.parametrize(("columns", "named"), [
    (["age", "age", "plan"], "'age'"), (["a", "b", "a", "b"], "'a', 'b'"), ([1, "1"], "'1'"),
])
def test_duplicate_split_columns_are_a_400_naming_them(columns: list[Any], named: str) -> None:
    payload = {"dataframe_split": {"columns": columns, "data": [list(range(len(columns)))]}}
    with pytest.raises(ScoringError, match=f"duplicate column\\(s\\) in 'dataframe_split': {named}$") as info:
        columns_from_scoring_json(payload)
    assert info.value.status == 400


def _served(version: str, frame: Any, label: str) -> Any:
    """Just what check_schema reads of a Served: the version and the contract."""
    from types import SimpleNamespace

    from tasks.data.contract import infer_contract
    from tasks.data.datasets import infer_features

    return SimpleNamespace(version=version, contract=infer_contract(frame, infer_features(frame, label)))


def test_a_candidate_with_another_input_schema_is_refused_unless_allowed() -> None:
    from tasks.data.demo import generate_demo, load_iris

    churn, iris = _served("1", generate_demo(500, seed=1), "churned"), _served("2", load_iris(), "species")
    with pytest.raises(ScoringError, match=r"^input schema differs from the live v1: requires column\(s\) the live "
                                           r"model does not: 'sepal_length_cm'.*; predicts classes .*; "
                                           r"pass allow_schema_change=true to swap anyway$") as info:
        check_schema(churn, iris, allow_change=False)
    assert info.value.status == 422
    assert len(check_schema(churn, iris, allow_change=True)) == 2
    assert check_schema(churn, _served("3", generate_demo(500, seed=2), "churned"), allow_change=False) == []
    assert check_schema(None, iris, allow_change=False) == []  # nothing served yet
