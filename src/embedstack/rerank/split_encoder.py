"""A split cross-encoder (PreTTR) at inference: score pairs, or score stored document states.

:class:`SplitCrossEncoder` loads a folder trained with ``split_layer=``
(:mod:`embedstack.rerank.split`). It is a :class:`~embedstack.rerank.Reranker` (``score``
runs the whole model, lower layers included) and, for an index, a token-level encoder:
``encode_documents`` returns each document's states after the split layer (what an
:class:`~embedstack.index.Index` created with ``colbert=`` a split cross-encoder stores),
and ``score_states`` runs only the layers above the split over the query's states joined
with stored document states. The two paths give the same scores.

Example:
    >>> from embedstack.rerank import load_reranker
    >>> reranker = load_reranker("/tmp/rr-split")  # doctest: +SKIP
    >>> states = reranker.encode_documents(["Cats purr.", "Dogs bark."])  # doctest: +SKIP
    >>> q = reranker.encode_queries(["do cats purr?"]).doc(0)  # doctest: +SKIP
    >>> reranker.score_states(q, states)  # doctest: +SKIP
    array([0.97, 0.02], dtype=float32)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from embedstack._typing import FloatArray
from embedstack.encoders.multivector import TokenVectors
from embedstack.encoders.runtime import Head
from embedstack.errors import DimensionMismatch, InvalidInput, ModelNotFound
from embedstack.rerank.base import check_top_n, rank, validate_query_documents
from embedstack.rerank.cross import CrossEncoderBase, read_classifier_config, sigmoid
from embedstack.rerank.split import SplitTokenizer, read_split, segment_batch, split_head

__all__ = ["SplitCrossEncoder", "is_split"]


def is_split(folder: Path) -> bool:
    """Whether ``folder`` holds a split cross-encoder (its ``config.json`` says so).

    Raises:
        ModelNotFound: no readable ``config.json``.
    """
    return bool(read_classifier_config(folder)["split"])


class SplitCrossEncoder(CrossEncoderBase):
    """A cross-encoder whose first layers read query and document apart.

    Args:
        model: Folder (or Hugging Face id in the local cache) of a split cross-encoder.
        backend: ``"onnx"`` (two cached graphs) or ``"torch"`` (the reference).
        activation: ``"sigmoid"`` (default) or ``"none"`` (raw logits), as
            :class:`~embedstack.rerank.CrossEncoder`.
        max_length: Tokens of a joined pair; defaults to the training length recorded in the
            tokenizer config. The query segment keeps its trained length.
        batch_size: Documents per forward pass.
        threads: Inference threads; None uses every CPU available to the process.
        quantize: ``"int8"`` for dynamically quantized weights (ONNX only), else None.
        cache_dir: Where exported ONNX models are cached.
        show_progress: Accepted for interface parity with ``CrossEncoder``; unused.

    Raises:
        ModelNotFound: the weights cannot be found, or the folder is not a split model.
        InvalidInput: an option out of range, or a model with other than one label.
    """

    def _prepare(self, info: dict[str, Any], max_length: int | None) -> Head:
        spec = read_split(self.path, max_length or int(info["max_length"]))
        if spec is None:
            raise ModelNotFound(
                f"{self.path} is not a split cross-encoder (no split in config.json)"
            )
        if info["num_labels"] != 1:
            raise InvalidInput(
                f"{self.path}: a split cross-encoder has one label, not {info['num_labels']}"
            )
        self.spec = spec
        self.max_length = spec.max_length
        self.tokenizer = SplitTokenizer(self.path, spec)
        self._dim = int(info["hidden_size"])
        return split_head(spec.layer)

    # -- identity ---------------------------------------------------------------------------
    @property
    def dim(self) -> int:
        """Width of the states after the split layer (the hidden size)."""
        return self._dim

    @property
    def doc_maxlen(self) -> int:
        """Tokens of a document segment (what an index records of the stored states)."""
        return self.spec.doc_length

    def __repr__(self) -> str:
        quant = f", quantize={self.quantize!r}" if self.quantize else ""
        return (
            f"SplitCrossEncoder({self.name!r}, backend={self.backend_name!r}{quant}, "
            f"layer={self.spec.layer}, max_length={self.max_length})"
        )

    # -- states -----------------------------------------------------------------------------
    def _states(self, ids: list[list[int]], *, document: bool) -> TokenVectors:
        parts: list[np.ndarray] = [np.zeros((0, self._dim), np.float32)] * len(ids)
        order = np.argsort([-len(row) for row in ids], kind="stable")
        for start in range(0, len(order), self.batch_size):
            rows = order[start : start + self.batch_size]
            chosen = [ids[i] for i in rows]
            batch = segment_batch(chosen, document=document, spec=self.spec)
            states = self._model.run("lower", batch)
            for k, i in enumerate(rows):
                parts[i] = states[k, : len(ids[i])]
        return TokenVectors.from_arrays(parts)

    def encode_queries(self, texts: Sequence[str]) -> TokenVectors:
        """The query segments' states after the split layer (one row per token)."""
        return self._states(self.tokenizer.queries(_texts(texts)), document=False)

    def encode_documents(self, texts: Sequence[str]) -> TokenVectors:
        """The document segments' states after the split layer; they depend on the
        document alone, so an index can store them."""
        return self._states(self.tokenizer.documents(_texts(texts)), document=True)

    # -- scoring ----------------------------------------------------------------------------
    def score(self, query: str, documents: Sequence[str]) -> FloatArray:
        """Relevance of each document to ``query`` (the whole model runs).

        Raises:
            InvalidInput: blank or non-str query or document, or no documents.
        """
        query, docs = validate_query_documents(query, documents)
        return self.score_states(self.encode_queries([query]).doc(0), self.encode_documents(docs))

    def score_states(self, query: np.ndarray, documents: TokenVectors) -> FloatArray:
        """Scores of stored document states against a query's states: only the layers
        above the split run, over ``[query states; document states]`` per document.

        Args:
            query: ``(query tokens, dim)`` from :meth:`encode_queries`.
            documents: From :meth:`encode_documents` (any precision).

        Raises:
            DimensionMismatch: states of another width.
        """
        q = np.asarray(query, dtype=np.float32)
        if q.ndim != 2 or q.shape[1] != self._dim or documents.dim != self._dim:
            raise DimensionMismatch(
                f"states must be (tokens, {self._dim}); got query {q.shape} and documents "
                f"of width {documents.dim}"
            )
        lengths = documents.lengths
        raw = np.empty(len(documents), dtype=np.float32)
        order = np.argsort(-lengths, kind="stable")
        for start in range(0, len(order), self.batch_size):
            rows = order[start : start + self.batch_size]
            width = len(q) + int(lengths[rows].max(initial=0))
            states = np.zeros((len(rows), width, self._dim), dtype=np.float32)
            mask = np.zeros((len(rows), width), dtype=np.int64)
            states[:, : len(q)] = q
            for k, i in enumerate(rows):
                n = int(lengths[i])
                states[k, len(q) : len(q) + n] = documents.doc(int(i))
                mask[k, : len(q) + n] = 1
            raw[rows] = self._model.run("upper", {"states": states, "attention_mask": mask})[:, 0]
        return sigmoid(raw) if self.activation == "sigmoid" else raw

    def rerank(
        self, query: str, documents: Sequence[str], top_n: int | None = None
    ) -> list[tuple[int, float]]:
        """Documents ordered by relevance, as :meth:`CrossEncoder.rerank`."""
        check_top_n(top_n)
        return rank(self.score(query, documents), top_n)


def _texts(texts: Sequence[str]) -> list[str]:
    from embedstack.encoders.base import validate_texts

    return list(validate_texts(texts))
