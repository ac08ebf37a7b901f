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


def test_the_closest_step_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    # all-MiniLM-L6-v2 on the probes: plain 0.90, 7-bit weights worse; plain is rebuilt
    fake = FakeQuantizer(lambda rr, ex: 0.90 if not rr else 0.80 - 0.01 * len(ex))
    facts = _run(monkeypatch, fake)
    assert fake.calls[-1] == (False, ()) and len(fake.calls) > 2
    assert facts["reduce_range"] is False and facts["fp32_matmuls"] == []
    assert facts["probe_min_cosine"] == 0.9


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
    assert ids.shape == mask.shape == (len(int8guard.PROBE_TEXTS), mask.sum(axis=1).max())
    lengths = mask.sum(axis=1)
    for row, length in enumerate(lengths):
        assert mask[row, :length].all() and not mask[row, length:].any()
        assert not ids[row, length:].any()


def _word_tokenizer(folder: Path) -> Path:
    from tokenizers import Tokenizer, models, pre_tokenizers

    words = sorted({w for t in int8guard.PROBE_TEXTS for w in t.lower().split()})
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
    config = transformers.BertConfig(vocab_size=200, hidden_size=32, num_hidden_layers=2,
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
