"""A PCA rotation baked into a dense model, so that its vectors truncate well.

Truncating a vector to its first K dimensions keeps whatever those dimensions happen to hold.
Principal component analysis (Pearson 1901; Jolliffe 2002, "Principal Component Analysis")
orders them instead: rotate each vector onto the principal axes of a corpus's document
vectors, by decreasing variance, and the first K dimensions are the K-dimensional view that
keeps the most of the spread. sentence-transformers' own dimensionality-reduction example
appends the components as a ``Dense`` layer; :func:`rotate_model` does the same, with three
differences that keep the model unchanged at full size:

* the rotation is **square** (``dim x dim``) and **orthogonal**, so no full-dimension cosine
  or dot product changes (``(Rx)·(Ry) = x·y``);
* the mean is subtracted for the fit only, never when encoding (no bias);
* each axis's sign is fixed (its largest component positive), so the same vectors give the
  same rotation bit for bit.

The output is a copy of the source folder with one more sentence-transformers ``Dense``
module (``in = out = dim``, no bias, identity activation, the rotation as ``linear.weight``)
after Pooling and any existing Dense, before Normalize; since ``normalize(R h) = R
normalize(h)``, its vectors are the source's vectors times ``R^T``. embedstack's
:class:`~embedstack.encoders.Encoder` (every backend) and sentence-transformers both load it.
What the source's registry entry owned and a folder can say (prefixes, max length, pooling,
normalization, Matryoshka dims) is written into the folder; ``rotation.json`` records the
source, the sample, the seed and the variance of each axis.

Example:
    >>> from embedstack.encoders.rotate import rotate_model
    >>> texts = [doc["text"] for doc in docs]  # doctest: +SKIP
    >>> rotate_model("all-MiniLM-L6-v2", "models/minilm-pca", texts)  # doctest: +SKIP
    RotationResult(out=PosixPath('models/minilm-pca'), dim=384, n_texts=5183, ...)
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from embedstack._typing import FloatArray
from embedstack.encoders.base import validate_texts
from embedstack.encoders.convert.files import check_new_folder, publish_folder, write_json
from embedstack.encoders.convert.safetensors_np import write_safetensors
from embedstack.encoders.loading import ModelConfig, load_model_config
from embedstack.encoders.registry import find_model
from embedstack.encoders.runtime.folder import ModelFolder, open_model
from embedstack.encoders.runtime.heads import is_onnx_only
from embedstack.encoders.st_dense import read_dense
from embedstack.encoders.static import is_static_folder
from embedstack.errors import InvalidInput, ModelNotFound

__all__ = ["MANIFEST", "RotationResult", "fit_rotation", "rotate_model", "sample_texts"]

MANIFEST = "rotation.json"
METHOD = ("PCA rotation: SVD of the centred document vectors, rows = principal axes by "
          "decreasing variance, square and orthogonal, no centring or bias when encoding, "
          "each axis's largest component positive")  # fmt: skip
DENSE_TYPE = "sentence_transformers.models.Dense"
ST_TYPES = {"Transformer": "sentence_transformers.models.Transformer",
            "Pooling": "sentence_transformers.models.Pooling",
            "Normalize": "sentence_transformers.models.Normalize"}  # fmt: skip
IDENTITY = "torch.nn.modules.linear.Identity"
CHUNK = 256  # texts encoded between two progress calls


@dataclass(frozen=True)
class RotationResult:
    """What :func:`rotate_model` wrote.

    Attributes:
        out: The new model folder.
        dim: Width of the vectors (unchanged by the rotation).
        n_texts: Texts the rotation was fitted on (the sample).
        n_read: Texts read from the input (the sample was drawn from these).
        module: The new Dense module's sub-folder.
        variance: ``(dim,)`` variance of each rotated axis on the sample, non-increasing.
    """

    out: Path
    dim: int
    n_texts: int
    n_read: int
    module: str
    variance: tuple[float, ...]


def sample_texts(texts: Iterable[str], sample: int, seed: int) -> tuple[list[str], int]:
    """A uniform sample of at most ``sample`` texts, in input order, and how many were read.

    Reservoir sampling (Vitter 1985, Algorithm R) with ``numpy.random.default_rng(seed)``:
    memory holds ``sample`` texts whatever the input's length, and the same input and seed
    give the same sample.
    """
    rng = np.random.default_rng(seed)
    kept: list[tuple[int, str]] = []
    n = 0
    for n, text in enumerate(texts, start=1):
        if len(kept) < sample:
            kept.append((n, text))
        else:
            slot = int(rng.integers(n))
            if slot < sample:
                kept[slot] = (n, text)
    kept.sort()
    return [text for _, text in kept], n


def fit_rotation(vectors: FloatArray) -> tuple[FloatArray, FloatArray]:
    """The PCA rotation of ``vectors`` ``(n, dim)``, ``n >= dim``.

    Returns:
        ``(rotation, variance)``: ``(dim, dim)`` float32 orthogonal matrix whose rows are the
        principal axes (centred for the fit only) by decreasing variance, each row's largest
        component positive; ``(dim,)`` float64 variance of each axis on ``vectors``.

    Raises:
        InvalidInput: fewer rows than columns (the trailing axes would be arbitrary).
    """
    x = np.asarray(vectors, dtype=np.float64)
    n, dim = x.shape
    if n < dim:
        raise InvalidInput(f"the rotation of {dim}-d vectors needs at least {dim} distinct "
                           f"texts; got {n}")  # fmt: skip
    centred = x - x.mean(axis=0, keepdims=True)
    _, singular, vt = np.linalg.svd(centred, full_matrices=False)
    lead = np.argmax(np.abs(vt), axis=1)
    signs = np.where(vt[np.arange(dim), lead] < 0, -1.0, 1.0)
    rotation = vt * signs[:, None]
    return rotation.astype(np.float32), singular**2 / max(n - 1, 1)


def rotate_model(
    source: str | os.PathLike[str],
    out: str | os.PathLike[str],
    texts: Iterable[str],
    *,
    sample: int = 10_000,
    seed: int = 0,
    backend: str = "onnx",
    threads: int | None = None,
    announce: Callable[[str], None] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> RotationResult:
    """Write ``out``: the dense model ``source`` with a PCA rotation fitted on ``texts``.

    Args:
        source: Registry name, Hugging Face id or folder of a dense bi-encoder (found offline
            as everywhere).
        out: The folder to create; it must not exist or be empty.
        texts: Documents; a sample of them is encoded as documents (the model's document
            prefix applied, as :meth:`Encoder.encode_documents` does).
        sample: At most this many texts are encoded (a seeded uniform sample, see
            :func:`sample_texts`); at least the model's dimension are needed.
        seed: Seed of the sample.
        backend: Encoder backend used for the fit (``"onnx"`` or ``"torch"``).
        threads: Inference threads (None: every CPU available).
        announce: Called with one line saying what is about to run, once every check has
            passed.
        progress: Called with ``(texts encoded, texts to encode)`` as the sample is encoded.

    Returns:
        What was written (:class:`RotationResult`).

    Raises:
        InvalidInput: ``out`` exists and is not empty; the source is not a dense bi-encoder
            (SPLADE, static or ONNX-only model); fewer distinct sample texts than dimensions;
            ``sample`` below 1; a blank or non-string text.
        ModelNotFound: the source is nowhere on this machine.
    """
    if type(sample) is not int or sample < 1:
        raise InvalidInput(f"--sample must be a positive integer, got {sample!r}")
    if type(seed) is not int:
        raise InvalidInput(f"--seed must be an integer, got {seed!r}")
    target = check_new_folder(out, "rotate", allow_empty=True)
    found, config = _source(source)
    dim = int(config.dim or 0)
    if sample < dim:
        raise InvalidInput(f"--sample {sample} is below the model's {dim} dimensions: the "
                           f"rotation needs at least {dim} texts")  # fmt: skip
    chosen, n_read = sample_texts(texts, sample, seed)
    chosen = validate_texts(chosen)
    distinct = len(set(chosen))
    if distinct < dim:
        raise InvalidInput(f"{found.name} makes {dim}-d vectors: the rotation needs at least "
                           f"{dim} distinct texts, got {distinct} (of {n_read} read)")  # fmt: skip
    if announce is not None:
        announce(f"rotating {found.name}: encoding {len(chosen)} of {n_read} texts as documents")
    from embedstack.encoders.dense import Encoder

    encoder = Encoder(found.path if found.spec is None else found.name, backend=backend,
                      threads=threads, show_progress=False)  # fmt: skip
    vectors = _encode(encoder, chosen, progress)
    rotation, variance = fit_rotation(vectors)
    facts = {"method": METHOD, "source": found.name, "source_path": str(found.path),
             "source_id": str(encoder.identity), "n_texts": len(chosen), "n_read": n_read,
             "sample": sample, "seed": seed, "dim": dim, "backend": encoder.backend_name,
             "source_matryoshka_dims": list(config.matryoshka_dims),
             "variance": [round(float(v), 8) for v in variance]}  # fmt: skip

    def build(staging: Path) -> str:
        module = _write(staging, found, config, rotation, facts)
        _verify(staging, config, rotation)
        return module

    module = publish_folder(target, build, command="rotate", allow_empty=True)
    return RotationResult(target, dim, len(chosen), n_read, module, tuple(map(float, variance)))


# -- the pieces ------------------------------------------------------------------------------


def _source(source: str | os.PathLike[str]) -> tuple[ModelFolder, ModelConfig]:
    """The source's folder and config, refused unless it is a dense transformer bi-encoder."""
    text = os.fspath(source)
    spec = find_model(text) if not Path(text).expanduser().is_dir() else None
    if spec is not None and spec.kind != "dense":
        raise InvalidInput(f"{spec.name!r} is a {spec.kind} (SPLADE) model, not a dense "
                           "bi-encoder: rotate needs dense vectors")  # fmt: skip
    if spec is not None and spec.factory is not None and not spec.fetch:
        raise InvalidInput(f"{spec.name!r} is built in code, not a model folder to rotate")
    found = open_model(source)
    path = found.path
    if is_static_folder(path) or _is_model2vec(path):
        raise InvalidInput(f"{source} is a static (token lookup) model, not a transformer "
                           "bi-encoder: rotate writes a sentence-transformers folder")  # fmt: skip
    if _is_splade(path):
        raise InvalidInput(f"{source} is a SPLADE (masked-LM) model, not a dense bi-encoder: "
                           "rotate needs dense vectors")  # fmt: skip
    config = load_model_config(path, found.spec)
    if is_onnx_only(config.transformer_path):
        raise InvalidInput(f"{source} holds only an ONNX graph: rotate writes a sentence-"
                           "transformers folder, which needs the PyTorch weights")  # fmt: skip
    if not config.dim:
        raise ModelNotFound(f"{path}/config.json does not give the model's hidden size")
    return found, config


