"""The persisted BM25 vocabulary: each segment stores the ids of its terms, so opening an index
reads ids instead of rebuilding the vocabulary term by term (issue 18).

A stale or corrupt id must never change a ranking silently: the segments' ids are checked
against each other at open and by ``check()``; an index written before ids were stored still
opens and ranks exactly alike, and gets ids as merges rewrite its segments.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from embedstack.errors import IndexCorrupt
from embedstack.index import lexical_segments
from embedstack.index.lexical import LexicalIndex
from embedstack.index.tokenize import Vocabulary
from test_lexical import (
    assert_same_topk,
    build,
    corrupted,
    synthetic_corpus,
    synthetic_queries,
)

QUERIES = synthetic_queries(12)


def _same_rankings(index: LexicalIndex, reference: LexicalIndex) -> None:
    keys = reference.keys()
    np.testing.assert_array_equal(index.keys(), keys)
    for query in QUERIES:
        assert_same_topk(index.search(query, 10), reference.search(query, 10))
        np.testing.assert_allclose(
            index.score_docs(query, keys), reference.score_docs(query, keys), atol=1e-5, rtol=0
        )


def _strip_term_ids(path: Path) -> None:
    """Turn an index into the layout written before term ids were stored."""
    manifest = json.loads((path / "lexical.json").read_text())
    for meta in manifest["segments"]:
        meta.pop("term_ids")
        (path / meta["name"] / "term_ids.npy").unlink()
    for run in manifest.pop("vocab")["runs"]:  # nor the stored vocabulary (lexical_vocab)
        (path / run["file"]).unlink()
    (path / "lexical.json").write_text(json.dumps(manifest))


def _segment_terms(path: Path, name: str) -> list[str]:
    return np.load(path / name / "terms.npy").tobytes().decode().split("\n")


@settings(max_examples=50, deadline=None)
@given(st.lists(st.lists(st.sampled_from("abcdefg"), max_size=12), max_size=4))
def test_add_many_gives_the_ids_of_repeated_add(batches: list[list[str]]) -> None:
    fast, slow = Vocabulary(), Vocabulary()
    for terms in batches:
        got = fast.add_many(terms)
        assert got.dtype == np.int64
        assert got.tolist() == [slow.add(t) for t in terms]
    assert (fast.terms, fast.ids) == (slow.terms, slow.ids)


def test_reopening_reads_the_writers_ids(tmp_path: Path) -> None:
    texts = synthetic_corpus(120)
    index = build(tmp_path / "i", np.arange(120), texts, batches=4)
    manifest = json.loads((index.path / "lexical.json").read_text())
    assert manifest["segments"] and all(m["term_ids"] is True for m in manifest["segments"])
    for meta in manifest["segments"]:  # each segment's ids are the writer's ids of its terms
        ids = np.load(index.path / meta["name"] / "term_ids.npy")
        terms = _segment_terms(index.path, meta["name"])
        assert ids.tolist() == [index._analyzer.vocab.ids[t] for t in terms]
    reopened = LexicalIndex.open(index.path)
    assert reopened._analyzer.vocab.ids == index._analyzer.vocab.ids
    _same_rankings(reopened, index)


def test_ids_survive_deletes_merges_and_compaction(tmp_path: Path) -> None:
    texts = synthetic_corpus(200)
    index = build(tmp_path / "i", np.arange(100), texts[:100], batches=5)
    index.delete(np.arange(0, 100, 3))
    index.compact()  # every document holding some terms may be gone: ids leave holes
    reopened = LexicalIndex.open(index.path)
    reopened.add(np.arange(100, 200), texts[100:])  # new and returning terms
    reopened.delete([101, 150])
    live = [k for k in range(200) if (k >= 100 or k % 3) and k not in (101, 150)]
    fresh = build(tmp_path / "fresh", np.array(live), [texts[k] for k in live])
    for idx in (reopened, LexicalIndex.open(index.path)):
        idx.check()
        _same_rankings(idx, fresh)


def test_a_failed_add_leaves_no_stale_id(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A failed write has grown the writer's vocabulary in memory only; later writes and a
    reopened index must still agree on every id."""
    index = build(tmp_path / "i", np.array([1, 2]), ["red apple", "green apple"])

    def boom(*args: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(lexical_segments, "save_json_atomic", boom)
    with pytest.raises(OSError):
        index.add([3, 4], ["zebra quagga", "okapi apple"])
    monkeypatch.undo()
    index.add([5], ["okapi zebra"])  # ids given during the failed write
    reopened = LexicalIndex.open(index.path)
    reopened.add([6], ["quagga red"])
    fresh = build(tmp_path / "fresh", np.array([1, 2, 5, 6]),
                  ["red apple", "green apple", "okapi zebra", "quagga red"])  # fmt: skip
    for idx in (reopened, LexicalIndex.open(index.path)):
        idx.check()
        _same_rankings(idx, fresh)


def _give_shared_term_another_id(path: Path) -> None:
    first = _segment_terms(path, "seg-000001")
    second = _segment_terms(path, "seg-000002")
    shared = sorted(set(first) & set(second))[0]
    ids = np.load(path / "seg-000002" / "term_ids.npy")
    row = second.index(shared)
    ids[row] = ids.max() + 1
    np.save(path / "seg-000002" / "term_ids.npy", ids)


def _give_two_terms_one_id(path: Path) -> None:
    ids = np.load(path / "seg-000002" / "term_ids.npy")
    ids[1] = ids[0]
    np.save(path / "seg-000002" / "term_ids.npy", ids)


def _negative_id(path: Path) -> None:
    ids = np.load(path / "seg-000001" / "term_ids.npy")
    ids[0] = -1
    np.save(path / "seg-000001" / "term_ids.npy", ids)


def _huge_id(path: Path) -> None:
    ids = np.load(path / "seg-000001" / "term_ids.npy")
    ids[0] = 1 << 40
    np.save(path / "seg-000001" / "term_ids.npy", ids)


def _truncated_ids(path: Path) -> None:
    ids = np.load(path / "seg-000001" / "term_ids.npy")
    np.save(path / "seg-000001" / "term_ids.npy", ids[:-1].copy())


def _missing_ids(path: Path) -> None:
    (path / "seg-000001" / "term_ids.npy").unlink()


@pytest.mark.parametrize(
    "corrupt",
    [
        _give_shared_term_another_id,
        _give_two_terms_one_id,
        _negative_id,
        _huge_id,
        _truncated_ids,
        _missing_ids,
    ],
)
def test_stale_or_corrupt_ids_are_refused(tmp_path: Path, corrupt) -> None:  # type: ignore[no-untyped-def]
    index = corrupted(tmp_path / "i", 80, corrupt)
    with pytest.raises(IndexCorrupt):
        index.check()
    with pytest.raises(IndexCorrupt):
        LexicalIndex.open(index.path)


def test_an_index_without_stored_ids_opens_ranks_alike_and_gets_them(tmp_path: Path) -> None:
    texts = synthetic_corpus(150)
    index = build(tmp_path / "i", np.arange(100), texts[:100], batches=3)
    index.delete([4, 50])
    _strip_term_ids(index.path)
    old = LexicalIndex.open(index.path)
    old.check()
    _same_rankings(old, index)
    old.add(np.arange(100, 150), texts[100:])  # a new segment with ids beside old ones
    manifest = json.loads((index.path / "lexical.json").read_text())
    assert [m["term_ids"] for m in manifest["segments"]] == [False, False, False, True]
    mixed = LexicalIndex.open(index.path)
    mixed.check()
    live = [k for k in range(150) if k not in (4, 50)]
    fresh = build(tmp_path / "fresh", np.array(live), [texts[k] for k in live])
    _same_rankings(mixed, fresh)
    mixed.compact()  # the merge rewrites everything with ids
    manifest = json.loads((index.path / "lexical.json").read_text())
    assert [m["term_ids"] for m in manifest["segments"]] == [True]
    for idx in (mixed, LexicalIndex.open(index.path)):
        idx.check()
        _same_rankings(idx, fresh)


def test_from_ids_rejects_disagreeing_parts() -> None:
    ids = np.array([0, 1], dtype=np.int64)
    vocab = Vocabulary.from_ids([(ids, ["a", "b"]), (np.array([1, 3]), ["b", "c"])])
    assert vocab.terms == ["a", "b", "", "c"] and vocab.ids == {"a": 0, "b": 1, "c": 3}
    assert vocab.add("d") == 4 and vocab.get("") == -1
    for parts in (
        [(ids, ["a", "b"]), (ids, ["a", "c"])],  # one id, two terms
        [(ids, ["a", "b"]), (np.array([2]), ["a"])],  # one term, two ids
        [(np.array([-1]), ["a"])],
        [(ids, ["a"])],
        [(np.array([0]), [""])],
    ):
        with pytest.raises(ValueError):
            Vocabulary.from_ids(parts)
