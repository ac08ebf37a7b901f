"""The stored BM25 vocabulary (:mod:`embedstack.index.lexical_vocab`): opening reads a few run
files instead of every segment's terms (issue 18), and nothing about it may change a
ranking: round trips, crashes between the steps of a write, stale or damaged runs, indexes
written before the runs existed, and compaction's pruning all rank like a fresh build.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from embedstack import HashEncoder
from embedstack.errors import IndexCorrupt
from embedstack.index import Index, lexical_vocab
from embedstack.index import lexical_segments as fmt
from embedstack.index.lexical import LexicalIndex
from test_lexical import assert_same_topk, build, snapshot, synthetic_corpus, vocab_runs

TOL = 1e-5


def _texts(n: int, seed: int) -> list[str]:
    """Documents mixing common words with words no other batch has (new terms per batch)."""
    common = synthetic_corpus(n, seed=seed)
    return [f"{t} fresh{seed}x{i % 7} fresh{seed}y{i}" for i, t in enumerate(common)]


def _queries(seeds: range) -> list[str]:
    return ["apple cells", "cancer therapy"] + [f"fresh{s}x3 fresh{s}y1 gene" for s in seeds]


def _manifest(path: Path) -> dict:  # type: ignore[type-arg]
    return json.loads((path / "lexical.json").read_text())


def _same_rankings(index: LexicalIndex, fresh: LexicalIndex, queries: list[str]) -> None:
    keys = fresh.keys()
    np.testing.assert_array_equal(index.keys(), keys)
    for q in queries:
        assert_same_topk(index.search(q, 10), fresh.search(q, 10))
        np.testing.assert_allclose(index.score_docs(q, keys), fresh.score_docs(q, keys),
                                   atol=TOL, rtol=0)  # fmt: skip


def _grown(path: Path, batches: int = 12, size: int = 6) -> tuple[LexicalIndex, list[str]]:
    """An index of ``batches`` adds, each bringing new terms."""
    index = LexicalIndex.create(path)
    texts: list[str] = []
    for b in range(batches):
        part = _texts(size, seed=b)
        index.add(np.arange(len(texts), len(texts) + size), part)
        texts += part
    return index, texts


def _fresh(path: Path, keys: list[int], texts: list[str]) -> LexicalIndex:
    return build(path, np.array(keys, dtype=np.int64), [texts[k] for k in keys])


def test_runs_round_trip_and_open_reads_no_segment_terms(tmp_path: Path) -> None:
    index, texts = _grown(tmp_path / "i")
    vocab = index._analyzer.vocab
    runs = _manifest(index.path)["vocab"]["runs"]
    starts = [r["start"] for r in runs]
    assert starts == [0] + np.cumsum([r["n_terms"] for r in runs])[:-1].tolist()
    assert sum(r["n_terms"] for r in runs) == len(vocab) and len(runs) >= 2
    for meta in _manifest(index.path)["segments"]:  # open must not need the segments' terms
        (index.path / meta["name"] / "terms.npy").write_bytes(b"damaged")
    reopened = LexicalIndex.open(index.path)
    assert reopened._analyzer.vocab.terms == vocab.terms
    assert reopened._analyzer.vocab.ids == vocab.ids
    _same_rankings(reopened, index, _queries(range(12)))
    with pytest.raises(IndexCorrupt):  # check() still reads and compares every term
        reopened.check()


def test_runs_stay_logarithmic_in_the_vocabulary(tmp_path: Path) -> None:
    index = LexicalIndex.create(tmp_path / "i")
    for b in range(60):  # one or two new terms per add: the worst case for run counts
        index.add([b], [f"apple new{b} " + (f"extra{b}" if b % 3 else "")])
        runs = _manifest(index.path)["vocab"]["runs"]
        sizes = [r["n_terms"] for r in runs]
        assert all(a >= 2 * b for a, b in zip(sizes, sizes[1:], strict=False))
        assert len(runs) <= math.log2(sum(sizes)) + 1
        on_disk = {p.name for p in index.path.iterdir() if p.name.startswith("vocab-")}
        assert on_disk == set(vocab_runs(index.path))  # replaced runs are deleted
    reopened = LexicalIndex.open(index.path)
    assert reopened._analyzer.vocab.ids == index._analyzer.vocab.ids
    assert reopened.search("new17", k=3)[1].tolist() == [17]


def _fail(monkeypatch: pytest.MonkeyPatch, module: object, name: str) -> None:
    def boom(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(module, name, boom)


@pytest.mark.parametrize(
    ("module", "name"),
    [(lexical_vocab, "save_npy"), (lexical_vocab, "fsync_dir"), (fmt, "save_json_atomic")],
)
def test_a_write_failing_between_its_steps_leaves_the_previous_state(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, module: object, name: str
) -> None:
    """The run is written before the flip (save_npy, then the folder's fsync), the manifest
    flips last: a failure at any step leaves the files as they were, and the terms the
    failed write gave ids to are stored by the next one."""
    index, texts = _grown(tmp_path / "i", batches=3)
    before = snapshot(index.path)
    _fail(monkeypatch, module, name)
    with pytest.raises(OSError):
        index.add([100], ["zebra quagga apple"])
    monkeypatch.undo()
    assert snapshot(index.path) == before
    LexicalIndex.open(index.path).check()
    index.add([101], ["quagga okapi"])  # zebra and quagga got ids in memory only
    keys = [*range(len(texts)), 101]
    fresh = build(tmp_path / "fresh", np.array(keys), [*texts, "quagga okapi"])
    for idx in (index, LexicalIndex.open(index.path)):
        idx.check()
        _same_rankings(idx, fresh, ["zebra", "quagga okapi", "apple", *_queries(range(3))])


def test_a_crash_after_the_flip_leaves_replaced_runs_that_are_collected(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    index, _ = _grown(tmp_path / "i", batches=4)
    old = set(vocab_runs(index.path))
    monkeypatch.setattr(fmt, "remove", lambda path: None)  # dies before deleting them
    index.add([100], [" ".join(f"novel{i}" for i in range(40))])  # merges the runs
    monkeypatch.undo()
    assert not old & set(vocab_runs(index.path))  # the runs were replaced ...
    assert all((index.path / name).exists() for name in old)  # ... and are still there
    reopened = LexicalIndex.open(index.path)
    reopened.check()
    reopened.collect_garbage()
    on_disk = {p.name for p in index.path.iterdir() if p.name.startswith("vocab-")}
    assert on_disk == set(vocab_runs(index.path))
    assert reopened.search("novel7", k=1)[1].tolist() == [100]


def test_a_reader_retries_when_a_writer_replaces_the_runs_it_was_to_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    index, _ = _grown(tmp_path / "i", batches=4)
    real, raced = lexical_vocab.load, []

    def racing(root: Path, manifest: dict) -> object:  # type: ignore[type-arg]
        if not raced:
            raced.append(True)
            index.add([100], [" ".join(f"novel{i}" for i in range(40))])  # replaces runs
        return real(root, manifest)

    monkeypatch.setattr(lexical_vocab, "load", racing)
    reader = LexicalIndex.open(index.path)
    assert raced and reader.search("novel3", k=1)[1].tolist() == [100]


def _strip_runs(path: Path) -> None:
    """Make ``path`` an index written before the runs: no record, no run files."""
    manifest = _manifest(path)
    for name in vocab_runs(path):
        (path / name).unlink()
    del manifest["vocab"]
    (path / "lexical.json").write_text(json.dumps(manifest))


def test_an_index_written_before_the_runs_opens_and_a_writer_stores_them(tmp_path: Path) -> None:
    index, texts = _grown(tmp_path / "i", batches=4)
    index.delete([1, 7])
    _strip_runs(index.path)
    before = snapshot(index.path)
    old = LexicalIndex.open(index.path)  # read from the segments' terms, writing nothing
    assert snapshot(index.path) == before and "vocab" not in _manifest(index.path)
    live = [k for k in range(len(texts)) if k not in (1, 7)]
    fresh = _fresh(tmp_path / "fresh", live, texts)
    _same_rankings(old, fresh, _queries(range(4)))
    old.save_vocabulary()  # what a writer's open does (Index.open, via recover)
    assert lexical_vocab.current(_manifest(index.path))
    assert snapshot(index.path) != before
    stored = lexical_vocab.load(index.path, _manifest(index.path))
    assert stored is not None and stored.vocab.ids == old._analyzer.vocab.ids
    for idx in (old, LexicalIndex.open(index.path)):
        idx.check()
        _same_rankings(idx, fresh, _queries(range(4)))


def test_a_stale_record_is_ignored_and_replaced(tmp_path: Path) -> None:
    """A library that does not know the runs keeps their record but bumps the generation
    (and may give new terms ids the runs give others): the runs are not trusted."""
    index, texts = _grown(tmp_path / "i", batches=3)
    manifest = _manifest(index.path)
    manifest["generation"] += 1  # a write by such a library
    (index.path / "lexical.json").write_text(json.dumps(manifest))
    for name in vocab_runs(index.path):  # whose runs now lie about every id
        data = np.load(index.path / name).tobytes().decode().split("\n")
        np.save(index.path / name, np.frombuffer("\n".join(data[::-1]).encode(), np.uint8))
    stale = set(vocab_runs(index.path))
    reopened = LexicalIndex.open(index.path)
    reopened.check()
    fresh = _fresh(tmp_path / "fresh", list(range(len(texts))), texts)
    _same_rankings(reopened, fresh, _queries(range(3)))
    reopened.add([100], ["okapi"])  # the next write records current runs
    assert lexical_vocab.current(_manifest(index.path))
    assert not stale & {p.name for p in index.path.iterdir()}
    LexicalIndex.open(index.path).check()


def test_compaction_prunes_unused_terms_and_ranks_alike(tmp_path: Path) -> None:
    index, texts = _grown(tmp_path / "i", batches=4)
    gone = list(range(6, 12))  # batch 1: its fresh1* terms are in no other document
    (dropped,) = index._analyzer.tokens("fresh1y0")
    (kept,) = index._analyzer.tokens("fresh2y3")
    index.delete(gone)
    index.compact()
    (run,) = _manifest(index.path)["vocab"]["runs"]
    terms = np.load(index.path / run["file"]).tobytes().decode().split("\n")
    assert dropped not in terms and kept in terms and "" in terms  # holes
    vocab = index._analyzer.vocab
    assert vocab.terms == terms and vocab.get(dropped) == -1
    index.add([6], [texts[6]])  # a pruned term comes back, with a new id
    assert index._analyzer.vocab.get(dropped) >= len(terms)
    live = [k for k in range(len(texts)) if k not in gone or k == 6]
    fresh = _fresh(tmp_path / "fresh", live, texts)
    for idx in (index, LexicalIndex.open(index.path)):
        idx.check()
        _same_rankings(idx, fresh, ["fresh1y0", "fresh1x0 fresh1x1", *_queries(range(4))])
    assert LexicalIndex.open(index.path)._analyzer.vocab.ids == index._analyzer.vocab.ids


def _swap_two_terms(path: Path) -> None:
    name = vocab_runs(path)[0]
    terms = np.load(path / name).tobytes().decode().split("\n")
    terms[0], terms[1] = terms[1], terms[0]
    np.save(path / name, np.frombuffer("\n".join(terms).encode(), np.uint8))


def _duplicate_term(path: Path) -> None:
    name = vocab_runs(path)[0]
    terms = np.load(path / name).tobytes().decode().split("\n")
    terms[1] = terms[0]
    np.save(path / name, np.frombuffer("\n".join(terms).encode(), np.uint8))


def _drop_last_term(path: Path) -> None:
    name = vocab_runs(path)[-1]
    terms = np.load(path / name).tobytes().decode().split("\n")
    np.save(path / name, np.frombuffer("\n".join(terms[:-1] + [""]).encode(), np.uint8))


def _missing_run(path: Path) -> None:
    (path / vocab_runs(path)[0]).unlink()


def _gap_between_runs(path: Path) -> None:
    manifest = _manifest(path)
    manifest["vocab"]["runs"][-1]["start"] += 1
    (path / "lexical.json").write_text(json.dumps(manifest))


def _id_beyond_the_runs(path: Path) -> None:
    manifest = _manifest(path)
    last = manifest["vocab"]["runs"].pop()
    (path / last["file"]).unlink()
    (path / "lexical.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize(
    ("corrupt", "at_open"),
    [
        (_swap_two_terms, False),  # well-formed: only check() compares terms
        (_duplicate_term, True),
        (_drop_last_term, True),  # a segment's id now names a hole
        (_missing_run, True),
        (_gap_between_runs, True),
        (_id_beyond_the_runs, True),
    ],
)
def test_damaged_runs_are_refused(tmp_path: Path, corrupt, at_open: bool) -> None:  # type: ignore[no-untyped-def]
    index, _ = _grown(tmp_path / "i", batches=4)
    assert len(vocab_runs(index.path)) >= 2
    corrupt(index.path)
    with pytest.raises(IndexCorrupt):
        index.check()
    if at_open:
        with pytest.raises(IndexCorrupt):
            LexicalIndex.open(index.path)
    else:
        LexicalIndex.open(index.path)


def test_index_open_as_writer_stores_the_runs_of_an_old_index(tmp_path: Path) -> None:
    enc = HashEncoder(64)
    docs = [{"id": f"d{i}", "text": t} for i, t in enumerate(_texts(30, seed=3))]
    with Index.create(tmp_path / "idx", encoder=enc) as idx:
        idx.add(docs[:15])
        idx.add(docs[15:])
        expected = [[h.doc_id for h in idx.search(q, mode="bm25", k=5)] for q in _queries(range(4))]
    lexical = tmp_path / "idx" / "lexical"
    _strip_runs(lexical)
    before = snapshot(lexical)
    for readonly in (True, False):
        with Index.open(tmp_path / "idx", encoder=enc, readonly=readonly) as idx:
            got = [[h.doc_id for h in idx.search(q, mode="bm25", k=5)] for q in _queries(range(4))]
            assert got == expected
        assert (snapshot(lexical) == before) is readonly  # the writer migrated it
    assert lexical_vocab.current(_manifest(lexical))
    with Index.open(tmp_path / "idx", encoder=enc, readonly=True) as idx:
        idx.check()
        got = [[h.doc_id for h in idx.search(q, mode="bm25", k=5)] for q in _queries(range(4))]
        assert got == expected
