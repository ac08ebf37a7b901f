"""Cross-encoders whose lower layers read the query and the document apart (PreTTR).

MacAvaney et al. (2020, "Efficient Document Re-Ranking for Transformers by Precomputing
Term Representations") split a cross-encoder at layer ``l``: in the first ``l`` layers query
tokens attend only to query tokens and document tokens only to document tokens; the layers
above attend across the pair as a usual cross-encoder does. A document's hidden states after
layer ``l`` then depend on the document alone, so they can be computed once, when the
document is indexed. At query time only the query's lower layers (a few tokens) and the
upper layers over the joined pair run, so reranking costs about ``(N - l) / N`` of the
full cross-encoder's ``N`` layers.

Inputs, so that a document's states do not depend on its query:

- the query is ``[CLS] query [SEP]``, at most ``query_length`` tokens, token type 0,
  positions ``0..``;
- the document is ``document [SEP]``, at most ``max_length - query_length`` tokens, token
  type 1, positions ``query_length..`` (fixed, whatever the query's length).

A model trained this way (:func:`embedstack.train.train_reranker` with ``split_layer=``) is a
standard Hugging Face ``*ForSequenceClassification`` folder whose ``config.json`` records
``"embedstack_split": {"layer": l, "query_length": Lq}``; :func:`embedstack.rerank.load_reranker`
loads it as a :class:`~embedstack.rerank.split_encoder.SplitCrossEncoder`.

This module holds what training, export and inference share: the split specification, the
tokenizer and the torch forward passes (BERT-family models with a pooler).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from embedstack.encoders.runtime import Graph, Head
from embedstack.errors import InvalidInput, ModelNotFound

__all__ = [
    "CONFIG_KEY",
    "SplitSpec",
    "SplitTokenizer",
    "joined_batch",
    "lower_states",
    "read_split",
    "split_head",
    "split_logits",
    "upper_logits",
]

CONFIG_KEY = "embedstack_split"


@dataclass(frozen=True)
class SplitSpec:
    """Where a cross-encoder is split, and the query's share of the pair.

    Attributes:
        layer: Transformer layers that read query and document apart (``1..N-1``).
        query_length: Tokens of the query segment, special tokens included; documents start
            at this position.
        max_length: Tokens of a joined pair (query segment + document segment).
    """

    layer: int
    query_length: int
    max_length: int

    def __post_init__(self) -> None:
        for name in ("layer", "query_length", "max_length"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidInput(f"split {name} must be a positive integer, got {value!r}")
        if not 3 <= self.query_length <= self.max_length - 2:
            raise InvalidInput(
                f"split query_length must be in [3, max_length - 2 = {self.max_length - 2}], "
                f"got {self.query_length}"
            )

    @property
    def doc_length(self) -> int:
        """Tokens of the document segment (its ``[SEP]`` included)."""
        return self.max_length - self.query_length

    def record(self) -> dict[str, int]:
        """The ``config.json`` entry (``max_length`` lives in the tokenizer config)."""
        return {"layer": self.layer, "query_length": self.query_length}


def read_split(folder: Path, max_length: int) -> SplitSpec | None:
    """The split recorded in ``folder/config.json``, or None for a plain cross-encoder.

    Raises:
        ModelNotFound: the record is malformed.
    """
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    record = config.get(CONFIG_KEY)
    if record is None:
        return None
    try:
        spec = SplitSpec(int(record["layer"]), int(record["query_length"]), max_length)
    except (KeyError, TypeError, ValueError, InvalidInput) as exc:
        raise ModelNotFound(f"{folder}/config.json has a malformed {CONFIG_KEY}: {exc}") from exc
    depth = int(config.get("num_hidden_layers", spec.layer + 1))
    if spec.layer >= depth:
        raise ModelNotFound(
            f"{folder}: split layer {spec.layer} leaves none of its {depth} layers joint"
        )
    return spec


class SplitTokenizer:
    """Token ids of query segments (``[CLS] q [SEP]``) and document segments (``d [SEP]``).

    Args:
        folder: Model folder holding ``tokenizer.json`` (a BERT-style ``[CLS] x [SEP]``
            template).
        spec: The split; its lengths bound the two segments.
    """

    def __init__(self, folder: Path, spec: SplitSpec) -> None:
        from tokenizers import Tokenizer

        file = folder / "tokenizer.json"
        if not file.is_file():
            raise ModelNotFound(f"{folder} has no tokenizer.json")
        self.spec = spec
        self._tokenizer: Any = Tokenizer.from_file(str(file))
        self._tokenizer.no_padding()
        self._tokenizer.no_truncation()
        self._char_limit = max(4096, spec.max_length * 100)
        cls_sep = self._tokenizer.encode("", add_special_tokens=True).ids
        if len(cls_sep) != 2:
            raise ModelNotFound(f"{folder}: the tokenizer does not wrap text as [CLS] x [SEP]")
        self.cls_id, self.sep_id = int(cls_sep[0]), int(cls_sep[1])

    def _bodies(self, texts: Sequence[str], limit: int) -> list[list[int]]:
        clipped = [t[: self._char_limit] for t in texts]
        return [
            list(e.ids[:limit])
            for e in self._tokenizer.encode_batch(clipped, add_special_tokens=False)
        ]

    def queries(self, texts: Sequence[str]) -> list[list[int]]:
        """``[CLS] q [SEP]`` ids, the query cut to fit ``query_length``."""
        body = self.spec.query_length - 2
        return [[self.cls_id, *ids, self.sep_id] for ids in self._bodies(texts, body)]

    def documents(self, texts: Sequence[str]) -> list[list[int]]:
        """``d [SEP]`` ids, the document cut to fit ``max_length - query_length``."""
        body = self.spec.doc_length - 1
        return [[*ids, self.sep_id] for ids in self._bodies(texts, body)]


def segment_batch(
    ids: Sequence[Sequence[int]], *, document: bool, spec: SplitSpec
) -> dict[str, np.ndarray]:
    """A right-padded batch of query or document segments for the lower layers.

    Keys ``input_ids``, ``attention_mask``, ``token_type_ids`` and ``position_ids``, all
    ``(len(ids), width) int64``; documents take token type 1 and positions from
    ``query_length``.
    """
    width = max(len(row) for row in ids)
    out = {k: np.zeros((len(ids), width), dtype=np.int64) for k in _LOWER_INPUTS}
    start = spec.query_length if document else 0
    out["position_ids"][:] = np.arange(start, start + width, dtype=np.int64)
    for i, row in enumerate(ids):
        n = len(row)
        out["input_ids"][i, :n] = row
        out["attention_mask"][i, :n] = 1
        out["token_type_ids"][i, :n] = 1 if document else 0
    return out


_LOWER_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "position_ids")


def joined_batch(
    queries: Sequence[Sequence[int]], documents: Sequence[Sequence[int]], spec: SplitSpec
) -> dict[str, np.ndarray]:
    """Training batch: row ``i`` is query ``i``'s segment padded to ``query_length``, then
    document ``i``'s segment, padded to the longest document.

    Keys as :func:`segment_batch` plus ``segment`` (0 query part, 1 document part), which
    :func:`split_logits` turns into the lower layers' block mask.
    """
    q = spec.query_length
    width = q + max(len(d) for d in documents)
    out = {k: np.zeros((len(queries), width), dtype=np.int64) for k in _LOWER_INPUTS}
    out["segment"] = np.zeros((len(queries), width), dtype=np.int64)
    out["segment"][:, q:] = 1
    out["token_type_ids"][:, q:] = 1
    out["position_ids"][:] = np.arange(width, dtype=np.int64)
    for i, (qi, di) in enumerate(zip(queries, documents, strict=True)):
        out["input_ids"][i, : len(qi)] = qi
        out["attention_mask"][i, : len(qi)] = 1
        out["input_ids"][i, q : q + len(di)] = di
        out["attention_mask"][i, q : q + len(di)] = 1
    return out


# --- torch forward passes -------------------------------------------------------------------


def _parts(model: Any) -> tuple[Any, Any, Any]:
    """``(embeddings, layers, pooler)`` of a BERT-family classifier."""
    base = model.base_model
    layers = getattr(getattr(base, "encoder", None), "layer", None)
    pooler = getattr(base, "pooler", None)
    if layers is None or pooler is None or not hasattr(base, "embeddings"):
        raise InvalidInput(
            f"splitting needs a BERT-family classifier with a pooler; "
            f"{type(model).__name__} does not have one"
        )
    return base.embeddings, layers, pooler


def _additive(torch: Any, keep: Any, dtype: Any) -> Any:
    """Additive attention mask (broadcast to ``(batch, heads, q, k)``): 0 where ``keep``,
    the dtype's minimum elsewhere."""
    zero = torch.zeros((), dtype=dtype)
    low = torch.tensor(torch.finfo(dtype).min, dtype=dtype)
    return torch.where(keep, zero, low)


