"""The oracle of tests/test_index_stateful.py: live documents in a dict, filters evaluated
in Python, dense scores by brute force, BM25 scores by bm25s, and a ranking check.

Nothing here imports the index's own internals: the oracle must not share the code it checks.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise
from typing import Any

import bm25s
import numpy as np
import Stemmer

from embedstack import HashEncoder
from embedstack.errors import InvalidInput
from embedstack.index import Hit

__all__ = ["TOL", "Doc", "Oracle", "assert_ranking", "matches"]

TOL = 1e-5
# the index's BM25 analysis, as documented: words are runs of word characters, single
# characters kept (bm25s's default pattern drops them); English stopwords; Snowball stems
TOKEN_PATTERN = r"(?u)\b\w+\b"

Doc = tuple[str, str, dict[str, Any]]  # (title, text, metadata)


def _number(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _member(meta: dict[str, Any], key: str, values: Sequence[Any]) -> bool:
    """MongoDB equality/``$in``: the value, or any element of an array value, is in values."""
    if key not in meta:
        return False
    value = meta[key]
    elems = value if isinstance(value, list) else [value]
    return any(e == v and type(e) is type(v) for e in elems for v in values)


def _range(value: object, op: str, bound: object) -> bool:
    if not ((_number(value) and _number(bound)) or (isinstance(value, str)
                                                    and isinstance(bound, str))):  # fmt: skip
        return False
    a, b = value, bound
    return {"$gt": a > b, "$gte": a >= b, "$lt": a < b, "$lte": a <= b}[op]  # type: ignore[operator]


def matches(meta: dict[str, Any], flt: dict[str, Any]) -> bool:
    """Evaluate a filter (the subset of the language the strategies generate) in Python."""
    for key, cond in flt.items():
        if key == "$or":
            ok = any(matches(meta, sub) for sub in cond)
        elif key == "$and":
            ok = all(matches(meta, sub) for sub in cond)
        elif not isinstance(cond, dict):
            ok = _member(meta, key, [cond])
        else:
            ok = True
            for op, value in cond.items():
                if op in ("$eq", "$ne"):
                    hit = _member(meta, key, [value])
                    ok &= hit if op == "$eq" else not hit
                elif op in ("$in", "$nin"):
                    hit = _member(meta, key, value)
                    ok &= hit if op == "$in" else not hit
                else:
                    ok &= _range(meta.get(key), op, value)
        if not ok:
            return False
    return True


def filter_keys(flt: dict[str, Any]) -> set[str]:
    out: set[str] = set()
    for key, cond in flt.items():
        if key in ("$or", "$and"):
            for sub in cond:
                out |= filter_keys(sub)
        else:
            out.add(key)
    return out


class Oracle:
    """The live documents, their dense vectors, and BM25 scores by bm25s."""

    def __init__(self, encoder: HashEncoder) -> None:
        self.docs: dict[str, Doc] = {}
        self.vectors: dict[str, np.ndarray] = {}
        self.pending = 0  # deleted or replaced documents not yet compacted away
        self._encoder = encoder
        self._stemmer = Stemmer.Stemmer("english")

    def put(self, doc_id: str, doc: Doc) -> None:
        if doc_id in self.docs:
            self.pending += 1
        self.docs[doc_id] = doc
        # one chunk per document, embedded as ``title + " " + text``
        self.vectors[doc_id] = self._encoder.encode_documents([f"{doc[0]} {doc[1]}"])[0]

    def remove(self, doc_id: str) -> None:
        del self.docs[doc_id]
        del self.vectors[doc_id]
        self.pending += 1

    def allowed(self, flt: dict[str, Any] | None) -> list[str]:
        """Live ids passing ``flt``; raises InvalidInput like the index for a missing key."""
        if flt is None:
            return sorted(self.docs)
        present = {k for _, _, meta in self.docs.values() for k in meta}
        missing = filter_keys(flt) - present
        if missing:
            raise InvalidInput(f"no document has {missing}")
        return sorted(i for i, (_, _, meta) in self.docs.items() if matches(meta, flt))

    def dense(self, query: str, ids: list[str]) -> dict[str, float]:
        q = self._encoder.encode_queries([query])[0].astype(np.float64)
        return {i: float(self.vectors[i].astype(np.float64) @ q) for i in ids}

    def _tokens(self, texts: list[str]) -> list[list[str]]:
        return bm25s.tokenize(texts, stopwords="en", stemmer=self._stemmer, show_progress=False,
                              token_pattern=TOKEN_PATTERN, return_ids=False)  # fmt: skip

    def bm25(self, query: str, ids: list[str]) -> dict[str, float]:
        """bm25s (Lucene, k1=1.2, b=0.75) over ALL live documents, kept for ``ids``; only
        documents sharing a term with the query score."""
        live = sorted(self.docs)
        corpus = self._tokens([f"{t} {x}".strip() for t, x, _ in (self.docs[i] for i in live)])
        vocab = {tok for doc in corpus for tok in doc}
        q = [tok for tok in self._tokens([query])[0] if tok in vocab]
        if not q:
            return {}
        model = bm25s.BM25(method="lucene", k1=1.2, b=0.75)
        model.index(corpus, show_progress=False)
        scores = np.asarray(model.get_scores(q), dtype=np.float64)
        wanted = set(ids)
        return {i: float(s) for i, s in zip(live, scores, strict=True) if i in wanted and s > 0}


# --- checks -----------------------------------------------------------------------------------


def assert_ranking(hits: list[Hit], expected: dict[str, float], k: int, what: str) -> None:
    """``hits`` are the top ``k`` of ``expected`` (id -> score): right scores (±TOL), best
    first, ties (equal scores) by id, and no better document left out."""
    ids = [h.doc_id for h in hits]
    assert len(hits) == min(k, len(expected)), (what, ids, expected)
    assert len(set(ids)) == len(ids), (what, ids)
    for rank, hit in enumerate(hits, 1):
        assert hit.rank == rank, (what, hits)
        assert hit.doc_id in expected, (what, hit.doc_id, expected)
        assert abs(hit.score - expected[hit.doc_id]) <= TOL, (what, hit, expected)
    for a, b in pairwise(hits):
        assert a.score >= b.score, (what, ids)
        if a.score == b.score:
            assert a.doc_id < b.doc_id, (what, "tie order", ids)
    if hits:
        cut = hits[-1].score
        left_out = {i: s for i, s in expected.items() if i not in ids and s > cut + TOL}
        assert not left_out, (what, "better documents left out", left_out, ids)
