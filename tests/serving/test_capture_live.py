"""Traffic capture and /metrics wired into the server: what is captured is what was answered (in process, and a real
uvicorn process stopped by SIGTERM), a full queue drops and counts without failing a request, the scrape's counters
match the requests sent."""

from __future__ import annotations

import json
import signal
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
import yaml
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from nightshift.settings import Settings
from serving.server import create_app
from tasks.data.demo import DEMO_CATEGORICAL, DEMO_NUMERIC, generate_demo
from tasks.data.served import IN_PROGRESS, read_served, served_days
from tests.serving.conftest import TOKEN, register_servable, start_server, stop_server

NUMERIC, CATEGORICAL = list(DEMO_NUMERIC), list(DEMO_CATEGORICAL)
FEATURES = [*NUMERIC, *CATEGORICAL]
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ID = "customer_id"
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture(scope="module")
def models(tracking, tmp_path_factory) -> dict[str, Any]:
    """Default model `a` (no catalogue entry: rows identified by request id + index), catalogue model `b` (id column
    customer_id), catalogue model `c` (no champion); the catalogue file."""
    from tasks.registry.versions import move_champion

    tag = uuid.uuid4().hex[:6]
    names = {key: f"cap-{key}-{tag}" for key in "abc"}
    versions = {key: register_servable(tracking, names[key], seed=seed) for key, seed in (("a", 11), ("b", 12))}
    for key, version in versions.items():
        move_champion(tracking, names[key], version)
    path = tmp_path_factory.mktemp("capture-catalogue") / "models.yaml"
    entries = [{"name": names[k], "features": f"{k}/{{date:%Y-%m-%d}}.parquet", "label": "churned",
                **({"id_columns": [ID, "other_id"]} if k == "b" else {})} for k in "bc"]
    path.write_text(yaml.safe_dump({"models": entries}))
    return {"names": names, "versions": versions, "catalogue": path}


def _frame(n: int, seed: int) -> pd.DataFrame:
    frame = generate_demo(n, seed=seed, day=2)[FEATURES].reset_index(drop=True)
    frame.loc[0, "age"] = np.nan  # a missing value travels as null
    return frame


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return json.loads(frame.to_json(orient="records"))


def _body(fmt: str, frame: pd.DataFrame, ids: list[Any] | None) -> dict[str, Any]:
    """A request body: MLflow's split or records format, or /predict's rows; the ids as an extra column."""
    records = _records(frame)
    if ids is not None:
        records = [{**r, ID: i} for r, i in zip(records, ids)]
    if fmt == "split":
        columns = list(records[0])
        return {"dataframe_split": {"columns": columns, "data": [[r[c] for c in columns] for r in records]}}
    return {"dataframe_records": records} if fmt == "records" else {"rows": records}


def _answer(reply: dict[str, Any]) -> tuple[list[Any], list[list[float]]]:
    """Labels and probabilities from either route's reply (in class order)."""
    if "probabilities" in reply:
        return reply["predictions"], reply["probabilities"]
    labels = [p["label"] for p in reply["predictions"]]
    return labels, [[p["probabilities"][k] for k in sorted(p["probabilities"])] for p in reply["predictions"]]


def _send_mix(post, names: dict[str, str], tag: str) -> list[dict[str, Any]]:
    """Scoring requests of every route and format, 1-row and multi-row, to two models, each with its own request id;
    what each was answered."""
    plan = [("/invocations", "a", "split", 1), ("/invocations", "a", "records", 7), ("/predict", "a", "rows", 1),
            ("/predict", "a", "rows", 4), (f"/models/{names['b']}/invocations", "b", "split", 1),
            (f"/models/{names['b']}/invocations", "b", "records", 5), (f"/models/{names['b']}/predict", "b", "rows", 3),
            (f"/models/{names['b']}/predict", "b", "rows", 1), (f"/models/{names['a']}/invocations", "a", "split", 3),
            (f"/models/{names['b']}/invocations", "b", "split", 2)]
    answered = []
    for i, (path, key, fmt, n) in enumerate(plan):
        frame = _frame(n, seed=100 + i)
        ids = [f"cust-{i}-{r}" for r in range(n)] if key == "b" and i != len(plan) - 1 else None  # the last: none
        if ids and fmt == "split":
            ids = [1000 * i + r for r in range(n)]  # numbers are ids too (captured as text)
        rid = f"{tag}-{i}"
        response = post(path, _body(fmt, frame, ids), rid)
        assert response.status_code == 200, response.text
        reply = response.json()
        assert response.headers["x-request-id"] == rid == reply.get("request_id", rid)
        assert ("request_id" in reply) == path.endswith("/invocations")  # /predict's body is unchanged
        labels, proba = _answer(reply)
        answered.append({"model": names[key], "version": reply["model_version"], "request_id": rid, "frame": frame,
                         "ids": ids, "labels": labels, "proba": proba})
    return answered


