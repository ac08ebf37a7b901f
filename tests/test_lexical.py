"""LexicalIndex: bm25s oracle, exactness under updates, compaction, atomicity, integrity."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path

import bm25s
import numpy as np
import pytest
import Stemmer
from hypothesis import given, settings
from hypothesis import strategies as st

from embedstack.errors import IndexCorrupt, InvalidInput
from embedstack.index import lexical_segments
from embedstack.index.lexical import LexicalIndex
from embedstack.index.tokenize import STOPWORDS_EN, TOKEN_PATTERN, Analyzer, Vocabulary

DATASETS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
TOL = 1e-5

# --- synthetic data and the bm25s oracle -----------------------------------------------------

_WORDS = (
    "cat cats dog dogs running runs ran runner protein proteins cell cells cellular gene genes "
    "genetic cancer tumour tumours therapy therapies patient patients study studies studied "
    "mouse mice rna dna p53 il6 covid19 café naïve straße über_alles x y 7 42 2020 alpha beta "
    "gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho sigma tau"
).split()
_FILLER = sorted(STOPWORDS_EN) + ["A", "The", "IS", "--", "...", "(", ")", "'s", "3.5", "e.g."]


def synthetic_corpus(n_docs: int, seed: int = 0) -> list[str]:
    """Zipf-ish documents with inflections, case, punctuation, stopwords and empty docs."""
    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, len(_WORDS) + 1)
    p /= p.sum()
    docs = []
    for i in range(n_docs):
        if i % 37 == 5:
            docs.append("")
            continue
        if i % 41 == 7:
            docs.append("the and of it is")
            continue
        n = int(rng.integers(1, 60))
        words = np.where(
            rng.random(n) < 0.3,
            np.array(_FILLER)[rng.integers(len(_FILLER), size=n)],
            np.array(_WORDS)[rng.choice(len(_WORDS), size=n, p=p)],
        )
        upper = rng.random(n) < 0.1
        docs.append(" ".join(w.upper() if u else w for w, u in zip(words, upper, strict=True)))
    return docs


def synthetic_queries(n: int, seed: int = 1) -> list[str]:
    rng = np.random.default_rng(seed)
    queries = ["cat cat dog", "Running cells!", "unseenword cancer", "the of and", "", "p53 p53"]
    for _ in range(n - len(queries)):
        queries.append(" ".join(str(w) for w in rng.choice(_WORDS, size=rng.integers(1, 6))))
    return queries


class Bm25sOracle:
    """bm25s with method="lucene", k1=1.2, b=0.75 and the same analysis."""

    def __init__(self, texts: list[str]) -> None:
        self.stemmer = Stemmer.Stemmer("english")
        tokens = bm25s.tokenize(
            texts,
            stopwords="en",
            stemmer=self.stemmer,
            show_progress=False,
            token_pattern=TOKEN_PATTERN,
        )
        self.model = bm25s.BM25(method="lucene", k1=1.2, b=0.75)
        self.model.index(tokens, show_progress=False)

    def scores(self, query: str) -> np.ndarray:
        tokens = bm25s.tokenize(
            [query],
            stopwords="en",
            stemmer=self.stemmer,
            show_progress=False,
            token_pattern=TOKEN_PATTERN,
            return_ids=False,
        )[0]
        if not tokens:  # bm25s cannot score an empty query
            return np.zeros(self.model.scores["num_docs"])
        return np.asarray(self.model.get_scores(tokens), dtype=np.float64)


def build(path: Path, keys: np.ndarray, texts: list[str], batches: int = 1) -> LexicalIndex:
    index = LexicalIndex.create(path)
    for part_keys, part in zip(
        np.array_split(keys, batches), np.array_split(np.arange(len(texts)), batches), strict=True
    ):
        index.add(part_keys, [texts[i] for i in part])
    return index


def corrupted(
    path: Path, n_docs: int, corrupt: Callable[[Path], None], delete: Sequence[int] = ()
) -> LexicalIndex:
    """An index of ``n_docs`` synthetic documents in two batches, less ``delete``, that
    passes ``check()``; then damaged on disk by ``corrupt`` (the object is left open)."""
    index = build(path, np.arange(n_docs), synthetic_corpus(n_docs), batches=2)
    if delete:
        index.delete(list(delete))
    index.check()
    corrupt(index.path)
    return index


def assert_same_topk(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]) -> None:
    """Same scores (±TOL) and the same documents, up to the order of (near-)ties."""
    (sa, ka), (sb, kb) = a, b
    np.testing.assert_allclose(sa, sb, atol=TOL, rtol=0)
    assert np.all(np.diff(sa) <= 0) and np.all(np.diff(sb) <= 0)
    if len(sa):
        above = sa > sa[-1] + TOL  # outside the tie group at the cut, membership must agree
        assert set(ka[above].tolist()) == set(kb[sb > sb[-1] + TOL].tolist())


def vocab_runs(path: Path) -> list[str]:
    """The vocabulary run files ``lexical.json`` names (:mod:`embedstack.index.lexical_vocab`)."""
    manifest = json.loads((path / "lexical.json").read_text())
    return [run["file"] for run in manifest["vocab"]["runs"]]


def snapshot(path: Path) -> dict[str, str]:
    return {
        str(f.relative_to(path)): hashlib.sha256(f.read_bytes()).hexdigest()
        for f in sorted(path.rglob("*"))
        if f.is_file()
    }


# --- analysis --------------------------------------------------------------------------------


def test_stopwords_are_bm25s_english() -> None:
    assert set(bm25s.stopwords.STOPWORDS_EN) == STOPWORDS_EN


def _bm25s_tokens(texts: list[str]) -> list[list[str]]:
    stemmer = Stemmer.Stemmer("english")
    return bm25s.tokenize(
        texts,
        stopwords="en",
        stemmer=stemmer,
        show_progress=False,
        return_ids=False,
        token_pattern=TOKEN_PATTERN,
    )


def test_analysis_matches_bm25s_on_corpus() -> None:
    texts = synthetic_corpus(300) + ["Ünïcödé WÖRDS — and_underscores 12 ab a", "ΣΊΣΥΦΟΣ Σ"]
    analyzer = Analyzer(Vocabulary())
    ids, lengths = analyzer.analyze(texts, grow=True)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    expected = _bm25s_tokens(texts)
    for i, tokens in enumerate(expected):
        assert [analyzer.vocab.terms[t] for t in ids[offsets[i] : offsets[i + 1]]] == tokens
        assert analyzer.tokens(texts[i]) == tokens


@settings(max_examples=150, deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=80))
def test_analysis_matches_bm25s_on_any_text(text: str) -> None:
    analyzer = Analyzer(Vocabulary())
    ids, _ = analyzer.analyze([text, text], grow=True)
    expected = _bm25s_tokens([text])[0]
    assert [analyzer.vocab.terms[t] for t in ids] == expected * 2
    query_ids = analyzer.analyze_queries([text])[0]
    assert [analyzer.vocab.terms[t] for t in query_ids] == expected


# --- scores ----------------------------------------------------------------------------------


def test_score_is_the_lucene_formula(tmp_path: Path) -> None:
    index = build(tmp_path / "i", np.array([1, 2]), ["cat cat dog", "dog"])
    scores, keys = index.search("cat", k=10)
    tf, dl, avgdl, k1, b = 2, 3, (3 + 1) / 2, 1.2, 0.75
    expected = math.log(1 + (2 - 1 + 0.5) / (1 + 0.5)) * tf / (tf + k1 * (1 - b + b * dl / avgdl))
    assert keys.tolist() == [1]
    assert scores.dtype == np.float32 and scores[0] == pytest.approx(expected, abs=TOL)


def test_scores_and_rankings_match_bm25s(tmp_path: Path) -> None:
    texts = synthetic_corpus(400)
    keys = np.arange(len(texts), dtype=np.int64) * 3 + 7  # keys are not positions
    index = build(tmp_path / "i", keys, texts)
    oracle = Bm25sOracle(texts)
    for query in synthetic_queries(40):
        expected = oracle.scores(query)
        np.testing.assert_allclose(index.score_docs(query, keys), expected, atol=TOL, rtol=0)
        top = np.argsort(-expected, kind="stable")[:10]
        top = top[expected[top] > 0]
        assert_same_topk(index.search(query, k=10), (expected[top], keys[top]))


def test_search_many_equals_search(tmp_path: Path) -> None:
    texts = synthetic_corpus(120)
    index = build(tmp_path / "i", np.arange(len(texts)), texts, batches=3)
    queries = synthetic_queries(15)
    for query, (scores, keys) in zip(queries, index.search_many(queries, k=7), strict=True):
        s, k = index.search(query, k=7)
        np.testing.assert_array_equal(scores, s)
        np.testing.assert_array_equal(keys, k)


def test_ties_are_broken_by_key_ascending(tmp_path: Path) -> None:
    index = build(tmp_path / "i", np.array([9, 3, 5, 1]), ["red fox", "red fox", "blue", "red fox"])
    scores, keys = index.search("fox", k=2)
    assert keys.tolist() == [1, 3] and scores[0] == scores[1]


def test_allowed_restricts_and_still_fills_k(tmp_path: Path) -> None:
    texts = synthetic_corpus(300)
    keys = np.arange(len(texts), dtype=np.int64)
    index = build(tmp_path / "i", keys, texts, batches=2)
    allowed = keys[keys % 5 == 0]
    for query in synthetic_queries(20):
        scores, got = index.search(query, k=10, allowed=np.append(allowed, [10**9]))
        assert np.isin(got, allowed).all()
        full = index.score_docs(query, allowed)
        n_pos = int((full > 0).sum())
        assert len(got) == min(10, n_pos)
        order = np.lexsort((allowed, -full))[: len(got)]
        assert_same_topk((scores, got), (full[order], allowed[order]))


# --- updates ---------------------------------------------------------------------------------


@pytest.mark.parametrize("compact", [False, True])
def test_updates_equal_a_one_shot_build(tmp_path: Path, compact: bool) -> None:
    texts = synthetic_corpus(500, seed=3)
    keys = np.arange(len(texts), dtype=np.int64)
    rng = np.random.default_rng(0)
    gone = np.sort(rng.choice(keys, size=len(keys) // 10, replace=False))
    queries = synthetic_queries(30)

    index = build(tmp_path / "updated", keys, texts, batches=5)
    index.delete(gone)
    # deleted documents count for nothing: same as never indexing them
    kept = np.setdiff1d(keys, gone)
    partial = build(tmp_path / "partial", kept, [texts[i] for i in kept])
    for query in queries:
        assert_same_topk(index.search(query, 10), partial.search(query, 10))

    new_keys = gone + 10_000  # re-added under new keys
    index.add(new_keys, [texts[i] for i in gone])
    if compact:
        index.compact()
        assert index.stats().n_segments == 1
    final_keys = keys.copy()
    final_keys[gone] = new_keys
    one_shot = build(tmp_path / "one-shot", final_keys, texts)
    for i, reopened in enumerate([index, LexicalIndex.open(index.path)]):
        for query in queries:
            np.testing.assert_allclose(
                reopened.score_docs(query, final_keys),
                one_shot.score_docs(query, final_keys),
                atol=TOL,
                rtol=0,
            )
            assert_same_topk(reopened.search(query, 10), one_shot.search(query, 10))
        assert i == 1 or len(reopened) == len(texts)


def test_deleted_keys_can_be_reused(tmp_path: Path) -> None:
    index = build(tmp_path / "i", np.array([1, 2]), ["apple pie", "banana split"])
    index.delete([1])
    index.add([1], ["cherry tart"])
    assert index.search("apple", k=5)[1].tolist() == []
    assert index.search("cherry", k=5)[1].tolist() == [1]
    index.compact()
    assert LexicalIndex.open(index.path).search("cherry", k=5)[1].tolist() == [1]


def test_delete_rejects_unknown_keys_and_changes_nothing(tmp_path: Path) -> None:
    index = build(tmp_path / "i", np.array([1, 2, 3]), ["a bb", "bb cc", "cc dd"])
    index.delete([2])
    before = snapshot(index.path)
    for bad in ([1, 99], [2], [3, 2]):
        with pytest.raises(InvalidInput):
            index.delete(bad)
    assert snapshot(index.path) == before
    assert index.stats().n_docs == 2 and index.stats().n_tombstones == 1
    index.delete([3, 3])  # repeats within one request are fine
    assert len(index) == 1


def test_compaction_reclaims_deleted_bytes(tmp_path: Path) -> None:
    texts = synthetic_corpus(3000, seed=5)
    keys = np.arange(len(texts), dtype=np.int64)
    index = build(tmp_path / "i", keys, texts, batches=4)
    gone = keys[np.random.default_rng(1).permutation(len(keys))[: len(keys) // 2]]
    before = index.stats().bytes_on_disk
    index.delete(gone)
    with_tombstones = index.stats().bytes_on_disk
    index.compact()
    after = index.stats()
    kept = np.setdiff1d(keys, gone)
    fresh = build(tmp_path / "fresh", kept, [texts[i] for i in kept]).stats().bytes_on_disk
    deleted_bytes = before - fresh
    assert with_tombstones - after.bytes_on_disk >= 0.9 * deleted_bytes
    assert (after.n_docs, after.n_segments, after.n_tombstones) == (len(kept), 1, 0)
    names = sorted(p.name for p in index.path.iterdir())
    assert names == ["lexical.json", "seg-000005", *vocab_runs(index.path)]
    assert len(vocab_runs(index.path)) == 1  # compaction writes the vocabulary as one run
    index.check()


def test_compact_everything_deleted_then_reuse(tmp_path: Path) -> None:
    index = build(tmp_path / "i", np.array([1, 2]), ["one two", "two three"])
    index.delete([1, 2])
    index.compact()
    assert index.stats().n_segments == 0 and index.search("two", k=3)[1].size == 0
    index.add([5], ["two"])
    assert LexicalIndex.open(index.path).search("two", k=3)[1].tolist() == [5]
    LexicalIndex.create(tmp_path / "empty").compact()  # no segments: a no-op


# --- atomicity and durability ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("keys", "texts"),
    [
        ([10, 10], ["dup key", "dup key"]),
        ([1], ["already live"]),
        ([20, 21], ["fine", None]),
        ([20, 21], ["fine", b"bytes"]),
        ([20], ["one", "two"]),
        ([1.5], ["float key"]),
        ([[1, 2]], ["2-d keys"]),
    ],
)
def test_failed_add_changes_nothing(tmp_path: Path, keys: list, texts: list) -> None:
    index = build(tmp_path / "i", np.array([1, 2, 3]), ["red apple", "green apple", "red car"])
    before, results = snapshot(index.path), index.search("red apple", k=5)
    with pytest.raises(InvalidInput):
        index.add(keys, texts)
    assert snapshot(index.path) == before
    for idx in (index, LexicalIndex.open(index.path)):
        np.testing.assert_array_equal(idx.search("red apple", k=5)[1], results[1])
        assert len(idx) == 3


@pytest.mark.parametrize("fail_at", ["save_npy", "save_json_atomic"])
def test_crash_during_write_leaves_previous_state(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fail_at: str
) -> None:
    index = build(tmp_path / "i", np.array([1, 2]), ["red apple", "green apple"], batches=2)
    before, results = snapshot(index.path), index.search("apple", k=5)

    def boom(*args: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(lexical_segments, fail_at, boom)
    writes = (lambda: index.add([3], ["apple apple"]), lambda: index.delete([1]), index.compact)
    for write in writes:
        with pytest.raises(OSError):
            write()
        assert snapshot(index.path) == before
    monkeypatch.undo()
    assert snapshot(index.path) == before
    for idx in (index, LexicalIndex.open(index.path)):
        np.testing.assert_array_equal(idx.search("apple", k=5)[1], results[1])
        idx.check()
    index.add([3], ["apple apple"])  # and the index still works
    assert index.search("apple", k=1)[1].tolist() == [3]


def test_leftovers_of_a_crash_are_ignored_then_collected(tmp_path: Path) -> None:
    index = build(tmp_path / "i", np.array([1, 2]), ["red apple", "green apple"], batches=2)
    (index.path / "seg-000003").mkdir()  # renamed in place, manifest never flipped
    (index.path / "seg-000003" / "keys.npy").write_bytes(b"partial")
    (index.path / ".tmp-seg-000004").mkdir()
    (index.path / "seg-000001.del-000009.npy").write_bytes(b"partial")
    reopened = LexicalIndex.open(index.path)
    reopened.check()
    assert reopened.search("apple", k=5)[1].tolist() == [1, 2]
    reopened.add([3], ["apple"])  # takes the name seg-000003 over
    reopened.compact()
    names = sorted(p.name for p in index.path.iterdir())
    assert names == ["lexical.json", "seg-000004", *vocab_runs(index.path)]
    assert LexicalIndex.open(index.path).search("apple", k=5)[1].tolist() == [3, 1, 2]


def test_reopen_gives_the_same_results(tmp_path: Path) -> None:
    texts = synthetic_corpus(200)
    index = build(tmp_path / "i", np.arange(200), texts, batches=3)
    index.delete(np.arange(0, 200, 7))
    reopened = LexicalIndex.open(index.path)
    assert reopened.stats() == index.stats()
    for query in synthetic_queries(10):
        a, b = index.search(query, k=10), reopened.search(query, k=10)
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
    assert (reopened.k1, reopened.b) == (1.2, 0.75)


# --- edge cases and bad input ----------------------------------------------------------------


def test_empty_index_and_empty_queries(tmp_path: Path) -> None:
    index = LexicalIndex.create(tmp_path / "i", k1=0.9, b=0.4)
    assert index.search("anything", k=3)[1].size == 0
    index.add([1, 2], ["", "the cat"])
    for query in ("", "   ", "the of and", "zzz"):
        scores, keys = index.search(query, k=3)
        assert scores.dtype == np.float32 and keys.dtype == np.int64 and keys.size == 0
    assert index.search("cats", k=100)[1].tolist() == [2]  # k larger than the corpus
    assert index.score_docs("cat", [1, 2])[0] == 0.0
    assert index.stats().n_docs == 2
    assert LexicalIndex.open(index.path).k1 == 0.9


@pytest.mark.parametrize("k", [0, -1, True, 2.5, "3"])
def test_bad_k_is_rejected(tmp_path: Path, k: object) -> None:
    index = build(tmp_path / "i", np.array([1]), ["x y"])
    with pytest.raises(InvalidInput):
        index.search("x", k=k)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput):
        index.search_many(["x"], k=k)  # type: ignore[arg-type]


def test_bad_input_is_rejected(tmp_path: Path) -> None:
    index = build(tmp_path / "i", np.array([1]), ["xx yy"])
    with pytest.raises(InvalidInput):
        index.search(None, k=1)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput):
        index.score_docs("xx", [1, 2])
    with pytest.raises(InvalidInput):
        index.search("xx", k=1, allowed=np.array([0.5]))
    with pytest.raises(InvalidInput):
        LexicalIndex.create(index.path)
    with pytest.raises(InvalidInput):
        LexicalIndex.create(tmp_path / "j", k1=-1)
    with pytest.raises(InvalidInput):
        LexicalIndex.create(tmp_path / "j", b=1.5)
    with pytest.raises(InvalidInput):
        LexicalIndex.create(tmp_path / "j", k1="1.2")  # type: ignore[arg-type]
    with pytest.raises(InvalidInput):
        LexicalIndex.open(tmp_path / "missing")


# --- integrity -------------------------------------------------------------------------------


def _corrupt_missing_file(path: Path) -> None:
    (path / "seg-000001" / "docs.npy").unlink()


def _corrupt_manifest(path: Path) -> None:
    (path / "lexical.json").write_text("{not json")


def _corrupt_format(path: Path) -> None:
    manifest = json.loads((path / "lexical.json").read_text())
    (path / "lexical.json").write_text(json.dumps({**manifest, "format_version": 99}))


def _corrupt_tfs(path: Path) -> None:
    tfs = np.load(path / "seg-000001" / "tfs.npy")
    np.save(path / "seg-000001" / "tfs.npy", tfs + 1)


def _corrupt_docs(path: Path) -> None:
    docs = np.load(path / "seg-000001" / "docs.npy")
    np.save(path / "seg-000001" / "docs.npy", docs[::-1].copy())


def _corrupt_sizes(path: Path) -> None:
    keys = np.load(path / "seg-000001" / "keys.npy")
    np.save(path / "seg-000001" / "keys.npy", keys[:-1].copy())


def _corrupt_dtype(path: Path) -> None:
    keys = np.load(path / "seg-000001" / "keys.npy")
    np.save(path / "seg-000001" / "keys.npy", keys.astype(np.float64))


def _corrupt_tombstone(path: Path) -> None:
    next(path.glob("seg-000001.del-*.npy")).unlink()


@pytest.mark.parametrize(
    "corrupt",
    [
        _corrupt_missing_file,
        _corrupt_manifest,
        _corrupt_format,
        _corrupt_tfs,
        _corrupt_docs,
        _corrupt_sizes,
        _corrupt_dtype,
        _corrupt_tombstone,
    ],
)
def test_check_detects_corruption(tmp_path: Path, corrupt) -> None:  # type: ignore[no-untyped-def]
    index = corrupted(tmp_path / "i", 50, corrupt, delete=[3])
    with pytest.raises(IndexCorrupt):
        index.check()
    with pytest.raises(IndexCorrupt):  # a fresh open finds it too, from the files alone
        LexicalIndex.open(index.path).check()


# --- quality and equivalence on SciFact (slow) -----------------------------------------------


def _scifact() -> tuple[list[str], list[str], list[tuple[str, str]], dict[str, dict[str, int]]]:
    root = DATASETS / "scifact"
    if not (root / "corpus.jsonl").exists():
        pytest.skip(f"SciFact not found under {DATASETS}")
    with open(root / "corpus.jsonl", encoding="utf-8") as f:
        docs = [json.loads(line) for line in f]
    with open(root / "queries.jsonl", encoding="utf-8") as f:
        queries = [(q["_id"], q["text"]) for q in map(json.loads, f)]
    qrels: dict[str, dict[str, int]] = {}
    with open(root / "qrels" / "test.tsv", encoding="utf-8") as f:
        next(f)
        for line in f:
            qid, did, score = line.rstrip("\n").split("\t")
            qrels.setdefault(qid, {})[did] = int(score)
    ids = [d["_id"] for d in docs]
    return ids, [f"{d['title']} {d['text']}" for d in docs], queries, qrels


def _ndcg_at_10(qrels: dict[str, dict[str, int]], run: dict[str, dict[str, float]]) -> float:
    pytrec_eval = pytest.importorskip("pytrec_eval")
    per_query = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10"}).evaluate(run)
    return float(np.mean([m["ndcg_cut_10"] for m in per_query.values()]))


@pytest.mark.slow
def test_scifact_ndcg_at_10(tmp_path: Path) -> None:
    """At Lucene's defaults (k1=1.2, b=0.75) nDCG@10 equals bm25s's with the same analysis and
    reaches the issue's bar (0.680; Lucene reference 0.686). BEIR drops hits whose id is the
    query's."""
    k1 = 1.2
    doc_ids, texts, queries, qrels = _scifact()
    test_queries = [(qid, text) for qid, text in queries if qid in qrels]
    query_texts = [text for _, text in test_queries]

    index = LexicalIndex.create(tmp_path / "i", k1=k1, b=0.75)
    index.add(np.arange(len(texts)), texts)
    ours = {
        qid: {doc_ids[k]: float(s) for s, k in zip(*res, strict=True) if doc_ids[k] != qid}
        for (qid, _), res in zip(test_queries, index.search_many(query_texts, k=11), strict=True)
    }
    stemmer = Stemmer.Stemmer("english")
    model = bm25s.BM25(method="lucene", k1=k1, b=0.75)
    model.index(
        bm25s.tokenize(
            texts, stopwords="en", stemmer=stemmer, show_progress=False, token_pattern=TOKEN_PATTERN
        ),
        show_progress=False,
    )
    query_tokens = bm25s.tokenize(
        query_texts,
        stopwords="en",
        stemmer=stemmer,
        show_progress=False,
        return_ids=False,
        token_pattern=TOKEN_PATTERN,
    )
    docs, scores = model.retrieve(query_tokens, k=11, show_progress=False, n_threads=1)
    theirs = {
        qid: {doc_ids[d]: float(s) for d, s in zip(docs[i], scores[i], strict=True)}
        for i, (qid, _) in enumerate(test_queries)
    }
    theirs = {q: {d: s for d, s in hits.items() if d != q} for q, hits in theirs.items()}
    ndcg, ndcg_bm25s = _ndcg_at_10(qrels, ours), _ndcg_at_10(qrels, theirs)
    print(f"SciFact nDCG@10 k1={k1}: ours {ndcg:.4f}, bm25s {ndcg_bm25s:.4f}")
    assert ndcg == pytest.approx(ndcg_bm25s, abs=1e-3)
    assert ndcg >= 0.680


@pytest.mark.slow
@pytest.mark.parametrize("compact", [False, True])
def test_scifact_updates_equal_a_one_shot_build(tmp_path: Path, compact: bool) -> None:
    _, texts, queries, _ = _scifact()
    keys = np.arange(len(texts), dtype=np.int64)
    gone = np.sort(np.random.default_rng(0).choice(keys, size=len(keys) // 10, replace=False))
    index = build(tmp_path / "updated", keys, texts, batches=5)
    index.delete(gone)
    index.add(gone + 100_000, [texts[i] for i in gone])
    if compact:
        index.compact()
    final_keys = keys.copy()
    final_keys[gone] += 100_000
    one_shot = build(tmp_path / "one-shot", final_keys, texts)
    query_texts = [text for _, text in queries]
    for got, want in zip(
        index.search_many(query_texts, 10), one_shot.search_many(query_texts, 10), strict=True
    ):
        assert_same_topk(got, want)
    for query in query_texts[:100]:
        np.testing.assert_allclose(
            index.score_docs(query, final_keys),
            one_shot.score_docs(query, final_keys),
            atol=TOL,
            rtol=0,
        )