def _is_model2vec(path: Path) -> bool:
    from embedstack.encoders.distill import is_model2vec_folder

    return is_model2vec_folder(path)


def _is_splade(path: Path) -> bool:
    """A folder whose modules name SPLADE pooling, or a masked-LM folder without modules."""
    modules = path / "modules.json"
    if modules.is_file():
        text = modules.read_text(encoding="utf-8", errors="replace")
        return "SpladePooling" in text or "MLMTransformer" in text
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    architectures = config.get("architectures") or [] if isinstance(config, dict) else []
    return any(str(a).endswith("ForMaskedLM") for a in architectures)


def _encode(
    encoder: Any, texts: list[str], progress: Callable[[int, int], None] | None
) -> FloatArray:
    if progress is not None:
        progress(0, len(texts))
    blocks, done = [], 0
    for block in encoder.iter_encode(texts, side="document", chunk_size=CHUNK):
        blocks.append(block)
        done += len(block)
        if progress is not None:
            progress(done, len(texts))
    return np.concatenate(blocks).astype(np.float32)


def _write(
    staging: Path, found: ModelFolder, config: ModelConfig, rotation: FloatArray,
    facts: dict[str, Any],
) -> str:  # fmt: skip
    """Copy the source into ``staging`` and add the rotation; returns the module's folder."""
    shutil.copytree(found.path, staging, dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns(".git", ".cache"))  # fmt: skip
    modules = _modules(staging, config)
    position = next((i for i, m in enumerate(modules) if _kind(m) == "Normalize"), len(modules))
    taken = {str(m.get("path", "")) for m in modules}
    module = f"{position}_Dense"
    while module in taken or (staging / module).exists():
        module = f"{module}_rotation"
    dim = rotation.shape[0]
    (staging / module).mkdir()
    write_json(staging / module / "config.json",
               {"in_features": dim, "out_features": dim, "bias": False,
                "activation_function": IDENTITY})  # fmt: skip
    weight = np.ascontiguousarray(rotation, dtype=np.float32)
    write_safetensors(staging / module / "model.safetensors", {"linear.weight": weight})
    modules.insert(position, {"path": module, "type": DENSE_TYPE})
    for index, entry in enumerate(modules):
        entry.update(idx=index, name=str(index))
    write_json(staging / "modules.json", modules)
    _keep_settings(staging, config)
    facts = {**facts, "module": module,
             "written_at": datetime.now(UTC).isoformat(timespec="seconds")}  # fmt: skip
    write_json(staging / MANIFEST, facts)
    _note_in_readme(staging, facts)
    return module


