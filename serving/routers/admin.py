"""The routes that change what is served: the reloads (hot swap after a smoke test) and the shadows (a second
version scored beside the champion, off the request path), behind a bearer token."""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import SecretStr

from serving.routers.common import ModelName, server_state


_ALLOW_CHANGE = "swap in a champion whose input schema or classes differ from the live model's (callers must change)"
_BEARER = HTTPBearer(auto_error=False, description="NIGHTSHIFT_SERVER_TOKEN; only the reload and shadow routes need "
                                                  "it")
AllowChange = Annotated[bool, Query(description=_ALLOW_CHANGE)]
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_BEARER)]
_RELOAD = (
    " Refused (422, old model kept) when the champion's input schema or classes differ from the live model's, "
    "unless `allow_schema_change=true`; a failed load or smoke test keeps the old model too (4xx/5xx, "
    "`\"status\": \"kept\"`). When the registry says the model has no `champion` alias at all (a first promotion "
    "rolled back, an alias removed), a loaded model is unloaded: 200 `\"status\": \"unloaded\"`, and from then on "
    "its routes answer 503 \"no champion\" (for the default model that includes `/ready`, `/invocations`, `/predict` "
    "and `/version`, as at a start-up without a champion) until a champion is promoted and reloaded; it never goes on "
    "serving a version the registry no longer names. A registry that cannot be reached is not \"no alias\": the "
    "old model stays. With nothing loaded and no champion the answer is 503 `\"status\": \"kept\"`.")
_MODEL_RELOAD = (
    " A name that is not served yet is looked up in the catalogue (NIGHTSHIFT_CATALOGUE_PATH) as it is on disk now: "
    "a model enabled there since start-up is served from this reload on (its champion loaded like any reload; "
    "listed by `GET /models`); any other name gets 404 naming the catalogue file and why (not in it, disabled, "
    "unreadable). A model removed from or disabled in the catalogue since start-up keeps being served, and "
    "reloaded, until the server restarts: dropping it would break its callers without a deploy.")
_PROMPT_RELOAD = (
    " A prompt (NIGHTSHIFT_SERVER_PROMPTS) reloads the same way: its champion's template and model configuration are "
    "read from the prompt registry, its interface checked (the template variables and the response format must "
    "equal the live version's unless `allow_schema_change=true`; 422 otherwise) and its smoke test renders the "
    "template with a dummy value per variable: no provider call is made, so a reload costs nothing.")

_SHADOW = (
    "Load registry version `version` of model `name` as its shadow: from now on every scoring request that traffic "
    "capture samples in is also scored by it, off the request path (the answers never change and never wait for it), "
    "its predictions captured under `{capture dir}/{name}/shadow/{day}/` (request_id and row equal the champion's "
    "captured rows). Checked like a reload, under the model's reload lock: its smoke test, and its input columns, "
    "kinds and classes must equal the live champion's (no override: it scores the rows the champion checked). "
    "200 `{\"status\": \"shadowing\", \"model_version\": <champion>, \"shadow_version\": N, \"replaced\": <the "
    "shadow it replaced or null>}`. Refused: 404 unknown model or no such version; 400 a prompt; 409 no champion "
    "loaded, N is the champion's version, or capture off (NIGHTSHIFT_CAPTURE_ENABLED); 422 smoke test or schema "
    "(naming the differences). On any refusal the shadow already loaded (if any) stays. A reload that makes the "
    "shadow's version champion, unloads the model or brings a champion of another schema removes the shadow.")
_VERSION = Query(ge=1, description="The registry version number to load as the shadow")

router = APIRouter()


def _token_refusal(credentials: HTTPAuthorizationCredentials | None, token: SecretStr | None) -> JSONResponse | None:
    """401 without a bearer token, 403 for a wrong one (or when none is configured), None when it matches."""
    if credentials is None:
        return JSONResponse({"message": "missing bearer token"}, status_code=401, headers={"WWW-Authenticate": "Bearer"})
    expected = token.get_secret_value() if token else None
    if expected is None or not secrets.compare_digest(credentials.credentials.encode(), expected.encode()):
        return JSONResponse({"message": "invalid token" if expected else "reload disabled: no token configured"},
                            status_code=403)
    return None


@router.post("/reload", summary="Load the default model's champion, smoke-test it, swap atomically (bearer token)",
             description=_RELOAD.lstrip())
async def reload(request: Request, credentials: Credentials,
                 allow_schema_change: AllowChange = False) -> JSONResponse:
    state = server_state(request)
    if (refusal := _token_refusal(credentials, state.settings.server_token)) is not None:
        state.count_reload(state.settings.model_name, "refused")
        return refusal
    return await state.reload(request.app, allow_schema_change)


@router.post("/models/{name}/reload", summary="Reload one model's champion only, smoke-tested, swapped atomically "
                                              "(bearer token)",
             description="As `/reload`, for model `name` alone (its own lock; the other models are untouched)."
                         + _RELOAD + _MODEL_RELOAD + _PROMPT_RELOAD)
async def model_reload(name: ModelName, request: Request, credentials: Credentials,
                       allow_schema_change: AllowChange = False) -> JSONResponse:
    state = server_state(request)
    if (refusal := _token_refusal(credentials, state.settings.server_token)) is not None:
        state.count_reload(name if name in state.slots else "", "refused")  # made-up names: one label
        return refusal
    return await state.reload(request.app, allow_schema_change, name)


@router.post("/models/{name}/shadow", summary="Load a registry version as this model's shadow, scored beside the "
                                             "champion off the request path (bearer token)", description=_SHADOW)
async def shadow_load(name: ModelName, request: Request, credentials: Credentials,
                      version: Annotated[int, _VERSION]) -> JSONResponse:
    state = server_state(request)
    if (refusal := _token_refusal(credentials, state.settings.server_token)) is not None:
        return refusal
    return await state.set_shadow(name, str(version))


@router.delete("/models/{name}/shadow", summary="Stop and remove this model's shadow (bearer token)",
               description="200 `{\"status\": \"removed\", \"shadow_version\": N}` (its queue discarded, counted "
                           "as dropped), or 200 `{\"status\": \"none\"}` when it had none; 404 unknown model.")
async def shadow_remove(name: ModelName, request: Request, credentials: Credentials) -> JSONResponse:
    state = server_state(request)
    if (refusal := _token_refusal(credentials, state.settings.server_token)) is not None:
        return refusal
    return await state.remove_shadow(name)
