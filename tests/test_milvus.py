"""The Milvus backend (milvus-lite) against the local index as the oracle.

One milvus-lite data directory per module, held open by a keeper client so its embedded
server starts once; each test has its own ``?index=`` name. The teardown checks that the
last close stopped the server.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from embedstack import HashEncoder
from embedstack.errors import (
    IndexCorrupt,
    IndexLocked,
    IndexNotFound,
    InvalidInput,
    MissingDependency,
)
from embedstack.index import Index

pytest.importorskip("pymilvus")
pytest.importorskip("milvus_lite")
# the engine seam (base Store, RemoteIndex, URI routing) comes from the pgbackend branch
pytest.importorskip("embedstack.index.backends.remote")

from embedstack.index.backends import milvus_bm25  # noqa: E402
from embedstack.index.backends.milvus import MilvusStore  # noqa: E402
from embedstack.index.backends.milvus_client import (  # noqa: E402
    connect,
    disconnect,
    parse_uri,
)

WORDS = ("cat dog bird fish run jump swim fly red blue green small big old new tree river "
         "stone light dark").split()  # fmt: skip


def corpus(n: int, seed: int = 0) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    docs = []
    for i in range(n):
        text = " ".join(rng.choice(WORDS, int(rng.integers(3, 40))))
        meta: dict[str, Any] = {"year": 2000 + i % 7, "tag": ["a", "b"] if i % 3 else "c"}
        if i % 5 == 0:
            meta["lang"] = None
        docs.append({"id": f"d{i:03d}", "title": f"doc {i % 4}", "text": text, "metadata": meta})
    return docs


@pytest.fixture(scope="module")
def lite_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A milvus-lite data directory whose server stays up for the module; stopped after."""
    from milvus_lite.server_manager import server_manager_instance

    path = str(tmp_path_factory.mktemp("milvus") / "test.db")
    target = parse_uri(f"milvus://{path}")
    keeper = connect(target)
    yield path
    disconnect(target, keeper)
    assert path not in server_manager_instance._servers  # the last close stopped it


_names = itertools.count()


@pytest.fixture()
def uri(lite_db: str) -> Iterator[str]:
    yield f"milvus://{lite_db}?index=t{next(_names)}"


def _pair(uri: str, tmp_path: Path, docs: list[dict[str, Any]], **kw: Any) -> tuple[Index, Index]:
    remote = Index.create(uri, encoder=HashEncoder(64), **kw)
    local = Index.create(tmp_path / "local", encoder=HashEncoder(64))
    for idx in (remote, local):
        idx.add(docs)
    return remote, local


def _same(a: list[Any], b: list[Any]) -> None:
    assert [h.doc_id for h in a] == [h.doc_id for h in b]
    np.testing.assert_allclose([h.score for h in a], [h.score for h in b], rtol=1e-5, atol=1e-6)
    assert [(h.chunk, h.span) for h in a] == [(h.chunk, h.span) for h in b]


QUERIES = ["red cat running", "swim in the river", "old stone tree", "big dark light fly"]
MODES: list[dict[str, Any]] = [
    {"mode": "bm25"}, {"mode": "dense"}, {"mode": "hybrid"},
    {"mode": "hybrid", "fusion": "weighted", "alpha": 0.3},
    {"mode": "bm25", "filter": {"tag": "a", "year": {"$gte": 2003}}},
    {"mode": "dense", "filter": {"$or": [{"tag": "c"}, {"lang": None}]}},
    {"mode": "hybrid", "filter": {"year": {"$ne": 2002}}, "k": 25},
]  # fmt: skip


def test_ranks_like_the_local_index_after_add_upsert_delete(uri: str, tmp_path: Path) -> None:
    docs = corpus(60)
    remote, local = _pair(uri, tmp_path, docs)
    with remote, local:
        changed = [{**d, "text": d["text"] + " river river"} for d in docs[10:20]]
        new = corpus(70, seed=1)[60:]
        results = [idx.upsert(changed + new) for idx in (remote, local)]
        assert results[0] == results[1] and results[0].updated == 10
        for idx in (remote, local):
            idx.delete([d["id"] for d in docs[:8]])
        assert len(remote) == len(local) == 62
        for opts in MODES:
            got = remote.search_many(QUERIES, **{"k": 10, **opts})
            want = local.search_many(QUERIES, **{"k": 10, **opts})
            for a, b in zip(got, want, strict=True):
                _same(a, b)
        ids = ["d050", "d015", "nope", "d001"]
        np.testing.assert_allclose(remote.dense_scores("red cat", ids),
                                   local.dense_scores("red cat", ids), rtol=1e-6)  # fmt: skip
        assert remote.get("d015") == local.get("d015")
        assert remote.get("d001") is None


