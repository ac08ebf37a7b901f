"""Tier 2: update equivalence and compaction on the real SciFact corpus.

SciFact indexed in 5 batches, 10% of the documents deleted and re-added, compacted or not,
must give the same BM25 scores (±1e-5) and the same rankings as a one-shot build; deleting
half of the corpus and compacting must reclaim ≥ 90% of the deleted bytes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from embedstack import HashEncoder
from embedstack.index import Index

DATASETS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
TOL = 1e-5


def _scifact() -> tuple[list[dict], list[str]]:
    from embedstack.eval import iter_corpus, load_beir

    path = DATASETS / "scifact"
    if not path.exists():
        pytest.skip(f"{path} is not available")
    data = load_beir(path)
    docs = [
        {"id": d.id, "title": d.title, "text": d.text or d.title or d.id} for d in iter_corpus(data)
    ]
    return docs, list(data.queries.values())


def _encoder() -> HashEncoder:
    return HashEncoder(64, name="scifact-hash")  # BM25 is under test; keep embedding cheap


def _same_rankings(a: list, b: list) -> None:
    for ra, rb in zip(a, b, strict=True):
        sa = np.array([h.score for h in ra])
        sb = np.array([h.score for h in rb])
        np.testing.assert_allclose(sa, sb, atol=TOL, rtol=0)
        # same documents at every rank, except inside groups of tied scores
        for i, (ha, hb) in enumerate(zip(ra, rb, strict=True)):
            if ha.doc_id != hb.doc_id:
                tied = np.abs(sa - sa[i]) <= TOL
                assert hb.doc_id in {ra[j].doc_id for j in np.flatnonzero(tied)}


@pytest.mark.slow
@pytest.mark.parametrize("compacted", [False, True])
def test_scifact_incremental_bm25_equals_one_shot(tmp_path: Path, compacted: bool) -> None:
    docs, queries = _scifact()
    with Index.create(tmp_path / "one", encoder=_encoder()) as one:
        one.add(docs)
        expected = one.search_many(queries, mode="bm25", k=100)
    with Index.create(tmp_path / "inc", encoder=_encoder()) as inc:
        for part in np.array_split(np.arange(len(docs)), 5):
            inc.add([docs[i] for i in part])
        gone = np.random.default_rng(7).choice(len(docs), size=len(docs) // 10, replace=False)
        inc.delete([docs[i]["id"] for i in gone])
        inc.add([docs[i] for i in gone])
        if compacted:
            inc.compact()
        inc.check()
        assert len(inc) == len(docs)
        got = inc.search_many(queries, mode="bm25", k=100)
    _same_rankings(expected, got)


@pytest.mark.slow
def test_scifact_compaction_reclaims_deleted_bytes(tmp_path: Path) -> None:
    docs, _ = _scifact()
    half = docs[1::2]
    with (
        Index.create(tmp_path / "full", encoder=_encoder()) as full,
        Index.create(tmp_path / "ref", encoder=_encoder()) as ref,
    ):
        full.add(docs)
        ref.add(half)
        full.compact()
        ref.compact()
        full_bytes = full.stats().bytes["total"]
        ref_bytes = ref.stats().bytes["total"]
        full.delete([d["id"] for d in docs[0::2]])
        full.compact()
        full.check()
        after = full.stats().bytes["total"]
    deleted = full_bytes - ref_bytes
    reclaimed = (full_bytes - after) / deleted
    print(f"\nreclaimed {reclaimed:.1%} of {deleted} deleted bytes")
    assert reclaimed >= 0.90, (full_bytes, ref_bytes, after)
