"""The BM25 merge policy: logarithmic segment count, exact rankings, crash safety of merges."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from embedstack import HashEncoder
from embedstack.errors import IndexCorrupt, InvalidInput
from embedstack.index import ChunkingParams, Index
from embedstack.index import lexical_segments as fmt
from embedstack.index.lexical import LexicalIndex, MergePolicy
from test_lexical import (
    assert_same_topk,
    build,
    snapshot,
    synthetic_corpus,
    synthetic_queries,
    vocab_runs,
)

TOL = 1e-5
SMALL = MergePolicy(segments_per_tier=3, floor_docs=4, max_merged_docs=10_000)


# --- the policy alone ------------------------------------------------------------------------


def test_pick_merges_a_full_tier_smallest_first() -> None:
    policy = MergePolicy(segments_per_tier=3, floor_docs=10, max_merged_docs=1000)
    assert policy.pick([10, 10], [10, 10]) is None
    assert policy.pick([5, 12, 3], [5, 12, 3]) == [0, 1, 2]  # all tier 0 (below 30)
    # tier 1 ([30, 90)) full; tier 0 holds two: the tier-1 merge is the one to do
    assert policy.pick([40, 3, 50, 60, 4], [40, 3, 50, 60, 4]) == [0, 2, 3]
    # four in tier 0: the three smallest merge
    assert policy.pick([9, 2, 8, 1], [9, 2, 8, 1]) == [1, 2, 3]
    # retired: 3 * 400 > 1000, never merged by size
    assert policy.pick([400, 500, 600], [400, 500, 600]) is None
    # more than 20 % deleted: rewritten alone; 20 % exactly is allowed
    assert policy.pick([400, 79], [400, 100]) == [1]
    assert policy.pick([400, 80], [400, 100]) is None


def test_max_segments_is_the_formula() -> None:
    policy = MergePolicy(segments_per_tier=10, floor_docs=1000, max_merged_docs=5_000_000)
    # tiers 0..3 exist at a million live docs (1000 * 10**3 <= 1e6), 9 each; two retired
    assert policy.max_segments(1_000_000) == 9 * 4 + 1_000_000 * 10 // 5_000_000
    assert policy.max_segments(0) == 9
    assert policy.max_segments(99_999) == 9 * 2


@pytest.mark.parametrize(
    "kwargs",
    [
        {"segments_per_tier": 1},
        {"floor_docs": 0},
        {"floor_docs": 10, "segments_per_tier": 10, "max_merged_docs": 99},
        {"deletes_pct_allowed": 101.0},
        {"segments_per_tier": 2.5},
        {"floor_docs": True},
    ],
)
def test_bad_policy_is_rejected(kwargs: dict) -> None:
    with pytest.raises(InvalidInput):
        MergePolicy(**kwargs)


# --- the policy in the index -----------------------------------------------------------------


def test_many_small_adds_keep_few_segments_and_exact_rankings(tmp_path: Path) -> None:
    texts = synthetic_corpus(1200, seed=7)
    rng = np.random.default_rng(3)
    index = LexicalIndex.create(tmp_path / "merged", merge_policy=SMALL)
    live: dict[int, str] = {}
    key, n_adds, counts = 0, 0, []
    while key < len(texts):
        size = int(rng.integers(1, 12))
        keys = np.arange(key, min(key + size, len(texts)), dtype=np.int64)
        index.add(keys, [texts[k] for k in keys])
        live.update({int(k): texts[k] for k in keys})
        key, n_adds = int(keys[-1]) + 1, n_adds + 1
        assert index.stats().n_segments <= SMALL.max_segments(len(index))
        counts.append(index.stats().n_segments)
        if n_adds % 7 == 0:  # deletes between adds, reclaimed by later merges
            gone = rng.choice(sorted(live), size=min(5, len(live)), replace=False)
            index.delete(gone)
            for k in gone.tolist():
                del live[k]
        if n_adds % 11 == 0:  # an upsert: a key deleted, then added back with new text
            k = sorted(live)[0]
            index.delete([k])
            index.add([k], [texts[(k * 7) % len(texts)]])
            live[k] = texts[(k * 7) % len(texts)]
    assert n_adds > 150 and max(counts) <= SMALL.max_segments(len(texts))
    assert index.stats().n_segments < n_adds // 10  # far fewer than one per add
    # the same ranking as one segment built from the live documents only
    keys = np.array(sorted(live), dtype=np.int64)
    fresh = build(tmp_path / "fresh", keys, [live[k] for k in keys.tolist()])
    for reopened in (index, LexicalIndex.open(index.path)):
        reopened.check()
        assert len(reopened) == len(keys)
        for query in synthetic_queries(25):
            np.testing.assert_allclose(
                reopened.score_docs(query, keys), fresh.score_docs(query, keys), atol=TOL, rtol=0
            )
            assert_same_topk(reopened.search(query, 10), fresh.search(query, 10))
    # no file left that the manifest does not name
    on_disk = {p.name for p in index.path.iterdir()} - {"lexical.json"}
    named = {s["name"] for s in json.loads((index.path / "lexical.json").read_text())["segments"]}
    named |= {s["tombstones"] for s in json.loads((index.path / "lexical.json").read_text())[
        "segments"] if s["tombstones"]}  # fmt: skip
    assert on_disk == named | set(vocab_runs(index.path))


def test_merges_reclaim_deleted_documents(tmp_path: Path) -> None:
    policy = MergePolicy(segments_per_tier=10, floor_docs=4, max_merged_docs=10_000)
    texts = synthetic_corpus(40, seed=2)
    index = build(tmp_path / "i", np.arange(40), texts, batches=4)
    index.delete(np.arange(0, 10))  # all of the first segment
    index.delete(np.arange(10, 14))  # 40 % of the second
    assert index.stats().n_tombstones == 14
    index = LexicalIndex.open(index.path, merge_policy=policy)
    index.add([100], ["new document"])
    stats = index.stats()
    assert (stats.n_tombstones, stats.n_docs) == (0, 27)
    assert stats.n_segments == 4  # the emptied segment gone, the second rewritten


def test_index_field_keeps_bm25_segments_logarithmic(tmp_path: Path) -> None:
    chunks = ChunkingParams(max_tokens=32, overlap=8, allow_any=True)
    idx = Index.create(tmp_path / "idx", encoder=HashEncoder(32), chunking=chunks)
    texts = synthetic_corpus(90, seed=4)
    for b in range(30):
        idx.add([{"id": f"d{b}-{i}", "text": texts[3 * b + i] or "x"} for i in range(3)])
    lexical = idx.field("bm25").lexical  # type: ignore[attr-defined]
    assert lexical.stats().n_segments <= lexical.merge_policy.max_segments(90) < 30
    hits = idx.search(texts[4], mode="bm25", k=3)
    assert "d1-1" in [h.doc_id for h in hits]
    idx.close()


# --- crash safety ----------------------------------------------------------------------------


def _merging_index(path: Path) -> tuple[LexicalIndex, list[str]]:
    """An index whose next add triggers a merge (two tier-0 segments under SMALL)."""
    texts = synthetic_corpus(30, seed=9)
    index = LexicalIndex.create(path, merge_policy=SMALL)
    index.add(np.arange(0, 3), texts[0:3])
    index.add(np.arange(3, 6), texts[3:6])
    index.delete([4])
    assert index.stats().n_segments == 2
    return index, texts


@pytest.mark.parametrize("fail_at", ["merge_segments", "write_segment", "save_json_atomic"])
def test_failed_merge_leaves_previous_state(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fail_at: str
) -> None:
    index, texts = _merging_index(tmp_path / "i")
    before = snapshot(index.path)
    results = [index.search(q, k=5) for q in synthetic_queries(8)]
    real = getattr(fmt, fail_at)
    calls = []

    def boom(*args: object, **kwargs: object) -> object:
        calls.append(fail_at)
        if fail_at == "write_segment" and len(calls) == 1:
            return real(*args, **kwargs)  # the added segment is written; the merge fails
        raise OSError("disk full")

    monkeypatch.setattr(fmt, fail_at, boom)
    with pytest.raises(OSError):
        index.add([50], ["a brand new apple"])
    monkeypatch.undo()
    assert calls and snapshot(index.path) == before
    for idx in (index, LexicalIndex.open(index.path)):
        idx.check()
        assert len(idx) == 5 and idx.stats().n_segments == 2
        for q, (scores, keys) in zip(synthetic_queries(8), results, strict=True):
            got = idx.search(q, k=5)
            np.testing.assert_array_equal(got[1], keys)
            np.testing.assert_allclose(got[0], scores, atol=TOL, rtol=0)
    index.add([50], ["a brand new apple"])
    assert index.stats().n_segments == 1 and index.search("apple", k=1)[1].tolist() == [50]


def test_crash_after_the_flip_leaves_the_new_state_and_collects_leftovers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    index, _ = _merging_index(tmp_path / "i")
    monkeypatch.setattr(fmt, "remove", lambda path: None)  # dies before deleting old files
    index.add([50], ["a brand new apple"])
    monkeypatch.undo()
    reopened = LexicalIndex.open(index.path)
    reopened.check()
    assert reopened.stats().n_segments == 1 and len(reopened) == 6
    assert len(list(index.path.iterdir())) > 2  # replaced segments still on disk
    reopened.collect_garbage()
    (only,) = json.loads((index.path / "lexical.json").read_text())["segments"]
    names = sorted(p.name for p in index.path.iterdir())
    assert names == ["lexical.json", only["name"], *vocab_runs(index.path)]
    assert reopened.search("apple", k=1)[1].tolist() == [50]


CHILD = r"""
import sys
import numpy as np
sys.path.insert(0, sys.argv[1])
from test_lexical import synthetic_corpus
from embedstack.index.lexical import LexicalIndex, MergePolicy
index = LexicalIndex.open(sys.argv[2], merge_policy=MergePolicy(3, 4, 10_000))
texts = synthetic_corpus(2000, seed=5)
print("open", flush=True)
for b in range(len(index) // 20, 100):
    print("start", b, flush=True)
    index.add(np.arange(b * 20, b * 20 + 20), texts[b * 20 : b * 20 + 20])
    print("ack", b, flush=True)
"""


def test_sigkill_during_merging_adds_leaves_an_acknowledged_state(tmp_path: Path) -> None:
    """A writer whose every third add merges is SIGKILLed at random moments; the reopened
    index always holds exactly the acknowledged batches (or one more: committed, not acked),
    passes check(), and ranks like a fresh build."""
    path = tmp_path / "i"
    LexicalIndex.create(path)
    texts = synthetic_corpus(2000, seed=5)
    rng = np.random.default_rng(0)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    tests = str(Path(__file__).resolve().parent)
    outcomes = set()
    for _ in range(6):
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, tests, str(path)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )  # fmt: skip
        assert child.stdout is not None
        acked, target = None, int(rng.integers(2, 8))
        while line := child.stdout.readline():
            kind, _, number = line.strip().partition(" ")
            if kind == "ack":
                acked = int(number)
            if kind == "start" and acked is not None and int(number) - acked >= 1:
                target -= 1
                if target == 0:
                    time.sleep(float(rng.uniform(0.0, 0.05)))
                    break
        child.send_signal(signal.SIGKILL)
        # the child kept running while this process slept: its last acknowledgements may
        # still sit unread in the pipe
        rest, _ = child.communicate()
        for line in rest.splitlines():
            kind, _, number = line.strip().partition(" ")
            if kind == "ack":
                acked = int(number)
        index = LexicalIndex.open(path)
        index.check()
        n = len(index)
        assert n % 20 == 0 and acked is not None and n // 20 in (acked + 1, acked + 2)
        outcomes.add(n // 20 - acked)
        index.collect_garbage()
        keys = np.arange(n, dtype=np.int64)
        assert np.array_equal(index.keys(), keys)
        assert index.stats().n_segments <= MergePolicy(3, 4, 10_000).max_segments(n)
        fresh = build(tmp_path / f"fresh-{n}", keys, texts[:n])
        for query in synthetic_queries(5):
            assert_same_topk(index.search(query, 10), fresh.search(query, 10))
    assert outcomes  # kills landed (in flight or just after a commit)


def test_a_reader_opening_during_a_merge_retries_with_the_new_manifest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer merges and deletes the segments a reader's manifest named between the
    reader's manifest read and its segment loads: the reader retries with the new manifest."""
    index, _ = _merging_index(tmp_path / "i")
    real = fmt.load_segments
    raced = []

    def racing(*args: object, **kwargs: object) -> tuple[list[fmt.Segment], object]:
        if not raced:
            raced.append(True)
            index.add([50], ["a brand new apple"])  # merges: the old segments are deleted
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(fmt, "load_segments", racing)
    reader = LexicalIndex.open(index.path)
    assert raced and len(reader) == 6 and reader.search("apple", k=1)[1].tolist() == [50]
    # a segment missing while the manifest did not change is corruption, not a race
    monkeypatch.undo()
    (only,) = json.loads((index.path / "lexical.json").read_text())["segments"]
    fmt.remove(index.path / only["name"])
    with pytest.raises(IndexCorrupt):
        LexicalIndex.open(index.path)


# --- merge_segments against a plain Python oracle ---------------------------------------------


@st.composite
def _segments(draw: st.DrawFn) -> list[fmt.Segment]:
    out = []
    key = 0
    for s in range(draw(st.integers(1, 4))):
        n = draw(st.integers(1, 6))
        docs = [draw(st.dictionaries(st.integers(0, 9), st.integers(1, 5), max_size=4))
                for _ in range(n)]  # fmt: skip
        deleted = sorted(draw(st.sets(st.integers(0, n - 1), max_size=n)))
        gids = sorted({g for d in docs for g in d} | set(draw(st.sets(st.integers(0, 9)))))
        rows = [[(i, d[g]) for i, d in enumerate(docs) if g in d] for g in gids]  # may be empty
        out.append(fmt.Segment(
            name=f"s{s}", keys=np.arange(key, key + n, dtype=np.int64),
            lengths=np.array([sum(d.values()) for d in docs], np.int32),
            gids=np.array(gids, np.int64),
            indptr=np.concatenate([[0], np.cumsum([len(r) for r in rows])]).astype(np.int64),
            docs=np.array([i for r in rows for i, _ in r], np.int32),
            tfs=np.array([tf for r in rows for _, tf in r], np.int32),
            deleted=np.array(deleted, np.int32),
        ))  # fmt: skip
        key += n
    return out


@settings(max_examples=200, deadline=None)
@given(segments=_segments())
def test_merge_segments_equals_a_plain_python_merge(segments: list[fmt.Segment]) -> None:
    live_keys, lengths, postings = [], [], {}  # postings: gid -> [(new doc, tf)] in order
    for seg in segments:
        gone = set(seg.deleted.tolist())
        new_id = {}
        for i in range(len(seg.keys)):
            if i not in gone:
                new_id[i] = len(live_keys)
                live_keys.append(int(seg.keys[i]))
                lengths.append(int(seg.lengths[i]))
        for row, gid in enumerate(seg.gids.tolist()):
            for j in range(int(seg.indptr[row]), int(seg.indptr[row + 1])):
                if int(seg.docs[j]) in new_id:
                    postings.setdefault(gid, []).append((new_id[int(seg.docs[j])],
                                                         int(seg.tfs[j])))  # fmt: skip
    merged = fmt.merge_segments("m", segments)
    if not live_keys:
        assert merged is None
        return
    assert merged is not None
    assert merged.keys.tolist() == live_keys and merged.lengths.tolist() == lengths
    assert merged.gids.tolist() == sorted(postings)
    bounds = zip(merged.gids.tolist(), merged.indptr[:-1].tolist(), merged.indptr[1:].tolist(),
                 strict=True)  # fmt: skip
    got = {g: list(zip(merged.docs[a:b].tolist(), merged.tfs[a:b].tolist(), strict=True))
           for g, a, b in bounds}  # fmt: skip
    assert got == postings
    assert merged.docs.dtype == np.int32 and merged.tfs.dtype == np.int32
    assert merged.indptr.dtype == np.int64 and len(merged.deleted) == 0
