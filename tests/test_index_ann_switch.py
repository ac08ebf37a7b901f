"""Switching an existing local index between exact dense search and an HNSW graph
(``Index.set_ann``, ``embedstack index ann``): nothing re-encoded, the graph built once and
loaded on reopen, the manifest flipped crash-safely, bad input refused with nothing changed,
and dense results equal to a brute-force oracle through any sequence of switches and writes.

On a few hundred 64-d vectors an HNSW search with ``efSearch >= 128`` visits the whole graph,
so its top 5 are the exact top 5: the oracle holds whichever way the index searches.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path
from typing import Any

import pytest

from _oracle import Oracle, assert_ranking
from embedstack import HashEncoder
from embedstack.cli import run
from embedstack.errors import InvalidInput, MissingDependency
from embedstack.index import ChunkingParams, Index, ann

pytest.importorskip("faiss")

DIM = 64
K = 5  # graph searches need 20 * K allowed rows: every corpus here has more
CHUNKS = ChunkingParams(max_tokens=64, overlap=0, allow_any=True)  # one chunk per document
WORDS = ("cat dog bird fish run jump swim fly red blue green small big old new tree river "
         "stone light dark").split()  # fmt: skip
ACTIONS = ["add", "upsert", "delete", "switch", "switch", "compact", "reopen"]
QUERIES = ["red cat", "swim river stone", "old tree", "big dark fly", "green bird run"]


def text(rng: random.Random, n: int) -> str:
    return " ".join(rng.choices(WORDS, k=rng.randint(3, 10))) + f" item{n}"


def corpus(lo: int, hi: int, seed: int = 0) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    return [{"id": f"d{i:04d}", "text": text(rng, i)} for i in range(lo, hi)]


def create(path: Path, ann_: str | None = None) -> Index:
    return Index.create(path, encoder=HashEncoder(DIM), ann=ann_, chunking=CHUNKS)  # type: ignore[arg-type]


def reopen(path: Path, readonly: bool = False) -> Index:
    return Index.open(path, encoder=HashEncoder(DIM), readonly=readonly)


def graph_files(path: Path) -> list[str]:
    return sorted(p.name for p in (path / "dense").glob("hnsw-*"))


def manifest(path: Path) -> dict[str, Any]:
    return dict(json.loads((path / "manifest.json").read_text(encoding="utf-8")))


def oracle_of(docs: list[dict[str, Any]]) -> Oracle:
    oracle = Oracle(HashEncoder(DIM))
    for d in docs:
        oracle.put(d["id"], ("", d["text"], {}))
    return oracle


def assert_dense_exact(index: Index, oracle: Oracle, what: str) -> None:
    for q, hits in zip(QUERIES, index.search_many(QUERIES, mode="dense", k=K), strict=True):
        assert_ranking(hits, oracle.dense(q, sorted(oracle.docs)), K, f"{what}: {q}")


def ids(index: Index) -> list[list[str]]:
    return [[h.doc_id for h in hits] for hits in index.search_many(QUERIES, mode="dense", k=K)]


def test_exact_to_hnsw_builds_once_and_ranks_like_an_index_created_with_hnsw(
    tmp_path: Path,
) -> None:
    docs, gone = corpus(0, 400), [f"d{i:04d}" for i in range(0, 400, 9)]
    switched, native = create(tmp_path / "switched"), create(tmp_path / "native", "hnsw")
    for idx in (switched, native):
        idx.add(docs[:250])
        idx.add(docs[250:])
        idx.delete(gone)
    oracle = oracle_of([d for d in docs if d["id"] not in gone])
    assert graph_files(tmp_path / "switched") == []
    ann.EVENTS.clear()
    switched.set_ann("hnsw")
    assert (ann.EVENTS["build"], ann.EVENTS["added_rows"], ann.EVENTS["save"]) == (1, 400, 1)
    assert switched.ann == "hnsw" and manifest(tmp_path / "switched")["ann"] == "hnsw"
    assert graph_files(tmp_path / "switched") == ["hnsw-000001.faiss", "hnsw-000001.json"]
    assert ids(switched) == ids(native)
    assert_dense_exact(switched, oracle, "switched")
    assert ann.EVENTS["build"] == 1  # searches use the graph built by the switch
    switched.check()
    assert switched.stats().bytes["hnsw"] > 0
    switched.close()
    native.close()


def test_reopen_after_the_switch_loads_the_saved_graph(tmp_path: Path) -> None:
    path = tmp_path / "idx"
    docs = corpus(0, 300)
    with create(path) as idx:
        idx.add(docs)
        idx.set_ann("hnsw")
    for readonly in (False, True):
        ann.EVENTS.clear()
        with reopen(path, readonly=readonly) as idx:
            assert idx.ann == "hnsw"
            assert_dense_exact(idx, oracle_of(docs), f"reopened, readonly={readonly}")
        assert (ann.EVENTS["build"], ann.EVENTS["load"], ann.EVENTS["added_rows"]) == (0, 1, 0)


def test_hnsw_to_exact_deletes_the_graph_and_still_searches(tmp_path: Path) -> None:
    path = tmp_path / "idx"
    docs = corpus(0, 300)
    with create(path, "hnsw") as idx:
        idx.add(docs)
    with reopen(path) as idx:  # closing saved the graph
        hnsw_ids = ids(idx)
        assert graph_files(path)
        idx.set_ann(None)
        assert idx.ann is None and manifest(path)["ann"] is None
        assert graph_files(path) == []
        assert ids(idx) == hnsw_ids
        assert_dense_exact(idx, oracle_of(docs), "exact")
        assert "hnsw" not in idx.stats().bytes
        idx.add(corpus(300, 320, seed=1))  # an exact index grows no graph
        assert graph_files(path) == []
        idx.check()
    ann.EVENTS.clear()
    with reopen(path) as idx:
        assert idx.ann is None
        assert_dense_exact(idx, oracle_of(docs + corpus(300, 320, seed=1)), "reopened")
    assert ann.EVENTS["load"] == ann.EVENTS["build"] == 0
    assert graph_files(path) == []


def test_recovery_deletes_a_graph_an_exact_index_does_not_record(tmp_path: Path) -> None:
    """What a crash between the graph's save and the manifest's flip leaves behind."""
    path = tmp_path / "idx"
    with create(path, "hnsw") as idx:
        idx.add(corpus(0, 300))
    left = graph_files(path)
    data = manifest(path)
    data["ann"] = None  # the manifest says exact: the saved graph is a leftover
    (path / "manifest.json").write_text(json.dumps(data), encoding="utf-8")
    with reopen(path) as idx:
        assert idx.ann is None
        assert graph_files(path) == []
    assert left


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_switches_mixed_with_writes_rank_like_the_oracle(tmp_path: Path, seed: int) -> None:
    """Model-based: random adds, upserts, deletes, switches, compactions and reopens; after
    each step dense search equals the brute-force oracle, the manifest records the mode, an
    exact index has no graph files and an HNSW one has saved its graph when switched to,
    compacted or reopened."""
    rng = random.Random(seed)
    path = tmp_path / "idx"
    index = create(path, rng.choice([None, "hnsw"]))
    docs = corpus(0, 200, seed)
    index.add(docs)
    oracle, mode, n = oracle_of(docs), index.ann, 200
    try:
        for step in range(14):
            action = rng.choice(ACTIONS)
            if action == "add":
                new = corpus(n, n + rng.randint(1, 40), seed + step)
                n += len(new)
                index.add(new)
                for d in new:
                    oracle.put(d["id"], ("", d["text"], {}))
            elif action == "upsert":
                changed = [{"id": i, "text": text(rng, 9000 + step)}
                           for i in rng.sample(sorted(oracle.docs), 15)]  # fmt: skip
                index.upsert(changed)
                for d in changed:
                    oracle.put(d["id"], ("", d["text"], {}))
            elif action == "delete" and len(oracle.docs) > 150:
                gone = rng.sample(sorted(oracle.docs), 20)
                assert index.delete(gone) == 20
                for i in gone:
                    oracle.remove(i)
            elif action == "switch":
                mode = None if mode == "hnsw" else "hnsw"
                index.set_ann(mode)  # type: ignore[arg-type]
            elif action == "compact":
                index.compact()
            elif action == "reopen":
                index.close()
                index = reopen(path)
            what = f"seed {seed} step {step} {action} ({mode})"
            assert index.ann == mode == manifest(path)["ann"], what
            if mode is None:  # and an HNSW index has saved its graph after these steps
                assert graph_files(path) == [], what
            elif action in ("switch", "compact", "reopen"):
                assert graph_files(path), what
            assert_dense_exact(index, oracle, what)
        index.check()
    finally:
        index.close()


def test_same_value_is_a_no_op(tmp_path: Path) -> None:
    path = tmp_path / "idx"
    for mode in (None, "hnsw"):
        with create(path / str(mode), mode) as idx:
            idx.add(corpus(0, 150))
            before = (path / str(mode) / "manifest.json").read_bytes()
            files = graph_files(path / str(mode))
            ann.EVENTS.clear()
            idx.set_ann(mode)
            assert (path / str(mode) / "manifest.json").read_bytes() == before
            assert graph_files(path / str(mode)) == files
            assert ann.EVENTS["build"] == ann.EVENTS["save"] == 0


@pytest.mark.parametrize("bad", ["ivf", "HNSW", "exact", "", 1, True])
def test_an_unknown_value_is_refused_and_changes_nothing(tmp_path: Path, bad: object) -> None:
    path = tmp_path / "idx"
    with create(path) as idx:
        idx.add(corpus(0, 150))
        before = (path / "manifest.json").read_bytes()
        with pytest.raises(InvalidInput, match=r"unknown ann .*choose None \(exact search\) or"):
            idx.set_ann(bad)  # type: ignore[arg-type]
        assert (path / "manifest.json").read_bytes() == before
        assert idx.ann is None and graph_files(path) == []


def test_a_reader_cannot_switch(tmp_path: Path) -> None:
    path = tmp_path / "idx"
    with create(path) as idx:
        idx.add(corpus(0, 150))
    before = (path / "manifest.json").read_bytes()
    with reopen(path, readonly=True) as reader:
        with pytest.raises(InvalidInput, match="opened readonly"):
            reader.set_ann("hnsw")
        assert reader.ann is None
    assert (path / "manifest.json").read_bytes() == before
    assert graph_files(path) == []


def test_without_faiss_nothing_changes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "idx"
    with create(path) as idx:
        idx.add(corpus(0, 150))
        before = (path / "manifest.json").read_bytes()
        monkeypatch.setitem(sys.modules, "faiss", None)  # what an absent package imports as
        with pytest.raises(MissingDependency, match="ann"):
            idx.set_ann("hnsw")
        assert (path / "manifest.json").read_bytes() == before
        assert idx.ann is None and graph_files(path) == []
        monkeypatch.undo()
        assert_dense_exact(idx, oracle_of(corpus(0, 150)), "still exact")


def test_cli_switches_both_ways_and_refuses_a_bad_value(
    tmp_path: Path, hash_model: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "idx"
    docs = tmp_path / "docs.jsonl"
    docs.write_text("\n".join(json.dumps(d) for d in corpus(0, 150)) + "\n", encoding="utf-8")
    assert run(["index", "create", str(path), "--model", hash_model]) == 0
    assert run(["index", "add", str(path), str(docs)]) == 0
    capsys.readouterr()
    assert run(["index", "ann", str(path), "--ann", "hnsw"]) == 0
    got = capsys.readouterr()
    assert "building the HNSW graph over 150 chunks" in got.err
    assert "dense search exact → hnsw in " in got.out
    assert manifest(path)["ann"] == "hnsw" and graph_files(path)
    assert run(["index", "ann", str(path), "--ann", "hnsw"]) == 0
    assert "already hnsw; nothing to do" in capsys.readouterr().out
    before = (path / "manifest.json").read_bytes()
    assert run(["index", "ann", str(path), "--ann", "ivf"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "unknown --ann 'ivf'; choose hnsw or exact" in err
    assert (path / "manifest.json").read_bytes() == before
    assert run(["index", "ann", str(path), "--ann", "exact"]) == 0
    assert "dense search hnsw → exact in " in capsys.readouterr().out
    assert manifest(path)["ann"] is None and graph_files(path) == []
    assert run(["index", "check", str(path)]) == 0
