"""Static models distilled from a tiny random BERT (``embedstack models distill``, tier 1).

Oracles: the teacher's own token outputs, reduced by a PCA computed here with numpy's SVD and
weighted by the Zipf/SIF formula, for the table; model2vec's own inference
(``StaticModel.encode``) on the model it distilled, for the vectors of the distilled and of
the converted folder.
"""

from __future__ import annotations

import gc
import json
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("model2vec")

from embedstack import Encoder, unregister_model  # noqa: E402
from embedstack.cli import run  # noqa: E402
from embedstack.encoders.distill import (  # noqa: E402
    DistillOptions,
    convert_model2vec,
    distill_static,
)
from embedstack.encoders.static import load_table, write_static_folder  # noqa: E402
from embedstack.errors import InvalidInput, ModelNotFound  # noqa: E402
from test_rerank import build_tokenizer  # noqa: E402

WORDS = ("the a cat dog sat on mat and ran fast red blue house tree car road sun moon sea "
         "purr bark rain river night bread").split()  # fmt: skip
TEXTS = ["the cat sat on the mat", "a dog ran fast", "red house and blue car",
         "sun moon sea", "cat cat cat", "rain ☃ river", "☃"]  # fmt: skip
DIMS = 8
SIF = 1e-4


def build_teacher(folder: Path) -> Path:
    """A random 2-layer BertModel (hidden 32, no dropout) and its WordPiece tokenizer."""
    import torch
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    tok = build_tokenizer([" ".join(WORDS)])
    config = BertConfig(vocab_size=tok.get_vocab_size(), hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=64,
                        initializer_range=0.2, hidden_dropout_prob=0.0,
                        attention_probs_dropout_prob=0.0)  # fmt: skip
    torch.manual_seed(0)
    BertModel(config).save_pretrained(folder)
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]",
                            cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]",
                            model_max_length=64).save_pretrained(folder)  # fmt: skip
    return folder


@pytest.fixture(scope="module")
def teacher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_teacher(tmp_path_factory.mktemp("teacher") / "bert")


