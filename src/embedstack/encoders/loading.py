"""Read a sentence-transformers folder's config: pooling, normalization, lengths, prompts.

``modules.json`` is read strictly: a Transformer (or embedstack's static table), Pooling,
``Dense`` layers after pooling (:mod:`embedstack.encoders.st_dense`), Dropout (nothing at
inference) and a final Normalize are understood; any other module (LayerNorm,
WeightedLayerPooling, CNN, LSTM, StaticEmbedding, a Router, ...) raises
:class:`~embedstack.errors.InvalidInput` naming it, since vectors computed without it would
be silently wrong. Callers that run only the transformer body (ColBERT, training bases)
pass ``body_only=True``.

Finding the folder itself (registry name, Hugging Face id or path; ``HF_HUB_OFFLINE``) and
hashing its weights belong to the model runtime (:mod:`embedstack.encoders.runtime.folder`);
:func:`resolve_model_dir` and :func:`weights_hash` are re-exported here for callers that
import them from this module.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from embedstack._typing import Pooling
from embedstack.encoders.registry import ModelSpec
from embedstack.encoders.runtime.folder import resolve_model_dir, weights_hash
from embedstack.encoders.st_dense import DenseLayer, read_dense
from embedstack.errors import DimensionMismatch, InvalidInput, ModelNotFound

__all__ = [
    "ModelConfig",
    "folder_spec",
    "load_model_config",
    "resolve_model_dir",
    "weights_hash",
]


STATIC_MODULE = "embedstack.encoders.static"
"""The ``modules.json`` type of a static folder's table (:mod:`embedstack.encoders.static`)."""


@dataclass(frozen=True)
class ModelConfig:
    """What a model folder says about how to run it (sentence-transformers conventions).

    ``dim`` is the width of the final embedding (the last Dense layer's ``out_features``
    when the folder has any), ``hidden_size`` the transformer's; ``dense`` lists the Dense
    layers applied, in order, between pooling and normalization.
    """

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
    hidden_size: int | None = None
    dense: tuple[DenseLayer, ...] = ()

    @property
    def head_files(self) -> tuple[str, ...]:
        """The Dense layers' files relative to :attr:`transformer_path`, to hash into the
        model's identity with its weights (empty without Dense layers)."""
        return tuple(os.path.relpath(file, self.transformer_path)
                     for layer in self.dense for file in layer.files)  # fmt: skip


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


@dataclass(frozen=True)
class _Modules:
    """What ``modules.json`` says (see :func:`_read_modules`)."""

    transformer_path: Path
    pooling: Pooling | None
    normalize: bool
    dense: tuple[DenseLayer, ...]


def _unsupported(where: str, kind: str) -> InvalidInput:
    name = kind.rpartition(".")[2]
    sparse = "; a sparse model runs with SparseEncoder"
    hints = {"StaticEmbedding": "; a model2vec folder converts with `embedstack models "
                                "distill` (convert_model2vec)",
             "MLMTransformer": sparse, "SpladePooling": sparse,
             "Dense": "; a ColBERT model runs with LateInteractionEncoder"}  # fmt: skip
    hint = hints.get(name, "")
    return InvalidInput(f"{where}: module {kind!r} is not supported (embedstack runs "
                        "Transformer, Pooling, Dense after pooling, Dropout and Normalize); "
                        f"vectors computed without it would be wrong{hint}")  # fmt: skip


