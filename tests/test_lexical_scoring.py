"""The BM25 scorer's fast paths against a plain Python oracle, bit for bit.

A query's top ``k`` is taken only among the documents scoring at least a floor (the best
``k``-th impact of one query term, among its first postings), and scores are summed term by
term into a dense array; both must give exactly what scoring every live document one by one
gives: the same float64 sums (each term's ``idf * tf / (tf + norm)``, times its repeats,
added in term-id order from 0.0, as numpy rounds each operation) and the same ranking
(float32 score, then key, with the tie at the cut when asked). Hypothesis draws small
corpora over a few words, so ties, repeated query terms, several segments, tombstones,
unknown words and both the sorted (few postings) and the dense accumulation occur.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from embedstack.errors import InvalidInput
from embedstack.index import lexical_scoring
from embedstack.index.fields.base import tie_cut
from embedstack.index.lexical import LexicalIndex
from embedstack.settings import bm25_cache_bytes

# each word is its own stem and no stopword; repeats make some words common, others rare
_WORDS = ["cat"] * 8 + ["dog"] * 4 + ["fish"] * 2 + ["bird", "frog", "lamb", "wolf", "bear"]
_QUERY_WORDS = sorted(set(_WORDS)) + ["zebra"]  # zebra is in no document


@st.composite
def cases(draw: st.DrawFn) -> dict:
    n = draw(st.integers(1, 40))
    docs = draw(st.lists(st.lists(st.sampled_from(_WORDS), max_size=7), min_size=n, max_size=n))
    keys = draw(st.permutations(range(100, 100 + 3 * n, 3)))  # key order is not slot order
    n_batches = draw(st.integers(1, min(4, n)))
    deleted = draw(st.sets(st.sampled_from(keys), max_size=n))
    queries = draw(
        st.lists(st.lists(st.sampled_from(_QUERY_WORDS), min_size=1, max_size=6), max_size=6)
    )
    return {
        "docs": docs,
        "keys": list(keys),
        "batches": n_batches,
        "deleted": sorted(deleted),
        "queries": [" ".join(q) for q in queries],
        "k": draw(st.integers(1, 8)),
        "ties": draw(st.booleans()),
        "floor_sample": draw(st.sampled_from([1, 3, 1 << 13])),  # postings a floor looks at
        "cache": draw(st.sampled_from([0, 6, 1 << 24])),  # postings the term cache keeps
    }


def oracle_scores(index: LexicalIndex, live: dict[int, list[str]], query: str) -> dict[int, float]:
    """Each live document's float64 score, from its words alone, one document at a time;
    the per-document length normalisation is the index's (its statistics are not what is
    tested here)."""
    view = index._scorer().view
    vocab = index._analyzer.vocab.ids
    counts = Counter(w for w in query.split() if w in vocab)
    df = {w: sum(w in words for words in live.values()) for w in counts}
    out = {}
    for key, words in live.items():
        tf = Counter(words)
        slot = int(view.lookup(np.array([key]))[0][0])
        norm = view.norm[slot]
        score = np.float64(0.0)
        for w in sorted(counts, key=vocab.__getitem__):  # term-id order
            if tf[w] and df[w]:
                idf = np.log1p((len(live) - df[w] + 0.5) / (df[w] + 0.5))
                impact = np.float64(tf[w]) * idf / (norm + np.float64(tf[w]))
                score = score + (impact * counts[w] if counts[w] > 1 else impact)
        if score > 0:
            out[key] = float(score)
    return out


def oracle_top(scores: dict[int, float], k: int, ties: bool) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best by float32 score then key (with ``ties``, the tie at the cut too)."""
    keys = np.array(sorted(scores), dtype=np.int64)
    s32 = np.array([scores[key] for key in keys.tolist()], dtype=np.float64).astype(np.float32)
    order = np.lexsort((keys, -s32))
    order = order[: tie_cut(s32[order], k) if ties else k]
    return s32[order], keys[order]


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=cases())
def test_scorer_equals_scoring_every_document(case: dict) -> None:
    sample = mock.patch.object(lexical_scoring, "_FLOOR_SAMPLE", case["floor_sample"])
    cache = mock.patch.object(lexical_scoring, "_max_cached_postings", lambda: case["cache"])
    with tempfile.TemporaryDirectory() as tmp, sample, cache:
        index = LexicalIndex.create(Path(tmp) / "bm25")
        texts = [" ".join(words) for words in case["docs"]]
        parts = np.array_split(np.arange(len(texts)), case["batches"])
        for part in parts:
            index.add([case["keys"][i] for i in part], [texts[i] for i in part])
        if case["deleted"]:
            index.delete(case["deleted"])
        gone = set(case["deleted"])
        live = {key: words for key, words in zip(case["keys"], case["docs"], strict=True)
                if key not in gone}  # fmt: skip
        scorer = index._scorer()
        analysed = index._analyzer.analyze_queries(case["queries"])
        expected = [oracle_scores(index, live, query) for query in case["queries"]]
        for _ in range(2):  # the second time from the term cache (or after its evictions)
            got = index.search_many(case["queries"], case["k"], ties=case["ties"])
            for want, term_ids, (scores, keys) in zip(expected, analysed, got, strict=True):
                slots, sums = scorer.accumulate(term_ids)  # every matching document
                found = dict(zip(scorer.view.keys[slots].tolist(), sums.tolist(), strict=True))
                assert found == want  # float64, bit for bit
                want_scores, want_keys = oracle_top(want, case["k"], case["ties"])
                assert keys.tolist() == want_keys.tolist()
                assert scores.dtype == np.float32 and scores.tobytes() == want_scores.tobytes()


