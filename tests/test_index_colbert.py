"""ColBERT token vectors in an Index: ``colbert_scores`` equals brute-force MaxSim (and the
ColbertReranker) through add, delete, upsert and compact; storage precisions; model checks;
crash safety by the same commit protocol as the dense and sparse segments; the CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from embedstack import HashEncoder, IndexCorrupt, InvalidInput, ModelMismatch
from embedstack.cli import run
from embedstack.encoders.colbert import ColbertReranker, LateInteractionEncoder
from embedstack.encoders.multivector import TokenVectors, maxsim
from embedstack.index import Index, late
from embedstack.index.fields import tokens
from test_index_helpers import (
    SMALL_CHUNKS,
    WRITER_LOOP,
    committed_batches,
    corpus,
    sigkill_rounds,
    snapshot,
)
from test_splade_helpers import build_tiny_bert

OPTIONS = {"query_maxlen": 12, "doc_maxlen": 64, "threads": 1}  # 1 thread: 50x faster here
QUERIES = ["protein cell gene", "cancer therapy patient trial", "uniqd7 gene", "sleep stress"]


@pytest.fixture(scope="module")
def head_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random BERT with a 12-d ColBERT ``linear.weight`` head."""
    return build_tiny_bert(tmp_path_factory.mktemp("colbert-head") / "m", linear_dim=12)


@pytest.fixture(scope="module")
def plain_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random BERT without a head: 32-d token vectors, another model_id."""
    return build_tiny_bert(tmp_path_factory.mktemp("colbert-plain") / "m", seed=1)


@pytest.fixture(scope="module")
def oracle(head_model: Path) -> LateInteractionEncoder:
    """An encoder of its own for the brute-force oracle (not the index's object)."""
    return LateInteractionEncoder(str(head_model), **OPTIONS)


def _create(path: Path, folder: Path, precision: str = "float32", **kw: Any) -> Index:
    return Index.create(
        path,
        encoder=HashEncoder(64, name="h"),
        chunking=SMALL_CHUNKS,
        colbert=str(folder),
        colbert_options=dict(OPTIONS),
        colbert_precision=precision,  # type: ignore[arg-type]
        **kw,
    )


def _open(path: Path, **kw: Any) -> Index:
    return Index.open(path, encoder=HashEncoder(64, name="h"), **kw)


def _brute(
    index: Index,
    encoder: LateInteractionEncoder,
    live: dict[str, dict[str, Any]],
    queries: list[str],
    ids: list[str],
    precision: str = "float32",
) -> list[np.ndarray]:
    """Encode every chunk of the asked live documents from scratch; MaxSim, max per doc:
    one ``(len(ids),)`` array per query, ``-inf`` for ids not in ``live``."""
    docs = [live[i] for i in dict.fromkeys(ids) if i in live]
    if not docs:
        return [np.full(len(ids), -np.inf, np.float32) for _ in queries]
    chunks = index._chunker.chunks([d.get("title", "") for d in docs], [d["text"] for d in docs])
    tokens = encoder.encode_documents([c.embed for c in chunks]).astype(precision)
    out = []
    for query in queries:
        scores = maxsim(encoder.encode_queries([query]).doc(0), tokens)
        best: dict[str, float] = {}
        for c, s in zip(chunks, scores.tolist(), strict=True):
            doc_id = docs[c.doc]["id"]
            best[doc_id] = max(best.get(doc_id, -np.inf), s)
        out.append(np.array([best.get(i, -np.inf) for i in ids], dtype=np.float32))
    return out


def _assert_scores(
    index: Index,
    encoder: LateInteractionEncoder,
    live: dict[str, dict[str, Any]],
    asked: list[str],
    precision: str = "float32",
) -> None:
    ids = [*asked, "no-such-doc", asked[0], asked[-1]]  # unknown ids and repeats
    wanted = _brute(index, encoder, live, QUERIES, ids, precision)
    for q, want in zip(QUERIES, wanted, strict=True):
        got = index.colbert_scores(q, ids)
        assert got.dtype == np.float32 and got.shape == (len(ids),)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5, err_msg=q)
        assert np.isneginf(got).tolist() == [i not in live for i in ids]


def _files(path: Path) -> list[str]:
    return sorted(p.name for p in (path / late.DIR).iterdir())


