"""Merging the index's chunk segments as it is written (issue 18: ~3,000 dense segments after
a soak of small writes): the count stays within the tiered policy's logarithmic bound, search
answers exactly as without merging and as the brute-force oracle, a crash anywhere in a
merging write leaves either the state before it or the one after it, and every field
(dense at each precision, SPLADE, ColBERT token vectors, the HNSW graph) stays consistent.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from _oracle import Oracle, assert_ranking
from embedstack import HashEncoder
from embedstack.encoders.multivector import TokenVectors
from embedstack.index import Index, _merge, dense, late
from embedstack.index import sparse as sparse_index
from embedstack.index.fields.base import Rewrite, SegmentRows
from embedstack.index.fields.tokens import TokenField
from embedstack.index.merge_policy import MergePolicy
from embedstack.vectors import calibrate_int8, dequantize_int8, quantize_binary, quantize_int8
from test_index_helpers import SMALL_CHUNKS, corpus
from test_index_sparse import CountSparse
from test_index_stateful import _run, machine_root, model  # noqa: F401 - fixtures

SRC = Path(__file__).resolve().parents[1] / "src"
DIM = 32
TINY = MergePolicy(segments_per_tier=3, floor_docs=2, max_merged_docs=100_000)
# no merge at all, one segment per write (what the index did before merging)
NEVER = MergePolicy(segments_per_tier=10**6, floor_docs=1, max_merged_docs=10**9,
                    deletes_pct_allowed=100.0)  # fmt: skip
ALL = MergePolicy(segments_per_tier=2, floor_docs=1000, max_merged_docs=10**6)  # one segment
WORDS = "cat dog protein cell gene mouse tumour therapy alpha beta".split()
QUERIES = ["cat protein", "gene therapy mouse", "alpha", "tumour cell dog beta"]


def _enc() -> HashEncoder:
    return HashEncoder(DIM, name="merge-hash")


def _doc(i: int, version: int = 0) -> dict[str, Any]:
    words = [WORDS[(i * 7 + j * 3 + version) % len(WORDS)] for j in range(1 + i % 4)]
    return {"id": f"d{i}", "text": " ".join(words) + f" w{i % 13} v{version}",
            "metadata": {"n": i % 5}}  # fmt: skip


def _writes(n: int) -> list[tuple[str, Any]]:
    """A soak in miniature: one-document adds, upserts of earlier ones, deletes."""
    ops: list[tuple[str, Any]] = []
    live: set[int] = set()
    for i in range(n):
        ops.append(("upsert", [_doc(i)]))
        live.add(i)
        if i % 4 == 3:
            ops.append(("upsert", [_doc(i - 2, version=i)]))
        if i % 6 == 5 and i - 3 in live:
            ops.append(("delete", [f"d{i - 3}"]))
            live.discard(i - 3)
    return ops


def _apply(idx: Index, op: str, arg: Any, oracle: Oracle | None = None) -> None:
    if op == "upsert":
        idx.upsert(arg)
        for d in arg if oracle else []:
            oracle.put(d["id"], ("", d["text"], d["metadata"]))  # type: ignore[union-attr]
    else:
        idx.delete(arg)
        for i in arg if oracle else []:
            oracle.remove(i)  # type: ignore[union-attr]


def _answers(idx: Index, modes: tuple[str, ...] = ("dense", "bm25", "hybrid")) -> list[Any]:
    out = []
    for q in QUERIES:
        for mode in modes:
            for flt in (None, {"n": {"$gte": 2}}):
                hits = idx.search(q, mode=mode, k=7, filter=flt)  # type: ignore[arg-type]
                out.append([(h.doc_id, h.score) for h in hits])
    return out


def _same(a: list[Any], b: list[Any]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert [i for i, _ in x] == [i for i, _ in y]
        np.testing.assert_allclose([s for _, s in x], [s for _, s in y], rtol=0, atol=1e-6)


def _dense_files(path: Path) -> set[str]:
    return {p.name for p in (path / "dense").glob("seg-*")}


def _registered(idx: Index) -> set[int]:
    return {int(row[0]) for row in idx._store.conn.execute("SELECT id FROM segments")}


@pytest.fixture(autouse=True)
def _no_fsync(monkeypatch: pytest.MonkeyPatch) -> None:
    # durability is test_index_crash.py's subject; here hundreds of small writes stay fast
    monkeypatch.setattr(os, "fsync", lambda fd: None)


# --- the segment count ------------------------------------------------------------------------


@pytest.mark.parametrize("policy", [TINY, _merge.POLICY], ids=["tiny", "default"])
def test_segment_count_stays_within_the_policy_bound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, policy: MergePolicy
) -> None:
    monkeypatch.setattr(_merge, "POLICY", policy)
    oracle = Oracle(_enc())
    with Index.create(tmp_path / "i", encoder=_enc()) as idx:
        for op, arg in _writes(150):
            _apply(idx, op, arg, oracle)
            stats = idx.stats()
            if op == "upsert":  # writes merge; deletes only mark rows dead
                assert stats.segments <= policy.max_segments(stats.n_chunks), (op, stats)
        n_writes = sum(op == "upsert" for op, _ in _writes(150))
        assert stats.segments < n_writes / 10  # without merging: one segment per write
        assert _dense_files(idx.path) == {
            n for s in _registered(idx) for n in dense.segment_files(s, "float32")
        }
        for q in QUERIES:  # against brute force over the live documents
            live = sorted(oracle.docs)
            assert_ranking(idx.search(q, mode="dense", k=8), oracle.dense(q, live), 8, q)
            assert_ranking(idx.search(q, mode="bm25", k=8), oracle.bm25(q, live), 8, q)
        idx.check()


@pytest.mark.usefixtures("machine_root")
def test_the_stateful_oracle_holds_while_every_write_merges(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """tests/test_index_stateful.py's model-based test (random adds, upserts, deletes,
    compactions, reopens and searches against the plain Python oracle) with a policy that
    merges at nearly every write (tiers of 2 segments from 1 row up), cascades included."""
    monkeypatch.setattr(_merge, "POLICY", MergePolicy(2, 1, 10**6))
    _run(60, 10)


def test_merging_changes_no_answer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same writes with and without merges answer the same (float32 rows are copied
    bit for bit), also after the index is closed and reopened."""
    answers = {}
    for name, policy in (("never", NEVER), ("tiny", TINY)):
        monkeypatch.setattr(_merge, "POLICY", policy)
        path = tmp_path / name
        with Index.create(path, encoder=_enc()) as idx:
            for op, arg in _writes(60):
                _apply(idx, op, arg)
            answers[name] = _answers(idx)
            segments = idx.stats().segments
        with Index.open(path, encoder=_enc()) as idx:
            idx.check()
            assert idx.stats().segments == segments
            assert _answers(idx) == answers[name]
    assert len(_registered_in(tmp_path / "tiny")) < len(_registered_in(tmp_path / "never")) / 5
    _same(answers["never"], answers["tiny"])


