"""sentence-transformers ``Dense`` modules after pooling (tier 1, tiny random models).

Each folder is a random 2-layer BERT (hidden 32) saved by sentence-transformers itself with
Pooling, Dense layers and Normalize; the oracle is ``SentenceTransformer(folder).encode``.
Folders with a module embedstack does not run must raise a typed error naming it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("torch")
st = pytest.importorskip("sentence_transformers")

from embedstack import DimensionMismatch, Encoder, InvalidInput, ModelNotFound  # noqa: E402
from embedstack.encoders.dense import pool  # noqa: E402
from embedstack.encoders.loading import folder_spec, load_model_config  # noqa: E402
from embedstack.encoders.runtime.folder import weights_hash  # noqa: E402
from test_rerank import build_tokenizer  # noqa: E402

TEXTS = [
    "a cat sat on the mat",
    "stocks fell sharply today after the report",
    "the quick brown fox jumps over the lazy dog near the river bank",
    "short",
    "photosynthesis converts light into chemical energy",
]
HIDDEN = 32


@pytest.fixture(scope="module")
def body(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 2-layer BertModel (hidden 32, no dropout) and its tokenizer."""
    import torch
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    folder = tmp_path_factory.mktemp("body")
    tok = build_tokenizer(TEXTS)
    config = BertConfig(vocab_size=tok.get_vocab_size(), hidden_size=HIDDEN,
                        num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                        max_position_embeddings=64, hidden_dropout_prob=0.0,
                        attention_probs_dropout_prob=0.0)  # fmt: skip
    torch.manual_seed(0)
    BertModel(config).eval().save_pretrained(folder)
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]",
                            cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]",
                            model_max_length=64).save_pretrained(folder)  # fmt: skip
    return folder


def dense(n_in: int, n_out: int, activation: str = "Tanh", **kwargs: Any) -> Any:
    import torch
    from sentence_transformers.base.modules import Dense

    act = getattr(torch.nn, activation)()
    return Dense(n_in, n_out, activation_function=act, **kwargs)


def save_st(body: Path, out: Path, heads: list[Any], *, pooling: str = "mean",
            normalize: bool = True, seed: int = 1) -> Path:  # fmt: skip
    """``Transformer → Pooling → heads → [Normalize]`` saved by sentence-transformers."""
    import torch
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer

    torch.manual_seed(seed)
    for head in heads:  # random weights big enough for tanh/sigmoid to bend
        for param in head.parameters():
            torch.nn.init.normal_(param, std=0.5)
    modules = [Transformer(str(body)), Pooling(HIDDEN, pooling), *heads]
    if normalize:
        modules.append(Normalize())
    st.SentenceTransformer(modules=modules, device="cpu").save(str(out))
    return out


def reference(folder: Path) -> np.ndarray:
    model = st.SentenceTransformer(str(folder), device="cpu")
    return np.asarray(model.encode(TEXTS, convert_to_numpy=True), dtype=np.float32)


def assert_same(ours: np.ndarray, ref: np.ndarray) -> None:
    assert ours.shape == ref.shape
    cos = np.einsum("ij,ij->i", ours, ref) / np.linalg.norm(ours, axis=1)
    assert (cos / np.linalg.norm(ref, axis=1)).min() >= 0.9999
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), np.linalg.norm(ref, axis=1),
                               rtol=1e-3)  # fmt: skip


CASES: dict[str, tuple[list[tuple[int, int, str, dict[str, Any]]], str, bool]] = {
    # name: ([(in, out, activation, kwargs)], pooling, normalize)
    "tanh-reduce-bias": ([(32, 16, "Tanh", {})], "mean", True),
    "identity-widen-no-bias": ([(32, 48, "Identity", {"bias": False})], "mean", False),
    "labse-like-square-cls": ([(32, 32, "Tanh", {})], "cls", True),
    "two-layers": ([(32, 24, "Tanh", {}), (24, 8, "Identity", {"bias": False})], "mean", True),
    "relu": ([(32, 12, "ReLU", {})], "mean", False),
    "sigmoid": ([(32, 12, "Sigmoid", {})], "mean", False),
    "residual-projected": ([(32, 20, "Tanh", {"use_residual": True})], "mean", True),
    "residual-identity": ([(32, 32, "Identity", {"use_residual": True})], "mean", False),
}


