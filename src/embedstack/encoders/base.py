"""The interface every text encoder offers, and input validation shared by all of them."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from typing import Protocol, TypeVar, runtime_checkable

import numpy as np

from embedstack._typing import FloatArray
from embedstack.errors import InvalidInput

T = TypeVar("T")

__all__ = ["TextEncoder", "batched", "validate_texts"]

logger = logging.getLogger("embedstack")


@runtime_checkable
class TextEncoder(Protocol):
    """A dense text encoder: texts in, ``(n, dim) float32`` L2-normalized vectors out."""

    @property
    def name(self) -> str:
        """Registry name or path of the model."""
        ...

    @property
    def model_id(self) -> str:
        """Stable identity of the weights (name plus weights hash): stored in indexes."""
        ...

    @property
    def dim(self) -> int:
        """Dimension of the full embedding."""
        ...

    def encode(self, texts: Iterable[str]) -> FloatArray:
        """Encode texts symmetrically (no prefix)."""
        ...

    def encode_queries(self, texts: Iterable[str]) -> FloatArray:
        """Encode search queries, with the model's query prefix."""
        ...

    def encode_documents(self, texts: Iterable[str]) -> FloatArray:
        """Encode documents, with the model's document prefix."""
        ...


def validate_texts(texts: Iterable[object], *, start: int = 0) -> list[str]:
    """Check that every item is a non-blank ``str`` encodable as UTF-8.

    Args:
        texts: The items to check.
        start: Index of the first item in the caller's whole input (for messages).

    Raises:
        InvalidInput: naming the first bad item's position and what is wrong with it.
    """
    if isinstance(texts, str | bytes):
        raise InvalidInput("pass a list of texts, not a single string: encode([text])")
    if texts is None:
        raise InvalidInput("texts is None: pass a list of strings")
    out: list[str] = []
    for offset, text in enumerate(texts):
        position = start + offset
        if not isinstance(text, str):
            raise InvalidInput(
                f"text {position} is {type(text).__name__}, not str: pass strings only"
            )
        if not text.strip():
            raise InvalidInput(
                f"text {position} is empty or whitespace-only: drop it or replace it with content"
            )
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise InvalidInput(
                f"text {position} holds an invalid surrogate at character {exc.start}: decode "
                "your input with errors='replace' or strip lone surrogates"
            ) from exc
        out.append(text)
    return out


def batched(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Yield lists of at most ``size`` items, streaming."""
    chunk: list[T] = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def empty(dim: int) -> FloatArray:
    """A ``(0, dim) float32`` array."""
    return np.zeros((0, dim), dtype=np.float32)
