"""Fitting a pick run to ``--time-budget-min``: a pilot estimate, then a query count.

The corpus is encoded in full whatever the budget (candidates must rank the same corpus);
only the number of queries is cut. The pilot times three queries through every model's
encoder, every candidate's search and BM25; the queries that fit in 80% of the time left
(20% is kept for metrics, tests and writing) are measured, a seeded random sample.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from embedstack.eval.pick import measure as m
from embedstack.eval.pick.candidates import CandidateSpec, PickOptions

__all__ = ["MIN_QUERIES", "fit_queries", "pilot_seconds"]

MIN_QUERIES = 10


def fit_queries(options: PickOptions, start: float, n: int, pilot: float) -> tuple[int, str | None]:
    """How many queries fit the time budget, given ``pilot`` seconds per query."""
    if options.time_budget_min is None:
        return n, None
    spent = time.perf_counter() - start
    left = options.time_budget_min * 60 - spent
    fit = int(0.8 * left / max(pilot, 1e-6))  # 20% for metrics, tests and writing
    if fit >= n:
        return n, None
    take = max(min(fit, n), min(MIN_QUERIES, n))
    note = (
        f"{take} of {n} queries, a seeded random sample (seed {options.seed}), to finish "
        f"within --time-budget-min {options.time_budget_min:g}: measuring one query with "
        f"every candidate was estimated at {pilot * 1000:.0f} ms"
    )
    note += f"; {spent:.0f} s had gone to loading and encoding the corpus (never subsampled)"
    if take > fit:
        note += f"; even {take} queries (the minimum) exceed the budget"
    return take, note


def pilot_seconds(
    encoders: dict[str, Any],
    grid: list[CandidateSpec],
    docs: dict[str, np.ndarray],
    bm25: m.Bm25 | None,
    queries: list[str],
) -> float:
    """Estimated seconds to measure one query with every candidate (a few timed queries)."""
    sample = queries[: min(3, len(queries))]
    total = 0.0
    if bm25 is not None:
        total += float(bm25.run(sample).wall.mean())
    qvec: dict[str, np.ndarray] = {}
    for name, encoder in encoders.items():
        vecs, wall, _ = m.encode_queries(encoder, sample)
        qvec[name] = vecs
        total += float(wall.mean())
    for cand in grid:
        if cand.model is None:
            continue
        model = m.ModelRun(
            cand.model,
            "",
            docs[cand.model],
            0,
            0,
            "",
            qvec[cand.model],
            np.zeros(len(sample)),
            np.zeros(len(sample)),
        )
        store = m.vector_set(model, cand)
        q = qvec[cand.model][:, : store.dim]
        t0 = time.perf_counter()
        for i in range(len(sample)):
            store.search(q[i : i + 1], m.DEPTH)
        total += (time.perf_counter() - t0) / len(sample) + 0.0005  # + fusion and bookkeeping
    return total