@pytest.mark.parametrize("case", list(CASES))
def test_encoder_matches_sentence_transformers(body: Path, tmp_path: Path, case: str) -> None:
    layers, pooling, normalize = CASES[case]
    heads = [dense(i, o, act, **kw) for i, o, act, kw in layers]
    folder = save_st(body, tmp_path / case, heads, pooling=pooling, normalize=normalize)
    out = layers[-1][1]
    config = load_model_config(folder)
    assert (config.dim, config.hidden_size, len(config.dense)) == (out, HIDDEN, len(layers))
    assert folder_spec(folder).dim == out
    encoder = Encoder(folder)
    assert encoder.dim == out
    assert_same(encoder.encode(TEXTS), reference(folder))


def test_torch_and_int8_paths_apply_the_head(body: Path, tmp_path: Path) -> None:
    folder = save_st(body, tmp_path / "m", [dense(32, 16)])
    ref = reference(folder)
    assert_same(Encoder(folder, backend="torch").encode(TEXTS), ref)
    int8 = Encoder(folder, quantize="int8").encode(TEXTS)
    assert int8.shape == ref.shape
    assert np.einsum("ij,ij->i", int8, ref).min() >= 0.98


def test_dropout_module_is_a_no_op(body: Path, tmp_path: Path) -> None:
    from sentence_transformers.sentence_transformer.modules import Dropout

    folder = save_st(body, tmp_path / "m", [dense(32, 16), Dropout(0.5)])
    assert_same(Encoder(folder).encode(TEXTS), reference(folder))


def test_graph_that_pools_itself(body: Path, tmp_path: Path) -> None:
    """A shipped graph may return pooled vectors, before or after the Dense head."""
    folder = save_st(body, tmp_path / "m", [dense(32, 16)])
    encoder, ref = Encoder(folder), reference(folder)
    runner, head = encoder._model, encoder._head
    assert head is not None

    def pooled(batch: dict[str, np.ndarray]) -> np.ndarray:
        return pool(runner(batch), batch["attention_mask"], "mean")

    encoder._model = pooled  # type: ignore[assignment]
    assert_same(encoder.encode(TEXTS), ref)
    encoder._model = lambda batch: head(pooled(batch))  # type: ignore[assignment]
    assert_same(encoder.encode(TEXTS), ref)


def test_square_head_on_a_pooled_graph_is_ambiguous(body: Path, tmp_path: Path) -> None:
    folder = save_st(body, tmp_path / "m", [dense(32, 32)])
    encoder = Encoder(folder)
    runner = encoder._model
    encoder._model = lambda b: pool(runner(b), b["attention_mask"], "mean")  # type: ignore[assignment]
    with pytest.raises(InvalidInput, match="fits the Dense head both before and after"):
        encoder.encode(TEXTS)


def test_identity_covers_the_head(body: Path, tmp_path: Path) -> None:
    a = save_st(body, tmp_path / "a", [dense(32, 16)], seed=1)
    b = save_st(body, tmp_path / "b", [dense(32, 16)], seed=2)
    plain = save_st(body, tmp_path / "plain", [])
    assert Encoder(a).weights_hash != Encoder(b).weights_hash
    # a folder without Dense layers keeps the hash it always had (recorded in indexes)
    assert Encoder(plain).weights_hash == weights_hash(plain)


def test_body_only_ignores_the_head(body: Path, tmp_path: Path) -> None:
    folder = save_st(body, tmp_path / "m", [dense(32, 16)])
    config = load_model_config(folder, body_only=True)
    assert (config.dim, config.dense, config.transformer_path) == (HIDDEN, (), folder)


def _edit(file: Path, **changes: Any) -> None:
    data = json.loads(file.read_text(encoding="utf-8"))
    file.write_text(json.dumps({**data, **changes}), encoding="utf-8")


@pytest.fixture()
def folder(body: Path, tmp_path: Path) -> Path:
    return save_st(body, tmp_path / "m", [dense(32, 16)])


