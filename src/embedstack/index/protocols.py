"""The two seams above the index: what a pipeline searches, and how search options travel.

* :class:`SearchOptions` — one frozen, validated object for every search knob, shared by
  Python, the CLI and the server (one vocabulary; see ``docs/architecture.md``).
* :class:`Searchable` — what :mod:`embedstack.pipeline` needs from an index. The local
  :class:`~embedstack.index.Index` implements it; an external engine (PostgreSQL, Milvus)
  implements the same methods and every pipeline runs on it unchanged.
* :class:`SearchPlan` — what ``Index.search(query, pipeline=...)`` accepts: any object with a
  ``run(index, query, k, filter=...)`` method, such as :class:`~embedstack.pipeline.Pipeline`.
  The index never imports the pipeline package; the pipeline calls down into the index.

Vocabulary (the same words in Python, CLI flags and server JSON):

* ``k`` — how many results the caller gets back.
* ``candidates`` — how many documents each retriever hands to fusion in ``mode="hybrid"``.
* ``top`` — a pipeline stage's depth (``bm25(top=100)``, ``rerank(top=20)``).
* ``top_n`` — only in the rerank API (Cohere/Jina's name for ``k``).
* ``mode`` — which of the index's own retrievers answer: ``dense``, ``bm25``, ``sparse`` or
  ``hybrid`` (fused). The CLI's ``--mode`` and the server's ``"mode"`` mean the same.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np

from embedstack.errors import InvalidInput
from embedstack.fusion import NORMALIZATIONS
from embedstack.index._types import FUSIONS, MODES, RETRIEVERS, Hit, check_choice

__all__ = ["DEFAULT_MODE", "SearchOptions", "SearchPlan", "Searchable"]

#: The default search mode everywhere (Python, CLI, server). Hybrid (BM25 + dense fused by
#: RRF) is the robust choice on collections we have not measured: BEIR (Thakur et al. 2021)
#: shows BM25 ahead of dense models out of domain on many tasks and dense ahead in domain,
#: and their fusion is at or near the better of the two on nearly all (Bruch et al. 2023;
#: Pyserini's hybrid runs). Every index stores both, so the default costs no extra set-up.
DEFAULT_MODE: Literal["hybrid"] = "hybrid"


@dataclass(frozen=True)
class SearchOptions:
    """Every search knob of an index, validated once.

    Attributes:
        mode: ``"dense"`` (cosine over chunk vectors, max per document), ``"bm25"``,
            ``"sparse"`` (SPLADE dot product over chunk postings, max per document; indexes
            created with ``sparse=``) or ``"hybrid"`` (``retrievers``, fused; the default,
            see :data:`DEFAULT_MODE`).
        k: results returned, ``>= 1``.
        filter: a metadata filter (:mod:`embedstack.index.filters`), or None. It applies
            before top-k, so ``k`` results come back whenever ``k`` documents match; a key
            no document has is an error.
        fusion: hybrid: ``"rrf"`` (Cormack et al. 2009) or ``"weighted"`` (Bruch et al. 2023).
        alpha: weighted fusion of two retrievers: weight of the first in fusion order
            (dense, sparse, bm25), in ``[0, 1]``; three are weighted 1/3 each.
        rrf_k: RRF's constant, ``> 0`` (60, as in the paper).
        candidates: hybrid: documents each retriever hands to fusion, ``>= 1`` (at least
            ``k`` are always taken; see :mod:`embedstack.index.search` for why 100).
        normalization: weighted fusion: ``"minmax"`` or ``"zscore"``.
        retrievers: hybrid: which of ``"bm25"``, ``"dense"``, ``"sparse"`` to fuse; None is
            ``("dense", "bm25")``.

    Raises:
        InvalidInput: any value out of range or not one of its choices.
    """

    mode: str = DEFAULT_MODE
    k: int = 10
    filter: dict[str, Any] | None = None
    fusion: str = "rrf"
    alpha: float = 0.5
    rrf_k: float = 60.0
    candidates: int = 100
    normalization: str = "minmax"
    retrievers: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        check_choice(self.mode, "mode", MODES)
        check_choice(self.fusion, "fusion", FUSIONS)
        check_choice(self.normalization, "normalization", NORMALIZATIONS)
        for name in ("k", "candidates"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidInput(f"{name} must be an integer >= 1, got {value!r}")
        a = self.alpha
        if isinstance(a, bool) or not isinstance(a, int | float) or not 0 <= a <= 1:
            raise InvalidInput(f"alpha must be a number in [0, 1], got {a!r}")
        r = self.rrf_k
        if (
            isinstance(r, bool)
            or not isinstance(r, int | float)
            or not (math.isfinite(r) and r > 0)
        ):
            raise InvalidInput(f"rrf_k must be a positive number, got {r!r}")
        if self.filter is not None and not isinstance(self.filter, dict):
            raise InvalidInput(f"filter must be a dict, got {type(self.filter).__name__}")
        if self.retrievers is not None:
            if isinstance(self.retrievers, str | bytes):
                raise InvalidInput("retrievers must be a list such as ['bm25', 'dense']")
            chosen = tuple(self.retrievers)
            for name in chosen:
                check_choice(name, "retriever", RETRIEVERS)
            if not chosen or len(set(chosen)) != len(chosen):
                raise InvalidInput(f"retrievers must name distinct retrievers, got {list(chosen)}")
            if self.mode != "hybrid":
                raise InvalidInput(f"retrievers applies to mode='hybrid' only, not {self.mode!r}")
            object.__setattr__(self, "retrievers", chosen)

    def with_(self, **changes: Any) -> SearchOptions:
        """A copy with ``changes`` applied (and validated).

        Raises:
            InvalidInput: an unknown option name, or a value :class:`SearchOptions` rejects.
        """
        names = {f.name for f in fields(SearchOptions)}
        unknown = sorted(set(changes) - names)
        if unknown:
            raise InvalidInput(
                f"unknown search option(s) {unknown}; SearchOptions takes {sorted(names)}"
            )
        return replace(self, **changes)

    @classmethod
    def build(cls, options: SearchOptions | None = None, **changes: Any) -> SearchOptions:
        """``options`` (default: all defaults) with ``changes`` applied: what a method
        taking ``options=None, **kwargs`` searches with.

        Raises:
            InvalidInput: ``options`` not a SearchOptions, or as :meth:`with_`.
        """
        if options is None:
            options = cls()
        elif not isinstance(options, SearchOptions):
            raise InvalidInput(f"options must be a SearchOptions, got {type(options).__name__}")
        return options.with_(**changes) if changes else options


@runtime_checkable
class Searchable(Protocol):
    """What a pipeline needs from an index (local or an external engine)."""

    def search_many(
        self, queries: Sequence[str], options: SearchOptions | None = None, **kwargs: Any
    ) -> list[list[Hit]]:
        """One list of hits per query, by ``options`` (or the same fields as keywords)."""
        ...

    def dense_scores(self, query: str, doc_ids: Sequence[str]) -> np.ndarray:
        """``(len(doc_ids),)`` float32 stored-vector scores, ``-inf`` for unknown ids."""
        ...

    def colbert_scores(
        self, query: str, doc_ids: Sequence[str], *, chunks: Literal["all", "first"] = "all"
    ) -> np.ndarray:
        """Late-interaction scores over stored token vectors (or split-encoder states)."""
        ...

    @property
    def colbert_model(self) -> str | None:
        """The model_id of the stored token vectors, or None."""
        ...

    def get(self, doc_id: str) -> dict[str, Any] | None:
        """The stored document, or None."""
        ...


@runtime_checkable
class SearchPlan(Protocol):
    """Anything ``Index.search(query, pipeline=plan)`` can run: a built pipeline."""

    def run(
        self, index: Any, query: str, k: int | None = None, *, filter: dict[str, Any] | None = None
    ) -> list[Hit]:
        """The hits of ``query`` on ``index``, best first."""
        ...
