"""`GET /metrics`: the server's Prometheus metrics (serving/metrics.py), no token."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse, Response

from serving.routers.common import server_state


_METRICS = (
    "Requests by model, version, route and status (`nightshift_requests_total`), their latency "
    "(`nightshift_request_duration_seconds`, by model and route), rows scored (`nightshift_rows_scored_total`), "
    "reloads by outcome (`nightshift_reloads_total`: swapped, unloaded, kept, refused), what is live "
    "(`nightshift_model_loaded{model,version,scorer}`) and traffic capture (`nightshift_capture_*`: queue depth, "
    "buffered, written, dropped, sampled-out rows, write errors).")

router = APIRouter()


@router.get("/metrics", summary="Prometheus metrics (text exposition format; no token)",
            response_class=PlainTextResponse, description=_METRICS)
async def scrape(request: Request) -> Response:
    body, content_type = server_state(request).metrics.exposition()  # type: ignore[union-attr]
    return Response(body, media_type=content_type)