def _run(layers: Any, hidden: Any, mask: Any) -> Any:
    for block in layers:
        out = block(hidden, mask)
        hidden = out[0] if isinstance(out, tuple) else out
    return hidden


def lower_states(model: Any, layer: int, batch: dict[str, Any], segment: Any = None) -> Any:
    """Hidden states after the first ``layer`` layers (``(batch, width, hidden)``).

    Without ``segment`` every token attends to every unpadded token of its row (one segment
    per row, as at inference); with it, only to tokens of the same segment.
    """
    import torch

    embeddings, layers, _ = _parts(model)
    hidden = embeddings(
        input_ids=batch["input_ids"],
        token_type_ids=batch["token_type_ids"],
        position_ids=batch["position_ids"],
    )
    keep = batch["attention_mask"].bool()[:, None, None, :]
    if segment is not None:
        keep = keep & (segment[:, None, :, None] == segment[:, None, None, :])
    return _run(layers[:layer], hidden, _additive(torch, keep, hidden.dtype))


def upper_logits(model: Any, layer: int, hidden: Any, attention_mask: Any) -> Any:
    """Logits ``(batch, num_labels)`` of the layers above ``layer`` over joined states."""
    import torch

    _, layers, pooler = _parts(model)
    keep = attention_mask.bool()[:, None, None, :]
    hidden = _run(layers[layer:], hidden, _additive(torch, keep, hidden.dtype))
    pooled = pooler(hidden)
    dropout = getattr(model, "dropout", None)
    if dropout is not None:
        pooled = dropout(pooled)
    return model.classifier(pooled)