def _registered_files(index: Index) -> set[str]:
    segments = [seg for seg, _, _ in index._store.segments()]
    return {n for seg in segments for n in late.segment_files(seg, "float32")}


# --- scores ------------------------------------------------------------------------------------


def test_scores_equal_brute_force_through_updates(
    tmp_path: Path, head_model: Path, oracle: LateInteractionEncoder
) -> None:
    docs = corpus(30, seed=3)
    every = [d["id"] for d in docs]
    live = {d["id"]: d for d in docs[:20]}
    with _create(tmp_path / "idx", head_model) as idx:
        idx.add(docs[:12])
        idx.add(docs[12:20])
        chunks = idx._chunker.chunks([d["title"] for d in docs], [d["text"] for d in docs])
        assert max(c.chunk_no for c in chunks) >= 2  # documents of several chunks
        _assert_scores(idx, oracle, live, every)
        idx.delete(["d3", "d15", "d7"])
        for i in ("d3", "d15", "d7"):
            live.pop(i)
        _assert_scores(idx, oracle, live, every)
        assert np.isneginf(idx.colbert_scores("protein", ["d3"])).all()
        changed = [dict(docs[1], text="protein protein cell therapy uniqnew"), docs[2]]
        res = idx.upsert(changed + docs[20:30])
        assert (res.added, res.updated, res.unchanged) == (10, 1, 1)
        live.update({d["id"]: d for d in changed + docs[20:30]})
        _assert_scores(idx, oracle, live, every)
        before = _files(tmp_path / "idx")
        idx.compact()
        after = _files(tmp_path / "idx")
        assert after != before and not [f for f in after if ".tmp" in f]
        assert set(after) == _registered_files(idx)
        _assert_scores(idx, oracle, live, every)
        idx.check()
    with _open(tmp_path / "idx") as idx:
        assert not idx.field("colbert").encoder_loaded
        _assert_scores(idx, oracle, live, every)
        assert idx.field("colbert").encoder_loaded  # loaded by the scoring above
        assert isinstance(idx.field("colbert").encoder(), LateInteractionEncoder)
    with _open(tmp_path / "idx", readonly=True) as reader:
        _assert_scores(reader, oracle, live, every)


def test_scores_equal_the_reranker_on_chunk_texts(tmp_path: Path, plain_model: Path) -> None:
    """A model without a head, given as an encoder object: the float32 store gives exactly
    what ColbertReranker computes from the chunk texts, and the recorded settings rebuild
    the encoder when the index is reopened by name."""
    enc = LateInteractionEncoder(str(plain_model), query_maxlen=16, doc_maxlen=48, threads=1)
    docs = corpus(12, seed=4)
    with Index.create(tmp_path / "idx", encoder=HashEncoder(64, name="h"), chunking=SMALL_CHUNKS,
                      colbert=enc, colbert_precision="float32") as idx:  # fmt: skip
        idx.add(docs)
        chunks = idx._chunker.chunks([d["title"] for d in docs], [d["text"] for d in docs])
    record = json.loads((tmp_path / "idx" / "manifest.json").read_text())["colbert"]
    assert record["dim"] == 32 and record["options"] == {
        "query_maxlen": 16,
        "doc_maxlen": 48,
        "query_augmentation": False,
        "markers": True,
        "mask_punctuation": True,
        "backend": "torch",
    }
    reranker = ColbertReranker(enc)
    ids = [d["id"] for d in docs]
    with _open(tmp_path / "idx") as idx:  # no colbert=: rebuilt from the recorded options
        for q in QUERIES:
            per_chunk = reranker.score(q, [c.embed for c in chunks])
            want = [max(s for c, s in zip(chunks, per_chunk, strict=True) if c.doc == i)
                    for i in range(len(docs))]  # fmt: skip
            np.testing.assert_allclose(idx.colbert_scores(q, ids), want, rtol=1e-5, atol=1e-5)


