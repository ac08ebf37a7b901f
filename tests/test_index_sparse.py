"""Sparse (SPLADE) postings in an Index: equal to brute force through add, delete, upsert and
compact; fused in hybrid; crash safety by the same commit protocol; model checks."""

from __future__ import annotations

import json
import re
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from embedstack import DimensionMismatch, HashEncoder, IndexCorrupt, InvalidInput, ModelMismatch
from embedstack.encoders.splade import SparseVectors
from embedstack.index import Index
from embedstack.index import sparse as sparse_index
from test_index_helpers import SMALL_CHUNKS, WRITER_LOOP, committed_batches, corpus, sigkill_rounds

VOCAB = 97


class CountSparse:
    """Tier-0 sparse encoder: weight of term ``crc32(word) % 97`` = the word's count.

    Integer weights make every dot product exact, so brute force and postings agree to the
    bit and ties break identically.
    """

    def __init__(self, vocab: int = VOCAB, name: str = "count-sparse") -> None:
        self._vocab, self._name = vocab, name
        self.calls = 0

    name = property(lambda self: self._name)
    model_id = property(lambda self: f"{self._name}@{self._vocab}")
    vocab_size = property(lambda self: self._vocab)

    def _encode(self, texts: Iterable[str]) -> SparseVectors:
        items = list(texts)
        self.calls += 1
        w = np.zeros((len(items), self._vocab), dtype=np.float32)
        for i, text in enumerate(items):
            for word in re.findall(r"\w+", text.lower()):
                w[i, zlib.crc32(word.encode()) % self._vocab] += 1
        return SparseVectors.from_dense(w)

    def encode_queries(self, texts: Iterable[str]) -> SparseVectors:
        return self._encode(texts)

    def encode_documents(self, texts: Iterable[str]) -> SparseVectors:
        return self._encode(texts)


def _create(path: Path, sparse: Any = None) -> Index:
    return Index.create(
        path,
        encoder=HashEncoder(64, name="h"),
        chunking=SMALL_CHUNKS,
        sparse=sparse if sparse is not None else CountSparse(),
    )


def _open(path: Path, **kw: Any) -> Index:
    return Index.open(path, encoder=HashEncoder(64, name="h"), sparse=CountSparse(), **kw)


def _brute(
    index: Index, live: dict[str, dict[str, Any]], query: str, k: int, keep: set[str] | None = None
) -> list[tuple[str, float]]:
    """Score every chunk of every live document from scratch; max per document."""
    docs = [d for d in live.values() if keep is None or d["id"] in keep]
    if not docs:
        return []
    chunks = index._chunker.chunks([d.get("title", "") for d in docs], [d["text"] for d in docs])
    enc = CountSparse()
    dmat = enc.encode_documents([c.embed for c in chunks]).to_dense()
    q = enc.encode_queries([query]).to_dense()[0]
    best: dict[str, float] = {}
    for c, s in zip(chunks, dmat @ q, strict=True):
        doc_id = docs[c.doc]["id"]
        best[doc_id] = max(best.get(doc_id, 0.0), float(s))
    ranked = sorted(((d, s) for d, s in best.items() if s > 0), key=lambda x: (-x[1], x[0]))
    return ranked[:k]


QUERIES = ["protein cell", "cancer therapy patient trial", "uniqd7 gene", "sleep stress memory"]


def _assert_matches(index: Index, live: dict[str, dict[str, Any]]) -> None:
    """Every matching document (k above the corpus size) equals brute force exactly; at a
    small k the scores are equal and so are the documents above the k-th score (documents
    tied at the cut may be any of the tied ones)."""
    for q in QUERIES:
        got = [(h.doc_id, h.score) for h in index.search(q, mode="sparse", k=1000)]
        assert got == _brute(index, live, q, 1000), q
        top = [(h.doc_id, h.score) for h in index.search(q, mode="sparse", k=5)]
        want = _brute(index, live, q, 5)
        assert [s for _, s in top] == [s for _, s in want]
        cut = want[-1][1]
        assert {d for d, s in top if s > cut} == {d for d, s in want if s > cut}


