"""Learned sparse retrieval: SPLADE term weights over a masked-LM vocabulary.

A SPLADE model (Formal, Piwowarski & Clinchant 2021, "SPLADE"; Formal et al. 2021, "SPLADE
v2") is a BERT masked-LM whose logits become one weight per vocabulary term,
``w_j = max_i log(1 + ReLU(logit_ij))`` over the text's tokens ``i`` (v2's max pooling).
Most weights are 0, so a text is a short list of ``(term id, weight)`` pairs, stored as
:class:`SparseVectors` (CSR), and relevance is the dot product of query and document
weights — an inverted index scores it (see :mod:`embedstack.index.sparse`).

``splade-tiny`` (BERT-tiny, 2 layers) is the registry's default; it is installed once with
``embedstack models fetch splade-tiny`` (see :mod:`embedstack.encoders.fetch`). Any
``*ForMaskedLM`` folder with a ``tokenizer.json`` works too.

Example:
    >>> from embedstack.encoders.splade import SparseEncoder
    >>> enc = SparseEncoder("splade-tiny")                         # doctest: +SKIP
    >>> q = enc.encode_queries(["what is the capital of france?"])  # doctest: +SKIP
    >>> sorted(q.to_dicts(enc.tokenizer)[0].items(), key=lambda x: -x[1])[:2]  # doctest: +SKIP
    [('capital', 2.79), ('france', 2.36)]
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np

from embedstack._typing import FloatArray
from embedstack.encoders.base import batched, validate_texts
from embedstack.encoders.registry import find_model
from embedstack.encoders.runtime import (
    Graph,
    Head,
    Identified,
    ModelFolder,
    RuntimeOptions,
    load_tokenizer,
    make_runner,
    open_model,
    pad_batch,
)
from embedstack.encoders.runtime.heads import count_truncated, length_batches
from embedstack.encoders.sparse_vectors import SparseVectors, score
from embedstack.errors import DimensionMismatch, InvalidInput, ModelNotFound
from embedstack.settings import cache_dir as default_cache_dir

__all__ = ["SPLADE", "SparseEncoder", "SparseTextEncoder", "SparseVectors", "score"]

logger = logging.getLogger("embedstack")

DEFAULT_SPARSE_MODEL = "splade-tiny"
_CHUNK = 1024  # texts tokenized and sorted together


def _pooled(model: Any, feed: dict[str, Any]) -> Any:
    """SPLADE v2 max pooling inside the graph. Because ``log1p o ReLU`` is non-decreasing,
    the max of the masked logits comes first and ``log1p(ReLU(.))`` runs on ``(batch,
    vocab)`` only: the reference's numbers on ``seq`` times fewer values, and ONNX Runtime
    never hands ``(batch, seq, vocab)`` logits (31 MB for a 256-token text) to numpy."""
    import torch

    logits = model(**feed).logits
    mask = feed["attention_mask"].unsqueeze(-1).to(logits.dtype)
    # padding logits become 0, which ReLU would floor them to anyway
    return torch.log1p(torch.relu(torch.amax(logits * mask, dim=1)))


def _reference(model: Any, feed: dict[str, Any]) -> Any:
    """The formula as written: ``max_i mask_i * log(1 + ReLU(logit_ij))`` (torch backend)."""
    import torch

    logits = model(**feed).logits.float()
    mask = feed["attention_mask"].unsqueeze(-1).to(logits.dtype)
    return torch.amax(torch.log1p(torch.relu(logits)) * mask, dim=1)


SPLADE = Head(
    task="splade",
    prefix="splade",
    loader="AutoModelForMaskedLM",
    graphs=(Graph("model", "weights", _pooled, pooled=True),),
    reference=_reference,
    shipped="splade.onnx",  # a folder may ship its own pooled export
    info=lambda model: {"vocab_size": int(model.config.vocab_size), "pooled": True},
)
"""SPLADE's head: a masked LM whose graph ends in the pooling, ``(batch, vocab)`` out."""


@runtime_checkable
class SparseTextEncoder(Protocol):
    """What an index needs from a sparse encoder."""

    @property
    def name(self) -> str: ...

    @property
    def model_id(self) -> str: ...

    @property
    def vocab_size(self) -> int: ...

    def encode_queries(self, texts: Iterable[str]) -> SparseVectors: ...

    def encode_documents(self, texts: Iterable[str]) -> SparseVectors: ...


def resolve_sparse_model(name_or_path: str | os.PathLike[str]) -> ModelFolder:
    """The folder of a sparse model and the name it goes by.

    Raises:
        ModelNotFound: a fetchable model that was not fetched yet (the message gives the
            command), or weights found nowhere.
        InvalidInput: a registered model that is not sparse.
    """
    text = os.fspath(name_or_path)
    spec = find_model(text) if not Path(text).expanduser().is_dir() else None
    if spec is not None and spec.kind != "sparse":
        raise InvalidInput(
            f"{spec.name!r} is a {spec.kind} model; SparseEncoder needs a SPLADE (masked-LM) "
            "model such as 'splade-tiny'"
        )
    if spec is not None and spec.fetch and spec.bundled_path() is None:
        raise ModelNotFound(
            f"model {spec.name!r} is not installed: run `embedstack models fetch {spec.name}` "
            f"(or call embedstack.encoders.fetch.fetch({spec.name!r})) once"
        )
    return open_model(text)


