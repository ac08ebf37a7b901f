"""The models of ``rerank`` and ``colbert`` stages: the :class:`Scorer` protocol, loading one
by name or folder, and telling when a stage scores the token vectors an index stores."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from embedstack.encoders.runtime.identity import ModelId
from embedstack.errors import EmbedstackError, InvalidInput

if TYPE_CHECKING:
    from embedstack.index.protocols import Searchable

__all__ = ["STORED", "TRAIN_HINT", "Scorer", "as_scorer", "load_colbert", "load_reranker", "stored"]

TRAIN_HINT = (
    "pass reranker=NAME_OR_DIR (Python) or --reranker DIR_OR_NAME (CLI), set the stage's "
    "model, or train one with `embedstack train reranker DATASET_DIR --split train --out DIR`"
)


@runtime_checkable
class Scorer(Protocol):
    """What a ``rerank`` or ``colbert`` stage needs: the reranker protocol of
    :mod:`embedstack.rerank` (``name`` and ``score(query, documents) -> (n,) float32``)."""

    @property
    def name(self) -> str:
        """The model's name, for messages."""
        ...

    def score(self, query: str, documents: Sequence[str]) -> np.ndarray: ...


def load_reranker(value: str, options: dict[str, Any]) -> Scorer:
    from embedstack.rerank import load_reranker

    loaded: Scorer = load_reranker(value, **options)
    return loaded


def load_colbert(value: str, options: dict[str, Any]) -> Scorer:
    from embedstack.encoders.colbert import ColbertReranker

    loaded: Scorer = ColbertReranker(value, **options)
    return loaded


def as_scorer(
    value: Scorer | str | os.PathLike[str],
    what: str,
    load: Callable[[str, dict[str, Any]], Scorer],
    options: dict[str, Any],
) -> Scorer:
    if isinstance(value, str | os.PathLike):
        return load(os.fspath(value), options)
    if isinstance(value, Scorer) and callable(getattr(value, "score", None)):
        return value
    raise InvalidInput(
        f"{what} must be a model name or folder, or an object with name and "
        f"score(query, documents); got {type(value).__name__}"
    )


class _Stored:
    """The scorer of a ``colbert`` stage with no model: the index's stored token vectors."""

    name = "colbert:index"

    def score(self, query: str, documents: Sequence[str]) -> np.ndarray:
        raise EmbedstackError("the stored-vector ColBERT scorer scores through the index")


STORED: Scorer = _Stored()


def stored(index: Searchable, scorer: Scorer | None) -> bool:
    """Whether a stage's ``scorer`` runs on ``index``'s stored token vectors: a ``colbert``
    stage with no model of its own, or a scorer whose encoder's weights are the index's (the
    weights hash of ``model_id``, so another path to the same folder counts as the same
    model). The scorer is a ColBERT reranker, or a split cross-encoder in a ``rerank`` stage
    whose document states the index stores."""
    if scorer is None:
        return False
    recorded = getattr(index, "colbert_model", None)
    if recorded is None:
        return False
    if scorer is STORED:
        return True
    model = getattr(scorer, "encoder", None)
    if model is None and hasattr(scorer, "score_states"):  # a split cross-encoder
        model = scorer
    weights = getattr(model, "weights_hash", None)
    return isinstance(weights, str) and ModelId.parse(str(recorded)).same_weights(weights)
