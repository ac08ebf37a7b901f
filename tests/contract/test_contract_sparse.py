"""SPLADE (learned-sparse) postings on every backend, with the local index as the oracle:
the same documents, scores (float tolerance), best chunks and fused rankings after the
same adds, upserts and deletes, filtered or not, and after a re-open."""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _backends import Backend, encoder
from test_contract_api import corpus

from embedstack.chunking import ChunkingParams
from embedstack.encoders.sparse_vectors import SparseVectors
from embedstack.errors import DimensionMismatch, InvalidInput, ModelMismatch
from embedstack.index import Hit, Index

VOCAB = 97
CHUNKS = ChunkingParams(max_tokens=6, overlap=2, allow_any=True)  # several chunks a document
QUERIES = ("cat protein", "dogs running the", "alpha beta gamma p53", "purr", "zzz unknown")


class FloatSparse:
    """Tier-0 SPLADE stand-in: term ``crc32(word) % 97`` weighs ``count × (1 + h % 13 / 7)``
    (float32, not integers, so the engines' float arithmetic is exercised)."""

    def __init__(self, vocab: int = VOCAB, name: str = "float-sparse") -> None:
        self._vocab, self._name = vocab, name

    name = property(lambda self: self._name)
    model_id = property(lambda self: f"{self._name}@{self._vocab}")
    vocab_size = property(lambda self: self._vocab)

    def _encode(self, texts: Iterable[str]) -> SparseVectors:
        items = list(texts)
        w = np.zeros((len(items), self._vocab), dtype=np.float32)
        for i, text in enumerate(items):
            for word in re.findall(r"\w+", text.lower()):
                h = zlib.crc32(word.encode())
                w[i, h % self._vocab] += np.float32(1 + (h % 13) / 7)
        return SparseVectors.from_dense(w)

    def encode_queries(self, texts: Iterable[str]) -> SparseVectors:
        return self._encode(texts)

    def encode_documents(self, texts: Iterable[str]) -> SparseVectors:
        return self._encode(texts)


def _pair(backend: Backend, tmp_path: Path, sparse: Any = None) -> tuple[Index, Index]:
    """The backend's index and the local oracle, created alike."""
    kw: dict[str, Any] = {"chunking": CHUNKS, "sparse": sparse or FloatSparse()}
    oracle = Index.create(tmp_path / "oracle", encoder=encoder(), **kw)
    return backend.create(**kw), oracle


def _view(hits: list[Hit]) -> list[tuple[str, int | None, tuple[int, int] | None]]:
    return [(h.doc_id, h.chunk, h.span) for h in hits]


def assert_same(idx: Index, oracle: Index, query: str, **opts: Any) -> list[Hit]:
    """``idx`` answers as the oracle: ids, best chunks and scores within float tolerance
    (ids compared in score order, a tie broken by doc id in both)."""
    got, want = idx.search(query, **opts), oracle.search(query, **opts)
    assert _view(got) == _view(want), (query, opts)
    np.testing.assert_allclose([h.score for h in got], [h.score for h in want], rtol=1e-6)
    for g, w in zip(got, want, strict=True):
        assert g.ranks == w.ranks and set(g.scores) == set(w.scores)
    return got


def _check_all(idx: Index, oracle: Index) -> None:
    for q in QUERIES:
        for k in (1, 3, 100):
            assert_same(idx, oracle, q, mode="sparse", k=k)
        assert_same(idx, oracle, q, mode="sparse", k=5, filter={"year": {"$gte": 2020}})
        assert_same(idx, oracle, q, mode="sparse", k=4, filter={"tag": "b"})
        assert_same(idx, oracle, q, mode="hybrid", k=5, retrievers=("sparse", "bm25"))
        assert_same(idx, oracle, q, mode="hybrid", k=5, retrievers=("dense", "sparse", "bm25"),
                    fusion="weighted")  # fmt: skip


def test_sparse_ranks_as_the_local_index_through_updates(backend: Backend, tmp_path: Path) -> None:
    idx, oracle = _pair(backend, tmp_path)
    with oracle:
        docs = corpus(30)
        for target in (idx, oracle):
            target.add(docs[:20])
            target.add(docs[20:])
        hits = assert_same(idx, oracle, "cat protein", mode="sparse", k=100)
        assert hits and all(h.score > 0 for h in hits)  # only documents sharing a term
        assert hits[0].chunk is not None and hits[0].span is not None
        changed = [{**d, "text": d["text"] + " purr purr cat"} for d in docs[3:9]]
        for target in (idx, oracle):
            target.upsert(changed)
            target.delete(["doc00", "doc11", "doc12"])
        _check_all(idx, oracle)
        reopened = backend.open(sparse=FloatSparse(), readonly=True)
        _check_all(reopened, oracle)


def test_sparse_queries_match_the_brute_force_dot_product(backend: Backend) -> None:
    """Scores are the max over a document's chunks of the SPLADE dot product."""
    idx = backend.create(chunking=CHUNKS, sparse=FloatSparse())
    docs = corpus(12, seed=3)
    idx.add(docs)
    enc = FloatSparse()
    q = enc.encode_queries(["cat alpha"]).to_dense()[0].astype(np.float64)
    want: dict[str, float] = {}
    for d in docs:
        texts = [c.embed for c in idx._chunker.chunks([d["title"]], [d["text"]])]
        best = max(float(q @ row) for row in enc.encode_documents(texts).to_dense())
        if best > 0:
            want[d["id"]] = best
    hits = idx.search("cat alpha", mode="sparse", k=100)
    assert {h.doc_id for h in hits} == set(want)
    for h in hits:
        assert h.score == pytest.approx(want[h.doc_id], rel=1e-6)


def test_sparse_errors_are_the_local_ones(backend: Backend) -> None:
    plain = backend.create()
    plain.add(corpus(3))
    with pytest.raises(InvalidInput, match="no sparse postings"):
        plain.search("cat", mode="sparse")
    with pytest.raises(InvalidInput, match="no sparse postings"):
        plain.search("cat", mode="hybrid", retrievers=("dense", "sparse"))
    other = backend.fresh()
    idx = other.create(sparse=FloatSparse())
    idx.add(corpus(3))
    with pytest.raises(ModelMismatch):
        other.open(sparse=FloatSparse(name="another"))
    with pytest.raises(DimensionMismatch):
        other.open(sparse=FloatSparse(vocab=50))
    with pytest.raises(InvalidInput):
        idx.search("cat", mode="sparse", filter={"missing_key": 1})
    assert idx.search("zzz", mode="sparse") == []
