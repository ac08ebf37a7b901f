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
from embedstack.encoders.runtime import (  # noqa: E402
    HIDDEN_STATES,
    MANIFEST_VERSION,
    OPSET,
    ModelId,
    ensure_export,
)

ONNX_FORMAT_VERSION = MANIFEST_VERSION

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


def ensure_onnx(
    path: Path, *, name: str, weights: str, cache_root: Path, variant: Any = "fp32"
) -> Any:
    """The dense head's first graph, through the runtime (None: no such variant)."""
    files = ensure_export(HIDDEN_STATES, path, ModelId(name, weights), cache_root, variant)
    return None if files is None else files["model"]


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


@pytest.fixture(scope="session")
def onnx_int8(cache: Path) -> Encoder:
    return Encoder(backend="onnx", quantize="int8", threads=1, cache_dir=cache, show_progress=False)


def test_int8_close_to_fp32(onnx_fp32: Encoder, onnx_int8: Encoder, cache: Path) -> None:
    assert (_entry(cache) / "model.int8.onnx").is_file()
    cos = np.einsum("ij,ij->i", onnx_int8.encode(TEXTS), onnx_fp32.encode(TEXTS))
    assert cos.min() >= 0.98


# Eight texts far beyond 256 tokens: one unpadded batch of 8 x 256 tokens.
LONG = [" ".join(f"gene{i * j} regulates pathway {j % 11} in tissue" for j in range(90))
        for i in range(1, 9)]  # fmt: skip


def test_int8_long_unpadded_batches_run_the_flash_graph(
    onnx_fp32: Encoder, onnx_int8: Encoder
) -> None:
    model = onnx_int8._model
    assert model.unpadded_path is not None and model.unpadded_path.is_file()  # type: ignore[attr-defined]
    flash = onnx_int8.encode(LONG)
    assert model._unpadded is not None  # type: ignore[attr-defined]
    assert np.einsum("ij,ij->i", flash, onnx_fp32.encode(LONG)).min() >= 0.98
    saved, model.unpadded_path = model.unpadded_path, None  # type: ignore[attr-defined]
    try:
        padded_graph = onnx_int8.encode(LONG)
    finally:
        model.unpadded_path = saved  # type: ignore[attr-defined]
    assert np.einsum("ij,ij->i", flash, padded_graph).min() >= 0.99


