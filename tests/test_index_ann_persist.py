"""The persisted HNSW graph: loaded not rebuilt, grown on add, deletes masked, crash-safe."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from embedstack.errors import IndexCorrupt
from embedstack.index import ChunkingParams, Index

pytest.importorskip("faiss")

from embedstack.index import ann, ann_files  # noqa: E402
from embedstack.index.fields import dense as dense_field  # noqa: E402
from test_index_ann import GaussianEncoder  # noqa: E402

CHUNKS = ChunkingParams(max_tokens=64, overlap=0, allow_any=True)
QUERIES = [f"query {i:06d}" for i in range(40)]


def docs(lo: int, hi: int) -> list[dict]:
    return [{"id": f"d{i}", "text": f"document {i:06d}"} for i in range(lo, hi)]


def ids(hits_per_query: list) -> list[list[str]]:
    return [[h.doc_id for h in hits] for hits in hits_per_query]


def recall(got: list[list[str]], exact: list[list[str]]) -> float:
    return float(np.mean([len(set(a) & set(e)) / len(e) for a, e in zip(got, exact, strict=True)]))


def make(path: Path, hnsw: bool = True) -> Index:
    return Index.create(path, encoder=GaussianEncoder(), ann="hnsw" if hnsw else None,
                        chunking=CHUNKS)  # fmt: skip


def reopen(path: Path, readonly: bool = False) -> Index:
    return Index.open(path, encoder=GaussianEncoder(), readonly=readonly)


def test_reopen_loads_the_graph_and_add_grows_it(tmp_path: Path) -> None:
    idx, exact = make(tmp_path / "ann"), make(tmp_path / "exact", hnsw=False)
    for i in (idx, exact):
        i.add(docs(0, 1500))
        i.add(docs(1500, 2500))
    before = ids(idx.search_many(QUERIES, mode="dense", k=10))
    idx.close()
    names = sorted(p.name for p in (tmp_path / "ann" / "dense").glob("hnsw-*"))
    assert len(names) == 2 and names[0].endswith(".faiss") and names[1].endswith(".json")
    ann.EVENTS.clear()
    idx = reopen(tmp_path / "ann")
    assert ids(idx.search_many(QUERIES, mode="dense", k=10)) == before
    assert (ann.EVENTS["build"], ann.EVENTS["load"], ann.EVENTS["added_rows"]) == (0, 1, 0)
    # an add grows the loaded graph by its rows only; close saves; the next open loads again
    for i in (idx, exact):
        i.add(docs(2500, 3200))
    assert (ann.EVENTS["build"], ann.EVENTS["added_rows"]) == (0, 700)
    after = ids(idx.search_many(QUERIES, mode="dense", k=10))
    idx.close()
    ann.EVENTS.clear()
    idx = reopen(tmp_path / "ann")
    assert ids(idx.search_many(QUERIES, mode="dense", k=10)) == after
    assert (ann.EVENTS["build"], ann.EVENTS["load"], ann.EVENTS["added_rows"]) == (0, 1, 0)
    assert recall(after, ids(exact.search_many(QUERIES, mode="dense", k=10))) >= 0.95
    assert idx.stats().bytes["hnsw"] > 0
    idx.check()
    reader = reopen(tmp_path / "ann", readonly=True)
    assert ids(reader.search_many(QUERIES, mode="dense", k=10)) == after
    reader.close()
    idx.close()


def test_deleted_documents_never_come_back_and_k_is_filled(tmp_path: Path) -> None:
    idx, exact = make(tmp_path / "ann"), make(tmp_path / "exact", hnsw=False)
    gone = [f"d{i}" for i in range(0, 3000, 3)]
    for i in (idx, exact):
        i.add(docs(0, 1500))
        i.add(docs(1500, 3000))
        i.delete(gone)
    idx.close()
    idx = reopen(tmp_path / "ann")
    got = ids(idx.search_many(QUERIES, mode="dense", k=50))
    assert all(len(g) == 50 and not set(g) & set(gone) for g in got)
    assert recall(got, ids(exact.search_many(QUERIES, mode="dense", k=50))) >= 0.95
    # compaction moves every row to new segments: the graph is rebuilt once, then loaded
    ann.EVENTS.clear()
    idx.compact()
    assert ann.EVENTS["build"] == 1
    compacted = ids(idx.search_many(QUERIES, mode="dense", k=50))
    assert all(not set(g) & set(gone) for g in compacted)
    idx.close()
    ann.EVENTS.clear()
    idx = reopen(tmp_path / "ann")
    assert ids(idx.search_many(QUERIES, mode="dense", k=50)) == compacted
    assert ann.EVENTS["build"] == 0
    assert len(list((tmp_path / "ann" / "dense").glob("hnsw-*"))) == 2
    idx.close()


CHILD = r"""
import os, signal, sys
sys.path.insert(0, sys.argv[1])
from test_index_ann import GaussianEncoder
from embedstack.index import Index
from embedstack.index.docstore import DocStore
from embedstack.index.fields import dense
dense.PERSIST_MIN_ROWS, dense.PERSIST_GROWTH = 0, 0.0  # save the graph at every write
idx = Index.open(sys.argv[2], encoder=GaussianEncoder())
def die(*args, **kwargs):  # the graph is written; SQLite has not committed the batch
    os.kill(os.getpid(), signal.SIGKILL)
