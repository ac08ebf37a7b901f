"""Index updates: incremental builds equal one-shot builds; compaction reclaims space."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from embedstack.index import Index, _merge
from embedstack.index.merge_policy import MergePolicy
from test_index_helpers import SMALL_CHUNKS, corpus

QUERIES = [
    "protein cell therapy",
    "brain neuron memory sleep",
    "uniqd17 cancer",
    "immune response vaccine trial",
    "insulin diabetes obesity diet",
    "kinase",
]
TOL = 1e-5


def _assert_same(a: list, b: list) -> None:
    """Same scores (±TOL) and the same documents, up to the order of (near-)ties."""
    for ra, rb in zip(a, b, strict=True):
        sa = np.array([h.score for h in ra])
        sb = np.array([h.score for h in rb])
        np.testing.assert_allclose(sa, sb, atol=TOL, rtol=0)
        if len(sa):
            cut = sa[-1] + TOL
            assert {h.doc_id for h in ra if h.score > cut} == {
                h.doc_id for h in rb if h.score > cut
            }
            for ha, hb in zip(ra, rb, strict=True):
                # the same best chunk, except where a document's chunks tie: hits at the cut
                # (k above the matches reaches chunks scoring exactly 0, any of which is best)
                if ha.doc_id == hb.doc_id and ha.score > cut:
                    assert ha.span == hb.span and ha.chunk == hb.chunk


@pytest.mark.parametrize("compacted", [False, True])
@pytest.mark.parametrize("precision", ["float32", "int8"])
def test_incremental_equals_one_shot(
    tmp_path: Path, hash_model: str, compacted: bool, precision: str
) -> None:
    docs = corpus(200, seed=3)
    opts = {"encoder": hash_model, "chunking": SMALL_CHUNKS, "precision": precision}
    one = Index.create(tmp_path / "one", **opts)
    one.add(docs)
    inc = Index.create(tmp_path / "inc", **opts)
    for part in np.array_split(np.arange(200), 5):
        inc.add([docs[i] for i in part])
    gone = np.random.default_rng(0).choice(200, size=20, replace=False)
    inc.delete([docs[i]["id"] for i in gone])
    inc.add([docs[i] for i in gone])
    if compacted:
        inc.compact()
    inc.check()
    modes = ("bm25", "dense") if precision == "float32" else ("bm25",)
    for mode in modes:
        _assert_same(
            one.search_many(QUERIES, mode=mode, k=20), inc.search_many(QUERIES, mode=mode, k=20)
        )
    # hybrid: RRF ranks of float32 near-ties (hash vectors score ~1e-9 vs 0) may swap
    a, b = (x.search_many(QUERIES, mode="hybrid", k=3) for x in (one, inc))
    assert [r[0].doc_id for r in a] == [r[0].doc_id for r in b]
    flt = {"lang": "de"}
    _assert_same(
        one.search_many(QUERIES, mode="bm25", k=20, filter=flt),
        inc.search_many(QUERIES, mode="bm25", k=20, filter=flt),
    )
    if precision == "int8":  # per-segment calibrations differ: compare rankings loosely
        a = one.search_many(QUERIES, mode="dense", k=5)
        b = inc.search_many(QUERIES, mode="dense", k=5)
        assert [r[0].doc_id for r in a] == [r[0].doc_id for r in b]
    one.close()
    inc.close()


def test_many_small_writes_rank_like_one_batch(
    tmp_path: Path, hash_model: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A served index written a few documents at a time holds one segment per write (the
    soak made thousands); dense search over one big segment plus 60 small ones, with
    upserts and deletes between them, ranks like the same documents added at once, with
    and without a filter, for k below, between and above the segment sizes. (Writes now
    merge segments, tests/test_index_merge.py; merging is off here so that the search over
    many segments, what an index written with another policy holds, stays tested.)"""
    never = MergePolicy(segments_per_tier=10**6, floor_docs=1, max_merged_docs=10**9,
                        deletes_pct_allowed=100.0)  # fmt: skip
    monkeypatch.setattr(_merge, "POLICY", never)
    docs = corpus(220, seed=5)
    opts = {"encoder": hash_model, "chunking": SMALL_CHUNKS}
    inc = Index.create(tmp_path / "inc", **opts)
    inc.add(docs[:100])  # bigger than a fetch for k 5 and 40: its rows are partitioned
    rng = np.random.default_rng(1)
    start = 100
    while start < len(docs):
        n = int(rng.integers(1, 4))
        inc.add(docs[start : start + n])
        start += n
        if rng.random() < 0.3:  # a new version of an earlier document: its old rows die
            i = int(rng.integers(0, start))
            docs[i] = {**docs[i], "text": f"{docs[i]['text']} Kinase trial {start}."}
            inc.upsert([docs[i]])
    gone = {docs[i]["id"] for i in rng.choice(len(docs), size=15, replace=False)}
    inc.delete(sorted(gone))
    one = Index.create(tmp_path / "one", **opts)
    one.add([d for d in docs if d["id"] not in gone])
    assert inc.stats().segments > 60
    n_de = sum(d["metadata"]["lang"] == "de" and d["id"] not in gone for d in docs)
    for k in (1, 5, 40, 300):
        for flt in (None, {"lang": "de"}):
            got = inc.search_many(QUERIES, mode="dense", k=k, filter=flt)
            _assert_same(one.search_many(QUERIES, mode="dense", k=k, filter=flt), got)
            if flt:  # k whenever k match, and only those
                assert all(len(hits) == min(k, n_de) for hits in got)
                assert {h.metadata["lang"] for hits in got for h in hits} == {"de"}
    one.close()
    inc.close()