def test_sparse_equals_brute_force_through_updates(tmp_path: Path) -> None:
    docs = corpus(40, seed=3)
    live = {d["id"]: d for d in docs[:25]}
    with _create(tmp_path / "idx") as idx:
        idx.add(docs[:15])
        idx.add(docs[15:25])
        _assert_matches(idx, live)
        idx.delete(["d3", "d16", "d7"])
        for i in ("d3", "d16", "d7"):
            live.pop(i)
        _assert_matches(idx, live)
        changed = [dict(docs[1], text="protein protein cell therapy uniqnew"), docs[2]]
        res = idx.upsert(changed + docs[25:40])
        assert (res.added, res.updated, res.unchanged) == (15, 1, 1)
        live.update({d["id"]: d for d in changed + docs[25:40]})
        _assert_matches(idx, live)
        files_before = sorted(p.name for p in (tmp_path / "idx" / "sparse").iterdir())
        idx.compact()
        files_after = sorted(p.name for p in (tmp_path / "idx" / "sparse").iterdir())
        assert files_after != files_before and not [f for f in files_after if ".tmp" in f]
        _assert_matches(idx, live)
        idx.check()
        keep = {i for i, d in live.items() if d["metadata"]["lang"] == "de"}
        for q in QUERIES:
            hits = idx.search(q, mode="sparse", k=1000, filter={"lang": "de"})
            assert [(h.doc_id, h.score) for h in hits] == _brute(idx, live, q, 1000, keep)
    with _open(tmp_path / "idx") as idx:
        _assert_matches(idx, live)
    with Index.open(
        tmp_path / "idx", encoder=HashEncoder(64, name="h"), readonly=True, sparse=CountSparse()
    ) as reader:
        _assert_matches(reader, live)


def test_hits_locate_the_best_chunk(tmp_path: Path) -> None:
    doc = {
        "id": "long",
        "text": "alpha beta gamma delta epsilon zeta eta theta iota kappa "
        "lambda mu nu xi omicron pi rho sigma tau upsilon phi chi psi omega "
        * 2
        + "needle haystack",
    }
    with _create(tmp_path / "idx") as idx:
        idx.add([doc, {"id": "other", "text": "nothing in common"}])
        hit = idx.search("needle haystack", mode="sparse", k=5)[0]
        assert hit.doc_id == "long" and hit.chunk is not None and hit.chunk > 0
        assert hit.span is not None and "needle" in doc["text"][hit.span[0] : hit.span[1]]
        assert hit.ranks == {"sparse": 1} and hit.scores == {"sparse": hit.score}
        assert [h.doc_id for h in idx.search("needle", mode="sparse", k=5)] == ["long"]


def test_hybrid_fuses_three_retrievers_by_rrf(tmp_path: Path) -> None:
    docs = corpus(30, seed=5)
    with _create(tmp_path / "idx") as idx:
        idx.add(docs)
        for q in QUERIES:
            hits = idx.search(q, mode="hybrid", k=10, retrievers=["bm25", "dense", "sparse"])
            assert any("sparse" in h.ranks for h in hits)
            for h in hits:
                assert set(h.ranks) <= {"bm25", "dense", "sparse"}
                assert h.score == pytest.approx(sum(1 / (60 + r) for r in h.ranks.values()))
            sparse_only = idx.search(q, mode="sparse", k=100)
            ranks = {h.doc_id: h.rank for h in sparse_only}
            for h in hits:
                if "sparse" in h.ranks:
                    assert h.ranks["sparse"] == ranks[h.doc_id]
            default = idx.search(q, mode="hybrid", k=10)
            assert all("sparse" not in h.ranks for h in default)
            weighted = idx.search(
                q, mode="hybrid", k=10, fusion="weighted", retrievers=("sparse", "dense", "bm25")
            )
            assert all(0 <= h.score <= 1 + 1e-9 for h in weighted)
            two = idx.search(
                q, mode="hybrid", k=10, fusion="weighted", alpha=1.0, retrievers=("dense", "sparse")
            )
            dense_top = idx.search(q, mode="dense", k=1)[0].doc_id
            assert two[0].doc_id == dense_top  # alpha weighs dense, the first in fusion order


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"mode": "hybrid", "retrievers": ["bm25", "colbert"]}, "unknown retriever"),
        ({"mode": "hybrid", "retrievers": ["bm25", "bm25"]}, "distinct"),
        ({"mode": "hybrid", "retrievers": []}, "distinct"),
        ({"mode": "hybrid", "retrievers": "sparse"}, "list"),
        ({"mode": "dense", "retrievers": ["dense"]}, "'hybrid' only"),
    ],
)
def test_bad_retrievers(tmp_path: Path, kwargs: dict[str, Any], match: str) -> None:
    with _create(tmp_path / "idx") as idx:
        idx.add(corpus(3))
        with pytest.raises(InvalidInput, match=match):
            idx.search("protein", **kwargs)


