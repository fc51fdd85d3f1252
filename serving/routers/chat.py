"""The chat route: a prompt champion's answer, forwarded to the provider with its prompt and model configuration."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from serving import chat
from serving.errors import ScoringError
from serving.metrics import mark
from serving.requests import BODY_RULES, read_json
from serving.routers.common import ModelName, server_state


_CHAT = (
    "Forwards the request to the provider (OpenAI-compatible, `OPENAI_BASE_URL`, key `OPENAI_API_KEY` in the server's "
    "environment) with the prompt champion's system prompt, template, model, temperature, max tokens and response "
    "format, through the project's openai client: retries with backoff on 408/409/429/5xx honouring Retry-After, a "
    "timeout per attempt, a bounded number of calls in flight (later ones queue: `queued_ms`). The body gives a "
    "value for each `{{ variable }}` of the template: `{\"variables\": {...}}` (the prompt's `<name>.ChatRequest` "
    "schema). `X-Request-Id` is echoed (header and `request_id`), else generated. "
    "400: missing or unknown variables, a model name, a malformed body; 404: a name not served; 503: no champion "
    "yet, or no OPENAI_API_KEY on the server; 502: the provider failed (model and its HTTP status named); 504: the "
    "provider did not answer within the timeout. The API key is never in a reply. " + BODY_RULES)
_CHAT_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": chat.ChatErrorBody, "description": text} for status, text in (
        (400, "Missing or unknown variables, a scikit-learn model's name, a malformed or non-object body"),
        (404, "No such served name"), (413, "Body too large"), (415, "Not JSON"),
        (502, "The provider failed: model and HTTP status named"),
        (503, "No champion yet, or no OPENAI_API_KEY on the server"),
        (504, "The provider did not answer in time"))}

router = APIRouter()


@router.post("/models/{name}/chat", summary="The prompt champion's answer: forwarded to the provider with its "
                                            "prompt and model configuration",
             description=_CHAT, response_model=chat.ChatResponse, responses=_CHAT_ERRORS,
             openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
                 "schema": chat.ChatRequest.model_json_schema()}}}})
async def model_chat(name: ModelName, request: Request) -> JSONResponse:
    state = server_state(request)
    rid = chat.request_id(request.headers.get("x-request-id"))
    try:
        served = state.slot(name).prompt_or_503()
        mark(request.state, served.version)
        variables = chat.parse_request(await read_json(request, state.settings.server_max_body_bytes), served)
        reply: dict[str, Any] = (await state.backend.answer(served, variables, rid)).model_dump(mode="json")
        status = 200
    except (ScoringError, chat.ChatError) as exc:
        extra = exc.extra if isinstance(exc, chat.ChatError) else {}
        status = exc.status
        reply = chat.ChatErrorBody(error_code=chat.error_code(status), message=str(exc), request_id=rid,
                                   **extra).model_dump(mode="json")
    # The one place a chat request and its answer (or failure) are both known (metrics: the middleware counts it).
    return JSONResponse(reply, status_code=status, headers={"X-Request-Id": rid})