def _size(index: Index) -> int:
    return index.stats().bytes["total"]


def test_compaction_reclaims_deleted_bytes(tmp_path: Path, hash_model: str) -> None:
    docs = corpus(400, seed=5)
    keep = [d for i, d in enumerate(docs) if i % 2]
    opts = {"encoder": hash_model, "chunking": SMALL_CHUNKS}
    full = Index.create(tmp_path / "full", **opts)
    ref = Index.create(tmp_path / "ref", **opts)
    for part in np.array_split(np.arange(400), 4):
        full.add([docs[i] for i in part])
        ref.add([docs[i] for i in part if i % 2])
    full.compact()
    ref.compact()
    full_bytes, ref_bytes = _size(full), _size(ref)
    full.delete([d["id"] for i, d in enumerate(docs) if i % 2 == 0])
    assert full.stats().n_deleted == 200 and _size(full) >= full_bytes
    full.compact()
    full.check()
    deleted = full_bytes - ref_bytes
    assert deleted > 0
    assert _size(full) - ref_bytes <= 0.10 * deleted, (full_bytes, ref_bytes, _size(full))
    assert full.stats().n_deleted == 0 and len(full) == len(keep)
    assert [h.doc_id for h in full.search("uniqd1", mode="bm25")] == ["d1"]
    assert full.search("uniqd2", mode="bm25") == []
    full.close()
    with Index.open(tmp_path / "full") as again:
        again.check()
        assert len(again) == 200


def test_compaction_of_fully_deleted_segments(tmp_path: Path, hash_model: str) -> None:
    with Index.create(tmp_path / "i", encoder=hash_model) as index:
        index.add(corpus(10, prefix="a"))
        index.add(corpus(10, prefix="b"))
        index.delete([f"a{i}" for i in range(10)])
        index.compact()
        index.check()
        assert index.stats().segments == 1 and len(index) == 10
        assert len(list((tmp_path / "i" / "dense").iterdir())) == 1
        index.delete([f"b{i}" for i in range(10)])
        index.compact()
        assert index.stats().segments == 0 and index.search("protein", mode="dense") == []
        index.add(corpus(3))
        assert len(index.search("protein", mode="dense", k=5)) == 3


def _stored(index: Index, ids: list[str]) -> dict[str, dict | None]:
    return {i: index.get(i) for i in ids}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_upsert_many_answers_and_stores_as_upserts_in_turn(
    tmp_path: Path, hash_model: str, seed: int
) -> None:
    """One atomic write of several batches: each batch's AddResult (chunks included) and
    the stored documents equal those of the same batches upserted one after the other."""
    rng = np.random.default_rng(seed)
    pool = corpus(30, seed=seed)
    edits = corpus(30, seed=seed + 100)  # other texts under the same ids
    opts = {"encoder": hash_model, "chunking": SMALL_CHUNKS}
    with (
        Index.create(tmp_path / "many", **opts) as many,
        Index.create(tmp_path / "turn", **opts) as turn,
    ):
        seed_docs = pool[:10]
        many.add(seed_docs)
        turn.add(seed_docs)
        for _ in range(3):
            ids = rng.permutation(30)
            batches, start = [], 0
            for size in rng.integers(0, 6, size=4):
                take = ids[start : start + size]
                start += size
                batches.append([(edits if rng.random() < 0.5 else pool)[i] for i in take])
            expected = [turn.upsert(b) for b in batches]
            assert many.upsert_many(batches) == expected
            assert sum(r.chunks for r in expected) > 0
            every = [d["id"] for d in pool]
            assert _stored(many, every) == _stored(turn, every)
        many.check()
        q = "protein cell therapy"
        assert [h.doc_id for h in many.search(q, mode="bm25", k=30)] == [
            h.doc_id for h in turn.search(q, mode="bm25", k=30)
        ]


def test_upsert_many_refuses_a_bad_batch_or_a_shared_id_and_writes_nothing(
    tmp_path: Path, hash_model: str
) -> None:
    from embedstack.errors import InvalidInput

    with Index.create(tmp_path / "i", encoder=hash_model) as index:
        index.add([{"id": "a", "text": "alpha"}])
        good = [{"id": "b", "text": "beta"}]
        with pytest.raises(InvalidInput, match=r"^batch 1: document 0 .*text. is empty"):
            index.upsert_many([good, [{"id": "c", "text": "  "}]])
        with pytest.raises(InvalidInput, match="batch 1: document 0: id 'b' is also in batch 0"):
            index.upsert_many([good, [{"id": "b", "text": "other"}]])
        assert len(index) == 1 and index.get("b") is None
        assert index.upsert_many([]) == []
