"""Retrieval and similarity metrics, computed exactly as BEIR and MTEB compute them.

nDCG@k, MAP@k, recall@k and precision@k come from ``pytrec_eval`` (Van Gysel and de Rijke
2018, a binding of NIST's ``trec_eval``) with the measures BEIR's
``EvaluateRetrieval.evaluate`` asks for (``ndcg_cut.k``, ``map_cut.k``, ``recall.k``,
``P.k``); MRR@k is BEIR's ``custom_metrics.mrr`` (Thakur et al. 2021), which MTEB reuses.

BEIR compatibility, spelled out:

* **Identical ids.** With ``ignore_identical_ids=True`` (BEIR's default) a retrieved document
  whose id equals the query id is dropped before scoring, for every metric including MRR
  (BEIR pops them from the run in place, before it computes MRR on that same run). The
  caller's run is never modified here.
* **Which queries count.** ``pytrec_eval`` scores exactly the queries that are both in the
  qrels and in the run (a query with an empty ranking, or with no relevant document, is scored
  0); BEIR averages nDCG/MAP/recall/precision over those. A query judged in the qrels but
  absent from the run is therefore *left out* of those four means. MRR@k, as in BEIR and MTEB,
  is summed over the run's queries and divided by the number of queries in the qrels, so a
  query missing from the run counts as 0 for MRR. Rank every judged query to avoid the
  difference.
* **Ties.** ``trec_eval`` sorts by score descending, then by document id descending; MRR
  sorts by score with Python's stable sort, so tied documents keep the run's insertion order.
* **Rounding.** BEIR rounds the means to 5 decimals; these functions do not round.
* **Relevance.** A document is relevant for recall, precision and MAP when its qrel score is
  at least 1, for MRR when it is above 0; nDCG uses the graded score as gain.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import numpy.typing as npt
import pytrec_eval

from embedstack.errors import InvalidInput
from embedstack.latency import as_vector as _as_vector
from embedstack.latency import latency_summary

__all__ = [
    "DEFAULT_K_VALUES",
    "evaluate",
    "evaluate_per_query",
    "latency_summary",
    "spearman",
]

DEFAULT_K_VALUES: tuple[int, ...] = (1, 3, 5, 10, 100, 1000)
"""The cut-offs BEIR reports by default."""

Qrels = Mapping[str, Mapping[str, int]]
Run = Mapping[str, Mapping[str, float]]

# Our metric name -> trec_eval measure family, in the order keys appear in the result.
_TREC_MEASURES: dict[str, str] = {
    "ndcg": "ndcg_cut",
    "map": "map_cut",
    "recall": "recall",
    "precision": "P",
}


def _check_k_values(k_values: Iterable[int]) -> tuple[int, ...]:
    ks: list[int] = []
    for k in k_values:
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
            raise InvalidInput(f"k_values must be positive integers, got {k!r}")
        if int(k) not in ks:
            ks.append(int(k))
    if not ks:
        raise InvalidInput("k_values is empty; pass at least one cut-off, e.g. (10,)")
    return tuple(sorted(ks))


def _clean_qrels(qrels: Qrels) -> dict[str, dict[str, int]]:
    if not isinstance(qrels, Mapping) or not qrels:
        raise InvalidInput("qrels is empty; pass {query_id: {doc_id: relevance}}")
    clean: dict[str, dict[str, int]] = {}
    for qid, docs in qrels.items():
        if not isinstance(qid, str) or not isinstance(docs, Mapping):
            raise InvalidInput(
                f"qrels must map str query ids to {{doc_id: relevance}}, got {qid!r}: "
                f"{type(docs).__name__}"
            )
        row: dict[str, int] = {}
        for did, rel in docs.items():
            if not isinstance(did, str):
                raise InvalidInput(f"qrels[{qid!r}] has a non-string doc id {did!r}")
            if isinstance(rel, bool) or not isinstance(rel, int | np.integer):
                raise InvalidInput(
                    f"qrels[{qid!r}][{did!r}] = {rel!r}; relevance must be an integer"
                )
            row[did] = int(rel)
        clean[qid] = row
    return clean


def _clean_run(run: Run, ignore_identical_ids: bool) -> dict[str, dict[str, float]]:
    if not isinstance(run, Mapping):
        raise InvalidInput(f"run must be {{query_id: {{doc_id: score}}}}, got {type(run)}")
    clean: dict[str, dict[str, float]] = {}
    for qid, docs in run.items():
        if not isinstance(qid, str) or not isinstance(docs, Mapping):
            raise InvalidInput(
                f"run must map str query ids to {{doc_id: score}}, got {qid!r}: "
                f"{type(docs).__name__}"
            )
        row: dict[str, float] = {}
        for did, score in docs.items():
            if not isinstance(did, str):
                raise InvalidInput(f"run[{qid!r}] has a non-string doc id {did!r}")
            if ignore_identical_ids and did == qid:
                continue
            try:
                value = float(score)
            except (TypeError, ValueError):
                raise InvalidInput(f"run[{qid!r}][{did!r}] = {score!r} is not a number") from None
            if not math.isfinite(value):
                raise InvalidInput(
                    f"run[{qid!r}][{did!r}] = {score!r}; scores must be finite to rank"
                )
            row[did] = value
        clean[qid] = row
    return clean


def _reciprocal_ranks(
    docs: Mapping[str, float], relevant: set[str], ks: tuple[int, ...]
) -> dict[int, float]:
    """BEIR's MRR for one query: 1/rank of the first relevant doc within the top k."""
    ranked = sorted(docs.items(), key=lambda item: item[1], reverse=True)[: max(ks)]
    first = next((i for i, (did, _) in enumerate(ranked) if did in relevant), None)
    return {k: (1.0 / (first + 1) if first is not None and first < k else 0.0) for k in ks}


