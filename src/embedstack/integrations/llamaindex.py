"""A LlamaIndex embedding model over an embedstack encoder (extra ``llamaindex``).

Example:
    >>> from embedstack.integrations.llamaindex import EmbedstackEmbedding
    >>> from llama_index.core import Settings                             # doctest: +SKIP
    >>> Settings.embed_model = EmbedstackEmbedding("all-MiniLM-L6-v2")    # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import numpy as np

from embedstack.encoders import DEFAULT_MODEL, TextEncoder
from embedstack.encoders.base import validate_texts
from embedstack.errors import InvalidInput, require
from embedstack.integrations._encoders import resolve_encoder

require("llama_index.core", "llamaindex", "the LlamaIndex adapter")

from llama_index.core.base.embeddings.base import BaseEmbedding  # noqa: E402
from pydantic import PrivateAttr  # noqa: E402

__all__ = ["EmbedstackEmbedding"]


class EmbedstackEmbedding(BaseEmbedding):
    """A LlamaIndex ``BaseEmbedding`` backed by an embedstack encoder.

    Texts (nodes) are encoded with ``encode_documents`` and queries with ``encode_queries``,
    so the model's registered prefixes apply; vectors are L2-normalized. LlamaIndex batches
    texts by ``embed_batch_size`` (default 10); each batch is one encoder call.

    Args:
        model: a registry name, a model folder, or a TextEncoder.
        encoder_options: keyword options for :func:`~embedstack.load_encoder` (a name only).
        **kwargs: ``BaseEmbedding`` fields (``embed_batch_size``, ``callback_manager``, ...).

    Raises:
        InvalidInput: a bad ``model``, or (when embedding) an empty or non-str text.
        ModelNotFound: an unknown model name.
    """

    _encoder: TextEncoder = PrivateAttr()

    def __init__(self, model: str | os.PathLike[str] | TextEncoder = DEFAULT_MODEL,
                 encoder_options: dict[str, Any] | None = None, **kwargs: Any) -> None:  # fmt: skip
        encoder = resolve_encoder(model, encoder_options)
        kwargs.setdefault("model_name", encoder.name)
        super().__init__(**kwargs)
        self._encoder = encoder

    @classmethod
    def class_name(cls) -> str:
        return "EmbedstackEmbedding"

    @property
    def encoder(self) -> TextEncoder:
        """The embedstack encoder."""
        return self._encoder

    def _get_query_embedding(self, query: str) -> list[float]:
        if not isinstance(query, str):
            raise InvalidInput(f"a query must be str, got {type(query).__name__}")
        return list(np.asarray(self._encoder.encode_queries([query]), np.float32)[0].tolist())

    def _get_text_embedding(self, text: str) -> list[float]:
        return self._get_text_embeddings([text])[0]

    def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        items = validate_texts(texts)
        if not items:
            return []
        return np.asarray(self._encoder.encode_documents(items), np.float32).tolist()

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return await asyncio.to_thread(self._get_query_embedding, query)

    async def _aget_text_embedding(self, text: str) -> list[float]:
        return await asyncio.to_thread(self._get_text_embedding, text)

    async def _aget_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        return await asyncio.to_thread(self._get_text_embeddings, texts)