def _kind(module: dict[str, Any]) -> str:
    return str(module.get("type", "")).rpartition(".")[2]


def _modules(staging: Path, config: ModelConfig) -> list[dict[str, Any]]:
    """The folder's ``modules.json`` entries; for a plain Hugging Face folder, those of the
    pooling and normalization it was run with (its registry entry's, or the defaults)."""
    file = staging / "modules.json"
    if file.is_file():
        return list(json.loads(file.read_text(encoding="utf-8")))
    pooling = staging / "1_Pooling"
    pooling.mkdir(exist_ok=True)
    write_json(pooling / "config.json",
               {"word_embedding_dimension": config.hidden_size or config.dim,
                "pooling_mode_cls_token": config.pooling == "cls",
                "pooling_mode_mean_tokens": config.pooling == "mean",
                "pooling_mode_max_tokens": False,
                "pooling_mode_mean_sqrt_len_tokens": False,
                "pooling_mode_weightedmean_tokens": False,
                "pooling_mode_lasttoken": config.pooling == "last",
                "include_prompt": True})  # fmt: skip
    modules = [{"path": "", "type": ST_TYPES["Transformer"]},
               {"path": "1_Pooling", "type": ST_TYPES["Pooling"]}]  # fmt: skip
    if config.normalize:
        (staging / "2_Normalize").mkdir(exist_ok=True)
        modules.append({"path": "2_Normalize", "type": ST_TYPES["Normalize"]})
    return modules


