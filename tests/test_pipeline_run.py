"""Running pipelines on an index: equivalence with Index.search, stage composition, dense
rescoring against freshly embedded chunks, saved pipelines, timings."""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import pytest

from embedstack import load_encoder
from embedstack.errors import EmbedstackError, InvalidInput
from embedstack.index import Hit, Index
from embedstack.index._embedding import Chunker
from embedstack.index.protocols import Searchable, SearchOptions, SearchPlan
from embedstack.pipeline import (
    Pipeline,
    list_pipelines,
    load_pipeline,
    parse_pipeline,
    save_pipeline,
    stage_latency,
)
from test_index_helpers import SMALL_CHUNKS, corpus

QUERIES = ["protein gene therapy", "brain neuron memory sleep", "insulin diabetes obesity diet"]


class Reverse:
    """Fake reranker: scores each document by its input position, so it reverses the list."""

    name = "reverse"

    def __init__(self) -> None:
        self.seen: list[list[str]] = []

    def score(self, query: str, documents: Sequence[str]) -> np.ndarray:
        self.seen.append(list(documents))
        return np.arange(len(documents), dtype=np.float32)


class Broken:
    name = "broken"

    def score(self, query: str, documents: Sequence[str]) -> np.ndarray:
        return np.zeros(len(documents) + 1, dtype=np.float32)


@pytest.fixture()
def idx(tmp_path: Path, hash_model: str) -> Iterator[Index]:
    index = Index.create(tmp_path / "idx", encoder=hash_model, chunking=SMALL_CHUNKS)
    index.add(corpus(60))
    yield index
    index.close()


def _ids(hits: Sequence[object]) -> list[str]:
    return [h.doc_id for h in hits]  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("spec", "options"),
    [
        ("hybrid", {"mode": "hybrid"}),
        ("bm25", {"mode": "bm25"}),
        ("dense", {"mode": "dense"}),
        (
            "bm25(top=40) + dense(top=40) -> weighted(alpha=0.3, normalization=zscore)",
            {
                "mode": "hybrid",
                "fusion": "weighted",
                "alpha": 0.7,
                "normalization": "zscore",
                "candidates": 40,
            },
        ),  # fmt: skip
    ],
)
def test_same_ranking_as_index_search(idx: Index, spec: str, options: dict[str, object]) -> None:
    # the index's weighted fusion gives alpha to dense, the pipeline to its first generator
    pipeline = Pipeline(spec)
    for q in QUERIES:
        expected = idx.search(q, k=10, **options)  # type: ignore[arg-type]
        got = pipeline.run(idx, q, k=10)
        assert _ids(got) == _ids(expected)
        assert [h.score for h in got] == pytest.approx([h.score for h in expected], abs=1e-12)
        assert [h.rank for h in got] == list(range(1, len(got) + 1))
        for g, e in zip(got, expected, strict=True):
            assert {n: r for n, r in g.ranks.items() if n in e.ranks} == e.ranks
            assert (g.title, g.text, g.metadata, g.chunk, g.span) == (
                e.title, e.text, e.metadata, e.chunk, e.span,
            )  # fmt: skip


def test_rerank_reverses_the_head_exactly(idx: Index) -> None:
    reverse = Reverse()
    pipeline = Pipeline("bm25(top=20) -> rerank(top=8) -> top 5", reranker=reverse)
    q = QUERIES[0]
    bm25 = idx.search(q, mode="bm25", k=20)
    hits = pipeline.run(idx, q)
    head = _ids(bm25)[:8]
    assert _ids(hits) == head[::-1][:5]
    assert len(reverse.seen) == 1 and len(reverse.seen[0]) == 8
    for hit in hits:
        assert hit.ranks["bm25"] == head.index(hit.doc_id) + 1
        assert hit.ranks["rerank"] == hit.rank
        assert hit.score == hit.scores["rerank"] == hit.ranks["bm25"] - 1


def test_stages_compose_in_order(idx: Index) -> None:
    q = QUERIES[1]
    reverse = Reverse()
    pipeline = Pipeline(
        "bm25(top=30) -> dense_rescore(top=12) -> rerank(top=4) -> top 3", reranker=reverse
    )
    bm25 = _ids(idx.search(q, mode="bm25", k=30))[:12]
    dense = idx.dense_scores(q, bm25)
    by_dense = [bm25[i] for i in sorted(range(12), key=lambda i: (-dense[i], i))]
    expected = by_dense[:4][::-1][:3]  # dense order of the 12, head of 4 reversed, top 3
    hits = pipeline.run(idx, q)
    assert _ids(hits) == expected
    for hit in hits:
        assert hit.ranks["dense_rescore"] == by_dense.index(hit.doc_id) + 1
        assert hit.scores["dense_rescore"] == pytest.approx(float(dense[bm25.index(hit.doc_id)]))
        assert set(hit.ranks) == {"bm25", "dense_rescore", "rerank"}


