"""Learned-sparse (SPLADE) chunk vectors in Milvus, ranked as the local index ranks them.

An index created with ``sparse=`` gives its chunks collection a ``sp`` field
(``SPARSE_FLOAT_VECTOR``, ``SPARSE_INVERTED_INDEX``, inner product): each chunk row holds
its SPLADE weights keyed by vocabulary id, written in the same insert as its dense vector
(so the generation protocol of :mod:`embedstack.index.backends.milvus` covers it). A chunk
without weights stores :data:`NO_WEIGHTS` (Milvus refuses an empty sparse vector) under a
term id no vocabulary reaches, so no query ever scores it.

Search: Milvus returns, per query, the ``k + 16`` best documents (``group_by_field=
"doc_id"``: a document ranks by its best chunk, MaxP); the client reads every visible chunk
of those documents and rescores them exactly as :mod:`embedstack.index.sparse` does
(float64 sums of ``query weight × weight`` in ascending term order), keeps each document's
best chunk (the first by chunk number among equal scores, as the local index) and sorts by
the float32 score and doc id. Documents sharing no term with the query do not come back
(score 0), as in the local index.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from embedstack.encoders.sparse_vectors import SparseVectors
from embedstack.index.backends.base import Ranked

__all__ = ["FIELD", "NO_WEIGHTS", "chunk_rows", "exact_score", "search"]

FIELD = "sp"
#: The placeholder of a chunk without weights: term id 2**32 - 2 (above any vocabulary).
NO_WEIGHTS = {2**32 - 2: 1e-30}
OUT = ["doc_id", "chunk_no", "start", "end", FIELD]


def chunk_rows(vectors: SparseVectors) -> list[dict[int, float]]:
    """The ``sp`` value of each chunk row (``{term id: weight}``)."""
    out = []
    for i in range(len(vectors)):
        ids, weights = vectors.row(i)
        row = {int(t): float(w) for t, w in zip(ids.tolist(), weights.tolist(), strict=True)}
        out.append(row or dict(NO_WEIGHTS))
    return out


def exact_score(q_ids: list[int], q_weights: list[float], row: Mapping[int, float]) -> float:
    """``sum(q_w × w)`` over shared terms, in the local scorer's order and precision."""
    total = 0.0
    for t, qw in zip(q_ids, q_weights, strict=True):
        w = row.get(t)
        if w is not None:
            total += float(np.float64(qw) * np.float64(np.float32(w)))
    return total


ChunksOf = Callable[[Sequence[str]], list[dict[str, Any]]]


def search(client: Any, coll: str, queries: SparseVectors, k: int, expr: str, limit: int,
           chunks_of: ChunksOf) -> list[list[Ranked]]:  # fmt: skip
    """Per query, the ``k`` best documents among the ``limit`` Milvus hands over;
    ``chunks_of(ids)`` reads the visible chunk rows (fields :data:`OUT`) of documents."""
    out: list[list[Ranked]] = []
    for qi in range(len(queries)):
        ids, weights = queries.row(qi)
        q_ids = [int(t) for t in ids.tolist()]
        q_w = [float(w) for w in np.asarray(weights, dtype=np.float32).tolist()]
        if not q_ids:
            out.append([])
            continue
        hits = client.search(
            coll, data=[dict(zip(q_ids, q_w, strict=True))], anns_field=FIELD, limit=limit,
            filter=expr, group_by_field="doc_id", output_fields=["doc_id"],
            search_params={"metric_type": "IP"},
        )[0]  # fmt: skip
        best: dict[str, tuple[float, int, int, int]] = {}
        for e in chunks_of(sorted({h["entity"]["doc_id"] for h in hits})):
            s = exact_score(q_ids, q_w, {int(t): w for t, w in e[FIELD].items()})
            old = best.get(e["doc_id"])
            no = int(e["chunk_no"])
            if s > 0 and (old is None or (-s, no) < (-old[0], old[1])):
                best[e["doc_id"]] = (s, no, int(e["start"]), int(e["end"]))
        ranked = [Ranked(d, s, (no, a, b)) for d, (s, no, a, b) in best.items()]
        ranked.sort(key=lambda r: (-np.float32(r.score), r.doc_id))
        out.append(ranked[:k])
    return out
