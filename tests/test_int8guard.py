"""int8 checked against fp32: the fallback steps, the outlier order, the cache manifest.

The step logic runs on a fake quantizer; the outlier order on a two-MatMul graph built
here; the cache integration on a tiny random BERT with a word-level tokenizer. The real
all-mpnet-base-v2 case is the slow test in test_fetch_models.py.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from embedstack.encoders.runtime import int8guard


class FakeQuantizer:
    """Records calls; the cosine it yields depends on what the call asked for."""

    def __init__(self, cosine: Any) -> None:
        self.calls: list[tuple[bool, tuple[str, ...]]] = []
        self.cosine = cosine

    def __call__(self, src: Path, dst: Path, *, reduce_range: bool, exclude: Any) -> None:
        self.calls.append((reduce_range, tuple(exclude)))

    def probe(self, src: Path, dst: Path, feed: Any) -> np.ndarray:
        return np.array([self.cosine(*self.calls[-1]), 0.9999])


ORDER = [f"mm{i}" for i in range(10)]


def _run(monkeypatch: pytest.MonkeyPatch, fake: FakeQuantizer) -> dict[str, Any]:
    monkeypatch.setattr(int8guard, "probe_cosines", fake.probe)
    monkeypatch.setattr(int8guard, "outlier_matmuls", lambda src, feed: ORDER)
    return int8guard.quantize_checked(Path("a"), Path("b"), {"x": 1}, fake, "m")


def test_a_close_int8_is_kept_as_quantized_today(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeQuantizer(lambda rr, ex: 0.995)
    facts = _run(monkeypatch, fake)
    assert fake.calls == [(False, ())]
    assert facts["reduce_range"] is False and facts["fp32_matmuls"] == []
    assert facts["probe_min_cosine"] == facts["plain_min_cosine"] == 0.995


def test_a_far_int8_falls_back_until_close(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # plain 0.03 (saturation), 7-bit 0.85, then +0.035 per MatMul left fp32
    fake = FakeQuantizer(lambda rr, ex: 0.03 if not rr else 0.85 + 0.035 * len(ex))
    with caplog.at_level(logging.WARNING, logger=int8guard.__name__):
        facts = _run(monkeypatch, fake)
    assert fake.calls == [(False, ()), (True, ()), (True, ("mm0",)), (True, ("mm0", "mm1")),
                          (True, tuple(ORDER[:4]))]  # fmt: skip
    assert facts["reduce_range"] is True and facts["fp32_matmuls"] == ORDER[:4]
    assert facts["probe_min_cosine"] == pytest.approx(0.85 + 0.035 * 4)
    assert facts["plain_min_cosine"] == 0.03
    assert "falling back to 7-bit weights and 4 fp32 MatMuls" in caplog.text


def test_the_fallback_stops_when_doubling_no_longer_helps(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeQuantizer(lambda rr, ex: 0.1 if not rr else 0.95 + 0.001 * len(ex))
    facts = _run(monkeypatch, fake)
    assert [len(ex) for _, ex in fake.calls] == [0, 0, 1]  # 0.951 - 0.950 < 0.005: stop
    assert facts["fp32_matmuls"] == ["mm0"]


def test_small_first_gains_below_the_target_do_not_stop_the_fallback(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # all-mpnet-base-v2 on a VNNI CPU: no saturation, so 7-bit weights gain nothing (0.815)
    # and the first fp32 MatMul +0.003; the old rule stopped there and kept 0.815
    gains = {0: 0.815, 1: 0.818, 2: 0.86, 4: 0.93, 8: 0.981}
    fake = FakeQuantizer(lambda rr, ex: 0.815 if not rr else gains[len(ex)])
    facts = _run(monkeypatch, fake)
    assert [len(ex) for _, ex in fake.calls] == [0, 0, 1, 2, 4, 8]
    assert facts["fp32_matmuls"] == ORDER[:8] and facts["probe_min_cosine"] == 0.981


def test_the_closest_step_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    # all-MiniLM-L6-v2 on the probes: plain 0.90, 7-bit weights worse; plain is rebuilt
    fake = FakeQuantizer(lambda rr, ex: 0.90 if not rr else 0.80 - 0.01 * len(ex))
    facts = _run(monkeypatch, fake)
    assert fake.calls[-1] == (False, ()) and len(fake.calls) > 2
    assert facts["reduce_range"] is False and facts["fp32_matmuls"] == []
    assert facts["probe_min_cosine"] == 0.9


def test_a_few_points_off_tries_7bit_weights_only(monkeypatch: pytest.MonkeyPatch) -> None:
    # paraphrase-MiniLM-L3-v2 on the long probes: plain 0.963 (u8 x s8 saturation), 7-bit 0.993
    fake = FakeQuantizer(lambda rr, ex: 0.993 if rr else 0.963)
    facts = _run(monkeypatch, fake)
    assert fake.calls == [(False, ()), (True, ())]  # no MatMul left fp32 on this path
    assert facts["reduce_range"] is True and facts["fp32_matmuls"] == []
    assert facts["probe_min_cosine"] == 0.993 and facts["plain_min_cosine"] == 0.963


def test_a_few_points_off_keeps_plain_when_7bit_is_not_closer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake = FakeQuantizer(lambda rr, ex: 0.90 if rr else 0.968)
    facts = _run(monkeypatch, fake)
    assert fake.calls == [(False, ()), (True, ()), (False, ())]  # plain rebuilt
    assert facts["reduce_range"] is False and facts["probe_min_cosine"] == 0.968


def test_unchecked_without_probe_inputs() -> None:
    fake = FakeQuantizer(lambda rr, ex: 0.0)
    assert int8guard.quantize_checked(Path("a"), Path("b"), None, fake, "m") == {"checked": False}
    assert fake.calls == [(False, ())]


def _two_matmuls(path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    scale = np.ones(8, dtype=np.float32)
    scale[3] = 500.0  # one outlier channel feeding "wide"
    inits = [
        numpy_helper.from_array(rng.normal(size=(8, 8)).astype(np.float32), "w_plain"),
        numpy_helper.from_array(rng.normal(size=(8, 8)).astype(np.float32), "w_wide"),
        numpy_helper.from_array(scale, "scale"),
    ]
    nodes = [
        helper.make_node("MatMul", ["x", "w_plain"], ["a"], name="plain"),
        helper.make_node("Mul", ["x", "scale"], ["xs"], name="outlier"),
        helper.make_node("MatMul", ["xs", "w_wide"], ["b"], name="wide"),
        helper.make_node("Add", ["a", "b"], ["y"], name="sum"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "seq", 8])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


def test_outlier_matmuls_puts_the_widest_input_first(tmp_path: Path) -> None:
    graph = tmp_path / "g.onnx"
    _two_matmuls(graph)
    x = np.random.default_rng(1).normal(size=(2, 5, 8)).astype(np.float32)
    assert int8guard.outlier_matmuls(graph, {"x": x}) == ["wide", "plain"]


def test_probe_feed_pads_right_and_keeps_only_the_graph_inputs(tmp_path: Path) -> None:
    tokenizer = _word_tokenizer(tmp_path)
    feed = int8guard.probe_feed(tokenizer, ["input_ids", "attention_mask"])
    assert set(feed) == {"input_ids", "attention_mask"}
    ids, mask = feed["input_ids"], feed["attention_mask"]
    rows = len(int8guard.PROBE_TEXTS) + len(int8guard.LONG_PARAGRAPHS)
    assert ids.shape == mask.shape == (rows, mask.sum(axis=1).max())
    lengths = mask.sum(axis=1)
    for row, length in enumerate(lengths):
        assert mask[row, :length].all() and not mask[row, length:].any()
        assert not ids[row, length:].any()


def _word_tokenizer(folder: Path) -> Path:
    from tokenizers import Tokenizer, models, pre_tokenizers

    texts = (*int8guard.PROBE_TEXTS, *int8guard.LONG_PARAGRAPHS)
    words = sorted({w for t in texts for w in t.lower().split()})
    vocab = {"[PAD]": 0, "[UNK]": 1, **{w: i + 2 for i, w in enumerate(words)}}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    path = folder / "tokenizer.json"
    tokenizer.save(str(path))
    return path


def test_cache_records_the_check_and_redoes_unchecked_int8(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    import torch

    from embedstack.encoders.runtime import HIDDEN_STATES, ModelId, ensure_export

    torch.manual_seed(0)
    folder = tmp_path / "tiny"
    config = transformers.BertConfig(vocab_size=512, hidden_size=32, num_hidden_layers=2,
                                     num_attention_heads=4, intermediate_size=64,
                                     max_position_embeddings=128)  # fmt: skip
    transformers.BertModel(config).eval().save_pretrained(folder)
    _word_tokenizer(folder)
    ident = ModelId("tiny", "12" * 32)
    files = ensure_export(HIDDEN_STATES, folder, ident, tmp_path / "cache", "int8")
    assert files is not None
    int8 = files["model"]
    manifest_file = int8.parent / "manifest.json"
    check = json.loads(manifest_file.read_text())["int8_check"]
    assert check["checked"] is True and check["probe_min_cosine"] >= int8guard.TARGET
    assert check["reduce_range"] is False and check["fp32_matmuls"] == []
    # an int8 graph from before the check (no int8_check) is quantized again, once
    manifest = json.loads(manifest_file.read_text())
    del manifest["int8_check"]
    manifest_file.write_text(json.dumps(manifest))
    int8.write_bytes(b"stale")
    again = ensure_export(HIDDEN_STATES, folder, ident, tmp_path / "cache", "int8")
    assert again is not None and again["model"].read_bytes() != b"stale"
    assert "int8_check" in json.loads(manifest_file.read_text())


def test_probes_fill_the_models_max_length(tmp_path: Path) -> None:
    tokenizer = _word_tokenizer(tmp_path)
    (tmp_path / "sentence_bert_config.json").write_text('{"max_seq_length": 40}')
    lengths = int8guard.probe_feed(tokenizer, ["attention_mask"])["attention_mask"].sum(axis=1)
    n_short = len(int8guard.PROBE_TEXTS)
    assert lengths.max() == 40 and list(lengths[n_short:]) == [40, 40]  # the long ones
    assert lengths[: n_short - 1].max() < 40  # the short ones stay short
    given = int8guard.probe_feed(tokenizer, ["attention_mask"], max_length=24)["attention_mask"]
    assert given.shape[1] == 24
    # without sentence_bert_config.json: the positions of config.json (RoBERTa: less 2)
    (tmp_path / "sentence_bert_config.json").unlink()
    (tmp_path / "config.json").write_text(
        '{"model_type": "roberta", "max_position_embeddings": 66}'
    )
    assert int8guard.model_max_length(tmp_path) == 64
    (tmp_path / "config.json").write_text('{"model_type": "bert", "max_position_embeddings": 8194}')
    assert int8guard.model_max_length(tmp_path) == int8guard.PROBE_MAX_LENGTH
    # both given: the smaller, so a declared length past the positions is not probed
    (tmp_path / "config.json").write_text('{"model_type": "bert", "max_position_embeddings": 64}')
    (tmp_path / "sentence_bert_config.json").write_text('{"max_seq_length": 256}')
    assert int8guard.model_max_length(tmp_path) == 64
    (tmp_path / "sentence_bert_config.json").write_text('{"max_seq_length": 40}')
    assert int8guard.model_max_length(tmp_path) == 40
    # deterministic: the same texts every time
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer))
    assert int8guard.long_probe_texts(tok, 40) == int8guard.long_probe_texts(tok, 40)


OUTLIER_FROM = 60  # positions from here on carry an outlier channel
OUTLIER_CHANNEL = 3


def _long_input_outlier(path: Path, vocab: int, width: int = 16) -> None:
    """Token embeddings plus position embeddings, then two MatMuls (``mm1``, ``mm2``), mean
    pooled by the guard. Positions from :data:`OUTLIER_FROM` on add 1000 to one channel that
    ``mm1`` ignores (a zero weight row): float32 does not see it, but it sets int8's
    per-tensor activation scale, rounding every other value of a long batch to a few steps.
    Short inputs never reach those positions."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    positions = np.zeros((512, width), dtype=np.float32)
    positions[OUTLIER_FROM:, OUTLIER_CHANNEL] = 1000.0
    w1 = rng.normal(size=(width, width)).astype(np.float32)
    w1[OUTLIER_CHANNEL] = 0.0
    inits = [
        numpy_helper.from_array(rng.normal(size=(vocab, width)).astype(np.float32), "tokens"),
        numpy_helper.from_array(positions, "positions"),
        numpy_helper.from_array(w1, "w1"),
        numpy_helper.from_array(rng.normal(size=(width, width)).astype(np.float32), "w2"),
        numpy_helper.from_array(np.array(1, dtype=np.int64), "axis"),
        numpy_helper.from_array(np.array(1, dtype=np.int64), "one"),
    ]
    nodes = [
        helper.make_node("Gather", ["tokens", "input_ids"], ["tok"]),
        helper.make_node("CumSum", ["attention_mask", "axis"], ["count"]),
        helper.make_node("Sub", ["count", "one"], ["pos_raw"]),
        helper.make_node("Max", ["pos_raw", "zero"], ["pos"]),
        helper.make_node("Gather", ["positions", "pos"], ["posv"]),
        helper.make_node("Add", ["tok", "posv"], ["x"]),
        helper.make_node("MatMul", ["x", "w1"], ["h"], name="mm1"),
        helper.make_node("MatMul", ["h", "w2"], ["y"], name="mm2"),
    ]  # fmt: skip
    inits.append(numpy_helper.from_array(np.array(0, dtype=np.int64), "zero"))
    ints = [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "seq"])
            for n in ("input_ids", "attention_mask")]  # fmt: skip
    out = [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "seq", width])]
    graph = helper.make_graph(nodes, "long", ints, out, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


def test_long_inputs_catch_what_short_probes_miss_and_the_fallback_fixes_it(
    tmp_path: Path,
) -> None:
    pytest.importorskip("onnx")
    from embedstack.encoders.runtime.export import _quantize

    tokenizer = _word_tokenizer(tmp_path)
    vocab = json.loads(tokenizer.read_text())["model"]["vocab"]
    src, dst = tmp_path / "model.onnx", tmp_path / "model.int8.onnx"
    _long_input_outlier(src, len(vocab))
    names = ["input_ids", "attention_mask"]
    # probes cut before the outlier positions (the short probes of before): plain int8 passes
    # the check (7-bit weights may be tried for the last points), no MatMul is kept fp32
    short = int8guard.probe_feed(tokenizer, names, max_length=OUTLIER_FROM - 4)
    facts = int8guard.quantize_checked(src, dst, short, _quantize, "long-outlier")
    assert facts["plain_min_cosine"] >= int8guard.TARGET and facts["fp32_matmuls"] == []
    # ... but it is far from float32 on inputs as long as the model reads
    (tmp_path / "sentence_bert_config.json").write_text('{"max_seq_length": 128}')
    full = int8guard.probe_feed(tokenizer, names)
    assert full["attention_mask"].shape[1] == 128
    missed = int8guard.probe_cosines(src, dst, full)
    assert missed.min() < int8guard.TARGET
    # the guard with today's probes sees it, falls back, and ends close on long inputs
    facts = int8guard.quantize_checked(src, dst, full, _quantize, "long-outlier")
    assert facts["plain_min_cosine"] < int8guard.TARGET
    assert facts["fp32_matmuls"] == ["mm1"]  # the MatMul fed by the outlier, and only it
    assert facts["probe_min_cosine"] >= int8guard.FALLBACK_TARGET
    assert facts["probe_version"] == int8guard.PROBE_VERSION and facts["probe_max_length"] == 128
    assert int8guard.probe_cosines(src, dst, full).min() >= int8guard.FALLBACK_TARGET
    assert int8guard.check_is_current(facts)
    assert not int8guard.check_is_current(dict(facts, probe_version=1))
    assert not int8guard.check_is_current(None)
    assert int8guard.check_is_current({"checked": False})  # nothing to probe with: kept
