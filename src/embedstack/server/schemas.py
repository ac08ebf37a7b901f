"""Request and response bodies of the HTTP API (pydantic models; they generate the OpenAPI).

Request models ignore unknown fields, as the OpenAI and Cohere APIs do, so clients that
send newer fields keep working, but they are strict about types (``"3"`` is not an
integer, ``"true"`` is not a boolean). Limits that come from :class:`ServerSettings` are
checked by the routes (422 with the limit in the message) and written into the served
OpenAPI document by :mod:`embedstack.server.openapi`, not fixed here.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    StrictBool,
    StrictInt,
    StrictStr,
    WithJsonSchema,
)
from pydantic_core import PydanticCustomError

__all__ = [
    "NON_BLANK",
    "EmbeddingItem",
    "EmbeddingRequest",
    "EmbeddingResponse",
    "Health",
    "ModelCard",
    "ModelList",
    "RerankDocument",
    "RerankRequest",
    "RerankResponse",
    "RerankResult",
    "Usage",
]
# The request and response bodies of /v1/indexes are in embedstack.server.index_schemas.

# A string with at least one character that Python's str.strip() keeps: the JSON-schema
# twin of the library's "empty or whitespace-only" check (str.isspace, \x1c-\x1f included).
NON_BLANK = (
    "[^\\t\\n\\x0b\\x0c\\r\\x1c-\\x20\\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029"
    "\\u202f\\u205f\\u3000]"
)


def _non_blank(value: str) -> str:
    if not value.strip():
        raise PydanticCustomError("blank", "must not be empty or whitespace-only")
    return value


def _integral(value: Any) -> Any:
    """JSON Schema's integers include ``5.0``: accept integral floats as ints."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


PositiveInt = Annotated[StrictInt, Field(ge=1), BeforeValidator(_integral)]
Text = Annotated[
    StrictStr,
    AfterValidator(_non_blank),
    WithJsonSchema({"type": "string", "pattern": NON_BLANK}),
]
TokenIds = Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1)]
EmbeddingInputSchema = (
    Text
    | Annotated[list[Text], Field(min_length=1)]
    | TokenIds
    | Annotated[list[TokenIds], Field(min_length=1)]
)


def _is_int(value: object) -> bool:
    return (isinstance(value, int) and not isinstance(value, bool)) or (
        isinstance(value, float) and value.is_integer()
    )


def _ints(values: list[Any]) -> list[int]:
    return [int(v) for v in values]


def _error(message: str, **context: Any) -> PydanticCustomError:
    return PydanticCustomError("invalid_input", message, context)


def _parse_input(value: Any) -> str | list[str] | list[int] | list[list[int]]:
    """Accept the four OpenAI input forms, with one clear message for anything else
    (blank texts and out-of-vocabulary ids are checked by the route, with the model)."""
    if isinstance(value, str):
        return value
    if not isinstance(value, list):
        raise _error(
            "input must be a string, a list of strings, a token-id array or a list of "
            "token-id arrays, got {kind}",
            kind=type(value).__name__,
        )
    if not value:
        raise _error("input is an empty list: send at least one text")
    if all(isinstance(v, str) for v in value):
        return value
    if all(_is_int(v) for v in value):
        if any(v < 0 for v in value):
            raise _error("token ids must be >= 0")
        return _ints(value)
    if all(isinstance(v, list) for v in value):
        for i, ids in enumerate(value):
            if not ids or not all(_is_int(t) and t >= 0 for t in ids):
                raise _error(
                    "input[{i}] must be a non-empty array of token ids (integers >= 0)", i=i
                )
        return [_ints(ids) for ids in value]
    kinds = sorted({type(v).__name__ for v in value})
    raise _error(
        "input must be all strings, all token ids, or all token-id arrays; got a list of {kinds}",
        kinds=", ".join(kinds),
    )


