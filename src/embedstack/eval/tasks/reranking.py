"""Reranking: order each query's own candidates by cosine similarity; MAP and MRR@10.

As MTEB's ``RerankingEvaluator`` (MTEB v1; v2 runs the same candidate sets through its
retrieval evaluator, whose ``map_at_1000`` equals this MAP for sets of up to 1000 candidates
without ties): each sample's query is encoded as a query (with the model's query prefix),
its positive and negative candidates as documents, and the candidates are scored by cosine
similarity; a sample giving several phrasings of its query scores each candidate by its best
phrasing. Per sample, the average precision of that ranking is scikit-learn's
``average_precision_score`` and the reciprocal rank counts the first positive within the top
``k`` (10); both are averaged over the samples. Samples without a positive or without a
negative are skipped, as MTEB skips them, and counted in ``n_skipped``. Candidates tied on
their score are ranked in file order, positives first.

Example:
    >>> import numpy as np
    >>> rank_metrics(np.array([0.2, 0.9, 0.5]), [True, False, False])
    {'ap': 0.3333333333333333, 'mrr': 0.3333333333333333}
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from embedstack import vectors
from embedstack.encoders.base import TextEncoder
from embedstack.errors import InvalidInput, require
from embedstack.eval.tasks.formats import RerankingSample
from embedstack.eval.tasks.options import TaskOptions, embed

__all__ = ["evaluate_reranking", "rank_metrics", "score_samples"]

MAIN_METRIC = "map"


def rank_metrics(scores: np.ndarray, relevant: Sequence[bool], k: int = 10) -> dict[str, float]:
    """Average precision and reciprocal rank at ``k`` of one query's scored candidates.

    Args:
        scores: ``(n_candidates,)`` similarity of each candidate to the query.
        relevant: Whether each candidate is a positive.
        k: Rank cut-off of the reciprocal rank.

    Returns:
        ``{"ap": ..., "mrr": ...}``; ``mrr`` is 0 when no positive is in the top ``k``.
    """
    require("sklearn", "eval", "reranking tasks")
    from sklearn.metrics import average_precision_score

    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    hits = [rank for rank, index in enumerate(order[:k], start=1) if relevant[int(index)]]
    return {
        "ap": float(average_precision_score(list(relevant), scores)),
        "mrr": 1.0 / hits[0] if hits else 0.0,
    }


def score_samples(
    encoder: TextEncoder, samples: list[RerankingSample], options: TaskOptions
) -> tuple[list[float], list[float], int]:
    """Rank each sample's candidates; its average precision and reciprocal rank at ``k``.

    Every distinct query and candidate text is encoded once. Samples without a positive or
    without a negative are skipped (as MTEB skips them).

    Returns:
        ``(aps, rrs, n_candidates)``: one AP and one reciprocal rank per scored sample, in
        file order, and the candidates scored over all samples.

    Raises:
        InvalidInput: No sample has both a positive and a negative candidate.
    """
    kept = [s for s in samples if s.positive and s.negative]
    if not kept:
        raise InvalidInput(
            "no reranking sample has both a positive and a negative candidate; nothing to rank"
        )
    query_texts = [q for s in kept for q in s.queries]
    doc_texts = [d for s in kept for d in (*s.positive, *s.negative)]
    queries = vectors.normalize(embed(encoder, query_texts, options.dim, "query"))
    docs = vectors.normalize(embed(encoder, doc_texts, options.dim, "document"))
    aps, rrs = [], []
    q_at = d_at = 0
    for sample in kept:
        n_docs = len(sample.positive) + len(sample.negative)
        block = queries[q_at : q_at + len(sample.queries)] @ docs[d_at : d_at + n_docs].T
        q_at += len(sample.queries)
        d_at += n_docs
        relevant = [True] * len(sample.positive) + [False] * len(sample.negative)
        metrics = rank_metrics(block.max(axis=0), relevant, options.mrr_k)
        aps.append(metrics["ap"])
        rrs.append(metrics["mrr"])
    return aps, rrs, d_at


def evaluate_reranking(
    encoder: TextEncoder, samples: list[RerankingSample], options: TaskOptions
) -> dict[str, Any]:
    """Rank every sample's candidates (:func:`score_samples`); returns ``map``, ``mrr@k`` and
    the counts.

    Returns:
        ``map``, ``mrr@<k>``, ``n_examples`` (samples scored), ``n_skipped`` and
        ``n_candidates`` (scored candidates over all samples).
    """
    aps, rrs, n_candidates = score_samples(encoder, samples, options)
    return {
        "map": float(np.mean(aps)),
        f"mrr@{options.mrr_k}": float(np.mean(rrs)),
        "n_examples": len(aps),
        "n_skipped": len(samples) - len(aps),
        "n_candidates": n_candidates,
    }