@pytest.mark.parametrize("name", ["GELU", "Softmax"])
def test_unsupported_activation_is_named(folder: Path, name: str) -> None:
    _edit(folder / "2_Dense" / "config.json", activation_function=f"torch.nn.modules.x.{name}")
    with pytest.raises(InvalidInput, match=f"activation_function .*{name}"):
        Encoder(folder)


def test_pickled_dense_weights_are_refused(folder: Path) -> None:
    (folder / "2_Dense" / "model.safetensors").rename(folder / "2_Dense" / "pytorch_model.bin")
    with pytest.raises(ModelNotFound, match="pytorch_model.bin"):
        Encoder(folder)
    (folder / "2_Dense" / "pytorch_model.bin").unlink()
    with pytest.raises(ModelNotFound, match="no weights"):
        load_model_config(folder)


def test_dense_widths_must_chain(folder: Path) -> None:
    _edit(folder / "2_Dense" / "config.json", in_features=24)
    with pytest.raises(DimensionMismatch, match="in_features is 24"):
        Encoder(folder)


def test_dense_weights_must_fit_the_config(folder: Path) -> None:
    _edit(folder / "2_Dense" / "config.json", out_features=8)
    with pytest.raises(ModelNotFound, match="linear.weight"):
        Encoder(folder)


def test_dense_on_token_states_is_refused(folder: Path) -> None:
    _edit(folder / "2_Dense" / "config.json", module_input_name="token_embeddings")
    with pytest.raises(InvalidInput, match="token_embeddings"):
        Encoder(folder)


def _reorder(folder: Path, order: list[int]) -> None:
    modules = json.loads((folder / "modules.json").read_text(encoding="utf-8"))
    (folder / "modules.json").write_text(json.dumps([modules[i] for i in order]), "utf-8")


@pytest.mark.parametrize(("order", "where"), [([0, 2, 1, 3], "before pooling"),
                                              ([0, 1, 3, 2], "after Normalize")])  # fmt: skip
def test_dense_out_of_place_is_refused(folder: Path, order: list[int], where: str) -> None:
    _reorder(folder, order)
    with pytest.raises(InvalidInput, match=where):
        load_model_config(folder)


UNSUPPORTED = [
    "sentence_transformers.models.LayerNorm",
    "sentence_transformers.models.WeightedLayerPooling",
    "sentence_transformers.models.CNN",
    "sentence_transformers.models.LSTM",
    "sentence_transformers.models.WordEmbeddings",
    "sentence_transformers.models.StaticEmbedding",
    "sentence_transformers.base.modules.router.Router",
    "pylate.models.Dense.Dense",
]


@pytest.mark.parametrize("kind", UNSUPPORTED)
def test_unsupported_module_is_named(folder: Path, kind: str) -> None:
    modules = json.loads((folder / "modules.json").read_text(encoding="utf-8"))
    modules.insert(2, {"idx": 9, "name": "9", "path": "9_X", "type": kind})
    (folder / "modules.json").write_text(json.dumps(modules), encoding="utf-8")
    for load in (Encoder, folder_spec, load_model_config):
        with pytest.raises(InvalidInput, match=f"module '{kind}' is not supported"):
            load(folder)
    assert load_model_config(folder, body_only=True).dim == HIDDEN


def test_saved_layer_norm_folder_is_refused(body: Path, tmp_path: Path) -> None:
    from sentence_transformers.sentence_transformer.modules import LayerNorm

    folder = save_st(body, tmp_path / "m", [LayerNorm(HIDDEN)])
    with pytest.raises(InvalidInput, match="LayerNorm"):
        Encoder(folder)


def test_trainer_base_check_reads_the_head(folder: Path, tmp_path: Path) -> None:
    from embedstack.train.embedder_model import check_bi_encoder

    assert check_bi_encoder(str(folder))[1].dim == 16
    broken = tmp_path / "broken"
    shutil.copytree(folder, broken)
    _edit(broken / "2_Dense" / "config.json", activation_function="torch.nn.GELU")
    with pytest.raises(InvalidInput, match="GELU"):
        check_bi_encoder(str(broken))
