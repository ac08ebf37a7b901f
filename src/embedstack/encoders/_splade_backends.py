"""SPLADE inference backends: a padded batch in, ``(batch, vocab)`` term weights out.

Both backends compute SPLADE v2 max pooling (Formal et al. 2021, "SPLADE v2"):
``w_j = max_i attention_i * log(1 + ReLU(logit_ij))`` over the tokens ``i`` of a text.

* ``torch`` is the reference: ``transformers.AutoModelForMaskedLM`` and the formula as
  written.
* ``onnx`` runs an export whose graph already ends in the pooling, so ONNX Runtime returns
  ``(batch, vocab)`` instead of handing ``(batch, seq, vocab)`` logits (a 256-token text
  makes 31 MB of them) to numpy. Because ``log1p ∘ ReLU`` is non-decreasing, the graph takes
  the max of the masked logits first and applies ``log1p(ReLU(·))`` to ``(batch, vocab)``
  only — the same numbers, computed on ``seq`` times fewer values (the ONNX == torch test
  checks it). Exports are cached under ``<cache>/onnx/splade-<name>-<weights[:16]>/`` with a
  manifest, like :func:`embedstack.encoders.onnx_export.ensure_onnx`.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from embedstack._typing import FloatArray
from embedstack.encoders.backends import _threads, ort_session
from embedstack.errors import InvalidInput, require

__all__ = ["SpladeOptions", "ensure_splade_onnx", "make_splade_backend"]

logger = logging.getLogger(__name__)

EXPORT_VERSION = 1
OPSET = 17
Batch = dict[str, np.ndarray]


@dataclass(frozen=True)
class SpladeOptions:
    """What a SPLADE backend needs: the model folder, its identity, cache and threads."""

    path: Path
    name: str
    weights: str
    cache_dir: Path
    threads: int | None = None


def _load_mlm(path: Path, eager: bool = False) -> tuple[Any, Any, list[str]]:
    torch = require("torch", "torch", "the torch SPLADE backend and ONNX export")
    transformers = require("transformers", "torch", "the torch SPLADE backend and ONNX export")
    kwargs = {"attn_implementation": "eager"} if eager else {}
    model = transformers.AutoModelForMaskedLM.from_pretrained(path, **kwargs).eval()
    import inspect

    names = ["input_ids", "attention_mask"]
    accepts = inspect.signature(model.forward).parameters
    if "token_type_ids" in accepts and int(getattr(model.config, "type_vocab_size", 0) or 0):
        names.append("token_type_ids")
    return torch, model, names


class TorchSplade:
    """The reference: MLM logits, then ``max_i mask_i * log(1 + ReLU(logits_i))``."""

    def __init__(self, options: SpladeOptions) -> None:
        self._torch, self.model, names = _load_mlm(options.path)
        self.input_names = tuple(names)
        self.threads = _threads(options.threads)

    def __call__(self, batch: Batch) -> FloatArray:
        torch = self._torch
        previous = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            with torch.inference_mode():
                feed = {n: torch.from_numpy(batch[n]) for n in self.input_names}
                logits = self.model(**feed).logits.float()
                mask = feed["attention_mask"].unsqueeze(-1).to(logits.dtype)
                weights = torch.amax(torch.log1p(torch.relu(logits)) * mask, dim=1)
            return np.ascontiguousarray(weights.numpy(), dtype=np.float32)
        finally:
            torch.set_num_threads(previous)


def _export(path: Path, out: Path, pooled: bool) -> dict[str, Any]:
    torch, model, names = _load_mlm(path, eager=True)

    class _Splade(torch.nn.Module):  # type: ignore[name-defined]
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, *tensors: Any) -> Any:
            feed = dict(zip(names, tensors, strict=True))
            logits = self.inner(**feed).logits
            if not pooled:
                return logits
            mask = feed["attention_mask"].unsqueeze(-1).to(logits.dtype)
            # padding logits become 0, which ReLU would floor them to anyway
            return torch.log1p(torch.relu(torch.amax(logits * mask, dim=1)))

    wrapped = _Splade(model).eval()
    ids = torch.ones(2, 16, dtype=torch.long)
    mask = torch.ones(2, 16, dtype=torch.long)
    mask[1, 9:] = 0  # trace with padding so the mask is not folded away
    inputs = {"input_ids": ids * 5, "attention_mask": mask, "token_type_ids": ids * 0}
    output = "weights" if pooled else "logits"
    axes = {n: {0: "batch", 1: "sequence"} for n in names}
    axes[output] = {0: "batch"} if pooled else {0: "batch", 1: "sequence"}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            wrapped,
            tuple(inputs[n] for n in names),
            str(out),
            input_names=names,
            output_names=[output],
            dynamic_axes=axes,
            opset_version=OPSET,
            dynamo=False,
        )
    return {
        "inputs": names,
        "pooled": pooled,
        "model_type": str(model.config.model_type),
        "num_heads": int(getattr(model.config, "num_attention_heads", 0)),
        "hidden_size": int(getattr(model.config, "hidden_size", 0)),
        "vocab_size": int(model.config.vocab_size),
        "torch": str(torch.__version__),
    }


def _optimize(src: Path, dst: Path, info: dict[str, Any]) -> bool:
    """Fuse attention / LayerNorm / GELU with ONNX Runtime's BERT optimizer (BERT only)."""
    if info["model_type"] != "bert":
        return False
    try:
        from onnxruntime.transformers.optimizer import optimize_model

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            optimized = optimize_model(
                str(src),
                model_type="bert",
                num_heads=info["num_heads"],
                hidden_size=info["hidden_size"],
                opt_level=1,
            )
            optimized.save_model_to_file(str(dst))
    except Exception as exc:  # noqa: BLE001 - the unfused graph is correct, only slower
        logger.info("ONNX optimization of the SPLADE export failed (%s); using it unfused", exc)
        return False
    return True


