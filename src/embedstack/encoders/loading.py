"""Read a sentence-transformers folder's config: pooling, normalization, lengths, prompts.

Finding the folder itself (registry name, Hugging Face id or path; ``HF_HUB_OFFLINE``) and
hashing its weights belong to the model runtime (:mod:`embedstack.encoders.runtime.folder`);
:func:`resolve_model_dir` and :func:`weights_hash` are re-exported here for callers that
import them from this module.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from embedstack._typing import Pooling
from embedstack.encoders.registry import ModelSpec
from embedstack.encoders.runtime.folder import resolve_model_dir, weights_hash
from embedstack.errors import InvalidInput, ModelNotFound

__all__ = ["ModelConfig", "load_model_config", "resolve_model_dir", "weights_hash"]


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
    symmetric_prefix: str = ""


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
        symmetric_prefix=spec.symmetric_prefix if spec else "",
    )
