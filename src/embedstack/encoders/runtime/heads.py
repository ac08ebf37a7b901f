"""The heads several encoder kinds share, and the padded token batch every kind feeds.

* :data:`HIDDEN_STATES`: the transformer's last hidden state ``(batch, seq, hidden)``; the
  dense encoder pools it, ColBERT projects and normalizes each token (both in numpy);
* :data:`CLASSIFIER`: a ``*ForSequenceClassification`` model's ``logits``
  ``(batch, num_labels)`` (cross-encoders);
* :data:`ONNX_ONLY`: the folder's own ``model.onnx`` (a model shipped only as an ONNX graph,
  no weights for torch): its first output, token states ``(batch, seq, hidden)`` or an
  already pooled ``(batch, hidden)``; the dense encoder pools only the former. ONNX Runtime
  runs it as shipped, and int8 quantizes a copy into the cache; torch cannot run it.

SPLADE (:mod:`embedstack.encoders.splade`) and the split cross-encoder
(:mod:`embedstack.rerank.split`) define their own heads next to their pooling.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from embedstack.encoders.runtime.export import Graph, Head, has_torch_weights
from embedstack.errors import InvalidInput

__all__ = [
    "CLASSIFIER",
    "HIDDEN_STATES",
    "ONNX_ONLY",
    "count_truncated",
    "is_onnx_only",
    "length_batches",
    "pad_batch",
]

logger = logging.getLogger("embedstack")

HIDDEN_STATES = Head(
    task="feature-extraction",
    prefix="",
    loader="AutoModel",
    graphs=(Graph("model", "last_hidden_state", lambda m, t: m(**t).last_hidden_state),),
    unpadded=True,
)


def _shipped_only(model: Any, tensors: dict[str, Any]) -> Any:
    raise InvalidInput("this model ships only an ONNX graph: use backend='onnx'")


ONNX_ONLY = Head(
    task="feature-extraction-shipped",
    prefix="shipped",
    loader="AutoModel",
    graphs=(Graph("model", "sentence_embedding", _shipped_only),),
    shipped="model.onnx",
)


def is_onnx_only(folder: Path) -> bool:
    """The folder holds a ``model.onnx`` and no weights torch could load."""
    return (folder / "model.onnx").is_file() and not has_torch_weights(folder)


def _num_labels(model: Any) -> dict[str, Any]:
    return {"num_labels": int(model.config.num_labels)}


CLASSIFIER = Head(
    task="sequence-classification",
    prefix="rerank",
    loader="AutoModelForSequenceClassification",
    graphs=(Graph("model", "logits", lambda m, t: m(**t).logits, pooled=True),),
    info=_num_labels,
)


def pad_batch(encodings: Sequence[Any], rows: Sequence[int] | np.ndarray) -> dict[str, np.ndarray]:
    """A right-padded ``(len(rows), width) int64`` batch (``input_ids``, ``attention_mask``,
    ``token_type_ids``) of the chosen ``tokenizers`` encodings, ``width`` the longest."""
    width = max(len(encodings[i].ids) for i in rows)
    batch = {name: np.zeros((len(rows), width), dtype=np.int64)
             for name in ("input_ids", "attention_mask", "token_type_ids")}  # fmt: skip
    for row, i in enumerate(rows):
        enc = encodings[i]
        n = len(enc.ids)
        batch["input_ids"][row, :n] = enc.ids
        batch["attention_mask"][row, :n] = 1
        batch["token_type_ids"][row, :n] = enc.type_ids
    return batch


def length_batches(
    lengths: Sequence[int] | np.ndarray,
    batch_size: int,
    batch_tokens: int | None = None,
    min_fill: float = 0.5,
) -> Iterator[np.ndarray]:
    """Row indices in batches, longest rows first (a stable sort: deterministic).

    Each batch has at most ``batch_size`` rows and, with ``batch_tokens``, at most that many
    padded tokens (rows x longest). A batch also ends before a row shorter than ``min_fill``
    times its longest row, so no row is more than half padding. Padding is wasted compute,
    and under dynamic int8 quantization (activation scales per tensor, padded positions
    included) it also lets a short text's vector depend on the long texts batched with it.
    """
    sizes = np.asarray(lengths, dtype=np.int64)
    order = np.argsort(-sizes, kind="stable")
    start = 0
    while start < len(order):
        longest = max(int(sizes[order[start]]), 1)
        rows = batch_size
        if batch_tokens is not None:
            rows = max(1, min(batch_size, batch_tokens // longest))
        window = sizes[order[start : start + rows]]
        short = np.flatnonzero(window < min_fill * longest)
        if len(short):
            rows = max(1, int(short[0]))
        yield order[start : start + rows]
        start += rows


def count_truncated(encodings: Sequence[Any], max_length: int) -> int:
    """How many ``tokenizers`` encodings lost tokens to truncation (logged when any)."""
    truncated = sum(1 for e in encodings if e.overflowing)
    if truncated:
        logger.info("%d of %d inputs were longer than %d tokens and were truncated",
                    truncated, len(encodings), max_length)  # fmt: skip
    return truncated
