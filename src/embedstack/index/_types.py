"""Value types of the :class:`~embedstack.index.Index` API: parameters, hits, statistics."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

from embedstack.errors import InvalidInput

__all__ = ["AddResult", "BM25Params", "Fusion", "Hit", "IndexStats", "Mode", "Normalization"]

Mode = Literal["dense", "bm25", "sparse", "hybrid"]
Fusion = Literal["rrf", "weighted"]
Normalization = Literal["minmax", "zscore"]
MODES: tuple[str, ...] = ("dense", "bm25", "sparse", "hybrid")
RETRIEVERS: tuple[str, ...] = ("dense", "sparse", "bm25")  # fusion order: alpha weighs the first
FUSIONS: tuple[str, ...] = ("rrf", "weighted")
ANN_CHOICES: tuple[str | None, ...] = (None, "hnsw")  # exact dense search, or a faiss HNSW graph


def check_ann(ann: object) -> None:
    """Raise :class:`InvalidInput` unless ``ann`` is one of :data:`ANN_CHOICES`."""
    if ann not in ANN_CHOICES:
        raise InvalidInput(f"unknown ann {ann!r}; choose None (exact search) or 'hnsw'")


@dataclass(frozen=True)
class BM25Params:
    """Okapi BM25 parameters (Robertson & Zaragoza 2009).

    Attributes:
        k1: term-frequency saturation, ``>= 0``; 1.2 is Lucene's and BEIR's default.
        b: length normalization, ``0 <= b <= 1``; 0.75 likewise.

    Raises:
        InvalidInput: values out of range.
    """

    k1: float = 1.2
    b: float = 0.75

    def __post_init__(self) -> None:
        ok = all(isinstance(x, int | float) and not isinstance(x, bool) for x in (self.k1, self.b))
        if not (ok and math.isfinite(self.k1) and self.k1 >= 0 and 0 <= self.b <= 1):
            raise InvalidInput(f"need k1 >= 0 and 0 <= b <= 1, got k1={self.k1!r}, b={self.b!r}")


@dataclass(frozen=True)
class Hit:
    """One search result.

    Attributes:
        doc_id: the document's id.
        score: the score the results are ranked by (cosine for ``dense``, BM25 for
            ``bm25``, the SPLADE dot product for ``sparse``, the fused score for ``hybrid``).
        rank: 1-based position in the results.
        chunk: number of the best-matching chunk (0-based) by the dense score, else by the
            sparse score; None when neither is known for the document (``bm25`` mode, or a
            hybrid hit found by BM25 only).
        span: ``(start, end)`` character offsets of that chunk in :attr:`text`, or None.
        ranks: 1-based rank of the document in each retriever's candidates
            (``{"dense": 3, "bm25": 1}``, ``"sparse"`` too when fused); a retriever that did
            not return it is absent.
        scores: each retriever's raw score for the document, same keys as :attr:`ranks`.
        title: the document's title (``""`` when it has none).
        text: the document's text.
        metadata: the document's metadata.
    """

    doc_id: str
    score: float
    rank: int
    chunk: int | None
    span: tuple[int, int] | None
    ranks: dict[str, int]
    scores: dict[str, float]
    title: str
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class AddResult:
    """What an :meth:`~embedstack.index.Index.add` or ``upsert`` call did.

    Attributes:
        added: documents whose id was new.
        updated: documents that replaced a document with the same id and different content.
        unchanged: documents identical to the stored one (same content hash); not re-embedded.
        chunks: chunks embedded by this call.
    """

    added: int = 0
    updated: int = 0
    unchanged: int = 0
    chunks: int = 0


@dataclass(frozen=True)
class IndexStats:
    """Size and configuration of an index.

    Attributes:
        n_docs: live documents.
        n_chunks: live chunks (dense vectors that can be returned).
        n_deleted: deleted or replaced documents whose data is still on disk; :meth:`compact`
            reclaims them.
        bytes: bytes on disk by component: ``{"sqlite", "dense", "lexical", "total"}``, plus
            ``"sparse"`` and ``"colbert"`` for indexes that store them.
        segments: chunk segments (dense files, and SPLADE and ColBERT ones under the same
            numbers): O(log n_chunks) under the tiered merge policy of writes.
        model: the encoder's name; ``model_id`` the identity of its weights.
        model_id: see ``model``.
        dim: stored vector dimension.
        precision: ``"float32"``, ``"int8"`` or ``"binary"``.
    """

    n_docs: int
    n_chunks: int
    n_deleted: int
    bytes: dict[str, int]
    segments: int
    model: str
    model_id: str
    dim: int
    precision: str

    @property
    def bytes_total(self) -> int:
        """Total bytes on disk (``bytes["total"]``)."""
        return self.bytes["total"]

    def as_dict(self) -> dict[str, Any]:
        """The statistics as a JSON-ready dict (``bytes`` flattened to ``bytes_<part>``)."""
        out: dict[str, Any] = {k: v for k, v in self.__dict__.items() if k != "bytes"}
        out.update({f"bytes_{part}": n for part, n in self.bytes.items()})
        return out


def check_choice(value: object, name: str, choices: tuple[str, ...]) -> None:
    """Raise :class:`InvalidInput` unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise InvalidInput(f"unknown {name} {value!r}; choose one of {', '.join(choices)}")
