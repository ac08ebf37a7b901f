"""ColBERT's input format and folder layout, shared by inference and training.

:class:`~embedstack.encoders.colbert.LateInteractionEncoder` and
:func:`embedstack.train.train_colbert` build their token ids with the same
:class:`ColbertTokenizer`, so what a model is trained on is what it later reads:

* queries: ``[CLS] [Q] tokens [SEP]`` cut to ``query_maxlen`` and, with query augmentation,
  padded with ``[MASK]`` to ``query_maxlen``; only the real tokens are attended to, but every
  position (the masks included) yields a vector (Khattab & Zaharia 2020, section 3.2);
* documents: ``[CLS] [D] tokens [SEP]`` cut to ``doc_maxlen``; punctuation tokens are
  attended to but their vectors are dropped from MaxSim.

The markers ``[Q]``/``[D]`` are the vocabulary's ``[unused0]``/``[unused1]``, as in ColBERTv2
(Santhanam et al. 2022). A folder may carry ColBERT's ``artifact.metadata`` (JSON) naming the
``query_maxlen``/``doc_maxlen`` it was trained with; :func:`read_metadata` reads it.

Example:
    >>> tok = ColbertTokenizer(folder, query_maxlen=8, doc_maxlen=16,
    ...                        query_augmentation=True)              # doctest: +SKIP
    >>> tok.queries(["cats?"]).ids[0]                                 # doctest: +SKIP
    [101, 1, 8870, 1029, 102, 103, 103, 103]
"""

from __future__ import annotations

import json
import string
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from embedstack.errors import InvalidInput, ModelNotFound

__all__ = [
    "HEAD_FILE",
    "METADATA_FILE",
    "ColbertInputs",
    "ColbertTokenizer",
    "check_maxlen",
    "read_linear_head",
    "read_metadata",
]

HEAD_FILE = "colbert_linear.safetensors"
"""A separate file holding the projection ``linear.weight`` ``(dim, hidden)``."""
METADATA_FILE = "artifact.metadata"
"""ColBERT's JSON record of the training configuration (``query_maxlen``, ``doc_maxlen``...)."""


def check_maxlen(label: str, value: object, limit: int) -> int:
    """``value`` if it is an int in ``[4, limit]``.

    Raises:
        InvalidInput: otherwise (the message starts with ``label``).
    """
    if isinstance(value, bool) or not isinstance(value, int) or not 4 <= value <= limit:
        raise InvalidInput(f"{label} must be an int in [4, {limit}], got {value!r}")
    return value


def read_metadata(folder: Path) -> dict[str, Any]:
    """The JSON object in ``folder/artifact.metadata``, or ``{}`` when there is none.

    Raises:
        ModelNotFound: the file exists but is not a readable JSON object.
    """
    file = folder / METADATA_FILE
    if not file.is_file():
        return {}
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelNotFound(f"cannot read {file}: {exc}") from exc
    if not isinstance(data, dict):
        raise ModelNotFound(f"{file} is not a JSON object")
    return data


@dataclass(frozen=True)
class ColbertInputs:
    """Token ids of some texts, one list per text, in input order.

    Attributes:
        ids: Token ids per text (markers and query ``[MASK]`` padding included).
        attend: Per text, how many leading tokens the model attends to.
        keep: Per text, ``(len(ids),)`` bool: whether a token's vector takes part in MaxSim.
        pad_id: The vocabulary's ``[PAD]`` id, filling :meth:`pad`'s batches.
    """

    ids: list[list[int]]
    attend: list[int]
    keep: list[np.ndarray]
    pad_id: int

    def __len__(self) -> int:
        return len(self.ids)

    def pad(self, rows: Sequence[int]) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """``rows`` as one batch padded to their longest text.

        Returns:
            ``{"input_ids", "attention_mask", "token_type_ids"}`` as ``(len(rows), width)``
            int64 arrays, and the ``(len(rows), width)`` bool mask of kept vectors (False on
            padding).
        """
        width = max(len(self.ids[i]) for i in rows)
        batch = {
            n: np.zeros((len(rows), width), dtype=np.int64)
            for n in ("input_ids", "attention_mask", "token_type_ids")
        }
        batch["input_ids"][:] = self.pad_id
        keep = np.zeros((len(rows), width), dtype=bool)
        for r, i in enumerate(rows):
            n = len(self.ids[i])
            batch["input_ids"][r, :n] = self.ids[i]
            batch["attention_mask"][r, : self.attend[i]] = 1
            keep[r, :n] = self.keep[i]
        return batch, keep


