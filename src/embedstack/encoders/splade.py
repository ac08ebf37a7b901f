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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np

from embedstack._typing import FloatArray
from embedstack.encoders._splade_backends import SpladeOptions, make_splade_backend
from embedstack.encoders.base import batched, validate_texts
from embedstack.encoders.loading import resolve_model_dir, weights_hash
from embedstack.encoders.registry import find_model
from embedstack.errors import DimensionMismatch, InvalidInput, ModelNotFound
from embedstack.settings import cache_dir as default_cache_dir

__all__ = ["SparseEncoder", "SparseTextEncoder", "SparseVectors", "score"]

logger = logging.getLogger("embedstack")

DEFAULT_SPARSE_MODEL = "splade-tiny"
_CHUNK = 1024  # texts tokenized and sorted together


@dataclass(frozen=True)
class SparseVectors:
    """Rows of term weights over a vocabulary, in CSR form.

    Attributes:
        indptr: ``(n + 1,)`` int64; row ``i`` is ``indices/values[indptr[i]:indptr[i+1]]``.
        indices: ``(nnz,)`` int32 term ids, ascending within a row.
        values: ``(nnz,)`` float32 weights, all ``> 0``.
        vocab_size: number of terms (columns).

    Raises:
        InvalidInput: inconsistent arrays.
    """

    indptr: np.ndarray
    indices: np.ndarray
    values: np.ndarray
    vocab_size: int

    def __post_init__(self) -> None:
        p, i, v = self.indptr, self.indices, self.values
        if p.ndim != 1 or len(p) < 1 or int(p[0]) != 0 or int(p[-1]) != len(i):
            raise InvalidInput("SparseVectors: indptr must start at 0 and end at nnz")
        if len(i) != len(v) or (len(p) > 1 and bool(np.any(np.diff(p) < 0))):
            raise InvalidInput("SparseVectors: indices and values must align with indptr")
        if len(i) and (int(i.min()) < 0 or int(i.max()) >= self.vocab_size):
            raise InvalidInput(f"SparseVectors: term ids must be in [0, {self.vocab_size})")

    def __len__(self) -> int:
        return len(self.indptr) - 1

    @property
    def nnz(self) -> int:
        """Stored (non-zero) weights in all rows."""
        return len(self.indices)

    def row(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """``(term ids, weights)`` of row ``i``."""
        a, b = int(self.indptr[i]), int(self.indptr[i + 1])
        return self.indices[a:b], self.values[a:b]

    def to_dense(self) -> FloatArray:
        """``(n, vocab_size)`` float32 (for small inputs: tests and inspection)."""
        out = np.zeros((len(self), self.vocab_size), dtype=np.float32)
        rows = np.repeat(np.arange(len(self)), np.diff(self.indptr))
        out[rows, self.indices] = self.values
        return out

    def to_dicts(self, tokenizer: Any) -> list[dict[str, float]]:
        """``[{token: weight}]`` per row, heaviest first; ``tokenizer`` maps ids to tokens
        (``id_to_token``, e.g. :attr:`SparseEncoder.tokenizer`)."""
        out = []
        for i in range(len(self)):
            ids, w = self.row(i)
            order = np.argsort(-w, kind="stable")
            out.append({str(tokenizer.id_to_token(int(ids[j]))): float(w[j]) for j in order})
        return out

    def take(self, rows: Iterable[int] | np.ndarray) -> SparseVectors:
        """The selected rows, in the given order."""
        sel = np.asarray(list(rows) if not isinstance(rows, np.ndarray) else rows, np.int64)
        starts, ends = self.indptr[sel], self.indptr[sel + 1]
        lengths = ends - starts
        indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        gather = _ranges(starts, lengths)
        return SparseVectors(indptr, self.indices[gather], self.values[gather], self.vocab_size)

    @staticmethod
    def concat(parts: list[SparseVectors], vocab_size: int) -> SparseVectors:
        """Rows of ``parts`` one after another (all over ``vocab_size`` terms)."""
        if any(p.vocab_size != vocab_size for p in parts):
            raise DimensionMismatch("cannot concatenate SparseVectors of different vocabularies")
        if not parts:
            return SparseVectors.from_dense(np.zeros((0, vocab_size), np.float32))
        offsets = np.cumsum([0] + [p.nnz for p in parts[:-1]])
        indptr = np.concatenate(
            [[0]] + [p.indptr[1:] + off for p, off in zip(parts, offsets, strict=True)]
        ).astype(np.int64)
        return SparseVectors(
            indptr,
            np.concatenate([p.indices for p in parts]),
            np.concatenate([p.values for p in parts]),
            vocab_size,
        )

    @classmethod
    def from_dense(cls, weights: np.ndarray, top_k: int | None = None) -> SparseVectors:
        """CSR of the positive entries of ``(n, vocab)`` ``weights``; with ``top_k``, only
        the ``top_k`` largest of each row (ties broken towards lower term ids)."""
        w = np.asarray(weights, dtype=np.float32)
        if w.ndim != 2:
            raise InvalidInput(f"weights must be (n, vocab), got shape {w.shape}")
        rows, cols = np.nonzero(w > 0)  # row-major: term ids ascend within a row
        vals = w[rows, cols]
        if top_k is not None:
            order = np.lexsort((cols, -vals, rows))  # by row, heaviest first, then term id
            starts = np.searchsorted(rows[order], rows[order], side="left")
            keep = np.sort(order[np.arange(len(order)) - starts < top_k])
            rows, cols, vals = rows[keep], cols[keep], vals[keep]
        indptr = np.zeros(len(w) + 1, dtype=np.int64)
        np.cumsum(np.bincount(rows, minlength=len(w)), out=indptr[1:])
        return cls(indptr, cols.astype(np.int32), vals.astype(np.float32), w.shape[1])


def _ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenation of ``arange(s, s + n)`` for each ``(s, n)``, vectorised."""
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    shift = np.repeat(starts - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths)
    return (np.arange(total, dtype=np.int64) + shift).astype(np.int64)


def score(queries: SparseVectors, documents: SparseVectors) -> FloatArray:
    """Dot products of every query with every document: ``(n_queries, n_docs)`` float32.

    Raises:
        DimensionMismatch: the two sides use different vocabularies.
    """
    if queries.vocab_size != documents.vocab_size:
        raise DimensionMismatch(
            f"queries have {queries.vocab_size} terms, documents {documents.vocab_size}"
        )
    out = np.zeros((len(queries), len(documents)), dtype=np.float32)
    if not len(documents) or not documents.nnz:
        return out
    doc_rows = np.repeat(np.arange(len(documents)), np.diff(documents.indptr))
    for q0 in range(0, len(queries), 64):
        q = queries.take(np.arange(q0, min(q0 + 64, len(queries)))).to_dense()
        contrib = q[:, documents.indices].astype(np.float64) * documents.values
        for j in range(len(q)):
            out[q0 + j] = np.bincount(doc_rows, weights=contrib[j], minlength=len(documents))
    return out


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


def resolve_sparse_model(name_or_path: str | os.PathLike[str]) -> tuple[Path, str]:
    """The folder of a sparse model and its display name.

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
    path, found = resolve_model_dir(text)
    return path, found.name if found is not None else text


class SparseEncoder:
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
        path, self._name = resolve_sparse_model(name_or_path)
        import json

        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
        self._vocab = int(config["vocab_size"])
        positions = int(config.get("max_position_embeddings", 512))
        spec = find_model(self._name)
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
        self.weights_hash = weights_hash(path)
        self.tokenizer = self._load_tokenizer(path)
        self._model = make_splade_backend(
            backend,
            SpladeOptions(
                path,
                self._name,
                self.weights_hash,
                Path(cache_dir) if cache_dir else default_cache_dir(),
                threads,
            ),
        )

    def _load_tokenizer(self, folder: Path) -> Any:
        from tokenizers import Tokenizer

        file = folder / "tokenizer.json"
        if not file.is_file():
            raise ModelNotFound(f"{folder} has no tokenizer.json; save a fast tokenizer there")
        tok = Tokenizer.from_file(str(file))
        tok.no_padding()
        tok.enable_truncation(self.max_length)
        return tok

    @property
    def name(self) -> str:
        """Registry name or path of the model."""
        return self._name

    @property
    def model_id(self) -> str:
        """Name plus the first 16 hex digits of the weights' SHA-256 (stored in indexes)."""
        return f"{self._name}@{self.weights_hash[:16]}"

    @property
    def vocab_size(self) -> int:
        """Number of terms a weight vector spans."""
        return self._vocab

    def __repr__(self) -> str:
        return f"SparseEncoder({self._name!r}, backend={self.backend_name!r})"

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
        truncated = sum(1 for e in encodings if e.overflowing)
        if truncated:
            self.truncated += truncated
            logger.info(
                "%d of %d inputs were truncated to %d tokens",
                truncated,
                len(texts),
                self.max_length,
            )
        lengths = np.array([len(e.ids) for e in encodings])
        order = np.argsort(-lengths, kind="stable")
        parts: list[tuple[np.ndarray, SparseVectors]] = []
        start = 0
        while start < len(order):
            width = int(lengths[order[start]])
            rows = max(1, min(self.batch_size, self.batch_tokens // max(width, 1)))
            index = order[start : start + rows]
            start += rows
            batch = {
                n: np.zeros((len(index), width), dtype=np.int64)
                for n in ("input_ids", "attention_mask", "token_type_ids")
            }
            for row, i in enumerate(index):
                enc = encodings[i]
                batch["input_ids"][row, : len(enc.ids)] = enc.ids
                batch["attention_mask"][row, : len(enc.ids)] = 1
                batch["token_type_ids"][row, : len(enc.ids)] = enc.type_ids
            weights = self._model(batch)
            if weights.shape != (len(index), self._vocab):
                raise DimensionMismatch(
                    f"the model returned {weights.shape}, expected ({len(index)}, {self._vocab})"
                )
            parts.append((index, SparseVectors.from_dense(weights, top_k)))
        merged = SparseVectors.concat([p for _, p in parts], self._vocab)
        placed = np.concatenate([i for i, _ in parts])
        return merged.take(np.argsort(placed, kind="stable"))
