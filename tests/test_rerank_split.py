"""Split cross-encoders (PreTTR) on tiny random-weight BERT classifiers (tier 1).

A split is recorded in the folder's ``config.json``; the model is otherwise the same random
BertForSequenceClassification the cross-encoder tests build.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from embedstack.encoders.multivector import TokenVectors  # noqa: E402
from embedstack.errors import DimensionMismatch, InvalidInput, ModelNotFound  # noqa: E402
from embedstack.rerank import CrossEncoder, SplitCrossEncoder, load_reranker  # noqa: E402
from embedstack.rerank.split import (  # noqa: E402
    CONFIG_KEY,
    SplitSpec,
    SplitTokenizer,
    joined_batch,
    lower_states,
    split_logits,
    upper_logits,
)
from test_rerank import QUERY, SENTENCES, build_tiny_classifier  # noqa: E402

SPEC = {"layer": 1, "query_length": 16}


def with_split(folder: Path, record: Any) -> Path:
    config = json.loads((folder / "config.json").read_text())
    config[CONFIG_KEY] = record
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.fixture(scope="module")
def split_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = build_tiny_classifier(tmp_path_factory.mktemp("split"), SENTENCES, dropout=0.0)
    return with_split(folder, SPEC)


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def torch_split(split_dir: Path) -> SplitCrossEncoder:
    return SplitCrossEncoder(split_dir, backend="torch", activation="none", threads=1)


@pytest.fixture(scope="module")
def hf_model(split_dir: Path) -> Any:
    from transformers import AutoModelForSequenceClassification

    return AutoModelForSequenceClassification.from_pretrained(split_dir).eval()


def joined(split_dir: Path, docs: list[str]) -> dict[str, Any]:
    import torch

    spec = SplitSpec(1, 16, 128)
    tok = SplitTokenizer(split_dir, spec)
    batch = joined_batch(tok.queries([QUERY] * len(docs)), tok.documents(docs), spec)
    return {k: torch.from_numpy(v) for k, v in batch.items()}


def test_unblocked_split_forward_is_berts_forward(split_dir: Path, hf_model: Any) -> None:
    """Run layer by layer with one segment per row, the split forward is transformers'."""
    import torch

    batch = joined(split_dir, SENTENCES)
    with torch.no_grad():
        ours = upper_logits(hf_model, 1, lower_states(hf_model, 1, batch), batch["attention_mask"])
        theirs = hf_model(
            **{
                k: batch[k]
                for k in ("input_ids", "attention_mask", "token_type_ids", "position_ids")
            }
        ).logits
    np.testing.assert_allclose(ours.numpy(), theirs.numpy(), atol=1e-5)


def test_training_forward_equals_the_two_stage_inference(
    split_dir: Path, hf_model: Any, torch_split: SplitCrossEncoder
) -> None:
    """Training's block-masked joined batch and inference's separate lower passes joined
    above the split give the same logits; the block mask changes them (it is not a no-op)."""
    import torch

    batch = joined(split_dir, SENTENCES)
    with torch.no_grad():
        trained = split_logits(hf_model, 1, batch)[:, 0].numpy()
        unblocked = upper_logits(
            hf_model, 1, lower_states(hf_model, 1, batch), batch["attention_mask"]
        )[:, 0].numpy()
    served = torch_split.score(QUERY, SENTENCES)
    np.testing.assert_allclose(served, trained, atol=1e-5)
    assert np.abs(unblocked - trained).max() > 1e-3


def test_stored_states_score_like_the_whole_model(torch_split: SplitCrossEncoder) -> None:
    """Document states computed alone (as an index stores them), in another batch and
    order, and scored with the query's states give :meth:`score`'s scores."""
    reversed_docs = SENTENCES[::-1]
    stored = torch_split.encode_documents(reversed_docs)
    assert stored.dim == torch_split.dim == 32 and len(stored) == len(SENTENCES)
    query = torch_split.encode_queries([QUERY]).doc(0)
    from_store = torch_split.score_states(query, stored.astype("float32"))[::-1]
    np.testing.assert_allclose(from_store, torch_split.score(QUERY, SENTENCES), atol=1e-5)
    one = torch_split.score_states(query, stored.take([2]))
    np.testing.assert_allclose(one, from_store[::-1][2:3], atol=1e-5)


def test_onnx_matches_torch(split_dir: Path, cache: Path, torch_split: SplitCrossEncoder) -> None:
    onnx = SplitCrossEncoder(split_dir, activation="none", threads=1, cache_dir=cache)
    reference = torch_split.score(QUERY, SENTENCES)
    np.testing.assert_allclose(onnx.score(QUERY, SENTENCES), reference, atol=1e-4)
    files = {p.name for p in next((cache / "onnx").glob("rerank-split1-*")).iterdir()}
    assert {"lower.onnx", "upper.onnx", "manifest.json"} <= files
    int8 = SplitCrossEncoder(
        split_dir, activation="none", threads=1, cache_dir=cache, quantize="int8"
    )
    quantized = int8.score(QUERY, SENTENCES)
    assert np.corrcoef(quantized, reference)[0, 1] > 0.9


