"""HTTP server (extra ``server``): OpenAI-compatible embeddings, Cohere/Jina-compatible
rerank, and search over embedstack indexes.

Importing this package imports neither FastAPI nor a model; :func:`create_app` builds an
app from :class:`ServerSettings`, and ``embedstack serve`` runs one under uvicorn.

Example:
    >>> from embedstack.server import ServerSettings, create_app        # doctest: +SKIP
    >>> app = create_app(ServerSettings(models=("all-MiniLM-L6-v2",)))   # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from embedstack.server.rerank import Reranker, register_reranker, unregister_reranker
from embedstack.server.settings import API_KEYS_ENV, ServerSettings

if TYPE_CHECKING:
    from fastapi import FastAPI

    from embedstack.encoders import TextEncoder

__all__ = [
    "API_KEYS_ENV",
    "Reranker",
    "ServerSettings",
    "create_app",
    "register_reranker",
    "unregister_reranker",
]


def create_app(
    settings: ServerSettings | None = None,
    *,
    encoders: Mapping[str, TextEncoder] | None = None,
    rerankers: Mapping[str, Reranker] | None = None,
) -> FastAPI:
    """Build the HTTP app; see :func:`embedstack.server.app.create_app`."""
    from embedstack.server.app import create_app as build

    return build(settings, encoders=encoders, rerankers=rerankers)
