"""The server's OpenAPI schema: FastAPI's, with each typed request body and `{name}` enum taken from what is served."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from serving import chat
from serving.champion import Served
from serving.state import ServerState


def _request_schema(served: Served, components: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A $ref to the served model's typed request body, its schemas added to `components` under `prefix`."""
    body = served.request_model.model_json_schema(ref_template="#/components/schemas/" + prefix + "{model}")
    components.update({prefix + key: value for key, value in body.pop("$defs", {}).items()})
    components[prefix + "PredictRequest"] = body
    return {"$ref": f"#/components/schemas/{prefix}PredictRequest"}


def openapi_schema(app: FastAPI, state: ServerState) -> dict[str, Any]:
    """The OpenAPI schema with each typed request body generated from its served model's contract."""
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    paths = schema["paths"]
    if state.served is not None:
        paths["/predict"]["post"]["requestBody"] = {
            "required": True, "content": {"application/json": {"schema": _request_schema(state.served, components)}}}
    per_model = [_request_schema(slot.served, components, f"{slot.name}.") for slot in state.slots.values()
                 if slot.served is not None and slot.kind != chat.KIND]
    if per_model:
        paths["/models/{name}/predict"]["post"]["requestBody"] = {"required": True, "content": {"application/json": {
            "schema": per_model[0] if len(per_model) == 1 else {"anyOf": per_model}}}}
    prompts = state.names_of(chat.KIND)
    if not prompts:  # no prompt served: the chat route only says so (400/404), the docs need not list it
        paths.pop("/models/{name}/chat", None)
    else:
        per_prompt = []
        for slot in state.slots.values():
            if slot.kind == chat.KIND and slot.served is not None:
                components[f"{slot.name}.ChatRequest"] = chat.request_schema(slot.served)  # type: ignore[arg-type]
                per_prompt.append({"$ref": f"#/components/schemas/{slot.name}.ChatRequest"})
        if per_prompt:
            paths["/models/{name}/chat"]["post"]["requestBody"] = {"required": True, "content": {"application/json": {
                "schema": per_prompt[0] if len(per_prompt) == 1 else {"anyOf": per_prompt}}}}
    names = {"/models/{name}/chat": prompts, "/models/{name}/invocations": state.names_of("model"),
             "/models/{name}/predict": state.names_of("model")}
    for path, item in paths.items():
        for parameter in item.get("post", item.get("get", {})).get("parameters", []):
            if path.startswith("/models/{name}") and not path.endswith("/reload") and parameter["name"] == "name":
                # the served names (503 while one has no champion)
                parameter["schema"]["enum"] = names.get(path, list(state.slots))
    app.openapi_schema = schema
    return schema
