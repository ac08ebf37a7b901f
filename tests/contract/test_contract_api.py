"""The Index contract, run on every backend (``tests/contract/conftest.py``): the same
assertions for the local index and each engine, expected values from the plain Python
oracle of ``tests/_oracle.py`` (brute-force dense, bm25s for BM25, filters in Python)."""

from __future__ import annotations

import random
from itertools import pairwise
from typing import Any

import numpy as np
import pytest
from _backends import Backend, differs, encoder

from _oracle import Oracle, assert_ranking, matches
from embedstack import HashEncoder, fusion
from embedstack.errors import DimensionMismatch, IndexNotFound, InvalidInput, ModelMismatch
from embedstack.index import AddResult, Index

WORDS = ("cat", "cats", "dog", "dogs", "running", "runs", "protein", "p53", "x", "alpha",
         "beta", "gamma", "the", "of", "purr", "bark")  # fmt: skip
TAGS = ("a", "b", "c")


def corpus(n: int, seed: int = 0) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    docs = []
    for i in range(n):
        meta: dict[str, Any] = {"year": 2018 + i % 5, "tag": TAGS[i % 3]}
        if i % 4 == 0:
            meta["tag"] = [TAGS[i % 3], TAGS[(i + 1) % 3]]
        if i % 7 == 0:
            meta["nested"] = {"lang": "en" if i % 2 else "de"}
        docs.append({"id": f"doc{i:02d}", "title": rng.choice(["", "cats", "protein alpha"]),
                     "text": " ".join(rng.choices(WORDS, k=rng.randint(2, 8))),
                     "metadata": meta})  # fmt: skip
    return docs


def oracle_of(docs: list[dict[str, Any]]) -> Oracle:
    o = Oracle(HashEncoder(64))
    for d in docs:
        o.put(d["id"], (d.get("title", ""), d["text"], d.get("metadata", {})))
    return o


QUERIES = ["cat purr", "dogs running", "protein p53 alpha", "x", "bark bark cats"]
FILTERS: list[dict[str, Any] | None] = [
    None,
    {"year": {"$gte": 2020}},
    {"tag": "a"},
    {"tag": {"$in": ["b", "c"]}, "year": {"$lt": 2021}},
    {"$or": [{"year": 2018}, {"tag": {"$ne": "a"}}]},
]


@pytest.fixture()
def filled(backend: Backend) -> tuple[Index, list[dict[str, Any]]]:
    docs = corpus(40)
    idx = backend.create()
    assert idx.add(docs[:25]) == AddResult(added=25, chunks=25)
    assert idx.add(docs[25:]) == AddResult(added=15, chunks=15)
    return idx, docs


def test_add_get_len(filled: tuple[Index, list[dict[str, Any]]]) -> None:
    idx, docs = filled
    assert len(idx) == 40
    for d in docs[:5]:
        assert idx.get(d["id"]) == {"id": d["id"], "title": d["title"], "text": d["text"],
                                    "metadata": d["metadata"]}  # fmt: skip
    assert idx.get("nope") is None


def test_upsert_and_delete(filled: tuple[Index, list[dict[str, Any]]]) -> None:
    idx, docs = filled
    changed = {**docs[0], "text": "completely new words"}
    new = {"id": "fresh", "text": "a fresh document"}
    assert idx.upsert([docs[1], changed, new]) == AddResult(added=1, updated=1, unchanged=1,
                                                            chunks=2)  # fmt: skip
    assert idx.get(docs[0]["id"])["text"] == "completely new words"  # type: ignore[index]
    assert idx.delete([docs[2]["id"], "fresh"]) == 2
    assert idx.get(docs[2]["id"]) is None and len(idx) == 40 - 1
    hits = idx.search("completely new words", mode="bm25", k=3)
    assert hits[0].doc_id == docs[0]["id"]
    assert all(h.doc_id != docs[2]["id"] for h in idx.search("x", mode="dense", k=40))


