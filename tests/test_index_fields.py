"""The field protocol of the index: rollback and recovery written once over every field,
search options as one object, the Searchable/SearchPlan seams, the lock holder."""

from __future__ import annotations

import os
import sys
from collections.abc import Hashable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from embedstack import HashEncoder
from embedstack.errors import IndexLocked, IndexNotFound, InvalidInput
from embedstack.index import Index
from embedstack.index._embedding import Chunker
from embedstack.index._validate import validate_docs
from embedstack.index._writes import write_batch
from embedstack.index.docstore import DocStore
from embedstack.index.fields import Batch, Field, FieldStats, Rewrite, Snapshot
from embedstack.index.protocols import DEFAULT_MODE, Searchable, SearchOptions, SearchPlan
from test_index_helpers import SMALL_CHUNKS, corpus, snapshot
from test_index_sparse import CountSparse


def _create(path: Path, **kw: Any) -> Index:
    return Index.create(path, encoder=HashEncoder(64, name="h"), chunking=SMALL_CHUNKS, **kw)


def _files(path: Path) -> dict[str, str]:
    """Every file's hash but SQLite's (a failed batch still used up its reserved keys)."""
    return {name: h for name, h in snapshot(path).items() if name != "docs.sqlite"}


def _open(path: Path, **kw: Any) -> Index:
    return Index.open(path, encoder=HashEncoder(64, name="h"), **kw)


# --- rollback and recovery, once over every field -------------------------------------------


def test_a_failure_in_the_second_field_rolls_back_the_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fields write in order dense, sparse, ..., BM25: the sparse field writes part of its
    segment and fails; the dense segment written before it and the partial sparse files are
    removed, BM25 never saw the batch, and the index reopens at its last committed state."""
    docs = corpus(12, seed=3)
    path = tmp_path / "idx"
    with _create(path, sparse=CountSparse()) as idx:
        assert [f.name for f in idx.fields] == ["dense", "sparse", "bm25"]
        idx.add(docs[:6])
        before = _files(path)
        hits = [h.doc_id for h in idx.search("protein cell", mode="hybrid", k=6)]
        sparse_field = idx.field("sparse")
        real_write = sparse_field.write

        def half_then_boom(batch: Batch, prepared: Any, segment: int, keys: Any) -> None:
            real_write(batch, prepared, segment, keys)
            (path / "sparse" / f"seg-{segment:06d}.rows.npy").unlink()  # a partial write
            assert (path / "dense" / f"seg-{segment:06d}.npy").exists()  # dense went first
            raise OSError("disk full")

        monkeypatch.setattr(sparse_field, "write", half_then_boom)
        with pytest.raises(OSError, match="disk full"):
            idx.add(docs[6:])
        monkeypatch.undo()
        assert _files(path) == before  # dense and sparse files of the batch are gone
        assert len(idx) == 6 and idx.get(docs[6]["id"]) is None
        assert [h.doc_id for h in idx.search("protein cell", mode="hybrid", k=6)] == hits
        idx.check()
    with _open(path, sparse=CountSparse()) as idx:
        idx.check()
        assert _files(path) == before
        idx.add(docs[6:])  # and the index still takes the batch
        assert len(idx) == 12


def test_a_failed_sqlite_commit_leaves_no_field_holding_the_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every field wrote the batch (BM25 commits on its own), then SQLite fails: the
    segment files go and BM25 tombstones the keys, so nothing searches or checks wrong."""
    docs = corpus(12, seed=4)
    path = tmp_path / "idx"
    with _create(path, sparse=CountSparse()) as idx:
        idx.add(docs[:6])
        files = {k: v for k, v in _files(path).items() if not k.startswith("lexical/")}

        def boom(*args: object) -> None:
            raise OSError("disk full")

        monkeypatch.setattr(DocStore, "insert_chunks", boom)
        with pytest.raises(OSError, match="disk full"):
            idx.add(docs[6:])
        monkeypatch.undo()
        assert {k: v for k, v in _files(path).items() if not k.startswith("lexical/")} == files
        late = [d["id"] for d in docs[6:]]
        for mode in ("bm25", "hybrid", "sparse", "dense"):
            hits = idx.search(" ".join(f"uniq{i}" for i in late), mode=mode, k=12)
            assert not set(late) & {h.doc_id for h in hits}, mode
        idx.check()  # BM25 holds exactly the live documents
    with _open(path, sparse=CountSparse()) as idx:
        idx.check()
        assert len(idx) == 6


