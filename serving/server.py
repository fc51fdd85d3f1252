"""Live model server: every catalogued model's champion, each hot-swapped on its own reload after a smoke test.

Start with `make serve` or `python -m serving.server [--port 8000]`. Binds 127.0.0.1 by default.
Every served model answers under `/models/{name}/...`; the top-level routes are the default model's
(NIGHTSHIFT_MODEL_NAME). A model enabled in the catalogue after start-up is served from its first reload; a reload
that finds no champion alias unloads the model (503 until one is promoted). The prompts named by
NIGHTSHIFT_SERVER_PROMPTS are served the same way (a slot each, their champion loaded from the prompt registry,
swapped by the same reload) and answer `POST /models/{name}/chat`, forwarded to the provider with the champion's
prompt and model configuration.

Every scoring request gets a request id (the caller's `X-Request-Id` when usable, else a new one), returned in the
`X-Request-Id` header and the body's `request_id`; its scored rows are captured to Parquet off the request path
(serving/capture.py, NIGHTSHIFT_CAPTURE_*). `GET /metrics` answers Prometheus' text format (serving/metrics.py).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
from contextlib import asynccontextmanager
from functools import partial
from typing import TYPE_CHECKING, AsyncIterator

from fastapi import FastAPI

from nightshift.errors import NightshiftError
from nightshift.settings import Settings, get_settings
from serving import chat
from serving.capture import Capture, CaptureConfig
from serving.errors import ScoringError
from serving.metrics import MetricsMiddleware, ServerMetrics
from serving.openapi import openapi_schema
from serving.routers import admin, info, scoring
from serving.routers import chat as chat_routes
from serving.routers import metrics as metrics_routes
from serving.routers.common import scoring_error
from serving.state import ServerState, check_prompt_names, id_columns, served_model_names

if TYPE_CHECKING:  # tasks.* import Prefect, which creates its home dir on import: load them only when serving
    from tasks.llm.config import PriceTable, ProviderSettings


def create_app(settings: Settings | None = None, provider: ProviderSettings | None = None,
               prices: PriceTable | None = None, *, freeze_heap: bool = False) -> FastAPI:
    """The FastAPI app; loads every served model's and prompt's champion at start-up (one without answers 503).

    `provider` (endpoint, timeout, retries, concurrency; default from OPENAI_BASE_URL) and `prices` (default
    tasks.llm.config.DEFAULT_PRICES) are for the chat route. `freeze_heap` (the server process: `main`): once start-up is
    done, move every object alive into the garbage collector's permanent generation (`gc.freeze`).
    """
    from tasks.registry.store import TrackingConfig

    settings = settings or get_settings()
    state = ServerState(settings, TrackingConfig.from_settings(settings), served_model_names(settings),
                        check_prompt_names(settings), id_columns(settings), backend=chat.ChatBackend(provider, prices))
    capture_config = CaptureConfig.from_settings(settings)
    metrics = state.metrics = ServerMetrics(state.live, state.capture_stats if capture_config.enabled else None)
    app = FastAPI(title="nightshift model server", version="1", description=__doc__,
                  lifespan=partial(_lifespan, state, capture_config, freeze_heap))
    app.state.nightshift = state  # what the routers read (serving.routers.common.server_state)
    app.add_exception_handler(ScoringError, scoring_error)  # type: ignore[arg-type]
    app.add_middleware(MetricsMiddleware, metrics=metrics, default_model=settings.model_name,  # type: ignore[arg-type]
                       served=state.slots.__contains__)
    for routes in (info, scoring, admin, metrics_routes, chat_routes):
        app.include_router(routes.router)
    app.openapi = partial(openapi_schema, app, state)  # type: ignore[method-assign]
    return app


@asynccontextmanager
async def _lifespan(state: ServerState, capture_config: CaptureConfig, freeze_heap: bool,
                    app: FastAPI) -> AsyncIterator[None]:
    """Start-up: the capture writer, every champion loaded, the heap frozen; shutdown: provider client, capture."""
    state.capture = Capture(capture_config) if capture_config.enabled else None
    try:
        await state.load()
        if freeze_heap:
            # MLflow, sklearn and pandas leave ~2M objects behind: a full collection walks them all, 0.1-0.4 s of
            # GIL held on this machine. Requests whose rows wait in the capture queue outlive the young
            # generations and set such collections off; frozen, the start-up heap is never walked again. (A
            # start-up model swapped out later is still freed by reference counting; only cycles among its
            # objects would stay, once.)
            gc.collect()
            gc.freeze()
        yield
    finally:
        state.backend.close()
        if state.capture is not None:  # uvicorn's graceful shutdown (SIGTERM): queued rows written, parts closed
            await asyncio.to_thread(state.capture.close)


def main(argv: list[str] | None = None) -> int:
    """Run the server with uvicorn."""
    parser = argparse.ArgumentParser(prog="python -m serving.server", description=__doc__)
    settings = get_settings()
    parser.add_argument("--host", default=settings.server_host)
    parser.add_argument("--port", type=int, default=settings.server_port)
    args = parser.parse_args(argv)
    import uvicorn

    try:
        app = create_app(settings, freeze_heap=True)
    except NightshiftError as exc:  # e.g. an invalid catalogue: never start serving fewer models than configured
        print(f"model server not started: {exc}", file=sys.stderr)
        return 2
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
