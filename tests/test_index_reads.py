"""The fast read paths of an index (issue 18): the SQLite snapshot read in bulk at open, the
hits of a search materialised in one query, and a retriever's list put in document-id order
without a sort when it holds no tie. Each is checked against the plain way."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from embedstack import HashEncoder
from embedstack.index import Index, search
from embedstack.index.docstore import DocStore


@pytest.fixture
def index(tmp_path: Path) -> Index:
    idx = Index.create(tmp_path / "i", encoder=HashEncoder(32))
    words = "cat dog protein cell gene mouse tumour therapy".split()
    for batch in range(4):
        idx.add([
            {"id": f"d{batch}-{i}", "title": words[i % 8] if i % 3 else "",
             "text": " ".join(words[(i * j + batch) % 8] for j in range(1, 2 + i % 5)),
             "metadata": {"n": i, "tag": ["a", "b"][i % 2]} if i % 4 else {}}
            for i in range(25)
        ])  # fmt: skip
    idx.delete([f"d1-{i}" for i in range(0, 25, 2)] + [f"d2-{i}" for i in range(25)])
    return idx


def _plain_row_keys(conn: sqlite3.Connection, segment: int, n_rows: int) -> np.ndarray:
    out = np.full(n_rows, -1, dtype=np.int64)
    for row, key in conn.execute("SELECT row, doc_key FROM chunks WHERE segment = ?", (segment,)):
        out[row] = key
    return out


@pytest.mark.parametrize("limit", [None, 8])
def test_bulk_snapshot_reads_equal_row_by_row(index: Index, limit: int | None) -> None:
    store = DocStore(index.path, readonly=True)
    registry = [(seg, n) for seg, _, n in store.segments()]  # file names exceed 8 bytes
    if limit is not None:  # group_concat beyond SQLite's string limit: row by row
        store.conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, limit)
    plain = [r[0] for r in store.conn.execute("SELECT key FROM docs ORDER BY key")]
    assert store.live_keys().tolist() == plain and len(plain) == 25 + 12 + 25
    assert len(registry) == 4  # one empty: every document of batch 2 is deleted
    got = store.all_row_keys(registry)
    for seg, n in registry:
        np.testing.assert_array_equal(got[seg], _plain_row_keys(store.conn, seg, n))
        np.testing.assert_array_equal(store.row_keys(seg, n), got[seg])
    store.close()


def test_bulk_snapshot_read_refuses_rows_outside_a_segment(index: Index) -> None:
    from embedstack.errors import IndexCorrupt

    index.close()
    store = DocStore(index.path)
    store.conn.execute("UPDATE chunks SET row = 99 WHERE rowid = (SELECT min(rowid) FROM chunks)")
    registry = [(seg, n) for seg, _, n in store.segments()]
    with pytest.raises(IndexCorrupt):
        store.all_row_keys(registry)


@pytest.mark.parametrize("mode", ["bm25", "dense", "hybrid"])
def test_one_query_materialisation_equals_two(
    index: Index, mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    queries = ["cat protein", "tumour therapy gene", "mouse", "dog dog cell"]
    for k in (1, 3, 10, 100):
        for flt in (None, {"tag": "a"}):
            one = index.search_many(queries, mode=mode, k=k, filter=flt)
            with monkeypatch.context() as m:
                m.setattr(search, "_ONE_QUERY", 0)  # ids first, documents for the k after
                two = index.search_many(queries, mode=mode, k=k, filter=flt)
            assert one == two
            assert any(hit.metadata for hits in one for hit in hits) or flt is None
    hits = index.search("cat", mode=mode, k=100)
    assert {h.doc_id: h.metadata for h in hits} == {
        h.doc_id: index.get(h.doc_id)["metadata"]  # type: ignore[index]
        for h in hits
    }


@pytest.mark.parametrize("readonly", [False, True])
def test_open_reads_the_snapshot_once(
    index: Index, readonly: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A writer recovers against the snapshot it then starts from; a reader only loads it."""
    queries = ["cat protein", "mouse", "tumour therapy gene"]
    expected = index.search_many(queries, mode="hybrid", k=10)
    n_docs = len(index)
    index.close()
    reads: list[DocStore] = []
    live_keys = DocStore.live_keys

    def counted(store: DocStore) -> np.ndarray:
        reads.append(store)
        return live_keys(store)

    monkeypatch.setattr(DocStore, "live_keys", counted)
    with Index.open(index.path, encoder=HashEncoder(32), readonly=readonly) as again:
        assert len(reads) == 1
        assert len(again) == n_docs
        assert again.search_many(queries, mode="hybrid", k=10) == expected


@st.composite
def _ranked_lists(draw: st.DrawFn) -> tuple[list[tuple[int, float]], dict[int, str], int]:
    """A retriever's ``(key, score)`` list, best first and ties by key, with few distinct
    scores (ties) or none; ids whose order is not the keys' order; some keys deleted."""
    keys = draw(st.lists(st.integers(0, 60), unique=True, max_size=25))
    if draw(st.booleans()):
        scores = draw(st.lists(st.sampled_from([0.5, 1.0, 1.25, 2.0]), min_size=len(keys),
                               max_size=len(keys)))  # fmt: skip
    else:
        scores = draw(st.lists(st.floats(0.0, 10.0), min_size=len(keys), max_size=len(keys),
                               unique=True))  # fmt: skip
    ranked = sorted(zip(keys, scores, strict=True), key=lambda item: (-item[1], item[0]))
    names = draw(st.permutations(range(61)))
    ids = {key: f"doc-{names[key]:02d}" for key in keys if draw(st.integers(0, 5))}
    return ranked, ids, draw(st.integers(1, 30))


@settings(max_examples=300, deadline=None)
@given(case=_ranked_lists())
def test_id_order_equals_sorting_by_score_then_id(
    case: tuple[list[tuple[int, float]], dict[int, str], int],
) -> None:
    ranked, ids, depth = case
    live = [item for item in ranked if item[0] in ids]  # deleted documents drop out
    expected = sorted(live, key=lambda item: (-item[1], ids[item[0]]))[:depth]
    assert search.by_id(ranked, ids, depth) == expected
