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

__all__ = [
    "ModelConfig",
    "folder_spec",
    "load_model_config",
    "resolve_model_dir",
    "weights_hash",
]


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
    matryoshka_dims: tuple[int, ...] = ()


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelNotFound(f"cannot read {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ModelNotFound(f"{path} is not a JSON object")
    return data


def _pooling_from(config: dict[str, Any], where: Path) -> Pooling:
    mode = config.get("pooling_mode")  # sentence-transformers >= 6 saves one string
    if isinstance(mode, str):
        named: dict[str, Pooling] = {"mean": "mean", "cls": "cls", "lasttoken": "last"}
        if mode in named:
            return named[mode]
        raise InvalidInput(f"{where}: pooling {mode!r} is not supported (mean, cls and last are)")
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
    max_length = int(st_config.get("max_seq_length") or _tokenizer_length(transformer_path)
                     or (spec.max_length if spec else positions))  # fmt: skip
    prompts: dict[str, Any] = {}
    matryoshka = spec.matryoshka_dims if spec else ()
    if (path / "config_sentence_transformers.json").is_file():
        st_model = _read_json(path / "config_sentence_transformers.json")
        prompts = st_model.get("prompts") or {}
        matryoshka = _matryoshka(st_model, path) or matryoshka
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
        matryoshka_dims=matryoshka,
    )


def _tokenizer_length(folder: Path) -> int | None:
    """``model_max_length`` of the tokenizer config when the folder has no
    ``max_seq_length`` (sentence-transformers >= 6 keeps it there); None when absent or
    the "unlimited" sentinel transformers writes."""
    file = folder / "tokenizer_config.json"
    if not (folder / "sentence_bert_config.json").is_file() or not file.is_file():
        return None
    value = _read_json(file).get("model_max_length")
    return value if type(value) is int and 0 < value < 1_000_000 else None


def _matryoshka(st_model: dict[str, Any], path: Path) -> tuple[int, ...]:
    """The ``matryoshka_dims`` a trained folder records (``embedstack train embedder``)."""
    dims = st_model.get("matryoshka_dims") or []
    if not isinstance(dims, list) or not all(type(d) is int and d > 0 for d in dims):
        raise ModelNotFound(f"{path}/config_sentence_transformers.json: matryoshka_dims must "
                            f"be a list of positive ints, got {dims!r}")  # fmt: skip
    return tuple(dims)


def folder_spec(path: str | Path, name: str | None = None) -> ModelSpec:
    """A registry entry for a local model folder, from what the folder says (dimension,
    length, pooling, prefixes, Matryoshka dims), to :func:`register_model` it so that ``pick``
    and ``embedstack models`` know it.

    Example:
        >>> from embedstack import register_model
        >>> register_model(folder_spec("models/scifact-minilm"))  # doctest: +SKIP
    """
    folder = Path(path).expanduser().resolve()
    config = load_model_config(folder)
    if config.dim is None:
        raise ModelNotFound(f"{folder}/config.json does not give the model's hidden size")
    return ModelSpec(name or folder.name, str(folder), config.dim, config.max_length,
                     config.pooling, config.normalize, config.query_prefix,
                     config.document_prefix, matryoshka_dims=config.matryoshka_dims,
                     bundled=None)  # fmt: skip