class MemoryField:
    """A field kept in a dict: what an external engine would implement (no files)."""

    name = "memory"

    def __init__(self, fail_write: bool = False) -> None:
        self.rows: dict[int, list[str]] = {}  # segment -> chunk texts (uncommitted or not)
        self.calls: list[str] = []
        self.fail_write = fail_write

    def prepare(self, batch: Batch) -> list[str]:
        self.calls.append("prepare")
        return list(batch.chunks)

    def write(self, batch: Batch, prepared: Any, segment: int, keys: Any) -> None:
        self.calls.append("write")
        self.rows[segment] = prepared
        if self.fail_write:
            raise OSError("engine down")

    def discard(self, segments: Sequence[int], keys: Any) -> None:
        self.calls.append("discard")
        for seg in segments:
            self.rows.pop(seg, None)

    def remove(self, keys: Any) -> None:
        self.calls.append("remove")

    def refresh(self, snapshot: Snapshot) -> None:
        self.calls.append("refresh")

    def recover(self, snapshot: Snapshot) -> None:
        registered = {seg.id for seg in snapshot.segments}
        self.rows = {k: v for k, v in self.rows.items() if k in registered}

    def check(self, snapshot: Snapshot) -> None: ...

    def rewrite(self, rewrites: Sequence[Rewrite]) -> None: ...

    def release(self, segments: Sequence[int]) -> None: ...

    def close(self) -> None: ...

    def version(self) -> Hashable:
        return None

    def stats(self) -> FieldStats:
        return FieldStats({"memory": sum(len(v) for v in self.rows.values())})


def test_rollback_is_written_once_over_any_fields(tmp_path: Path) -> None:
    """write_batch knows nothing of a field's storage: the first field's uncommitted rows
    are discarded when the second one fails, nothing reaches SQLite, and a success
    registers the segment every field wrote."""
    first, second = MemoryField(), MemoryField(fail_write=True)
    assert isinstance(first, Field)
    store = DocStore(tmp_path, create=True)
    chunker = Chunker(HashEncoder(64, name="h"), SMALL_CHUNKS)
    empty = Snapshot(np.zeros(0, np.int64), [])
    batch = validate_docs(corpus(4, seed=1))
    with pytest.raises(OSError, match="engine down"):
        write_batch(store, [first, second], chunker, empty, batch, [])
    assert first.rows == {} and second.rows == {}
    assert first.calls == ["prepare", "write", "discard"]
    assert second.calls == ["prepare", "write", "discard"]
    assert store.count() == 0 and store.segments() == []
    second.fail_write = False
    counts, snap = write_batch(store, [first, second], chunker, empty, batch, [])
    ((seg, _, n_rows),) = store.segments()
    assert list(first.rows) == [seg] == [s.id for s in snap.segments]
    assert len(counts) == 4 and all(counts >= 1)  # chunks per document, in batch order
    assert len(first.rows[seg]) == n_rows == counts.sum() and len(snap.live) == 4
    first.rows[seg + 7] = ["left by a crash"]
    first.recover(snap)
    assert list(first.rows) == [seg]
    store.close()


def test_recovery_runs_over_every_field_at_open(tmp_path: Path) -> None:
    path = tmp_path / "idx"
    with _create(path, sparse=CountSparse()) as idx:
        idx.add(corpus(6, seed=2))
    stray = ["dense/seg-000099.npy", "sparse/seg-000099.rows.npy", ".tmp-manifest.json"]
    for name in stray:
        (path / name).write_bytes(b"partial")
    with _open(path, readonly=True) as reader:  # readers never recover
        assert all((path / name).exists() for name in stray)
        assert len(reader) == 6
    with _open(path) as idx:
        assert not any((path / name).exists() for name in stray)
        idx.check()