def test_reranker_reads_title_and_text(idx: Index) -> None:
    reverse = Reverse()
    Pipeline("bm25(top=30) -> rerank(top=30)", reranker=reverse).run(idx, QUERIES[2])
    hits = idx.search(QUERIES[2], mode="bm25", k=30)
    expected = [f"{h.title} {h.text}" if h.title else h.text for h in hits]
    assert reverse.seen == [expected]
    assert any(h.title for h in hits) and any(not h.title for h in hits)


def test_dense_rescore_equals_freshly_embedded_chunks(idx: Index, hash_model: str) -> None:
    docs = corpus(60)
    ids = [d["id"] for d in docs][::-1]
    encoder = load_encoder(hash_model)
    chunker = Chunker(encoder, SMALL_CHUNKS)
    by_id = {d["id"]: d for d in docs}
    chunks = chunker.chunks(
        [by_id[i].get("title", "") for i in ids], [by_id[i]["text"] for i in ids]
    )
    assert len(chunks) > len(ids)  # several documents have several chunks
    vectors = encoder.encode_documents([c.embed for c in chunks])
    for q in QUERIES:
        qv = encoder.encode_queries([q])[0]
        expected = np.full(len(ids), -np.inf)
        for chunk, v in zip(chunks, vectors, strict=True):
            expected[chunk.doc] = max(expected[chunk.doc], float(v @ qv))
        got = idx.dense_scores(q, ids)
        assert got.dtype == np.float32 and got.shape == (len(ids),)
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)


def test_dense_scores_edge_cases(idx: Index) -> None:
    got = idx.dense_scores("gene", ["d1", "nope", "d1"])
    assert got[0] == got[2] and got[1] == -np.inf
    assert idx.dense_scores("gene", []).shape == (0,)
    idx.delete(["d1"])
    assert idx.dense_scores("gene", ["d1"])[0] == -np.inf
    with pytest.raises(InvalidInput, match="empty"):
        idx.dense_scores("  ", ["d2"])
    with pytest.raises(InvalidInput, match=r"doc_ids\[1\] must be str"):
        idx.dense_scores("gene", ["d2", 3])  # type: ignore[list-item]
    with pytest.raises(InvalidInput, match="not one string"):
        idx.dense_scores("gene", "d2")


@pytest.mark.parametrize("precision", ["int8", "binary"])
def test_dense_rescore_matches_dense_search_when_quantized(
    tmp_path: Path, hash_model: str, precision: str
) -> None:
    with Index.create(tmp_path / precision, encoder=hash_model, precision=precision,  # type: ignore[arg-type]
                      chunking=SMALL_CHUNKS) as index:  # fmt: skip
        index.add(corpus(40))
        for q in QUERIES:
            hits = index.search(q, mode="dense", k=5)
            got = index.dense_scores(q, _ids(hits))
            np.testing.assert_allclose(got, [h.score for h in hits], rtol=0, atol=1e-5)


def test_saved_pipeline_found_by_name(idx: Index) -> None:
    path = save_pipeline(idx, "mine", "bm25(top=10) -> dense_rescore(top=6) -> top 3")
    assert path == idx.path / "pipelines" / "mine.json"
    assert list_pipelines(idx) == ["mine"] == list_pipelines(idx.path)
    cfg = load_pipeline("mine", index=idx)
    assert cfg == parse_pipeline("bm25(top=10) -> dense_rescore(top=6) -> top 3")
    direct = Pipeline(cfg).run(idx, QUERIES[0])
    assert len(direct) == 3
    mine = Pipeline("mine", index=idx)  # found through the index's path
    assert mine.name == "mine" and mine.config == cfg
    assert _ids(idx.search(QUERIES[0], pipeline=mine, k=3)) == _ids(direct)
    assert Pipeline("mine", index=idx.path).name == "mine"
    with Index.open(idx.path, readonly=True) as reader:
        assert _ids(reader.search(QUERIES[0], pipeline=mine, k=3)) == _ids(direct)
    with pytest.raises(InvalidInput, match="unknown pipeline 'mine'"):
        load_pipeline("mine")  # without the index
    with pytest.raises(InvalidInput, match="saved with the index: mine"):
        load_pipeline("other", index=idx)
    with pytest.raises(InvalidInput, match="is a preset"):
        save_pipeline(idx, "hybrid", "bm25")
    with pytest.raises(InvalidInput, match="pipeline name '../x'"):
        save_pipeline(idx, "../x", "bm25")
    with pytest.raises(InvalidInput, match="stages.0.top"):
        save_pipeline(idx, "bad", "bm25(top=5) -> rerank(top=6)")
    assert list_pipelines(idx) == ["mine"]
    idx.check()  # the pipelines folder does not upset the integrity check


