"""The shadow model: loaded beside the champion (route, start-up alias), scored off the request path on the captured
requests only, its predictions captured under {model}/shadow/{day}/ and joinable with the champion's rows; a full
queue or a failing shadow never touches the answers; reloads and DELETE remove it; /metrics and the reader."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from nightshift.settings import Settings
from serving.compiled import Batch
from serving.server import create_app
from serving.shadow import RowQueue, ShadowScorer, pack
from tasks.data.demo import DEMO_CATEGORICAL, DEMO_NUMERIC, generate_demo
from tasks.data.served import NoServedData, read_served, read_shadow, served_days
from tests.serving.conftest import TOKEN, register_servable, start_server, stop_server

FEATURES = [*DEMO_NUMERIC, *DEMO_CATEGORICAL]
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def versions(tracking) -> dict[str, Any]:
    """Model `name`: v1 champion, v2 a challenger with the same schema, v3 one without the `age` column."""
    from tasks.registry.versions import move_champion

    name = f"shadow-{uuid.uuid4().hex[:6]}"
    v1 = register_servable(tracking, name, seed=11)
    v2 = register_servable(tracking, name, seed=12)
    v3 = register_servable(tracking, name, seed=13, drop=("age",))
    move_champion(tracking, name, v1)
    return {"name": name, "v1": v1, "v2": v2, "v3": v3}


def _settings(name: str, tmp_path: Path, **overrides: Any) -> Settings:
    values = {"model_name": name, "catalogue_path": tmp_path / "none.yaml", "server_prompts": [],
              "capture_dir": tmp_path / "served", "capture_flush_seconds": 0.05, "server_token": TOKEN, **overrides}
    return Settings(**values)


def _records(n: int, seed: int) -> list[dict[str, Any]]:
    return json.loads(generate_demo(n, seed=seed, day=2)[FEATURES].to_json(orient="records"))


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def _wait(check, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def _send(client: TestClient, tag: str, count: int = 6) -> list[tuple[str, dict[str, Any]]]:
    """Requests of 1..count rows under fixed request ids; (request id, body answered) each."""
    out = []
    for i in range(count):
        rid = f"{tag}-{i}"
        response = client.post("/invocations", json={"dataframe_records": _records(i + 1, seed=50 + i)},
                               headers={"X-Request-Id": rid})
        assert response.status_code == 200, response.text
        out.append((rid, response.json()))
    return out


@pytest.mark.integration  # a shadow's scoring process and model loads: ~10 s
def test_shadow_route_scores_the_captured_requests_beside_the_champion(versions, tracking, tmp_path) -> None:
    from tasks.registry.versions import load_sklearn

    name, v1, v2, v3 = versions["name"], versions["v1"], versions["v2"], versions["v3"]
    root = tmp_path / "served"
    with TestClient(create_app(_settings(name, tmp_path))) as client:
        assert client.get("/models").json()["models"][name]["shadow"] is None
        without = _send(client, "a")
        assert client.post(f"/models/{name}/shadow?version={v2}").status_code == 401
        assert client.post(f"/models/{name}/shadow?version={v2}",
                           headers={"Authorization": "Bearer wrong"}).status_code == 403
        own = client.post(f"/models/{name}/shadow?version={v1}", headers=AUTH)
        assert own.status_code == 409 and f"v{v1} is the champion" in own.json()["message"]
        assert client.post(f"/models/{name}/shadow?version=999", headers=AUTH).status_code == 404
        assert client.post("/models/nobody/shadow?version=1", headers=AUTH).status_code == 404
        other = client.post(f"/models/{name}/shadow?version={v3}", headers=AUTH)
        assert other.status_code == 422 and "does not take column(s) the champion does: 'age'" in \
            other.json()["message"], other.text
        loaded = client.post(f"/models/{name}/shadow?version={v2}", headers=AUTH)
        assert loaded.status_code == 200 and loaded.json() == {"status": "shadowing", "model_version": v1,
                                                                "shadow_version": v2, "replaced": None}
        refused = client.post(f"/models/{name}/shadow?version={v3}", headers=AUTH)  # a failure keeps the shadow
        assert refused.status_code == 422
        listed = client.get("/models").json()["models"][name]["shadow"]
        assert listed["model_version"] == v2 and set(listed) == {
            "model_version", "run_id", "loaded_at", "queue_rows", "scored_rows", "dropped_rows", "failed_rows"}
        with_shadow = _send(client, "b")  # the same requests: the same answers
        assert [{**body, "request_id": rid.replace("b-", "a-")} for rid, body in with_shadow] == \
            [body for _, body in without]
        rows = sum(len(body["predictions"]) for _, body in with_shadow)
        _wait(lambda: client.get("/models").json()["models"][name]["shadow"]["scored_rows"] == rows)
        s = _samples(client.get("/metrics").text)
        assert s[("nightshift_shadow_rows_total", (("model", name), ("outcome", "scored"), ("version", v2)))] == rows
        assert s[("nightshift_shadow_rows_total", (("model", name), ("outcome", "dropped"), ("version", v2)))] == 0
        assert s[("nightshift_shadow_loaded", (("model", name), ("version", v2)))] == 1
        assert s[("nightshift_shadow_queue_rows", (("model", name),))] == 0
        assert client.delete(f"/models/{name}/shadow").status_code == 401
        assert client.delete(f"/models/{name}/shadow", headers=AUTH).json() == {"status": "removed",
                                                                                 "shadow_version": v2}
        assert client.delete(f"/models/{name}/shadow", headers=AUTH).json() == {"status": "none"}
        after = _samples(client.get("/metrics").text)
        assert ("nightshift_shadow_loaded", (("model", name), ("version", v2))) not in after
        assert after[("nightshift_shadow_rows_total", (("model", name), ("outcome", "scored"), ("version", v2)))] \
            == rows  # counters survive the removal
    champion = pd.concat([read_served(root, name, d) for d in served_days(root, name)])
    champion = champion[champion["model_version"] == v1].set_index(["request_id", "row"]).sort_index()
    day = served_days(root, name)[-1]
    shadow = read_shadow(root, name, day, version=v2)
    assert set(shadow.columns) == {"request_id", "row", "row_id", "captured_at", "model", "model_version",
                                   "prediction", "proba_0", "proba_1"}
    shadow = shadow.set_index(["request_id", "row"]).sort_index()
    shadowed = champion.loc[[rid for rid, _ in with_shadow]]
    assert len(shadow) == len(shadowed) == rows and shadow.index.equals(shadowed.index)
    assert (shadow["captured_at"] == shadowed["captured_at"]).all()
    expected = load_sklearn(tracking, name, version=v2).predict_proba(shadowed[FEATURES])
    assert np.allclose(shadow[["proba_0", "proba_1"]].to_numpy(), expected)
    assert shadow["prediction"].tolist() == np.argmax(expected, axis=1).tolist()


@pytest.mark.integration  # registers the module's versions: ~10 s
def test_shadow_needs_capture_and_a_champion(versions, tmp_path) -> None:
    name, v2 = versions["name"], versions["v2"]
    with TestClient(create_app(_settings(name, tmp_path, capture_enabled=False))) as client:
        off = client.post(f"/models/{name}/shadow?version={v2}", headers=AUTH)
        assert off.status_code == 409 and "NIGHTSHIFT_CAPTURE_ENABLED is off" in off.json()["message"]
    with TestClient(create_app(_settings(f"none-{uuid.uuid4().hex[:6]}", tmp_path))) as client:
        missing = client.post(f"/models/{client.get('/models').json()['default_model']}/shadow?version=1",
                              headers=AUTH)
        assert missing.status_code == 409 and "no champion loaded" in missing.json()["message"]


@pytest.mark.integration  # a shadow's scoring process and model loads: ~10 s
def test_start_up_loads_the_shadow_alias_and_a_promotion_removes_it(tracking, tmp_path) -> None:
    from tasks.registry.versions import SHADOW, move_champion, set_alias

    name = f"shadow-alias-{uuid.uuid4().hex[:6]}"
    v1, v2 = register_servable(tracking, name, seed=11), register_servable(tracking, name, seed=12)
    v3 = register_servable(tracking, name, seed=13, drop=("age",))
    move_champion(tracking, name, v1)
    set_alias(tracking, name, SHADOW, v3)  # cannot shadow v1: shown, the champion serves all the same
    with TestClient(create_app(_settings(name, tmp_path))) as client:
        summary = client.get("/models").json()["models"][name]
        assert summary["status"] == "loaded" and "does not take column(s)" in summary["shadow"]["error"]
        assert client.post("/invocations", json={"dataframe_records": _records(2, 1)}).status_code == 200
    set_alias(tracking, name, SHADOW, v2)
    with TestClient(create_app(_settings(name, tmp_path))) as client:
        assert client.get("/models").json()["models"][name]["shadow"]["model_version"] == v2
        move_champion(tracking, name, v2)  # the shadow is promoted: it is serving now
        swapped = client.post("/reload", headers=AUTH)
        assert swapped.json()["status"] == "swapped", swapped.text
        assert client.get("/models").json()["models"][name]["shadow"] is None


class _Fake:
    """Just what Shadow reads of a Served; `predict` decides what scoring does."""

    def __init__(self, predict) -> None:
        self.name, self.version, self.run_id, self.loaded_at = "fake", "7", "run", "now"
        self.classes, self.regression = [0, 1], False
        self.sample = Batch(np.zeros((0, 1)), ("x",), {})
        self.predict_proba = predict


class _Capture:
    def __init__(self) -> None:
        self.offers: list[tuple[Any, ...]] = []

    def offer(self, *args: Any, **kwargs: Any) -> bool:
        self.offers.append((*args, kwargs))
        return True


def _batch(n: int) -> Batch:
    return Batch(np.arange(n, dtype=float).reshape(n, 1), ("x",), {})


def test_a_full_queue_drops_and_counts_without_waiting() -> None:
    queue = RowQueue(limit=2)
    item = lambda rid, n: (rid, _batch(n), None, 1.0)  # noqa: E731
    start = time.perf_counter()
    assert queue.offer(item("r0", 1)) and not queue.offer(item("r1", 2))  # 1 + 2 rows > 2: dropped at once
    assert queue.offer(item("r2", 1)) and not queue.offer(item("r3", 1))
    assert time.perf_counter() - start < 0.05 and queue.counts() == (2, 3)
    items, closed = queue.take(0)
    assert [i[0] for i in items] == ["r0", "r2"] and not closed and queue.counts() == (0, 3)
    assert queue.offer(item("r4", 2))
    queue.close(discard=True)  # a shadow removed: what waits is dropped, later offers too
    assert not queue.offer(item("r5", 1)) and queue.counts() == (0, 6) and queue.take(0) == ([], True)


def test_a_failing_shadow_counts_failed_rows_and_keeps_going(caplog) -> None:
    calls = []

    def broken(batch: Batch) -> np.ndarray:
        calls.append(len(batch))
        raise RuntimeError("model exploded")

    capture = _Capture()
    scorer = ShadowScorer(_Fake(broken), capture)  # type: ignore[arg-type]
    for i in range(3):
        scorer.score(pack([(f"r{i}", _batch(2), None, 1.0)]))
    assert (scorer.scored_rows, scorer.failed_rows, sum(calls), capture.offers) == (0, 6, 6, [])
    assert sum("model exploded" in r.getMessage() for r in caplog.records) == 1  # logged once, counted always
    scorer.served = _Fake(lambda batch: np.tile([0.25, 0.75], (len(batch), 1)))  # type: ignore[assignment]
    scorer.score(pack([("ok-1", _batch(1), None, 1.0), ("ok-2", _batch(2), ["a", "b"], 2.0)]))  # one predict call
    assert scorer.scored_rows == 3 and [o[2] for o in capture.offers] == ["ok-1", "ok-2"]
    assert capture.offers[1][4].tolist() == [1, 1] and capture.offers[1][-1] == {"row_ids": ["a", "b"], "at": 2.0}


@pytest.mark.integration  # a shadow's scoring process and model loads: ~10 s
def test_a_killed_shadow_process_never_changes_the_answer(versions, tmp_path) -> None:
    """SIGKILL the shadow's process mid-traffic: the answers stay the same, its rows are counted failed."""
    import os
    import signal

    name, v2 = versions["name"], versions["v2"]
    with TestClient(create_app(_settings(name, tmp_path))) as client:
        expected = _send(client, "f", 3)
        assert client.post(f"/models/{name}/shadow?version={v2}", headers=AUTH).status_code == 200
        shadow = client.app.state.nightshift.slots[name].shadow
        os.kill(shadow._process.pid, signal.SIGKILL)
        shadow._process.join(10)
        assert [{**b, "request_id": r} for r, b in _send(client, "g", 3)] == \
            [{**b, "request_id": r.replace("f-", "g-")} for r, b in expected]
        _wait(lambda: shadow.counts()["failed_rows"] == 6)
        s = _samples(client.get("/metrics").text)
        assert s[("nightshift_shadow_rows_total", (("model", name), ("outcome", "failed"), ("version", v2)))] == 6
        assert client.delete(f"/models/{name}/shadow", headers=AUTH).json()["status"] == "removed"