def _check_captured(root: Path, answered: list[dict[str, Any]], classes: list[str]) -> None:
    """The captured rows are exactly the answered ones: ids, rows, features, predictions, probabilities."""
    for model in {a["model"] for a in answered}:
        got = pd.concat([read_served(root, model, day) for day in served_days(root, model)], ignore_index=True)
        mine = [a for a in answered if a["model"] == model]
        got = got[got["request_id"].str.startswith(mine[0]["request_id"].rsplit("-", 1)[0])]
        assert len(got) == sum(len(a["labels"]) for a in mine), got[["request_id", "row"]]
        got = got.set_index(["request_id", "row"]).sort_index()
        for a in mine:
            rows = got.loc[a["request_id"]]
            assert rows.index.tolist() == list(range(len(a["labels"])))
            assert (rows["model_version"] == a["version"]).all() and (rows["model"] == model).all()
            assert rows["prediction"].tolist() == a["labels"]
            proba = rows[[f"proba_{c}" for c in classes]].to_numpy()
            assert np.allclose(proba, a["proba"], atol=5e-7) and np.allclose(proba.sum(axis=1), 1)  # unrounded
            expected_ids = [None] * len(rows) if a["ids"] is None else [str(v) for v in a["ids"]]
            assert [None if v is None or v is pd.NA else v for v in rows["row_id"]] == expected_ids
            sent = a["frame"]
            assert np.allclose(rows[NUMERIC].to_numpy(float), sent[NUMERIC].to_numpy(float), equal_nan=True)
            assert rows[CATEGORICAL].to_numpy().tolist() == sent[CATEGORICAL].to_numpy().tolist()


def _samples(text: str) -> Samples:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def _value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def _requests(samples: Samples, model: str, version: str, route: str, status: int) -> float:
    return _value(samples, "nightshift_requests_total", model=model, version=version, route=route, status=str(status))


def test_in_process_request_ids_metrics_and_capture(models, tmp_path) -> None:
    """Fast: the app in process (TestClient, lifespan shutdown on exit) captures what it answered."""
    names, versions = models["names"], models["versions"]
    root = tmp_path / "served"
    settings = Settings(model_name=names["a"], catalogue_path=models["catalogue"], server_prompts=[],
                        capture_dir=root, capture_flush_seconds=0.05, server_token=TOKEN)
    with TestClient(create_app(settings)) as client:
        answered = _send_mix(lambda path, body, rid: client.post(path, json=body, headers={"X-Request-Id": rid}),
                             names, "inproc")
        generated = client.post("/invocations", json=_body("records", _frame(2, 1), None))
        assert generated.status_code == 200 and generated.headers["x-request-id"] == generated.json()["request_id"]
        assert len(generated.headers["x-request-id"]) == 32
        unusable = client.post("/predict", json=_body("rows", _frame(1, 1), None), headers={"X-Request-Id": "x" * 129})
        assert unusable.headers["x-request-id"] != "x" * 129
        bad = client.post("/invocations", json={"dataframe_records": [{"age": 1}]}, headers={"X-Request-Id": "bad-1"})
        assert bad.status_code == 400 and bad.headers["x-request-id"] == "bad-1"
        assert client.post(f"/models/{names['c']}/predict", json={"rows": []}).status_code == 503
        scrape = client.get("/metrics")
    assert scrape.status_code == 200 and scrape.headers["content-type"].startswith("text/plain")
    s = _samples(scrape.text)
    a, b = names["a"], names["b"]
    assert _requests(s, a, versions["a"], "/invocations", 200) == 3
    assert _requests(s, a, versions["a"], "/invocations", 400) == 1
    assert _requests(s, a, versions["a"], "/predict", 200) == 3
    assert _requests(s, b, versions["b"], "/models/{name}/invocations", 200) == 3
    assert _requests(s, names["c"], "", "/models/{name}/predict", 503) == 1
    rows_a = sum(len(x["labels"]) for x in answered if x["model"] == a) + 2 + 1
    assert _value(s, "nightshift_rows_scored_total", model=a, version=versions["a"]) == rows_a
    assert _value(s, "nightshift_model_loaded", model=b, version=versions["b"], scorer="compiled forest") == 1
    assert _value(s, "nightshift_capture_offered_rows_total", model=a) == rows_a
    assert not list(root.rglob(f"*{IN_PROGRESS}"))
    _check_captured(root, answered, ["0", "1"])


