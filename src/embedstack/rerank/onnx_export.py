"""Export a ``*ForSequenceClassification`` model to ONNX once and cache it with a manifest.

The same recipe as the dense exporter (:mod:`embedstack.encoders.onnx_export`, whose graph
optimizer, int8 quantizer and manifest check are reused), but the graph ends in the
classification head and returns ``logits`` ``(batch, num_labels) float32``. The cache entry
lives under ``<cache_dir>/onnx/rerank-<name>-<weights hash[:16]>/`` and holds ``model.onnx``,
``model.opt.onnx`` (ONNX Runtime's transformer fusions), ``model.int8.onnx`` (dynamic int8,
made on demand) and ``manifest.json``; an entry is reused only when its manifest matches the
weights hash, the format version and the task.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any, Literal

from embedstack.encoders.onnx_export import (
    ONNX_FORMAT_VERSION,
    OPSET,
    _manifest_ok,
    _optimize,
    _quantize,
)
from embedstack.errors import require

__all__ = ["TASK", "ensure_rerank_onnx"]

logger = logging.getLogger(__name__)

TASK = "sequence-classification"
FILES = {"fp32": "model.opt.onnx", "int8": "model.int8.onnx"}


def _entry_ok(folder: Path, weights: str) -> bool:
    if not _manifest_ok(folder, weights):
        return False
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    return bool(manifest.get("task") == TASK)


def _export(model_path: Path, out: Path) -> dict[str, Any]:
    torch = require("torch", "torch", "exporting a reranker to ONNX")
    transformers = require("transformers", "torch", "exporting a reranker to ONNX")
    import inspect

    model = transformers.AutoModelForSequenceClassification.from_pretrained(
        model_path, attn_implementation="eager"
    ).eval()
    accepts = inspect.signature(model.forward).parameters
    names = ["input_ids", "attention_mask"]
    if "token_type_ids" in accepts and int(getattr(model.config, "type_vocab_size", 0) or 0):
        names.append("token_type_ids")

    class _Wrapped(torch.nn.Module):  # type: ignore[name-defined]
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, *tensors: Any) -> Any:
            return self.inner(**dict(zip(names, tensors, strict=True))).logits

    wrapped = _Wrapped(model).eval()
    ids = torch.full((2, 16), 101, dtype=torch.long)
    mask = torch.ones(2, 16, dtype=torch.long)
    mask[1, 9:] = 0  # trace with padding so mask handling is not folded away
    types = torch.zeros(2, 16, dtype=torch.long)
    types[:, 8:] = 1
    inputs = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
    args = tuple(inputs[n] for n in names)
    axes: dict[str, dict[int, str]] = {n: {0: "batch", 1: "sequence"} for n in names}
    axes["logits"] = {0: "batch"}
    common: dict[str, Any] = {
        "input_names": names,
        "output_names": ["logits"],
        "dynamic_axes": axes,
        "opset_version": OPSET,
    }
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        try:
            # TorchScript export: the graph pattern ONNX Runtime fuses (see the dense exporter)
            torch.onnx.export(wrapped, args, str(out), dynamo=False, **common)
        except Exception:  # noqa: BLE001 - exporter removed or failed: use torch.export
            torch.onnx.export(wrapped, args, str(out), dynamo=True, external_data=False, **common)
    return {
        "inputs": names,
        "model_type": str(model.config.model_type),
        "num_labels": int(model.config.num_labels),
        "num_heads": int(getattr(model.config, "num_attention_heads", 0)),
        "hidden_size": int(getattr(model.config, "hidden_size", 0)),
        "torch": str(torch.__version__),
        "transformers": str(transformers.__version__),
    }


def _publish(staging: Path, folder: Path, ready: Any) -> None:
    """Move ``staging`` to ``folder`` atomically; tolerate a concurrent identical export."""
    for item in staging.iterdir():
        with item.open("rb") as handle:
            os.fsync(handle.fileno())
    backup = folder.with_name(f"{folder.name}.old-{os.getpid()}")
    if folder.exists():
        folder.rename(backup)
    try:
        staging.rename(folder)
    except OSError:  # another process published the same export first
        if not ready():
            raise
        shutil.rmtree(staging, ignore_errors=True)
    shutil.rmtree(backup, ignore_errors=True)


def ensure_rerank_onnx(
    model_path: Path,
    *,
    name: str,
    weights: str,
    cache_root: Path,
    variant: Literal["fp32", "int8"] = "fp32",
) -> Path:
    """Return the cached ONNX file of a sequence-classification model, exporting it if needed.

    Args:
        model_path: Folder with the Hugging Face ``*ForSequenceClassification`` weights.
        name: Human-readable model name used in the cache folder name.
        weights: SHA-256 of the weights (:func:`~embedstack.encoders.loading.weights_hash`).
        cache_root: Root cache folder (``settings.cache_dir()``).
        variant: ``"fp32"`` (fused graph) or ``"int8"`` (dynamic int8 quantization).

    Returns:
        Path of the ``.onnx`` file, whose output ``logits`` is ``(batch, num_labels)``.

    Raises:
        MissingDependency: the export needs torch and transformers (extra ``torch``).
    """
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[-60:]
    folder = cache_root / "onnx" / f"rerank-{safe}-{weights[:16]}"
    target = folder / FILES[variant]

    def ready() -> bool:
        return _entry_ok(folder, weights) and target.is_file()

    if ready():
        return target
    folder.parent.mkdir(parents=True, exist_ok=True)
    logger.info("exporting reranker %s to ONNX under %s (once per weights)", name, folder)
    staging = Path(tempfile.mkdtemp(prefix=".export-", dir=folder.parent))
    try:
        if _entry_ok(folder, weights):  # reuse what exists, add the missing variant
            for item in folder.iterdir():
                shutil.copy2(item, staging / item.name)
            info = json.loads((staging / "manifest.json").read_text(encoding="utf-8"))
        else:
            info = _export(model_path, staging / "model.onnx")
            if not _optimize(staging / "model.onnx", staging / "model.opt.onnx", info):
                shutil.copy2(staging / "model.onnx", staging / "model.opt.onnx")
        if variant == "int8" and not (staging / FILES["int8"]).is_file():
            _quantize(staging / FILES["fp32"], staging / FILES["int8"])
        import onnx
        import onnxruntime

        info.update(
            format_version=ONNX_FORMAT_VERSION,
            task=TASK,
            weights_sha256=weights,
            source=str(model_path),
            opset=OPSET,
            onnx=onnx.__version__,
            onnxruntime=onnxruntime.__version__,
            variants=sorted(p.name for p in staging.glob("model*.onnx")),
        )
        (staging / "manifest.json").write_text(json.dumps(info, indent=2), encoding="utf-8")
        _publish(staging, folder, ready)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target