def test_only_the_candidates_rows_are_read(
    tmp_path: Path, head_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    docs = corpus(20, seed=5)
    with _create(tmp_path / "idx", head_model) as idx:
        idx.add(docs[:10])
        idx.add(docs[10:])
        chunks = idx._chunker.chunks([d["title"] for d in docs], [d["text"] for d in docs])
        n_chunks = {d["id"]: sum(c.doc == i for c in chunks) for i, d in enumerate(docs)}
        scored: list[int] = []

        def spy(query: np.ndarray, documents: TokenVectors) -> np.ndarray:
            scored.append(len(documents))
            return maxsim(query, documents)

        monkeypatch.setattr(tokens, "maxsim", spy)
        idx.colbert_scores("protein", ["d2", "d14", "d2"])  # one from each segment, repeated
        assert scored == [n_chunks["d2"] + n_chunks["d14"]]
        assert sum(n_chunks.values()) > scored[0]
        encoder = idx.field("colbert").encoder()
        calls = []
        monkeypatch.setattr(encoder, "encode_queries", lambda texts: calls.append(texts))
        empty = idx.colbert_scores("protein", [])
        assert empty.shape == (0,) and empty.dtype == np.float32
        assert np.isneginf(idx.colbert_scores("protein", ["nope", "nada"])).all()
        assert calls == [] and scored == [scored[0]]  # nothing to score: no query encoding


@pytest.mark.parametrize("precision", ["float16", "int8"])
def test_reduced_precisions(
    tmp_path: Path, head_model: Path, oracle: LateInteractionEncoder, precision: str
) -> None:
    docs = corpus(16, seed=6)
    live = {d["id"]: d for d in docs}
    ids = list(live)
    with _create(tmp_path / "f32", head_model) as full, _create(
        tmp_path / "small", head_model, precision
    ) as small:  # fmt: skip
        full.add(docs)
        small.add(docs)
        # the stored codes are the float32 vectors quantised: brute force at that precision
        _assert_scores(small, oracle, live, ids, precision)
        # and each score is within the quantisation bound of the float32 one: every stored
        # component is off by at most 2^-11 (float16) or max|x| / 254 (int8) of a unit
        # vector, so a dot product by at most ||q_i||_1 times that, a MaxSim by the sum
        step = 2.0**-11 if precision == "float16" else 1 / 254
        q = oracle.encode_queries([QUERIES[0]]).doc(0)
        bound = float(np.abs(q).sum()) * step
        err = np.abs(small.colbert_scores(QUERIES[0], ids) - full.colbert_scores(QUERIES[0], ids))
        assert 0 < err.max() <= bound
        vectors = sorted((tmp_path / "small" / late.DIR).glob("*.vectors.npy"))
        assert np.load(vectors[0], mmap_mode="r").dtype == np.dtype(precision)
        scales = list((tmp_path / "small" / late.DIR).glob("*.scales.npy"))
        assert len(scales) == (1 if precision == "int8" else 0)
        ratio = small.stats().bytes["colbert"] / full.stats().bytes["colbert"]
        assert ratio < (0.55 if precision == "float16" else 0.4)
        small.delete(ids[:5])
        small.compact()  # codes are copied, not re-quantised
        live = {i: live[i] for i in ids[5:]}
        _assert_scores(small, oracle, live, ids, precision)
        small.check()


# --- the model and arguments -------------------------------------------------------------------


def test_manifest_records_the_model_and_open_checks_it(
    tmp_path: Path, head_model: Path, plain_model: Path, oracle: LateInteractionEncoder
) -> None:
    docs = corpus(6)
    with Index.create(tmp_path / "idx", encoder=HashEncoder(64, name="h"), colbert=str(head_model),
                      colbert_options=dict(OPTIONS)) as idx:  # fmt: skip
        idx.add(docs)
        assert idx.colbert_model == oracle.model_id
        stats = idx.stats()
        assert stats.bytes["colbert"] > 0
        assert stats.bytes["total"] == sum(v for p, v in stats.bytes.items() if p != "total")
    meta = json.loads((tmp_path / "idx" / "manifest.json").read_text())
    assert meta["colbert"] == {
        "name": str(head_model),
        "model_id": oracle.model_id,
        "dim": 12,
        "precision": "float16",  # the default
        "options": OPTIONS,
        "doc_maxlen": 64,
        "markers": True,
        "mask_punctuation": True,
    }
    with pytest.raises(ModelMismatch, match="not .*colbert-plain"):
        _open(tmp_path / "idx", colbert=str(plain_model))
    other_docs = LateInteractionEncoder(str(head_model), **{**OPTIONS, "doc_maxlen": 32})
    with pytest.raises(ModelMismatch, match="doc_maxlen"):
        _open(tmp_path / "idx", colbert=other_docs)
    longer_queries = LateInteractionEncoder(str(head_model), **{**OPTIONS, "query_maxlen": 20})
    with _open(tmp_path / "idx", colbert=longer_queries) as idx:  # query side may differ
        assert idx.field("colbert").encoder() is longer_queries
        assert np.isfinite(idx.colbert_scores("protein", [docs[0]["id"]])).all()
    with _open(tmp_path / "idx", colbert=head_model) as idx:  # by folder: recorded options
        live = {d["id"]: d for d in docs}
        want = _brute(idx, oracle, live, ["protein"], ["d0", "d1"], "float16")[0]
        np.testing.assert_allclose(idx.colbert_scores("protein", ["d0", "d1"]), want, rtol=1e-5)
    # the recorded model's weights are not the ones that produced the vectors
    meta["colbert"]["model_id"] = str(head_model) + "@0000000000000000"
    (tmp_path / "idx" / "manifest.json").write_text(json.dumps(meta))
    with _open(tmp_path / "idx") as idx, pytest.raises(ModelMismatch, match="@0000"):
        idx.colbert_scores("protein", ["d0"])


def test_an_index_without_colbert_vectors(tmp_path: Path, head_model: Path) -> None:
    with Index.create(tmp_path / "idx", encoder=HashEncoder(64, name="h")) as idx:
        idx.add(corpus(3))
        assert idx.colbert_model is None
        with pytest.raises(InvalidInput, match="create the index with .*colbert="):
            idx.colbert_scores("protein", ["d0"])
        with pytest.raises(InvalidInput, match="colbert="):
            idx.colbert_scores("protein", [])
        assert "colbert" not in idx.stats().bytes
        assert not (tmp_path / "idx" / late.DIR).exists()
    with pytest.raises(InvalidInput, match="stores no ColBERT vectors"):
        _open(tmp_path / "idx", colbert=str(head_model))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"colbert": "HEAD", "colbert_precision": "int4"}, "unknown colbert_precision 'int4'"),
        ({"colbert": "HEAD", "colbert_precision": "binary"}, "colbert_precision"),
        ({"colbert_options": {"doc_maxlen": 64}}, "colbert_options given without colbert="),
        ({"colbert_precision": "int8"}, "colbert_precision given without colbert="),
        ({"colbert": 42}, "colbert must be a model name"),
        ({"colbert": " "}, "colbert must name"),
        ({"colbert": "HEAD", "colbert_options": {"nope": 1}}, r"unknown option\(s\) \['nope'\]"),
        ({"colbert": "HEAD", "colbert_options": {"cache_dir": Path(".")}}, "JSON-serialisable"),
        ({"colbert": "HEAD", "colbert_options": ["doc_maxlen"]}, "must be a dict"),
        ({"colbert": "HEAD", "colbert_options": {"doc_maxlen": 0}}, "doc_maxlen"),
        ({"colbert": "ENCODER", "colbert_options": {"doc_maxlen": 8}}, "apply only"),
    ],
)
def test_bad_colbert_arguments(
    tmp_path: Path,
    head_model: Path,
    oracle: LateInteractionEncoder,
    kwargs: dict[str, Any],
    match: str,
) -> None:
    given = {"HEAD": str(head_model), "ENCODER": oracle}
    args = {k: given.get(v, v) if isinstance(v, str) else v for k, v in kwargs.items()}
    with pytest.raises(InvalidInput, match=match):
        Index.create(tmp_path / "idx", encoder=HashEncoder(64, name="h"), **args)
    assert not (tmp_path / "idx").exists()  # refused before anything is written