def _score(
    qrels: Qrels, run: Run, k_values: Iterable[int], ignore_identical_ids: bool
) -> tuple[dict[str, dict[str, float]], int]:
    ks = _check_k_values(k_values)
    clean_qrels = _clean_qrels(qrels)
    clean_run = _clean_run(run, ignore_identical_ids)
    cutoffs = ",".join(str(k) for k in ks)
    measures = {f"{trec}.{cutoffs}" for trec in _TREC_MEASURES.values()}
    evaluator = pytrec_eval.RelevanceEvaluator(clean_qrels, measures)
    trec_scores: dict[str, dict[str, float]] = evaluator.evaluate(clean_run)
    if not trec_scores:
        raise InvalidInput(
            f"none of the run's {len(clean_run)} queries appear in the qrels "
            f"({len(clean_qrels)} queries); check that both use the same string query ids"
        )
    per_query: dict[str, dict[str, float]] = {}
    # Keep the run's query order; pytrec_eval returns its own.
    for qid in clean_run:
        if qid not in trec_scores:
            continue
        values = trec_scores[qid]
        row: dict[str, float] = {}
        for name, trec in _TREC_MEASURES.items():
            for k in ks:
                row[f"{name}@{k}"] = float(values[f"{trec}_{k}"])
        relevant = {did for did, rel in clean_qrels[qid].items() if rel > 0}
        for k, rr in _reciprocal_ranks(clean_run[qid], relevant, ks).items():
            row[f"mrr@{k}"] = rr
        per_query[qid] = row
    return per_query, len(clean_qrels)


def evaluate_per_query(
    qrels: Qrels,
    run: Run,
    k_values: Iterable[int] = DEFAULT_K_VALUES,
    *,
    ignore_identical_ids: bool = True,
) -> dict[str, dict[str, float]]:
    """Score each query that is both judged and ranked.

    Args:
        qrels: ``{query_id: {doc_id: relevance}}``, integer (graded) relevance.
        run: ``{query_id: {doc_id: score}}``, higher is better; it need not be sorted.
        k_values: Cut-offs.
        ignore_identical_ids: Drop retrieved documents whose id equals the query id (BEIR).

    Returns:
        ``{query_id: {"ndcg@k", "map@k", "recall@k", "precision@k", "mrr@k": value}}`` for
        the queries in both ``qrels`` and ``run``, in the run's order. Judged queries missing
        from the run are absent (see the module docstring).

    Raises:
        InvalidInput: Empty qrels, bad ids or values, non-finite scores, bad ``k_values``, or
            no query shared by qrels and run.

    Example:
        >>> per_query = evaluate_per_query({"q": {"a": 1}}, {"q": {"b": 2.0, "a": 1.0}}, [1, 2])
        >>> per_query["q"]["mrr@2"], per_query["q"]["recall@1"]
        (0.5, 0.0)
    """
    per_query, _ = _score(qrels, run, k_values, ignore_identical_ids)
    return per_query


