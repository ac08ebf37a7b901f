"""The encoder behind an adapter: a registry name, a model folder or a TextEncoder; the
shell of an encoder that wraps another; and the query-vector encoder that lets an adapter
search an index by a raw vector."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

import numpy as np

from embedstack._typing import FloatArray
from embedstack.encoders import TextEncoder, load_encoder
from embedstack.errors import InvalidInput

__all__ = ["QueryVectors", "WrappedEncoder", "resolve_encoder"]


def resolve_encoder(model: str | os.PathLike[str] | TextEncoder,
                    options: dict[str, Any] | None = None) -> TextEncoder:  # fmt: skip
    """A TextEncoder from a registry name, folder or encoder object.

    Raises:
        InvalidInput: ``model`` is neither a name, a path nor a TextEncoder, or ``options``
            come with an encoder object.
        ModelNotFound: an unknown name.
    """
    if isinstance(model, str | os.PathLike):
        return load_encoder(os.fspath(model), **(options or {}))
    if isinstance(model, TextEncoder):
        if options:
            raise InvalidInput("encoder_options apply to a model name, not to an encoder object")
        return model
    raise InvalidInput(f"model must be a model name or a TextEncoder, got {type(model).__name__}")


class WrappedEncoder:
    """An encoder that is another one (``base``) in all but what a subclass overrides:
    identity (``name``, ``model_id``, ``dim``), the three encode methods and every other
    attribute (tokenizer, max_length, prefixes, config) are the wrapped model's, so
    ``Index.open`` and ``Index.create`` accept it as that model.
    """

    def __init__(self, base: TextEncoder) -> None:
        self.base = base

    def __getattr__(self, name: str) -> Any:  # tokenizer, max_length, prefixes, config
        return getattr(self.base, name)

    @property
    def name(self) -> str:
        return self.base.name

    @property
    def model_id(self) -> str:
        return self.base.model_id

    @property
    def dim(self) -> int:
        return int(self.base.dim)

    def encode(self, texts: Iterable[str]) -> FloatArray:
        return self.base.encode(texts)

    def encode_queries(self, texts: Iterable[str]) -> FloatArray:
        return self.base.encode_queries(texts)

    def encode_documents(self, texts: Iterable[str]) -> FloatArray:
        return self.base.encode_documents(texts)


class QueryVectors(WrappedEncoder):
    """An index's encoder whose ``encode_queries`` returns vectors given beforehand
    (:meth:`serve`), so that an index opened with it searches by a raw query vector with
    its own dense retriever (filters, MaxP over chunks, HNSW). Everything else (identity,
    documents, tokenizer) is the wrapped model's, so ``Index.open`` accepts it.
    """

    def __init__(self, base: TextEncoder) -> None:
        super().__init__(base)
        self.pending: FloatArray | None = None

    def serve(self, vector: FloatArray | None) -> None:
        """Answer the next query encoding with ``vector`` (``(dim,)``), None to stop."""
        self.pending = vector

    def encode_queries(self, texts: Iterable[str]) -> FloatArray:
        """The served vector once per text.

        Raises:
            InvalidInput: no vector was served (this encoder searches by vector only).
        """
        items = list(texts)
        if self.pending is None:
            raise InvalidInput("this index handle searches by vector only: serve() a vector")
        return np.repeat(self.pending[None, :].astype(np.float32), len(items), axis=0)