def test_upsert_counts_and_unchanged(uri: str, tmp_path: Path) -> None:
    docs = corpus(12)
    remote, local = _pair(uri, tmp_path, docs)
    with remote, local:
        batch = [docs[0], {**docs[1], "text": "new text"}, {"id": "x", "text": "fresh"}]
        assert remote.upsert(batch) == local.upsert(batch)
        assert remote.stats().n_docs == local.stats().n_docs == 13
        assert remote.stats().n_chunks == local.stats().n_chunks
        remote.check()


def test_k_beyond_matches_and_filters_fill_k(uri: str, tmp_path: Path) -> None:
    docs = corpus(40)
    remote, local = _pair(uri, tmp_path, docs, ann="hnsw")
    with remote, local:
        for mode in ("dense", "bm25", "hybrid"):
            hits = remote.search("red cat", mode=mode, k=5, filter={"tag": "c"})
            matching = sum(1 for d in docs if d["metadata"]["tag"] == "c")
            assert len(hits) == 5 and all(h.metadata["tag"] == "c" for h in hits)
            everything = remote.search("red cat", mode="dense", k=500, filter={"tag": "c"})
            assert len(everything) == matching
        assert remote.search("zzz unknown", mode="bm25", k=3) == []
        with pytest.raises(InvalidInput, match="missing key"):
            remote.search("red", filter={"nope": 1})


def test_reopen_readonly_and_check(uri: str, tmp_path: Path) -> None:
    docs = corpus(15)
    Index.create(uri, encoder=HashEncoder(64)).close()
    with Index.open(uri, encoder=HashEncoder(64)) as w:
        w.add(docs)
        with Index.open(uri, encoder=HashEncoder(64), readonly=True) as r:
            assert len(r) == 15
            w.delete(["d000"])
            assert len(r) == 14 and r.get("d000") is None  # sees each commit
            with pytest.raises(InvalidInput, match="readonly"):
                r.add([{"id": "z", "text": "z"}])
        w.check()
    with pytest.raises(InvalidInput, match="already exists"):
        Index.create(uri, encoder=HashEncoder(64))


def test_missing_index_and_bad_uris(lite_db: str, tmp_path: Path) -> None:
    with pytest.raises(IndexNotFound):
        Index.open(f"milvus://{lite_db}?index=never_made", encoder=HashEncoder(64))
    with pytest.raises(IndexNotFound):
        Index.open(f"milvus://{tmp_path}/absent.db", encoder=HashEncoder(64))
    for bad in ("milvus:relative.db", "milvus:///x/y.txt", "milvus:///x/y.db?index=9x",
                "milvus:///x/y.db?colection=a"):  # fmt: skip
        with pytest.raises(InvalidInput):
            parse_uri(bad)


def test_uris_name_lite_and_clusters(monkeypatch: pytest.MonkeyPatch) -> None:
    lite = parse_uri("milvus:///data/x.db?index=papers")
    assert (lite.lite, lite.uri, lite.collection("docs")) == (True, "/data/x.db", "papers__docs")
    c = parse_uri("milvus://ann:s3cret@db.example:19531/prod?index=p")
    assert (c.lite, c.uri, c.db, c.token) == (
        False,
        "http://db.example:19531",
        "prod",
        "ann:s3cret",
    )
    assert "s3cret" not in c.location
    monkeypatch.setenv("EMBEDSTACK_MILVUS_TOKEN", "tok")
    tls = parse_uri("milvus+https://cloud.example")
    assert (tls.uri, tls.token, tls.index) == ("https://cloud.example:443", "tok", "embedstack")


def test_bad_documents_are_typed_errors(uri: str) -> None:
    with Index.create(uri, encoder=HashEncoder(64)) as idx:
        with pytest.raises(InvalidInput, match="at most 65535"):
            idx.add([{"id": "big", "text": "é" * 40_000}])
        with pytest.raises(InvalidInput, match="already in the index"):
            idx.add([{"id": "a", "text": "x"}])
            idx.add([{"id": "a", "text": "y"}])
        with pytest.raises(InvalidInput, match="not in the index"):
            idx.delete(["a", "ghost"])
        assert len(idx) == 1
        idx.add([{"id": "stop", "text": "the and of"}])  # no BM25 terms at all
        assert [h.doc_id for h in idx.search("and", mode="bm25")] == []
        idx.check()