def test_upsert_many_answers_as_upserts_in_turn(backend: Backend) -> None:
    """Several batches as one write (the server's group commit): each batch's AddResult and
    the stored documents equal those of the batches upserted one after the other."""
    rng = random.Random(3)
    pool, edits = corpus(30, seed=1), corpus(30, seed=2)  # other texts under the same ids
    many, turn = backend.create(), backend.fresh().create()
    for idx in (many, turn):
        idx.add(pool[:10])
    for _ in range(3):
        ids = rng.sample(range(30), 30)
        batches = []
        for size in (rng.randint(0, 5) for _ in range(4)):
            batches.append([rng.choice((pool, edits))[i] for i in ids[:size]])
            ids = ids[size:]
        expected = [turn.upsert(b) for b in batches]
        assert many.upsert_many(batches) == expected
        every = [d["id"] for d in pool]
        assert [many.get(i) for i in every] == [turn.get(i) for i in every]
        assert len(many) == len(turn)
    with pytest.raises(InvalidInput, match="id 'doc00' is also in batch 0"):
        many.upsert_many([[pool[0]], [edits[0]]])
    q = "protein cats"
    assert [h.doc_id for h in many.search(q, mode="bm25", k=30)] == [
        h.doc_id for h in turn.search(q, mode="bm25", k=30)
    ]


@pytest.mark.parametrize("flt", FILTERS)
@pytest.mark.parametrize("mode", ["dense", "bm25"])
def test_search_matches_the_oracle(
    filled: tuple[Index, list[dict[str, Any]]], mode: str, flt: dict[str, Any] | None
) -> None:
    idx, docs = filled
    o = oracle_of(docs)
    allowed = o.allowed(flt)
    for q in QUERIES:
        expected = o.dense(q, allowed) if mode == "dense" else o.bm25(q, allowed)
        for k in (1, 5, 100):
            hits = idx.search(q, mode=mode, k=k, filter=flt)
            assert_ranking(hits, expected, k, f"{mode} {q!r} {flt} k={k}")
            assert all(matches(h.metadata, flt) for h in hits) if flt else True


def test_filtered_search_returns_k_whenever_k_match(
    filled: tuple[Index, list[dict[str, Any]]],
) -> None:
    idx, docs = filled
    flt = {"year": 2019}
    n_match = sum(d["metadata"]["year"] == 2019 for d in docs)
    for k in (1, n_match, n_match + 5):
        for mode in ("dense", "hybrid"):
            assert len(idx.search("gamma", mode=mode, k=k, filter=flt)) == min(k, n_match)
    assert idx.search("cat", mode="dense", k=5, filter={"year": 1990}) == []


def test_hybrid_is_rrf_of_the_two_lists(filled: tuple[Index, list[dict[str, Any]]]) -> None:
    idx, _ = filled
    for q in QUERIES:
        dense = [h.doc_id for h in idx.search(q, mode="dense", k=100)]
        bm25 = [h.doc_id for h in idx.search(q, mode="bm25", k=100)]
        expected = fusion.rrf([dense, bm25], k=60)[:7]
        hits = idx.search(q, mode="hybrid", k=7, candidates=100)
        assert [(h.doc_id, pytest.approx(h.score)) for h in hits] == [
            (i, pytest.approx(s)) for i, s in expected
        ]
        for h in hits:
            assert h.ranks.get("dense") == (dense.index(h.doc_id) + 1 if h.doc_id in dense
                                            else None)  # fmt: skip
            assert h.chunk == 0 and h.span == (0, len(h.text))


def test_weighted_hybrid_and_dense_scores(filled: tuple[Index, list[dict[str, Any]]]) -> None:
    idx, docs = filled
    hits = idx.search("cats protein", mode="hybrid", fusion="weighted", alpha=0.3, k=5)
    assert len(hits) == 5 and all(a.score >= b.score for a, b in pairwise(hits))
    o = oracle_of(docs)
    ids = [docs[3]["id"], "missing", docs[0]["id"], docs[3]["id"]]
    got = idx.dense_scores("cats protein", ids)
    want = o.dense("cats protein", [docs[3]["id"], docs[0]["id"]])
    assert got.dtype == np.float32 and got.shape == (4,)
    assert got[1] == -np.inf
    np.testing.assert_allclose(got[[0, 2, 3]], [want[docs[3]["id"]], want[docs[0]["id"]],
                                                want[docs[3]["id"]]], atol=1e-5)  # fmt: skip
    assert idx.dense_scores("cats", []).shape == (0,)


def test_stats_check_and_reopen(backend: Backend) -> None:
    docs = corpus(12)
    with backend.create() as idx:
        idx.add(docs)
        idx.delete([docs[0]["id"]])
        s = idx.stats()
        assert (s.n_docs, s.n_chunks, s.dim, s.precision) == (11, 11, 64, "float32")
        assert s.model_id == HashEncoder(64).model_id and s.bytes["total"] > 0
        idx.check()
        before = [h.doc_id for h in idx.search("cat dogs", k=5)]
    with backend.open() as again:
        assert len(again) == 11
        assert [h.doc_id for h in again.search("cat dogs", k=5)] == before
        again.check()
    with backend.open(readonly=True) as ro:
        assert ro.search("cat", mode="bm25", k=1)
        with pytest.raises(InvalidInput, match="readonly"):
            ro.add([{"id": "z", "text": "zz"}])