# --- search options, Searchable, SearchPlan ----------------------------------------------------


@pytest.fixture()
def idx(tmp_path: Path) -> Any:
    with _create(tmp_path / "idx") as index:
        index.add(corpus(30, seed=5))
        yield index


def _ids(hits: list[Any]) -> list[str]:
    return [h.doc_id for h in hits]


def test_index_is_searchable(idx: Index) -> None:
    assert isinstance(idx, Searchable)


def test_options_object_equals_keywords_and_default_mode_is_hybrid(idx: Index) -> None:
    assert DEFAULT_MODE == "hybrid" and SearchOptions().mode == "hybrid"
    query = "protein therapy"
    assert _ids(idx.search(query)) == _ids(idx.search(query, mode="hybrid"))
    assert set(idx.search(query)[0].ranks) <= {"dense", "bm25"}
    opts = SearchOptions(mode="dense", k=4, filter={"lang": "en"})
    by_object = idx.search_many([query, "brain"], opts)
    by_keywords = idx.search_many([query, "brain"], mode="dense", k=4, filter={"lang": "en"})
    assert [_ids(r) for r in by_object] == [_ids(r) for r in by_keywords]
    assert all(len(r) == 4 and all(h.metadata["lang"] == "en" for h in r) for r in by_object)
    assert _ids(idx.search(query, opts, k=2)) == _ids(by_object[0])[:2]  # keywords win


def test_bad_options_are_refused_once(idx: Index) -> None:
    with pytest.raises(InvalidInput, match="unknown search option"):
        idx.search("protein", top=3)
    with pytest.raises(InvalidInput, match="SearchOptions"):
        idx.search_many(["protein"], {"mode": "dense"})  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="k must"):
        SearchOptions(k=0)
    with pytest.raises(InvalidInput, match="retrievers"):
        SearchOptions(mode="dense", retrievers=("bm25",))


def test_pipeline_must_be_built(idx: Index) -> None:
    for spec in ("hybrid", {"generators": []}, Path("p.json")):
        with pytest.raises(InvalidInput, match=r"Pipeline\(spec, index=index\)"):
            idx.search("protein", pipeline=spec)  # type: ignore[arg-type]

    class Plan:
        def __init__(self) -> None:
            self.calls: list[tuple[Any, ...]] = []

        def run(self, index: Any, query: str, k: int | None = None, *,
                filter: dict[str, Any] | None = None) -> list[Any]:  # noqa: A002  # fmt: skip
            self.calls.append((index, query, k, filter))
            return index.search(query, mode="bm25", k=k, filter=filter)

    plan = Plan()
    assert isinstance(plan, SearchPlan)
    hits = idx.search("protein", pipeline=plan, k=3, filter={"lang": "de"})
    assert plan.calls == [(idx, "protein", 3, {"lang": "de"})]
    assert _ids(hits) == _ids(idx.search("protein", mode="bm25", k=3, filter={"lang": "de"}))


# --- lock holder and missing index --------------------------------------------------------------


def test_lock_names_its_holder(idx: Index) -> None:
    content = (idx.path / "write.lock").read_text()
    assert content.startswith(f"pid {os.getpid()}: ") and " ".join(sys.argv) in content
    with pytest.raises(IndexLocked) as info:
        _open(idx.path)
    err = info.value
    assert err.location == str(idx.path)
    assert err.holder == f"pid {os.getpid()}: {' '.join(sys.argv)}"
    assert f"held by pid {os.getpid()}" in str(err)


def test_missing_index_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(IndexNotFound) as info:
        _open(tmp_path / "nope")
    assert info.value.location == str(tmp_path / "nope")
    assert isinstance(info.value, InvalidInput)  # callers catching InvalidInput still do
