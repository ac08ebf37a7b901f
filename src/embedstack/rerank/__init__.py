"""Rerankers: reorder a first-stage retriever's candidates with a cross-encoder.

Example:
    >>> from embedstack.rerank import load_reranker
    >>> reranker = load_reranker("/tmp/reranker-scifact")  # doctest: +SKIP
    >>> reranker.rerank("do cats purr?", ["Dogs bark.", "Cats purr."], top_n=1)  # doctest: +SKIP
    [(1, 0.97)]
"""

from __future__ import annotations

import inspect
import os
from typing import Any

from embedstack.errors import InvalidInput
from embedstack.rerank.base import Reranker, rank, validate_query_documents
from embedstack.rerank.cross import CrossEncoder

__all__ = ["CrossEncoder", "Reranker", "load_reranker", "rank", "validate_query_documents"]


def load_reranker(name_or_path: str | os.PathLike[str], **options: Any) -> Reranker:
    """Build the reranker for a model folder or Hugging Face id.

    Args:
        name_or_path: A ``*ForSequenceClassification`` folder or Hugging Face id.
        **options: Keyword options of :class:`CrossEncoder` (backend, activation,
            max_length, batch_size, threads, quantize, cache_dir, show_progress).

    Raises:
        ModelNotFound: the weights cannot be found (the message lists where we looked).
        InvalidInput: an unknown or out-of-range option.

    Example:
        >>> load_reranker("my-reranker", backend="torch").name  # doctest: +SKIP
        'my-reranker'
    """
    known = set(inspect.signature(CrossEncoder.__init__).parameters) - {"self", "model"}
    unknown = sorted(set(options) - known)
    if unknown:
        raise InvalidInput(f"unknown reranker option(s) {unknown}; known: {sorted(known)}")
    reranker: Reranker = CrossEncoder(name_or_path, **options)
    return reranker
