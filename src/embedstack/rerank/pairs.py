"""Tokenize (query, document) pairs for a cross-encoder, keeping the query whole.

A pair becomes ``[CLS] query [SEP] document [SEP]`` (the tokenizer's pair template, with
``token_type_ids`` 0 for the query and 1 for the document). When the pair is longer than
``max_length`` only the document is truncated ("only_second"), so the whole query is always
read. A query longer than half of ``max_length`` is itself cut to that many tokens first,
which guarantees every pair fits and leaves at least half of the window to the document.
Training (:mod:`embedstack.train`) and inference share this code, so a model is scored on
exactly the inputs it was trained on.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from embedstack.encoders.runtime.folder import load_tokenizer
from embedstack.encoders.runtime.heads import length_batches as _length_batches
from embedstack.encoders.runtime.heads import pad_batch
from embedstack.errors import InvalidInput

__all__ = ["PairTokenizer", "length_batches", "pad"]

logger = logging.getLogger("embedstack")

Batch = dict[str, np.ndarray]


class PairTokenizer:
    """A fast (``tokenizers``) tokenizer configured for cross-encoder pairs.

    Args:
        folder: Model folder holding ``tokenizer.json``.
        max_length: Tokens per pair, special tokens included.

    Raises:
        ModelNotFound: the folder has no ``tokenizer.json``.
        InvalidInput: ``max_length`` is too small to hold a query and a document.

    Example:
        >>> tok = PairTokenizer(Path("my-reranker"), max_length=128)  # doctest: +SKIP
        >>> enc = tok.encode("what is a cat?", ["A cat is a small feline."])  # doctest: +SKIP
    """

    def __init__(self, folder: Path, max_length: int) -> None:
        if max_length < 8:
            raise InvalidInput(
                f"max_length must be >= 8 for (query, document) pairs, got {max_length}"
            )
        self.max_length = max_length
        self.query_limit = max_length // 2
        self._tokenizer: Any = load_tokenizer(folder, None)
        self._tokenizer.enable_truncation(max_length, strategy="only_second")
        self._plain: Any = load_tokenizer(folder, None)
        self._char_limit = max(4096, max_length * 100)
        self.truncated_queries = 0

    def clip_query(self, query: str) -> str:
        """``query`` cut to at most ``max_length // 2`` tokens (unchanged when shorter)."""
        text = query[: self._char_limit]
        encoding = self._plain.encode(text, add_special_tokens=False)
        if len(encoding.ids) <= self.query_limit:
            return text
        self.truncated_queries += 1
        end = encoding.offsets[self.query_limit - 1][1]
        logger.info("a query of %d tokens was cut to %d", len(encoding.ids), self.query_limit)
        return text[:end]

    def encode(self, query: str, documents: Sequence[str]) -> list[Any]:
        """Encodings of ``(query, document)`` for each document, in input order."""
        clipped = self.clip_query(query)
        return self.encode_pairs([(clipped, doc) for doc in documents], clipped=True)

    def encode_pairs(self, pairs: Sequence[tuple[str, str]], *, clipped: bool = False) -> list[Any]:
        """Encodings of arbitrary ``(query, document)`` pairs (queries may differ).

        Args:
            pairs: ``(query, document)`` tuples.
            clipped: The queries already went through :meth:`clip_query`.
        """
        cache: dict[str, str] = {}
        inputs = []
        for query, doc in pairs:
            if not clipped:
                if query not in cache:
                    cache[query] = self.clip_query(query)
                query = cache[query]
            inputs.append((query, doc[: self._char_limit]))
        return list(self._tokenizer.encode_batch(inputs, add_special_tokens=True))


def pad(encodings: Sequence[Any], rows: Sequence[int] | np.ndarray) -> Batch:
    """A right-padded ``(len(rows), width) int64`` batch of the chosen encodings (the
    runtime's :func:`~embedstack.encoders.runtime.heads.pad_batch`)."""
    return pad_batch(encodings, rows)


def length_batches(encodings: Sequence[Any], batch_size: int) -> Iterator[np.ndarray]:
    """Row indices in batches of at most ``batch_size``, longest pairs first (see
    :func:`~embedstack.encoders.runtime.heads.length_batches`)."""
    return _length_batches([len(e.ids) for e in encodings], batch_size)
