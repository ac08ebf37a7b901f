"""Search over an :class:`~embedstack.index.Index`: dense, BM25, sparse and hybrid modes.

Hybrid retrieval takes each retriever's top ``candidates`` documents (default 100) and
fuses them with :func:`embedstack.fusion.rrf` or :func:`embedstack.fusion.weighted`. A depth
of 100 per retriever is where fusion's gains saturate in the published analyses: Bruch,
Gai & Ingber (2023) fuse the top 1000 but show that convex and RRF fusion quality at
nDCG@10 depends almost only on the head of each list, and the BEIR hybrid baselines of
Thakur et al. (2021) and Lin et al.'s Pyserini hybrid runs re-rank or fuse top-100/1000
lists; the top 100 already hold over 90 % of what BM25 and dense retrievers find at 1000
(BEIR recall@100 vs recall@1000), at a tenth of the cost.

Indexes with SPLADE postings (:mod:`embedstack.index.sparse`) add a ``"sparse"`` retriever,
usable alone (``mode="sparse"``) or fused (``retrievers=("bm25", "dense", "sparse")``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from embedstack import fusion as fuse
from embedstack import vectors
from embedstack._typing import IntArray
from embedstack.errors import InvalidInput
from embedstack.index import dense
from embedstack.index import sparse as sparse_index
from embedstack.index._types import FUSIONS, MODES, RETRIEVERS, Hit, check_choice
from embedstack.index._validate import check_fraction, check_positive_int

if TYPE_CHECKING:
    from embedstack.index.core import Index

__all__ = ["search_many"]

_Ranked = list[tuple[int, float]]  # (doc key, score), best first


def _check_queries(queries: Sequence[str]) -> list[str]:
    if isinstance(queries, str | bytes):
        raise InvalidInput("pass a list of queries to search_many, or use search(query)")
    out = list(queries)
    for i, q in enumerate(out):
        if not isinstance(q, str):
            raise InvalidInput(f"query {i} must be str, got {type(q).__name__}")
        if not q.strip():
            raise InvalidInput(f"query {i} is empty or whitespace-only")
    return out


def search_many(
    index: Index,
    queries: Sequence[str],
    *,
    mode: str = "dense",
    k: int = 10,
    filter: dict[str, Any] | None = None,  # noqa: A002 - the public argument name
    fusion: str = "rrf",
    alpha: float = 0.5,
    rrf_k: float = 60,
    candidates: int = 100,
    normalization: str = "minmax",
    retrievers: Sequence[str] | None = None,
) -> list[list[Hit]]:
    """Search each query; one list of at most ``k`` :class:`Hit` per query.

    Args:
        index: the index.
        queries: non-blank query strings.
        mode: ``"dense"`` (cosine over chunk vectors, max per document), ``"bm25"``,
            ``"sparse"`` (SPLADE postings, max per document), or ``"hybrid"`` (fused).
        k: results per query, ``>= 1``.
        filter: a metadata filter (:mod:`embedstack.index.filters`); applied before top-k,
            so ``k`` results come back whenever ``k`` documents match.
        fusion: ``"rrf"`` (Cormack et al. 2009) or ``"weighted"`` (Bruch et al. 2023).
        alpha: weighted fusion: weight of the dense scores (BM25 gets ``1 - alpha``).
        rrf_k: RRF's constant.
        candidates: hybrid: documents taken from each retriever before fusion (at least
            ``k`` are always taken).
        normalization: weighted fusion: ``"minmax"`` or ``"zscore"``.
        retrievers: hybrid: the retrievers to fuse, from ``"bm25"``, ``"dense"`` and
            ``"sparse"`` (default bm25 + dense). They are fused in the order dense, sparse,
            bm25: weighted fusion of two gives ``alpha`` to the first, of three 1/3 each.

    Raises:
        InvalidInput: an empty query, ``k <= 0``, an unknown mode, fusion, retriever or
            normalization, a bad filter or a filter on a key no document has, or
            ``"sparse"`` on an index without sparse postings.
    """
    qs = _check_queries(queries)
    check_positive_int(k, "k")
    check_positive_int(candidates, "candidates")
    check_choice(mode, "mode", MODES)
    check_choice(fusion, "fusion", FUSIONS)
    check_choice(normalization, "normalization", fuse.NORMALIZATIONS)
    check_fraction(alpha, "alpha")
    if isinstance(rrf_k, bool) or not isinstance(rrf_k, int | float) or not rrf_k > 0:
        raise InvalidInput(f"rrf_k must be a positive number, got {rrf_k!r}")
    active = _active(mode, retrievers)
    if "sparse" in active:
        sparse_index.encoder_of(index)  # no sparse postings: a clear error before any work
    st = index._state
    if filter is not None:
        if not isinstance(filter, dict):
            raise InvalidInput(f"filter must be a dict, got {type(filter).__name__}")
        allowed = np.intersect1d(index._store.filter_keys(filter, index._known_keys), st.live)
    else:
        allowed = st.live
    if not qs:
        return []
    if len(allowed) == 0:
        return [[] for _ in qs]
    depth = k if mode != "hybrid" else max(candidates, k)
    filtered = filter is not None
    dense_hits = _dense(index, qs, allowed, filtered, depth) if "dense" in active else None
    sparse_hits = _sparse(index, qs, allowed, filtered, depth) if "sparse" in active else None
    bm25: list[_Ranked] | None = None
    if "bm25" in active:
        lex_allowed = None if filter is None and st.lexical_exact else allowed
        res = index._lexical.search_many(qs, depth, allowed=lex_allowed)
        bm25 = [list(zip(keys.tolist(), scores.tolist(), strict=True)) for scores, keys in res]
    return _hits(index, len(qs), dense_hits, sparse_hits, bm25, k, fusion, alpha, rrf_k,
                 normalization)  # fmt: skip


def _active(mode: str, retrievers: Sequence[str] | None) -> tuple[str, ...]:
    """The retrievers a search runs, in fusion order."""
    if mode != "hybrid":
        if retrievers is not None:
            raise InvalidInput(f"retrievers applies to mode='hybrid' only, not {mode!r}")
        return (mode,)
    if retrievers is None:
        return ("dense", "bm25")
    if isinstance(retrievers, str | bytes):
        raise InvalidInput("retrievers must be a list such as ['bm25', 'dense', 'sparse']")
    chosen = list(retrievers)
    for name in chosen:
        check_choice(name, "retriever", RETRIEVERS)
    if not chosen or len(set(chosen)) != len(chosen):
        raise InvalidInput(f"retrievers must name distinct retrievers, got {chosen}")
    return tuple(r for r in RETRIEVERS if r in chosen)


def _sparse(
    index: Index, queries: list[str], allowed: IntArray, filtered: bool, depth: int
) -> list[dense.DocHits]:
    q = sparse_index.encoder_of(index).encode_queries(queries)
    st = index._state
    if index._sparse is None:
        raise InvalidInput(f"{index.path} has no sparse postings")
    masks = dense.row_masks(st.segments, allowed) if filtered else index.live_masks()
    segments = index._sparse.get(st.segments)
    keys = [seg.row_keys for seg in st.segments]
    return sparse_index.search_docs(segments, keys, masks, q, depth)


def _dense(
    index: Index, queries: list[str], allowed: IntArray, filtered: bool, depth: int
) -> list[dense.DocHits]:
    q = np.asarray(index.encoder.encode_queries(queries), dtype=np.float32)
    if q.shape[1] != index.dim:
        q = vectors.truncate(q, index.dim)
    st = index._state
    masks = dense.row_masks(st.segments, allowed) if filtered else index.live_masks()
    if index.ann == "hnsw":
        from embedstack.index.ann import ann_search

        return ann_search(index, q, masks, depth)
    return dense.search_docs(st.segments, q, masks, depth)


def _hits(
    index: Index,
    n_queries: int,
    dense_hits: list[dense.DocHits] | None,
    sparse_hits: list[dense.DocHits] | None,
    bm25: list[_Ranked] | None,
    k: int,
    fusion: str,
    alpha: float,
    rrf_k: float,
    normalization: str,
) -> list[list[Hit]]:
    def ranked(hits: list[dense.DocHits] | None) -> list[_Ranked] | None:
        if hits is None:
            return None
        return [list(zip(h.keys.tolist(), h.scores.tolist(), strict=True)) for h in hits]

    sources = (("dense", ranked(dense_hits)), ("sparse", ranked(sparse_hits)), ("bm25", bm25))
    keys = {key for _, lists in sources for ranked_list in lists or [] for key, _ in ranked_list}
    ids = index._store.ids_by_key(keys)  # documents deleted meanwhile (readers) drop out
    out: list[list[tuple[int, float, dict[str, int], dict[str, float]]]] = []
    for qi in range(n_queries):
        per: dict[str, _Ranked] = {}
        for name, lists in sources:
            if lists is not None:  # ties by doc id: independent of insertion order
                live = [(key, s) for key, s in lists[qi] if key in ids]
                per[name] = sorted(live, key=lambda item: (-item[1], ids[item[0]]))
        ranks = {name: {key: r for r, (key, _) in enumerate(lst, 1)} for name, lst in per.items()}
        scores = {name: dict(lst) for name, lst in per.items()}
        if len(per) == 1:
            fused = next(iter(per.values()))
        else:
            by_id = {ids[key]: key for lst in per.values() for key, _ in lst}
            if fusion == "rrf":
                pairs = fuse.rrf([[ids[key] for key, _ in lst] for lst in per.values()], k=rrf_k)
            else:
                weights = None if len(per) == 2 else [1 / len(per)] * len(per)
                pairs = fuse.weighted([{ids[key]: s for key, s in lst} for lst in per.values()],
                                      alpha=alpha, normalization=normalization,
                                      weights=weights)  # fmt: skip
            fused = [(by_id[doc], s) for doc, s in pairs]
        out.append([
            (key, s, {n: r[key] for n, r in ranks.items() if key in r},
             {n: float(sc[key]) for n, sc in scores.items() if key in sc})
            for key, s in fused[:k]
        ])  # fmt: skip
    located = [hits for hits in (dense_hits, sparse_hits) if hits is not None]
    return _materialise(index, out, located)


def _materialise(
    index: Index,
    results: list[list[tuple[int, float, dict[str, int], dict[str, float]]]],
    located: list[list[dense.DocHits]],
) -> list[list[Hit]]:
    """Hits with documents and best-chunk spans (from the first source that has the doc)."""
    docs = index._store.docs_by_key({key for res in results for key, *_ in res})
    best: list[dict[int, tuple[int, int]]] = []
    pairs: set[tuple[int, int]] = set()
    for qi in range(len(results)):
        wanted = {key for key, *_ in results[qi]}
        where: dict[int, tuple[int, int]] = {}
        for source in located:
            h = source[qi]
            for kk, s, r in zip(h.keys.tolist(), h.segments.tolist(), h.rows.tolist(),
                                strict=True):  # fmt: skip
                if kk in wanted and kk not in where:
                    where[kk] = (s, r)
        best.append(where)
        pairs |= set(where.values())
    spans = index._store.chunk_spans(sorted(pairs))
    out: list[list[Hit]] = []
    for qi, res in enumerate(results):
        hits: list[Hit] = []
        for key, score, ranks, scores in res:
            doc = docs.get(key)
            if doc is None:
                continue
            span = spans.get(best[qi].get(key, (-1, -1)))
            hits.append(Hit(
                doc_id=doc["id"], score=float(score), rank=len(hits) + 1,
                chunk=span[0] if span else None, span=(span[1], span[2]) if span else None,
                ranks=ranks, scores=scores, title=doc["title"], text=doc["text"],
                metadata=doc["metadata"],
            ))  # fmt: skip
        out.append(hits)
    return out
