"""The server's Prometheus metrics: counters match the requests sent, the scrape parses, live state is read fresh."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from serving.metrics import MetricsMiddleware, ServerMetrics, mark


def _app(live: list[tuple[str, str, str]], capture: dict[str, dict[str, float]] | None) -> tuple[FastAPI, ServerMetrics]:
    metrics = ServerMetrics(lambda: list(live), (lambda: capture) if capture is not None else None)
    app = FastAPI()

    @app.post("/models/{name}/predict")
    async def predict(name: str, request: Request) -> Any:
        body = await request.json()
        if not body.get("rows"):
            return JSONResponse({"message": "no rows"}, status_code=400)
        mark(request.state, "3", len(body["rows"]))
        return {"predictions": [0] * len(body["rows"])}

    @app.post("/predict")
    async def predict_default(request: Request) -> Any:
        mark(request.state, "7", 1)
        return {"predictions": [1]}

    @app.get("/metrics")
    async def scrape() -> Response:
        body, kind = metrics.exposition()
        return Response(body, media_type=kind)

    app.add_middleware(MetricsMiddleware, metrics=metrics, default_model="default-model")  # type: ignore[arg-type]
    return app, metrics


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a scrape by (name, sorted labels)."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_counters_match_the_requests_sent_and_the_scrape_parses() -> None:
    live = [("churn", "3", "compiled"), ("default-model", "7", "pipeline")]
    app, _ = _app(live, {"churn": {"queue_rows": 4, "written_rows": 120, "dropped_rows": 2}})
    with TestClient(app) as client:
        for rows in ([1], [1, 2, 3], [1, 2]):
            assert client.post("/models/churn/predict", json={"rows": rows}).status_code == 200
        assert client.post("/models/churn/predict", json={"rows": []}).status_code == 400
        assert client.post("/predict", json={}).status_code == 200
        assert client.get("/nowhere").status_code == 404
        live[0] = ("churn", "4", "compiled")  # a hot swap: the next scrape says so
        scrape = client.get("/metrics")
    assert scrape.headers["content-type"].startswith("text/plain")
    s = _samples(scrape.text)
    route = "/models/{name}/predict"
    assert s[("nightshift_requests_total", (("model", "churn"), ("route", route), ("status", "200"),
                                            ("version", "3")))] == 3
    assert s[("nightshift_requests_total", (("model", "churn"), ("route", route), ("status", "400"),
                                            ("version", "")))] == 1
    assert s[("nightshift_requests_total", (("model", "default-model"), ("route", "/predict"), ("status", "200"),
                                            ("version", "7")))] == 1
    assert s[("nightshift_requests_total", (("model", ""), ("route", "unmatched"), ("status", "404"),
                                            ("version", "")))] == 1
    assert s[("nightshift_rows_scored_total", (("model", "churn"), ("version", "3")))] == 6  # the 400 scored none
    assert s[("nightshift_request_duration_seconds_count", (("model", "churn"), ("route", route)))] == 4
    assert s[("nightshift_model_loaded", (("model", "churn"), ("scorer", "compiled"), ("version", "4")))] == 1
    assert ("nightshift_model_loaded", (("model", "churn"), ("scorer", "compiled"), ("version", "3"))) not in s
    assert s[("nightshift_capture_queue_rows", (("model", "churn"),))] == 4
    assert s[("nightshift_capture_written_rows_total", (("model", "churn"),))] == 120
    assert s[("nightshift_capture_dropped_rows_total", (("model", "churn"),))] == 2


def test_reloads_are_counted_by_outcome_and_apps_do_not_share_a_registry() -> None:
    first, metrics = _app([], None)
    second, _ = _app([], None)
    metrics.reload("churn", "swapped")
    metrics.reload("churn", "refused")
    metrics.reload("churn", "refused")
    with TestClient(first) as a, TestClient(second) as b:
        one, other = _samples(a.get("/metrics").text), _samples(b.get("/metrics").text)
    assert one[("nightshift_reloads_total", (("model", "churn"), ("outcome", "refused")))] == 2
    assert one[("nightshift_reloads_total", (("model", "churn"), ("outcome", "swapped")))] == 1
    assert not any(name == "nightshift_reloads_total" for name, _ in other)
    assert not any(name.startswith("nightshift_capture") for name, _ in one)  # no capture: no capture metrics