def evaluate(
    qrels: Qrels,
    run: Run,
    k_values: Iterable[int] = DEFAULT_K_VALUES,
    *,
    ignore_identical_ids: bool = True,
) -> dict[str, float]:
    """Mean retrieval metrics over queries, as BEIR's ``EvaluateRetrieval`` computes them.

    nDCG, MAP, recall and precision are averaged over the queries in both ``qrels`` and
    ``run``; MRR is summed over those and divided by the number of queries in ``qrels``, so a
    judged query missing from the run counts 0 for MRR only. Both follow BEIR exactly; see
    the module docstring.

    Args:
        qrels: ``{query_id: {doc_id: relevance}}``, integer (graded) relevance.
        run: ``{query_id: {doc_id: score}}``, higher is better; it need not be sorted.
        k_values: Cut-offs.
        ignore_identical_ids: Drop retrieved documents whose id equals the query id (BEIR).

    Returns:
        ``{"ndcg@k", "map@k", "recall@k", "precision@k", "mrr@k": mean}`` for each k, not
        rounded (BEIR rounds to 5 decimals).

    Raises:
        InvalidInput: As :func:`evaluate_per_query`.

    Example:
        >>> qrels = {"q1": {"a": 1}, "q2": {"c": 1}}
        >>> run = {"q1": {"a": 0.9, "b": 0.5}, "q2": {"b": 0.8, "c": 0.3}}
        >>> scores = evaluate(qrels, run, k_values=[1, 10])
        >>> scores["mrr@10"] == (1 + 1 / 2) / 2, scores["precision@1"]
        (True, 0.5)
    """
    per_query, n_judged = _score(qrels, run, k_values, ignore_identical_ids)
    names = next(iter(per_query.values())).keys()
    means: dict[str, float] = {}
    for name in names:
        total = math.fsum(row[name] for row in per_query.values())
        means[name] = total / (n_judged if name.startswith("mrr@") else len(per_query))
    return means


def _average_ranks(values: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """1-based ranks, tied values sharing the mean of the ranks they span."""
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts).astype(np.float64)
    return (ends - (counts - 1) / 2.0)[inverse]


def spearman(x: Sequence[float] | npt.ArrayLike, y: Sequence[float] | npt.ArrayLike) -> float:
    """Spearman rank correlation, ties given their average rank (as ``scipy.stats.spearmanr``).

    This is Pearson's correlation of the two rank vectors (Spearman 1904), the score MTEB
    reports for STS tasks.

    Args:
        x: ``(n,)`` numbers, e.g. predicted similarities.
        y: ``(n,)`` numbers, e.g. gold scores.

    Returns:
        The correlation in ``[-1, 1]``.

    Raises:
        InvalidInput: Lengths differ, fewer than 2 values, non-finite values, or either input
            is constant (the correlation is undefined).

    Example:
        >>> spearman([1, 2, 3, 4], [10, 20, 30, 20])
        0.6324555320336759
    """
    a = _as_vector(x, "x")
    b = _as_vector(y, "y")
    if a.shape != b.shape:
        raise InvalidInput(f"x and y differ in length: {a.shape[0]} != {b.shape[0]}")
    if a.shape[0] < 2:
        raise InvalidInput("spearman needs at least 2 pairs")
    ra = _average_ranks(a)
    rb = _average_ranks(b)
    ra -= ra.mean()
    rb -= rb.mean()
    denom = math.sqrt(float(ra @ ra) * float(rb @ rb))
    if denom == 0.0:
        raise InvalidInput("spearman is undefined when x or y is constant")
    return max(-1.0, min(1.0, float(ra @ rb) / denom))
