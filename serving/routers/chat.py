"""The chat route: a prompt champion's answer, forwarded to the provider with its prompt and model configuration."""

from __future__ import annotations

import time
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
    "timeout per attempt, a bounded number of calls in flight (`NIGHTSHIFT_SERVER_PROVIDER_CONCURRENCY`; later ones "
    "wait: `queued_ms`) and of calls waiting (`NIGHTSHIFT_SERVER_PROVIDER_QUEUE`): beyond both a request gets 503 "
    "`QUEUE_FULL` at once with a `Retry-After` header (seconds, about one provider call). The body gives a "
    "value for each `{{ variable }}` of the template: `{\"variables\": {...}}` (the prompt's `<name>.ChatRequest` "
    "schema). `X-Request-Id` is echoed (header and `request_id`), else generated. "
    "400: missing or unknown variables, a model name, a malformed body; 404: a name not served; 503: no champion "
    "yet, no OPENAI_API_KEY on the server, or the queue full (Retry-After); 502: the provider failed (model and its "
    "HTTP status named); 504: the "
    "provider did not answer within the timeout. The API key is never in a reply. " + BODY_RULES)
_CHAT_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": chat.ChatErrorBody, "description": text} for status, text in (
        (400, "Missing or unknown variables, a scikit-learn model's name, a malformed or non-object body"),
        (404, "No such served name"), (413, "Body too large"), (415, "Not JSON"),
        (502, "The provider failed: model and HTTP status named"),
        (503, ("No champion yet, no OPENAI_API_KEY on the server, or every provider slot busy and the queue full "
               "(error_code QUEUE_FULL, with a Retry-After header in seconds)")),
        (504, "The provider did not answer in time"))}
_CHAT_ERRORS[503]["headers"] = {"Retry-After": {
    "description": "With QUEUE_FULL: seconds to wait before retrying (about one provider call)",
    "schema": {"type": "integer", "minimum": 1}}}

router = APIRouter()


@router.post("/models/{name}/chat", summary="The prompt champion's answer: forwarded to the provider with its "
                                            "prompt and model configuration",
             description=_CHAT, response_model=chat.ChatResponse, responses=_CHAT_ERRORS,
             openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
                 "schema": chat.ChatRequest.model_json_schema()}}}})
async def model_chat(name: ModelName, request: Request) -> JSONResponse:
    state = server_state(request)
    rid = chat.request_id(request.headers.get("x-request-id"))
    headers, at = {"X-Request-Id": rid}, time.time()
    served: chat.ServedPrompt | None = None
    answer: chat.ChatResponse | None = None
    error: Exception | None = None
    variables: dict[str, Any] | None = None
    try:
        served = state.slot(name).prompt_or_503()
        mark(request.state, served.version)
        variables = chat.parse_request(await read_json(request, state.settings.server_max_body_bytes), served)
        answer = await state.backend.answer(served, variables, rid)
        reply: dict[str, Any] = answer.model_dump(mode="json")
        status, outcome = 200, "ok"
    except (ScoringError, chat.ChatError) as exc:
        extra = exc.extra if isinstance(exc, chat.ChatError) else {}
        status, outcome, error = exc.status, chat.error_code(exc.status, exc), exc
        reply = chat.ChatErrorBody(error_code=outcome, message=str(exc), request_id=rid,
                                   **extra).model_dump(mode="json")
        if isinstance(exc, chat.QueueFull):
            headers["Retry-After"] = str(exc.retry_after)
            if state.metrics is not None:
                state.metrics.chat_rejected.labels(name).inc()
    # The one place a chat request and its answer (or failure) are both known (metrics: the middleware counts it).
    if state.chat_capture is not None and name in state.names_of(chat.KIND):  # a served prompt's request only
        state.chat_capture.offer(name, rid, at, status, outcome, version=served.version if served else None,
                                 provider_model=served.config.model if served else None, reply=answer, error=error,
                                 variables=variables)
    return JSONResponse(reply, status_code=status, headers=headers)
