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

from collections.abc import Callable, Sequence

import numpy as np

from embedstack import fusion as fuse
from embedstack.errors import InvalidInput
from embedstack.index._types import RETRIEVERS, Hit
from embedstack.index.docstore import DocRow, DocStore, parse_metadata
from embedstack.index.fields.base import DocHits, Field, Retriever, Snapshot
from embedstack.index.protocols import SearchOptions

__all__ = ["active_retrievers", "check_queries", "search_many"]

_Ranked = list[tuple[int, float]]  # (doc key, score), best first
_ONE_QUERY = 4  # read whole documents with their ids up to this many candidates per hit


def check_queries(queries: Sequence[str]) -> list[str]:
    """The queries as a list, or :class:`InvalidInput` naming the first bad one."""
    if isinstance(queries, str | bytes):
        raise InvalidInput("pass a list of queries to search_many, or use search(query)")
    out = list(queries)
    for i, q in enumerate(out):
        if not isinstance(q, str):
            raise InvalidInput(f"query {i} must be str, got {type(q).__name__}")
        if not q.strip():
            raise InvalidInput(f"query {i} is empty or whitespace-only")
    return out


def active_retrievers(options: SearchOptions) -> tuple[str, ...]:
    """The retrievers a search runs, in fusion order (dense, sparse, bm25: weighted fusion
    of two gives ``alpha`` to the first, of three 1/3 each)."""
    if options.mode != "hybrid":
        return (options.mode,)
    chosen = options.retrievers or ("dense", "bm25")
    return tuple(r for r in RETRIEVERS if r in chosen)


_RETRIEVER_TYPES: dict[type, bool] = {}


def _ranks(field: Field) -> bool:
    """Whether ``field`` is a :class:`Retriever`: the protocol check (some 50 µs) runs
    once per field class."""
    known = _RETRIEVER_TYPES.get(type(field))
    if known is None:
        known = _RETRIEVER_TYPES[type(field)] = isinstance(field, Retriever)
    return known


def search_many(
    store: DocStore,
    snapshot: Snapshot,
    field: Callable[[str], Field],
    known_keys: set[str],
    queries: list[str],
    options: SearchOptions,
) -> list[list[Hit]]:
    """Search each query with the retrievers ``options`` names (:func:`active_retrievers`,
    looked up with ``field``); one list of at most ``options.k`` hits per query.

    Raises:
        InvalidInput: a retriever the index does not store, a bad filter or a filter on a
            key no document has.
    """
    retrievers: dict[str, Retriever] = {}
    for name in active_retrievers(options):
        retriever = field(name)
        if not _ranks(retriever):
            raise InvalidInput(f"the {name!r} field cannot rank documents")
        retrievers[name] = retriever  # type: ignore[assignment]
    allowed = None
    if options.filter:
        allowed = np.intersect1d(store.filter_keys(options.filter, known_keys), snapshot.live)
    if not queries:
        return []
    if len(snapshot.live if allowed is None else allowed) == 0:
        return [[] for _ in queries]
    k = options.k
    depth = k if options.mode != "hybrid" else max(options.candidates, k)
    found = {name: r.search(queries, snapshot, allowed, depth) for name, r in retrievers.items()}
    return _hits(store, len(queries), found, options, depth)


def _hits(
    store: DocStore,
    n_queries: int,
    found: dict[str, list[DocHits]],
    options: SearchOptions,
    depth: int,
) -> list[list[Hit]]:
    sources = [
        (name, [list(zip(h.keys.tolist(), h.scores.tolist(), strict=True)) for h in hits])
        for name, hits in found.items()
    ]
    keys = {key for _, lists in sources for ranked_list in lists for key, _ in ranked_list}
    # documents deleted meanwhile (readers) drop out. Few candidates (one retriever, k
    # plus ties): one query reads every field; many (fusion): ids now, the rest for the k
    rows = store.rows_by_key(keys) if len(keys) <= _ONE_QUERY * n_queries * options.k else None
    ids = store.ids_by_key(keys) if rows is None else {key: row[0] for key, row in rows.items()}
    out: list[list[tuple[int, float, dict[str, int], dict[str, float]]]] = []
    for qi in range(n_queries):
        per: dict[str, _Ranked] = {}
        for name, lists in sources:  # ties by doc id: independent of insertion order
            live = [(key, s) for key, s in lists[qi] if key in ids]
            # retrievers hand over the whole tie at the cut; keep the depth best by id
            per[name] = sorted(live, key=lambda item: (-item[1], ids[item[0]]))[:depth]
        ranks = {name: {key: r for r, (key, _) in enumerate(lst, 1)} for name, lst in per.items()}
        scores = {name: dict(lst) for name, lst in per.items()}
        if len(per) == 1:
            fused = next(iter(per.values()))
        else:
            by_id = {ids[key]: key for lst in per.values() for key, _ in lst}
            if options.fusion == "rrf":
                pairs = fuse.rrf(
                    [[ids[key] for key, _ in lst] for lst in per.values()], k=options.rrf_k
                )
            else:
                weights = None if len(per) == 2 else [1 / len(per)] * len(per)
                pairs = fuse.weighted([{ids[key]: s for key, s in lst} for lst in per.values()],
                                      alpha=options.alpha,
                                      normalization=options.normalization,
                                      weights=weights)  # fmt: skip
            fused = [(by_id[doc], s) for doc, s in pairs]
        out.append([
            (key, s, {n: r[key] for n, r in ranks.items() if key in r},
             {n: float(sc[key]) for n, sc in scores.items() if key in sc})
            for key, s in fused[: options.k]
        ])  # fmt: skip
    return _materialise(store, out, list(found.values()), rows)


def _materialise(
    store: DocStore,
    results: list[list[tuple[int, float, dict[str, int], dict[str, float]]]],
    located: list[list[DocHits]],
    rows: dict[int, DocRow] | None,
) -> list[list[Hit]]:
    """Hits with documents (``rows``, or read now when None) and best-chunk spans (from
    the first source that locates the document's best chunk: BM25 locates none)."""
    docs = store.rows_by_key({key for res in results for key, *_ in res}) if rows is None else rows
    best: list[dict[int, tuple[int, int]]] = []
    pairs: set[tuple[int, int]] = set()
    for qi in range(len(results)):
        wanted = {key for key, *_ in results[qi]}
        where: dict[int, tuple[int, int]] = {}
        for source in located:
            h = source[qi]
            for kk, s, r in zip(h.keys.tolist(), h.segments.tolist(), h.rows.tolist(),
                                strict=True):  # fmt: skip
                if s >= 0 and kk in wanted and kk not in where:
                    where[kk] = (s, r)
        best.append(where)
        pairs |= set(where.values())
    spans = store.chunk_spans(sorted(pairs)) if pairs else {}
    out: list[list[Hit]] = []
    for qi, res in enumerate(results):
        hits: list[Hit] = []
        for key, score, ranks, scores in res:
            doc = docs.get(key)
            if doc is None:
                continue
            span = spans.get(best[qi].get(key, (-1, -1)))
            hits.append(Hit(
                doc_id=doc[0], score=float(score), rank=len(hits) + 1,
                chunk=span[0] if span else None, span=(span[1], span[2]) if span else None,
                ranks=ranks, scores=scores, title=doc[1], text=doc[2],
                metadata=parse_metadata(doc[3]),
            ))  # fmt: skip
        out.append(hits)
    return out
