"""HNSW (faiss) dense search: recall against exact search, deletes and filters."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from embedstack.index import ChunkingParams, Index

pytest.importorskip("faiss")


class GaussianEncoder:
    """Seeded random unit vectors per text (clustered), a stand-in with a realistic geometry."""

    name = "gauss-32"
    model_id = "gauss-32@seed"
    dim = 32

    def __init__(self) -> None:
        self.centers = np.random.default_rng(0).normal(size=(20, 32))

    def _vec(self, text: str) -> np.ndarray:
        seed = int.from_bytes(hashlib.blake2b(text.encode(), digest_size=4).digest(), "little")
        rng = np.random.default_rng(seed)
        v = self.centers[seed % 20] + 0.7 * rng.normal(size=32)
        return v / np.linalg.norm(v)

    def encode(self, texts):  # type: ignore[no-untyped-def]
        return np.stack([self._vec(t) for t in texts]).astype(np.float32)

    encode_queries = encode
    encode_documents = encode


def test_hnsw_recall_vs_exact(tmp_path: Path) -> None:
    enc = GaussianEncoder()
    docs = [
        {"id": f"d{i}", "text": f"document {i:06d}", "metadata": {"even": i % 2 == 0}}
        for i in range(3000)
    ]
    chunking = ChunkingParams(max_tokens=64, overlap=0, allow_any=True)
    ann = Index.create(tmp_path / "ann", encoder=enc, ann="hnsw", chunking=chunking)
    exact = Index.create(tmp_path / "exact", encoder=enc, chunking=chunking)
    for idx in (ann, exact):
        idx.add(docs[:1500])
        idx.add(docs[1500:])
        idx.delete([f"d{i}" for i in range(0, 3000, 7)])
    queries = [f"query {i:06d}" for i in range(50)]
    for flt in (None, {"even": True}):
        a = ann.search_many(queries, mode="dense", k=10, filter=flt)
        e = exact.search_many(queries, mode="dense", k=10, filter=flt)
        recall = np.mean(
            [
                len({h.doc_id for h in x} & {h.doc_id for h in y}) / 10
                for x, y in zip(a, e, strict=True)
            ]
        )
        assert recall >= 0.95, (flt, recall)
        assert all(len(x) == 10 for x in a)
        deleted = {f"d{i}" for i in range(0, 3000, 7)}
        assert not deleted & {h.doc_id for x in a for h in x}
        if flt:
            assert all(h.metadata["even"] for x in a for h in x)
    rare = ann.search(
        "query 000001", mode="dense", k=10, filter={"even": True, "$or": [{"even": True}]}
    )
    assert len(rare) == 10
    ann.close()
    with Index.open(tmp_path / "ann", encoder=enc) as again:
        assert again.ann == "hnsw" and len(again.search("query 000003", mode="dense", k=5)) == 5
