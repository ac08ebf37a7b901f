"""Resolve a model name or path to a local folder and read its sentence-transformers config.

Resolution order: an existing local folder; a registry entry's bundled package (offline);
the Hugging Face cache (``HF_HOME``/``HF_HUB_CACHE``); a download from the Hub unless
``HF_HUB_OFFLINE`` is set. Whatever fails becomes :class:`~embedstack.errors.ModelNotFound`
listing every place that was looked at and how to provide the weights.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from embedstack._typing import Pooling
from embedstack.encoders.registry import ModelSpec, find_model
from embedstack.errors import InvalidInput, ModelNotFound

__all__ = ["ModelConfig", "load_model_config", "resolve_model_dir", "weights_hash"]

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.onnx")


def _offline() -> bool:
    value = os.environ.get("HF_HUB_OFFLINE", "") or os.environ.get("TRANSFORMERS_OFFLINE", "")
    return value.strip().lower() in {"1", "true", "yes", "on"}


def _download(repo_id: str, looked: list[str]) -> Path | None:
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.constants import HF_HUB_CACHE
    except ImportError:  # pragma: no cover - huggingface_hub ships with tokenizers
        looked.append("huggingface_hub is not installed")
        return None
    looked.append(f"Hugging Face cache {HF_HUB_CACHE}")
    try:
        return Path(snapshot_download(repo_id, local_files_only=True))
    except Exception:  # noqa: BLE001 - any cache miss means "not here"
        pass
    if _offline():
        looked.append("Hub download skipped: HF_HUB_OFFLINE is set")
        return None
    looked.append(f"https://huggingface.co/{repo_id}")
    try:
        return Path(snapshot_download(repo_id, etag_timeout=10))
    except Exception as exc:  # noqa: BLE001 - network, auth, 404: all mean "not available"
        looked[-1] += f" ({type(exc).__name__}: {str(exc).splitlines()[0][:160]})"
        return None


def resolve_model_dir(name_or_path: str | os.PathLike[str]) -> tuple[Path, ModelSpec | None]:
    """Find the local folder holding a model's weights.

    Args:
        name_or_path: A registry name, a Hugging Face id, or a local folder.

    Returns:
        The folder and the registry entry (None when the model is not registered).

    Raises:
        ModelNotFound: the weights are nowhere to be found; the message lists where we looked.
    """
    text = os.fspath(name_or_path)
    if not text.strip():
        raise InvalidInput("model name is empty: pass a registry name, Hugging Face id or folder")
    path = Path(text).expanduser()
    if path.is_dir():
        return path.resolve(), find_model(text)
    spec = find_model(text)
    looked: list[str] = []
    if spec is not None:
        bundled = spec.bundled_path()
        if bundled is not None:
            return bundled, spec
        if spec.bundled:
            looked.append(f"bundled package {spec.bundled.split(':')[0]} (not installed)")
    repo_id = spec.source if spec is not None else text
    looks_like_path = text.startswith(("/", ".", "~", "\\")) or text.count("/") > 1
    if spec is not None or ("/" in repo_id and not looks_like_path):
        found = _download(repo_id, looked)
        if found is not None:
            return found, spec
    else:
        looked.append(f"local folder {path.resolve()} (does not exist)")
    raise ModelNotFound(
        f"model {text!r} not found. Looked in: {'; '.join(looked) or 'nowhere'}. Provide the "
        "weights by passing a local sentence-transformers folder, by copying the model into "
        "the Hugging Face cache (HF_HOME), or by running once with network access; "
        "`embedstack models` lists the registered names"
    )


@dataclass(frozen=True)
class ModelConfig:
    """What a model folder says about how to run it (sentence-transformers conventions)."""

    path: Path
    transformer_path: Path
    pooling: Pooling
    normalize: bool
    max_length: int
    do_lower_case: bool
    query_prefix: str
    document_prefix: str
    dim: int | None
    model_type: str


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelNotFound(f"cannot read {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ModelNotFound(f"{path} is not a JSON object")
    return data


def _pooling_from(config: dict[str, Any], where: Path) -> Pooling:
    if config.get("pooling_mode_cls_token"):
        return "cls"
    if config.get("pooling_mode_lasttoken"):
        return "last"
    if config.get("pooling_mode_mean_tokens"):
        return "mean"
    modes = [k for k, v in config.items() if k.startswith("pooling_mode") and v]
    raise InvalidInput(f"{where}: pooling {modes} is not supported (mean, cls and last are)")


def load_model_config(path: Path, spec: ModelSpec | None = None) -> ModelConfig:
    """Read modules.json, the pooling config, sentence_bert_config.json and prompts.

    Values the folder states win over the registry entry, except prefixes, which the registry
    owns when the folder declares none. A plain Hugging Face folder (no modules.json) takes
    pooling and normalization from the registry entry, or mean pooling + L2 normalization.
    """
    if not (path / "config.json").is_file():
        raise ModelNotFound(f"{path} has no config.json: it is not a Hugging Face model folder")
    hf_config = _read_json(path / "config.json")
    transformer_path = path
    pooling: Pooling = spec.pooling if spec else "mean"
    normalize = spec.normalize if spec else True
    modules_file = path / "modules.json"
    if modules_file.is_file():
        modules = json.loads(modules_file.read_text(encoding="utf-8"))
        types = [str(m.get("type", "")) for m in modules]
        normalize = any(t.endswith("Normalize") for t in types)
        for module in modules:
            kind = str(module.get("type", ""))
            sub = path / str(module.get("path", ""))
            if kind.endswith("Transformer"):
                transformer_path = sub
            elif kind.endswith("Pooling") and (sub / "config.json").is_file():
                pooling = _pooling_from(_read_json(sub / "config.json"), sub)
    st_config: dict[str, Any] = {}
    for name in ("sentence_bert_config.json", "sentence_xlnet_config.json"):
        if (transformer_path / name).is_file():
            st_config = _read_json(transformer_path / name)
            break
    positions = int(hf_config.get("max_position_embeddings", 512))
    max_length = int(st_config.get("max_seq_length") or (spec.max_length if spec else positions))
    prompts: dict[str, Any] = {}
    if (path / "config_sentence_transformers.json").is_file():
        prompts = _read_json(path / "config_sentence_transformers.json").get("prompts") or {}
    query_prefix = str(prompts.get("query", "")) or (spec.query_prefix if spec else "")
    document_prefix = str(prompts.get("document", prompts.get("passage", ""))) or (
        spec.document_prefix if spec else ""
    )
    hidden = hf_config.get("hidden_size") or hf_config.get("d_model")
    return ModelConfig(
        path=path,
        transformer_path=transformer_path,
        pooling=pooling,
        normalize=normalize,
        max_length=max_length,
        do_lower_case=bool(st_config.get("do_lower_case", False)),
        query_prefix=query_prefix,
        document_prefix=document_prefix,
        dim=int(hidden) if hidden else (spec.dim if spec else None),
        model_type=str(hf_config.get("model_type", "")),
    )


def weights_hash(path: Path, extra: tuple[str, ...] = ()) -> str:
    """SHA-256 over the folder's weight and config files, identifying the exact weights.

    ``extra`` names further files of the folder to hash when present (e.g. a separate
    ColBERT head); a folder without them hashes as before.
    """
    digest = hashlib.sha256()
    found = False
    for name in (*WEIGHT_FILES, "config.json", "tokenizer.json", *extra):
        file = path / name
        if not file.is_file():
            continue
        found = found or name in WEIGHT_FILES
        digest.update(name.encode())
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    if not found:
        raise ModelNotFound(f"{path} holds no weights ({', '.join(WEIGHT_FILES)})")
    return digest.hexdigest()
