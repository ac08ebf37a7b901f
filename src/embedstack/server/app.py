"""The app factory: :func:`create_app` builds a FastAPI app from :class:`ServerSettings`.

Building the app loads nothing (models load at startup with ``preload``, on first use
otherwise, or before listening in ``embedstack serve``); each app owns its state — models,
batchers, index handles, metrics — so several apps can live in one process.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from embedstack.errors import require
from embedstack.server.settings import ServerSettings

if TYPE_CHECKING:
    from fastapi import FastAPI

    from embedstack.encoders import TextEncoder
    from embedstack.server.rerank import Reranker

__all__ = ["create_app"]

DESCRIPTION = """\
Text embeddings (OpenAI-compatible), reranking (Cohere/Jina-compatible) and hybrid search
over embedstack indexes. Errors use OpenAI's shape:
`{"error": {"message", "type", "param", "code"}}`.
"""


def create_app(
    settings: ServerSettings | None = None,
    *,
    encoders: Mapping[str, TextEncoder] | None = None,
    rerankers: Mapping[str, Reranker] | None = None,
) -> FastAPI:
    """Build the HTTP app for ``settings`` (nothing is loaded yet).

    Args:
        settings: What to serve and the limits; default ``ServerSettings()`` (the default
            model, API keys from ``$EMBEDSTACK_API_KEYS``).
        encoders: Encoders already built by the caller, served under these names in
            addition to ``settings.models`` (a program that embeds too, or tests).
        rerankers: Rerankers already built, likewise in addition to ``settings.rerankers``.

    Returns:
        A FastAPI app; run it with any ASGI server (``embedstack serve`` uses uvicorn).
        Its state is ``app.state.embedstack`` (:class:`~embedstack.server.state.ServerState`).

    Raises:
        MissingDependency: FastAPI is not installed (``pip install 'embedstack[server]'``).

    Example:
        >>> from embedstack.server import ServerSettings, create_app        # doctest: +SKIP
        >>> app = create_app(ServerSettings(models=("all-MiniLM-L6-v2",), preload=True))
        >>> import uvicorn; uvicorn.run(app, port=8000)                      # doctest: +SKIP
    """
    require("fastapi", "server", "the HTTP server")
    from fastapi import FastAPI
    from fastapi.middleware.cors import CORSMiddleware
    from fastapi.openapi.utils import get_openapi
    from fastapi.responses import HTMLResponse

    from embedstack import __version__
    from embedstack.server.docs import DOCS_HTML
    from embedstack.server.handlers import install_handlers
    from embedstack.server.middleware import Guard
    from embedstack.server.openapi import specialize
    from embedstack.server.routes import embeddings, indexes, ops, rerank
    from embedstack.server.state import ServerState

    settings = settings if settings is not None else ServerSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if app.state.embedstack.closed:  # the app is started again: fresh state
            app.state.embedstack = ServerState(settings, encoders=encoders, rerankers=rerankers)
        state: ServerState = app.state.embedstack
        try:
            await state.startup()
            yield
        finally:
            await state.aclose()

    app = FastAPI(
        title="embedstack",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,  # Swagger UI and ReDoc load from a CDN: blank offline
        redoc_url=None,
    )

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return HTMLResponse(DOCS_HTML)

    app.state.embedstack = ServerState(settings, encoders=encoders, rerankers=rerankers)
    install_handlers(app)
    routers = [module.router for module in (embeddings, rerank, indexes, ops)]
    for router in routers:
        app.include_router(router)
    app.add_middleware(
        Guard,
        settings=settings,
        metrics=lambda: app.state.embedstack.metrics,
        routes=[route for router in routers for route in router.routes],
    )
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type"],
        )

    def openapi() -> dict[str, Any]:
        schema = get_openapi(
            title=app.title,
            version=app.version,
            description=app.description,
            routes=app.routes,
        )
        state: ServerState = app.state.embedstack
        dims = embeddings.served_dims(state)
        sparse = state.indexes.any_sparse()
        return specialize(
            schema,
            settings,
            dims=dims,
            rerankers=list(state.models.reranker_sources),
            sparse=sparse,
            tokens=state.models.token_limits(),
        )

    app.openapi = openapi  # type: ignore[method-assign]
    return app
