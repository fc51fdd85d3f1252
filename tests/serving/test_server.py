"""The model server as a real subprocess: scoring parity with MLflow, bad payloads, auth, hot swap under load."""

from __future__ import annotations

import json
import threading
import time
import uuid
from pathlib import Path
from typing import Iterator

import httpx
import numpy as np
import pytest

from tasks.data.demo import DEMO_CATEGORICAL, DEMO_NUMERIC, generate_demo
from tasks.registry.versions import CHAMPION, get_alias, load_pyfunc, move_champion
from tests.serving.conftest import TOKEN, register_servable, start_server, stop_server

pytestmark = [pytest.mark.usefixtures("prefect_harness"), pytest.mark.integration]
FEATURES = [*DEMO_NUMERIC, *DEMO_CATEGORICAL]
AUTH = {"Authorization": f"Bearer {TOKEN}"}
JSON = {"content-type": "application/json"}


def _rows(n: int, seed: int = 5) -> list[dict]:
    return json.loads(generate_demo(n, seed=seed, day=2)[FEATURES].to_json(orient="records"))


def test_predictions_match_mlflow_pyfunc(server, tracking) -> None:
    frame = generate_demo(200, seed=5, day=2)[FEATURES]
    split = json.loads(frame.to_json(orient="split", index=False))
    response = httpx.post(f"{server.url}/invocations", json={"dataframe_split": split}, timeout=30)
    assert response.status_code == 200
    body = response.json()
    version = get_alias(tracking, server.model_name, CHAMPION)
    expected = load_pyfunc(tracking, server.model_name, version=version).predict(frame)
    assert body["predictions"] == np.asarray(expected).tolist()
    assert body["model_version"] == version and np.allclose(np.sum(body["probabilities"], axis=1), 1)
    assert response.headers["x-request-id"] == body["request_id"]  # an extra key, as MLflow's own server adds them
    from mlflow.deployments import PredictionsResponse

    parsed = PredictionsResponse.from_json(response.text)  # what MLflow's deployment client does with the reply
    assert parsed.get_predictions("ndarray").tolist() == np.asarray(expected).tolist()
    records = httpx.post(f"{server.url}/invocations", json={"dataframe_records": _rows(5)}).json()
    assert records["predictions"] == body["predictions"][:5]


def test_typed_predict_and_its_schema(server) -> None:
    response = httpx.post(f"{server.url}/predict", json={"rows": _rows(3)})
    assert response.status_code == 200
    first = response.json()["predictions"][0]
    assert set(first) == {"label", "probabilities"} and set(first["probabilities"]) == {"0", "1"}
    schema = httpx.get(f"{server.url}/openapi.json").json()
    row = schema["components"]["schemas"]["PredictRow"]
    assert set(row["required"]) == set(FEATURES) and "training range" in row["properties"]["age"]["description"]
    assert schema["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/PredictRequest"}
    assert httpx.get(f"{server.url}/docs").status_code == 200
    info = httpx.get(f"{server.url}/version").json()
    assert info["alias"] == "champion" and len(info["contract_fingerprint"]) == 64


@pytest.mark.parametrize(
    ("path", "content", "status", "fragment"),
    [
        ("/invocations", {"dataframe_records": [{"age": 40}]}, 400, "missing column(s): 'tenure_months'"),
        ("/invocations", {"dataframe_records": [{**_rows(1)[0], "age": "forty"}]}, 422, "column 'age' must be numeric"),
        ("/invocations", {"dataframe_records": []}, 400, "no rows"),
        ("/invocations", {"dataframe_split": {"columns": ["a"], "data": [[1, 2]]}}, 400, "row 0 does not have 1"),
        ("/invocations", {"instances": [1]}, 400, "expected 'dataframe_split' or 'dataframe_records'"),
        ("/invocations", {"dataframe_records": _rows(1) * 501}, 413, "at most 500"),
        ("/invocations", b"{not json", 400, "not valid JSON"),
        ("/predict", {"rows": [{**_rows(1)[0], "credit_score": "high"}]}, 422, "rows.0.credit_score"),
        ("/predict", {"rows": [{k: v for k, v in _rows(1)[0].items() if k != "plan"}]}, 422, "rows.0.plan"),
        ("/predict", {"rows": []}, 422, "rows"),
    ],
    ids=["missing-column", "wrong-type", "empty", "ragged-split", "unknown-format", "too-large", "not-json",
         "typed-wrong-type", "typed-missing", "typed-empty"],
)
def test_bad_payloads_get_a_4xx_naming_the_problem(server, path, content, status, fragment) -> None:
    kwargs = {"content": content, "headers": JSON} if isinstance(content, bytes) else {"json": content}
    response = httpx.post(f"{server.url}{path}", **kwargs)
    assert response.status_code == status, response.text
    assert fragment in response.json()["message"]