def _registered_in(path: Path) -> set[int]:
    with Index.open(path, encoder=_enc(), readonly=True) as idx:
        return _registered(idx)


def test_int8_merges_move_stored_values_by_at_most_a_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """int8 re-quantizes the rows of sources whose calibration differs from the merged one
    (each time by at most half a step of a calibration no wider than the final one): every
    stored value of the merged index is within one step of the unmerged index's."""
    stored = {}
    for name, policy in (("never", NEVER), ("tiny", TINY)):
        monkeypatch.setattr(_merge, "POLICY", policy)
        with Index.create(tmp_path / name, encoder=_enc(), precision="int8") as idx:
            for op, arg in _writes(40):
                _apply(idx, op, arg)
            rows = {}
            live = set(idx._snap.live.tolist())
            for seg in idx.field("dense")._segments:  # type: ignore[attr-defined]
                for r, key in enumerate(seg.row_keys.tolist()):
                    if key in live:
                        rows[key] = (seg.floats(np.array([r]))[0], seg.calibration)
            stored[name] = rows
    assert stored["never"].keys() == stored["tiny"].keys()
    worst = 0.0
    for key, (merged, cal) in stored["tiny"].items():
        step = (cal.high.astype(np.float64) - cal.low) / 255
        moved = np.abs(merged - stored["never"][key][0])
        assert np.all(moved <= step + 1e-6), key
        worst = max(worst, float((moved / np.maximum(step, 1e-12)).max()))
    assert worst > 0  # some rows were re-quantized (and the bound is not vacuous)


