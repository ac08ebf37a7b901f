"""Export a ``*ForSequenceClassification`` model to ONNX once and cache it with a manifest.

The same recipe as the dense exporter (:mod:`embedstack.encoders.onnx_export`, whose graph
optimizer, int8 quantizer and manifest check are reused), but the graph ends in the
classification head and returns ``logits`` ``(batch, num_labels) float32``. The cache entry
lives under ``<cache_dir>/onnx/rerank-<name>-<weights hash[:16]>/`` and holds ``model.onnx``,
``model.opt.onnx`` (ONNX Runtime's transformer fusions), ``model.int8.onnx`` (dynamic int8,
made on demand) and ``manifest.json``; an entry is reused only when its manifest matches the
weights hash, the format version and the task.

A split cross-encoder (:mod:`embedstack.rerank.split`) exports two graphs instead, under
``rerank-split<layer>-<name>-<hash>/``: ``lower.onnx`` (token ids to the states after the
split layer; inputs ``input_ids``, ``attention_mask``, ``token_type_ids``, ``position_ids``,
output ``states``) and ``upper.onnx`` (joined ``states`` and ``attention_mask`` to
``logits``), with ``lower.int8.onnx`` / ``upper.int8.onnx`` made on demand.
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

__all__ = ["SPLIT_TASK", "TASK", "ensure_rerank_onnx", "ensure_split_onnx"]

logger = logging.getLogger(__name__)

TASK = "sequence-classification"
SPLIT_TASK = "split-sequence-classification"
FILES = {"fp32": "model.opt.onnx", "int8": "model.int8.onnx"}
SPLIT_FILES = {"fp32": ("lower.onnx", "upper.onnx"), "int8": ("lower.int8.onnx", "upper.int8.onnx")}


def _entry_ok(folder: Path, weights: str, task: str = TASK) -> bool:
    if not _manifest_ok(folder, weights):
        return False
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    return bool(manifest.get("task") == task)


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


def _export_split(model_path: Path, layer: int, out_dir: Path) -> dict[str, Any]:
    """``lower.onnx`` and ``upper.onnx`` of a split cross-encoder (eager attention, traced)."""
    torch = require("torch", "torch", "exporting a reranker to ONNX")
    transformers = require("transformers", "torch", "exporting a reranker to ONNX")
    from embedstack.rerank.split import lower_states, upper_logits

    model = transformers.AutoModelForSequenceClassification.from_pretrained(
        model_path, attn_implementation="eager"
    ).eval()

    class _Part(torch.nn.Module):  # type: ignore[name-defined]
        def __init__(self, upper: bool) -> None:
            super().__init__()
            self.inner, self.upper = model, upper  # a submodule: its weights stay weights

        def forward(self, *tensors: Any) -> Any:
            if self.upper:
                return upper_logits(self.inner, layer, *tensors)
            return lower_states(self.inner, layer, dict(zip(lower_names, tensors, strict=True)))

    mask = torch.ones(2, 16, dtype=torch.long)
    mask[1, 9:] = 0  # trace with padding so mask handling is not folded away
    lower_names = ["input_ids", "attention_mask", "token_type_ids", "position_ids"]
    lower_args = (
        torch.full((2, 16), 101, dtype=torch.long),
        mask,
        torch.ones(2, 16, dtype=torch.long),
        torch.arange(16).repeat(2, 1),
    )
    hidden = int(model.config.hidden_size)
    upper_args = (torch.randn(2, 16, hidden), mask)
    seq = {0: "batch", 1: "sequence"}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            _Part(upper=False).eval(),
            lower_args,
            str(out_dir / SPLIT_FILES["fp32"][0]),
            input_names=lower_names,
            output_names=["states"],
            dynamic_axes={**{n: seq for n in lower_names}, "states": seq},
            opset_version=OPSET,
            dynamo=False,
        )
        torch.onnx.export(
            _Part(upper=True).eval(),
            upper_args,
            str(out_dir / SPLIT_FILES["fp32"][1]),
            input_names=["states", "attention_mask"],
            output_names=["logits"],
            dynamic_axes={"states": seq, "attention_mask": seq, "logits": {0: "batch"}},
            opset_version=OPSET,
            dynamo=False,
        )
    return {
        "model_type": str(model.config.model_type),
        "num_labels": int(model.config.num_labels),
        "hidden_size": hidden,
        "split_layer": layer,
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


def _cache_folder(cache_root: Path, prefix: str, name: str, weights: str) -> Path:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[-60:]
    return cache_root / "onnx" / f"{prefix}-{safe}-{weights[:16]}"


def _ensure(
    folder: Path,
    *,
    weights: str,
    task: str,
    targets: tuple[Path, ...],
    export: Any,
    add_variant: Any,
    source: Path,
) -> None:
    """Make ``targets`` exist in the cache entry ``folder``: export into a staging folder
    (``export(staging) -> manifest info``) unless a valid entry exists, add what a variant
    needs (``add_variant(staging)``), write the manifest, publish atomically."""

    def weights_ok() -> bool:
        return _entry_ok(folder, weights, task)

    def ready() -> bool:
        return weights_ok() and all(t.is_file() for t in targets)

    if ready():
        return
    folder.parent.mkdir(parents=True, exist_ok=True)
    logger.info("exporting reranker %s to ONNX under %s (once per weights)", source, folder)
    staging = Path(tempfile.mkdtemp(prefix=".export-", dir=folder.parent))
    try:
        if weights_ok():  # reuse what exists, add the missing variant
            for item in folder.iterdir():
                shutil.copy2(item, staging / item.name)
            info = json.loads((staging / "manifest.json").read_text(encoding="utf-8"))
        else:
            info = export(staging)
        add_variant(staging)
        import onnx
        import onnxruntime

        info.update(
            format_version=ONNX_FORMAT_VERSION,
            task=task,
            weights_sha256=weights,
            source=str(source),
            opset=OPSET,
            onnx=onnx.__version__,
            onnxruntime=onnxruntime.__version__,
            variants=sorted(p.name for p in staging.glob("*.onnx")),
        )
        (staging / "manifest.json").write_text(json.dumps(info, indent=2), encoding="utf-8")
        _publish(staging, folder, ready)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


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
    folder = _cache_folder(cache_root, "rerank", name, weights)

    def export(staging: Path) -> dict[str, Any]:
        info = _export(model_path, staging / "model.onnx")
        if not _optimize(staging / "model.onnx", staging / "model.opt.onnx", info):
            shutil.copy2(staging / "model.onnx", staging / "model.opt.onnx")
        return info

    def add_variant(staging: Path) -> None:
        if variant == "int8" and not (staging / FILES["int8"]).is_file():
            _quantize(staging / FILES["fp32"], staging / FILES["int8"])

    target = folder / FILES[variant]
    _ensure(
        folder,
        weights=weights,
        task=TASK,
        targets=(target,),
        export=export,
        add_variant=add_variant,
        source=model_path,
    )
    return target


def ensure_split_onnx(
    model_path: Path,
    *,
    name: str,
    weights: str,
    cache_root: Path,
    layer: int,
    variant: Literal["fp32", "int8"] = "fp32",
) -> tuple[Path, Path]:
    """Return the cached ``(lower, upper)`` ONNX files of a split cross-encoder
    (:mod:`embedstack.rerank.split`), exporting them if needed. Arguments as
    :func:`ensure_rerank_onnx`, plus the split ``layer``.

    Raises:
        MissingDependency: the export needs torch and transformers (extra ``torch``).
    """
    folder = _cache_folder(cache_root, f"rerank-split{layer}", name, weights)

    def add_variant(staging: Path) -> None:
        if variant != "int8":
            return
        for src, dst in zip(SPLIT_FILES["fp32"], SPLIT_FILES["int8"], strict=True):
            if not (staging / dst).is_file():
                _quantize(staging / src, staging / dst)

    lower, upper = (folder / f for f in SPLIT_FILES[variant])
    _ensure(
        folder,
        weights=weights,
        task=SPLIT_TASK,
        targets=(lower, upper),
        export=lambda staging: _export_split(model_path, layer, staging),
        add_variant=add_variant,
        source=model_path,
    )
    return lower, upper
