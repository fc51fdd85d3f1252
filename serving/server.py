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
(serving/capture.py, NIGHTSHIFT_CAPTURE_*), and every chat request leaves one record (serving/chat_capture.py).
A model may have a shadow (`POST /models/{name}/shadow?version=N`, or the registry's `shadow` alias at start-up):
another version scoring the captured requests off the request path, its predictions captured beside the champion's
(serving/shadow.py).
Capture parts a killed server left `.inprogress` are finalized or set aside at start-up (serving/recovery.py).
`GET /metrics` answers Prometheus' text format (serving/metrics.py).
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
from serving.chat_capture import ChatCapture
from serving.errors import ScoringError
from serving.metrics import MetricsMiddleware, ServerMetrics
from serving.openapi import openapi_schema
from serving.recovery import grace_seconds, recover_parts
from serving.routers import admin, info, scoring
from serving.routers import chat as chat_routes
from serving.routers import metrics as metrics_routes
from serving.routers.common import scoring_error
from serving.state import ServerState, check_prompt_names, id_columns, served_model_names

if TYPE_CHECKING:  # tasks.* import Prefect, which creates its home dir on import: load them only when serving
    from tasks.llm.config import PriceTable, ProviderSettings


def create_app(settings: Settings | None = None, provider: ProviderSettings | None = None,
               prices: PriceTable | None = None, *, chat_queue: int | None = None,
               freeze_heap: bool = False) -> FastAPI:
    """The FastAPI app; loads every served model's and prompt's champion at start-up (one without answers 503).

    `provider` (endpoint, timeout, retries, concurrency), `prices` and `chat_queue` (calls that may wait for a
    provider slot) are for the chat route; each one not given comes from its NIGHTSHIFT_SERVER_PROVIDER_* setting.
    `freeze_heap` (the server process: `main`): once start-up is done, move every object alive into the garbage
    collector's permanent generation (`gc.freeze`).
    """
    from tasks.registry.store import TrackingConfig

    settings = settings or get_settings()
    backend = chat.ChatBackend.from_settings(settings, provider, prices, chat_queue)
    state = ServerState(settings, TrackingConfig.from_settings(settings), served_model_names(settings),
                        check_prompt_names(settings), id_columns(settings), backend=backend)
    capture_config = CaptureConfig.from_settings(settings)
    metrics = state.metrics = ServerMetrics(state.live, state.capture_stats if capture_config.enabled else None,
                                            backend.load, state.shadow_stats)
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
    """Start-up: parts a killed server left recovered, the capture writers, every champion (and shadow) loaded,
    the heap frozen; shutdown: provider client, shadows (their queues scored), capture."""
    if capture_config.enabled:
        found = await asyncio.to_thread(recover_parts, capture_config.root, grace_seconds(capture_config))
        if state.metrics is not None:
            state.metrics.recovered(len(found.recovered), len(found.set_aside))
        state.capture = Capture(capture_config)
        state.shadow_config = capture_config  # the shadows' processes write their predictions under {model}/shadow/
        state.chat_capture = ChatCapture(capture_config, text=state.settings.server_capture_chat_text)
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
        await state.close_shadows()  # their queues sent first: each shadow's process writes them and closes its parts
        if state.capture is not None:  # uvicorn's graceful shutdown (SIGTERM): queued rows written, parts closed
            await asyncio.to_thread(state.capture.close)
        if state.chat_capture is not None:
            await asyncio.to_thread(state.chat_capture.close)


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
