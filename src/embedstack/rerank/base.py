"""The :class:`Reranker` interface and input validation shared by rerankers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from embedstack.encoders.base import validate_texts
from embedstack.errors import InvalidInput

__all__ = ["Reranker", "check_top_n", "rank", "validate_query_documents"]


@runtime_checkable
class Reranker(Protocol):
    """Scores documents against one query; a higher score means more relevant.

    Any object with a ``name`` (attribute or property) and a ``score`` method qualifies.
    """

    @property
    def name(self) -> str:
        """Name or path of the model, reported in results."""
        ...

    def score(self, query: str, documents: Sequence[str]) -> np.ndarray:
        """Relevance of each document to ``query``.

        Args:
            query: A non-blank query.
            documents: Non-blank documents.

        Returns:
            ``(len(documents),) float32``, one score per document, in input order.
        """
        ...


def validate_query_documents(query: object, documents: object) -> tuple[str, list[str]]:
    """Check a reranking request: a non-blank query and a non-empty list of non-blank texts.

    Raises:
        InvalidInput: naming what is wrong (the query, or the first bad document's position).
    """
    if not isinstance(query, str):
        raise InvalidInput(f"query is {type(query).__name__}, not str: pass one query string")
    if not query.strip():
        raise InvalidInput("query is empty or whitespace-only: pass the text to rank against")
    if isinstance(documents, str | bytes):
        raise InvalidInput("documents is a single string: pass a list of document texts")
    if documents is None:
        raise InvalidInput("documents is None: pass a list of document texts")
    try:
        docs = validate_texts(documents)  # type: ignore[arg-type]
    except InvalidInput as exc:
        raise InvalidInput(f"documents: {exc}") from None
    except TypeError:
        raise InvalidInput(
            f"documents is {type(documents).__name__}: pass a list of document texts"
        ) from None
    if not docs:
        raise InvalidInput("documents is empty: pass at least one document to score")
    validate_texts([query])  # the query must also be valid UTF-8
    return query, docs


def rank(scores: np.ndarray, top_n: int | None = None) -> list[tuple[int, float]]:
    """``(index, score)`` pairs by descending score, ties broken by the lower index.

    Args:
        scores: ``(n,)`` scores.
        top_n: Keep the first ``top_n`` pairs (None keeps all; more than ``n`` keeps all).

    Raises:
        InvalidInput: ``top_n`` is not a positive integer.

    Example:
        >>> rank(np.array([0.1, 0.9, 0.9], dtype=np.float32), top_n=2)
        [(1, 0.8999999761581421), (2, 0.8999999761581421)]
    """
    if top_n is not None and (isinstance(top_n, bool) or not isinstance(top_n, int) or top_n < 1):
        raise InvalidInput(f"top_n must be a positive integer or None, got {top_n!r}")
    values = np.asarray(scores, dtype=np.float32)
    order = np.lexsort((np.arange(len(values)), -values.astype(np.float64)))
    if top_n is not None:
        order = order[:top_n]
    return [(int(i), float(values[i])) for i in order]


def check_top_n(top_n: object) -> None:
    """Raise :class:`InvalidInput` unless ``top_n`` is None or a positive integer."""
    if top_n is not None and (isinstance(top_n, bool) or not isinstance(top_n, int) or top_n < 1):
        raise InvalidInput(f"top_n must be a positive integer or None, got {top_n!r}")