def test_save_pipeline_needs_an_index(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="is not an index"):
        save_pipeline(tmp_path, "p", "bm25")


def test_timings_per_stage(idx: Index) -> None:
    pipeline = Pipeline(
        "bm25(top=30) + dense(top=30) -> rrf -> dense_rescore(top=20) -> rerank(top=10) -> top 5",
        reranker=Reverse(),
    )
    assert pipeline.labels == ["bm25", "dense", "rrf", "dense_rescore", "rerank"]
    results = pipeline.trace_many(idx, QUERIES)
    for result, q in zip(results, QUERIES, strict=True):
        assert list(result.timings) == [*pipeline.labels, "total"]
        assert all(t >= 0 for t in result.timings.values())
        stages = sum(v for n, v in result.timings.items() if n != "total")
        assert result.timings["total"] >= stages
        assert _ids(result.hits) == _ids(pipeline.trace(idx, q).hits)  # batching changes nothing
    summary = stage_latency([r.timings for r in results])
    assert list(summary) == [*pipeline.labels, "total"]
    assert set(summary["rerank"]) == {"latency_ms_p50", "latency_ms_p99", "latency_ms_mean"}
    with pytest.raises(InvalidInput, match="at least one query"):
        stage_latency([])


def test_k_filter_and_empty_cases(idx: Index, tmp_path: Path, hash_model: str) -> None:
    pipeline = Pipeline("hybrid")
    assert len(pipeline.run(idx, QUERIES[0], k=3)) == 3
    assert len(pipeline.run(idx, QUERIES[0], k=500)) <= 200
    hits = pipeline.run(idx, QUERIES[0], filter={"lang": "de"})
    assert hits and all(h.metadata["lang"] == "de" for h in hits)
    assert pipeline.run_many(idx, []) == []
    with pytest.raises(InvalidInput, match="k must be a positive integer"):
        pipeline.run(idx, QUERIES[0], k=0)
    with pytest.raises(InvalidInput, match="empty"):
        pipeline.run(idx, "   ")
    with pytest.raises(InvalidInput, match="a query must be str"):
        pipeline.run(idx, 3)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="pass a list"):
        pipeline.run_many(idx, "one query")
    with Index.create(tmp_path / "empty", encoder=hash_model) as empty:
        assert Pipeline("three-stage", reranker=Reverse()).run(empty, "anything") == []


def test_index_search_with_rerank_preset_needs_a_reranker(idx: Index) -> None:
    with pytest.raises(InvalidInput, match="embedstack train reranker DATASET_DIR"):
        Pipeline("hybrid-rerank", index=idx)
    hits = idx.search(QUERIES[0], pipeline=Pipeline("hybrid-rerank", reranker=Reverse()), k=4)
    head = _ids(Pipeline("hybrid").run(idx, QUERIES[0], k=50))
    assert _ids(hits) == head[::-1][:4]


def test_a_reranker_returning_the_wrong_shape_is_reported(idx: Index) -> None:
    with pytest.raises(EmbedstackError, match="'broken' returned"):
        Pipeline("three-stage", reranker=Broken()).run(idx, QUERIES[0])


def test_sparse_generator_needs_an_index_with_sparse(idx: Index) -> None:
    with pytest.raises(InvalidInput, match="sparse"):
        Pipeline("sparse(top=10)").run(idx, QUERIES[0])