@pytest.mark.integration  # a shadow's scoring process and model loads: ~10 s
def test_only_sampled_requests_are_shadow_scored(versions, tmp_path) -> None:
    from serving.capture import sampled

    name, v2 = versions["name"], versions["v2"]
    with TestClient(create_app(_settings(name, tmp_path, capture_sample_rate=0.5))) as client:
        assert client.post(f"/models/{name}/shadow?version={v2}", headers=AUTH).status_code == 200
        sent = _send(client, "s", 12)
        rows = sum(len(body["predictions"]) for rid, body in sent if sampled(rid, 0.5))
        assert 0 < rows < sum(len(body["predictions"]) for _, body in sent)
        _wait(lambda: client.get("/models").json()["models"][name]["shadow"]["scored_rows"] == rows)
        assert client.app.state.nightshift.capture.sampled("s-0") == sampled("s-0", 0.5)


def test_reader_of_shadow_parts(tmp_path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = tmp_path / "served"
    with pytest.raises(NoServedData, match="no shadow predictions of model 'm' on 2026-01-05"):
        read_shadow(root, "m", "2026-01-05")
    for folder, version in ((root / "m" / "2026-01-05", "1"), (root / "m" / "shadow" / "2026-01-05", "2")):
        folder.mkdir(parents=True)
        pq.write_table(pa.table({"request_id": ["r"], "row": [0], "model_version": [version], "prediction": [1]}),
                       folder / "part-1.parquet")
    assert served_days(root, "m") == [pd.Timestamp("2026-01-05").date()]  # `shadow` is no day
    assert read_served(root, "m", "2026-01-05")["model_version"].tolist() == ["1"]
    assert read_shadow(root, "m", "2026-01-05", version="2")["model_version"].tolist() == ["2"]
    with pytest.raises(NoServedData, match="version 3"):
        read_shadow(root, "m", "2026-01-05", version="3")
    with pytest.raises(NoServedData, match="days with shadow predictions: 2026-01-05"):
        read_shadow(root, "m", "2026-01-06")


@pytest.mark.integration
def test_a_real_server_writes_the_shadow_parts_on_sigterm(versions, tracking, tmp_path) -> None:
    """The process: the registry's alias loaded at start-up, requests shadow-scored, the parts closed at SIGTERM."""
    import httpx

    from tasks.registry.versions import SHADOW, delete_alias, set_alias

    name, v1, v2 = versions["name"], versions["v1"], versions["v2"]
    set_alias(tracking, name, SHADOW, v2)
    try:
        srv = start_server(name, tmp_path / "server.log", NIGHTSHIFT_CAPTURE_FLUSH_SECONDS="0.1")
    finally:
        delete_alias(tracking, name, SHADOW)
    try:
        assert httpx.get(f"{srv.url}/models").json()["models"][name]["shadow"]["model_version"] == v2
        for i in range(5):
            response = httpx.post(f"{srv.url}/invocations", json={"dataframe_records": _records(3, seed=i)},
                                  headers={"X-Request-Id": f"p-{i}"})
            assert response.status_code == 200 and response.json()["model_version"] == v1
    finally:
        stop_server(srv)
    root = tmp_path / "served"
    shadow = read_shadow(root, name, served_days(root, name)[-1])
    assert sorted(set(shadow["request_id"])) == [f"p-{i}" for i in range(5)] and len(shadow) == 15
    assert (shadow["model_version"] == v2).all()