@pytest.fixture(scope="module")
def static_dir(teacher: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("distilled") / "tiny-static"
    return distill_static(teacher, out, DistillOptions(dims=DIMS, dtype="float32"))


def _teacher_token_outputs(teacher: Path) -> np.ndarray:
    """Every vocabulary token alone through the teacher, ``[CLS] token [SEP]``, mean-pooled
    over the three positions: ``(vocab, 32)``."""
    import torch
    from transformers import AutoTokenizer, BertModel

    model = BertModel.from_pretrained(teacher).eval()
    tok = AutoTokenizer.from_pretrained(teacher)
    ids = torch.arange(len(tok.get_vocab()))[:, None]
    batch = torch.cat([torch.full_like(ids, tok.cls_token_id), ids,
                       torch.full_like(ids, tok.sep_token_id)], dim=1)  # fmt: skip
    with torch.no_grad():
        hidden = model(input_ids=batch, attention_mask=torch.ones_like(batch)).last_hidden_state
    return hidden.mean(dim=1).double().numpy()


def _teacher_ids(static_dir: Path, teacher: Path) -> list[int]:
    """The teacher's token id of each row of the static table. model2vec rewrites the
    WordPiece vocabulary as a Metaspace one: ``"cat"`` becomes ``"▁cat"``, the continuation
    ``"##at"`` becomes ``"at"``; ``[PAD]`` and ``[UNK]`` stay."""
    from tokenizers import Tokenizer

    ours = Tokenizer.from_file(str(static_dir / "tokenizer.json")).get_vocab()
    theirs = Tokenizer.from_file(str(teacher / "tokenizer.json")).get_vocab()

    def form(token: str) -> str:
        if token in ("[PAD]", "[UNK]"):
            return token
        return token[1:] if token.startswith("\u2581") else f"##{token}"

    return [theirs[form(token)] for token in sorted(ours, key=ours.__getitem__)]


def test_rows_are_the_teachers_token_outputs_after_pca_and_sif(
    teacher: Path, static_dir: Path
) -> None:
    from tokenizers import Tokenizer

    outputs = _teacher_token_outputs(teacher)
    kept = _teacher_ids(static_dir, teacher)
    teacher_vocab = Tokenizer.from_file(str(teacher / "tokenizer.json")).get_vocab()
    dropped = {t for t, i in teacher_vocab.items() if i not in kept}
    assert dropped == {"[CLS]", "[SEP]", "[MASK]"}  # special tokens never occur in a text
    outputs = outputs[kept]
    centred = outputs - outputs.mean(axis=0)
    _, _, components = np.linalg.svd(centred, full_matrices=False)
    reduced = centred @ components[:DIMS].T  # PCA: the top DIMS principal axes
    rank_p = 1 / np.arange(2, len(outputs) + 2)  # Zipf: p(token) ~ 1 / (rank + 1)
    expected = reduced * (SIF / (SIF + rank_p / rank_p.sum()))[:, None]
    # [UNK] is a row like any other, the teacher's [CLS] [UNK] [SEP]: model2vec 0.7.0 keeps the
    # unknown token of the Unigram tokenizer it writes (test below, module docstring)
    table = load_table(static_dir).astype(np.float64)
    assert table.shape == (len(kept), DIMS)
    signs = np.sign((table * expected).sum(axis=0))  # a principal axis has no sign
    assert np.all(signs != 0)
    scale = np.abs(expected).max()
    np.testing.assert_allclose(table * signs, expected, rtol=1e-3, atol=1e-4 * scale)
    manifest = json.loads((static_dir / "distill.json").read_text())
    assert manifest["dims"] == DIMS and manifest["vocab_size"] == len(kept)
    assert manifest["teacher_weights_sha256"] and manifest["model2vec"] == "0.7.0"


@pytest.fixture(scope="module")
def theirs(teacher: Path) -> Any:
    """model2vec's own distillation of the teacher, with the options of ``static_dir``."""
    from model2vec.distill import distill_from_model
    from transformers import AutoModel, AutoTokenizer

    return distill_from_model(AutoModel.from_pretrained(teacher),
                              AutoTokenizer.from_pretrained(teacher), device="cpu",
                              pca_dims=DIMS, quantize_to="float32")  # fmt: skip


def _unit(v: np.ndarray) -> np.ndarray:
    return np.asarray(v / np.linalg.norm(v, axis=-1, keepdims=True))


def test_encoder_equals_model2vec_inference_and_conversion_equals_distill(
    theirs: Any, static_dir: Path, tmp_path: Path
) -> None:
    from model2vec import StaticModel
    from tokenizers import Tokenizer

    # model2vec's own inference on the model it distilled, before any file is written
    reference = theirs.encode(TEXTS)
    table = load_table(static_dir)
    np.testing.assert_allclose(table, theirs.embedding * theirs.weights[:, None], atol=1e-6)
    np.testing.assert_allclose(Encoder(static_dir).encode(TEXTS), reference, atol=1e-5)
    # the unknown token counts: its Unigram tokenizer has no unk_token, so model2vec drops
    # nothing, and a text of unknown characters alone is the [UNK] row's direction
    assert theirs.unk_token_id is None
    unk = Tokenizer.from_file(str(static_dir / "tokenizer.json")).token_to_id("[UNK]")
    assert theirs.tokenize(TEXTS[-1:])[0] == [unk]
    assert np.abs(table[unk]).max() > 0
    np.testing.assert_allclose(reference[-1], _unit(table[unk]), atol=1e-6)

    # model2vec's saved folder, converted. Saved C-ordered: safetensors 0.8 writes the memory
    # of the Fortran-ordered table sklearn's PCA returns as if C-ordered (safetensors #825)
    model = StaticModel(
        vectors=np.ascontiguousarray(theirs.embedding),
        weights=theirs.weights,
        tokenizer=theirs.tokenizer,
        config=theirs.config,
        normalize=True,
    )
    with warnings.catch_warnings():  # model2vec 0.7.0 leaves its json files open
        warnings.simplefilter("ignore", ResourceWarning)
        model.save_pretrained(tmp_path / "m2v")
        loaded = StaticModel.from_pretrained(tmp_path / "m2v")
        gc.collect()
    converted = convert_model2vec(tmp_path / "m2v", tmp_path / "conv", dtype="float32")
    np.testing.assert_allclose(load_table(converted), table, atol=1e-6)
    np.testing.assert_allclose(Encoder(converted).encode(TEXTS), loaded.encode(TEXTS), atol=1e-5)


def test_long_texts_read_max_length_tokens_where_model2vec_cuts_characters_first(
    theirs: Any, static_dir: Path
) -> None:
    """The documented difference: model2vec cuts a text to ``512 * median_token_length``
    characters, then 512 tokens; embedstack reads the first 512 tokens."""
    long = " ".join(WORDS[i % len(WORDS)] for i in range(700))
    ids = theirs.tokenize([long], max_length=None)[0]
    chars = 512 * theirs.median_token_length
    assert len(ids) == 700 and len(theirs.tokenize([long[:chars]], max_length=None)[0]) < 512
    table = load_table(static_dir).astype(np.float64)
    encoder = Encoder(static_dir)
    ours = encoder.encode([long])[0]
    np.testing.assert_allclose(ours, _unit(table[ids[:512]].mean(axis=0)), atol=1e-5)
    assert encoder.truncated == 1
    cut = theirs.tokenize([long[:chars]], max_length=None)[0]
    np.testing.assert_allclose(theirs.encode([long])[0], _unit(table[cut].mean(axis=0)),
                               atol=1e-5)  # fmt: skip
    assert np.abs(ours - theirs.encode([long])[0]).max() > 1e-3


@pytest.mark.parametrize("normalize", [True, False, None])
def test_a_converted_folder_drops_the_unknown_token_as_model2vec_does(
    normalize: bool | None, tmp_path: Path
) -> None:
    """A WordLevel tokenizer names its ``unk_token``, so model2vec drops it: the converted
    folder's zero row gives model2vec's vectors when normalized, their direction when not
    (shorter by the share of unknown tokens); a missing ``normalize`` means false."""
    from model2vec import StaticModel
    from tokenizers import Tokenizer

    rng = np.random.default_rng(0)
    config: dict[str, Any] = {"model_type": "model2vec", "architectures": ["StaticModel"]}
    if normalize is not None:
        config["normalize"] = normalize
    model = StaticModel(
        vectors=rng.standard_normal((8, 4)).astype(np.float32),
        tokenizer=Tokenizer.from_str(_tok()),
        config=config,
        weights=rng.uniform(0.5, 1.0, 8),
    )
    assert model.unk_token_id == 0 and model.normalize is bool(normalize)
    with warnings.catch_warnings():  # model2vec 0.7.0 leaves its json files open
        warnings.simplefilter("ignore", ResourceWarning)
        model.save_pretrained(tmp_path / "m2v")
        gc.collect()
    if normalize is None:  # save_pretrained writes the key: take it out again
        saved = json.loads((tmp_path / "m2v" / "config.json").read_text())
        del saved["normalize"]
        (tmp_path / "m2v" / "config.json").write_text(json.dumps(saved))
    texts = ["the cat sat", "the zebra sat on a mat", "zebra", "zebra giraffe cat"]
    converted = convert_model2vec(tmp_path / "m2v", tmp_path / "conv", dtype="float32")
    ours = Encoder(converted).encode(texts)
    reference = model.encode(texts)
    assert not reference[2].any() and not ours[2].any()  # unknown tokens alone: zero
    known = np.array([len(model.tokenize([t])[0]) / len(t.split()) for t in texts])
    expected = reference if normalize else reference * known[:, None]
    np.testing.assert_allclose(ours, expected, atol=1e-6)


def test_the_cli_distills_a_loadable_float16_model_and_pick_takes_the_folder(
    teacher: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    out = tmp_path / "cli-static"
    assert run(["models", "distill", str(teacher), "--out", str(out), "--dims", "4"]) == 0
    said = capsys.readouterr()
    assert said.out.strip() == str(out)
    assert said.err.count(f"distilling {teacher}:") == 1  # announced once the checks passed
    encoder = Encoder(out)
    assert encoder.backend_name == "static" and encoder.dim == 4
    assert load_table(out).shape[1] == 4
    from embedstack.encoders.convert.safetensors_np import read_safetensors

    assert read_safetensors(out / "model.safetensors")["embeddings"].dtype == np.float16
    # the same --out again: a clean error, the folder untouched
    before = sorted(p.name for p in out.iterdir())
    assert run(["models", "distill", str(teacher), "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == before

    from embedstack.eval.pick import PickOptions, run_pick

    beir = _beir(tmp_path / "beir")
    monkeypatch.setitem(sys.modules, "embedstack.eval.report", None)  # pick.json only
    options = PickOptions(models=(str(out),), dims=("full",), precisions=("float32",),
                          modes=("dense",), cache_dir=tmp_path / "cache", n_permutations=1000,
                          show_progress=False)  # fmt: skip
    try:
        result = run_pick(beir, tmp_path / "pick", options)
    finally:
        unregister_model("cli-static")
    assert [m["name"] for m in result["models"]] == ["cli-static"]
    assert "cli-static|4|float32|dense" in [c["id"] for c in result["candidates"]]


def _beir(root: Path) -> Path:
    (root / "qrels").mkdir(parents=True)
    docs = [" ".join(WORDS[i : i + 5]) for i in range(0, len(WORDS) - 5)]
    with (root / "corpus.jsonl").open("w") as f:
        for i, text in enumerate(docs):
            f.write(json.dumps({"_id": f"d{i}", "title": "", "text": text}) + "\n")
    with (root / "queries.jsonl").open("w") as f, (root / "qrels" / "test.tsv").open("w") as q:
        q.write("query-id\tcorpus-id\tscore\n")
        for i in range(0, len(docs), 3):
            f.write(json.dumps({"_id": f"q{i}", "text": " ".join(docs[i].split()[1:3])}) + "\n")
            q.write(f"q{i}\td{i}\t1\n")
    return root


def _nothing_written(parent: Path, name: str) -> None:
    assert not (parent / name).exists()
    assert not [p for p in parent.iterdir() if p.name.startswith(".tmp-")]


def test_bad_sources_are_typed_errors_and_write_nothing(teacher: Path, tmp_path: Path) -> None:
    static = write_static_folder(tmp_path / "static", np.ones((8, 4), np.float32), _tok(),
                                 max_length=16)  # fmt: skip
    no_weights = tmp_path / "no-weights"
    no_weights.mkdir()
    (no_weights / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 8}))
    (no_weights / "tokenizer.json").write_text(_tok())
    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / "config.json").write_text(json.dumps({"model_type": "nonsense", "hidden_size": 8}))
    (garbage / "model.safetensors").write_bytes(b"not safetensors")
    (garbage / "tokenizer.json").write_text(_tok())
    out = tmp_path / "outs"
    out.mkdir()
    cases: list[tuple[Any, type[Exception], str]] = [
        (static, InvalidInput, "already a static model"),
        (no_weights, InvalidInput, "no PyTorch weights"),
        (garbage, InvalidInput, "not a transformer model"),
        (tmp_path / "missing", ModelNotFound, "not found"),
    ]
    for source, error, match in cases:
        with pytest.raises(error, match=match):
            distill_static(source, out / "x", DistillOptions(dims=4))
        _nothing_written(out, "x")
    with pytest.raises(InvalidInput, match="exceeds the teacher's 32"):
        distill_static(teacher, out / "x", DistillOptions(dims=64))
    _nothing_written(out, "x")
    with pytest.raises(InvalidInput, match="not a model2vec folder"):
        convert_model2vec(teacher, out / "x")
    _nothing_written(out, "x")
    assert run(["models", "distill", str(tmp_path / "missing"), "--out", str(out / "x")]) == 3
    assert run(["models", "distill", str(static), "--out", str(out / "x")]) == 2
    _nothing_written(out, "x")


def test_a_failure_midway_leaves_nothing(
    teacher: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import model2vec.distill

    def refuse(**_: Any) -> None:
        raise ValueError("The vocabulary is empty after preprocessing.")

    monkeypatch.setattr(model2vec.distill, "distill_from_model", refuse)
    with pytest.raises(InvalidInput, match="vocabulary is empty"):
        distill_static(teacher, tmp_path / "x", DistillOptions(dims=4))
    _nothing_written(tmp_path, "x")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"dims": 0}, "positive integer"),
        ({"dims": 8, "pca": False}, "drop --no-pca"),
        ({"sif_coefficient": 1.5}, "SIF"),
        ({"dtype": "int8"}, "float16 or float32"),
        ({"max_length": 0}, "max_length"),
    ],
)
def test_options_are_validated(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(InvalidInput, match=match):
        DistillOptions(**kwargs)


def test_existing_out_is_refused_before_any_work(tmp_path: Path) -> None:
    (tmp_path / "taken").mkdir()
    with pytest.raises(InvalidInput, match="already exists"):
        distill_static(tmp_path / "nowhere", tmp_path / "taken")
    assert list((tmp_path / "taken").iterdir()) == []


def _tok() -> str:
    """A word-level tokenizer of 8 ids (no post-processor)."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {w: i for i, w in enumerate(["[UNK]", *WORDS[:7]])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return str(tok.to_str())