# --- crash safety -------------------------------------------------------------------------------

CHILD = r"""
import os, sys
sys.path.insert(0, sys.argv[1])
from embedstack import HashEncoder
from embedstack.index import Index, _merge, dense
from embedstack.index.merge_policy import MergePolicy
_merge.POLICY = MergePolicy(segments_per_tier=2, floor_docs=1000, max_merged_docs=10**6)
path, where = sys.argv[2], sys.argv[3]
def crash(*args, **kwargs):
    os._exit(17)
def after(real):
    def run(*args, **kwargs):
        real(*args, **kwargs)
        os._exit(17)
    return run
if where == "files":  # the merged dense segment written, nothing committed
    dense.merge_rows = after(dense.merge_rows)
elif where == "transaction":  # chunks repointed inside the uncommitted transaction
    from embedstack.index.docstore import DocStore
    DocStore.move_rows = after(DocStore.move_rows)
elif where == "release":  # committed; the sources' files not yet deleted
    _merge.release = crash
idx = Index.open(path, encoder=HashEncoder(32, name="merge-hash"))
idx.upsert([{"id": "new", "text": "cat protein new", "metadata": {"n": 1}}])
print("returned", flush=True)
"""


@pytest.mark.parametrize("where", ["files", "transaction", "release"])
def test_a_crash_inside_a_merging_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    """The writer dies (``os._exit``: no rollback runs) at a point of a write that merges;
    the reopened index holds the state before the write (crash before the commit) or after
    it (crash after), checks clean, keeps only the registered segments' files, and takes the
    next merging write."""
    monkeypatch.setattr(_merge, "POLICY", TINY)
    path = tmp_path / "i"
    with Index.create(path, encoder=_enc()) as idx:
        for op, arg in _writes(20):
            _apply(idx, op, arg)
        before, n_before, segs_before = _answers(idx), len(idx), _registered(idx)
    proc = subprocess.run([sys.executable, "-c", CHILD, str(SRC), str(path), where],
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 17, proc.stderr
    assert "returned" not in proc.stdout
    with Index.open(path, encoder=_enc()) as idx:  # the writer's open recovers
        idx.check()
        committed = where == "release"
        assert len(idx) == n_before + committed
        assert (idx.get("new") is not None) == committed
        if committed:  # the write merged every segment into one
            assert len(_registered(idx)) == 1 and not segs_before & _registered(idx)
        else:
            assert _answers(idx) == before and _registered(idx) == segs_before
        assert _dense_files(path) == {
            n for s in _registered(idx) for n in dense.segment_files(s, "float32")
        }
        monkeypatch.setattr(_merge, "POLICY", ALL)
        idx.upsert([{"id": "after", "text": "gene alpha", "metadata": {"n": 3}}])
        assert idx.stats().segments == 1
        idx.check()


def test_a_failed_merge_rolls_the_write_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An error while the merged segment is written (disk full) fails the write as a whole:
    nothing of it is stored, no merged file remains, and the index answers as before."""
    monkeypatch.setattr(_merge, "POLICY", TINY)
    with Index.create(tmp_path / "i", encoder=_enc()) as idx:
        for op, arg in _writes(20):
            _apply(idx, op, arg)
        before, files, n = _answers(idx), _dense_files(idx.path), len(idx)

        def boom(*args: object, **kwargs: object) -> list[str]:
            raise OSError("disk full")

        monkeypatch.setattr(_merge, "POLICY", ALL)  # this write merges every segment
        with monkeypatch.context() as patch:
            patch.setattr(dense, "merge_rows", boom)
            with pytest.raises(OSError, match="disk full"):
                idx.upsert([{"id": "new", "text": "cat", "metadata": {"n": 1}}])
        assert len(idx) == n and idx.get("new") is None
        assert _dense_files(idx.path) == files
        assert _answers(idx) == before
        idx.check()
        segments = _registered(idx)
        idx.upsert([{"id": "new", "text": "cat", "metadata": {"n": 1}}])  # now it merges
        assert segments - _registered(idx)
        idx.check()


# --- every field of a merged segment ----------------------------------------------------------


def test_sparse_postings_merge_like_the_dense_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    answers = {}
    for name, policy in (("never", NEVER), ("tiny", TINY)):
        monkeypatch.setattr(_merge, "POLICY", policy)
        path = tmp_path / name
        with Index.create(path, encoder=_enc(), chunking=SMALL_CHUNKS,
                          sparse=CountSparse()) as idx:  # fmt: skip
            for op, arg in _writes(40):
                _apply(idx, op, arg)
            answers[name] = _answers(idx, ("sparse", "dense"))
            idx.check()
            assert {p.name for p in (path / "sparse").glob("seg-*")} == {
                n for s in _registered(idx) for n in sparse_index.segment_files(s)
            }
    assert answers["never"] == answers["tiny"]  # integer weights: exact to the bit


def test_dense_merge_rows_copies_or_requantizes(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(size=(5, 8)).astype(np.float32)
    b = (a[:4] + a[1:]) / 2  # inside a's range in every dimension
    keys = np.arange(9, dtype=np.int64)
    mask_a, mask_b = np.array([1, 0, 1, 1, 0], bool), np.array([0, 1, 1, 1], bool)
    for precision in ("float32", "int8", "binary"):
        root = tmp_path / precision
        sa = dense.write_segment(root, 1, a, precision, keys[:5])
        sb = dense.write_segment(root, 2, b, precision, keys[5:])  # narrower range
        dense.merge_rows(root, [(sa, mask_a), (sb, mask_b)], 3, precision)
        merged = dense.load_segment(root, 3, 6, 8, precision, keys[:6])
        if precision == "float32":
            assert np.array_equal(merged.data, np.concatenate([a[mask_a], b[mask_b]]))
            continue
        cal = merged.calibration
        assert cal is not None and np.array_equal(cal.low, sa.calibration.low)  # type: ignore[union-attr]
        codes = merged.data if merged.codes is None else merged.codes
        # segment 1 spans the merged range: its codes are kept to the bit
        assert np.array_equal(codes[:3], quantize_int8(a, calibrate_int8(a))[mask_a])
        step = (cal.high.astype(np.float64) - cal.low) / 255
        assert np.all(np.abs(merged.floats()[3:] - sb.floats(np.flatnonzero(mask_b)))
                      <= step / 2 + 1e-6)  # fmt: skip
        if precision == "binary":  # sign bits of the original floats, copied
            assert np.array_equal(merged.data, quantize_binary(
                np.concatenate([a[mask_a], b[mask_b]])))  # fmt: skip
        assert np.allclose(dequantize_int8(codes[:3], cal), sa.floats(np.flatnonzero(mask_a)))


def test_token_vectors_merge_with_their_codes_and_scales(tmp_path: Path) -> None:
    field = TokenField(tmp_path, {"dim": 4, "precision": "int8"})
    rng = np.random.default_rng(1)
    parts = []
    for seg, n_rows in ((1, 3), (2, 2)):
        lengths = rng.integers(1, 4, size=n_rows)
        vecs = TokenVectors(rng.normal(size=(int(lengths.sum()), 4)).astype(np.float32),
                            np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64))  # fmt: skip
        late.write_segment(tmp_path, seg, vecs.astype("int8"))
        parts.append(SegmentRows(seg, n_rows, np.arange(n_rows, dtype=np.int64)))
    masks = [np.array([1, 0, 1], bool), np.array([1, 1], bool)]
    field.rewrite([Rewrite(p, 9, m) for p, m in zip(parts, masks, strict=True)])
    merged = late.load_segment(tmp_path, 9, 4, 4, "int8").gather(np.arange(4))
    want = TokenVectors.concat([
        late.load_segment(tmp_path, p.id, p.n_rows, 4, "int8").gather(np.flatnonzero(m))
        for p, m in zip(parts, masks, strict=True)
    ])  # fmt: skip
    assert np.array_equal(merged.vectors, want.vectors)
    assert np.array_equal(merged.offsets, want.offsets)
    assert np.array_equal(merged.scales, want.scales)  # type: ignore[arg-type]


def test_hnsw_graph_aliases_merged_segments(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A merged segment joins the writer's graph as an alias of its sources' rows: merging
    writes insert only their own rows and never rebuild the graph; it is saved with its
    aliases and a reopened index loads it (nothing inserted, nothing rebuilt) and answers
    the same; both find what exact search finds, and check() verifies the aliases."""
    pytest.importorskip("faiss")
    from embedstack.index import ann

    monkeypatch.setattr(_merge, "POLICY", TINY)
    docs = corpus(150, seed=3)
    exact = Index.create(tmp_path / "exact", encoder=_enc(), chunking=SMALL_CHUNKS)
    ann.EVENTS.clear()
    written = 0
    with Index.create(tmp_path / "ann", encoder=_enc(), ann="hnsw", chunking=SMALL_CHUNKS) as idx:
        for i in range(0, 150, 3):
            written += idx.upsert(docs[i : i + 3]).chunks
            exact.upsert(docs[i : i + 3])
            if i % 15 == 12:
                idx.delete([docs[i - 5]["id"]])
                exact.delete([docs[i - 5]["id"]])
        stats = idx.stats()
        assert stats.n_chunks >= 20 * 5  # k=5 searches go through the graph
        assert stats.segments <= TINY.max_segments(stats.n_chunks)
        assert ann.EVENTS["build"] == 1  # the first write's graph; merges never rebuild it
        assert ann.EVENTS["added_rows"] == written  # each chunk inserted once, by its write
        graph = idx.field("dense")._graph  # type: ignore[attr-defined]
        assert graph.aliases and set(graph.aliases) <= _registered(idx)
        want = [{h.doc_id for h in exact.search(q, mode="dense", k=5)} for q in QUERIES]
        got = [[h.doc_id for h in idx.search(q, mode="dense", k=5)] for q in QUERIES]
        found = sum(len(set(g) & w) for g, w in zip(got, want, strict=True))
        assert found >= 0.95 * sum(len(w) for w in want)
        idx.check()
    assert (tmp_path / "ann" / "dense" / _alias_file(tmp_path / "ann")).exists()
    ann.EVENTS.clear()
    with Index.open(tmp_path / "ann", encoder=_enc()) as idx:
        assert [[h.doc_id for h in idx.search(q, mode="dense", k=5)] for q in QUERIES] == got
        assert (ann.EVENTS["build"], ann.EVENTS["load"], ann.EVENTS["added_rows"]) == (0, 1, 0)
        idx.check()
    exact.close()


def _alias_file(path: Path) -> str:
    from embedstack.index import ann_files

    return ann_files.alias_file(ann_files.newest(path / "dense"))


@pytest.mark.parametrize("field", ["dense", "sparse"])
def test_a_reader_refreshing_past_a_merge_retries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, field: str
) -> None:
    """A reader reads a snapshot naming a segment, and before it maps that segment's files
    the writer merges it away and deletes them: the reader reads the next snapshot instead
    of failing (the server's pooled readers refresh while its writer writes)."""
    monkeypatch.setattr(_merge, "POLICY", NEVER)
    path = tmp_path / "i"
    writer = Index.create(path, encoder=_enc(), sparse=CountSparse())
    writer.upsert([_doc(0)])
    reader = Index.open(path, encoder=_enc(), sparse=CountSparse(), readonly=True)
    assert [h.doc_id for h in reader.search("cat", mode=field, k=3)] == ["d0"]  # type: ignore[arg-type]
    writer.upsert([_doc(1)])  # a segment the reader has not mapped yet
    target: Any = reader.field("dense") if field == "dense" else sparse_index
    name = "_load" if field == "dense" else "load_segment"
    real = getattr(target, name)
    started: list[set[int]] = []

    def merge_first(*args: Any) -> Any:
        if not started:  # the writer merges every segment into one, deleting the others
            started.append(set())
            monkeypatch.setattr(_merge, "POLICY", ALL)
            writer.upsert([_doc(2)])
            started[0] |= _registered(writer)
        return real(*args)

    monkeypatch.setattr(target, name, merge_first)
    hits = reader.search("cat", mode=field, k=5)  # type: ignore[arg-type]
    assert started and len(started[0]) == 1
    assert sorted(h.doc_id for h in hits) == ["d0", "d1", "d2"]
    reader.close()
    writer.close()
