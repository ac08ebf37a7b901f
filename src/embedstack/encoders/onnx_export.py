"""Export a Hugging Face encoder to ONNX once, optimize it, and cache it with a manifest.

The cache entry lives under ``<cache_dir>/onnx/<name>-<weights hash[:16]>/`` and holds
``model.onnx`` (exported by torch's exporter), ``model.opt.onnx`` (graph-fused by ONNX
Runtime's transformer optimizer), ``model.int8.onnx`` (dynamic int8 quantization of the
fused graph) and ``manifest.json`` (source weights hash, opset, library versions). An entry
is reused only when its manifest matches the weights hash and format version.

``model.unpadded.int8.onnx`` holds the same int8 weights with the attention fused into ONNX
Runtime's ``MultiHeadAttention`` kernel and the padding mask removed: valid only for batches
without padding, where that kernel runs its CPU flash attention (tiled, never materializing
the sequence x sequence score matrix). The int8 encoder uses it for long unpadded batches
(see :class:`~embedstack.encoders.backends.OnnxModel`); a model whose attention does not fuse
gets none (the manifest records ``"unpadded": false``).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any, Literal, overload

from embedstack.errors import require

__all__ = ["ONNX_FORMAT_VERSION", "ensure_onnx"]

logger = logging.getLogger(__name__)

ONNX_FORMAT_VERSION = 1
OPSET = 17
OPTIMIZABLE = {"bert", "roberta", "xlm-roberta", "distilbert", "mpnet", "electra", "deberta-v2"}
Variant = Literal["fp32", "int8", "int8-unpadded"]
FILES: dict[str, str] = {
    "fp32": "model.opt.onnx",
    "int8": "model.int8.onnx",
    "int8-unpadded": "model.unpadded.int8.onnx",
}


def _manifest(folder: Path) -> dict[str, Any]:
    try:
        manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    return manifest if isinstance(manifest, dict) else {}


def _manifest_ok(folder: Path, weights: str) -> bool:
    manifest = _manifest(folder)
    return bool(
        manifest.get("format_version") == ONNX_FORMAT_VERSION
        and manifest.get("weights_sha256") == weights
    )


def _export(transformer_path: Path, out: Path, trust_remote_code: bool) -> dict[str, Any]:
    torch = require("torch", "torch", "exporting a model to ONNX")
    transformers = require("transformers", "torch", "exporting a model to ONNX")
    import inspect

    model = transformers.AutoModel.from_pretrained(
        transformer_path, attn_implementation="eager", trust_remote_code=trust_remote_code
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
            return self.inner(**dict(zip(names, tensors, strict=True))).last_hidden_state

    wrapped = _Wrapped(model).eval()
    example = torch.ones(2, 16, dtype=torch.long)
    mask = torch.ones(2, 16, dtype=torch.long)
    mask[1, 9:] = 0  # trace with padding so mask handling is not folded away
    inputs = {"input_ids": example * 101, "attention_mask": mask, "token_type_ids": example * 0}
    args = tuple(inputs[n] for n in names)
    axes = {n: {0: "batch", 1: "sequence"} for n in [*names, "last_hidden_state"]}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        try:
            # The TorchScript exporter yields the graph pattern ONNX Runtime fuses into its
            # Attention kernel (the torch.export graph is not fused, and runs ~2x slower).
            torch.onnx.export(
                wrapped,
                args,
                str(out),
                input_names=names,
                output_names=["last_hidden_state"],
                dynamic_axes=axes,
                opset_version=OPSET,
                dynamo=False,
            )
        except Exception:  # noqa: BLE001 - exporter removed or failed: use torch.export
            torch.onnx.export(
                wrapped,
                args,
                str(out),
                input_names=names,
                output_names=["last_hidden_state"],
                dynamic_axes=axes,
                opset_version=OPSET,
                dynamo=True,
                external_data=False,
            )
    return {
        "inputs": names,
        "model_type": str(model.config.model_type),
        "num_heads": int(getattr(model.config, "num_attention_heads", 0)),
        "hidden_size": int(getattr(model.config, "hidden_size", 0)),
        "num_layers": int(getattr(model.config, "num_hidden_layers", 0)),
        "torch": str(torch.__version__),
        "transformers": str(transformers.__version__),
    }


def _optimize(src: Path, dst: Path, info: dict[str, Any], *, multi_head: bool = False) -> bool:
    if info["model_type"] not in OPTIMIZABLE:
        return False
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    options = FusionOptions("bert")
    options.use_multi_head_attention = multi_head
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        optimized = optimize_model(
            str(src),
            model_type="bert",
            num_heads=info["num_heads"],
            hidden_size=info["hidden_size"],
            opt_level=1,
            optimization_options=options,
        )
        optimized.save_model_to_file(str(dst))
    return True


def _without_padding_mask(src: Path, dst: Path, info: dict[str, Any]) -> bool:
    """Write ``src`` fused into ``MultiHeadAttention`` nodes without their padding mask to
    ``dst`` (fp32); False (and nothing written) when the attention does not fuse so."""
    import onnx

    if not _optimize(src, dst, info, multi_head=True):
        return False
    graph = onnx.load(str(dst))
    attention = [n for n in graph.graph.node if n.op_type == "MultiHeadAttention"]
    if not attention or len(attention) != (info.get("num_layers") or len(attention)):
        dst.unlink()
        return False
    for node in attention:
        if len(node.input) > 4:
            node.input[4] = ""  # key_padding_mask: absent selects the flash kernel
    onnx.save(graph, str(dst))
    return True


def _unpadded(src: Path, dst: Path, info: dict[str, Any]) -> bool:
    """Write the int8 graph for unpadded batches to ``dst``; False (and nothing written)
    when the model's attention does not fuse into ``MultiHeadAttention``."""
    fused = dst.with_name("unpadded.fp32.tmp")
    try:
        if not _without_padding_mask(src, fused, info):
            return False
        _quantize(fused, dst)
        return True
    finally:
        fused.unlink(missing_ok=True)


