"""The ONNX export cache: its layout, its one manifest schema, atomic publication.

Layout, under ``<cache_dir>/onnx/`` (``cache_dir`` is ``settings.cache_dir()``, i.e.
``$EMBEDSTACK_CACHE_DIR``, unless an encoder is given ``cache_dir=``)::

    [<head prefix>-]<name>-<weights hash[:16]>/
        manifest.json               the schema below
        <stem>.onnx                 torch's export of each graph of the head (or a copy
                                    of the folder's own graph, ``Head.shipped``)
        <stem>.opt.onnx             fused by ONNX Runtime's transformer optimizer (when it applies)
        <stem>.int8.onnx            dynamic int8, made on first use
        <stem>.unpadded.int8.onnx   int8 flash-attention graph for unpadded batches (dense)

The manifest (``format_version`` :data:`MANIFEST_VERSION`) records ``task`` (the head),
``weights_sha256``, ``source``, ``opset``, library versions, ``inputs``, the model's shape
(``model_type``, ``num_heads``, ``hidden_size``, ``num_layers``), the head's own facts
(``num_labels``, ``vocab_size``, ``split_layer``...), ``variants`` (the files) and, once
asked for, ``unpadded`` (whether that graph exists). An entry is reused only when the
version, task and weights match; anything else is rebuilt in a staging folder and renamed
into place, so a crash leaves the previous entry. Entries written before this schema (the
dense/reranker ``format_version`` 1 and SPLADE ``export_version`` 1 manifests) are rebuilt
once, with the log line ``rebuilding ONNX cache for <name>: manifest schema changed``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Literal

from embedstack.encoders.runtime import export
from embedstack.encoders.runtime.export import OPSET, Head
from embedstack.encoders.runtime.identity import ModelId
from embedstack.encoders.runtime.int8guard import check_is_current

__all__ = ["MANIFEST_VERSION", "Variant", "cache_folder", "ensure_export", "read_manifest"]

logger = logging.getLogger(__name__)

MANIFEST_VERSION = 2
Variant = Literal["fp32", "int8", "int8-unpadded"]


def cache_folder(cache_root: Path, head: Head, ident: ModelId) -> Path:
    """The cache entry of ``ident``'s weights under ``head``."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in ident.name)[-60:]
    prefix = f"{head.prefix}-" if head.prefix else ""
    return cache_root / "onnx" / f"{prefix}{safe}-{ident.short_hash}"


def read_manifest(folder: Path) -> dict[str, Any]:
    """The entry's manifest, or ``{}`` when missing or unreadable."""
    try:
        manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return manifest if isinstance(manifest, dict) else {}


def _stale(manifest: dict[str, Any], head: Head, weights: str) -> str | None:
    """Why an entry cannot be reused (None: it can)."""
    if not manifest:
        return "no readable manifest"
    if manifest.get("format_version") != MANIFEST_VERSION:
        return "manifest schema changed"
    if manifest.get("task") != head.task:
        return f"it holds a {manifest.get('task')!r} export"
    if manifest.get("weights_sha256") != weights:
        return "the weights changed"
    return None


def _files(folder: Path, head: Head, variant: Variant) -> dict[str, Path]:
    if variant == "fp32":
        return {g.stem: export.fp32_file(folder, g.stem) for g in head.graphs}
    if variant == "int8":
        return {g.stem: folder / f"{g.stem}.int8.onnx" for g in head.graphs}
    stem = head.graphs[0].stem
    return {stem: folder / f"{stem}.unpadded.int8.onnx"}


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


def _probe(head: Head, path: Path, info: dict[str, Any]) -> dict[str, Any] | None:
    """Probe inputs for checking a text-embedding head's int8 graph (None: no check)."""
    from embedstack.encoders.runtime.int8guard import probe_feed

    graph = head.graphs[0]
    tokenizer = path / "tokenizer.json"
    if not head.task.startswith("feature-extraction") or graph.inputs or not tokenizer.is_file():
        return None
    return probe_feed(tokenizer, list(info.get("inputs") or ("input_ids", "attention_mask")))


def ensure_export(
    head: Head,
    path: Path,
    ident: ModelId,
    cache_root: Path,
    variant: Variant = "fp32",
    *,
    trust_remote_code: bool = False,
) -> dict[str, Path] | None:
    """The cached ONNX files (``{graph stem: file}``) of ``ident``'s weights under
    ``head``, exporting (torch needed) or adding the variant first when needed.

    Args:
        head: What the encoder kind runs (:class:`~embedstack.encoders.runtime.export.Head`).
        path: Folder with the Hugging Face weights.
        ident: The weights' identity (its full hash is checked against the manifest).
        cache_root: Root cache folder.
        variant: ``"fp32"``, ``"int8"``, or ``"int8-unpadded"`` (first graph only).

    Returns:
        The files; None for an ``int8-unpadded`` variant the model cannot have.

    Raises:
        MissingDependency: an export needs torch and transformers (extra ``torch``).
    """
    folder = cache_folder(cache_root, head, ident)
    weights = ident.weights_hash
    unpadded = variant == "int8-unpadded"

    def ready() -> bool:
        manifest = read_manifest(folder)
        ok = _stale(manifest, head, weights) is None
        if variant == "int8" and not check_is_current(manifest.get("int8_check")):
            return False  # quantized before int8 was checked with today's probes: redo it once
        return ok and all(f.is_file() for f in _files(folder, head, variant).values())

    manifest = read_manifest(folder)
    reason = _stale(manifest, head, weights)
    if reason is None:
        if ready():
            return _files(folder, head, variant)
        if unpadded and manifest.get("unpadded") is False:
            return None
    elif folder.exists():
        log = logger.warning if reason == "manifest schema changed" else logger.info
        log("rebuilding ONNX cache for %s: %s (%s)", ident.name, reason, folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".export-", dir=folder.parent))
    try:
        if reason is None:  # reuse what exists, add the missing variant
            export.copy_entry(folder, staging)
            info = read_manifest(staging)
        elif head.shipped and not export.has_torch_weights(path):
            info = export.adopt_shipped(head, path, staging)  # the folder's graph: no torch
        else:
            logger.info("exporting %s to ONNX under %s (once per weights)", ident.name, folder)
            info = export.export_head(head, path, staging, trust=trust_remote_code)
        if variant == "int8":
            if not check_is_current(info.get("int8_check")):
                for graph in head.graphs:
                    (staging / f"{graph.stem}.int8.onnx").unlink(missing_ok=True)
            for i, graph in enumerate(head.graphs):
                feed = _probe(head, path, info) if i == 0 else None
                facts = export.add_int8(staging, graph.stem, feed, ident.name)
                if facts and i == 0:
                    info["int8_check"] = facts
                    if facts.get("reduce_range") or facts.get("fp32_matmuls"):
                        # an unpadded graph is plain int8: not for a model that needed more
                        (staging / f"{graph.stem}.unpadded.int8.onnx").unlink(missing_ok=True)
                        info["unpadded"] = False
        if unpadded and not _files(staging, head, variant)[head.graphs[0].stem].is_file():
            info["unpadded"] = export.add_unpadded(staging, head.graphs[0].stem, info, ident.name)
        import onnx
        import onnxruntime

        info.update(
            format_version=MANIFEST_VERSION,
            task=head.task,
            weights_sha256=weights,
            source=str(path),
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
    files = _files(folder, head, variant)
    if unpadded and not all(f.is_file() for f in files.values()):
        return None
    return files