class SparseEncoder(Identified):
    """SPLADE encoder: texts → :class:`SparseVectors` over the model's vocabulary.

    Args:
        name_or_path: registry name (``"splade-tiny"``) or a ``*ForMaskedLM`` folder with a
            ``tokenizer.json``.
        backend: ``"onnx"`` (an export that pools inside the graph, cached) or ``"torch"``
            (the reference).
        max_length: token limit (longer texts are truncated); default the registry entry's
            or 512.
        top_k: keep only the ``top_k`` heaviest terms of each text (both sides); None keeps
            every positive weight.
        query_top_k: overrides ``top_k`` for queries.
        doc_top_k: overrides ``top_k`` for documents.
        batch_tokens: token budget of one batch (rows × padded length); the logits of a
            batch take ``batch_tokens × vocab × 4`` bytes inside the runtime.
        batch_size: maximum rows in one batch.
        threads: inference threads; None uses every CPU available to the process.
        cache_dir: root of the ONNX export cache (default ``settings.cache_dir()``).

    Raises:
        ModelNotFound: weights not found (``splade-tiny`` not fetched yet: the message says
            how to fetch it).
        InvalidInput: an option out of range, or a model that is not sparse.
    """

    def __init__(
        self,
        name_or_path: str | os.PathLike[str] = DEFAULT_SPARSE_MODEL,
        *,
        backend: Literal["onnx", "torch"] | str = "onnx",
        max_length: int | None = None,
        top_k: int | None = None,
        query_top_k: int | None = None,
        doc_top_k: int | None = None,
        batch_tokens: int = 1024,
        batch_size: int = 32,
        threads: int | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        for label, value in (
            ("top_k", top_k),
            ("query_top_k", query_top_k),
            ("doc_top_k", doc_top_k),
        ):
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < 1
            ):
                raise InvalidInput(f"{label} must be a positive int or None, got {value!r}")
        if batch_tokens < 1 or batch_size < 1:
            raise InvalidInput("batch_tokens and batch_size must be >= 1")
        found = resolve_sparse_model(name_or_path)
        path, name = found.path, found.name
        import json

        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
        self._vocab = int(config["vocab_size"])
        positions = int(config.get("max_position_embeddings", 512))
        spec = find_model(name)
        default = min(spec.max_length if spec else positions, positions)
        if max_length is not None and not 1 <= max_length <= positions:
            raise InvalidInput(f"max_length must be in [1, {positions}], got {max_length}")
        self.max_length = max_length or default
        self.query_top_k = query_top_k if query_top_k is not None else top_k
        self.doc_top_k = doc_top_k if doc_top_k is not None else top_k
        self.batch_tokens, self.batch_size = batch_tokens, batch_size
        self.backend_name = backend
        self.path = path
        self.truncated = 0
        self.identity = found.identify()
        self.tokenizer = load_tokenizer(path, self.max_length)
        cache = Path(cache_dir) if cache_dir else default_cache_dir()
        options = RuntimeOptions(path, self.identity, cache, threads=threads)
        self._model = make_runner(backend, SPLADE, options)

    @property
    def vocab_size(self) -> int:
        """Number of terms a weight vector spans."""
        return self._vocab

    def __repr__(self) -> str:
        return f"SparseEncoder({self.name!r}, backend={self.backend_name!r})"

    def encode_queries(self, texts: Iterable[str]) -> SparseVectors:
        """Term weights of queries (pruned to ``query_top_k``).

        Raises:
            InvalidInput: empty input or a non-str/blank item.
        """
        return self._encode(texts, self.query_top_k)

    def encode_documents(self, texts: Iterable[str]) -> SparseVectors:
        """Term weights of documents (pruned to ``doc_top_k``). See :meth:`encode_queries`."""
        return self._encode(texts, self.doc_top_k)

    def iter_encode_documents(
        self, texts: Iterable[str], chunk_size: int = _CHUNK
    ) -> Iterator[SparseVectors]:
        """Stream document weights in blocks of ``chunk_size`` texts (bounded memory)."""
        start = 0
        for chunk in batched(texts, chunk_size):
            valid = validate_texts(chunk, start=start)
            start += len(valid)
            yield self._encode_chunk(valid, self.doc_top_k)

    def score(self, queries: SparseVectors, documents: SparseVectors) -> FloatArray:
        """``(n_queries, n_docs)`` float32 dot products (see :func:`score`)."""
        return score(queries, documents)

    def _encode(self, texts: Iterable[str], top_k: int | None) -> SparseVectors:
        items = validate_texts(texts)
        if not items:
            raise InvalidInput("nothing to encode: pass at least one text")
        parts = [self._encode_chunk(c, top_k) for c in batched(items, _CHUNK)]
        return parts[0] if len(parts) == 1 else SparseVectors.concat(parts, self._vocab)

    def _encode_chunk(self, texts: list[str], top_k: int | None) -> SparseVectors:
        encodings = self.tokenizer.encode_batch(texts, add_special_tokens=True)
        self.truncated += count_truncated(encodings, self.max_length)
        parts: list[tuple[np.ndarray, SparseVectors]] = []
        lengths = [len(e.ids) for e in encodings]
        for index in length_batches(lengths, self.batch_size, self.batch_tokens):
            batch = pad_batch(encodings, index)
            weights = self._model(batch)
            if weights.shape != (len(index), self._vocab):
                raise DimensionMismatch(
                    f"the model returned {weights.shape}, expected ({len(index)}, {self._vocab})"
                )
            parts.append((index, SparseVectors.from_dense(weights, top_k)))
        merged = SparseVectors.concat([p for _, p in parts], self._vocab)
        placed = np.concatenate([i for i, _ in parts])
        return merged.take(np.argsort(placed, kind="stable"))
