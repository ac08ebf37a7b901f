"""Lucene BM25 on Milvus, ranked exactly like the local index within a candidate depth.

Milvus's own BM25 function was measured and not used (``benchmarks/milvus_quality.py``
records its SciFact nDCG@10 next to ours): milvus-lite 3 keeps BM25 statistics (N, df,
avgdl) per *segment*, so a document's score depends on which flush it landed in, and
Milvus's analyzers (tokenizer, stemmer) are not the local index's
(``embedstack.index.tokenize``: bm25s's English pipeline). Instead (Robertson & Zaragoza
2009; the Lucene variant of :mod:`embedstack.index.lexical_scoring`):

* the client analyses text with the local index's :class:`~embedstack.index.tokenize.Analyzer`
  (the base seam hands stems over) and keeps a vocabulary ``stem → term id`` and the live
  document frequency of each term id in the meta collection;
* each document row stores its raw term frequencies ``tf`` and BM25 *impacts* ``bm``
  (``tf / (tf + k1 * (1 - b + b * dl / avgdl))`` with the ``avgdl`` of when it was written);
* a query is the sparse vector ``{term id: idf(df) * count}`` with the live ``N`` and
  ``df``; Milvus returns the :func:`candidate_depth` best rows by inner product with ``bm``,
  and the client rescores them with the exact formula, live ``avgdl`` included.

The one difference from the local index, tested in ``tests/test_milvus.py``: a document
whose exact rank is in the top ``k`` is missed when its write-time impacts put it below the
candidate depth — possible only after the average document length drifted since it was
written (a corpus whose later documents are much longer or shorter). Every returned score
is the local index's (float32 rounding).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from embedstack.index.backends.milvus_rows import get_rows, meta_row, upsert_rows

__all__ = ["NO_TERMS", "Terms", "bm25_score", "candidate_depth", "idf", "impacts"]

#: Term id of the placeholder weight a document without indexable terms stores (Milvus
#: refuses an empty sparse vector); no query ever holds it.
NO_TERMS = 0
_GET_BATCH = 4000  # ids per get() (Milvus caps a query's result window at 16384)
MAX_LIMIT = 16384  # Milvus's top-k cap for search and query


def candidate_depth(k: int) -> int:
    """Rows Milvus hands over for exact rescoring to return ``k`` documents: four times
    ``k`` and at least ``k + 100``, within Milvus's cap of 16384."""
    return min(MAX_LIMIT, max(4 * k, k + 100))


def idf(n_docs: int, df: int) -> float:
    """Lucene's ``ln(1 + (N - df + 0.5) / (df + 0.5))``."""
    return math.log1p((n_docs - df + 0.5) / (df + 0.5))


def _norm(dl: int, avgdl: float, k1: float, b: float) -> float:
    return k1 * (1.0 - b + b * dl / (avgdl if avgdl > 0 else 1.0))


def impacts(tf: Mapping[int, int], dl: int, avgdl: float, k1: float, b: float) -> dict[int, float]:
    """Saturated, length-normalised term frequencies of one document (its ``bm`` row)."""
    if not tf:
        return {NO_TERMS: 1e-30}
    norm = _norm(dl, avgdl, k1, b)
    return {t: (n / (n + norm) if n + norm > 0 else 1.0) for t, n in tf.items()}


def bm25_score(tf: Mapping[int, float], dl: int, weights: Mapping[int, float], avgdl: float,
               k1: float, b: float) -> float:  # fmt: skip
    """The exact BM25 of one document: ``sum(weights[t] * tf / (tf + norm))`` over its
    terms, ``weights`` being ``idf * count`` of the query's terms."""
    norm = _norm(dl, avgdl, k1, b)
    total = 0.0
    for t, w in weights.items():
        n = tf.get(t, 0.0)
        if n > 0:
            total += w * (n / (n + norm) if n + norm > 0 else 1.0)
    return total


class Terms:
    """The vocabulary (``s:<stem>`` rows: ``a`` = term id) and document frequencies
    (``d:<term id>`` rows: ``a`` = df) in the meta collection ``coll``."""

    def __init__(self, client: Any, coll: str) -> None:
        self.client = client
        self.coll = coll

    def _get(self, pks: Sequence[str]) -> dict[str, int]:
        rows = get_rows(self.client, self.coll, pks, ["pk", "a"], _GET_BATCH)
        return {r["pk"]: int(r["a"]) for r in rows}

    def _put(self, values: Mapping[str, int]) -> None:
        rows = [meta_row(pk, int(a)) for pk, a in values.items()]
        upsert_rows(self.client, self.coll, rows, _GET_BATCH)

    def lookup(self, stems: Iterable[str]) -> dict[str, int]:
        """Term ids of the ``stems`` in the vocabulary (unknown stems are absent)."""
        wanted = sorted(set(stems))
        return {pk[2:]: tid for pk, tid in self._get([f"s:{s}" for s in wanted]).items()}

    def assign(self, stems: Iterable[str], next_id: int) -> tuple[dict[str, int], int]:
        """Term ids of ``stems``, adding the new ones from ``next_id`` on; returns them and
        the next free id."""
        wanted = sorted(set(stems))
        known = self.lookup(wanted)
        new = {s: next_id + i for i, s in enumerate(s for s in wanted if s not in known)}
        if new:
            self._put({f"s:{s}": tid for s, tid in new.items()})
        return {**known, **new}, next_id + len(new)

    def dfs(self, tids: Iterable[int]) -> dict[int, int]:
        """Document frequencies of term ids (0 for a term no document holds)."""
        wanted = sorted(set(tids))
        got = self._get([f"d:{t}" for t in wanted])
        return {t: got.get(f"d:{t}", 0) for t in wanted}

    def add_df(self, delta: Mapping[int, int]) -> None:
        """Add ``delta`` to the document frequencies (read, then upsert)."""
        delta = {t: d for t, d in delta.items() if d and t != NO_TERMS}
        if not delta:
            return
        current = self.dfs(delta)
        self._put({f"d:{t}": current[t] + d for t, d in delta.items()})

    def set_df(self, dfs: Mapping[int, int], stale: Iterable[int]) -> None:
        """Overwrite document frequencies (recovery): ``dfs``, and 0 for ``stale`` ids."""
        values = {f"d:{t}": 0 for t in stale}
        values.update({f"d:{t}": n for t, n in dfs.items() if t != NO_TERMS})
        self._put(values)

    def all_dfs(self) -> dict[int, int]:
        """Every stored document frequency (check and recovery)."""
        out: dict[int, int] = {}
        it = self.client.query_iterator(self.coll, batch_size=4000, filter='pk like "d:%"',
                                        output_fields=["pk", "a"])  # fmt: skip
        try:
            while batch := it.next():
                out.update({int(r["pk"][2:]): int(r["a"]) for r in batch})
        finally:
            it.close()
        return out