def test_bad_score_requests(tmp_path: Path, head_model: Path) -> None:
    with _create(tmp_path / "idx", head_model) as idx:
        idx.add(corpus(3))
        for query, ids, match in [
            ("  ", ["d0"], "empty or whitespace"),
            (3, ["d0"], "query must be str"),
            ("protein", ["d0", 7], r"doc_ids\[1\] must be str"),
            ("protein", "d0", "not one string"),
            ("protein", None, "list of ids"),
        ]:
            with pytest.raises(InvalidInput, match=match):
                idx.colbert_scores(query, ids)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="closed"):
        idx.colbert_scores("protein", ["d0"])


# --- crash safety and integrity -------------------------------------------------------------


def test_failed_writes_leave_the_index_as_before(
    tmp_path: Path,
    head_model: Path,
    oracle: LateInteractionEncoder,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    docs = corpus(12, seed=1)
    path = tmp_path / "idx"
    live = {d["id"]: d for d in docs[:6]}
    with _create(path, head_model) as idx:
        idx.add(docs[:6])
        before = snapshot(path)
        encoder = idx.field("colbert").encoder()
        real = encoder.encode_documents
        calls: list[int] = []

        def flaky(texts: list[str]) -> TokenVectors:
            calls.append(len(texts))
            if len(calls) == 3:
                raise RuntimeError("out of memory")
            return real(texts)

        with monkeypatch.context() as m:  # the ColBERT encoder fails mid-batch
            m.setattr(late, "_ENCODE_BATCH", 2)  # 2 chunks per call: several calls a batch
            m.setattr(encoder, "encode_documents", flaky)
            with pytest.raises(RuntimeError, match="out of memory"):
                idx.add(docs[6:])
        assert len(calls) == 3 and snapshot(path) == before

        def boom(*args: object) -> None:
            raise OSError("disk full")

        files = _files(path)
        with monkeypatch.context() as m:  # fails after the segment files are written
            m.setattr(idx.field("bm25"), "write", boom)
            with pytest.raises(OSError):
                idx.add(docs[6:])
        with monkeypatch.context() as m:  # fails inside the SQLite commit
            m.setattr(idx._store, "insert_chunks", boom)
            with pytest.raises(OSError):
                idx.add(docs[6:])
        assert _files(path) == files and len(idx) == 6
        _assert_scores(idx, oracle, live, [d["id"] for d in docs])
    with _open(path) as idx:  # reopens intact
        idx.check()
        _assert_scores(idx, oracle, live, [d["id"] for d in docs])
        idx.add(docs[6:])
        live.update({d["id"]: d for d in docs[6:]})
        assert set(_files(path)) == _registered_files(idx)
        _assert_scores(idx, oracle, live, [d["id"] for d in docs])


def test_recovery_removes_unregistered_colbert_files(
    tmp_path: Path, head_model: Path, oracle: LateInteractionEncoder
) -> None:
    docs = corpus(8, seed=2)
    with _create(tmp_path / "idx", head_model) as idx:
        idx.add(docs)
        _, seg = idx._store.reserve(0)  # a crashed batch: files written, never committed
    root = tmp_path / "idx" / late.DIR
    stray = TokenVectors.from_arrays([np.ones((3, 12), np.float32)] * 2).astype("int8")
    late.write_segment(root, seg, stray)
    (root / ".tmp-seg-000099.vectors.npy").write_bytes(b"partial")
    assert len(_files(tmp_path / "idx")) == 2 + 3 + 1
    with _open(tmp_path / "idx") as idx:
        assert set(_files(tmp_path / "idx")) == _registered_files(idx)
        idx.check()
        _assert_scores(idx, oracle, {d["id"]: d for d in docs}, [d["id"] for d in docs])


def test_check_detects_damaged_vectors(tmp_path: Path, head_model: Path) -> None:
    with _create(tmp_path / "idx", head_model) as idx:
        idx.add(corpus(6))
    root = tmp_path / "idx" / late.DIR
    offsets_file = root / "seg-000001.offsets.npy"
    offsets = np.load(offsets_file)
    vectors_file = root / "seg-000001.vectors.npy"
    vectors = np.load(vectors_file)
    assert offsets[0] == 0 and offsets[-1] == len(vectors) and len(offsets) > 3
    bad = offsets.copy()
    bad[1], bad[2] = bad[2], bad[1]  # rows overlap: not ascending
    np.save(offsets_file, bad, allow_pickle=False)
    with _open(tmp_path / "idx") as idx, pytest.raises(IndexCorrupt, match="colbert segment 1"):
        idx.check()
    np.save(offsets_file, offsets, allow_pickle=False)
    nan = vectors.copy()
    nan[0, 0] = np.nan
    np.save(vectors_file, nan, allow_pickle=False)
    with _open(tmp_path / "idx") as idx, pytest.raises(IndexCorrupt, match="colbert segment 1"):
        idx.check()
    np.save(vectors_file, vectors[:, :8], allow_pickle=False)  # another dimension
    with _open(tmp_path / "idx") as idx, pytest.raises(IndexCorrupt, match=r"\(n, 12\)"):
        idx.check()
    np.save(vectors_file, vectors, allow_pickle=False)
    np.save(offsets_file, offsets[:-1], allow_pickle=False)  # one row short of the dense one
    with _open(tmp_path / "idx") as idx, pytest.raises(IndexCorrupt, match="one offset per row"):
        idx.colbert_scores("protein", ["d0"])
    offsets_file.unlink()
    with _open(tmp_path / "idx") as idx, pytest.raises(IndexCorrupt, match="cannot read"):
        idx.check()


# --- the CLI -----------------------------------------------------------------------------------


def test_cli_creates_an_index_with_colbert_vectors(
    tmp_path: Path, head_model: Path, hash_model: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "idx"
    create = ["index", "create", str(path), "--model", hash_model, "--colbert", str(head_model)]
    assert run([*create, "--colbert-precision", "int8"]) == 0
    docs = tmp_path / "docs.jsonl"
    docs.write_text(
        json.dumps({"id": "a", "text": "cats purr on warm mats"})
        + "\n"
        + json.dumps({"id": "b", "text": "stock markets fell on rate fears"})
        + "\n",
        encoding="utf-8",
    )
    assert run(["index", "add", str(path), str(docs)]) == 0
    assert run(["index", "check", str(path)]) == 0
    capsys.readouterr()
    assert run(["index", "stats", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["bytes_colbert"] > 0
    with Index.open(path, readonly=True) as idx:
        assert idx.manifest["colbert"]["precision"] == "int8"
        assert idx.manifest["colbert"]["options"] == {"backend": "onnx"}
        assert str(idx.colbert_model).startswith(f"{head_model}@")
        scores = idx.colbert_scores("cats purr", ["a", "b", "c"])
        assert np.isfinite(scores[:2]).all() and np.isneginf(scores[2]) and scores[0] != scores[1]
    capsys.readouterr()
    for bad, message in [
        ([*create[:2], str(tmp_path / "new"), *create[3:], "--colbert-precision", "int4"],
         "unknown colbert_precision 'int4'"),
        (["index", "create", str(tmp_path / "new"), "--model", hash_model,
          "--colbert-precision", "int8"], "colbert_precision given without colbert="),
    ]:  # fmt: skip
        assert run(bad) != 0
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
        assert message in err
        assert not (tmp_path / "new").exists()


CHILD = (
    r"""
import json, sys
from embedstack import HashEncoder
from embedstack.index import Index
batches = json.load(open(sys.argv[2]))
idx = Index.open(sys.argv[1], encoder=HashEncoder(64, name="h"))
idx.field("colbert").encoder()  # load the ColBERT model now: the kills then land during adds
"""
    + WRITER_LOOP
)


@pytest.mark.slow
def test_sigkill_during_colbert_adds(
    tmp_path: Path, head_model: Path, oracle: LateInteractionEncoder
) -> None:
    """A writer killed at random moments: acknowledged batches score as brute force, no
    batch is partial, and the ColBERT files are exactly those of the registered segments."""
    docs = corpus(8 * 100, seed=9)
    batches = [docs[i : i + 8] for i in range(0, len(docs), 8)]
    (tmp_path / "b.json").write_text(json.dumps(batches))
    _create(tmp_path / "idx", head_model).close()
    for log in sigkill_rounds(CHILD, [str(tmp_path / "idx"), str(tmp_path / "b.json")]):
        with _open(tmp_path / "idx") as idx:
            idx.check()
            assert set(_files(tmp_path / "idx")) == _registered_files(idx)
            live = committed_batches(idx, batches, log.acked)
            sample = [batches[b][0]["id"] for b in sorted(log.acked)][-20:] + [docs[-1]["id"]]
            _assert_scores(idx, oracle, live, sample)
    assert log.kills >= 1 and log.acked
