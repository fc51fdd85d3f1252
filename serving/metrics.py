"""Prometheus metrics of the model server: requests, latency, rows scored, reloads, what is live, traffic capture.

One registry per app (never prometheus-client's global one: tests and benchmarks build several apps in a process).
Requests are counted by a pure ASGI middleware (BaseHTTPMiddleware would add a task and a queue per request);
what is live and the capture queue are read from the server's own state at scrape time, so they cannot drift
from it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

# Single-row scoring is ~1 ms; batches and provider calls run to seconds.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
VERSION_KEY = "nightshift_model_version"  # request.state key a route sets once it knows the model version
ROWS_KEY = "nightshift_rows"  # ... and the rows it scored
UNMATCHED = "unmatched"  # the route label of paths no route matched (keeps the label set bounded)

LiveModels = Callable[[], Iterable[tuple[str, str, str]]]  # (model, version, scorer) of every loaded model
CaptureStats = Callable[[], Mapping[str, Mapping[str, float]]]  # per model: counter name -> value
ChatLoad = Callable[[], tuple[int, int]]  # (provider calls in flight, calls waiting for a slot)
ShadowStats = Callable[[], Iterable[tuple[str, str, Mapping[str, int], bool]]]  # (model, version, counters, loaded)
SHADOW_OUTCOMES = ("scored", "dropped", "failed")  # nightshift_shadow_rows_total's outcome label


class ServerMetrics:
    """The server's metrics in their own registry, and the text a Prometheus scrape gets."""

    def __init__(self, live_models: LiveModels, capture_stats: CaptureStats | None = None,
                 chat_load: ChatLoad | None = None, shadow_stats: ShadowStats | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("nightshift_requests", "HTTP requests answered, by model, version, route and status",
                                ["model", "version", "route", "status"], registry=self.registry)
        self.latency = Histogram("nightshift_request_duration_seconds", "Time to answer a request, by model and route",
                                 ["model", "route"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.rows = Counter("nightshift_rows_scored", "Rows scored, by model and version", ["model", "version"],
                            registry=self.registry)
        self.reloads = Counter("nightshift_reloads", "Reload requests, by model and outcome (swapped, unloaded, "
                                                     "kept, refused: bad or missing token)",
                               ["model", "outcome"], registry=self.registry)
        self.chat_rejected = Counter("nightshift_chat_rejected", "Chat requests refused with 503 because every "
                                                                 "provider slot was busy and the queue full, by prompt",
                                     ["model"], registry=self.registry)
        self.parts_recovered = self.parts_set_aside = None  # start-up recovery of capture parts (capture on only)
        if capture_stats is not None:
            self.parts_recovered = Counter("nightshift_capture_parts_recovered", "Capture parts an earlier process "
                                                                                 "left `.inprogress`, whole, renamed "
                                                                                 "to their normal name at start-up",
                                           registry=self.registry)
            self.parts_set_aside = Counter("nightshift_capture_parts_set_aside", "Capture parts an earlier process "
                                                                                 "left `.inprogress`, unreadable, "
                                                                                 "renamed `.corrupt` at start-up",
                                           registry=self.registry)
        self.registry.register(_LiveCollector(live_models, capture_stats, chat_load, shadow_stats))

    def observe(self, model: str, version: str, route: str, status: int, seconds: float, rows: int) -> None:
        """One answered request."""
        self.requests.labels(model, version, route, str(status)).inc()
        self.latency.labels(model, route).observe(seconds)
        if rows and status < 400:
            self.rows.labels(model, version).inc(rows)

    def recovered(self, recovered: int, set_aside: int) -> None:
        """Capture parts the start-up recovery finalized and set aside."""
        if self.parts_recovered is not None and self.parts_set_aside is not None:
            self.parts_recovered.inc(recovered)
            self.parts_set_aside.inc(set_aside)

    def reload(self, model: str, outcome: str) -> None:
        """One reload request and how it ended."""
        self.reloads.labels(model, outcome).inc()

    def exposition(self) -> tuple[bytes, str]:
        """The Prometheus text format of every metric, and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class _LiveCollector(Collector):
    """What is loaded (one sample per model: version and scorer) and the capture writer's counters, read at scrape."""

    def __init__(self, live_models: LiveModels, capture_stats: CaptureStats | None,
                 chat_load: ChatLoad | None = None, shadow_stats: ShadowStats | None = None) -> None:
        self.live_models, self.capture_stats, self.chat_load = live_models, capture_stats, chat_load
        self.shadow_stats = shadow_stats

    def describe(self) -> list[Metric]:
        return []  # collected fresh on every scrape: nothing to check at registration

    def collect(self) -> Iterator[Metric]:
        live = GaugeMetricFamily("nightshift_model_loaded", "1 for each model version being served, with its scorer",
                                 labels=["model", "version", "scorer"])
        for model, version, scorer in self.live_models():
            live.add_metric([model, version, scorer], 1.0)
        yield live
        if self.chat_load is not None:
            running, waiting = self.chat_load()
            yield GaugeMetricFamily("nightshift_chat_calls_in_flight", "Chat calls at the provider now",
                                    value=running)
            yield GaugeMetricFamily("nightshift_chat_calls_waiting", "Chat calls waiting for a free provider slot",
                                    value=waiting)
        if self.shadow_stats is not None:
            yield from _shadow_families(self.shadow_stats())
        if self.capture_stats is None:
            return
        stats = self.capture_stats()
        families = {
            "offered_rows": CounterMetricFamily("nightshift_capture_offered_rows", "Scored rows offered to capture "
                                                                                  "(= sampled out + dropped + queue + "
                                                                                  "buffered + written + errors)",
                                                labels=["model"]),
            "queue_rows": GaugeMetricFamily("nightshift_capture_queue_rows", "Rows waiting in the capture queue",
                                            labels=["model"]),
            "buffered_rows": GaugeMetricFamily("nightshift_capture_buffered_rows", "Captured rows in open (not yet "
                                                                                  "closed) Parquet parts",
                                               labels=["model"]),
            "written_rows": CounterMetricFamily("nightshift_capture_written_rows", "Captured rows written to Parquet",
                                                labels=["model"]),
            "dropped_rows": CounterMetricFamily("nightshift_capture_dropped_rows", "Rows not captured because the "
                                                                                  "queue was full", labels=["model"]),
            "sampled_out_rows": CounterMetricFamily("nightshift_capture_sampled_out_rows",
                                                    "Rows left out by the capture sample rate", labels=["model"]),
            "write_errors": CounterMetricFamily("nightshift_capture_write_errors", "Capture batches lost to write "
                                                                                  "errors", labels=["model"]),
        }
        for model, counters in stats.items():
            for key, family in families.items():
                if key in counters:
                    family.add_metric([model], float(counters[key]))
        yield from families.values()


def _shadow_families(shadows: Iterable[tuple[str, str, Mapping[str, int], bool]]) -> Iterator[Metric]:
    """The shadows' rows by outcome, their queues and which versions are loaded as shadows now."""
    rows = CounterMetricFamily("nightshift_shadow_rows", "Rows offered to a shadow model, by model, shadow version "
                                                         "and outcome (scored, dropped: queue full or shadow "
                                                         "removed, failed: its predict raised)",
                               labels=["model", "version", "outcome"])
    queue = GaugeMetricFamily("nightshift_shadow_queue_rows", "Rows waiting to be scored by the model's shadow",
                              labels=["model"])
    loaded = GaugeMetricFamily("nightshift_shadow_loaded", "1 for each version loaded as a shadow now",
                               labels=["model", "version"])
    for model, version, counts, live in shadows:
        for outcome in SHADOW_OUTCOMES:
            rows.add_metric([model, version, outcome], float(counts.get(f"{outcome}_rows", 0)))
        if live:
            queue.add_metric([model], float(counts.get("queue_rows", 0)))
            loaded.add_metric([model, version], 1.0)
    yield from (rows, queue, loaded)


class MetricsMiddleware:
    """Counts and times every HTTP request by model, version, route template and status (pure ASGI).

    `served(name)` says whether a `{name}` path parameter is a served name; the others are all labelled "" so a
    client cannot grow the label set by making names up.
    """

    def __init__(self, app: Any, metrics: ServerMetrics, default_model: str,
                 served: Callable[[str], bool] | None = None) -> None:
        self.app, self.metrics, self.default_model, self.served = app, metrics, default_model, served

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start, status = time.perf_counter(), 500

        async def send_status(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = getattr(scope.get("route"), "path", UNMATCHED)
            model = str(scope.get("path_params", {}).get("name") or "")
            if not model and route in ("/invocations", "/predict", "/reload", "/ready", "/version"):
                model = self.default_model
            elif model and self.served is not None and not self.served(model):
                model = ""  # a name nobody serves: one label for all of them, not one per name a client made up
            state = scope.get("state") or {}
            self.metrics.observe(model, str(state.get(VERSION_KEY, "")), route, status,
                                 time.perf_counter() - start, int(state.get(ROWS_KEY, 0)))


def mark(request_state: Any, version: str, rows: int = 0) -> None:
    """Tell the middleware which model version answered and how many rows it scored."""
    setattr(request_state, VERSION_KEY, version)
    setattr(request_state, ROWS_KEY, rows)
