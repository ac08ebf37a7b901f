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
from embedstack.index.protocols import SearchOptions, SearchPlan

__all__ = [
    "active_retrievers",
    "by_id",
    "check_plan",
    "check_queries",
    "fuse_ranked",
    "search_many",
]

_Ranked = list[tuple[int, float]]  # (doc key, score), best first
_Result = tuple[int, float, dict[str, int], dict[str, float]]  # key, score, ranks, scores
_ONE_QUERY = 4  # read whole documents with their ids up to this many candidates per hit


def check_plan(pipeline: object) -> SearchPlan:
    """``pipeline`` when it is a built :class:`SearchPlan`, else :class:`InvalidInput`."""
    if not isinstance(pipeline, SearchPlan):
        raise InvalidInput(
            f"pipeline must be a built pipeline, got {type(pipeline).__name__}: build it "
            "with embedstack.pipeline.Pipeline(spec, index=index)"
        )
    return pipeline


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


def by_id(ranked: _Ranked, ids: dict[int, str], depth: int) -> _Ranked:
    """The first ``depth`` of a retriever's ``(key, score)`` list (best first, ties by key)
    whose key is in ``ids`` (documents deleted meanwhile drop out), ties by document id.

    Retrievers hand over the whole tie at the cut; ordering it by id keeps the ``depth``
    best independently of insertion order. A list whose scores strictly decrease has no
    tie to order: it is returned as it is, without sorting.
    """
    live = [item for item in ranked if item[0] in ids]
    if all(a[1] > b[1] for a, b in zip(live, live[1:], strict=False)):
        return live[:depth]
    return sorted(live, key=lambda item: (-item[1], ids[item[0]]))[:depth]


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
    out: list[list[_Result]] = []
    for qi in range(n_queries):
        per = {name: by_id(lists[qi], ids, depth) for name, lists in sources}
        out.append(fuse_ranked(per, ids, options))
    return _materialise(store, out, list(found.values()), rows)


def fuse_ranked(
    per: dict[str, _Ranked], ids: dict[int, str], options: SearchOptions
) -> list[_Result]:
    """The ``options.k`` best of one query's retriever lists (each ordered by :func:`by_id`),
    fused as ``options`` says, with each retriever's rank and score of every result. One
    list is the result as it is."""
    if len(per) == 1:
        ((name, ranked),) = per.items()
        return [(key, s, {name: r}, {name: s}) for r, (key, s) in enumerate(ranked[: options.k], 1)]
    ranks = {name: {key: r for r, (key, _) in enumerate(lst, 1)} for name, lst in per.items()}
    scores = {name: dict(lst) for name, lst in per.items()}
    by_doc = {ids[key]: key for lst in per.values() for key, _ in lst}
    if options.fusion == "rrf":
        pairs = fuse.rrf([[ids[key] for key, _ in lst] for lst in per.values()], k=options.rrf_k)
    else:
        weights = None if len(per) == 2 else [1 / len(per)] * len(per)
        pairs = fuse.weighted([{ids[key]: s for key, s in lst} for lst in per.values()],
                              alpha=options.alpha,
                              normalization=options.normalization,
                              weights=weights)  # fmt: skip
    return [
        (key, s, {n: r[key] for n, r in ranks.items() if key in r},
         {n: float(sc[key]) for n, sc in scores.items() if key in sc})
        for key, s in ((by_doc[doc], s) for doc, s in pairs[: options.k])
    ]  # fmt: skip


def _materialise(
    store: DocStore,
    results: list[list[_Result]],
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
            at = np.flatnonzero(h.segments >= 0)  # the hits whose best chunk is known
            if len(at) == 0:
                continue
            for kk, s, r in zip(h.keys[at].tolist(), h.segments[at].tolist(),
                                h.rows[at].tolist(), strict=True):  # fmt: skip
                if kk in wanted and kk not in where:
                    where[kk] = (s, r)
        best.append(where)
        pairs |= set(where.values())
    spans = store.chunk_spans(sorted(pairs)) if pairs else {}
    out: list[list[Hit]] = []
    for qi, res in enumerate(results):
        hits: list[Hit] = []
        where = best[qi]
        for key, score, ranks, scores in res:
            doc = docs.get(key)
            if doc is None:
                continue
            span = spans.get(where[key]) if key in where else None
            hits.append(Hit(
                doc_id=doc[0], score=float(score), rank=len(hits) + 1,
                chunk=span[0] if span else None, span=(span[1], span[2]) if span else None,
                ranks=ranks, scores=scores, title=doc[1], text=doc[2],
                metadata=parse_metadata(doc[3]),
            ))  # fmt: skip
        out.append(hits)
    return out
