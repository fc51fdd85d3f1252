"""What every router shares: the app's ServerState, the `{name}` path parameter and the ScoringError reply."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path, Request
from fastapi.responses import JSONResponse

from serving.errors import ScoringError
from serving.state import ServerState


REQUEST_ID_KEY = "nightshift_request_id"  # request.state key: the request's id, for error replies' header
ModelName = Annotated[str, Path(description="A served model's registered name (see GET /models)")]


def server_state(request: Request) -> ServerState:
    """The ServerState create_app put on the app (`app.state.nightshift`)."""
    return request.app.state.nightshift  # type: ignore[no-any-return]


async def scoring_error(request: Request, exc: ScoringError) -> JSONResponse:
    """ScoringError as MLflow's error JSON with its status (and the request's X-Request-Id once it has one)."""
    rid = getattr(request.state, REQUEST_ID_KEY, None)
    return JSONResponse({"error_code": "INVALID_PARAMETER_VALUE" if exc.status < 500 else "UNAVAILABLE",
                         "message": str(exc)}, status_code=exc.status, headers={"X-Request-Id": rid} if rid else None)