class CountSparse:
    """Tier-0 sparse encoder: term ``crc32(word) % 97`` weighs the word's count."""

    name = "count-sparse"
    model_id = "count-sparse@97"
    vocab_size = 97

    def _encode(self, texts: Iterable[str]) -> object:
        from embedstack.encoders.splade import SparseVectors

        items = list(texts)
        w = np.zeros((len(items), self.vocab_size), dtype=np.float32)
        for i, text in enumerate(items):
            for word in re.findall(r"\w+", text.lower()):
                w[i, zlib.crc32(word.encode()) % self.vocab_size] += 1
        return SparseVectors.from_dense(w)

    encode_queries = encode_documents = _encode


def test_sparse_generator(tmp_path: Path, hash_model: str) -> None:
    sparse = CountSparse()
    with Index.create(
        tmp_path / "s", encoder=hash_model, chunking=SMALL_CHUNKS, sparse=sparse
    ) as index:
        index.add(corpus(40))
        fused = Pipeline("sparse(top=20) + bm25(top=20) -> rrf(k=60) -> top 10")
        for q in QUERIES:
            alone = index.search(q, mode="sparse", k=10)
            assert _ids(Pipeline("sparse(top=10)").run(index, q)) == _ids(alone)
            retrievers = ("sparse", "bm25")
            expected = index.search(q, mode="hybrid", retrievers=retrievers, candidates=20, k=10)
            assert _ids(fused.run(index, q)) == _ids(expected)


class Shuffle:
    """Fake reranker scoring input position j as (3 j) mod n: a fixed permutation."""

    name = "shuffle"

    def score(self, query: str, documents: Sequence[str]) -> np.ndarray:
        return (3 * np.arange(len(documents)) % len(documents)).astype(np.float32)


def test_rerank_fused_with_the_arrival_order_by_rrf(idx: Index) -> None:
    """``fuse=rrf``: the final order is RRF(k=60) of the incoming order and the model's order
    (brute force; ties by id), the model's own rank and score kept per stage; the compact
    string round-trips."""
    spec = "bm25(top=20) -> rerank(top=8, fuse=rrf) -> top 8"
    assert parse_pipeline(spec).to_string() == spec
    q = QUERIES[2]
    head = _ids(idx.search(q, mode="bm25", k=20))[:8]
    hits = Pipeline(spec, reranker=Shuffle()).run(idx, q)
    model = {d: float(3 * j % 8) for j, d in enumerate(head)}
    model_rank = {d: r for r, d in enumerate(sorted(head, key=lambda d: -model[d]), 1)}
    fused = {d: 1 / (60 + j + 1) + 1 / (60 + model_rank[d]) for j, d in enumerate(head)}
    assert _ids(hits) == sorted(head, key=lambda d: (-fused[d], d))
    assert _ids(hits) != sorted(head, key=lambda d: -model[d])  # fusion changed the order
    for hit in hits:
        assert hit.score == pytest.approx(fused[hit.doc_id], abs=1e-12)
        assert hit.ranks["rerank"] == model_rank[hit.doc_id]
        assert hit.scores["rerank"] == model[hit.doc_id]
    with pytest.raises(InvalidInput, match="fuse"):
        parse_pipeline("bm25(top=20) -> rerank(top=8, fuse=max) -> top 5")


# --- ColBERT stages on stored token vectors --------------------------------------------------


@pytest.fixture(scope="module")
def tiny_colbert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from test_splade_helpers import build_tiny_bert

    return build_tiny_bert(tmp_path_factory.mktemp("colbert") / "m", linear_dim=12)


@pytest.fixture()
def colbert_idx(tmp_path: Path, hash_model: str, tiny_colbert: Path) -> Iterator[Index]:
    index = Index.create(tmp_path / "cidx", encoder=hash_model, chunking=SMALL_CHUNKS,
                         colbert=str(tiny_colbert), colbert_precision="float32")  # fmt: skip
    index.add(corpus(30))
    yield index
    index.close()


def test_colbert_stage_without_a_model_needs_stored_vectors(idx: Index) -> None:
    p = Pipeline("bm25 -> colbert(top=10) -> top 5")
    assert p.uses_stored_vectors(idx) == []
    with pytest.raises(InvalidInput, match=r"stages\.0 \(colbert\).*stores no ColBERT vectors"):
        p.run(idx, QUERIES[0])