def _keep_settings(staging: Path, config: ModelConfig) -> None:
    """Write what the source's registry entry owned into the folder: max length and lower
    casing (``sentence_bert_config.json``) and prefixes (the symmetric one as the
    ``symmetric`` prompt); Matryoshka dims are cleared."""
    body = staging / os.path.relpath(config.transformer_path, config.path)
    if not (body / "sentence_bert_config.json").is_file():
        write_json(body / "sentence_bert_config.json",
                   {"max_seq_length": config.max_length,
                    "do_lower_case": config.do_lower_case})  # fmt: skip
    file = staging / "config_sentence_transformers.json"
    st_model: dict[str, Any] = {}
    if file.is_file():
        st_model = json.loads(file.read_text(encoding="utf-8"))
    prompts = dict(st_model.get("prompts") or {})
    if not prompts.get("query") and config.query_prefix:
        prompts["query"] = config.query_prefix
    if not (prompts.get("document") or prompts.get("passage")) and config.document_prefix:
        prompts["document"] = config.document_prefix
    st_model["prompts"] = prompts
    st_model.setdefault("default_prompt_name", None)
    st_model.setdefault("similarity_fn_name", "cosine")
    if config.symmetric_prefix and not prompts.get("symmetric"):
        prompts["symmetric"] = config.symmetric_prefix
    # the first k dims are now principal axes, not the prefix Matryoshka loss trained: the
    # rotated folder claims no trained truncation (rotation.json keeps the source's dims)
    st_model["matryoshka_dims"] = []
    write_json(file, st_model)


def _note_in_readme(staging: Path, facts: dict[str, Any]) -> None:
    readme = staging / "README.md"
    if not readme.is_file():
        return
    note = (
        "\n\n## PCA rotation (embedstack models rotate)\n\n"
        f"This folder is `{facts['source']}` with one more `Dense` module (`{facts['module']}`):"
        f" an orthogonal {facts['dim']} x {facts['dim']} rotation onto the principal axes of "
        f"{facts['n_texts']} document embeddings (sampled with seed {facts['seed']} from "
        f"{facts['n_read']} texts), by decreasing variance, so that the first dimensions "
        "truncate well. Full-dimension cosine similarities are unchanged. Details in "
        f"`{MANIFEST}`.\n"
    )
    with readme.open("a", encoding="utf-8") as handle:
        handle.write(note)


def _verify(staging: Path, config: ModelConfig, rotation: FloatArray) -> None:
    """The written folder reads back as the source plus the rotation, last before Normalize."""
    written = load_model_config(staging)
    layer = written.dense[-1] if written.dense else None
    if (
        layer is None
        or len(written.dense) != len(config.dense) + 1
        or written.dim != config.dim
        or (written.pooling, written.normalize) != (config.pooling, config.normalize)
        or (written.query_prefix, written.document_prefix, written.symmetric_prefix)
        != (config.query_prefix, config.document_prefix, config.symmetric_prefix)
        or written.matryoshka_dims
        or written.max_length != config.max_length
        or read_dense(layer.path).bias
        or not np.array_equal(layer.load().weight, rotation)
    ):
        raise ModelNotFound(f"{staging} does not read back as the rotated model it should be")