def _quantize(src: Path, dst: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # The quantizer logs through the root logger; a NullHandler keeps `logging.warning` from
    # configuring the root logger of the host application behind its back.
    root = logging.getLogger()
    guard = logging.NullHandler()
    root.addHandler(guard)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import onnx

        quantize_dynamic(
            str(src),
            str(dst),
            weight_type=QuantType.QInt8,
            per_channel=True,
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )
    root.removeHandler(guard)


@overload
def ensure_onnx(
    transformer_path: Path,
    *,
    name: str,
    weights: str,
    cache_root: Path,
    variant: Literal["fp32", "int8"] = "fp32",
    trust_remote_code: bool = False,
) -> Path: ...


@overload
def ensure_onnx(
    transformer_path: Path,
    *,
    name: str,
    weights: str,
    cache_root: Path,
    variant: Literal["int8-unpadded"],
    trust_remote_code: bool = False,
) -> Path | None: ...


def ensure_onnx(
    transformer_path: Path,
    *,
    name: str,
    weights: str,
    cache_root: Path,
    variant: Variant = "fp32",
    trust_remote_code: bool = False,
) -> Path | None:
    """Return the cached ONNX file for these weights, exporting it first if needed.

    Args:
        transformer_path: Folder with the Hugging Face transformer weights.
        name: Human-readable model name used in the cache folder name.
        weights: SHA-256 of the weights (see :func:`~embedstack.encoders.loading.weights_hash`).
        cache_root: Root cache folder (``settings.cache_dir()``).
        variant: ``"fp32"`` (fused graph), ``"int8"`` (dynamic int8 quantization) or
            ``"int8-unpadded"`` (int8, for batches without padding; see the module docstring).
        trust_remote_code: Passed to transformers for models with custom code.

    Returns:
        The file, or None for an ``-unpadded`` variant the model's graph cannot have (the
        ``fp32`` and ``int8`` variants always exist).

    Raises:
        MissingDependency: the export needs torch and transformers (extra ``torch``).
    """
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[-60:]
    folder = cache_root / "onnx" / f"{safe}-{weights[:16]}"
    unpadded = variant.endswith("-unpadded")
    if _manifest_ok(folder, weights):
        if (folder / FILES[variant]).is_file():
            return folder / FILES[variant]
        if unpadded and _manifest(folder).get("unpadded") is False:
            return None
    folder.parent.mkdir(parents=True, exist_ok=True)
    logger.info("exporting %s to ONNX under %s (once per weights)", name, folder)
    staging = Path(tempfile.mkdtemp(prefix=".export-", dir=folder.parent))
    try:
        if _manifest_ok(folder, weights):  # reuse what exists, add the missing variant
            for item in folder.iterdir():
                shutil.copy2(item, staging / item.name)
            info = _manifest(staging)
        else:
            info = _export(transformer_path, staging / "model.onnx", trust_remote_code)
            if not _optimize(staging / "model.onnx", staging / "model.opt.onnx", info):
                shutil.copy2(staging / "model.onnx", staging / "model.opt.onnx")
        if unpadded and not (staging / FILES[variant]).is_file():
            try:
                built = _unpadded(staging / "model.onnx", staging / FILES[variant], info)
            except Exception as exc:  # noqa: BLE001 - an optional speed-up: never block loading
                logger.warning("no unpadded graph for %s: %s", name, exc)
                (staging / FILES[variant]).unlink(missing_ok=True)
                built = False
            info["unpadded"] = built
        if variant == "int8" and not (staging / FILES[variant]).is_file():
            _quantize(staging / "model.opt.onnx", staging / FILES[variant])
        import onnx
        import onnxruntime

        info.update(
            format_version=ONNX_FORMAT_VERSION,
            weights_sha256=weights,
            source=str(transformer_path),
            opset=OPSET,
            onnx=onnx.__version__,
            onnxruntime=onnxruntime.__version__,
            variants=sorted(p.name for p in staging.glob("model*.onnx")),
        )
        (staging / "manifest.json").write_text(json.dumps(info, indent=2), encoding="utf-8")
        for item in staging.iterdir():
            with item.open("rb") as handle:
                os.fsync(handle.fileno())
        backup = folder.with_name(f"{folder.name}.old-{os.getpid()}")
        if folder.exists():
            folder.rename(backup)
        try:
            staging.rename(folder)
        except OSError:  # another process published the same export first
            if not (_manifest_ok(folder, weights) and (folder / FILES[variant]).is_file()):
                raise
            shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(backup, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    path = folder / FILES[variant]
    return path if path.is_file() or not unpadded else None