def test_load_reranker_picks_the_split_model(split_dir: Path) -> None:
    assert isinstance(load_reranker(split_dir, backend="torch"), SplitCrossEncoder)
    with pytest.raises(InvalidInput, match="split"):
        CrossEncoder(split_dir, backend="torch")


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"layer": 1}, "malformed"),
        ({"layer": "x", "query_length": 16}, "malformed"),
        ({"layer": 1, "query_length": 127}, "malformed"),
        ({"layer": 2, "query_length": 16}, "none of its 2 layers"),
    ],
)
def test_bad_split_records(tmp_path: Path, record: Any, message: str) -> None:
    folder = with_split(build_tiny_classifier(tmp_path / "m", SENTENCES), record)
    with pytest.raises(ModelNotFound, match=message):
        SplitCrossEncoder(folder, backend="torch")


def test_plain_folder_is_not_a_split_model(tmp_path: Path) -> None:
    folder = build_tiny_classifier(tmp_path / "plain", SENTENCES)
    with pytest.raises(ModelNotFound, match="not a split"):
        SplitCrossEncoder(folder, backend="torch")
    assert isinstance(load_reranker(folder, backend="torch"), CrossEncoder)


def test_bad_input(torch_split: SplitCrossEncoder) -> None:
    with pytest.raises(InvalidInput):
        torch_split.score("  ", SENTENCES)
    with pytest.raises(InvalidInput):
        torch_split.score(QUERY, [])
    with pytest.raises(DimensionMismatch):
        torch_split.score_states(
            np.zeros((3, 8), np.float32), TokenVectors.from_arrays([np.zeros((2, 32), np.float32)])
        )
    with pytest.raises(InvalidInput):
        SplitCrossEncoder(Path("unused"), backend="torch", quantize="int8")


def test_index_stores_states_and_a_rerank_stage_scores_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An index created with a split cross-encoder stores each chunk's document states;
    ``colbert_scores`` then equals the model scoring the chunk texts (max over a document's
    chunks), and a ``rerank`` stage with that model reads the stored states instead of
    encoding the candidates."""
    from embedstack import HashEncoder
    from embedstack.index import Index
    from embedstack.pipeline import Pipeline
    from test_index_helpers import SMALL_CHUNKS, corpus

    docs = corpus(10, seed=3)
    docs[0]["text"] = " ".join([docs[0]["text"]] * 12)  # several chunks
    folder = build_tiny_classifier(
        tmp_path / "m", SENTENCES + [d["text"] for d in docs], dropout=0.0
    )
    model = SplitCrossEncoder(with_split(folder, SPEC), backend="torch", threads=1)
    ids = [d["id"] for d in docs]
    with Index.create(
        tmp_path / "idx",
        encoder=HashEncoder(64, name="h"),
        chunking=SMALL_CHUNKS,
        colbert=model,
        colbert_precision="float32",
    ) as idx:
        idx.add(docs)
        chunks = idx._chunker.chunks([d["title"] for d in docs], [d["text"] for d in docs])
    record = json.loads((tmp_path / "idx" / "manifest.json").read_text())["colbert"]
    assert record["dim"] == 32 and record["doc_maxlen"] == 128 - 16
    assert record["options"] == {"max_length": 128, "quantize": None, "backend": "torch"}
    queries = ["cells and genes", "trial of a therapy"]
    with Index.open(tmp_path / "idx", encoder=HashEncoder(64, name="h")) as idx:
        for q in queries:  # reopened by name: rebuilt from the recorded options
            per_chunk = model.score(q, [c.embed for c in chunks])
            want = [
                max(s for c, s in zip(chunks, per_chunk, strict=True) if c.doc == i)
                for i in range(len(docs))
            ]
            np.testing.assert_allclose(idx.colbert_scores(q, ids), want, atol=1e-5)
        assert len(chunks) > len(docs)
        firsts = [c.embed for c in chunks if c.chunk_no == 0]
        first = {q: model.score(q, firsts) for q in queries}
        pipe = Pipeline("bm25(top=10) -> rerank(top=6) -> top 6", reranker=model)
        assert pipe.uses_stored_vectors(idx) == ["rerank"]

        def no_documents(self: object, texts: object) -> object:
            raise AssertionError("a stored-state stage encoded documents at query time")

        monkeypatch.setattr(SplitCrossEncoder, "encode_documents", no_documents)
        for q in queries:
            hits = pipe.run(idx, q)
            head = [h.doc_id for h in idx.search(q, mode="bm25", k=10)][:6]
            assert sorted(h.doc_id for h in hits) == sorted(head)
            expected = idx.colbert_scores(q, head, chunks="first")
            np.testing.assert_allclose(  # the first chunk: title and the start of the text
                expected, [first[q][ids.index(d)] for d in head], atol=1e-5
            )
            got = np.array([h.scores["rerank"] for h in hits])
            np.testing.assert_allclose(
                got, expected[[head.index(h.doc_id) for h in hits]], atol=1e-6
            )