def test_open_checks_the_model(backend: Backend) -> None:
    backend.create(dim=32).close()
    with pytest.raises(ModelMismatch):
        backend.open(encoder=HashEncoder(64, name="other"))
    with pytest.raises(DimensionMismatch):
        backend.open(encoder=HashEncoder(32))
    with backend.open() as idx:
        assert idx.stats().dim == 32


def test_create_refuses_an_existing_index_and_open_a_missing_one(backend: Backend) -> None:
    backend.create().close()
    with pytest.raises(InvalidInput):
        backend.create()
    other = Backend(backend.name, backend.target.replace("idx0", "nothing-here")
                    .replace("index=t", "index=missing_t"))  # fmt: skip
    with pytest.raises(IndexNotFound):
        other.open()


def test_bad_input_changes_nothing(filled: tuple[Index, list[dict[str, Any]]]) -> None:
    idx, docs = filled
    bad_batches: list[Any] = [
        [{"id": "n1", "text": "ok"}, {"id": "n2", "text": "   "}],
        [{"id": "n1", "text": "ok"}, {"id": "n1", "text": "again"}],
        [{"id": "n1", "text": "ok"}, {"id": docs[0]["id"], "text": "exists"}],
        [{"id": "n1", "text": "ok", "metadata": {"x": float("nan")}}],
        [{"id": "n1", "text": "ok", "colour": "red"}],
        "not a list",
    ]
    for batch in bad_batches:
        with pytest.raises(InvalidInput):
            idx.add(batch)
    with pytest.raises(InvalidInput):
        idx.delete(["nope", docs[0]["id"]])
    assert len(idx) == 40 and idx.get("n1") is None and idx.get(docs[0]["id"]) is not None
    for kwargs in ({"k": 0}, {"mode": "nope"}, {"filter": {"year": {"$regex": "x"}}},
                   {"filter": {"missing_key": 1}}, {"filter": "year=2020"}):  # fmt: skip
        with pytest.raises(InvalidInput):
            idx.search("cat", **kwargs)
    for q in ("", "   "):
        with pytest.raises(InvalidInput):
            idx.search(q)
    with pytest.raises(InvalidInput):
        idx.search("cat", mode="sparse")
    with pytest.raises(InvalidInput):
        idx.get(3)  # type: ignore[arg-type]


def test_empty_index_and_unknown_words(backend: Backend) -> None:
    idx = backend.create()
    assert len(idx) == 0
    for mode in ("dense", "bm25", "hybrid"):
        assert idx.search("cat", mode=mode, k=3) == []
    idx.add(corpus(3))
    assert idx.search("zzzunknown", mode="bm25") == []
    assert idx.search_many([], mode="dense") == []


def test_engine_differences_are_what_we_say(backend: Backend) -> None:
    if differs(backend.name, "precision"):
        with pytest.raises(InvalidInput, match="not supported"):
            backend.create(precision="int8")
    else:
        backend.create(precision="int8").close()
    other = backend.fresh()
    if differs(backend.name, "colbert"):
        with pytest.raises(InvalidInput, match="not supported"):
            other.create(colbert="colbert-tiny")
    idx = other.create()
    idx.add(corpus(4))
    idx.delete(["doc00"])
    idx.upsert([{**corpus(4)[1], "text": "changed"}])
    if differs(backend.name, "n_deleted"):
        assert idx.stats().n_deleted == 0
    else:
        assert idx.stats().n_deleted == 2
    idx.compact()
    assert idx.stats().n_deleted == 0 and len(idx) == 3
    nul = [{"id": "nul", "text": "before\x00after"}]
    if differs(backend.name, "nul"):
        with pytest.raises(InvalidInput, match="NUL"):
            idx.add(nul)
        assert idx.get("nul") is None
    else:
        idx.add(nul)
        assert idx.get("nul")["text"] == "before\x00after"  # type: ignore[index]


def test_closed_index_refuses(backend: Backend) -> None:
    idx = backend.create()
    idx.close()
    idx.close()
    with pytest.raises(InvalidInput, match="closed"):
        idx.search("cat")


def test_the_encoder_helper_is_the_suite_encoder() -> None:
    assert encoder().model_id == HashEncoder(64).model_id