def test_colbert_stage_scores_stored_vectors_without_encoding_documents(
    colbert_idx: Index, monkeypatch: pytest.MonkeyPatch
) -> None:
    from embedstack.encoders.colbert import LateInteractionEncoder

    p = Pipeline("bm25(top=20) -> colbert(top=12) -> top 12")
    assert p.uses_stored_vectors(colbert_idx) == ["colbert"]
    first = {q: _ids(colbert_idx.search(q, mode="bm25", k=20)) for q in QUERIES}

    def no_documents(self: object, texts: Sequence[str]) -> object:
        raise AssertionError("a stored-vector stage encoded documents at query time")

    monkeypatch.setattr(LateInteractionEncoder, "encode_documents", no_documents)
    for q in QUERIES:
        hits = p.run(colbert_idx, q)
        head = first[q][:12]
        assert sorted(_ids(hits)) == sorted(head)  # the stage reorders bm25's top 12
        expected = colbert_idx.colbert_scores(q, head)
        got = np.array([h.scores["colbert"] for h in hits])
        np.testing.assert_allclose(got, expected[[head.index(h.doc_id) for h in hits]])
        assert np.all(np.diff(got) <= 0) and len(set(got.round(6))) > 1


def test_colbert_stage_with_the_index_model_reads_stored_vectors(
    colbert_idx: Index, tiny_colbert: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from embedstack.encoders.colbert import LateInteractionEncoder
    from test_splade_helpers import build_tiny_bert

    spec = "bm25(top=20) -> colbert(top=12) -> top 12"
    same = Pipeline(spec, colbert=str(tiny_colbert))
    other = Pipeline(spec, colbert=str(build_tiny_bert(tmp_path / "o", seed=5, linear_dim=12)))
    assert same.uses_stored_vectors(colbert_idx) == ["colbert"]
    assert other.uses_stored_vectors(colbert_idx) == []
    stored = Pipeline(spec).run(colbert_idx, QUERIES[1])
    calls: list[int] = []
    encode = LateInteractionEncoder.encode_documents

    def counted(self: LateInteractionEncoder, texts: Sequence[str]) -> object:
        calls.append(len(texts))
        return encode(self, texts)

    monkeypatch.setattr(LateInteractionEncoder, "encode_documents", counted)
    assert _ids(same.run(colbert_idx, QUERIES[1])) == _ids(stored) and calls == []
    other.run(colbert_idx, QUERIES[1])
    assert calls == [12]  # another model encodes the candidates on every query


class _Elsewhere:
    """A Searchable that is not the local Index and has no directory (an external engine):
    it answers by delegating to a local index, and counts the calls."""

    def __init__(self, index: Index) -> None:
        self._index = index
        self.calls: list[dict[str, object]] = []

    def search_many(
        self, queries: Sequence[str], options: SearchOptions | None = None, **kwargs: object
    ) -> list[list[Hit]]:
        self.calls.append(dict(kwargs))
        return self._index.search_many(queries, **kwargs)  # type: ignore[arg-type]

    def dense_scores(self, query: str, doc_ids: Sequence[str]) -> np.ndarray:
        return self._index.dense_scores(query, doc_ids)

    def colbert_scores(
        self, query: str, doc_ids: Sequence[str], *, chunks: Literal["all", "first"] = "all"
    ) -> np.ndarray:
        return self._index.colbert_scores(query, doc_ids, chunks=chunks)

    @property
    def colbert_model(self) -> str | None:
        return None

    def get(self, doc_id: str) -> dict[str, object] | None:
        return self._index.get(doc_id)


def test_a_pipeline_is_a_search_plan_and_runs_on_any_searchable(idx: Index) -> None:
    pipeline = Pipeline("bm25(top=30) -> dense_rescore(top=10) -> top 4")
    assert isinstance(pipeline, SearchPlan)
    elsewhere = _Elsewhere(idx)
    assert isinstance(elsewhere, Searchable)
    got = pipeline.run(elsewhere, QUERIES[1])
    assert _ids(got) == _ids(pipeline.run(idx, QUERIES[1])) and len(got) == 4
    assert elsewhere.calls == [{"mode": "bm25", "k": 30, "filter": None}]
    # no directory: no saved pipelines, and a clear error instead of an AttributeError
    save_pipeline(idx, "mine", "bm25(top=5)")
    assert Pipeline("mine", index=idx).config == parse_pipeline("bm25(top=5)")
    assert list_pipelines(elsewhere) == []  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="unknown pipeline 'mine'"):
        Pipeline("mine", index=elsewhere)
    with pytest.raises(InvalidInput, match="not an index directory"):
        save_pipeline(elsewhere, "p", "bm25")
