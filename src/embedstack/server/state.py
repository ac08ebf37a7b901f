"""What one app instance owns: settings, metrics, models and indexes (no globals)."""

from __future__ import annotations

import time
from collections.abc import Mapping

from fastapi import Request

from embedstack.encoders import TextEncoder
from embedstack.server.indexes import IndexHub
from embedstack.server.metrics import Metrics
from embedstack.server.models import ModelHub
from embedstack.server.pipelines import PipelineHub
from embedstack.server.rerank import Reranker
from embedstack.server.settings import ServerSettings

__all__ = ["ServerState", "get_state"]


class ServerState:
    """The per-app state stored on ``app.state.embedstack``; building it loads nothing."""

    def __init__(
        self,
        settings: ServerSettings,
        *,
        encoders: Mapping[str, TextEncoder] | None = None,
        rerankers: Mapping[str, Reranker] | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.models = ModelHub(settings, self.metrics, encoders=encoders, rerankers=rerankers)
        self.indexes = IndexHub(settings, self.metrics, shared_encoders=self.models.loaded_encoders)
        self.pipelines = PipelineHub(self.models)
        self.started = int(time.time())
        self.started_monotonic = time.monotonic()
        self.closed = False

    def load_all(self) -> None:
        """Load every model and open every index now, on the calling thread.

        ``embedstack serve`` calls this before it starts listening, so a bad model or
        index fails the command with one line instead of a traceback at startup.

        Raises:
            EmbedstackError: a model or index cannot be loaded.
        """
        self.models.load_all()
        self.indexes.load_all()

    async def startup(self) -> None:
        """Load models and open indexes now when ``settings.preload`` asks for it."""
        if self.settings.preload:
            await self.models.preload()
            await self.indexes.preload()

    async def aclose(self) -> None:
        """Stop batchers and worker threads, close index handles."""
        self.closed = True
        await self.models.aclose()
        self.indexes.close()


def get_state(request: Request) -> ServerState:
    """FastAPI dependency: the state of the app serving ``request``."""
    state: ServerState = request.app.state.embedstack
    return state