def split_logits(model: Any, layer: int, batch: dict[str, Any]) -> Any:
    """Logits of a :func:`joined_batch` (as tensors): block-masked lower layers, joint upper."""
    hidden = lower_states(model, layer, batch, segment=batch["segment"])
    return upper_logits(model, layer, hidden, batch["attention_mask"])


def _states_example(torch: Any, model: Any) -> dict[str, Any]:
    return {"states": torch.randn(2, 16, int(model.config.hidden_size))}


def split_head(layer: int) -> Head:
    """The model runtime's head of a cross-encoder split at ``layer``: two graphs,
    ``lower`` (token ids and positions to the states after ``layer``) and ``upper`` (joined
    ``states`` and ``attention_mask`` to ``logits``), cached under
    ``onnx/rerank-split<layer>-<name>-<hash16>/``; the block masks are not fused."""
    lower = Graph("lower", "states", lambda m, t: lower_states(m, layer, t),
                  inputs=_LOWER_INPUTS, fuse=False)  # fmt: skip
    upper = Graph(
        "upper",
        "logits",
        lambda m, t: upper_logits(m, layer, t["states"], t["attention_mask"]),
        pooled=True,
        inputs=("states", "attention_mask"),
        example=_states_example,
        fuse=False,
    )
    return Head(
        task="split-sequence-classification",
        prefix=f"rerank-split{layer}",
        loader="AutoModelForSequenceClassification",
        graphs=(lower, upper),
        info=lambda m: {"num_labels": int(m.config.num_labels), "split_layer": layer},
    )