def test_sparse_needs_sparse_postings(tmp_path: Path) -> None:
    with Index.create(tmp_path / "idx", encoder=HashEncoder(64, name="h")) as idx:
        idx.add(corpus(3))
        for kwargs in ({"mode": "sparse"}, {"mode": "hybrid", "retrievers": ["sparse", "bm25"]}):
            with pytest.raises(InvalidInput, match="sparse='splade-tiny'"):
                idx.search("protein", **kwargs)  # type: ignore[arg-type]
        assert "sparse" not in idx.stats().bytes
    with pytest.raises(InvalidInput, match="no sparse postings"):
        Index.open(tmp_path / "idx", encoder=HashEncoder(64, name="h"), sparse=CountSparse())


def test_manifest_records_the_model_and_open_checks_it(tmp_path: Path) -> None:
    with _create(tmp_path / "idx") as idx:
        idx.add(corpus(5))
        stats = idx.stats()
        assert stats.bytes["sparse"] > 0
        assert stats.bytes["total"] == sum(v for p, v in stats.bytes.items() if p != "total")
    meta = json.loads((tmp_path / "idx" / "manifest.json").read_text())
    assert meta["sparse"] == {
        "name": "count-sparse",
        "model_id": f"count-sparse@{VOCAB}",
        "vocab_size": VOCAB,
        "options": {},
    }
    dense = HashEncoder(64, name="h")
    with pytest.raises(ModelMismatch, match="count-sparse@97"):
        Index.open(tmp_path / "idx", encoder=dense, sparse=CountSparse(name="other"))
    with pytest.raises(DimensionMismatch):
        Index.open(tmp_path / "idx", encoder=dense, sparse=CountSparse(vocab=50))
    with pytest.raises(InvalidInput, match="sparse must be"):
        Index.create(tmp_path / "new", encoder=dense, sparse=42)  # type: ignore[arg-type]


def test_failed_writes_leave_no_sparse_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    docs = corpus(12, seed=1)
    with _create(tmp_path / "idx") as idx:
        idx.add(docs[:6])
        before = sorted(p.name for p in (tmp_path / "idx" / "sparse").iterdir())

        def boom(*args: object) -> None:
            raise OSError("disk full")

        with monkeypatch.context() as m:  # fails after the segment files are written
            m.setattr(idx.field("bm25"), "write", boom)
            with pytest.raises(OSError):
                idx.add(docs[6:])
        with monkeypatch.context() as m:  # fails inside the SQLite commit
            m.setattr(idx._store, "insert_chunks", boom)
            with pytest.raises(OSError):
                idx.add(docs[6:])
        assert sorted(p.name for p in (tmp_path / "idx" / "sparse").iterdir()) == before
        assert len(idx) == 6
        _assert_matches(idx, {d["id"]: d for d in docs[:6]})
        idx.add(docs[6:])
        _assert_matches(idx, {d["id"]: d for d in docs})


def test_recovery_removes_unregistered_sparse_files(tmp_path: Path) -> None:
    docs = corpus(8, seed=2)
    with _create(tmp_path / "idx") as idx:
        idx.add(docs)
        _, seg = idx._store.reserve(0)  # a crashed batch: files written, never committed
    root = tmp_path / "idx" / "sparse"
    stray = SparseVectors.from_dense(np.ones((2, VOCAB), np.float32))
    sparse_index.write_segment(root, seg, stray)
    (root / ".tmp-seg-000099.rows.npy").write_bytes(b"partial")
    with _open(tmp_path / "idx") as idx:
        assert not [p for p in root.iterdir() if p.name.startswith(f"seg-{seg:06d}")]
        assert not [p for p in root.iterdir() if p.name.startswith(".tmp")]
        idx.check()
        _assert_matches(idx, {d["id"]: d for d in docs})