def test_chat_requests_and_prompt_reloads_are_in_the_metrics(fake_openai, tracking, tmp_path) -> None:
    """Fast: chat counted by prompt version and status (a record each, no scored rows), reload outcomes, the live
    version swaps."""
    from tasks.llm.config import ProviderSettings
    from tasks.registry.versions import move_champion
    from tests.serving.conftest import register_prompt

    prompt = f"cap-chat-{uuid.uuid4().hex[:6]}"
    move_champion(tracking, prompt, register_prompt(tracking, prompt))
    root = tmp_path / "served"
    settings = Settings(model_name=f"no-model-{uuid.uuid4().hex[:6]}", catalogue_path=tmp_path / "none.yaml",
                        server_prompts=[prompt], server_token=TOKEN, capture_dir=root)
    with TestClient(create_app(settings, ProviderSettings(timeout_seconds=5.0, max_retries=0))) as client:
        route = "/models/{name}/chat"
        ok = client.post(f"/models/{prompt}/chat", json={"variables": {"ticket": "hi"}}, headers={"X-Request-Id": "c1"})
        assert ok.status_code == 200 and ok.headers["x-request-id"] == "c1"
        assert client.post(f"/models/{prompt}/chat", json={"variables": {}}).status_code == 400
        before = _samples(client.get("/metrics").text)
        assert _requests(before, prompt, "1", route, 200) == 1 and _requests(before, prompt, "1", route, 400) == 1
        assert _value(before, "nightshift_model_loaded", model=prompt, version="1", scorer="prompt fake-small") == 1
        assert _value(before, "nightshift_rows_scored_total", model=prompt, version="1") == 0

        move_champion(tracking, prompt, register_prompt(tracking, prompt, model="fake-large"))
        assert client.post(f"/models/{prompt}/reload").status_code == 401
        assert client.post(f"/models/{prompt}/reload", headers={"Authorization": "Bearer no"}).status_code == 403
        assert client.post("/models/made-up/reload").status_code == 401
        assert client.post(f"/models/{prompt}/reload", headers=AUTH).json()["status"] == "swapped"
        assert client.post("/models/made-up/chat", json={"variables": {}}).status_code == 404
        after = _samples(client.get("/metrics").text)
    assert _value(after, "nightshift_reloads_total", model=prompt, outcome="refused") == 2
    assert _value(after, "nightshift_reloads_total", model="", outcome="refused") == 1  # one label for made-up names
    assert _value(after, "nightshift_reloads_total", model=prompt, outcome="swapped") == 1
    assert _value(after, "nightshift_model_loaded", model=prompt, version="2", scorer="prompt fake-large") == 1
    assert ("nightshift_model_loaded", (("model", prompt), ("scorer", "prompt fake-small"), ("version", "1"))) \
        not in after
    assert _requests(after, "", "", route, 404) == 1
    # chat requests are captured as one record each under <prompt>/chat/ (the 404's made-up name is not), no rows
    assert _value(after, "nightshift_capture_offered_rows_total", model=prompt) == 2
    assert [p.relative_to(root).parts[1] for p in root.rglob("*.parquet")] == ["chat"]


def _stop_gracefully(srv) -> None:
    """SIGTERM, as a deployment stops it: uvicorn's shutdown runs the lifespan's capture.close(), then re-raises the
    signal (exit status -15); -9 would mean it did not stop within stop_server's 10 s."""
    stop_server(srv)
    assert srv.process.returncode in (0, -signal.SIGTERM), srv.log.read_text()[-3000:]