def _read_modules(path: Path, body_only: bool) -> _Modules:
    """Walk ``modules.json`` in order: the body, pooling, Dense layers, normalization.

    With ``body_only`` only the body and pooling matter: other modules are not checked.

    Raises:
        ModelNotFound: an unreadable ``modules.json`` or Dense module.
        InvalidInput: a module embedstack does not run, or one in an order it cannot run.
    """
    file = path / "modules.json"
    try:
        modules = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelNotFound(f"cannot read {file}: {exc}") from exc
    if not isinstance(modules, list) or not all(isinstance(m, dict) for m in modules):
        raise ModelNotFound(f"{file} is not a list of modules")
    transformer_path, normalize, pooled = path, False, False
    pooling: Pooling | None = None
    dense: list[DenseLayer] = []
    for index, module in enumerate(modules):
        kind = str(module.get("type", ""))
        name = kind.rpartition(".")[2]
        sub = path / str(module.get("path", ""))
        ours = kind.startswith("sentence_transformers.")
        where = f"{file}: module {index} ({module.get('path')!r})"
        if name == "Transformer" or (body_only and name.endswith("Transformer")):
            transformer_path = sub
        elif name == "Pooling" or (body_only and name.endswith("Pooling")):
            pooled = True
            if name == "Pooling" and (sub / "config.json").is_file():
                pooling = _pooling_from(_read_json(sub / "config.json"), sub)
        elif name == "Normalize":
            normalize = True
        elif body_only or kind == STATIC_MODULE or (ours and name == "Dropout"):
            continue  # Dropout does nothing at inference
        elif ours and name == "Dense":
            if not pooled or normalize:
                place = "before pooling (on token vectors)" if not pooled else "after Normalize"
                raise InvalidInput(f"{where}: a Dense module {place} is not supported")
            dense.append(read_dense(sub))
        else:
            raise _unsupported(where, kind)
    return _Modules(transformer_path, pooling, normalize, tuple(dense))


def _check_widths(dense: tuple[DenseLayer, ...], hidden: int | None) -> None:
    width = hidden
    for layer in dense:
        if width is not None and layer.in_features != width:
            raise DimensionMismatch(f"{layer.path}/config.json: in_features is "
                                    f"{layer.in_features}, but the vectors before it are "
                                    f"{width}-d")  # fmt: skip
        width = layer.out_features


def load_model_config(
    path: Path, spec: ModelSpec | None = None, *, body_only: bool = False
) -> ModelConfig:
    """Read modules.json, the pooling config, sentence_bert_config.json and prompts.

    Values the folder states win over the registry entry, except prefixes, which the registry
    owns when the folder declares none. A plain Hugging Face folder (no modules.json) takes
    pooling and normalization from the registry entry, or mean pooling + L2 normalization.

    Args:
        path: The model folder.
        spec: Its registry entry, if any.
        body_only: The caller runs only the transformer body (a ColBERT encoder, a training
            base): modules after pooling are neither checked nor read, ``dense`` is empty and
            ``dim`` is the hidden size.

    Raises:
        ModelNotFound: no ``config.json``, or an unreadable module file.
        InvalidInput: a module embedstack does not run (see the module docstring).
        DimensionMismatch: Dense layers whose widths do not chain.
    """
    if not (path / "config.json").is_file():
        raise ModelNotFound(f"{path} has no config.json: it is not a Hugging Face model folder")
    hf_config = _read_json(path / "config.json")
    transformer_path = path
    pooling: Pooling = spec.pooling if spec else "mean"
    normalize = spec.normalize if spec else True
    dense: tuple[DenseLayer, ...] = ()
    if (path / "modules.json").is_file():
        modules = _read_modules(path, body_only)
        transformer_path, normalize, dense = (
            modules.transformer_path,
            modules.normalize,
            modules.dense,
        )
        pooling = modules.pooling or pooling
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
    hidden_value = hf_config.get("hidden_size") or hf_config.get("d_model")
    hidden = int(hidden_value) if hidden_value else None
    _check_widths(dense, hidden)
    dim = dense[-1].out_features if dense else hidden
    return ModelConfig(
        path=path,
        transformer_path=transformer_path,
        pooling=pooling,
        normalize=normalize,
        max_length=max_length,
        do_lower_case=bool(st_config.get("do_lower_case", False)),
        query_prefix=query_prefix,
        document_prefix=document_prefix,
        dim=dim or (spec.dim if spec else None),
        model_type=str(hf_config.get("model_type", "")),
        symmetric_prefix=str(prompts.get("symmetric", ""))
        or (spec.symmetric_prefix if spec else ""),
        matryoshka_dims=matryoshka,
        hidden_size=hidden,
        dense=dense,
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
    """A registry entry for a local model folder, from what the folder says (dimension of
    the final embedding, Dense layers included; length, pooling, prefixes, Matryoshka dims),
    to :func:`register_model` it so that ``pick`` and ``embedstack models`` know it.

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
