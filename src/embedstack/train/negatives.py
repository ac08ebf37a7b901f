"""Hard-negative mining for reranker training: BM25 and dense candidates, minus likely positives.

For each training query the candidates are the top ``depth`` documents of BM25
(:class:`~embedstack.index.lexical.LexicalIndex`, Lucene BM25) and of exact dense search
(:func:`embedstack.vectors.topk` over a bi-encoder's embeddings), interleaved rank by rank
(BM25 #1, dense #1, BM25 #2, ...) so both retrievers' mistakes are represented, as in the
hard negatives of RocketQA (Qu et al. 2021) and sentence-transformers' ``mine_hard_negatives``.

Negatives are chosen per training group ``(query, positive)``, and two kinds of candidates
are never negatives:

* judged positives of the query (qrels score > 0);
* **likely false negatives**: unjudged documents the dense model scores almost as high as
  the group's positive. With ``s⁺`` the dense score of that positive, a candidate scoring
  more than ``threshold = s⁺ - (1 - max_ratio) * |s⁺|`` is dropped (for ``s⁺ > 0`` this is
  ``max_ratio * s⁺``; the default ``max_ratio = 0.95`` drops candidates within 5 % of the
  positive, sentence-transformers' ``relative_margin=0.05``). Sparse judgements (SciFact
  judges ~1 document per query) leave many relevant documents unjudged; training them as
  negatives teaches the reranker to push relevant documents down.

The threshold is per positive, not per query: on densely judged sets (NFCorpus judges ~40
documents per training query, many of them only indirectly relevant) a per-query threshold
taken from the weakest positive sits so low that it drops nearly every candidate, while a
strong positive still has many weaker, safely negative candidates to be contrasted with.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from embedstack import vectors
from embedstack.encoders.base import TextEncoder
from embedstack.errors import InvalidInput

__all__ = ["MinedNegatives", "false_negative_threshold", "mine_hard_negatives", "select_negatives"]

logger = logging.getLogger("embedstack")


@dataclass(frozen=True)
class MinedNegatives:
    """The result of :func:`mine_hard_negatives`.

    Attributes:
        negatives: ``{query_id: {positive_id: [doc_id, ...]}}`` hard negatives of each
            (query, positive) group, best-ranked first.
        dropped: Candidates dropped as likely false negatives (over all groups).
        sources: ``{"bm25": n, "dense": n}`` negatives contributed by each retriever (a
            document both found counts for the one that ranked it first in the interleave).
    """

    negatives: dict[str, dict[str, list[str]]]
    dropped: int
    sources: dict[str, int]


def false_negative_threshold(positive_score: float, max_ratio: float) -> float:
    """Dense score above which a candidate counts as a likely false negative.

    ``positive_score - (1 - max_ratio) * |positive_score|``: ``max_ratio * positive_score``
    for positive scores, and still below the positive score when it is negative.

    Example:
        >>> round(false_negative_threshold(0.8, 0.95), 6)
        0.76
    """
    return float(positive_score - (1.0 - max_ratio) * abs(positive_score))


def select_negatives(
    ranked: Sequence[Sequence[str]],
    positives: Collection[str],
    dense_scores: Mapping[str, float] | None,
    positive_score: float | None,
    *,
    per_query: int,
    max_ratio: float = 0.95,
) -> tuple[list[str], list[int], int]:
    """Pick the negatives of one (query, positive) group from ranked candidate lists.

    Args:
        ranked: One ranked list of doc ids per retriever; they are interleaved rank by rank.
        positives: The query's judged positives (never returned).
        dense_scores: Dense score of each candidate; None disables the false-negative rule.
        positive_score: The dense score of the group's positive (None disables the rule).
        per_query: How many negatives to return at most.
        max_ratio: See :func:`false_negative_threshold`.

    Returns:
        ``(negatives, source, dropped)``: the chosen doc ids, the index of the list each came
        from, and how many candidates the false-negative rule dropped.

    Example:
        >>> select_negatives([["p", "a", "b"], ["c", "a"]], {"p"}, None, None, per_query=3)
        (['c', 'a', 'b'], [1, 0, 0], 0)
    """
    threshold = (
        false_negative_threshold(positive_score, max_ratio)
        if dense_scores is not None and positive_score is not None
        else None
    )
    chosen: list[str] = []
    source: list[int] = []
    seen = set(positives)
    dropped = 0
    depth = max((len(r) for r in ranked), default=0)
    for rank in range(depth):
        for which, docs in enumerate(ranked):
            if len(chosen) >= per_query:
                return chosen, source, dropped
            if rank >= len(docs) or docs[rank] in seen:
                continue
            doc = docs[rank]
            seen.add(doc)
            if threshold is not None and dense_scores is not None and doc in dense_scores:
                if dense_scores[doc] > threshold:
                    dropped += 1
                    continue
            chosen.append(doc)
            source.append(which)
    return chosen, source, dropped


def _bm25_candidates(texts: Sequence[str], queries: Sequence[str], depth: int) -> list[list[int]]:
    from embedstack.index.lexical import LexicalIndex

    with tempfile.TemporaryDirectory(prefix="embedstack-mine-") as tmp:
        index = LexicalIndex.create(f"{tmp}/bm25")
        index.add(np.arange(len(texts), dtype=np.int64), list(texts))
        results = index.search_many(list(queries), k=depth)
    return [keys.tolist() for _, keys in results]


def mine_hard_negatives(
    queries: Mapping[str, str],
    positives: Mapping[str, Collection[str]],
    doc_ids: Sequence[str],
    doc_texts: Sequence[str],
    *,
    encoder: TextEncoder | None,
    per_query: int = 7,
    depth: int = 30,
    max_ratio: float = 0.95,
    use_bm25: bool = True,
) -> MinedNegatives:
    """Mine hard negatives for each query from BM25 and dense retrieval over the corpus.

    Args:
        queries: ``{query_id: text}``.
        positives: ``{query_id: doc ids judged relevant}``; every query needs at least one
            positive present in ``doc_ids``.
        doc_ids: Corpus ids, parallel to ``doc_texts``.
        doc_texts: Corpus texts (title + text).
        encoder: Bi-encoder for dense candidates and the false-negative rule; None uses
            BM25 only and disables the rule.
        per_query: Negatives per (query, positive) group (at most).
        depth: Candidates taken from each retriever.
        max_ratio: False-negative rule (see the module docstring); 1.0 drops only candidates
            scoring above the weakest positive.
        use_bm25: Take BM25 candidates (False: dense only).

    Returns:
        A :class:`MinedNegatives`.

    Raises:
        InvalidInput: bad sizes or parameters, no retriever enabled, or a query without a
            positive in the corpus.
    """
    if len(doc_ids) != len(doc_texts):
        raise InvalidInput(f"{len(doc_ids)} doc ids for {len(doc_texts)} texts")
    if per_query < 1 or depth < 1:
        raise InvalidInput(f"per_query and depth must be >= 1, got {per_query}, {depth}")
    if not 0.0 < max_ratio <= 1.0:
        raise InvalidInput(f"max_ratio must be in (0, 1], got {max_ratio}")
    if encoder is None and not use_bm25:
        raise InvalidInput("no retriever to mine with: pass an encoder or use_bm25=True")
    row = {doc: i for i, doc in enumerate(doc_ids)}
    qids = list(queries)
    for qid in qids:
        if not any(p in row for p in positives.get(qid, ())):
            raise InvalidInput(f"query {qid!r} has no judged positive in the corpus")
    texts = [queries[q] for q in qids]
    ranked: list[list[list[str]]] = [[] for _ in qids]
    if use_bm25:
        for i, keys in enumerate(_bm25_candidates(doc_texts, texts, depth)):
            ranked[i].append([doc_ids[k] for k in keys])
    q_vecs = d_vecs = None
    if encoder is not None:
        d_vecs = encoder.encode_documents(list(doc_texts))
        q_vecs = encoder.encode_queries(texts)
        _, top = vectors.topk(q_vecs, d_vecs, min(depth, len(doc_ids)), metric="dot")
        for i, idx in enumerate(top):
            ranked[i].append([doc_ids[k] for k in idx])
    negatives: dict[str, dict[str, list[str]]] = {}
    dropped = 0
    counts = [0, 0]
    names = (["bm25"] if use_bm25 else []) + (["dense"] if encoder is not None else [])
    for i, qid in enumerate(qids):
        pos = sorted(p for p in positives[qid] if p in row)
        per_positive: dict[str, list[str]] = {}
        if q_vecs is None or d_vecs is None:  # no dense scores: one list serves every positive
            chosen, source, _ = select_negatives(ranked[i], pos, None, None, per_query=per_query)
            per_positive = dict.fromkeys(pos, chosen)
            for s in source:
                counts[s] += len(pos)
        else:
            cands = {d for lst in ranked[i] for d in lst}
            scores = {d: float(q_vecs[i] @ d_vecs[row[d]]) for d in cands}
            for p in pos:
                s_pos = float(q_vecs[i] @ d_vecs[row[p]])
                chosen, source, n_dropped = select_negatives(
                    ranked[i], pos, scores, s_pos, per_query=per_query, max_ratio=max_ratio
                )
                per_positive[p] = chosen
                dropped += n_dropped
                for s in source:
                    counts[s] += 1
        negatives[qid] = per_positive
    sources = {name: counts[j] for j, name in enumerate(names)}
    total = sum(len(docs) for groups in negatives.values() for docs in groups.values())
    logger.info("mined %d negatives, dropped %d likely false negatives", total, dropped)
    return MinedNegatives(negatives=negatives, dropped=dropped, sources=sources)
