"""``POST /v1/embeddings`` and ``GET /v1/models``: the OpenAI embeddings API."""

from __future__ import annotations

import base64
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Depends, Response

from embedstack import vectors
from embedstack.encoders.base import validate_texts
from embedstack.encoders.registry import find_model
from embedstack.errors import InvalidInput
from embedstack.server.errors import ERROR_RESPONSES, ApiError, from_library, limit_exceeded
from embedstack.server.models import decode_tokens, estimate_tokens
from embedstack.server.routes import json_response
from embedstack.server.schemas import EmbeddingRequest, EmbeddingResponse, ModelCard, ModelList
from embedstack.server.settings import ServerSettings
from embedstack.server.state import ServerState, get_state

__all__ = ["router"]

router = APIRouter(tags=["embeddings"])
State = Annotated[ServerState, Depends(get_state)]


def _check_limits(items: list[Any], settings: ServerSettings) -> None:
    n_max, c_max = settings.max_inputs_per_request, settings.max_chars_per_input
    if len(items) > n_max:
        raise limit_exceeded(
            f"input has {len(items)} items; this server takes at most {n_max} per request "
            "(max_inputs_per_request): split the request",
            "input",
        )
    for i, item in enumerate(items):
        if len(item) > c_max:
            unit = "characters" if isinstance(item, str) else "token ids"
            raise limit_exceeded(
                f"input[{i}] has {len(item)} {unit}; this server takes at most {c_max} per "
                "input (max_chars_per_input): shorten or split it",
                f"input[{i}]",
            )


def _encode_row(row: np.ndarray, encoding_format: str) -> list[float] | str:
    if encoding_format == "base64":
        return base64.b64encode(row.astype("<f4").tobytes()).decode("ascii")
    values: list[float] = row.tolist()
    return values


@router.post(
    "/v1/embeddings",
    response_model=EmbeddingResponse,
    responses={**ERROR_RESPONSES},
    summary="Create embeddings (OpenAI-compatible)",
)
async def create_embeddings(request: EmbeddingRequest, state: State) -> Response:
    """Embed ``input`` with ``model``; the OpenAI embeddings API.

    Texts are embedded on the document side by default (equal to
    ``Encoder.encode_documents``), on the query side with ``input_type: "query"``.
    Concurrent requests are merged into one model call (micro-batching).
    """
    raw: Any = request.input
    items: list[Any]
    if isinstance(raw, str) or isinstance(raw[0], int):
        items = [raw]  # one text, or one token-id array
    else:
        items = raw
    _check_limits(items, state.settings)
    encoder = await state.models.encoder(request.model)
    dim = request.dimensions
    if dim is not None and dim > encoder.dim:
        raise ApiError(
            400,
            f"dimensions must be between 1 and {encoder.dim} for {request.model}, got {dim}",
            code="invalid_dimensions",
            param="dimensions",
        )
    try:
        texts = [
            item if isinstance(item, str) else decode_tokens(encoder, item, position=i)
            for i, item in enumerate(items)
        ]
        validate_texts(texts)
    except InvalidInput as exc:
        raise from_library(exc, param="input") from exc
    batcher = state.models.batcher(encoder, request.model, request.input_type)
    matrix, tokens = await batcher.submit(texts, estimate_tokens(encoder, texts))
    if dim is not None and dim < matrix.shape[1]:
        matrix = vectors.truncate(matrix, dim)
    n_tokens = int(tokens.sum())
    payload = {
        "object": "list",
        "data": [
            {
                "object": "embedding",
                "embedding": _encode_row(row, request.encoding_format),
                "index": i,
            }
            for i, row in enumerate(matrix)
        ],
        "model": request.model,
        "usage": {"prompt_tokens": n_tokens, "total_tokens": n_tokens},
    }
    return await json_response(payload, numbers=matrix.size)


def _model_dim(state: ServerState, name: str) -> int | None:
    encoder = state.models.loaded_encoder(name)
    if encoder is not None:
        return int(encoder.dim)
    spec = find_model(state.models.model_sources[name])
    return spec.dim if spec is not None else None


def served_dims(state: ServerState) -> dict[str, int | None]:
    """Served model name → full dimension (None when unknown until it is loaded)."""
    return {name: _model_dim(state, name) for name in state.models.model_sources}


def _cards(state: ServerState) -> list[ModelCard]:
    cards = [
        ModelCard(id=name, created=state.started, type="embedding", dimensions=dim)
        for name, dim in served_dims(state).items()
    ]
    cards += [
        ModelCard(id=name, created=state.started, type="rerank")
        for name in state.models.reranker_sources
    ]
    return cards


@router.get(
    "/v1/models",
    response_model=ModelList,
    responses={**ERROR_RESPONSES},
    summary="List served models",
)
async def list_models(state: State) -> ModelList:
    """The served embedding models and rerankers, in OpenAI's list shape."""
    return ModelList(data=_cards(state))


@router.get(
    "/v1/models/{model:path}",
    response_model=ModelCard,
    responses={**ERROR_RESPONSES},
    summary="Retrieve one served model",
)
async def retrieve_model(model: str, state: State) -> ModelCard:
    """One served model or reranker (404 when not served)."""
    for card in _cards(state):
        if card.id == model:
            return card
    served = ", ".join(card.id for card in _cards(state)) or "none"
    raise ApiError(
        404,
        f"model {model!r} is not served here; served: {served}",
        code="model_not_found",
        param="model",
    )
