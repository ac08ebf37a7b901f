"""``/v1/indexes``: list, stats, upsert, delete and search the served indexes."""

from __future__ import annotations

from dataclasses import fields
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends, Response

from embedstack.errors import InvalidInput
from embedstack.index.protocols import SearchOptions
from embedstack.server.errors import ERROR_RESPONSES, ApiError, from_library, limit_exceeded
from embedstack.server.index_schemas import (
    DeleteRequest,
    DeleteResponse,
    IndexList,
    IndexStatsResponse,
    SearchRequest,
    SearchResponse,
    UpsertRequest,
    UpsertResponse,
)
from embedstack.server.routes import json_response
from embedstack.server.state import ServerState, get_state

if TYPE_CHECKING:
    from embedstack.index import Hit

__all__ = ["router"]

router = APIRouter(tags=["indexes"])
State = Annotated[ServerState, Depends(get_state)]


def _too_long(where: str, n: int, limit: int) -> ApiError:
    return limit_exceeded(
        f"{where} has {n} characters; this server takes at most {limit} per text "
        "(max_chars_per_input)",
        where,
    )


def _too_many(where: str, n: int, limit: int) -> ApiError:
    return limit_exceeded(
        f"{where} has {n} items; this server takes at most {limit} per request "
        "(max_inputs_per_request): split the request",
        where,
    )


@router.get("/v1/indexes", response_model=IndexList, responses={**ERROR_RESPONSES})
async def list_indexes(state: State) -> IndexList:
    """Names of the served indexes."""
    return IndexList(data=state.indexes.names())


@router.get("/v1/indexes/{name}", response_model=IndexStatsResponse, responses={**ERROR_RESPONSES})
async def index_stats(name: str, state: State) -> IndexStatsResponse:
    """Documents, chunks, bytes on disk, model and precision of index ``name``."""
    stats = await state.indexes.read(name, lambda index: index.stats())
    return IndexStatsResponse(name=name, **stats.__dict__)


@router.post(
    "/v1/indexes/{name}/documents",
    response_model=UpsertResponse,
    responses={**ERROR_RESPONSES},
)
async def upsert_documents(name: str, request: UpsertRequest, state: State) -> UpsertResponse:
    """Add new documents and replace changed ones, as one atomic batch.

    Unchanged documents (same text, title and metadata) are not re-embedded. Concurrent
    writes are group-committed: the answer is this request's own, once it is committed.
    """
    s = state.settings
    if len(request.documents) > s.max_inputs_per_request:
        raise _too_many("documents", len(request.documents), s.max_inputs_per_request)
    for i, doc in enumerate(request.documents):
        for field in ("id", "text", "title"):
            value = getattr(doc, field) or ""
            if len(value) > s.max_chars_per_input:
                raise _too_long(f"documents[{i}].{field}", len(value), s.max_chars_per_input)
    docs = [doc.model_dump(exclude_none=True) for doc in request.documents]
    try:
        result = await state.indexes.upsert(name, docs)
    except InvalidInput as exc:
        raise from_library(exc, param="documents") from exc
    return UpsertResponse(**result.__dict__)


@router.delete(
    "/v1/indexes/{name}/documents",
    response_model=DeleteResponse,
    responses={**ERROR_RESPONSES},
)
async def delete_documents(name: str, request: DeleteRequest, state: State) -> DeleteResponse:
    """Delete documents by id; every id must exist, else nothing is deleted (404)."""
    s = state.settings
    if len(request.ids) > s.max_inputs_per_request:
        raise _too_many("ids", len(request.ids), s.max_inputs_per_request)
    for i, doc_id in enumerate(request.ids):
        if len(doc_id) > s.max_chars_per_input:
            raise _too_long(f"ids[{i}]", len(doc_id), s.max_chars_per_input)
    deleted = await state.indexes.delete(name, request.ids)
    return DeleteResponse(deleted=deleted)


def _hit(hit: Hit) -> dict[str, Any]:
    return {
        "id": hit.doc_id,
        "score": float(hit.score),
        "rank": hit.rank,
        "chunk": hit.chunk,
        "span": list(hit.span) if hit.span is not None else None,
        "ranks": dict(hit.ranks),
        "scores": {k: float(v) for k, v in hit.scores.items()},
        "title": hit.title,
        "text": hit.text,
        "metadata": hit.metadata,
    }


def _options(request: SearchRequest) -> dict[str, Any]:
    """The request's search options, validated once (``SearchOptions``), as keywords."""
    retrievers = tuple(request.retrievers) if request.retrievers is not None else None
    try:
        options = SearchOptions(
            mode=request.mode,
            k=request.k,
            filter=request.filter,
            fusion=request.fusion,
            alpha=request.alpha,
            rrf_k=request.rrf_k,
            candidates=request.candidates,
            normalization=request.normalization,
            retrievers=retrievers,
        )
    except InvalidInput as exc:
        raise from_library(exc) from exc
    return {f.name: getattr(options, f.name) for f in fields(options)}


def _check_sparse(name: str, request: SearchRequest, state: ServerState) -> None:
    """422 for ``sparse`` on an index without SPLADE postings (the served OpenAPI document
    lists ``sparse`` only when some served index has them)."""
    param = "mode" if request.mode == "sparse" else None
    if param is None and request.retrievers is not None and "sparse" in request.retrievers:
        param = "retrievers"
    if param is not None and not state.indexes.has_sparse(name):
        raise ApiError(
            422,
            f"{param}: index {name!r} has no sparse (SPLADE) postings; use dense, bm25 or "
            "hybrid, or serve an index created with a sparse model",
            code="invalid_request",
            param=param,
        )


@router.post(
    "/v1/indexes/{name}/search",
    response_model=SearchResponse,
    responses={**ERROR_RESPONSES},
)
async def search_index(name: str, request: SearchRequest, state: State) -> Response:
    """Search index ``name`` by ``mode`` (dense, BM25, sparse or hybrid, the default) or by a
    ``pipeline``, with an optional metadata filter."""
    s = state.settings
    if request.k > s.max_k:
        raise limit_exceeded(f"k is {request.k}; this server returns at most {s.max_k}", "k")
    if len(request.query) > s.max_chars_per_input:
        raise _too_long("query", len(request.query), s.max_chars_per_input)
    payload: dict[str, Any] = {"object": "list", "index": name}
    if request.pipeline is None:
        _check_sparse(name, request, state)
        options = _options(request)
        hits = await state.indexes.read(name, lambda index: index.search(request.query, **options))
        payload.update(mode=request.mode, pipeline=None)
    else:
        try:
            pipeline = await state.pipelines.get(name, state.indexes.path(name), request.pipeline)
        except InvalidInput as exc:
            raise from_library(exc, param="pipeline") from exc
        hits = await state.indexes.read(
            name,
            lambda index: index.search(
                request.query, pipeline=pipeline, k=request.k, filter=request.filter
            ),
        )
        info = {"name": pipeline.name, "config": pipeline.config.to_string(),
                "models": pipeline.models}  # fmt: skip
        payload.update(mode=None, pipeline=info)
    payload["data"] = [_hit(hit) for hit in hits]
    return await json_response(payload)