def _manifest_ok(folder: Path, weights: str, pooled: bool) -> bool:
    try:
        info = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return False
    return bool(
        info.get("export_version") == EXPORT_VERSION
        and info.get("weights_sha256") == weights
        and info.get("pooled") == pooled
        and (folder / "model.onnx").is_file()
    )


def ensure_splade_onnx(options: SpladeOptions, *, pooled: bool = True) -> Path:
    """The cached SPLADE ONNX file for these weights, exported (torch needed) on first use.

    Args:
        options: model folder, name, weights hash and cache root.
        pooled: end the graph in SPLADE max pooling (``(batch, vocab)`` output); False
            exports the raw ``(batch, seq, vocab)`` logits (only for measurements).

    Raises:
        MissingDependency: the export needs torch and transformers (extra ``torch``).
    """
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in options.name)[-60:]
    tag = "splade" if pooled else "splade-logits"
    folder = options.cache_dir / "onnx" / f"{tag}-{safe}-{options.weights[:16]}"
    if _manifest_ok(folder, options.weights, pooled):
        return folder / "model.onnx"
    folder.parent.mkdir(parents=True, exist_ok=True)
    logger.info("exporting %s to ONNX under %s (once per weights)", options.name, folder)
    staging = Path(tempfile.mkdtemp(prefix=".export-", dir=folder.parent))
    try:
        info = _export(options.path, staging / "raw.onnx", pooled)
        if not _optimize(staging / "raw.onnx", staging / "model.onnx", info):
            shutil.copy2(staging / "raw.onnx", staging / "model.onnx")
        (staging / "raw.onnx").unlink()
        info.update(
            export_version=EXPORT_VERSION,
            weights_sha256=options.weights,
            source=str(options.path),
            opset=OPSET,
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
            if not _manifest_ok(folder, options.weights, pooled):
                raise
            shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(backup, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return folder / "model.onnx"


class OnnxSplade:
    """ONNX Runtime over the cached export that ends in SPLADE pooling."""

    def __init__(self, options: SpladeOptions, *, pooled: bool = True) -> None:

        file = options.path / "splade.onnx"  # a folder may ship its own pooled export
        if not (pooled and file.is_file()):
            file = ensure_splade_onnx(options, pooled=pooled)
        self.pooled = pooled
        self.session = ort_session(file, options.threads)
        self.input_names = tuple(i.name for i in self.session.get_inputs())

    def __call__(self, batch: Batch) -> FloatArray:
        out = np.asarray(self.session.run(None, {n: batch[n] for n in self.input_names})[0])
        if self.pooled:
            return np.ascontiguousarray(out, dtype=np.float32)
        # logits export (measurement only): the same pooling, in numpy
        masked = out * batch["attention_mask"][..., None].astype(np.float32)
        return np.log1p(np.maximum(masked.max(axis=1), 0)).astype(np.float32)


def make_splade_backend(name: str, options: SpladeOptions) -> Any:
    """``"onnx"`` or ``"torch"``; anything else is an :class:`InvalidInput`."""
    if name == "onnx":
        return OnnxSplade(options)
    if name == "torch":
        return TorchSplade(options)
    raise InvalidInput(f"unknown backend {name!r}; choose 'onnx' or 'torch'")
