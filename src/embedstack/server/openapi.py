"""The served OpenAPI document, completed with what only this server instance knows.

The pydantic models describe the shapes; :func:`specialize` adds the instance's limits
(``maxItems``, ``maxLength``, ``maximum`` of ``k``/``top_n``/``dimensions``), the names it
serves (``enum`` of models, rerankers and indexes) and, when API keys are configured, the
bearer security scheme. So a client generated from ``/openapi.json`` (or a fuzzer such as
schemathesis) knows exactly which requests this server accepts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from embedstack.server.settings import ServerSettings

__all__ = ["specialize"]


def _component(schema: dict[str, Any], name: str) -> dict[str, Any]:
    """The component schema ``name`` (FastAPI may suffix ``-Input`` to request models)."""
    components = schema.get("components", {}).get("schemas", {})
    found: dict[str, Any] | None = components.get(f"{name}-Input", components.get(name))
    if found is None:
        raise KeyError(f"OpenAPI component {name!r} not found")
    return found


def _prop(component: dict[str, Any], name: str) -> dict[str, Any]:
    prop: dict[str, Any] = component["properties"][name]
    return prop


def _variant(prop: dict[str, Any], type_: str) -> dict[str, Any]:
    """The ``anyOf`` branch of ``prop`` with JSON type ``type_`` (or ``prop`` itself)."""
    branches: list[dict[str, Any]] = prop.get("anyOf", [prop])
    for branch in branches:
        if branch.get("type") == type_:
            return branch
    raise KeyError(f"no {type_} branch in {prop}")


def _token_forms(prop: dict[str, Any], tokens: tuple[int, tuple[int, ...]] | bool | None) -> None:
    branches: list[dict[str, Any]] = prop["anyOf"]
    arrays = [
        b for b in branches if b.get("type") == "array" and b["items"].get("type") != "string"
    ]
    if tokens is False:
        prop["anyOf"] = [b for b in branches if b not in arrays]
        return
    if not isinstance(tokens, tuple):
        return
    size, blank = tokens
    for branch in arrays:
        ids = branch if branch["items"].get("type") == "integer" else branch["items"]
        ids["items"]["maximum"] = size - 1
        if blank:
            ids["not"] = {"items": {"enum": list(blank)}}


def specialize(
    schema: dict[str, Any],
    settings: ServerSettings,
    *,
    dims: Mapping[str, int | None],
    rerankers: Sequence[str],
    sparse: bool = True,
    tokens: tuple[int, tuple[int, ...]] | bool | None = None,
) -> dict[str, Any]:
    """Write the limits and served names of ``settings`` into ``schema`` (in place).

    Args:
        schema: FastAPI's generated OpenAPI document.
        settings: The server's settings.
        dims: Served embedding model name → full dimension (None when not known yet).
        rerankers: Served reranker names.
        tokens: What token-id inputs the served models accept
            (:meth:`~embedstack.server.models.ModelHub.token_limits`): False drops the
            token-id forms of ``input`` (no model can decode them), ``(vocabulary size,
            blank ids)`` bounds the ids and refuses arrays made only of blank ids (they
            decode to an empty text), None leaves the forms open.
        sparse: Whether some served index stores SPLADE postings; if not, ``sparse`` is
            not offered as a search ``mode`` or retriever.

    Returns:
        ``schema``.
    """
    n_max, c_max = settings.max_inputs_per_request, settings.max_chars_per_input

    emb = _component(schema, "EmbeddingRequest")
    branches = _prop(emb, "input")["anyOf"]
    for branch in branches:
        if branch.get("type") == "string":
            branch["maxLength"] = c_max
        elif branch["items"].get("type") == "string":
            branch.update(maxItems=n_max)
            branch["items"]["maxLength"] = c_max
        elif branch["items"].get("type") == "integer":
            branch["maxItems"] = c_max
        else:
            branch["maxItems"] = n_max
            branch["items"]["maxItems"] = c_max
    _token_forms(_prop(emb, "input"), tokens)
    models = list(dims)
    if models:
        _prop(emb, "model")["enum"] = models
    known = [d for d in dims.values() if d]
    if known and len(known) == len(dims):
        _variant(_prop(emb, "dimensions"), "integer")["maximum"] = max(known)

    rerank = _component(schema, "RerankRequest")
    if rerankers:
        _prop(rerank, "model")["enum"] = list(rerankers)
    _prop(rerank, "query")["maxLength"] = c_max
    documents = _prop(rerank, "documents")
    documents["maxItems"] = n_max
    _variant(documents["items"], "string")["maxLength"] = c_max
    _prop(_component(schema, "RerankDocument"), "text")["maxLength"] = c_max
    _variant(_prop(rerank, "top_n"), "integer")["maximum"] = settings.max_top_n

    search = _component(schema, "SearchRequest")
    _prop(search, "k")["maximum"] = settings.max_k
    if not sparse:
        _prop(search, "mode")["enum"].remove("sparse")
        _variant(_prop(search, "retrievers"), "array")["items"]["enum"].remove("sparse")
        _variant(_prop(search, "retrievers"), "array")["maxItems"] = 2
    _prop(search, "query")["maxLength"] = c_max
    _prop(_component(schema, "UpsertRequest"), "documents")["maxItems"] = n_max
    document = _component(schema, "Document")
    for field in ("id", "text"):
        _prop(document, field)["maxLength"] = c_max
    _variant(_prop(document, "title"), "string")["maxLength"] = c_max
    ids = _prop(_component(schema, "DeleteRequest"), "ids")
    ids["maxItems"] = n_max
    ids["items"]["maxLength"] = c_max

    indexes = sorted(settings.indexes)
    for path, operations in schema.get("paths", {}).items():
        for operation in operations.values():
            if indexes and path.startswith("/v1/indexes/{name}"):
                for parameter in operation.get("parameters", []):
                    if parameter.get("name") == "name" and parameter.get("in") == "path":
                        parameter["schema"]["enum"] = indexes
            if settings.api_keys and path.startswith("/v1/"):
                operation["security"] = [{"bearer": []}]
    if settings.api_keys:
        schemes = schema.setdefault("components", {}).setdefault("securitySchemes", {})
        schemes["bearer"] = {"type": "http", "scheme": "bearer"}
    return schema
