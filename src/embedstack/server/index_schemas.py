"""Request and response bodies of ``/v1/indexes`` (see :mod:`embedstack.server.schemas`
for the conventions: unknown fields ignored, strict types, instance limits added to the
served OpenAPI document by :mod:`embedstack.server.openapi`)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, Field, StrictFloat, StrictStr, WithJsonSchema
from pydantic_core import PydanticCustomError

from embedstack.index.protocols import DEFAULT_MODE
from embedstack.server.schemas import PositiveInt, Text

__all__ = [
    "DeleteRequest",
    "DeleteResponse",
    "Document",
    "IndexList",
    "IndexStatsResponse",
    "PipelineInfo",
    "SearchHit",
    "SearchRequest",
    "SearchResponse",
    "UpsertRequest",
    "UpsertResponse",
]


# -- indexes ----------------------------------------------------------------------------------
class Document(BaseModel):
    """A document to index."""

    id: Text
    text: Text
    title: StrictStr | None = None
    metadata: dict[str, Any] | None = None


class UpsertRequest(BaseModel):
    """``POST /v1/indexes/{name}/documents``: add new documents, replace changed ones."""

    documents: list[Document] = Field(
        min_length=1,
        description="Documents to add or replace, each id at most once per request (a "
        "repeated id is refused with 400; JSON Schema cannot state it).",
    )


class UpsertResponse(BaseModel):
    """What the upsert did (see ``embedstack.index.AddResult``)."""

    added: int
    updated: int
    unchanged: int
    chunks: int


class DeleteRequest(BaseModel):
    """``DELETE /v1/indexes/{name}/documents``: all ids must exist, else nothing is deleted."""

    ids: list[Annotated[StrictStr, Field(min_length=1)]] = Field(min_length=1)


class DeleteResponse(BaseModel):
    """How many documents were deleted."""

    deleted: int


def _distinct(values: list[str]) -> list[str]:
    if len(set(values)) != len(values):
        raise PydanticCustomError("unique", "must name each retriever once")
    return values


Retrievers = Annotated[
    list[Literal["bm25", "dense", "sparse"]],
    Field(min_length=1, max_length=3),
    AfterValidator(_distinct),
    WithJsonSchema(
        {
            "type": "array",
            "items": {"enum": ["bm25", "dense", "sparse"], "type": "string"},
            "minItems": 1,
            "maxItems": 3,
            "uniqueItems": True,
        }
    ),
]


class SearchRequest(BaseModel):
    """``POST /v1/indexes/{name}/search``: the fields of ``embedstack.index.SearchOptions``
    (one vocabulary in Python, the CLI and here), or a ``pipeline``."""

    query: Text
    mode: Literal["dense", "bm25", "sparse", "hybrid"] = Field(
        default=DEFAULT_MODE,
        description="Which of the index's retrievers answer: dense, bm25, sparse (an index "
        "with a SPLADE model) or hybrid (fused; the default everywhere: BM25 and dense fused "
        "are at or near the better of the two on nearly every collection).",
    )
    k: PositiveInt = Field(
        default=10,
        description="How many results come back (`k` everywhere; `top_n` is only the "
        "rerank API's name for it).",
    )
    filter: dict[str, Any] | None = Field(
        default=None,
        description="Metadata filter, the embedstack.index.filters syntax: "
        '{"lang": "en", "year": {"$gte": 2020}}, $in, $nin, $ne, $exists, $and, $or.',
    )
    fusion: Literal["rrf", "weighted"] = Field(
        default="rrf",
        description="Hybrid: reciprocal rank fusion (Cormack et al. 2009) or a weighted sum "
        "of normalized scores (Bruch et al. 2023).",
    )
    alpha: StrictFloat = Field(
        default=0.5,
        ge=0,
        le=1,
        description="Weighted fusion: weight of the first retriever (dense by default).",
    )
    rrf_k: StrictFloat = Field(
        default=60.0, gt=0, allow_inf_nan=False, description="RRF's constant (60 in the paper)."
    )
    candidates: PositiveInt = Field(
        default=100,
        description="Hybrid: documents each retriever hands to fusion (at least `k` are "
        "always taken). Not the number of results: that is `k`.",
    )
    normalization: Literal["minmax", "zscore"] = Field(
        default="minmax", description="Weighted fusion: how each retriever's scores are scaled."
    )
    retrievers: Retrievers | None = Field(
        default=None,
        description="Hybrid: which retrievers to fuse, each once, in order (default "
        '["dense", "bm25"]). Only with mode "hybrid".',
    )
    pipeline: Text | None = Field(
        default=None,
        description="Run a search pipeline instead of `mode`: a preset (bm25, dense, hybrid, "
        "hybrid-rerank, three-stage, hybrid-colbert, three-stage-colbert), a pipeline saved "
        "with the index, or the compact form "
        "`bm25(top=100) + dense(top=100) -> rrf(k=60) -> rerank(top=20) -> top 10`, where "
        "`top` is a stage's depth (how many candidates it scores). `k` and `filter` apply; "
        "the other fields are ignored. rerank stages use the server's reranker "
        "(`serve --reranker DIR`); the server builds each pipeline once and reuses it.",
    )


class PipelineInfo(BaseModel):
    """The pipeline that answered: its name, compact form and models per stage."""

    name: str
    config: str
    models: dict[str, str]


class SearchHit(BaseModel):
    """One result (see ``embedstack.index.Hit``)."""

    id: str
    score: float
    rank: int
    chunk: int | None
    span: list[int] | None
    ranks: dict[str, int]
    scores: dict[str, float]
    title: str
    text: str
    metadata: dict[str, Any]


class SearchResponse(BaseModel):
    """Hits, best first; ``mode`` for a mode search, ``pipeline`` (and ``mode`` null) for a
    pipeline search."""

    object: Literal["list"] = "list"
    index: str
    mode: str | None
    pipeline: PipelineInfo | None = None
    data: list[SearchHit]


class IndexStatsResponse(BaseModel):
    """``GET /v1/indexes/{name}``: the index's statistics (``embedstack.index.IndexStats``)."""

    name: str
    n_docs: int
    n_chunks: int
    n_deleted: int
    bytes: dict[str, int]
    segments: int
    model: str
    model_id: str
    dim: int
    precision: str


class IndexList(BaseModel):
    """``GET /v1/indexes``."""

    object: Literal["list"] = "list"
    data: list[str]