def test_check_detects_damaged_postings(tmp_path: Path) -> None:
    with _create(tmp_path / "idx") as idx:
        idx.add(corpus(6))
    weights = sorted((tmp_path / "idx" / "sparse").glob("*.weights.npy"))[0]
    np.save(weights, -np.abs(np.load(weights)), allow_pickle=False)
    with _open(tmp_path / "idx") as idx, pytest.raises(IndexCorrupt, match="sparse segment"):
        idx.check()
    np.save(weights, np.zeros(3, np.float32), allow_pickle=False)
    with _open(tmp_path / "idx") as idx, pytest.raises(IndexCorrupt, match="weights"):
        idx.search("protein", mode="sparse")


@pytest.mark.slow
def test_real_splade_encoder_in_an_index(tmp_path: Path) -> None:
    """A tiny random SPLADE model: postings scores equal the encoder's own dot products, and
    the index reopens by recorded path and options alone."""
    from test_splade_helpers import build_tiny_mlm

    folder = build_tiny_mlm(tmp_path / "mlm")
    docs = [
        {"id": f"t{i}", "text": t}
        for i, t in enumerate(
            [
                "cats purr",
                "dogs bark at the cat",
                "the stock market fell",
                "paris is a city",
                "cancer cells and genes",
                "the sea is blue and green",
            ]
        )
    ]
    idx = Index.create(
        tmp_path / "idx",
        encoder=HashEncoder(64, name="h"),
        sparse=str(folder),
        sparse_options={"backend": "torch"},
    )
    with idx:
        idx.add(docs)
        enc = idx.field("sparse").encoder()
        want = enc.score(
            enc.encode_queries(["cat market"]),
            enc.encode_documents([d["text"] for d in docs]),
        )[0]
        hits = idx.search("cat market", mode="sparse", k=10)
        assert [h.doc_id for h in hits] == [docs[i]["id"] for i in np.argsort(-want)]
        np.testing.assert_allclose([h.score for h in hits], np.sort(want)[::-1], rtol=1e-5)
    with Index.open(tmp_path / "idx", encoder=HashEncoder(64, name="h")) as idx:
        assert not idx.field("sparse").encoder_loaded
        assert [h.doc_id for h in idx.search("cat market", mode="sparse", k=10)] == [
            h.doc_id for h in hits
        ]


CHILD = (
    r"""
import sys
sys.path.insert(0, sys.argv[1])
import json
from test_index_sparse import CountSparse
from embedstack import HashEncoder
from embedstack.index import Index
batches = json.load(open(sys.argv[3]))
idx = Index.open(sys.argv[2], encoder=HashEncoder(64, name="h"), sparse=CountSparse())
"""
    + WRITER_LOOP
)


@pytest.mark.slow
def test_sigkill_during_sparse_adds(tmp_path: Path) -> None:
    """A writer killed at random moments: acknowledged batches are searchable by sparse
    postings equal to brute force, no batch is partial, no unregistered sparse file stays."""
    docs = corpus(8 * 150, seed=9)
    batches = [docs[i : i + 8] for i in range(0, len(docs), 8)]
    (tmp_path / "b.json").write_text(json.dumps(batches))
    _create(tmp_path / "idx").close()
    tests = str(Path(__file__).resolve().parent)
    args = [tests, str(tmp_path / "idx"), str(tmp_path / "b.json")]
    for log in sigkill_rounds(CHILD, args):
        with _open(tmp_path / "idx") as idx:
            idx.check()
            registered = {seg for seg, _, _ in idx._store.segments()}
            files = {p.name for p in (tmp_path / "idx" / "sparse").iterdir()}
            assert files == {n for seg in registered for n in sparse_index.segment_files(seg)}
            _assert_matches(idx, committed_batches(idx, batches, log.acked))
    assert log.kills >= 1 and log.acked