class ColbertTokenizer:
    """Builds :class:`ColbertInputs` the way ColBERT does (see the module docstring).

    Args:
        folder: Folder with the model's ``tokenizer.json``.
        query_maxlen: Query tokens, markers included.
        doc_maxlen: Document tokens, markers included, before punctuation masking.
        query_augmentation: Pad queries with ``[MASK]`` to ``query_maxlen``.
        markers: Insert the ``[Q]``/``[D]`` markers.
        mask_punctuation: Drop the vectors of punctuation tokens from documents.

    Raises:
        ModelNotFound: no ``tokenizer.json`` in ``folder``.
        InvalidInput: the vocabulary lacks a token the options need.
    """

    def __init__(
        self,
        folder: Path,
        *,
        query_maxlen: int,
        doc_maxlen: int,
        query_augmentation: bool,
        markers: bool = True,
        mask_punctuation: bool = True,
    ) -> None:
        from tokenizers import Tokenizer

        file = folder / "tokenizer.json"
        if not file.is_file():
            raise ModelNotFound(f"{folder} has no tokenizer.json; save a fast tokenizer there")
        tok = Tokenizer.from_file(str(file))
        tok.no_padding()
        ids = {t: tok.token_to_id(t) for t in ("[unused0]", "[unused1]", "[MASK]", "[PAD]")}
        needed = ["[MASK]"] * query_augmentation + ["[unused0]", "[unused1]"] * markers
        missing = [t for t in needed if ids[t] is None]
        if missing:
            raise InvalidInput(
                f"{folder}: the vocabulary has no {missing}; pass "
                "markers=False / query_augmentation=False"
            )
        self.query_maxlen, self.doc_maxlen = query_maxlen, doc_maxlen
        self.query_augmentation, self.markers = query_augmentation, markers
        self.mask_punctuation = mask_punctuation
        self._q_marker, self._d_marker = ids["[unused0]"] or 0, ids["[unused1]"] or 0
        self._mask_id, self.pad_id = ids["[MASK]"] or 0, ids["[PAD]"] or 0
        skip = {tok.token_to_id(c) for c in string.punctuation}
        self._skiplist = np.array(sorted(i for i in skip if i is not None), dtype=np.int64)
        self._tokenizer = tok

    @property
    def tokenizer(self) -> Any:
        """The ``tokenizers.Tokenizer``."""
        return self._tokenizer

    def _ids(self, texts: list[str], maxlen: int, marker: int) -> list[list[int]]:
        room = maxlen - 1 if self.markers else maxlen
        self._tokenizer.enable_truncation(room)
        encoded = self._tokenizer.encode_batch(texts, add_special_tokens=True)
        if not self.markers:
            return [list(e.ids) for e in encoded]
        return [[e.ids[0], marker, *e.ids[1:]] for e in encoded]

    def queries(self, texts: list[str]) -> ColbertInputs:
        """Query inputs: every vector kept, ``[MASK]`` padding attended to by nothing."""
        ids = self._ids(texts, self.query_maxlen, self._q_marker)
        attend = [len(x) for x in ids]
        if self.query_augmentation:
            ids = [x + [self._mask_id] * (self.query_maxlen - len(x)) for x in ids]
        keep = [np.ones(len(x), dtype=bool) for x in ids]
        return ColbertInputs(ids, attend, keep, self.pad_id)

    def documents(self, texts: list[str]) -> ColbertInputs:
        """Document inputs: every token attended to, punctuation vectors dropped."""
        ids = self._ids(texts, self.doc_maxlen, self._d_marker)
        if self.mask_punctuation:
            keep = [~np.isin(np.asarray(x, dtype=np.int64), self._skiplist) for x in ids]
        else:
            keep = [np.ones(len(x), dtype=bool) for x in ids]
        return ColbertInputs(ids, [len(x) for x in ids], keep, self.pad_id)


_HEAD_FILES = ("model.safetensors", HEAD_FILE, "1_Dense/model.safetensors")
_HEAD_KEYS = ("linear.weight", "weight")
_ST_DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16}


def _safetensors_tensor(file: Path, key: str) -> np.ndarray | None:
    """One tensor of a safetensors file, read with numpy (header: u64 length + JSON)."""
    with file.open("rb") as f:
        size = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(size))
        entry = header.get(key)
        if not isinstance(entry, dict) or entry.get("dtype") not in _ST_DTYPES:
            return None
        start, end = entry["data_offsets"]
        f.seek(8 + size + start)
        raw = np.frombuffer(f.read(end - start), dtype=_ST_DTYPES[entry["dtype"]])
    if entry["dtype"] == "BF16":
        raw = (raw.astype(np.uint32) << 16).view(np.float32)
    return raw.astype(np.float32).reshape(entry["shape"])


def read_linear_head(folder: Path, hidden: int) -> np.ndarray | None:
    """The ColBERT projection ``(dim, hidden)`` float32 stored in ``folder``, or None.

    Looks for ``linear.weight`` (or ``weight``) in ``model.safetensors`` (ColBERTv2),
    ``colbert_linear.safetensors`` and ``1_Dense/model.safetensors`` (PyLate).
    """
    for name in _HEAD_FILES:
        file = folder / name
        if not file.is_file():
            continue
        keys = _HEAD_KEYS if name != "model.safetensors" else _HEAD_KEYS[:1]
        for key in keys:
            weight = _safetensors_tensor(file, key)
            if weight is not None and weight.ndim == 2 and weight.shape[1] == hidden:
                return weight
    return None