@pytest.mark.parametrize(
    ("rows", "width", "padded", "flash"),
    [(8, 256, False, True), (16, 64, False, True), (8, 256, True, False),
     (1, 256, False, False), (32, 32, False, False)],
    ids=["long", "narrowest", "padded", "single-text", "too-narrow"],
)  # fmt: skip
def test_int8_routes_only_long_unpadded_batches_to_the_flash_graph(
    onnx_int8: Encoder, rows: int, width: int, padded: bool, flash: bool
) -> None:
    model = onnx_int8._model
    mask = np.ones((rows, width), np.int64)
    if padded:
        mask[-1, width // 2 :] = 0
    session, _ = model._session_for({"attention_mask": mask})  # type: ignore[attr-defined]
    assert (session is not model.session) is flash  # type: ignore[attr-defined]


def test_unpadded_graph_drops_only_the_padding_mask(tiny_bert: Path, tmp_path: Path) -> None:
    import onnx

    from embedstack.encoders.runtime import ort_session

    weights = "cd" * 32
    path = ensure_onnx(
        tiny_bert, name="tiny", weights=weights, cache_root=tmp_path, variant="int8-unpadded"
    )
    assert path is not None and path.name == "model.unpadded.int8.onnx"
    attention = [n for n in onnx.load(str(path)).graph.node if "Attention" in n.op_type]
    assert [n.op_type for n in attention] == ["MultiHeadAttention"] * 2
    assert all(list(n.input[:4]) == [x for x in n.input[:4] if x] for n in attention)
    assert all(len(n.input) <= 4 or n.input[4] == "" for n in attention)
    manifest = json.loads((path.parent / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["unpadded"] is True and path.name in manifest["variants"]
    stamp = path.stat().st_mtime_ns
    again = ensure_onnx(
        tiny_bert, name="tiny", weights=weights, cache_root=tmp_path, variant="int8-unpadded"
    )
    assert again == path and path.stat().st_mtime_ns == stamp

    # On a batch without padding it computes what the padded int8 graph computes.
    padded = ensure_onnx(tiny_bert, name="tiny", weights=weights, cache_root=tmp_path,
                         variant="int8")  # fmt: skip
    ids = np.random.default_rng(0).integers(5, 1000, size=(3, 40))
    batch = {"input_ids": ids, "attention_mask": np.ones_like(ids),
             "token_type_ids": np.zeros_like(ids)}  # fmt: skip
    outputs = []
    for file in (padded, path):
        session = ort_session(file, 1)
        outputs.append(session.run(None, {i.name: batch[i.name] for i in session.get_inputs()})[0])
    a, b = (o.reshape(-1, o.shape[-1]) for o in outputs)
    cos = np.einsum("ij,ij->i", a, b) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cos.min() >= 0.999


def _optimizer_fails(*args: Any, **kwargs: Any) -> bool:
    raise RuntimeError("fusion crashed")


@pytest.mark.parametrize(
    ("target", "replacement"),
    [("_optimize", lambda *args, **kwargs: False), ("_without_padding_mask", _optimizer_fails)],
    ids=["unfusable", "fusion-crashes"],
)
def test_unfusable_model_gets_no_unpadded_graph_and_no_retry(
    tiny_bert: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    target: str,
    replacement: Callable[..., bool],
) -> None:
    from embedstack.encoders.runtime import export as onnx_export

    monkeypatch.setattr(onnx_export, target, replacement)
    weights = "ef" * 32
    first = ensure_onnx(
        tiny_bert, name="tiny", weights=weights, cache_root=tmp_path, variant="int8-unpadded"
    )
    assert first is None
    manifest_file = _entry(tmp_path) / "manifest.json"
    assert json.loads(manifest_file.read_text(encoding="utf-8"))["unpadded"] is False
    stamp = manifest_file.stat().st_mtime_ns
    again = ensure_onnx(
        tiny_bert, name="tiny", weights=weights, cache_root=tmp_path, variant="int8-unpadded"
    )
    assert again is None and manifest_file.stat().st_mtime_ns == stamp
    assert not list(_entry(tmp_path).glob("*unpadded*"))


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


OLD_MANIFESTS = {
    # the dense / reranker exporter's manifest before the one runtime (format_version 1)
    "dense-v1": lambda w: {"format_version": 1, "weights_sha256": w, "opset": OPSET,
                           "variants": ["model.onnx", "model.opt.onnx"]},
    # the SPLADE exporter's manifest (export_version 1, no format_version)
    "splade-v1": lambda w: {"export_version": 1, "weights_sha256": w, "pooled": True},
}  # fmt: skip


@pytest.mark.parametrize("old", sorted(OLD_MANIFESTS))
def test_old_schema_cache_is_rebuilt_with_a_log_line(
    tiny_bert: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture, old: str
) -> None:
    weights = "9a" * 32
    first = ensure_onnx(tiny_bert, name="tiny", weights=weights, cache_root=tmp_path)
    manifest_file = first.parent / "manifest.json"
    manifest_file.write_text(json.dumps(OLD_MANIFESTS[old](weights)), encoding="utf-8")
    stamp = first.stat().st_mtime_ns
    with caplog.at_level("INFO", logger="embedstack"):
        again = ensure_onnx(tiny_bert, name="tiny", weights=weights, cache_root=tmp_path)
    assert again == first and again.stat().st_mtime_ns != stamp
    rebuilt = json.loads(manifest_file.read_text(encoding="utf-8"))
    assert rebuilt["format_version"] == MANIFEST_VERSION
    assert rebuilt["task"] == HIDDEN_STATES.task and rebuilt["weights_sha256"] == weights
    lines = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("rebuilding ONNX cache for tiny: manifest schema changed" in m for m in lines)


def test_entry_of_another_head_is_not_reused(tiny_bert: Path, tmp_path: Path) -> None:
    """One manifest schema for every head: the task recorded decides, not the folder."""
    weights = "5e" * 32
    first = ensure_onnx(tiny_bert, name="tiny", weights=weights, cache_root=tmp_path)
    manifest_file = first.parent / "manifest.json"
    manifest = json.loads(manifest_file.read_text(encoding="utf-8"))
    manifest_file.write_text(json.dumps({**manifest, "task": "splade"}), encoding="utf-8")
    ensure_onnx(tiny_bert, name="tiny", weights=weights, cache_root=tmp_path)
    assert json.loads(manifest_file.read_text(encoding="utf-8"))["task"] == HIDDEN_STATES.task


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, True), ("1", True), ("0", False), ("false", False), (" Off ", False), ("no", False)],
)
def test_ort_spinning_setting(
    monkeypatch: pytest.MonkeyPatch, value: str | None, expected: bool
) -> None:
    from embedstack.encoders.runtime import ort_spinning

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
