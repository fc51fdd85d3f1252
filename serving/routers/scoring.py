"""The scoring routes: MLflow's `/invocations` and the typed `/predict`, for the default model and per model."""

from __future__ import annotations

import time
from typing import Any, Callable

from fastapi import APIRouter, Request, Response

from serving.capture import request_id
from serving.champion import Reply, Served, invocations_reply, predict_reply
from serving.metrics import mark
from serving.requests import BODY_RULES, read_json
from serving.routers.common import REQUEST_ID_KEY, ModelName, server_state
from serving.state import ModelSlot


_INVOCATIONS_BODY = {
    "required": True,
    "content": {"application/json": {"schema": {"oneOf": [
        {"type": "object", "required": ["dataframe_split"], "properties": {"dataframe_split": {
            "type": "object", "required": ["columns", "data"],
            "properties": {"columns": {"type": "array", "items": {"type": "string"}},
                           "data": {"type": "array", "items": {"type": "array"}}}}}},
        {"type": "object", "required": ["dataframe_records"], "properties": {"dataframe_records": {
            "type": "array", "items": {"type": "object"}}}},
    ]}}},
}
_MODEL_PREDICT = (" The body follows model `name`'s own data contract: its `<name>.PredictRequest` schema "
                  "(listed under components; one `anyOf` branch per loaded model).")

router = APIRouter()


async def answer(request: Request, response: Response, slot: ModelSlot,
                 reply: Callable[[Served, Any, int, str | None], Reply]) -> dict[str, Any]:
    """A scoring route's work: request id, the model's reply, metrics marks, the rows offered to capture (and,
    when the request is captured, to the model's shadow, which scores them later in its own process).

    The request id goes back in the X-Request-Id header, and in MLflow's scoring reply as `request_id` too (its
    scoring server puts extra keys beside `predictions` the same way); /predict's body stays as it was.
    """
    state = server_state(request)
    settings = state.settings
    rid = request_id(request.headers.get("x-request-id"))
    setattr(request.state, REQUEST_ID_KEY, rid)
    served = slot.served_or_503()
    mark(request.state, served.version)
    payload = await read_json(request, settings.server_max_body_bytes)
    body, scored, ids = reply(served, payload, settings.server_max_rows, state.id_columns.get(served.name))
    mark(request.state, served.version, len(scored.labels))
    capture = state.capture
    if capture is not None:  # never blocks or raises: a full queue drops (and counts) the rows
        at = time.time()
        capture.offer(served.name, served.version, rid, scored.batch, scored.labels, scored.raw, served.classes,
                      row_ids=ids, at=at)
        shadow = slot.shadow
        if shadow is not None and capture.sampled(rid):  # the captured requests only: judged against their rows
            shadow.offer(rid, scored.batch, ids, at)  # never blocks or raises either
    response.headers["X-Request-Id"] = rid
    if reply is invocations_reply:
        body["request_id"] = rid
    return body


@router.post("/invocations", summary="MLflow scoring-server compatible predictions (default model)",
             description=BODY_RULES, openapi_extra={"requestBody": _INVOCATIONS_BODY})
async def invocations(request: Request, response: Response) -> dict[str, Any]:
    return await answer(request, response, server_state(request).default, invocations_reply)


@router.post("/predict", summary="Typed predictions (request schema from the default model's data contract)",
             description=BODY_RULES)
async def predict(request: Request, response: Response) -> dict[str, Any]:
    return await answer(request, response, server_state(request).default, predict_reply)


@router.post("/models/{name}/invocations", summary="MLflow scoring-server compatible predictions of one model",
             description=BODY_RULES, openapi_extra={"requestBody": _INVOCATIONS_BODY})
async def model_invocations(name: ModelName, request: Request, response: Response) -> dict[str, Any]:
    return await answer(request, response, server_state(request).slot(name), invocations_reply)


@router.post("/models/{name}/predict", summary="Typed predictions of one model (request schema from its contract)",
             description=BODY_RULES + _MODEL_PREDICT)
async def model_predict(name: ModelName, request: Request, response: Response) -> dict[str, Any]:
    return await answer(request, response, server_state(request).slot(name), predict_reply)