def _chunked(total: int, piece: bytes = b" " * 65_536) -> Iterator[bytes]:
    """`total` bytes of JSON whitespace, generated lazily: httpx sends it chunked, without a Content-Length."""
    for _ in range(total // len(piece)):
        yield piece


def _records_body(rows: int = 2) -> bytes:
    return json.dumps({"dataframe_records": _rows(rows)}).encode()


def _split_with_a_duplicate(column: str) -> bytes:
    frame = generate_demo(2, seed=5, day=2)[FEATURES]
    return json.dumps({"dataframe_split": {"columns": [column, *FEATURES],
                                           "data": [[999, *row] for row in frame.values.tolist()]}}).encode()


_DEEP = b"[" * 900 + b"1" + b"]" * 900  # below Python's recursion limit: json.loads alone would take it
_HOSTILE = [
    ("/invocations", b"[" * 5000 + b"]" * 5000, JSON, 400, "nests deeper than 64 levels"),
    ("/invocations", b'{"a":' * 2000 + b"1" + b"}" * 2000, JSON, 400, "nests deeper than 64 levels"),
    ("/invocations", b'{"dataframe_records": [{"age": ' + _DEEP + b"}]}", JSON, 400, "nests deeper than 64 levels"),
    ("/predict", b"[" * 5000 + b"]" * 5000, JSON, 400, "nests deeper than 64 levels"),
    ("/predict", b'{"a":' * 2000 + b"1" + b"}" * 2000, JSON, 400, "nests deeper than 64 levels"),
    ("/predict", b'{"rows": [{"age": ' + _DEEP + b"}]}", JSON, 400, "nests deeper than 64 levels"),
    ("/invocations", _split_with_a_duplicate("tenure_months"), JSON, 400,
     "duplicate column(s) in 'dataframe_split': 'tenure_months'"),
    ("/invocations", _records_body(), {"content-type": "text/plain"}, 415, "send Content-Type: application/json"),
    ("/invocations", _records_body(), {}, 415, "send Content-Type: application/json"),
    ("/invocations", _records_body(), {"content-type": "application/x-www-form-urlencoded"}, 415,
     "got 'application/x-www-form-urlencoded'"),
    ("/predict", json.dumps({"rows": _rows(2)}).encode(), {"content-type": "text/plain"}, 415,
     "send Content-Type: application/json"),
    ("/predict", json.dumps({"rows": _rows(2)}).encode(), {}, 415, "send Content-Type: application/json"),
    ("/invocations", lambda: _chunked(20_000_000), JSON, 413, "exceeds 10000000 bytes"),
    ("/predict", lambda: _chunked(20_000_000), JSON, 413, "exceeds 10000000 bytes"),
]


@pytest.mark.parametrize(("path", "content", "headers", "status", "fragment"), _HOSTILE, ids=[
    "deep-array", "deep-object", "deep-in-a-cell", "typed-deep-array", "typed-deep-object", "typed-deep-in-a-field",
    "duplicate-split-column", "text-plain", "no-content-type", "form-urlencoded", "typed-text-plain",
    "typed-no-content-type", "chunked-over-limit", "typed-chunked-over-limit"])
def test_hostile_requests_get_a_4xx_naming_the_problem(server, path, content, headers, status, fragment) -> None:
    response = httpx.post(f"{server.url}{path}", content=content() if callable(content) else content,
                          headers=headers, timeout=60)
    assert response.status_code == status, response.text[:300]
    assert fragment in response.json()["message"]
    assert httpx.get(f"{server.url}/health").status_code == 200


@pytest.mark.parametrize("content_type", ["application/json; charset=utf-8", "application/vnd.mlflow+json"])
def test_json_media_types_and_chunked_bodies_within_the_limit_are_scored(server, content_type) -> None:
    body = _records_body(3)
    pieces = (body[i:i + 100] for i in range(0, len(body), 100))  # chunked: no Content-Length
    response = httpx.post(f"{server.url}/invocations", content=pieces, headers={"content-type": content_type})
    assert response.status_code == 200, response.text[:300]
    assert len(response.json()["predictions"]) == 3


def _memory_mb(pid: int, reset_peak: bool = False) -> dict[str, float]:
    """The process's resident set now (VmRSS) and at its peak (VmHWM) since the last reset, in MB."""
    if reset_peak:
        Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM := VmRSS (Linux >= 4.0)
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return {k: int(fields[k].split()[0]) / 1024 for k in ("VmRSS", "VmHWM")}


@pytest.fixture(scope="module")
def small_server(champion, tmp_path_factory):
    """A server with a 1 MB body limit."""
    srv = start_server(champion, tmp_path_factory.mktemp("small") / "server.log",
                       NIGHTSHIFT_SERVER_MAX_BODY_BYTES="1000000")
    yield srv
    stop_server(srv)


@pytest.mark.parametrize(("path", "status", "fragment"), [
    ("/invocations", 413, "request body exceeds 1000000 bytes"),
    ("/predict", 413, "request body exceeds 1000000 bytes"),
    ("/reload", 401, "missing bearer token")])  # /reload reads no body: uvicorn discards it
def test_a_chunked_upload_over_the_limit_is_refused_while_streaming(small_server, path, status, fragment) -> None:
    pid, size = small_server.process.pid, 200_000_000
    before = _memory_mb(pid, reset_peak=True)
    started = time.perf_counter()
    try:  # uvicorn answers, then reads and drops the rest of the upload: the client gets to read the answer
        response = httpx.post(f"{small_server.url}{path}", content=_chunked(size), headers=JSON, timeout=60)
        got, message = response.status_code, response.json()["message"]
    except (httpx.WriteError, httpx.RemoteProtocolError, httpx.ReadError) as exc:  # or closed before it was read
        got, message = None, type(exc).__name__
    after = _memory_mb(pid)
    print(f"{path}: {size / 1e6:.0f} MB chunked -> {got} {message!r} in {time.perf_counter() - started:.2f} s; "
          f"server peak RSS {before['VmHWM']:.0f} -> {after['VmHWM']:.0f} MB")
    assert got is None or (got == status and fragment in message), (got, message)
    assert after["VmHWM"] - before["VmHWM"] < 100, (before, after)
    assert httpx.get(f"{small_server.url}/health").status_code == 200
    assert httpx.post(f"{small_server.url}/invocations", json={"dataframe_records": _rows(2)}).status_code == 200


def test_reload_refuses_a_new_input_schema_unless_allowed(prefect_harness, tracking, tmp_path) -> None:
    from flows.train import EstimatorParams, TrainParams, train
    from tasks.data.datasets import DatasetParams

    name = f"schema-{uuid.uuid4().hex[:8]}"
    churn = train(TrainParams(dataset=DatasetParams(source="demo", rows=2_000), model_name=name, cv_folds=2,
                              estimator=EstimatorParams(param_grid={"n_estimators": [20], "max_depth": [6]})))
    move_champion(tracking, name, churn.model_version)
    srv = start_server(name, tmp_path / "server.log")
    try:
        iris = train(TrainParams(dataset=DatasetParams(source="iris"), model_name=name, cv_folds=2,
                                 estimator=EstimatorParams(param_grid={"n_estimators": [20], "max_depth": [4]})))
        move_champion(tracking, name, iris.model_version)
        refused = httpx.post(f"{srv.url}/reload", headers=AUTH, timeout=120)
        assert refused.status_code == 422, refused.text
        body = refused.json()
        assert body["status"] == "kept" and body["model_version"] == churn.model_version
        assert body["reason"].startswith(f"input schema differs from the live v{churn.model_version}: requires "
                                          "column(s) the live model does not: 'sepal_length_cm'")
        assert body["reason"].endswith("; pass allow_schema_change=true to swap anyway")
        assert httpx.get(f"{srv.url}/version").json()["model_version"] == churn.model_version
        assert httpx.post(f"{srv.url}/invocations", json={"dataframe_records": _rows(2)}).status_code == 200

        swapped = httpx.post(f"{srv.url}/reload", params={"allow_schema_change": "true"}, headers=AUTH, timeout=120)
        assert swapped.status_code == 200, swapped.text
        assert swapped.json()["status"] == "swapped" and swapped.json()["to_version"] == iris.model_version
        assert any("sepal_length_cm" in change for change in swapped.json()["schema_changes"])
        assert httpx.get(f"{srv.url}/version").json()["model_version"] == iris.model_version
    finally:
        stop_server(srv)


def test_reload_needs_the_token(server) -> None:
    assert httpx.post(f"{server.url}/reload").status_code == 401
    assert httpx.post(f"{server.url}/reload", headers={"Authorization": "Bearer wrong"}).status_code == 403


def test_hot_swap_under_load_drops_nothing_and_a_broken_candidate_is_refused(server, tracking) -> None:
    name = server.model_name
    old = httpx.get(f"{server.url}/version").json()["model_version"]
    new = register_servable(tracking, name, rows=2_000)
    broken = register_servable(tracking, name, rows=2_000, broken=True)
    body = {"dataframe_records": _rows(3)}
    results: list[tuple[int, str]] = []
    stop = threading.Event()

    def load() -> None:
        with httpx.Client(timeout=30) as client:
            for _ in range(2_000):  # bounded; stops early when the swap is done
                if stop.is_set():
                    return
                try:
                    r = client.post(f"{server.url}/invocations", json=body)
                    results.append((r.status_code, r.json().get("model_version", "")))
                except httpx.HTTPError as exc:
                    results.append((0, type(exc).__name__))

    workers = [threading.Thread(target=load) for _ in range(4)]
    for w in workers:
        w.start()
    time.sleep(1.0)
    move_champion(tracking, name, new)
    swap = httpx.post(f"{server.url}/reload", headers=AUTH, timeout=120)
    time.sleep(1.0)
    stop.set()
    for w in workers:
        w.join(timeout=60)
    assert swap.status_code == 200 and swap.json() == {"status": "swapped", "from_version": old, "to_version": new,
                                                    "schema_changes": []}
    failures = [r for r in results if r[0] != 200]
    served = {v for _, v in results}
    assert len(results) > 50 and failures == [], failures[:5]
    assert served == {old, new}  # both models answered, none failed, during the swap
    by_version = {v: sum(1 for _, got in results if got == v) for v in (old, new)}
    print(f"hot swap under load: {len(results)} requests from 4 clients, {len(failures)} failed, "
          f"v{old}: {by_version[old]}, v{new}: {by_version[new]}")

    move_champion(tracking, name, broken)
    refused = httpx.post(f"{server.url}/reload", headers=AUTH, timeout=120)
    assert refused.status_code == 422 and refused.json()["status"] == "kept"
    assert "NaN" in refused.json()["reason"]
    assert httpx.get(f"{server.url}/version").json()["model_version"] == new
    assert httpx.post(f"{server.url}/invocations", json=body).status_code == 200
    move_champion(tracking, name, new)  # leave a servable champion for later tests


def test_schemathesis_finds_no_server_errors(server, tmp_path) -> None:
    import subprocess
    import sys
    from pathlib import Path

    exe = Path(sys.executable).with_name("schemathesis")
    proc = subprocess.run(
        [str(exe), "run", f"{server.url}/openapi.json", "--checks", "not_a_server_error",
         "--max-examples", "40", "--exclude-path-regex", "/reload$", "--seed", "1", "--no-color"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path)
    (tmp_path / "schemathesis.txt").write_text(proc.stdout + proc.stderr)
    print(proc.stdout[-3000:])
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
