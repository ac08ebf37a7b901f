"""Model-based test of the Index contract on every backend: hypothesis draws sequences of
add / upsert / delete / reopen / search and each step is checked against the plain Python
oracle of ``tests/_oracle.py`` (documents in a dict, brute-force dense scores, bm25s for
BM25, filters evaluated in Python; errors where the oracle says so, and then no change).

The default run draws a few sequences per backend; ``-m slow`` draws many more.
"""

from __future__ import annotations

from typing import Any

import pytest
from _backends import Backend
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from _oracle import Oracle, assert_ranking
from embedstack import HashEncoder
from embedstack.errors import InvalidInput
from embedstack.index import Index

IDS = ("d0", "d1", "d2", "d3", "d4", "d5 é")
WORDS = ("cat", "cats", "Dog", "dogs", "running", "runs", "protein", "p53", "x", "alpha",
         "the", "of")  # fmt: skip
TAGS = ("a", "b", "c")
YEARS = st.integers(2018, 2022)

words = st.lists(st.sampled_from(WORDS), min_size=1, max_size=6).map(" ".join)
titles = st.one_of(st.just(""), st.sampled_from(WORDS))
meta = st.fixed_dictionaries({}, optional={"year": YEARS, "tag": st.one_of(
    st.sampled_from(TAGS), st.lists(st.sampled_from(TAGS), max_size=2))})  # fmt: skip
docs = st.builds(lambda i, t, x, m: {"id": i, "title": t, "text": x, "metadata": m},
                 st.sampled_from(IDS), titles, words, meta)  # fmt: skip
batches = st.lists(docs, min_size=1, max_size=3, unique_by=lambda d: d["id"])
filters = st.one_of(
    st.none(),
    st.builds(lambda y: {"year": {"$gte": y}}, YEARS),
    st.builds(lambda t: {"tag": t}, st.sampled_from(TAGS)),
    st.builds(lambda t: {"tag": {"$nin": [t]}}, st.sampled_from(TAGS)),
    st.builds(
        lambda y, t: {"$or": [{"year": {"$lt": y}}, {"tag": t}]}, YEARS, st.sampled_from(TAGS)
    ),  # fmt: skip
)
ops = st.one_of(
    st.tuples(st.just("upsert"), batches),
    st.tuples(st.just("add"), batches),
    st.tuples(st.just("delete"), st.lists(st.sampled_from(IDS), min_size=1, max_size=2)),
    st.tuples(st.just("reopen")),
    st.tuples(
        st.just("search"),
        st.one_of(words, st.just("unseen cat")),
        st.sampled_from(["dense", "bm25"]),
        st.integers(1, 7),
        filters,
    ),  # fmt: skip
)


def _run(backend: Backend, steps: list[tuple[Any, ...]]) -> None:
    b = backend.fresh()
    idx = b.create()
    try:
        _steps(b, idx, steps)
    finally:
        b.opened[-1].close()


def _steps(b: Backend, idx: Index, steps: list[tuple[Any, ...]]) -> None:
    oracle = Oracle(HashEncoder(64))
    for step in steps:
        kind = step[0]
        if kind in ("add", "upsert"):
            batch = step[1]
            if kind == "add" and any(d["id"] in oracle.docs for d in batch):
                with pytest.raises(InvalidInput):
                    idx.add(batch)
            else:
                getattr(idx, kind)(batch)
                for d in batch:
                    doc = (d["title"], d["text"], d["metadata"])
                    if oracle.docs.get(d["id"]) != doc:
                        oracle.put(d["id"], doc)
        elif kind == "delete":
            ids = list(dict.fromkeys(step[1]))
            if any(i not in oracle.docs for i in ids):
                with pytest.raises(InvalidInput):
                    idx.delete(ids)
            else:
                assert idx.delete(ids) == len(ids)
                for i in ids:
                    oracle.remove(i)
        elif kind == "reopen":
            idx.close()
            idx = b.open()
        else:
            _, query, mode, k, flt = step
            try:
                allowed = oracle.allowed(flt)
            except InvalidInput:
                with pytest.raises(InvalidInput):
                    idx.search(query, mode=mode, k=k, filter=flt)
                continue
            expected = oracle.dense(query, allowed) if mode == "dense" else (
                oracle.bm25(query, allowed))  # fmt: skip
            hits = idx.search(query, mode=mode, k=k, filter=flt)
            assert_ranking(hits, expected, k, f"{mode} {query!r} {flt}")
        assert len(idx) == len(oracle.docs)
    for i in IDS:
        got = idx.get(i)
        want = oracle.docs.get(i)
        assert (got and (got["title"], got["text"], got["metadata"])) == want, i
    idx.check()
    assert isinstance(idx, Index)


def _property(examples: int) -> Any:
    @settings(max_examples=examples, deadline=None, database=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture,
                                     HealthCheck.too_slow])  # fmt: skip
    @given(steps=st.lists(ops, min_size=1, max_size=12))
    def check(backend: Backend, steps: list[tuple[Any, ...]]) -> None:
        _run(backend, steps)

    return check


test_random_operations_match_the_oracle = _property(12)
test_random_operations_match_the_oracle_many = pytest.mark.slow(_property(300))
