"""Static token-lookup embeddings: the ``"static"`` backend, WordLlama conversion, registry.

Default tier: tiny static models built here (a word-level tokenizer and a table whose rows
are formulas of the token id), so every expected vector is written out. Slow tier: the
real ``wordllama==0.4.0.post1`` files, checked against WordLlama's recipe recomputed from
the original files.
"""

from __future__ import annotations

import json
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from _e5s1_ref import real_wheel
from embedstack import Encoder, InvalidInput, ModelNotFound, ModelSpec
from embedstack.encoders import load_encoder, models_extra, register_model, unregister_model
from embedstack.encoders.convert.safetensors_np import write_safetensors
from embedstack.encoders.registry import get_model
from embedstack.encoders.runtime import RuntimeOptions, make_runner
from embedstack.encoders.runtime.identity import ModelId
from embedstack.encoders.static import convert_wordllama, write_static_folder

WORDS = ["[UNK]", "a", "b", "c", "d"]
DIM = 4


def _tokenizer_json(post_bos: bool = False) -> str:
    from tokenizers import Tokenizer, pre_tokenizers, processors
    from tokenizers.models import WordLevel

    vocab = {w: i for i, w in enumerate(WORDS)}
    tokenizer = Tokenizer(WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    if post_bos:  # like WordLlama's config: "<s>" (here "d") before every text
        tokenizer.post_processor = processors.TemplateProcessing(
            single="d $A", special_tokens=[("d", 4)]
        )
    return str(tokenizer.to_str())


def _table(dtype: type = np.float32) -> np.ndarray:
    """Row i = (i, 1, i^2, -i): distinct directions, so pooling mistakes show."""
    i = np.arange(len(WORDS), dtype=np.float64)
    return np.stack([i, np.ones_like(i), i**2, -i], axis=1).astype(dtype)


def _expected(*words: str) -> np.ndarray:
    """WordLlama's recipe by hand: the mean of the words' rows, L2-normalized."""
    table = _table().astype(np.float64)
    mean = np.mean([table[WORDS.index(w)] for w in words], axis=0)
    return mean / np.linalg.norm(mean)


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    return write_static_folder(tmp_path / "static", _table(), _tokenizer_json(), max_length=16)


def test_vectors_are_normalized_means_of_table_rows(folder: Path) -> None:
    encoder = Encoder(folder, backend="static")
    assert encoder.dim == DIM and encoder.max_length == 16
    out = encoder.encode(["a b b", "c", "a b c a d d"])
    for row, words in zip(
        out, (["a", "b", "b"], ["c"], ["a", "b", "c", "a", "d", "d"]), strict=True
    ):
        np.testing.assert_allclose(row, _expected(*words), atol=1e-6)
    alone = encoder.encode(["c"])  # padding of the batch above did not leak
    np.testing.assert_array_equal(alone[0], out[1])
    assert encoder.encode(["a x b"]).shape == (1, DIM)  # unknown word -> row 0 = [UNK]
    np.testing.assert_allclose(encoder.encode(["a x b"])[0], _expected("a", "[UNK]", "b"),
                               atol=1e-6)  # fmt: skip


def test_precisions_truncation_and_truncated_length(folder: Path) -> None:
    encoder = Encoder(folder, backend="static", max_length=2)
    np.testing.assert_allclose(encoder.encode(["a b c d"])[0], _expected("a", "b"), atol=1e-6)
    assert encoder.truncated == 1
    assert encoder.encode(["a b", "c"], precision="binary").shape == (2, 1)
    assert encoder.encode(["a b", "c"], precision="int8").dtype == np.int8
    head = _expected("a", "b")[:2]
    np.testing.assert_allclose(encoder.encode(["a b"], dim=2)[0], head / np.linalg.norm(head),
                               atol=1e-6)  # fmt: skip


def test_fp16_table_is_read_as_float32(tmp_path: Path) -> None:
    path = write_static_folder(tmp_path / "h", _table(np.float16), _tokenizer_json(),
                               max_length=8)  # fmt: skip
    out = Encoder(path, backend="static").encode(["a b"])
    assert out.dtype == np.float32
    np.testing.assert_allclose(out[0], _expected("a", "b"), atol=1e-3)


def test_bad_requests_raise_typed_errors(folder: Path, tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="int8"):
        Encoder(folder, backend="static", quantize="int8")
    options = RuntimeOptions(path=folder, id=ModelId("x", "0" * 64), cache_dir=tmp_path)
    from embedstack.encoders.runtime import CLASSIFIER

    with pytest.raises(InvalidInput, match="token vectors"):
        make_runner("static", CLASSIFIER, options)
    with pytest.raises(InvalidInput, match="2-D"):
        write_static_folder(tmp_path / "bad", np.zeros(3, np.float32), _tokenizer_json(),
                            max_length=4)  # fmt: skip
    with pytest.raises(InvalidInput, match="rows"):
        write_static_folder(tmp_path / "small", _table()[:3], _tokenizer_json(), max_length=4)
    config = json.loads(_tokenizer_json())
    config["model"]["vocab"]["d"] = 9  # a tokenizer that does not belong to the table
    (folder / "tokenizer.json").write_text(json.dumps(config))
    with pytest.raises(InvalidInput, match="outside"):
        Encoder(folder, backend="static").encode(["d"])


def test_a_transformer_folder_is_not_static(minilm_path: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelNotFound, match="not a static"):
        Encoder(minilm_path, backend="static")


def test_registry_factory_selects_the_static_backend(folder: Path) -> None:
    name = str(folder)
    register_model(ModelSpec(name, "local", DIM, 16, factory=models_extra._static_encoder),
                   overwrite=True)  # fmt: skip
    try:
        encoder = load_encoder(name)  # callers' default backend ("onnx") maps to "static"
        assert isinstance(encoder, Encoder) and encoder.backend_name == "static"
        assert load_encoder(name, backend="onnx").backend_name == "static"
    finally:
        unregister_model(name)


def test_wordllama_conversion_follows_its_recipe(tmp_path: Path) -> None:
    weights = tmp_path / "l2_supercat_256.safetensors"
    write_safetensors(weights, {"embedding.weight": _table(np.float16)})
    config = tmp_path / "tok.json"
    config.write_text(_tokenizer_json(post_bos=True))
    path = convert_wordllama(weights, config, tmp_path / "wl", max_length=32)
    assert (path / "model.safetensors").read_bytes() == weights.read_bytes()  # unchanged
    out = Encoder(path, backend="static").encode(["a b", "c"])
    # WordLlama tokenizes with add_special_tokens=False: no "d" is averaged in
    np.testing.assert_allclose(out[0], _expected("a", "b"), atol=1e-3)
    np.testing.assert_allclose(out[1], _expected("c"), atol=1e-3)
    write_safetensors(tmp_path / "other.safetensors", {"x": _table()})
    with pytest.raises(InvalidInput, match="embedding.weight"):
        convert_wordllama(tmp_path / "other.safetensors", config, tmp_path / "wl2")


def test_registry_entry() -> None:
    spec = get_model("wordllama-l2-256")
    assert (spec.dim, spec.pooling, spec.normalize, spec.license) == (256, "mean", True, "mit")
    assert spec.matryoshka_dims == (256, 128, 64) and spec.fetch and spec.factory
    assert models_extra.LANGUAGES[spec.name] == ("en",)
    assert spec.languages == ("en",)


# -- slow tier: the real WordLlama files -------------------------------------------------------
@pytest.mark.slow
def test_real_wordllama(tmp_path_factory: pytest.TempPathFactory) -> None:
    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    from tokenizers import Tokenizer

    wheel = real_wheel("wordllama", tmp_path_factory.mktemp("wheels"))
    models_extra.fetch_wordllama_l2_256(wheel=wheel)
    encoder = load_encoder("wordllama-l2-256")
    assert isinstance(encoder, Encoder) and encoder.dim == 256
    raw = tmp_path_factory.mktemp("raw")
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(raw, [m for m in models_extra.WORDLLAMA.members])
    table = safetensors_numpy.load_file(raw / "wordllama/weights/l2_supercat_256.safetensors")[
        "embedding.weight"
    ].astype(np.float32)
    tokenizer = Tokenizer.from_file(
        str(raw / "wordllama/tokenizers/l2_supercat_tokenizer_config.json")
    )
    texts = ["The quick brown fox jumps over the lazy dog", "And all that jazz", "a cat"]
    for text, vector in zip(texts, encoder.encode(texts), strict=True):
        mean = table[tokenizer.encode(text, add_special_tokens=False).ids].mean(axis=0)
        np.testing.assert_allclose(vector, mean / np.linalg.norm(mean), atol=1e-5)
    q, a, b = encoder.encode(["a cat sat on the mat", "a kitten sitting on a rug",
                              "stock markets fell sharply"])  # fmt: skip
    assert q @ a > q @ b
    docs = [f"document number {i} about cats, dogs and the weather" for i in range(2000)]
    started = time.perf_counter()
    encoder.encode(docs)
    print(f"\nwordllama-l2-256: {len(docs) / (time.perf_counter() - started):.0f} docs/s")
    manifest = json.loads((Path(encoder.config.path) / "fetch-manifest.json").read_text())
    assert manifest["wheel_sha256"] == models_extra.WORDLLAMA.wheel_sha256
    pinned = models_extra.WORDLLAMA.members["wordllama/weights/l2_supercat_256.safetensors"]
    assert manifest["files"]["model.safetensors"] == pinned  # the upstream file, unchanged


def test_a_static_folder_runs_on_the_static_backend_by_default(folder: Path) -> None:
    default = Encoder(folder)  # backend="onnx" by default: a lookup table has nothing to export
    assert default.backend_name == "static"
    np.testing.assert_array_equal(
        default.encode(["a b", "c"]), Encoder(folder, backend="static").encode(["a b", "c"])
    )