# -- embeddings (OpenAI) ----------------------------------------------------------------------
class EmbeddingRequest(BaseModel):
    """``POST /v1/embeddings``, the OpenAI schema plus an optional ``input_type``."""

    input: Annotated[
        str | list[str] | list[int] | list[list[int]],
        PlainValidator(_parse_input, json_schema_input_type=EmbeddingInputSchema),
    ] = Field(
        description="A string, a list of strings, a token-id array, or a list of token-id "
        "arrays (decoded with the model's tokenizer). Lists must not be empty."
    )
    model: StrictStr = Field(description="A served model (GET /v1/models).")
    dimensions: PositiveInt | None = Field(
        default=None,
        description="Matryoshka truncation to this many dimensions (at most the model's), "
        "re-normalized to unit length.",
    )
    encoding_format: Literal["float", "base64"] = Field(
        default="float", description="'base64': little-endian float32 bytes, base64-encoded."
    )
    user: StrictStr | None = Field(default=None, description="Accepted and ignored.")
    input_type: Literal["query", "document"] = Field(
        default="document",
        description="Which side of the model to use: 'query' applies the model's query "
        "prefix (encode_queries), 'document' (the default) its document prefix "
        "(encode_documents).",
    )


class EmbeddingItem(BaseModel):
    """One embedding, in input order."""

    object: Literal["embedding"] = "embedding"
    embedding: list[float] | str
    index: int


class Usage(BaseModel):
    """Tokens counted with the model's tokenizer, as the model read them."""

    prompt_tokens: int
    total_tokens: int


class EmbeddingResponse(BaseModel):
    """The OpenAI embeddings response."""

    object: Literal["list"] = "list"
    data: list[EmbeddingItem]
    model: str
    usage: Usage


class ModelCard(BaseModel):
    """One served model (OpenAI's model object, plus its kind and dimension)."""

    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "embedstack"
    type: Literal["embedding", "rerank"]
    dimensions: int | None = None


class ModelList(BaseModel):
    """``GET /v1/models``."""

    object: Literal["list"] = "list"
    data: list[ModelCard]


# -- rerank (Cohere / Jina) -------------------------------------------------------------------
class RerankDocument(BaseModel):
    """A document given as an object (Cohere v1, Jina); other fields are echoed back."""

    model_config = ConfigDict(extra="allow")

    text: Text


def _parse_document(value: Any) -> RerankDocument:
    if isinstance(value, dict):
        text = value.get("text")
        if not isinstance(text, str):
            raise _error("a document object needs a 'text' string")
        return RerankDocument(**{**value, "text": _non_blank(text)})
    if isinstance(value, str):
        return RerankDocument(text=_non_blank(value))
    raise _error(
        "a document must be a string or an object with 'text', got {kind}",
        kind=type(value).__name__,
    )


RerankItem = Annotated[
    RerankDocument,
    PlainValidator(_parse_document, json_schema_input_type=Text | RerankDocument),
]


class RerankRequest(BaseModel):
    """``POST /v1/rerank``, the Cohere/Jina shape (also served at ``/v2/rerank``)."""

    model: StrictStr = Field(description="A served reranker (GET /v1/models).")
    query: Text
    documents: list[RerankItem] = Field(
        min_length=1, description="Strings, or objects with 'text' (other fields echoed)."
    )
    top_n: PositiveInt | None = Field(default=None, description="Results kept; default all.")
    return_documents: StrictBool = Field(default=False, description="Include each document.")


class RerankResult(BaseModel):
    """One scored document: its position in the request and its score."""

    index: int
    relevance_score: float
    document: RerankDocument | None = None


class RerankResponse(BaseModel):
    """Results sorted by ``relevance_score``, best first (scores on the reranker's scale)."""

    id: str
    model: str
    results: list[RerankResult]
    meta: dict[str, Any]


class Health(BaseModel):
    """``GET /healthz``."""

    status: Literal["ok"] = "ok"
    models: list[str]
    rerankers: list[str]
    indexes: list[str]
    uptime_s: float
