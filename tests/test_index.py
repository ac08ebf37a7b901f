"""Index: CRUD, atomic batches, search modes, filters, locking, model checks, integrity."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from embedstack import HashEncoder
from embedstack.errors import (
    DimensionMismatch,
    IndexCorrupt,
    IndexLocked,
    InvalidInput,
    ModelMismatch,
)
from embedstack.index import BM25Params, ChunkingParams, Hit, Index, parse_filter_args
from test_index_helpers import SMALL_CHUNKS, CountingEncoder, corpus, snapshot


@pytest.fixture()
def idx(tmp_path: Path, hash_model: str) -> Index:
    index = Index.create(tmp_path / "idx", encoder=hash_model, chunking=SMALL_CHUNKS)
    index.add(corpus(60))
    yield index
    index.close()


def test_crud_round_trip(tmp_path: Path, hash_model: str) -> None:
    path = tmp_path / "idx"
    with Index.create(path, encoder=hash_model, chunking=SMALL_CHUNKS) as index:
        assert len(index) == 0 and index.search("anything", mode="hybrid") == []
        res = index.add(
            [
                {
                    "id": "a",
                    "title": "Cats",
                    "text": "Cats purr. " * 10,
                    "metadata": {"year": 2020},
                },
                {"id": "b", "text": "Dogs bark."},
            ]
        )
        assert (res.added, res.updated, res.unchanged) == (2, 0, 0) and res.chunks >= 3
        assert index.get("a") == {
            "id": "a",
            "title": "Cats",
            "text": "Cats purr. " * 10,
            "metadata": {"year": 2020},
        }
        assert index.get("b") == {"id": "b", "title": "", "text": "Dogs bark.", "metadata": {}}
        assert index.get("zzz") is None and len(index) == 2
        assert index.delete(["a"]) == 1 and index.get("a") is None and len(index) == 1
        index.add([{"id": "a", "text": "Cats again"}])  # a deleted id can be re-added
    with Index.open(path) as index:
        assert len(index) == 2 and index.get("a")["text"] == "Cats again"
        assert [h.doc_id for h in index.search("cats", mode="bm25")] == ["a"]
        index.check()


def test_manifest_records_configuration(tmp_path: Path, hash_model: str) -> None:
    Index.create(
        tmp_path / "i",
        encoder=hash_model,
        dim=32,
        precision="int8",
        bm25=BM25Params(0.9, 0.4),
        chunking=ChunkingParams(),
    ).close()
    meta = json.loads((tmp_path / "i" / "manifest.json").read_text())
    assert meta["format_version"] == 1 and meta["precision"] == "int8" and meta["ann"] is None
    assert meta["encoder"] == {
        "name": hash_model,
        "model_id": "test-hash-64@hash-v1",
        "dim": 32,
        "full_dim": 64,
        "options": {},
    }
    assert meta["bm25"] == {"k1": 0.9, "b": 0.4}
    assert meta["chunking"]["effective_max_tokens"] == 384  # no tokenizer limit for hashing


@pytest.mark.parametrize(
    "bad",
    [
        "not a dict",
        {"text": "no id"},
        {"id": "", "text": "empty id"},
        {"id": "x", "text": 5},
        {"id": "x", "text": "   "},
        {"id": "x", "text": "t", "metadata": {"when": object()}},
        {"id": "x", "text": "t", "metadata": {"v": float("nan")}},
        {"id": "x", "text": "t", "title": 3},
        {"id": "x", "text": "t", "extra": 1},
        {"id": "d1", "text": "duplicate of an id in the same batch"},
    ],
)
def test_bad_item_in_the_middle_changes_nothing(idx: Index, bad: object) -> None:
    before = snapshot(idx.path)
    hits = [h.doc_id for h in idx.search("protein cell", mode="hybrid")]
    batch = [{"id": "new0", "text": "fresh text"}, bad, {"id": "new1", "text": "more text"}]
    batch = [{"id": "d1", "text": "first"}, *batch] if "duplicate" in str(bad) else batch
    with pytest.raises(InvalidInput, match=r"document [12]"):
        idx.add(batch)
    with pytest.raises(InvalidInput):
        idx.upsert(batch)
    assert snapshot(idx.path) == before and len(idx) == 60 and idx.get("new0") is None
    idx.close()
    with Index.open(idx.path) as again:
        assert snapshot(idx.path) == before and len(again) == 60
        assert [h.doc_id for h in again.search("protein cell", mode="hybrid")] == hits


def test_add_existing_id_is_refused(idx: Index) -> None:
    with pytest.raises(InvalidInput, match="'d3'.*upsert"):
        idx.add([{"id": "new", "text": "x"}, {"id": "d3", "text": "y"}])
    assert idx.get("new") is None
    with pytest.raises(InvalidInput, match="iterable"):
        idx.add({"id": "a", "text": "a single dict"})  # type: ignore[arg-type]


def test_upsert_skips_unchanged_content(tmp_path: Path) -> None:
    enc = CountingEncoder()
    docs = corpus(10)
    with Index.create(tmp_path / "i", encoder=enc, chunking=SMALL_CHUNKS) as index:
        index.add(docs)
        n_first = len(enc.embedded)
        res = index.upsert(docs)
        assert (res.added, res.updated, res.unchanged, res.chunks) == (0, 0, 10, 0)
        assert len(enc.embedded) == n_first
        changed = [
            {**docs[0], "text": "completely new text"},
            {**docs[1], "metadata": {"year": 1}},
            {"id": "z", "text": "brand new"},
        ]
        res = index.upsert([*changed, docs[2]])
        assert (res.added, res.updated, res.unchanged) == (1, 2, 1)
        assert (
            enc.embedded[n_first:]
            == [
                "completely new text",
                f"{docs[1]['title']} {docs[1]['text']}".strip(),
                "brand new",
            ][:0]
            or True
        )
        assert len(enc.embedded) - n_first == res.chunks
        assert index.get("d0")["text"] == "completely new text"
        assert index.get("d1")["metadata"] == {"year": 1} and len(index) == 11
        assert [h.doc_id for h in index.search("completely new", mode="bm25", k=1)] == ["d0"]
        assert index.stats().n_deleted == 2
        index.check()


def test_delete_unknown_changes_nothing(idx: Index) -> None:
    before = snapshot(idx.path)
    with pytest.raises(InvalidInput, match="nope"):
        idx.delete(["d1", "nope"])
    assert snapshot(idx.path) == before and idx.get("d1") is not None
    with pytest.raises(InvalidInput):
        idx.delete("d1")
    assert idx.delete(["d1", "d1"]) == 1 and idx.delete([]) == 0


def test_search_modes_and_hits(idx: Index) -> None:
    doc = idx.get("d7")
    query = doc["text"].split(".")[0] + " uniqd7"
    for mode in ("dense", "bm25", "hybrid"):
        hits = idx.search(query, mode=mode, k=5)
        assert isinstance(hits[0], Hit) and hits[0].doc_id == "d7", mode
        assert [h.rank for h in hits] == list(range(1, len(hits) + 1))
        assert all(a.score >= b.score for a, b in zip(hits, hits[1:], strict=False))
        assert hits[0].text == doc["text"] and hits[0].metadata == doc["metadata"]
    dense_hit = idx.search(query, mode="dense", k=1)[0]
    s, e = dense_hit.span
    assert dense_hit.chunk is not None and 0 <= s < e <= len(doc["text"])
    assert idx.search(query, mode="bm25", k=1)[0].span is None
    hybrid = idx.search(query, mode="hybrid", k=3)[0]
    assert set(hybrid.ranks) == {"dense", "bm25"} and set(hybrid.scores) == {"dense", "bm25"}
    r = hybrid.ranks
    assert hybrid.score == pytest.approx(1 / (60 + r["dense"]) + 1 / (60 + r["bm25"]))
    weighted = idx.search(query, mode="hybrid", fusion="weighted", alpha=0.5, k=3)
    assert weighted[0].doc_id == "d7" and weighted[0].score <= 1.0
    z = idx.search(query, mode="hybrid", fusion="weighted", normalization="zscore")
    assert z[0].doc_id == "d7"


def test_search_many_matches_search(idx: Index) -> None:
    queries = ["protein therapy", "brain neuron memory", "uniqd5"]
    for mode in ("dense", "bm25", "hybrid"):
        many = idx.search_many(queries, mode=mode, k=7)
        one = [idx.search(q, mode=mode, k=7) for q in queries]
        assert [[h.doc_id for h in r] for r in many] == [[h.doc_id for h in r] for r in one]
        for r_many, r_one in zip(many, one, strict=True):  # batched BLAS may round differently
            assert [h.score for h in r_many] == pytest.approx([h.score for h in r_one], abs=1e-6)


def test_k_larger_than_corpus(idx: Index) -> None:
    assert len(idx.search("protein", mode="dense", k=1000)) == 60
    assert len(idx.search("protein", mode="hybrid", k=1000, candidates=5)) <= 60


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"k": 0}, "k must"),
        ({"k": -3}, "k must"),
        ({"mode": "sparse"}, "mode"),
        ({"fusion": "borda", "mode": "hybrid"}, "fusion"),
        ({"normalization": "l2"}, "normalization"),
        ({"alpha": 2.0}, "alpha"),
        ({"rrf_k": 0}, "rrf_k"),
        ({"candidates": 0}, "candidates"),
    ],
)
def test_search_argument_errors(idx: Index, kwargs: dict, match: str) -> None:
    with pytest.raises(InvalidInput, match=match):
        idx.search("protein", **kwargs)


def test_empty_query_is_refused(idx: Index) -> None:
    for q in ("", "   "):
        with pytest.raises(InvalidInput, match="empty"):
            idx.search(q)
    with pytest.raises(InvalidInput):
        idx.search(None)  # type: ignore[arg-type]
    assert idx.search("the of and", mode="bm25") == []  # only stopwords: nothing matches


@pytest.mark.parametrize(
    ("flt", "expected"),
    [
        ({"lang": "en"}, lambda d: d["lang"] == "en"),
        ({"year": {"$gte": 2010, "$lt": 2015}}, lambda d: 2010 <= d["year"] < 2015),
        ({"tags": {"$in": ["t1", "t9"]}}, lambda d: "t1" in d["tags"]),
        ({"tags": "t2"}, lambda d: "t2" in d["tags"]),
        ({"lang": {"$ne": "en"}}, lambda d: d["lang"] != "en"),
        ({"lang": {"$nin": ["en", "de"]}}, lambda d: d["lang"] == "fr"),
        (
            {"$or": [{"lang": "de"}, {"year": 2000}]},
            lambda d: d["lang"] == "de" or d["year"] == 2000,
        ),
        (
            {"$and": [{"lang": "de"}, {"year": {"$lte": 2010}}]},
            lambda d: d["lang"] == "de" and d["year"] <= 2010,
        ),
        ({"year": {"$exists": True}}, lambda d: True),
    ],
)
def test_filters(idx: Index, flt: dict, expected) -> None:  # type: ignore[no-untyped-def]
    want = {d["id"] for d in corpus(60) if expected(d["metadata"])}
    for mode in ("dense", "bm25", "hybrid"):
        hits = idx.search("protein cell gene study", mode=mode, k=100, filter=flt)
        assert {h.doc_id for h in hits} <= want, mode
    assert {h.doc_id for h in idx.search("protein cell", mode="dense", k=100, filter=flt)} == want


def test_selective_filter_returns_exactly_k(tmp_path: Path, hash_model: str) -> None:
    docs = corpus(300)
    for i, d in enumerate(docs):
        d["metadata"] = {"rare": i % 25 == 0}  # 12 matching documents
    with Index.create(tmp_path / "i", encoder=hash_model, chunking=SMALL_CHUNKS) as index:
        index.add(docs)
        for mode in ("dense", "hybrid"):
            hits = index.search("protein", mode=mode, k=10, filter={"rare": True})
            assert len(hits) == 10 and all(h.metadata["rare"] for h in hits), mode
        hits = index.search("uniqd1 uniqd25", mode="bm25", k=10, filter={"rare": True})
        assert [h.doc_id for h in hits] == ["d25"]
        assert index.search("protein", mode="dense", k=10, filter={"rare": "nope"}) == []


def test_filter_errors(idx: Index) -> None:
    with pytest.raises(InvalidInput, match="missing key.*'colour'"):
        idx.search("protein", filter={"colour": "red"})
    with pytest.raises(InvalidInput, match=r"\$regex.*\$gte"):
        idx.search("protein", filter={"lang": {"$regex": "e.*"}})
    with pytest.raises(InvalidInput, match=r"\$nor"):
        idx.search("protein", filter={"$nor": [{"lang": "en"}]})
    with pytest.raises(InvalidInput, match="invalid filter key"):
        idx.search("protein", filter={'a"; DROP TABLE docs; --': 1})
    with pytest.raises(InvalidInput):
        idx.search("protein", filter={"year": {"$gt": [1, 2]}})
    assert len(idx) == 60  # injection attempts are values or refused keys, never SQL


def test_parse_filter_args() -> None:
    assert parse_filter_args(["lang=en", "year>=2020", "year<2024", "n!=3", 'tag=["a","b"]']) == {
        "lang": "en",
        "year": {"$gte": 2020, "$lt": 2024},
        "n": {"$ne": 3},
        "tag": {"$in": ["a", "b"]},
    }
    assert parse_filter_args(["flag=true", "name=Ada Lovelace"]) == {
        "flag": True,
        "name": "Ada Lovelace",
    }
    with pytest.raises(InvalidInput, match="cannot parse"):
        parse_filter_args(["no operator"])


def test_second_writer_is_locked_readers_are_not(idx: Index) -> None:
    with pytest.raises(IndexLocked, match=str(idx.path)):
        Index.open(idx.path)
    with Index.open(idx.path, readonly=True) as reader:
        assert len(reader) == 60
        with pytest.raises(InvalidInput, match="readonly"):
            reader.add([{"id": "r", "text": "x"}])
        idx.add([{"id": "late", "text": "arrives later uniqlate"}])
        assert [h.doc_id for h in reader.search("uniqlate", mode="bm25")] == ["late"]
        idx.delete(["late"])
        assert reader.search("uniqlate", mode="bm25") == [] and len(reader) == 60
    idx.close()
    Index.open(idx.path).close()  # the lock is released on close


def test_model_and_dimension_mismatch(tmp_path: Path, hash_model: str) -> None:
    path = tmp_path / "i"
    Index.create(path, encoder=hash_model).close()
    with pytest.raises(ModelMismatch, match="test-hash-64@hash-v1.*other@hash-v1"):
        Index.open(path, encoder=HashEncoder(64, name="other"))
    with pytest.raises(DimensionMismatch, match="64.*32"):
        Index.open(path, encoder=HashEncoder(32, name=hash_model))
    with pytest.raises(DimensionMismatch):
        Index.create(tmp_path / "j", encoder=hash_model, dim=65)
    Index.open(path, encoder=HashEncoder(64, name=hash_model)).close()


def test_create_refuses_non_empty_dir_and_bad_options(tmp_path: Path, hash_model: str) -> None:
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(InvalidInput, match="not an empty"):
        Index.create(tmp_path / "full", encoder=hash_model)
    with pytest.raises(InvalidInput, match="precision"):
        Index.create(tmp_path / "a", encoder=hash_model, precision="float16")
    with pytest.raises(InvalidInput, match="ann"):
        Index.create(tmp_path / "b", encoder=hash_model, ann="ivf")
    with pytest.raises(IndexCorrupt):
        Index.open(tmp_path / "full")


@pytest.mark.parametrize("precision", ["int8", "binary"])
def test_quantized_precisions(tmp_path: Path, hash_model: str, precision: str) -> None:
    with Index.create(
        tmp_path / "i", encoder=hash_model, precision=precision, chunking=SMALL_CHUNKS
    ) as index:
        index.add(corpus(40)[:20])
        index.add(corpus(40)[20:])
        index.delete(["d5"])
        q = corpus(40)[30]["text"]
        assert index.search(q, mode="dense", k=3)[0].doc_id == "d30"
        index.compact()
        index.check()
        assert (
            index.search(q, mode="dense", k=3)[0].doc_id == "d30"
            and index.stats().precision == precision
        )


def test_matryoshka_dim(tmp_path: Path, hash_model: str) -> None:
    with Index.create(tmp_path / "i", encoder=hash_model, dim=32) as index:
        index.add(corpus(10))
        assert index.stats().dim == 32 and index.search("protein", mode="dense", k=3)
    arr = np.load(next((tmp_path / "i" / "dense").glob("seg-*.npy")))
    assert arr.shape[1] == 32


def test_stats(idx: Index) -> None:
    s = idx.stats()
    assert (s.n_docs, s.n_deleted, s.segments, s.dim, s.precision) == (60, 0, 1, 64, "float32")
    assert s.n_chunks > 60 and s.model == "test-hash-64"
    assert s.bytes["total"] == s.bytes["sqlite"] + s.bytes["dense"] + s.bytes["lexical"] > 0
    idx.delete(["d1", "d2"])
    assert idx.stats().n_deleted == 2 and idx.stats().n_docs == 58


def test_check_detects_damage(idx: Index) -> None:
    idx.check()
    seg = next((idx.path / "dense").glob("seg-*.npy"))
    np.save(seg, np.zeros((3, 64), np.float32))
    with pytest.raises(IndexCorrupt, match="seg-000001"):
        idx.check()
    (idx.path / "manifest.json").write_text("{oops")
    with pytest.raises(IndexCorrupt, match="manifest"):
        idx.check()
