"""Search pipelines of the served indexes: built once per (index, pipeline), on served models.

``POST /v1/indexes/{name}/search`` with ``"pipeline"`` runs a
:class:`~embedstack.pipeline.Pipeline`. :class:`PipelineHub` builds one per index and
normalised spec (the resolved config's compact form, so ``"hybrid-rerank"`` and its
compact string share one) and keeps it, and gives its stages the models the server
loaded at start-up instead of loading them per request:

* a ``rerank`` stage that names no model uses the server's first reranker
  (``embedstack serve --reranker DIR``), one that names a model must name a served
  reranker (its name, e.g. the folder's name, or the source it was loaded from);
* a ``colbert`` stage scores the index's stored token vectors (no model), or a served
  reranker it names.

A request can never make the server load a model. Scores are computed on the reranker's
own worker thread (see :mod:`embedstack.server.models`), so a served reranker is never
called from two threads at once, whichever route uses it.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from embedstack.errors import InvalidInput
from embedstack.pipeline import Pipeline, PipelineConfig, resolve_pipeline

if TYPE_CHECKING:
    from embedstack.server.models import ModelHub

__all__ = ["PipelineHub", "ServedScorer"]

MAX_PIPELINES = 256  # built pipelines kept (least recently used dropped): they hold no models

NO_RERANKER = (
    "this server serves no reranker: start it with `embedstack serve --reranker DIR` (or "
    "ServerSettings(rerankers=...)), or use a pipeline without a rerank stage"
)


class ServedScorer:
    """A served reranker as a pipeline stage's scorer: ``score`` runs on the reranker's
    worker thread (the caller, an index reader thread, waits for it); other attributes
    (``encoder``, ``weights_hash``: what tells a split or ColBERT model whose vectors an
    index stores) are the reranker's."""

    def __init__(self, name: str, reranker: Any, models: ModelHub) -> None:
        self._served_name = name
        self._reranker = reranker
        self._models = models

    @property
    def name(self) -> str:
        """The served name."""
        return self._served_name

    def score(self, query: str, documents: Sequence[str]) -> np.ndarray:
        """The reranker's scores, computed on its worker thread."""
        key = f"rerank:{self._served_name}"
        scores: np.ndarray = self._models.call(key, self._reranker.score, query, documents)
        return scores

    def __getattr__(self, attribute: str) -> Any:
        if attribute.startswith("__"):
            raise AttributeError(attribute)
        return getattr(self._reranker, attribute)


def _same_folder(a: str, b: str) -> bool:
    try:
        return Path(a).expanduser().resolve() == Path(b).expanduser().resolve()
    except (OSError, RuntimeError):
        return False


def _normalised(config: PipelineConfig) -> str:
    """The compact form with the stages' model names left out (the served models they
    resolve to are part of the cache key), so every spelling of one pipeline is one key."""
    stages = tuple(
        stage.model_copy(update={"model": None}) if getattr(stage, "model", None) else stage
        for stage in config.stages
    )
    return config.model_copy(update={"stages": stages}).to_string()


class PipelineHub:
    """The pipelines built so far, keyed by index name and normalised spec (at most
    :data:`MAX_PIPELINES`, least recently used dropped first).

    Args:
        models: The served models (the rerankers stages use).
    """

    def __init__(self, models: ModelHub) -> None:
        self._models = models
        self._built: OrderedDict[tuple[str, str, str, str | None, str | None], Pipeline] = (
            OrderedDict()
        )
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._built)

    def _served(self, model: str | None, where: str) -> str:
        """The served reranker name a stage's ``model`` refers to (None: the default)."""
        sources = self._models.reranker_sources
        if not sources:
            raise InvalidInput(f"{where}: {NO_RERANKER}")
        if model is None:
            return next(iter(sources))
        if model in sources:
            return model
        for name, source in sources.items():
            if model == source or (os.sep in model and _same_folder(model, source)):
                return name
        raise InvalidInput(
            f"{where}: reranker {model!r} is not served here; served rerankers: "
            f"{', '.join(sources)} (a server loads models at start-up only: serve it with "
            "--reranker, or drop the model to use the first one)"
        )

    def _stage_models(self, config: PipelineConfig) -> tuple[str | None, str | None]:
        """The served reranker of the ``rerank`` stages and of the ``colbert`` stages that
        name a model (None: no such stage)."""
        chosen: dict[str, set[str]] = {"rerank": set(), "colbert": set()}
        for i, stage in enumerate(config.stages):
            model = getattr(stage, "model", None)
            if stage.kind == "rerank" or (stage.kind == "colbert" and model is not None):
                chosen[stage.kind].add(self._served(model, f"stages.{i} ({stage.kind})"))
        for kind, names in chosen.items():
            if len(names) > 1:
                raise InvalidInput(
                    f"the {kind} stages of this pipeline name {len(names)} different models "
                    f"({', '.join(sorted(names))}); a served pipeline uses one per kind"
                )
        return next(iter(chosen["rerank"]), None), next(iter(chosen["colbert"]), None)

    async def get(self, index: str, path: Path | None, spec: str) -> Pipeline:
        """The pipeline ``spec`` of index ``index`` (stored at ``path``; None for an index
        held by an engine, which has no saved pipelines), built on first use.

        Raises:
            InvalidInput: an unknown or invalid pipeline, or a stage whose model the server
                does not serve.
            ModelNotFound: a served reranker that cannot be loaded.
        """
        shown, config = resolve_pipeline(spec, index=path)
        rerank, colbert = self._stage_models(config)
        key = (index, shown, _normalised(config), rerank, colbert)
        with self._lock:
            built = self._built.get(key)
            if built is not None:
                self._built.move_to_end(key)
                return built
        scorers: list[ServedScorer | None] = []
        for name in (rerank, colbert):
            loaded = await self._models.reranker(name) if name is not None else None
            scorers.append(ServedScorer(name, loaded, self._models) if name else None)
        pipeline = Pipeline(config, index=path, reranker=scorers[0], colbert=scorers[1])
        pipeline.name = shown
        with self._lock:
            built = self._built.setdefault(key, pipeline)
            while len(self._built) > MAX_PIPELINES:  # clients may send endless specs
                self._built.popitem(last=False)
            return built