def _scrape(url: str) -> Samples:
    response = httpx.get(f"{url}/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    return _samples(response.text)


@pytest.mark.integration
def test_a_real_server_captures_exactly_the_rows_it_answered(models, tmp_path) -> None:
    names = models["names"]
    srv = start_server(names["a"], tmp_path / "server.log", NIGHTSHIFT_CATALOGUE_PATH=str(models["catalogue"]),
                       NIGHTSHIFT_CAPTURE_FLUSH_SECONDS="0.2")
    try:
        with httpx.Client(base_url=srv.url, timeout=30) as client:
            answered = _send_mix(lambda path, body, rid: client.post(path, json=body, headers={"X-Request-Id": rid}),
                                 names, "live")
            bad = client.post(f"/models/{names['b']}/invocations", json={"dataframe_records": [{"age": 1}]},
                              headers={"X-Request-Id": "live-bad"})
            assert bad.status_code == 400 and bad.headers["x-request-id"] == "live-bad"
    finally:
        _stop_gracefully(srv)
    root = tmp_path / "served"
    assert not list(root.rglob(f"*{IN_PROGRESS}"))  # every part closed by the shutdown
    _check_captured(root, answered, ["0", "1"])
    print(f"captured {sum(len(a['labels']) for a in answered)} rows of {len(answered)} requests to 2 models")


@pytest.mark.integration
def test_a_full_capture_queue_drops_and_counts_rows_but_fails_no_request(models, tmp_path) -> None:
    names = models["names"]
    srv = start_server(names["a"], tmp_path / "server.log", NIGHTSHIFT_CATALOGUE_PATH=str(models["catalogue"]),
                       NIGHTSHIFT_CAPTURE_QUEUE_ROWS="15", NIGHTSHIFT_CAPTURE_FLUSH_SECONDS="0.2",
                       NIGHTSHIFT_CAPTURE_ROLL_SECONDS="0.3")
    paths = {names["a"]: "/invocations", names["b"]: f"/models/{names['b']}/invocations"}
    body = _body("records", _frame(10, seed=3), None)
    statuses: list[int] = []

    def burst(model: str) -> None:
        with httpx.Client(base_url=srv.url, timeout=30) as client:
            statuses.extend(client.post(paths[model], json=body).status_code for _ in range(60))

    try:
        workers = [threading.Thread(target=burst, args=(model,)) for model in (*paths, *paths)]
        for w in workers:
            w.start()
        for w in workers:
            w.join(timeout=120)
        assert statuses == [200] * 240
        answered = {model: 2 * 60 * 10 for model in paths}

        def settled() -> Samples | None:
            s = _scrape(srv.url)
            done = all(_value(s, "nightshift_capture_written_rows_total", model=m)
                       + _value(s, "nightshift_capture_dropped_rows_total", model=m) == answered[m] for m in paths)
            return s if done else None

        deadline = time.monotonic() + 30
        while (s := settled()) is None:
            assert time.monotonic() < deadline, f"capture never settled: {_scrape(srv.url)}"
            time.sleep(0.2)
        dropped = {m: _value(s, "nightshift_capture_dropped_rows_total", model=m) for m in paths}
        written = {m: _value(s, "nightshift_capture_written_rows_total", model=m) for m in paths}
        for m in paths:
            assert _value(s, "nightshift_capture_offered_rows_total", model=m) == answered[m]
            assert _value(s, "nightshift_capture_queue_rows", model=m) == 0
            assert _value(s, "nightshift_capture_buffered_rows", model=m) == 0
        assert sum(dropped.values()) > 0 and sum(written.values()) > 0, (dropped, written)
    finally:
        _stop_gracefully(srv)
    root = tmp_path / "served"
    for m in paths:
        rows = sum(len(read_served(root, m, day)) for day in served_days(root, m))
        assert rows == written[m]
    print(f"burst of 240 requests x 10 rows, queue of 15 rows: written {written}, dropped {dropped}, none failed")


@pytest.mark.integration
def test_metrics_count_the_requests_rows_and_reloads_sent(models, tracking, tmp_path) -> None:
    from tasks.registry.versions import CHAMPION, delete_alias, move_champion

    names, versions = models["names"], dict(models["versions"])
    a, b, c = names["a"], names["b"], names["c"]
    srv = start_server(a, tmp_path / "server.log", NIGHTSHIFT_CATALOGUE_PATH=str(models["catalogue"]))
    try:
        with httpx.Client(base_url=srv.url, timeout=60) as client:
            for n in (1, 2, 3):
                assert client.post("/invocations", json=_body("split", _frame(n, n), None)).status_code == 200
            for _ in range(2):
                assert client.post(f"/models/{b}/predict", json=_body("rows", _frame(4, 9), None)).status_code == 200
            assert client.post(f"/models/{b}/invocations", json={"dataframe_records": [{"age": 1}]}).status_code == 400
            assert client.post("/invocations", content=b"{}", headers={"content-type": "text/plain"}).status_code == 415
            assert client.post(f"/models/{c}/predict", json={"rows": []}).status_code == 503
            assert client.post("/models/nope/predict", json={"rows": []}).status_code == 404
            first = _scrape(srv.url)
            live = _value(first, "nightshift_model_loaded", model=b, version=versions["b"], scorer="compiled forest")
            assert live == 1

            assert client.post("/reload").status_code == 401
            assert client.post(f"/models/{b}/reload", headers={"Authorization": "Bearer wrong"}).status_code == 403
            new_b = register_servable(tracking, b, seed=13)
            move_champion(tracking, b, new_b)
            assert client.post(f"/models/{b}/reload", headers=AUTH).json()["status"] == "swapped"
            assert client.post(f"/models/{c}/reload", headers=AUTH).status_code == 503  # kept: nothing to load
            delete_alias(tracking, a, CHAMPION)
            assert client.post("/reload", headers=AUTH).json()["status"] == "unloaded"
            assert client.post(f"/models/{b}/predict", json=_body("rows", _frame(1, 9), None)).status_code == 200
        s = _scrape(srv.url)
    finally:
        stop_server(srv)
        move_champion(tracking, a, versions["a"])  # for the other tests of the module
    va, vb = versions["a"], versions["b"]
    expected = {(a, va, "/invocations", 200): 3, (a, va, "/invocations", 415): 1,
                (b, vb, "/models/{name}/predict", 200): 2, (b, vb, "/models/{name}/invocations", 400): 1,
                (c, "", "/models/{name}/predict", 503): 1, ("", "", "/models/{name}/predict", 404): 1,
                (a, "", "/reload", 401): 1, (b, "", "/models/{name}/reload", 403): 1,
                (b, "", "/models/{name}/reload", 200): 1, (c, "", "/models/{name}/reload", 503): 1,
                (a, "", "/reload", 200): 1, (b, new_b, "/models/{name}/predict", 200): 1}
    requests = [(dict(labels), value) for (name, labels), value in s.items() if name == "nightshift_requests_total"]
    got = {(x["model"], x["version"], x["route"], int(x["status"])): v for x, v in requests
           if x["route"] not in ("/metrics", "/health", "/ready")}
    assert got == expected
    assert _value(s, "nightshift_rows_scored_total", model=a, version=va) == 6
    assert _value(s, "nightshift_rows_scored_total", model=b, version=vb) == 8
    assert _value(s, "nightshift_rows_scored_total", model=b, version=new_b) == 1
    assert _value(s, "nightshift_request_duration_seconds_count", model=a, route="/invocations") == 4
    reloads = {(dict(labels)["model"], dict(labels)["outcome"]): v for (name, labels), v in s.items()
               if name == "nightshift_reloads_total"}
    assert reloads == {(a, "refused"): 1, (b, "refused"): 1, (b, "swapped"): 1, (c, "kept"): 1, (a, "unloaded"): 1}
    loaded = {k[1] for k, v in s.items() if k[0] == "nightshift_model_loaded" and v == 1}
    assert loaded == {(("model", b), ("scorer", "compiled forest"), ("version", new_b))}  # a unloaded, c never
    assert _value(s, "nightshift_capture_offered_rows_total", model=a) == 6
    assert _value(s, "nightshift_capture_offered_rows_total", model=b) == 9
