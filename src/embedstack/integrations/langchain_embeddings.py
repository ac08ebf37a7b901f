"""LangChain ``Embeddings`` over an embedstack encoder, and the reverse: any LangChain
``Embeddings`` as an embedstack :class:`~embedstack.encoders.TextEncoder`, so that an
:class:`~embedstack.index.Index` can store its vectors.

Needs the ``langchain`` extra (``langchain-core``). Import through
:mod:`embedstack.integrations.langchain`.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import os
from collections.abc import Iterable
from typing import Any

import numpy as np

from embedstack._typing import FloatArray
from embedstack.encoders import DEFAULT_MODEL, TextEncoder
from embedstack.encoders.base import validate_texts
from embedstack.errors import DimensionMismatch, InvalidInput, require
from embedstack.integrations._encoders import resolve_encoder

require("langchain_core", "langchain", "the LangChain adapters")

from langchain_core.embeddings import Embeddings  # noqa: E402 - after the extra's check

__all__ = ["EmbedstackEmbeddings", "LangChainEncoder", "as_text_encoder", "relevance"]


class EmbedstackEmbeddings(Embeddings):
    """A LangChain ``Embeddings`` backed by an embedstack encoder.

    Documents are encoded with :meth:`~embedstack.encoders.TextEncoder.encode_documents`
    and queries with ``encode_queries``, so the model's registered document and query
    prefixes (E5's ``"passage: "`` / ``"query: "``) are applied here, never by the caller.
    Vectors are L2-normalized float32 values returned as lists of Python floats.

    Args:
        model: a registry name (``"all-MiniLM-L6-v2"``), a model folder, or a TextEncoder.
        encoder_options: keyword options for :func:`~embedstack.load_encoder` (a name only).

    Raises:
        InvalidInput: a bad ``model`` argument, or (when embedding) an empty or non-str text.
        ModelNotFound: an unknown model name.

    Example:
        >>> from embedstack.integrations.langchain import EmbedstackEmbeddings
        >>> emb = EmbedstackEmbeddings("all-MiniLM-L6-v2")               # doctest: +SKIP
        >>> len(emb.embed_query("what do cats eat?"))                     # doctest: +SKIP
        384
    """

    def __init__(self, model: str | os.PathLike[str] | TextEncoder = DEFAULT_MODEL,
                 encoder_options: dict[str, Any] | None = None) -> None:  # fmt: skip
        self.encoder = resolve_encoder(model, encoder_options)

    @property
    def dim(self) -> int:
        """Dimension of the vectors."""
        return int(self.encoder.dim)

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """Embed documents (with the model's document prefix); ``[]`` for no texts."""
        items = validate_texts(texts)
        if not items:
            return []
        return np.asarray(self.encoder.encode_documents(items), dtype=np.float32).tolist()

    def embed_query(self, text: str) -> list[float]:
        """Embed one query (with the model's query prefix)."""
        if not isinstance(text, str):
            raise InvalidInput(f"a query must be str, got {type(text).__name__}")
        vec = np.asarray(self.encoder.encode_queries([text]), dtype=np.float32)[0]
        return list(vec.tolist())

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        """:meth:`embed_documents` in a worker thread, so the event loop keeps running."""
        return await asyncio.to_thread(self.embed_documents, texts)

    async def aembed_query(self, text: str) -> list[float]:
        """:meth:`embed_query` in a worker thread."""
        return await asyncio.to_thread(self.embed_query, text)


class LangChainEncoder:
    """Any LangChain ``Embeddings`` as an embedstack
    :class:`~embedstack.encoders.TextEncoder`, for an :class:`~embedstack.index.Index`.

    Its vectors are L2-normalized (an index ranks by dot product). Its ``model_id`` is
    recorded in the index's manifest and checked when the index is reopened: give each
    distinct model a distinct ``name``. :class:`EmbedstackEmbeddings` passes its own
    encoder instead (see :func:`as_text_encoder`).

    Args:
        embeddings: the LangChain embeddings.
        name: the model's name (default: the class name); the ``model_id`` adds a hash of
            it and the dimension.
        dim: the vector dimension; None embeds one probe text to find it.

    Raises:
        DimensionMismatch: the embeddings return vectors of another length than ``dim``.
        InvalidInput: they return a non-finite or all-zero vector.
    """

    def __init__(self, embeddings: Embeddings, *, name: str | None = None,
                 dim: int | None = None) -> None:  # fmt: skip
        if not isinstance(embeddings, Embeddings):
            raise InvalidInput(
                f"embeddings must be a LangChain Embeddings, got {type(embeddings).__name__}"
            )
        self.embeddings = embeddings
        self._name = name or type(embeddings).__name__
        self._dim = dim if dim is not None else len(embeddings.embed_query("dimension probe"))
        if self._dim < 1:
            raise DimensionMismatch(f"{self._name} returned {self._dim}-d vectors")
        digest = hashlib.sha256(f"{self._name}:{self._dim}".encode()).hexdigest()[:12]
        self._model_id = f"langchain:{self._name}@{digest}"

    @property
    def name(self) -> str:
        return self._name

    @property
    def model_id(self) -> str:
        return self._model_id

    @property
    def dim(self) -> int:
        return self._dim

    def _array(self, rows: list[list[float]], n: int) -> FloatArray:
        out = np.asarray(rows, dtype=np.float32)
        if out.ndim != 2 or out.shape != (n, self._dim):
            raise DimensionMismatch(
                f"{self._name} returned vectors of shape {out.shape}, expected ({n}, {self._dim})"
            )
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        if not np.isfinite(out).all() or (norms == 0).any():
            raise InvalidInput(f"{self._name} returned a non-finite or all-zero vector")
        return np.asarray(out / norms, dtype=np.float32)

    def encode(self, texts: Iterable[str]) -> FloatArray:
        """Same as :meth:`encode_documents` (LangChain has no symmetric encoding)."""
        return self.encode_documents(texts)

    def encode_documents(self, texts: Iterable[str]) -> FloatArray:
        items = validate_texts(texts)
        return self._array(self.embeddings.embed_documents(items), len(items))

    def encode_queries(self, texts: Iterable[str]) -> FloatArray:
        items = validate_texts(texts)
        return self._array([self.embeddings.embed_query(t) for t in items], len(items))


def as_text_encoder(embeddings: Embeddings) -> TextEncoder:
    """The embedstack encoder of ``embeddings``: its own encoder for
    :class:`EmbedstackEmbeddings`, a :class:`LangChainEncoder` wrapping anything else."""
    if isinstance(embeddings, EmbedstackEmbeddings):
        return embeddings.encoder
    return LangChainEncoder(embeddings)


def relevance(score: float) -> float:
    """A cosine similarity in ``[-1, 1]`` as a relevance in ``[0, 1]``."""
    return min(1.0, max(0.0, (score + 1.0) / 2.0)) if math.isfinite(score) else 0.0
