"""Liveness, readiness and what is served: the default model's version, every served model's and prompt's."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from serving.routers.common import ModelName, server_state


router = APIRouter()


@router.get("/health", summary="Liveness")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/ready", summary="Readiness: the default model is loaded")
async def ready(request: Request) -> dict[str, Any]:
    return {"status": "ready", "model_version": server_state(request).served_or_503().version}


@router.get("/version", summary="The default model being served, and every served model under `models`")
async def version(request: Request) -> dict[str, Any]:
    state = server_state(request)
    return {**state.served_or_503().info(), "models": state.listing()}


@router.get("/models", summary="Every served model: its loaded version, or why none is loaded")
async def models(request: Request) -> dict[str, Any]:
    state = server_state(request)
    return {"default_model": state.settings.model_name, "models": state.listing()}


@router.get("/models/{name}/ready", summary="Readiness of one model or prompt: its champion is loaded")
async def model_ready(name: ModelName, request: Request) -> dict[str, Any]:
    return {"status": "ready", "model_version": server_state(request).slot(name).loaded_or_503().version}


@router.get("/models/{name}/version", summary="The version of one model or prompt being served")
async def model_version(name: ModelName, request: Request) -> dict[str, Any]:
    return server_state(request).slot(name).loaded_or_503().info()
