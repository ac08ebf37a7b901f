"""ONNX export: outputs match the torch reference, the cache and its manifest behave.

The bundled all-MiniLM-L6-v2 is exported once per session into a temporary cache; cache
invalidation is exercised on a tiny random-weight BERT so that re-exports stay cheap.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

import onnxruntime  # noqa: E402

from embedstack import Encoder  # noqa: E402
from embedstack.encoders.onnx_export import ONNX_FORMAT_VERSION, OPSET, ensure_onnx  # noqa: E402

TEXTS = [
    "A cat sits on the mat.",
    "Stock markets fell sharply on Tuesday.",
    "x",
    "Mitochondria are the powerhouse of the cell; ATP synthesis depends on them.",
    # far beyond 256 tokens: exercises truncation and a full-width batch
    " ".join(f"protein{i} binds receptor {i % 7} in vivo" for i in range(200)),
]


@pytest.fixture(scope="session")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("embedstack-cache")


@pytest.fixture(scope="session")
def onnx_fp32(cache: Path) -> Encoder:
    return Encoder(backend="onnx", threads=1, cache_dir=cache, show_progress=False)


@pytest.fixture(scope="session")
def torch_ref(cache: Path) -> Encoder:
    return Encoder(backend="torch", threads=1, cache_dir=cache, show_progress=False)


def _entry(cache: Path) -> Path:
    (folder,) = (cache / "onnx").iterdir()
    return folder


def test_fp32_matches_torch(onnx_fp32: Encoder, torch_ref: Encoder) -> None:
    ours = onnx_fp32.encode(TEXTS)
    reference = torch_ref.encode(TEXTS)
    assert ours.shape == reference.shape == (len(TEXTS), 384)
    assert np.abs(ours - reference).max() < 1e-4
    assert np.einsum("ij,ij->i", ours, reference).min() >= 0.9999


def test_manifest_records_the_export(onnx_fp32: Encoder, cache: Path) -> None:
    manifest = json.loads((_entry(cache) / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["format_version"] == ONNX_FORMAT_VERSION
    assert manifest["weights_sha256"] == onnx_fp32.weights_hash
    assert manifest["opset"] == OPSET
    assert manifest["onnxruntime"] == onnxruntime.__version__
    assert "model.opt.onnx" in manifest["variants"]


def test_second_encoder_reuses_the_cache(onnx_fp32: Encoder, cache: Path) -> None:
    folder = _entry(cache)
    before = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    again = Encoder(backend="onnx", threads=1, cache_dir=cache, show_progress=False)
    assert _entry(cache) == folder
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == before
    np.testing.assert_array_equal(again.encode(TEXTS[:2]), onnx_fp32.encode(TEXTS[:2]))


def test_int8_close_to_fp32(onnx_fp32: Encoder, cache: Path) -> None:
    int8 = Encoder(backend="onnx", quantize="int8", threads=1, cache_dir=cache)
    assert (_entry(cache) / "model.int8.onnx").is_file()
    cos = np.einsum("ij,ij->i", int8.encode(TEXTS), onnx_fp32.encode(TEXTS))
    assert cos.min() >= 0.98


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer random-weight BERT (hidden 32): exports in about a second."""
    import torch
    import transformers

    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=1000,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    folder = tmp_path_factory.mktemp("tiny-bert")
    transformers.BertModel(config).eval().save_pretrained(folder)
    return folder


@pytest.mark.parametrize(
    "damage",
    [
        lambda m: "{not json",
        lambda m: json.dumps({**m, "weights_sha256": "0" * 64}),
        lambda m: json.dumps({**m, "format_version": ONNX_FORMAT_VERSION - 1}),
    ],
    ids=["corrupt", "other-weights", "stale-format"],
)
def test_bad_manifest_triggers_reexport(
    tiny_bert: Path, tmp_path: Path, damage: Callable[[dict[str, Any]], str]
) -> None:
    weights = "ab" * 32
    first = ensure_onnx(tiny_bert, name="tiny", weights=weights, cache_root=tmp_path)
    same = ensure_onnx(tiny_bert, name="tiny", weights=weights, cache_root=tmp_path)
    assert same == first
    stamp = first.stat().st_mtime_ns
    manifest_file = first.parent / "manifest.json"
    manifest = json.loads(manifest_file.read_text(encoding="utf-8"))
    manifest_file.write_text(damage(manifest), encoding="utf-8")

    again = ensure_onnx(tiny_bert, name="tiny", weights=weights, cache_root=tmp_path)
    assert again == first
    assert again.stat().st_mtime_ns != stamp
    rebuilt = json.loads(manifest_file.read_text(encoding="utf-8"))
    assert rebuilt["weights_sha256"] == weights
    assert rebuilt["format_version"] == ONNX_FORMAT_VERSION


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, True), ("1", True), ("0", False), ("false", False), (" Off ", False), ("no", False)],
)
def test_ort_spinning_setting(
    monkeypatch: pytest.MonkeyPatch, value: str | None, expected: bool
) -> None:
    from embedstack.encoders.backends import ort_spinning

    if value is None:
        monkeypatch.delenv("EMBEDSTACK_ORT_SPINNING", raising=False)
    else:
        monkeypatch.setenv("EMBEDSTACK_ORT_SPINNING", value)
    assert ort_spinning() is expected


def test_session_without_spinning_gives_the_same_vectors(
    onnx_fp32: Encoder, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server's setting (no spinning) changes scheduling only, never the numbers."""
    monkeypatch.setenv("EMBEDSTACK_ORT_SPINNING", "0")
    quiet = Encoder(backend="onnx", threads=1, cache_dir=cache, show_progress=False)
    options = quiet._model.session.get_session_options()  # type: ignore[attr-defined]
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    np.testing.assert_array_equal(quiet.encode(TEXTS), onnx_fp32.encode(TEXTS))
