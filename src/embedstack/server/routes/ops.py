"""``GET /healthz`` and ``GET /metrics`` (Prometheus text), both without authentication."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import PlainTextResponse

from embedstack.server.schemas import Health
from embedstack.server.state import ServerState, get_state

__all__ = ["router"]

router = APIRouter(tags=["operations"])
State = Annotated[ServerState, Depends(get_state)]


@router.get("/healthz", response_model=Health)
async def healthz(state: State) -> Health:
    """Liveness: the server answers; lists what it serves."""
    return Health(
        models=list(state.models.model_sources),
        rerankers=list(state.models.reranker_sources),
        indexes=state.indexes.names(),
        uptime_s=round(time.monotonic() - state.started_monotonic, 3),
    )


@router.get(
    "/metrics",
    response_class=PlainTextResponse,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
)
async def metrics(state: State) -> PlainTextResponse:
    """Prometheus text exposition: requests, latency, batch sizes, queue depths."""
    return PlainTextResponse(
        state.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8"
    )