@pytest.mark.parametrize("fail_at", ["insert", "add_df", "hide"])
def test_a_crashed_write_is_invisible_then_recovered(
    uri: str, fail_at: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    docs = corpus(10)
    with Index.create(uri, encoder=HashEncoder(64)) as idx:
        idx.add(docs[:6])
        before = idx.search_many(QUERIES, mode="bm25", k=5)
        store: MilvusStore = idx._remote  # type: ignore[attr-defined]
        calls = {"insert": 0}

        def boom(*_: Any, **__: Any) -> None:
            raise RuntimeError("crash")

        if fail_at == "insert":  # the chunks insert fails after the documents went in
            real = store.client.insert

            def insert(coll: str, rows: Any) -> Any:
                calls["insert"] += 1
                if coll == store.chunks_c:
                    raise RuntimeError("crash")
                return real(coll, rows)

            monkeypatch.setattr(store.client, "insert", insert)
        elif fail_at == "add_df":
            monkeypatch.setattr(store.terms, "add_df", boom)
        else:
            monkeypatch.setattr(store, "_write_hide", boom)
        with pytest.raises(RuntimeError, match="crash"):
            idx.upsert([{**docs[0], "text": "river river"}, *docs[6:]])
        monkeypatch.undo()
        assert len(idx) == 6 and idx.get("d007") is None  # nothing of the batch is visible
        assert idx.get("d000") == {k: docs[0].get(k, "") for k in ("id", "title", "text")} | {
            "metadata": docs[0]["metadata"]}  # fmt: skip
        with pytest.raises(IndexCorrupt, match="did not finish"):
            idx.check()
    with Index.open(uri, encoder=HashEncoder(64)) as idx:  # a writer's open recovers
        idx.check()
        after = idx.search_many(QUERIES, mode="bm25", k=5)
        assert [[(h.doc_id, h.score) for h in q] for q in after] == [
            [(h.doc_id, h.score) for h in q] for q in before]  # fmt: skip


def test_bm25_difference_is_the_candidate_depth(
    uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The one documented BM25 difference: impacts written with an old average length can
    rank a document below the candidate depth; every returned score is still exact."""
    first = [{"id": "A", "text": "apple apple w1 w2 w3 w4 w5 w6 w7 w8"}]
    first += [{"id": f"B{i}", "text": f"apple q{i}"} for i in range(5)]
    longer = [{"id": f"L{i}", "text": " ".join(f"z{i}x{j}" for j in range(50))} for i in range(30)]
    remote, local = _pair(uri, tmp_path, first)
    with remote, local:
        for idx in (remote, local):
            idx.add(longer)  # the average document length grows from 3.3 to 42
        want = local.search("apple", mode="bm25", k=1)
        assert want[0].doc_id == "A"
        _same(remote.search("apple", mode="bm25", k=1), want)  # the default depth finds it
        monkeypatch.setattr(milvus_bm25, "candidate_depth", lambda k: k)
        got = remote.search("apple", mode="bm25", k=1)
        assert got[0].doc_id != "A"  # A's stale impact put it below depth 1
        exact = {h.doc_id: h.score for h in local.search("apple", mode="bm25", k=10)}
        assert got[0].score == pytest.approx(exact[got[0].doc_id], rel=1e-6)


def test_missing_pymilvus_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "pymilvus", None)  # what an absent package imports as
    with pytest.raises(MissingDependency, match=r"embedstack\[milvus\]"):
        connect(parse_uri("milvus:///tmp/never/x.db"))


def test_ids_with_quotes_newlines_and_unicode(uri: str) -> None:
    ids = ['a"b', "c\\d", "é ü", "x'y", "nl\nz", "tab\tq"]
    with Index.create(uri, encoder=HashEncoder(16)) as idx:
        idx.add([{"id": i, "text": f"text {n}"} for n, i in enumerate(ids)])
        assert [idx.get(i)["id"] for i in ids] == ids  # type: ignore[index]
        assert idx.delete(ids[:3]) == 3 and [idx.get(i) for i in ids[:3]] == [None] * 3
        idx.upsert([{"id": ids[4], "text": "new"}])
        assert idx.get(ids[4])["text"] == "new"  # type: ignore[index]
        idx.compact()
        idx.check()
        assert sorted(h.doc_id for h in idx.search("text", mode="bm25")) == [ids[5], ids[3]]


def test_reopen_after_the_embedded_server_stopped(tmp_path: Path) -> None:
    """Closing the last index of a milvus-lite file stops its server; opening it again
    starts a fresh one, whose collections must be loaded before any search."""
    from milvus_lite.server_manager import server_manager_instance

    uri = f"milvus://{tmp_path}/own.db?index=solo"
    with Index.create(uri, encoder=HashEncoder(16)) as idx:
        idx.add([{"id": "a", "text": "hello world"}, {"id": "b", "text": "other words"}])
    assert str(tmp_path / "own.db") not in server_manager_instance._servers
    with Index.open(uri, encoder=HashEncoder(16)) as idx:
        assert [h.doc_id for h in idx.search("hello", mode="bm25")] == ["a"]
        assert idx.search("hello", mode="dense", k=1)[0].doc_id == "a"
        idx.check()
    assert str(tmp_path / "own.db") not in server_manager_instance._servers


@pytest.mark.slow  # a second Python process starting embedstack and milvus-lite: ~30 s here
def test_a_lite_file_open_in_another_process_is_locked(tmp_path: Path) -> None:
    import subprocess
    import sys

    uri = f"milvus://{tmp_path}/shared.db?index=s"
    code = (
        "import sys\nfrom embedstack import HashEncoder\nfrom embedstack.index import Index\n"
        f"idx = Index.create({uri!r}, encoder=HashEncoder(16))\nprint('ready', flush=True)\n"
        "sys.stdin.readline()\nidx.close()\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        with pytest.raises(IndexLocked, match="another process"):
            Index.open(uri, encoder=HashEncoder(16), readonly=True)
    finally:
        holder.communicate("\n", timeout=60)
    with Index.open(uri, encoder=HashEncoder(16)) as idx:  # released with the holder
        assert len(idx) == 0


def test_a_crash_after_the_commit_hides_replaced_rows_until_cleaned(
    uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    docs = corpus(8)
    with Index.create(uri, encoder=HashEncoder(64)) as idx:
        idx.add(docs[:6])
        store: MilvusStore = idx._remote  # type: ignore[attr-defined]

        def boom(*_: Any, **__: Any) -> None:
            raise RuntimeError("crash")

        monkeypatch.setattr(store, "_clean", boom)
        with pytest.raises(RuntimeError, match="crash"):
            idx.upsert([{**docs[0], "text": "river river"}, *docs[6:]])
        monkeypatch.undo()
        assert len(idx) == 8 and idx.get("d000")["text"] == "river river"  # type: ignore[index]
        for mode in ("dense", "bm25"):
            hits = idx.search("river red cat", mode=mode, k=20)
            assert sorted(h.doc_id for h in hits) == sorted({h.doc_id for h in hits})
            assert len(hits) == 8 or mode == "bm25"
        idx.check()  # the old version is hidden, so the index is consistent
        old_rows = store.client.query(store.docs_c, filter='doc_id == "d000"', limit=10)
        assert len(old_rows) == 2  # both versions stored until the clean-up
    with Index.open(uri, encoder=HashEncoder(64)) as idx:  # a writer's open finishes it
        again: MilvusStore = idx._remote  # type: ignore[attr-defined]
        assert len(again.client.query(again.docs_c, filter='doc_id == "d000"', limit=10)) == 1
        idx.check()


def test_check_names_what_is_wrong(uri: str) -> None:
    with Index.create(uri, encoder=HashEncoder(16)) as idx:
        idx.add(corpus(5))
        store: MilvusStore = idx._remote  # type: ignore[attr-defined]
        store.client.delete(store.chunks_c, filter='doc_id == "d001"')
        with pytest.raises(IndexCorrupt, match="chunks stored, the state says"):
            idx.check()
        store.terms.add_df({store.terms.lookup(["cat"])["cat"]: 1})
        with pytest.raises(IndexCorrupt, match="document frequencies differ"):
            idx.check()


def test_switching_ann_is_refused_naming_the_engines_own_index(uri: str) -> None:
    """``set_ann`` (``embedstack index ann``) is for local indexes: Milvus keeps the index
    its chunks collection was created with."""
    with Index.create(uri, encoder=HashEncoder(64)) as idx:
        for ann in ("hnsw", None):
            with pytest.raises(InvalidInput, match=r"local indexes only: .*chunks collection"):
                idx.set_ann(ann)
        assert idx.ann is None
    with Index.open(uri, encoder=HashEncoder(64)) as idx:
        assert idx.ann is None


def _recorded_filters(store: MilvusStore, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The filter of every ``query`` the store's client makes from now on (until undone)."""
    filters: list[str] = []
    query = store.client.query
    monkeypatch.setattr(store.client, "query", lambda *a, **kw: filters.append(
        str(kw.get("filter"))) or query(*a, **kw))  # fmt: skip
    return filters


def test_hit_documents_come_by_key_and_never_stale(
    uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a hit's document is fetched by primary key (the generation its search returned), not
    # by a filter on doc_id, which milvus-lite answers by scanning the collection; a version
    # replaced since the search (hidden, or already deleted) falls back to the filter
    docs = corpus(12)
    with Index.create(uri, encoder=HashEncoder(64)) as idx:
        idx.add(docs)
        store: MilvusStore = idx._remote  # type: ignore[attr-defined]
        ids = [h.doc_id for h in idx.search("river red cat", mode="dense", k=5)]
        ids += [h.doc_id for h in idx.search("river red cat", mode="bm25", k=5)]
        want = {d["id"]: d for d in docs}
        filters = _recorded_filters(store, monkeypatch)
        got = store.docs(ids)
        assert filters == []
        assert {i: (g["text"], g["metadata"]) for i, g in got.items()} == {
            i: (want[i]["text"], want[i]["metadata"]) for i in ids}  # fmt: skip
        monkeypatch.undo()

        def boom(*_: Any, **__: Any) -> None:
            raise RuntimeError("crash")

        first, second = ids[0], next(i for i in ids if i != ids[0])
        monkeypatch.setattr(store, "_clean", boom)  # the old version stays, hidden
        with pytest.raises(RuntimeError, match="crash"):
            idx.upsert([{**want[first], "text": "stone stone"}])
        monkeypatch.undo()
        assert store.docs([first])[first]["text"] == "stone stone"
        idx.delete([second])
        assert second not in store.docs([second, first])
        assert [h.doc_id for h in idx.search("stone", mode="bm25", k=1)] == [first]
        assert idx.get(first)["text"] == "stone stone"  # type: ignore[index]


def test_new_ids_are_told_apart_by_key_and_the_registry_is_checked(
    uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # adding ids the index never held makes no doc_id filter (milvus-lite scans the
    # collection for one, so every add cost time proportional to the index); ids the
    # registry holds are still looked for, since it keeps deleted and crashed ids too
    from embedstack.index.backends import milvus_rows

    docs = corpus(12)
    with Index.create(uri, encoder=HashEncoder(64)) as idx:
        idx.add(docs[:4])
        store: MilvusStore = idx._remote  # type: ignore[attr-defined]
        filters = _recorded_filters(store, monkeypatch)
        idx.add(docs[4:8])
        assert not [f for f in filters if "doc_id in" in f]
        with pytest.raises(InvalidInput, match="already in the index"):
            idx.add([docs[1], docs[9]])
        monkeypatch.undo()
        idx.delete(["d002"])
        milvus_rows.register(store.client, store.meta_c, ["d009"])  # as a crashed write leaves
        idx.add([docs[2], docs[9]])  # registered, not held: added
        assert len(idx) == 9 and idx.get("d009") is not None
        idx.check()
        store.client.delete(store.meta_c, ids=[milvus_rows._registry_pk("d005")])
        with pytest.raises(IndexCorrupt, match="missing from the id registry"):
            idx.check()
        milvus_rows.register(store.client, store.meta_c, ["d005"])
        # an index written before the registry: every id by filter, as before
        store._put_state({k: v for k, v in store._state().items() if k != milvus_rows.REGISTRY})
        store.client.delete(store.meta_c, filter='pk like "id:%"')
        with pytest.raises(InvalidInput, match="already in the index"):
            idx.add([docs[3]])
        idx.add([docs[10]])
        idx.check()
        assert sorted(store.existing(["d003", "d010", "d011"])) == ["d003", "d010"]
