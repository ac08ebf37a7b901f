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
from embedstack.rerank.split_encoder import SplitCrossEncoder, is_split

__all__ = [
    "CrossEncoder",
    "Reranker",
    "SplitCrossEncoder",
    "load_reranker",
    "rank",
    "validate_query_documents",
]


def load_reranker(name_or_path: str | os.PathLike[str], **options: Any) -> Reranker:
    """Build the reranker for a model folder or Hugging Face id: a
    :class:`SplitCrossEncoder` when the folder was trained with a split
    (``split_layer=``), else a :class:`CrossEncoder`.

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
    from embedstack.encoders.loading import resolve_model_dir

    path, _ = resolve_model_dir(name_or_path)
    cls = SplitCrossEncoder if is_split(path) else CrossEncoder
    reranker: Reranker = cls(name_or_path, **options)
    return reranker
