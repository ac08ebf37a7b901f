"""Static token-lookup embeddings: the ``"static"`` backend of the model runtime.

A static model (WordLlama, model2vec) is one embedding table, no transformer: a text's
vector is the average of its tokens' rows, L2-normalized. That is exactly what the dense
:class:`~embedstack.encoders.Encoder` does with a transformer's hidden states, so a static
model is a *backend*: its runner returns the table rows of ``input_ids`` as
``(batch, seq, dim)`` and the encoder's mean pooling (over the attention mask) and
normalization apply unchanged, as do prefixes, Matryoshka truncation and int8/binary
precisions. Encoding costs one tokenization and one gather per text.

A static folder holds ``config.json`` (``"architectures": ["StaticEmbedding"]``,
``hidden_size``, ``vocab_size``), ``model.safetensors`` with the table (``embeddings``, or
WordLlama's ``embedding.weight``; ``(vocab, dim)``, float32 or float16), a
``tokenizer.json`` whose post-processor adds nothing the model did not see in training,
and the sentence-transformers files (mean pooling, Normalize, ``max_seq_length``).
:func:`write_static_folder` writes one; :func:`convert_wordllama` makes one from
WordLlama's files.

Example:
    >>> from embedstack import Encoder
    >>> Encoder("wordllama-l2-256", backend="static").encode(["a cat"]).shape  # doctest: +SKIP
    (1, 256)
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np

from embedstack._typing import FloatArray
from embedstack.encoders.convert.files import write_json as _write_json
from embedstack.encoders.convert.safetensors_np import read_safetensors, write_safetensors
from embedstack.encoders.runtime.backends import RuntimeOptions, register_backend
from embedstack.encoders.runtime.export import Head
from embedstack.errors import InvalidInput, ModelNotFound

__all__ = [
    "ARCHITECTURE",
    "StaticRunner",
    "convert_wordllama",
    "is_static_folder",
    "load_table",
    "write_static_folder",
]

ARCHITECTURE = "StaticEmbedding"
TABLE_KEYS = ("embeddings", "embedding.weight")


def is_static_folder(path: str | os.PathLike[str]) -> bool:
    """Whether ``path/config.json`` declares a static embedding model."""
    try:
        config = json.loads((Path(path) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and ARCHITECTURE in (config.get("architectures") or [])


def load_table(path: str | os.PathLike[str]) -> FloatArray:
    """The ``(vocab, dim) float32`` table of a static folder's ``model.safetensors``.

    Raises:
        ModelNotFound: no ``model.safetensors``, or no 2-D table in it.
    """
    file = Path(path) / "model.safetensors"
    if not file.is_file():
        raise ModelNotFound(f"{path} holds no model.safetensors with an embedding table")
    try:
        tensors = read_safetensors(file)
    except InvalidInput as exc:
        raise ModelNotFound(str(exc)) from exc
    for key in TABLE_KEYS:
        table = tensors.get(key)
        if table is not None and table.ndim == 2:
            return np.ascontiguousarray(table, dtype=np.float32)
    raise ModelNotFound(f"{file} has no 2-D tensor named {' or '.join(TABLE_KEYS)}")


class StaticRunner:
    """The ``"static"`` backend: ``input_ids (batch, seq)`` to table rows
    ``(batch, seq, dim) float32``. Padding positions get row ``input_ids = 0`` as well;
    the encoder's mean pooling masks them out.

    Raises:
        InvalidInput: ``quantize`` was asked for (the table is the model: ask for int8 or
            binary *vectors* with ``precision=`` instead), or a head other than hidden
            states (SPLADE, cross-encoders) was asked for.
        ModelNotFound: the folder is not a static model.
    """

    def __init__(self, head: Head, options: RuntimeOptions) -> None:
        if options.quantize is not None:
            raise InvalidInput(
                "a static model has no int8 weights to run: use backend='static' without "
                "quantize, and precision='int8' or 'binary' for smaller vectors"
            )
        if head.task != "feature-extraction" or head.graphs[0].output != "last_hidden_state":
            raise InvalidInput(
                f"backend 'static' only serves token vectors (dense encoders), not {head.task!r}"
            )
        if not is_static_folder(options.path):
            raise ModelNotFound(
                f"{options.path} is not a static embedding model (config.json does not name "
                f"{ARCHITECTURE}); use backend='onnx' or 'torch' for transformer models"
            )
        self.table = load_table(options.path)
        self.input_names: tuple[str, ...] = ("input_ids", "attention_mask")
        self._stem = head.graphs[0].stem

    def __call__(self, batch: dict[str, np.ndarray]) -> FloatArray:
        ids = np.asarray(batch["input_ids"])
        if ids.size and (int(ids.min()) < 0 or int(ids.max()) >= len(self.table)):
            raise InvalidInput(
                f"token id {int(ids.max())} is outside the {len(self.table)}-row table: the "
                "folder's tokenizer.json does not belong to its model.safetensors"
            )
        return self.table[ids]

    def run(self, stem: str, feed: dict[str, np.ndarray]) -> FloatArray:
        if stem != self._stem:
            raise InvalidInput(f"a static model has one graph ({self._stem!r}), not {stem!r}")
        return self(feed)


register_backend("static", StaticRunner)


def write_static_folder(
    dest: str | os.PathLike[str],
    table: np.ndarray,
    tokenizer_json: str,
    *,
    max_length: int,
    normalize: bool = True,
    source: str = "",
) -> Path:
    """Write a static model folder (see the module docstring) into ``dest``.

    Args:
        dest: Folder to fill (created if needed).
        table: ``(vocab, dim)`` float32 or float16 embedding table, kept in its dtype.
        tokenizer_json: The ``tokenizers`` JSON; its vocabulary must fit the table.
        max_length: Tokens read per text (``sentence_bert_config.json``).
        normalize: L2-normalize the pooled vectors (a Normalize module).
        source: Provenance recorded in ``config.json``.

    Raises:
        InvalidInput: the table is not 2-D float, or the tokenizer's ids exceed it.
    """
    if table.ndim != 2 or table.dtype not in (np.float32, np.float16) or not table.size:
        raise InvalidInput(f"a static table is a non-empty 2-D float array, got {table.shape}")
    folder = Path(dest)
    folder.mkdir(parents=True, exist_ok=True)
    _check_vocab(tokenizer_json, len(table))
    write_safetensors(folder / "model.safetensors", {"embeddings": table})
    return _write_config(folder, table.shape, tokenizer_json, max_length, normalize, source)


def _check_vocab(tokenizer_json: str, rows: int) -> None:
    from tokenizers import Tokenizer

    size = Tokenizer.from_str(tokenizer_json).get_vocab_size(with_added_tokens=True)
    if size > rows:
        raise InvalidInput(f"the tokenizer has {size} ids but the table only {rows} rows")


def _write_config(folder: Path, shape: tuple[int, ...], tokenizer_json: str, max_length: int,
                  normalize: bool, source: str) -> Path:  # fmt: skip
    """Everything of a static folder but the table."""
    vocab, dim = shape
    (folder / "1_Pooling").mkdir(parents=True, exist_ok=True)
    (folder / "tokenizer.json").write_text(tokenizer_json, encoding="utf-8")
    _write_json(folder / "config.json", {"architectures": [ARCHITECTURE],
                "model_type": "static-embedding", "hidden_size": dim, "vocab_size": vocab,
                "source": source})  # fmt: skip
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "embedstack.encoders.static"},
        {"idx": 1, "name": "1", "path": "1_Pooling",
         "type": "sentence_transformers.models.Pooling"},
    ]  # fmt: skip
    if normalize:
        (folder / "2_Normalize").mkdir(exist_ok=True)
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize",
                        "type": "sentence_transformers.models.Normalize"})  # fmt: skip
    _write_json(folder / "modules.json", modules)
    _write_json(folder / "1_Pooling" / "config.json",
                {"word_embedding_dimension": dim, "pooling_mode_mean_tokens": True})  # fmt: skip
    _write_json(folder / "sentence_bert_config.json",
                {"max_seq_length": max_length, "do_lower_case": False})  # fmt: skip
    return folder


def convert_wordllama(
    weights: str | os.PathLike[str],
    tokenizer_config: str | os.PathLike[str],
    dest: str | os.PathLike[str],
    *,
    max_length: int = 8192,
) -> Path:
    """A static folder from WordLlama's files (``weights/l2_supercat_256.safetensors`` and
    ``tokenizers/l2_supercat_tokenizer_config.json`` of the ``wordllama`` wheel).

    WordLlama's recipe (``wordllama/inference.py``): tokenize with
    ``add_special_tokens=False``, average the rows of the tokens (attention mask), then
    L2-normalize for cosine similarity. The tokenizer's post-processor (it would add
    ``<s>``) is therefore removed; the weights file becomes ``model.safetensors``
    byte for byte (fp16 ``embedding.weight``, so its pinned SHA-256 still holds); nothing
    else is involved (no projection, no binarization: the ``_256`` file is the dense
    256-d Matryoshka slice). WordLlama does not truncate; ``max_length`` bounds the tokens
    read per text.

    Raises:
        InvalidInput: the files are not WordLlama's (no ``embedding.weight`` table).
    """
    table = read_safetensors(weights).get("embedding.weight")
    if table is None or table.ndim != 2:
        raise InvalidInput(f"{weights} has no 2-D 'embedding.weight' table")
    shape = table.shape
    del table  # the memory map, before the file is moved
    config = json.loads(Path(tokenizer_config).read_text(encoding="utf-8"))
    config.update(post_processor=None, truncation=None, padding=None)
    tokenizer_json = json.dumps(config, ensure_ascii=False)
    _check_vocab(tokenizer_json, shape[0])
    folder = Path(dest)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / "model.safetensors"
    if Path(weights).resolve() != target.resolve():
        shutil.copyfile(weights, target)
    return _write_config(folder, shape, tokenizer_json, max_length, True,
                         "wordllama l2_supercat_256")  # fmt: skip
