"""Cross-encoder reranker on tiny random-weight BERT classifiers (tier 1).

The models are built here with ``transformers`` (hidden 32, 2 layers) over a WordPiece
vocabulary trained with ``tokenizers`` on a few sentences, saved into a temporary folder, and
loaded through the same code path as any Hugging Face model folder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from embedstack.errors import InvalidInput, ModelNotFound  # noqa: E402
from embedstack.rerank import CrossEncoder, Reranker, load_reranker, rank  # noqa: E402

SENTENCES = [
    "Cats purr when they are content and relaxed.",
    "Dogs bark at strangers and at the mailman.",
    "The mitochondria produce ATP for the cell.",
    "Vitamin D deficiency is linked to bone disease in adults.",
    "Stock markets fell sharply on Tuesday after the report.",
    "A randomized trial tested the vaccine in elderly patients.",
    "Protein folding depends on temperature and pH of the solution.",
    "Rain is expected in the north with strong winds.",
]
QUERY = "why do cats purr"


def build_tokenizer(texts: list[str]) -> Any:
    """A small lower-casing WordPiece tokenizer with BERT's pair template.

    The vocabulary is built deterministically (special tokens, then sorted characters, their
    ``##`` continuations and sorted words), not trained: the WordPiece trainer breaks ties
    in hash order, so a trained vocabulary, and every tiny model's outputs, would change
    from run to run.
    """
    import re

    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    words = sorted({w for t in texts for w in re.findall(r"\w+|[^\w\s]", t.lower())})
    chars = sorted({c for w in words for c in w})
    tokens = specials + chars + [f"##{c}" for c in chars] + [w for w in words if len(w) > 1]
    vocab = {token: i for i, token in enumerate(dict.fromkeys(tokens))}
    tok = Tokenizer(models.WordPiece(vocab=vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)],
    )
    tok.decoder = decoders.WordPiece()
    return tok


def build_tiny_classifier(
    folder: Path,
    texts: list[str],
    *,
    num_labels: int = 1,
    seed: int = 0,
    bare: bool = False,
    dropout: float = 0.1,
) -> Path:
    """Save a random BertForSequenceClassification (or a bare BertModel) and its tokenizer."""
    import torch
    from transformers import (
        BertConfig,
        BertForSequenceClassification,
        BertModel,
        PreTrainedTokenizerFast,
    )

    tok = build_tokenizer(texts)
    config = BertConfig(
        vocab_size=tok.get_vocab_size(),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        initializer_range=0.2,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
        num_labels=num_labels,
    )
    torch.manual_seed(seed)
    model = BertModel(config) if bare else BertForSequenceClassification(config)
    model.save_pretrained(folder)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=128,
    )
    fast.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_classifier(tmp_path_factory.mktemp("tiny-ce"), SENTENCES)


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def torch_ce(tiny: Path) -> CrossEncoder:
    return CrossEncoder(tiny, backend="torch", threads=1)


@pytest.fixture(scope="module")
def onnx_ce(tiny: Path, cache: Path) -> CrossEncoder:
    return CrossEncoder(tiny, backend="onnx", threads=1, cache_dir=cache)


def test_loads_and_scores(torch_ce: CrossEncoder, tiny: Path) -> None:
    assert isinstance(torch_ce, Reranker)
    assert torch_ce.num_labels == 1 and torch_ce.max_length == 128
    scores = torch_ce.score(QUERY, SENTENCES)
    assert scores.dtype == np.float32 and scores.shape == (len(SENTENCES),)
    assert np.all((scores > 0) & (scores < 1))
    assert len(np.unique(scores)) == len(SENTENCES)  # random weights still separate the docs
    assert torch_ce.model_id.startswith(f"{tiny}@")


def test_scores_match_transformers_forward(torch_ce: CrossEncoder, tiny: Path) -> None:
    """Oracle: transformers' own tokenizer and model, one pair at a time, no padding."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny)
    model = AutoModelForSequenceClassification.from_pretrained(tiny).eval()
    expected = []
    with torch.inference_mode():
        for doc in SENTENCES:
            feed = tok(QUERY, doc, return_token_type_ids=True, return_tensors="pt")
            expected.append(float(model(**feed).logits[0, 0]))
    ours = CrossEncoder(tiny, backend="torch", activation="none").score(QUERY, SENTENCES)
    np.testing.assert_allclose(ours, np.array(expected, dtype=np.float32), atol=1e-5)
    del torch_ce


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_scores_independent_of_batching_and_order(
    backend: str, torch_ce: CrossEncoder, onnx_ce: CrossEncoder
) -> None:
    ce = {"torch": torch_ce, "onnx": onnx_ce}[backend]
    docs = [*SENTENCES, " ".join(SENTENCES), "cats"]
    reference = ce.score(QUERY, docs)
    order = np.random.default_rng(0).permutation(len(docs))
    try:
        for batch_size in (1, 2, 3, 5, 64):
            ce.batch_size = batch_size
            np.testing.assert_allclose(ce.score(QUERY, docs), reference, atol=1e-5)
            shuffled = ce.score(QUERY, [docs[i] for i in order])
            np.testing.assert_allclose(shuffled, reference[order], atol=1e-5)
    finally:
        ce.batch_size = 32


def test_onnx_matches_torch(onnx_ce: CrossEncoder, tiny: Path, cache: Path) -> None:
    docs = [*SENTENCES, " ".join(SENTENCES * 3)]  # the last one is truncated
    raw_torch = CrossEncoder(tiny, backend="torch", activation="none").score(QUERY, docs)
    raw_onnx = CrossEncoder(tiny, activation="none", cache_dir=cache).score(QUERY, docs)
    np.testing.assert_allclose(raw_onnx, raw_torch, atol=1e-4)
    np.testing.assert_allclose(onnx_ce.score(QUERY, docs), 1 / (1 + np.exp(-raw_torch)), atol=1e-5)
    manifest = json.loads((onnx_ce._model.path.parent / "manifest.json").read_text())  # type: ignore[attr-defined]
    assert manifest["task"] == "sequence-classification" and manifest["num_labels"] == 1


def test_onnx_export_is_cached(onnx_ce: CrossEncoder, tiny: Path, cache: Path) -> None:
    path: Path = onnx_ce._model.path  # type: ignore[attr-defined]
    before = path.stat().st_mtime_ns
    again = CrossEncoder(tiny, cache_dir=cache)
    assert again._model.path == path  # type: ignore[attr-defined]
    assert path.stat().st_mtime_ns == before


def test_sigmoid_versus_logits(torch_ce: CrossEncoder, tiny: Path) -> None:
    logits = CrossEncoder(tiny, backend="torch", activation="none").score(QUERY, SENTENCES)
    probs = torch_ce.score(QUERY, SENTENCES)
    np.testing.assert_allclose(probs, 1.0 / (1.0 + np.exp(-logits.astype(np.float64))), atol=1e-6)
    # raw logits, not probabilities (sigmoid has one fixed point, so 8 equal pairs cannot be)
    assert not np.allclose(logits, probs, atol=1e-4)
    assert [i for i, _ in torch_ce.rerank(QUERY, SENTENCES)] == list(np.argsort(-logits))


def test_two_label_model_scores_the_relevant_class(tmp_path: Path) -> None:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    folder = build_tiny_classifier(tmp_path / "two", SENTENCES, num_labels=2, seed=3)
    probs = CrossEncoder(folder, backend="torch").score(QUERY, SENTENCES)
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    with torch.inference_mode():
        feed = tok(
            [QUERY] * len(SENTENCES),
            SENTENCES,
            padding=True,
            return_token_type_ids=True,
            return_tensors="pt",
        )
        softmax = torch.softmax(model(**feed).logits, dim=-1)[:, 1].numpy()
    np.testing.assert_allclose(probs, softmax, atol=1e-5)


def test_more_than_two_labels_is_rejected(tmp_path: Path) -> None:
    folder = build_tiny_classifier(tmp_path / "three", SENTENCES, num_labels=3)
    with pytest.raises(InvalidInput, match="3 labels"):
        CrossEncoder(folder, backend="torch")


def test_truncation_keeps_the_query(tiny: Path) -> None:
    ce = CrossEncoder(tiny, backend="torch", max_length=24, activation="none")
    query_ids = ce.tokenizer._plain.encode(QUERY, add_special_tokens=False).ids
    long_doc = " ".join(SENTENCES)
    (enc,) = ce.tokenizer.encode(QUERY, [long_doc])
    assert len(enc.ids) == 24
    assert enc.ids[1 : 1 + len(query_ids)] == query_ids  # the whole query, right after [CLS]
    assert sum(1 for t in enc.type_ids if t == 0) == len(query_ids) + 2
    # what lies past the window cannot change the score; the query's last word does
    same = ce.score(QUERY, [long_doc, long_doc + " dogs bark loudly"])
    assert same[0] == pytest.approx(same[1], abs=1e-6)
    other = ce.score(QUERY.replace("purr", "bark"), [long_doc])
    assert other[0] != pytest.approx(same[0], abs=1e-6)


def test_overlong_query_is_cut_to_half_the_window(tiny: Path) -> None:
    ce = CrossEncoder(tiny, backend="torch", max_length=24)
    query = " ".join(SENTENCES[:3])
    (enc,) = ce.tokenizer.encode(query, ["cats purr"])
    assert sum(1 for t in enc.type_ids if t == 0) == 12 + 2  # 24 // 2 query tokens + CLS, SEP
    assert len(enc.ids) <= 24 and enc.type_ids[-1] == 1
    assert ce.tokenizer.truncated_queries == 1


def test_rerank_orders_and_cuts(torch_ce: CrossEncoder) -> None:
    scores = torch_ce.score(QUERY, SENTENCES)
    ranked = torch_ce.rerank(QUERY, SENTENCES, top_n=3)
    assert [i for i, _ in ranked] == list(np.argsort(-scores)[:3])
    assert [s for _, s in ranked] == pytest.approx(sorted(scores.tolist(), reverse=True)[:3])
    assert len(torch_ce.rerank(QUERY, SENTENCES, top_n=100)) == len(SENTENCES)
    tied = rank(np.array([0.5, 0.25, 0.5, 0.75], dtype=np.float32))
    assert tied == [(3, 0.75), (0, 0.5), (2, 0.5), (1, 0.25)]  # ties: lower index first


@pytest.mark.parametrize(
    ("query", "docs", "message"),
    [
        ("", ["a"], "query is empty"),
        ("   ", ["a"], "query is empty"),
        (None, ["a"], "query is NoneType"),
        ("q", [], "documents is empty"),
        ("q", "a single doc", "single string"),
        ("q", None, "documents is None"),
        ("q", ["fine", " "], "text 1 is empty"),
        ("q", ["fine", 3], "text 1 is int"),
        ("q\ud800", ["a"], "surrogate"),
    ],
)
def test_bad_input_is_invalid(torch_ce: CrossEncoder, query: Any, docs: Any, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        torch_ce.score(query, docs)


@pytest.mark.parametrize("top_n", [0, -1, 1.5, True])
def test_bad_top_n(torch_ce: CrossEncoder, top_n: Any) -> None:
    with pytest.raises(InvalidInput, match="top_n"):
        torch_ce.rerank(QUERY, SENTENCES, top_n=top_n)


@pytest.mark.parametrize(
    "options",
    [
        {"backend": "tensorflow"},
        {"activation": "softmax"},
        {"quantize": "int4"},
        {"batch_size": 0},
        {"max_length": 4},
        {"max_length": 129},  # beyond the 128 position embeddings
        {"backend": "torch", "quantize": "int8"},
        {"colour": "red"},
    ],
)
def test_bad_options(tiny: Path, options: dict[str, Any]) -> None:
    with pytest.raises(InvalidInput):
        load_reranker(tiny, **options)


def test_bi_encoder_folder_is_rejected(minilm_path: Path) -> None:
    with pytest.raises(InvalidInput, match="not a \\*ForSequenceClassification"):
        CrossEncoder(minilm_path, backend="torch")


def test_missing_model_folder(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFound, match="does not exist"):
        CrossEncoder(tmp_path / "no-such-model")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotFound, match="config.json"):
        CrossEncoder(tmp_path / "empty")


def test_int8_onnx_keeps_the_ranking(tiny: Path, cache: Path, onnx_ce: CrossEncoder) -> None:
    quant = CrossEncoder(tiny, quantize="int8", cache_dir=cache, activation="none")
    exact = CrossEncoder(tiny, cache_dir=cache, activation="none").score(QUERY, SENTENCES)
    approx = quant.score(QUERY, SENTENCES)
    assert approx.shape == exact.shape
    assert np.corrcoef(approx, exact)[0, 1] > 0.9
    del onnx_ce


def test_one_backend_registry_serves_every_model_kind(
    tiny: Path, minilm_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A backend registered once is what the dense encoder, SPLADE and the cross-encoder
    build, each handing it its own head; the runner's output goes through the kind's
    pooling."""
    from embedstack import Encoder
    from embedstack.encoders.runtime import backends as runtime_backends
    from embedstack.encoders.runtime import register_backend
    from embedstack.encoders.splade import SparseEncoder
    from test_splade_helpers import build_tiny_mlm

    monkeypatch.setattr(runtime_backends, "_BACKENDS", dict(runtime_backends._BACKENDS))
    built: list[str] = []

    class Constant:
        input_names = ("input_ids", "attention_mask")

        def __init__(self, head: Any, options: Any) -> None:
            built.append(head.task)
            vocab = json.loads((options.path / "config.json").read_text())["vocab_size"]
            self.width = {"splade": vocab, "sequence-classification": 1}.get(head.task, 384)

        def __call__(self, batch: dict[str, np.ndarray]) -> np.ndarray:
            shape = batch["input_ids"].shape
            if self.width == 384:
                return np.ones((*shape, 384), np.float32)
            return np.full((shape[0], self.width), 2.0, np.float32)

        def run(self, stem: str, feed: dict[str, np.ndarray]) -> np.ndarray:
            return self(feed)

    register_backend("constant", Constant)
    dense = Encoder(minilm_path, backend="constant", cache_dir=tmp_path)
    vectors = dense.encode(["a cat"])
    np.testing.assert_allclose(vectors, np.full((1, 384), 1 / np.sqrt(384)), rtol=1e-6)
    sparse = SparseEncoder(build_tiny_mlm(tmp_path / "mlm"), backend="constant")
    assert sparse.encode_documents(["cats purr"]).nnz == sparse.vocab_size
    ce = CrossEncoder(tiny, backend="constant", activation="none")
    np.testing.assert_array_equal(ce.score(QUERY, SENTENCES[:2]), [2.0, 2.0])
    assert built == ["feature-extraction", "splade", "sequence-classification"]