DocStore.register_segment = die
idx.add([{"id": f"x{i}", "text": f"extra {i:06d}"} for i in range(800)])
"""


def test_crash_between_graph_write_and_commit_recovers(tmp_path: Path) -> None:
    path = tmp_path / "ann"
    idx, exact = make(path), make(tmp_path / "exact", hnsw=False)
    for i in (idx, exact):
        i.add(docs(0, 1200))
        i.add(docs(1200, 2000))
    idx.close()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    tests = str(Path(__file__).resolve().parent)
    done = subprocess.run([sys.executable, "-c", CHILD, tests, str(path)],
                          capture_output=True, text=True, env=env, check=False)  # fmt: skip
    assert done.returncode == -signal.SIGKILL, done.stderr
    graph = ann_files.load(path / "dense", GaussianEncoder.dim)
    assert graph is not None and graph.n_rows == 2800  # the lost batch's rows are in it
    ann.EVENTS.clear()
    idx = reopen(path)  # recovers: the lost batch's segment is not registered
    idx.check()
    assert len(idx) == 2000 and idx.get("x0") is None
    got = ids(idx.search_many(QUERIES + [f"extra {i:06d}" for i in range(20)], mode="dense", k=10))
    assert not any(d.startswith("x") for g in got for d in g)
    assert ann.EVENTS["build"] == 0  # the saved graph is still good: its dead rows are masked
    assert recall(got[:40], ids(exact.search_many(QUERIES, mode="dense", k=10))) >= 0.95
    idx.add([{"id": "x0", "text": "extra 000000"}])
    assert idx.search("extra 000000", mode="dense", k=1)[0].doc_id == "x0"
    idx.close()


def test_check_detects_a_damaged_graph(tmp_path: Path) -> None:
    idx = make(tmp_path / "ann")
    idx.add(docs(0, 1000))
    idx.close()
    (data,) = (tmp_path / "ann" / "dense").glob("hnsw-*.faiss")
    data.write_bytes(data.read_bytes()[:1000])
    idx = reopen(tmp_path / "ann")
    with pytest.raises(IndexCorrupt, match="HNSW"):
        idx.check()
    ann.EVENTS.clear()  # searching still works: a writer rebuilds the graph it cannot read
    assert len(idx.search_many(QUERIES[:3], mode="dense", k=5)[0]) == 5
    assert ann.EVENTS["build"] == 1
    idx.check()
    idx.close()


def test_persist_thresholds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """During writes the graph is saved when it grew by half (geometric: few full rewrites),
    and always at close."""
    monkeypatch.setattr(dense_field, "PERSIST_MIN_ROWS", 100)
    ann.EVENTS.clear()
    idx = make(tmp_path / "ann")
    for b in range(8):  # 100 rows per add: saved at 100, 200, 300, 500, 800 rows
        idx.add(docs(100 * b, 100 * b + 100))
    assert ann.EVENTS["save"] == 5
    idx.close()
    assert ann.EVENTS["save"] == 5  # nothing unsaved at close
    idx = reopen(tmp_path / "ann")
    idx.add(docs(800, 850))
    idx.close()
    assert ann.EVENTS["save"] == 6
