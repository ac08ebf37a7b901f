"""Static models distilled from our own transformer models, and model2vec folders converted.

Model2Vec (Tulkens & van Dongen 2024, "Model2Vec: Fast State-of-the-Art Static Embeddings")
turns a sentence transformer into a token-lookup table: every token of the teacher's
vocabulary goes through the teacher alone (``[CLS] token [SEP]``), its output is mean-pooled,
the ``(vocab, hidden)`` matrix is reduced by PCA, and each row is scaled by a SIF weight
``a / (a + p(token))`` (Arora et al. 2017) whose token frequencies ``p`` are estimated from the
token's rank with Zipf's law (the vocabulary is roughly in frequency order). A text's vector
is then the mean of its tokens' rows, L2-normalized: one gather per token, no transformer.

The distillation itself is model2vec's (``model2vec[distill]==0.7.0``, the ``distill`` extra:
the last release whose distill extra does not cap ``transformers``), run in this process on
the teacher's local folder, offline. Its result is written as embedstack's static folder
(:mod:`embedstack.encoders.static`), which the dense :class:`~embedstack.encoders.Encoder`
loads on its ``"static"`` backend:

* ``model.safetensors``: ``embeddings``, ``(vocab, dims)`` float16 or float32, the SIF
  weights already multiplied into the rows;
* ``tokenizer.json``: model2vec's tokenizer without its post-processor (model2vec encodes with
  ``add_special_tokens=False``), truncation or padding;
* ``distill.json``: the teacher, its weights hash, the method and its parameters, the time.

What model2vec 0.7.0's ``StaticModel.encode`` does, and so what this folder does:

* **The unknown token counts.** ``StaticModel`` drops token ids equal to its
  ``unk_token_id``, which it reads from ``tokenizer.model.unk_token``. A distilled model's
  tokenizer is a ``Unigram`` one (model2vec rewrites the vocabulary), and ``tokenizers``'
  ``Unigram`` has no ``unk_token`` attribute (only ``unk_id``), so ``unk_token_id`` is None and
  nothing is dropped: an unknown character is looked up as ``[UNK]``, whose row is the
  teacher's output for ``[CLS] [UNK] [SEP]`` like any other token's, and a text of unknown
  characters only gets that row's direction, not a zero vector. The row is therefore kept as
  it is. Where model2vec *does* drop the unknown token (a converted folder whose tokenizer
  model names ``unk_token``: WordPiece, WordLevel, BPE), its row is written as zeros: in a
  mean that changes only the length, which L2 normalization removes; a text of unknown
  tokens alone is a zero vector in both. (A ``"normalize": false`` folder, not normalized
  by model2vec either, keeps the direction; its mean is shorter than model2vec's by the
  share of unknown tokens.) Either way the decision is model2vec's own rule, read from the
  same attribute.
* **Normalization.** A converted folder is L2-normalized when its ``config.json`` says
  ``"normalize": true``; model2vec treats a missing key as false, and so does
  :func:`convert_model2vec`.
* **Truncation.** model2vec cuts a text to ``max_length * median_token_length`` *characters*
  (the median length of the vocabulary's token strings) before tokenizing, then to
  ``max_length`` tokens; embedstack reads the first ``max_length`` tokens. The two agree
  unless a text is longer than that many characters and the character cut leaves fewer than
  ``max_length`` tokens; then embedstack reads more of the text than model2vec does.

The table never travels through model2vec's ``save_pretrained``: under ``safetensors`` 0.8
its NumPy writer stores a Fortran-ordered array's memory as if it were C-ordered
(safetensors issue #825), and the table sklearn's PCA returns is Fortran-ordered, so a model
distilled with model2vec 0.7.0 and saved comes back with its values reordered, in model2vec
as anywhere else. :func:`write_static_folder` writes C-ordered copies. A folder model2vec
0.7.0 saved that way is converted as it is, scrambled values included: the bytes carry no
sign of it (distill again, with this module, instead).

:func:`convert_model2vec` writes the same folder from a folder model2vec saved
(``StaticModel.save_pretrained``: ``embeddings``, optional ``weights`` and ``mapping``).

Writes are all-or-nothing: the folder is built in a temporary sibling and renamed into place
at the end; an existing destination is refused, and a failure leaves nothing behind.

Example:
    >>> from embedstack import Encoder
    >>> from embedstack.encoders.distill import distill_static
    >>> folder = distill_static("all-MiniLM-L6-v2", "models/minilm-static")  # doctest: +SKIP
    >>> Encoder(folder).encode(["a cat"]).shape  # doctest: +SKIP
    (1, 256)
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np

from embedstack.encoders.convert.files import check_new_folder, publish_folder, write_json
from embedstack.encoders.convert.safetensors_np import read_safetensors
from embedstack.encoders.loading import load_model_config
from embedstack.encoders.runtime.folder import open_model
from embedstack.encoders.runtime.heads import is_onnx_only
from embedstack.encoders.static import is_static_folder, load_table, write_static_folder
from embedstack.errors import InvalidInput, ModelNotFound, require

__all__ = [
    "MANIFEST",
    "MODEL2VEC_REQUIREMENT",
    "DistillOptions",
    "convert_model2vec",
    "distill_static",
    "is_model2vec_folder",
]

MANIFEST = "distill.json"
MODEL2VEC_REQUIREMENT = "model2vec==0.7.0"
MODEL2VEC_ARCHITECTURE = "StaticModel"


@dataclass(frozen=True)
class DistillOptions:
    """How to distill a static model.

    Attributes:
        dims: PCA components kept (the static model's dimension); None keeps the teacher's
            width (PCA still rotates and centres the table).
        pca: Apply PCA at all; False keeps the raw pooled token outputs (``dims`` must then
            be None).
        sif_coefficient: ``a`` of the SIF weight ``a / (a + p)``; None weighs every token 1.
        dtype: Storage type of the table (``float16`` halves the file, as model2vec does).
        max_length: Tokens read per text (model2vec's default: 512).
    """

    dims: int | None = 256
    pca: bool = True
    sif_coefficient: float | None = 1e-4
    dtype: Literal["float16", "float32"] = "float16"
    max_length: int = 512

    def __post_init__(self) -> None:
        if self.dims is not None and (type(self.dims) is not int or self.dims < 1):
            raise InvalidInput(f"--dims must be a positive integer, got {self.dims!r}")
        if not self.pca and self.dims is not None:
            raise InvalidInput("--dims reduces with PCA: drop --no-pca, or drop --dims")
        if self.sif_coefficient is not None and not 0 < self.sif_coefficient < 1:
            raise InvalidInput(f"the SIF coefficient must be in (0, 1), got {self.sif_coefficient}")
        if self.dtype not in ("float16", "float32"):
            raise InvalidInput(f"dtype must be float16 or float32, got {self.dtype!r}")
        if type(self.max_length) is not int or self.max_length < 1:
            raise InvalidInput(f"max_length must be a positive integer, got {self.max_length!r}")


def is_model2vec_folder(path: str | os.PathLike[str]) -> bool:
    """Whether ``path/config.json`` is a model2vec ``StaticModel``'s."""
    try:
        config = json.loads((Path(path) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and (
        config.get("model_type") == "model2vec"
        or MODEL2VEC_ARCHITECTURE in (config.get("architectures") or [])
    )


def distill_static(
    source: str | os.PathLike[str],
    out: str | os.PathLike[str],
    options: DistillOptions | None = None,
    *,
    announce: Callable[[str], None] | None = None,
) -> Path:
    """Distill the transformer model ``source`` into a new static folder ``out``.

    Args:
        source: Registry name, Hugging Face id or local folder of a dense transformer model
            (PyTorch weights and a fast ``tokenizer.json``), found offline as everywhere.
        out: The folder to create; it must not exist.
        options: PCA, SIF and storage settings (:class:`DistillOptions` defaults: 256 PCA
            dims, SIF 1e-4, float16).
        announce: Called with one line saying what is about to run, once every check has
            passed (so a bad source or ``out`` never announces work it does not do).

    Returns:
        ``out``, loadable with ``Encoder(out)`` (``"static"`` backend).

    Raises:
        InvalidInput: ``out`` exists; the source is not a dense transformer model (a static,
            sparse or ONNX-only model, no weights, no tokenizer); ``dims`` exceeds the
            teacher's width or vocabulary.
        ModelNotFound: the source is nowhere on this machine.
        MissingDependency: torch, transformers or model2vec is not installed (the
            ``distill`` extra).
    """
    options = options or DistillOptions()
    target = _check_out(out)
    folder, name, languages, hidden = _teacher(source)
    if options.dims is not None and options.dims > hidden:
        raise InvalidInput(f"--dims {options.dims} exceeds the teacher's {hidden} dimensions")
    distill_mod = require("model2vec.distill", "distill", "distilling static models")
    model, tokenizer = _load_teacher(folder, source)
    vocab = len(tokenizer.get_vocab())
    if options.dims is not None and options.dims >= vocab:
        raise InvalidInput(f"--dims {options.dims} must be below the teacher's {vocab} tokens")
    pca_dims: Any = (options.dims or "auto") if options.pca else None
    if announce is not None:
        announce(f"distilling {source}: every vocabulary token through the teacher, once")

    def build(staging: Path) -> dict[str, Any]:
        started = time.perf_counter()
        try:
            static = distill_mod.distill_from_model(
                model=model, tokenizer=tokenizer, device="cpu", pca_dims=pca_dims,
                sif_coefficient=options.sif_coefficient, quantize_to="float32",
            )  # fmt: skip
        except ValueError as exc:  # model2vec's refusals: an unusable vocabulary
            raise InvalidInput(f"model2vec cannot distill {source}: {exc}") from exc
        seconds = time.perf_counter() - started
        # static.unk_token_id is the id model2vec's encode drops: None for the Unigram
        # tokenizer it writes, so the [UNK] row stays as distilled (module docstring)
        rows = _write(staging, static.embedding, static.weights, None, static.tokenizer.to_str(),
                      static.unk_token_id, options, f"distilled from {name}")  # fmt: skip
        return {"teacher": name, "teacher_path": str(folder),
                "teacher_weights_sha256": _weights_hash(folder), "languages": languages,
                "method": "model2vec distill (token outputs, PCA, Zipf SIF weights)",
                "model2vec": _version("model2vec"), "transformers": _version("transformers"),
                "options": asdict(options), "vocab_size": rows,
                "distill_seconds": round(seconds, 2)}  # fmt: skip

    return _publish(target, build)


def convert_model2vec(
    source: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    dtype: Literal["float16", "float32"] = "float16",
    max_length: int = 512,
    announce: Callable[[str], None] | None = None,
) -> Path:
    """Write a new static folder ``out`` from a folder model2vec saved.

    ``announce`` is called with one line saying what is about to run, once every check has
    passed.

    Raises:
        InvalidInput: ``out`` exists, or ``source`` is not a model2vec folder (its
            ``config.json``, ``model.safetensors`` with ``embeddings``, ``tokenizer.json``).
    """
    options = DistillOptions(dims=None, pca=False, dtype=dtype, max_length=max_length)
    target = _check_out(out)
    folder = Path(source)
    if not is_model2vec_folder(folder):
        raise InvalidInput(f"{folder} is not a model2vec folder (config.json: StaticModel)")
    try:
        tensors = read_safetensors(folder / "model.safetensors")
        tokenizer_json = (folder / "tokenizer.json").read_text(encoding="utf-8")
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, InvalidInput) as exc:
        raise InvalidInput(f"{folder} is not a complete model2vec folder: {exc}") from exc
    if "embeddings" not in tensors:
        raise InvalidInput(f"{folder}/model.safetensors has no 'embeddings' tensor")
    from tokenizers import Tokenizer

    tok = Tokenizer.from_str(tokenizer_json)
    unk = getattr(tok.model, "unk_token", None)  # StaticModel.__init__'s rule, to the letter
    unk_id = tok.token_to_id(unk) if isinstance(unk, str) else None
    normalize = bool(config.get("normalize", False))  # StaticModel's default when unset
    if announce is not None:
        announce(f"{source} is a model2vec folder: converting it (no distillation)")

    def build(staging: Path) -> dict[str, Any]:
        rows = _write(staging, tensors["embeddings"], tensors.get("weights"),
                      tensors.get("mapping"), tokenizer_json, unk_id, options,
                      f"model2vec folder {folder.name}", normalize=normalize)  # fmt: skip
        return {"converted_from": str(folder.resolve()), "model2vec_config": config,
                "options": asdict(options), "vocab_size": rows}  # fmt: skip

    return _publish(target, build)


# -- the pieces ------------------------------------------------------------------------------


def _check_out(out: str | os.PathLike[str]) -> Path:
    return check_new_folder(out, "distill")


def _teacher(source: str | os.PathLike[str]) -> tuple[Path, str, list[str], int]:
    """The teacher's transformer folder, name, languages and hidden size, checked."""
    found = open_model(source)
    if is_static_folder(found.path) or is_model2vec_folder(found.path):
        raise InvalidInput(f"{source} is already a static model: distill needs a transformer "
                           "(a model2vec folder converts with convert_model2vec)")  # fmt: skip
    if found.spec is not None and found.spec.kind != "dense":
        raise InvalidInput(f"{found.name!r} is a {found.spec.kind} model, not a dense one")
    config = load_model_config(found.path, found.spec, body_only=True)  # token states only
    folder = config.transformer_path
    if is_onnx_only(folder) or not any(
        (folder / f).is_file() for f in ("model.safetensors", "pytorch_model.bin")
    ):
        raise InvalidInput(f"{source} has no PyTorch weights (model.safetensors or "
                           "pytorch_model.bin): distill runs the transformer itself")  # fmt: skip
    if not (folder / "tokenizer.json").is_file():
        raise InvalidInput(f"{folder} has no tokenizer.json (a fast tokenizer is needed)")
    if not config.dim:
        raise InvalidInput(f"{folder}/config.json gives no hidden size: not a transformer")
    languages = list(found.spec.languages) if found.spec is not None else []
    return folder, found.name, languages, int(config.dim)


def _load_teacher(folder: Path, source: str | os.PathLike[str]) -> tuple[Any, Any]:
    require("torch", "distill", "distilling static models")
    transformers = require("transformers", "distill", "distilling static models")
    try:
        model = transformers.AutoModel.from_pretrained(str(folder))
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder), use_fast=True)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InvalidInput(f"{source} is not a transformer model transformers loads: "
                           f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
                           ) from exc  # fmt: skip
    if not getattr(tokenizer, "is_fast", False):
        raise InvalidInput(f"{source} has no fast tokenizer")
    return model.eval(), tokenizer


def _write(
    staging: Path,
    embeddings: Any,
    weights: Any,
    mapping: Any,
    tokenizer_json: str,
    unk_id: int | None,
    options: DistillOptions,
    source: str,
    *,
    normalize: bool = True,
) -> int:
    """Write the static folder into ``staging``; returns its number of rows."""
    vectors = np.asarray(embeddings, dtype=np.float32)
    if vectors.ndim != 2 or not vectors.size or not np.isfinite(vectors).all():
        raise InvalidInput(f"the distilled table is not a finite 2-D array: {vectors.shape}")
    if mapping is not None:  # model2vec's vocabulary quantization: token id -> cluster row
        vectors = vectors[np.asarray(mapping, dtype=np.int64)]
    if weights is not None:  # the SIF weights of model2vec 0.7, kept apart from the rows
        vectors = vectors * np.asarray(weights, dtype=np.float32)[: len(vectors), None]
    if unk_id is not None and 0 <= unk_id < len(vectors):
        vectors[unk_id] = 0.0
    config = json.loads(tokenizer_json)
    config.update(post_processor=None, truncation=None, padding=None)
    write_static_folder(staging, vectors.astype(options.dtype),
                        json.dumps(config, ensure_ascii=False), max_length=options.max_length,
                        normalize=normalize, source=source)  # fmt: skip
    return len(vectors)


def _publish(target: Path, build: Callable[[Path], dict[str, Any]]) -> Path:
    """Build the folder in a temporary sibling of ``target``, check it loads, write the
    manifest, and rename it into place (:func:`publish_folder`: nothing is left on failure)."""

    def fill(staging: Path) -> None:
        facts = build(staging)
        table = load_table(staging)  # the folder loads: ModelNotFound otherwise
        if not is_static_folder(staging):
            raise ModelNotFound(f"{staging} is not a static folder after writing it")
        facts.update(
            dims=int(table.shape[1]), written_at=datetime.now(UTC).isoformat(timespec="seconds")
        )
        write_json(staging / MANIFEST, facts)

    publish_folder(target, fill, command="distill")
    return target


def _weights_hash(folder: Path) -> str:
    from embedstack.encoders.runtime.folder import weights_hash

    return weights_hash(folder)


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return ""
