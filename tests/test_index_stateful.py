"""Model-based stateful test of :class:`embedstack.index.Index` (issue 15, item 7).

Hypothesis drives random add / upsert / delete / compact / close-and-reopen / search steps
on a real index in a temporary folder and checks every step against a plain Python oracle,
a dict ``id -> (title, text, metadata)``:

* documents: ``len``, ``get`` of every id (deleted ones give None), ``stats()``;
* BM25 (``mode="bm25"``): ids and scores against ``bm25s`` (Lucene BM25, same analysis)
  over exactly the live documents, and against a fresh index built from them;
* dense (``mode="dense"``): exact top-k against brute-force cosine over the hashing
  encoder's vectors of each live document (one chunk each), max per document;
* filters: ``$gte``/``$lt``/``$in``/``$ne``/equality/``$or`` evaluated in Python over the
  live metadata, with MongoDB array semantics; a key no live document has is an error;
* error paths: adding an existing id, repeating an id in a batch or deleting a missing id
  raises :class:`InvalidInput` and changes nothing.

Only the public API is used. The default tier runs 200 short examples; the slow tier runs
5,000 (``EMBEDSTACK_STATEFUL_EXAMPLES`` overrides either count).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from itertools import count
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from _oracle import Oracle, assert_ranking
from embedstack import HashEncoder, ModelSpec, register_model, unregister_model
from embedstack.errors import InvalidInput
from embedstack.index import AddResult, Hit, Index

MODEL = "test-stateful-hash-64"
DIM = 64

# --- strategies: tiny documents over a vocabulary with inflections, case and stopwords ------

IDS = ("d0", "d1", "d2", "d3", "d4", "d5", "d6 é")
WORDS = ("cat", "cats", "Dog", "dogs", "running", "runs", "protein", "p53", "x", "alpha",
         "beta", "the", "of", "is")  # fmt: skip
TAGS = ("a", "b", "c")
YEARS = st.integers(2018, 2022)

words = st.lists(st.sampled_from(WORDS), min_size=1, max_size=6).map(" ".join)
titles = st.one_of(st.just(""), st.lists(st.sampled_from(WORDS), min_size=1, max_size=2)
                   .map(" ".join))  # fmt: skip
tag_values = st.one_of(st.sampled_from(TAGS), st.lists(st.sampled_from(TAGS), max_size=2))
metadata = st.fixed_dictionaries({}, optional={"year": YEARS, "tag": tag_values})
documents = st.tuples(st.sampled_from(IDS), titles, words, metadata)
batches = st.lists(documents, min_size=1, max_size=3, unique_by=lambda d: d[0])
queries = st.one_of(words, st.just("unseenword cat"))
PROBE = "cat dogs running protein p53 alpha x"
filters = st.one_of(
    st.none(),
    st.builds(lambda y: {"year": y}, YEARS),
    st.builds(lambda y: {"year": {"$gte": y}}, YEARS),
    st.builds(lambda a, b: {"year": {"$gte": a, "$lt": b}}, YEARS, YEARS),
    st.builds(lambda t: {"tag": t}, st.sampled_from(TAGS)),
    st.builds(lambda ts: {"tag": {"$in": ts}}, st.lists(st.sampled_from(TAGS), max_size=2)),
    st.builds(lambda t: {"tag": {"$ne": t}}, st.sampled_from(TAGS)),
    st.builds(lambda y, t: {"year": {"$lte": y}, "tag": t}, YEARS, st.sampled_from(TAGS)),
    st.builds(
        lambda y, t: {"$or": [{"year": {"$gt": y}}, {"tag": {"$in": [t]}}]},
        YEARS,
        st.sampled_from(TAGS),
    ),  # fmt: skip
)
ks = st.integers(1, 8)

# --- the state machine --------------------------------------------------------------------------


class IndexMachine(RuleBasedStateMachine):
    """One index per example, in a fresh folder under :attr:`root`: a copy of the empty
    index ``root / "empty"`` (copying is cheaper than creating one per example)."""

    root: Path = Path("/nonexistent")
    _serial = count()

    def __init__(self) -> None:
        super().__init__()
        self.path = self.root / f"ex{next(self._serial)}"
        self.index = self._fresh(self.path)
        self.oracle = Oracle(HashEncoder(DIM))
        self.unchecked = True  # a write was tried since documents_match last ran
        self.writes = 0  # writes since the index was opened
        self.rebuilt = False  # matches_rebuild ran (it is the dearest step: once is enough)

    @classmethod
    def _fresh(cls, path: Path) -> Index:
        shutil.copytree(cls.root / "empty", path)
        return Index.open(path)

    def teardown(self) -> None:
        try:
            if not self.index.readonly:
                self.index.check()
        finally:
            self.index.close()
            shutil.rmtree(self.path, ignore_errors=True)

    @initialize(batch=st.lists(documents, min_size=1, max_size=5, unique_by=lambda d: d[0]))
    def seed(self, batch: list[tuple[str, str, str, dict[str, Any]]]) -> None:
        self.upsert(batch)

    # --- writes ---------------------------------------------------------------------------

    @staticmethod
    def _items(batch: list[tuple[str, str, str, dict[str, Any]]]) -> list[dict[str, Any]]:
        out = []
        for doc_id, title, text, meta in batch:
            item: dict[str, Any] = {"id": doc_id, "text": text}
            if title:
                item["title"] = title
            if meta:
                item["metadata"] = meta
            out.append(item)
        return out

    @rule(batch=batches)
    def add(self, batch: list[tuple[str, str, str, dict[str, Any]]]) -> None:
        self.unchecked = True
        if any(d[0] in self.oracle.docs for d in batch):
            with pytest.raises(InvalidInput):
                self.index.add(self._items(batch))
            return  # the invariants check that nothing changed
        result = self.index.add(self._items(batch))
        self.writes += 1
        assert result == AddResult(added=len(batch), chunks=len(batch))
        for doc_id, title, text, meta in batch:
            self.oracle.put(doc_id, (title, text, meta))

    @rule(batch=batches)
    def upsert(self, batch: list[tuple[str, str, str, dict[str, Any]]]) -> None:
        self.unchecked = True
        new = sum(d[0] not in self.oracle.docs for d in batch)
        same = sum(self.oracle.docs.get(d[0]) == d[1:] for d in batch)
        result = self.index.upsert(self._items(batch))
        self.writes += 1
        changed = len(batch) - same
        assert result == AddResult(added=new, updated=changed - new, unchanged=same,
                                   chunks=changed)  # fmt: skip
        for doc_id, title, text, meta in batch:
            if self.oracle.docs.get(doc_id) != (title, text, meta):
                self.oracle.put(doc_id, (title, text, meta))

    @rule(batch=batches, text=words, upsert=st.booleans())
    def repeat_id(self, batch: list[tuple[str, str, str, dict[str, Any]]], text: str,
                  upsert: bool) -> None:  # fmt: skip
        """A batch repeating an id is refused whole, even by upsert."""
        self.unchecked = True
        items = self._items(batch)
        items.insert(len(items) // 2 + 1, {"id": batch[0][0], "text": text})
        with pytest.raises(InvalidInput):
            (self.index.upsert if upsert else self.index.add)(items)

    @precondition(lambda self: bool(self.oracle.docs))
    @rule(data=st.data())
    def upsert_live(self, data: st.DataObject) -> None:
        """Replace (or re-send unchanged) live documents."""
        live = st.sampled_from(sorted(self.oracle.docs))
        docs = st.tuples(live, titles, words, metadata)
        self.upsert(data.draw(st.lists(docs, min_size=1, max_size=2, unique_by=lambda d: d[0]),
                              label="batch"))  # fmt: skip

    @precondition(lambda self: bool(self.oracle.docs))
    @rule(data=st.data())
    def delete_live(self, data: st.DataObject) -> None:
        live = st.sampled_from(sorted(self.oracle.docs))
        self.delete(data.draw(st.lists(live, min_size=1, max_size=3), label="ids"))

    @rule(ids=st.lists(st.sampled_from(IDS), max_size=3))
    def delete(self, ids: list[str]) -> None:
        """Delete ``ids``: refused whole when one is missing."""
        self.unchecked = True
        if any(i not in self.oracle.docs for i in ids):
            with pytest.raises(InvalidInput):
                self.index.delete(ids)
            return
        assert self.index.delete(ids) == len(set(ids))
        self.writes += 1
        for doc_id in set(ids):
            self.oracle.remove(doc_id)

    @precondition(lambda self: self.oracle.pending > 0)
    @rule()
    def compact(self) -> None:
        self.unchecked = True
        self.index.compact()
        self.oracle.pending = 0
        self.writes += 1

    @precondition(lambda self: self.writes > 0)
    @rule()
    def reopen(self) -> None:
        self.unchecked = True
        self.writes = 0
        old = self.index
        old.close()
        with pytest.raises(InvalidInput):
            old.search("cat", mode="bm25")
        self.index = Index.open(self.path)

    # --- reads ----------------------------------------------------------------------------

    def _search(self, qs: list[str], mode: str, k: int,
                flt: dict[str, Any] | None) -> list[list[Hit]] | None:  # fmt: skip
        """search_many, or None after checking that it raises like the oracle does."""
        try:
            self.oracle.allowed(flt)
        except InvalidInput:
            with pytest.raises(InvalidInput):
                self.index.search_many(qs, mode=mode, k=k, filter=flt)  # type: ignore[arg-type]
            return None
        return self.index.search_many(qs, mode=mode, k=k, filter=flt)  # type: ignore[arg-type]

    def _check_docs(self, hits: list[Hit]) -> None:
        for hit in hits:
            title, text, meta = self.oracle.docs[hit.doc_id]
            assert (hit.title, hit.text, hit.metadata) == (title, text, meta), hit

    @rule(qs=st.lists(queries, min_size=1, max_size=2), k=ks, flt=filters)
    def search_dense(self, qs: list[str], k: int, flt: dict[str, Any] | None) -> None:
        results = self._search(qs, "dense", k, flt)
        if results is None:
            return
        allowed = self.oracle.allowed(flt)
        for q, hits in zip(qs, results, strict=True):
            assert_ranking(hits, self.oracle.dense(q, allowed), k, f"dense {q!r} {flt}")
            assert all(h.chunk == 0 for h in hits)
            self._check_docs(hits)

    @rule(q=queries, k=ks, flt=filters)
    def search_bm25(self, q: str, k: int, flt: dict[str, Any] | None) -> None:
        results = self._search([q], "bm25", k, flt)
        if results is None:
            return
        expected = self.oracle.bm25(q, self.oracle.allowed(flt))
        assert_ranking(results[0], expected, k, f"bm25 {q!r} {flt}")
        self._check_docs(results[0])

    @precondition(lambda self: bool(self.oracle.docs) and not self.rebuilt)
    @rule(qs=st.lists(queries, min_size=1, max_size=3), k=ks)
    def matches_rebuild(self, qs: list[str], k: int) -> None:
        """A fresh index over exactly the live documents ranks alike: its full ranking is the
        reference for this index's top k (ties at the cut may be filled either way: see
        test_top_k_is_a_prefix_of_a_deeper_search)."""
        self.rebuilt = True
        path = self.path.with_name(self.path.name + "-rebuild")
        live = sorted(self.oracle.docs)
        with self._fresh(path) as fresh:
            fresh.add(self._items([(i, *self.oracle.docs[i]) for i in live]))
            for mode in ("bm25", "dense"):
                got = self.index.search_many(qs, mode=mode, k=k)
                ref = fresh.search_many(qs, mode=mode, k=len(live))
                for q, g, r in zip(qs, got, ref, strict=True):
                    assert_ranking(g, {h.doc_id: h.score for h in r}, k, f"rebuild {mode} {q!r}")
        shutil.rmtree(path)

    # --- invariants -------------------------------------------------------------------------

    @invariant()
    def documents_match(self) -> None:
        """Documents, counts and statistics (after every step that tried a write)."""
        if not self.unchecked:
            return
        self.unchecked = False
        docs = self.oracle.docs
        assert len(self.index) == len(docs)
        for doc_id in IDS:
            got = self.index.get(doc_id)
            if doc_id not in docs:
                assert got is None, (doc_id, got)
                continue
            title, text, meta = docs[doc_id]
            assert got == {"id": doc_id, "title": title, "text": text, "metadata": meta}
        stats = self.index.stats()
        assert (stats.n_docs, stats.n_chunks) == (len(docs), len(docs))
        assert stats.n_deleted == self.oracle.pending, (stats, self.oracle.pending)
        # one probe per retriever over every live document: a stale vector or posting shows
        # at the write that left it, not only when a random search happens to look
        live = sorted(docs)
        if live:
            dense, bm25 = (self.index.search(PROBE, mode=m, k=len(IDS)) for m in ("dense", "bm25"))
            assert_ranking(dense, self.oracle.dense(PROBE, live), len(IDS), "dense probe")
            assert_ranking(bm25, self.oracle.bm25(PROBE, live), len(IDS), "bm25 probe")


# --- the tests --------------------------------------------------------------------------------


@pytest.fixture()
def model() -> Iterator[str]:
    """The tier-0 hashing encoder under a registry name, so that Index.open finds it."""
    register_model(ModelSpec(MODEL, "embedstack/test-hash", DIM, 512,
                             factory=HashEncoder.from_spec), overwrite=True)  # fmt: skip
    yield MODEL
    unregister_model(MODEL)


@pytest.fixture()
def machine_root(model: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    # Durability is not what this test checks (tests/test_index_crash.py does): skipping
    # the fsyncs keeps hundreds of examples fast on a busy disk. SQLite still syncs.
    monkeypatch.setattr(os, "fsync", lambda fd: None)
    Index.create(tmp_path / "empty", encoder=model).close()
    IndexMachine.root = tmp_path
    return tmp_path


def _run(examples: int, steps: int) -> None:
    n = int(os.environ.get("EMBEDSTACK_STATEFUL_EXAMPLES", examples))
    run_state_machine_as_test(
        IndexMachine,
        settings=settings(max_examples=n, stateful_step_count=steps, deadline=None,
                          database=None, suppress_health_check=[HealthCheck.too_slow]),
    )  # fmt: skip


def test_index_matches_oracle(machine_root: Path) -> None:
    _run(200, 10)


@pytest.mark.slow
def test_index_matches_oracle_long(machine_root: Path) -> None:
    _run(5000, 25)


# --- what the machine found -------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["bm25", "dense"])
def test_top_k_is_a_prefix_of_a_deeper_search(model: str, tmp_path: Path, mode: str) -> None:
    """Equal scores rank by document id (embedstack.pipeline.run relies on it), at the cut too:
    the index built by adding d2, d5, d0 must answer like one built in id order."""
    with Index.create(tmp_path / "idx", encoder=model) as index:
        index.add([{"id": i, "text": "cat"} for i in ("d2", "d5", "d0")])
        deep = index.search("cat", mode=mode, k=3)  # type: ignore[arg-type]
        assert [h.doc_id for h in deep] == ["d0", "d2", "d5"]
        assert len({h.score for h in deep}) == 1
        for k in (1, 2):
            top = index.search("cat", mode=mode, k=k)  # type: ignore[arg-type]
            assert [h.doc_id for h in top] == ["d0", "d2", "d5"][:k]