def test_the_impact_cache_is_a_memory_budget_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    index = LexicalIndex.create(tmp_path / "bm25")
    index.add([1, 2, 3], ["cat dog", "cat fish", "dog bird"])
    monkeypatch.setenv("EMBEDSTACK_BM25_CACHE_MB", "1")
    assert bm25_cache_bytes() == 1 << 20
    scorer = lexical_scoring.Scorer(index._segments, 1.2, 0.75)
    assert scorer._max_cached == (1 << 20) // 16  # an int64 slot and a float64 impact each
    monkeypatch.setenv("EMBEDSTACK_BM25_CACHE_MB", "0")  # 0: keeps only the term in use
    scorer = lexical_scoring.Scorer(index._segments, 1.2, 0.75)
    first = scorer.search(index._analyzer.analyze_queries(["cat dog"])[0], 2, None)
    assert len(scorer._postings) == 1 and scorer._cached <= 2
    again = scorer.search(index._analyzer.analyze_queries(["cat dog"])[0], 2, None)
    assert [a.tolist() for a in first] == [a.tolist() for a in again]
    monkeypatch.delenv("EMBEDSTACK_BM25_CACHE_MB")
    assert 256 << 20 <= bm25_cache_bytes() <= 2048 << 20  # 1/16 of memory, within bounds
    for bad in ("lots", "-5", "inf", "nan"):
        monkeypatch.setenv("EMBEDSTACK_BM25_CACHE_MB", bad)
        with pytest.raises(InvalidInput, match=f"EMBEDSTACK_BM25_CACHE_MB must be a number of "
                           f"megabytes >= 0, got '{bad}'"):  # fmt: skip
            bm25_cache_bytes()


def test_searches_in_parallel_threads_score_as_one_at_a_time(tmp_path: Path) -> None:
    # every query takes the dense accumulation (its postings cover over 1/8 of the slots),
    # whose buffer is kept between queries: each thread must have its own
    rng = np.random.default_rng(0)
    words = ["cat", "dog", "fish", "bird", "frog", "lamb", "wolf", "bear"]
    texts = [" ".join(rng.choice(words, size=6)) for _ in range(20_000)]
    index = LexicalIndex.create(tmp_path / "bm25")
    index.add(list(range(len(texts))), texts)
    queries = [" ".join(rng.choice(words, size=3)) for _ in range(64)]
    expected = index.search_many(queries, 50)
    with ThreadPoolExecutor(8) as pool:
        for _ in range(3):
            got = list(pool.map(lambda q: index.search_many([q], 50)[0], queries))
            for (want_s, want_k), (s, k) in zip(expected, got, strict=True):
                assert k.tolist() == want_k.tolist() and s.tolist() == want_s.tolist()
