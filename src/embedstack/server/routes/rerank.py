"""``POST /v1/rerank`` (and ``/v2/rerank``): the Cohere / Jina rerank API."""

from __future__ import annotations

import logging
import uuid
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Depends, Response

from embedstack.server.errors import ERROR_RESPONSES, ApiError, limit_exceeded
from embedstack.server.routes import json_response
from embedstack.server.schemas import RerankRequest, RerankResponse
from embedstack.server.state import ServerState, get_state

__all__ = ["router"]

logger = logging.getLogger("embedstack.server")
router = APIRouter(tags=["rerank"])
State = Annotated[ServerState, Depends(get_state)]


def _check_limits(request: RerankRequest, state: ServerState) -> None:
    s = state.settings
    if len(request.documents) > s.max_inputs_per_request:
        raise limit_exceeded(
            f"documents has {len(request.documents)} items; this server takes at most "
            f"{s.max_inputs_per_request} per request (max_inputs_per_request)",
            "documents",
        )
    if request.top_n is not None and request.top_n > s.max_top_n:
        raise limit_exceeded(
            f"top_n is {request.top_n}; this server returns at most {s.max_top_n} (max_top_n)",
            "top_n",
        )
    texts = [("query", request.query)] + [
        (f"documents[{i}]", d.text) for i, d in enumerate(request.documents)
    ]
    for where, text in texts:
        if len(text) > s.max_chars_per_input:
            raise limit_exceeded(
                f"{where} has {len(text)} characters; this server takes at most "
                f"{s.max_chars_per_input} per text (max_chars_per_input)",
                where,
            )


def _checked_scores(scores: Any, n: int, model: str) -> np.ndarray:
    array = np.asarray(scores, dtype=np.float64).reshape(-1)
    if array.shape != (n,) or not np.all(np.isfinite(array)):
        logger.error("reranker %s returned %r for %d documents", model, scores, n)
        raise ApiError(500, f"reranker {model!r} returned invalid scores", code="internal_error")
    return array


@router.post(
    "/v2/rerank",
    response_model=RerankResponse,
    responses={**ERROR_RESPONSES},
    summary="Rerank documents for a query (Cohere v2 path)",
)
@router.post(
    "/v1/rerank",
    response_model=RerankResponse,
    responses={**ERROR_RESPONSES},
    summary="Rerank documents for a query (Cohere/Jina-compatible)",
)
async def rerank(request: RerankRequest, state: State) -> Response:
    """Score every document against ``query`` and return them best first.

    ``relevance_score`` is the reranker's own score (its scale depends on the model);
    ``index`` is the document's position in the request. Ties keep request order.
    """
    _check_limits(request, state)
    reranker = await state.models.reranker(request.model)
    texts = [d.text for d in request.documents]
    scores = _checked_scores(
        await state.models.rerank(request.model, reranker, request.query, texts),
        len(texts),
        request.model,
    )
    order = np.argsort(-scores, kind="stable")
    if request.top_n is not None:
        order = order[: request.top_n]
    results = []
    for i in order.tolist():
        result: dict[str, Any] = {"index": i, "relevance_score": float(scores[i])}
        if request.return_documents:
            result["document"] = request.documents[i].model_dump()
        results.append(result)
    payload = {
        "id": str(uuid.uuid4()),
        "model": request.model,
        "results": results,
        "meta": {
            "api_version": {"version": "2"},
            "billed_units": {"search_units": 1},
        },
    }
    return await json_response(payload)
