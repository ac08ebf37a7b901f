"""Cross-encoder reranker: reads (query, document) together and scores their relevance.

A cross-encoder (Nogueira & Cho 2019, "Passage Re-ranking with BERT") runs one transformer
over ``[CLS] query [SEP] document [SEP]`` and maps the classification head's output to a
relevance score. It is far more accurate than a bi-encoder's dot product and far slower, so
it reorders the top candidates of a first-stage retriever (BM25, dense or hybrid).

Any Hugging Face ``*ForSequenceClassification`` folder works: one output label (the
MS MARCO cross-encoders, and models trained with :func:`embedstack.train.train_reranker`) or
two labels (not relevant / relevant, scored by the relevant class).

Example:
    >>> from embedstack.rerank import CrossEncoder
    >>> reranker = CrossEncoder("/tmp/reranker-scifact")  # doctest: +SKIP
    >>> reranker.rerank("do cats purr?", ["Dogs bark.", "Cats purr."])  # doctest: +SKIP
    [(1, 0.97), (0, 0.02)]
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from embedstack._typing import Backend, FloatArray
from embedstack.encoders.runtime import (
    CLASSIFIER,
    Head,
    Identified,
    ModelId,
    RuntimeOptions,
    list_backends,
    make_runner,
    open_model,
)
from embedstack.errors import InvalidInput, ModelNotFound
from embedstack.rerank.base import check_top_n, rank, validate_query_documents
from embedstack.rerank.pairs import PairTokenizer, length_batches, pad
from embedstack.rerank.split import CONFIG_KEY
from embedstack.settings import cache_dir as default_cache_dir
from embedstack.settings import progress_enabled

__all__ = ["Activation", "CrossEncoder", "CrossEncoderBase", "read_classifier_config", "sigmoid"]

logger = logging.getLogger("embedstack")

Activation = Literal["sigmoid", "none"]
MAX_LENGTH_CAP = 512


def read_classifier_config(folder: Path) -> dict[str, Any]:
    """What a classifier folder says about itself: ``num_labels``, its length limits,
    ``hidden_size`` and whether it is a split cross-encoder (``split``).

    ``max_positions`` (the hard limit) is the smaller of the position embeddings and 512;
    ``max_length`` (the default) is also capped by the tokenizer's ``model_max_length``
    when that is a real number (:func:`~embedstack.train.train_reranker` records the
    training length there).

    Raises:
        ModelNotFound: no readable ``config.json``.
    """
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelNotFound(
            f"{folder} has no readable config.json: it is not a Hugging Face model folder ({exc})"
        ) from exc
    if isinstance(config.get("id2label"), dict) and config["id2label"]:
        num_labels = len(config["id2label"])
    else:
        num_labels = int(config.get("num_labels", 2))
    positions = min(MAX_LENGTH_CAP, int(config.get("max_position_embeddings", MAX_LENGTH_CAP)))
    limits = [positions]
    tok_file = folder / "tokenizer_config.json"
    if tok_file.is_file():
        try:
            declared = json.loads(tok_file.read_text(encoding="utf-8")).get("model_max_length")
        except (OSError, json.JSONDecodeError):
            declared = None
        if isinstance(declared, int | float) and 0 < declared < 1_000_000:
            limits.append(int(declared))
    return {
        "num_labels": num_labels,
        "max_length": min(limits),
        "max_positions": positions,
        "model_type": str(config.get("model_type", "")),
        "hidden_size": int(config.get("hidden_size") or config.get("dim") or 0),
        "split": CONFIG_KEY in config,
        "architectures": list(config.get("architectures") or []),
    }


def check_options(
    *, backend: str, activation: object, quantize: object, batch_size: object
) -> None:
    """The options every cross-encoder class takes, checked before any model is loaded.

    Raises:
        InvalidInput: naming the bad option.
    """
    if activation not in (None, "sigmoid", "none"):
        raise InvalidInput(f"activation must be 'sigmoid', 'none' or None, got {activation!r}")
    if quantize not in (None, "int8"):
        raise InvalidInput(f"quantize must be None or 'int8', got {quantize!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidInput(f"batch_size must be a positive integer, got {batch_size!r}")
    if backend not in list_backends():
        raise InvalidInput(f"unknown backend {backend!r}; choose one of {list_backends()}")


def check_max_length(max_length: object, limit: int) -> None:
    """Raise :class:`InvalidInput` unless ``max_length`` is None or an int in ``[8, limit]``."""
    if max_length is not None and (
        isinstance(max_length, bool) or not isinstance(max_length, int)
        or not 8 <= max_length <= limit
    ):  # fmt: skip
        raise InvalidInput(f"max_length must be in [8, {limit}], got {max_length!r}")


def sigmoid(x: np.ndarray) -> FloatArray:
    """The logistic function, computed in float64 (``tanh`` form: no overflow)."""
    x64 = x.astype(np.float64)
    return (0.5 * (1.0 + np.tanh(0.5 * x64))).astype(np.float32)


class CrossEncoderBase(Identified):
    """What both cross-encoder classes share: the option checks, the model folder and its
    identity, and the runtime; a subclass's :meth:`_prepare` checks the folder's config,
    sets up its tokenizer and names the head to run. The options are documented on
    :class:`CrossEncoder`."""

    def __init__(
        self,
        model: str | os.PathLike[str],
        *,
        backend: Backend | str = "onnx",
        activation: Activation | None = None,
        max_length: int | None = None,
        batch_size: int = 32,
        threads: int | None = None,
        quantize: Literal["int8"] | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        show_progress: bool | None = False,
    ) -> None:
        check_options(backend=backend, activation=activation, quantize=quantize,
                      batch_size=batch_size)  # fmt: skip
        if backend == "torch" and quantize is not None:
            raise InvalidInput("quantize='int8' needs backend='onnx'")
        found = open_model(model, keep_name=True)
        info = read_classifier_config(found.path)
        check_max_length(max_length, int(info["max_positions"]))
        self.path = found.path
        self.activation: Activation = activation or "sigmoid"
        self.batch_size = batch_size
        self.backend_name = backend
        self.quantize = quantize
        self.show_progress = show_progress
        head = self._prepare(info, max_length)
        self.identity: ModelId = found.identify()
        cache = Path(cache_dir) if cache_dir else default_cache_dir()
        options = RuntimeOptions(self.path, self.identity, cache, quantize, threads)
        self._model = make_runner(backend, head, options)

    def _prepare(self, info: dict[str, Any], max_length: int | None) -> Head:
        """Check the folder's classifier config, set ``max_length`` and the tokenizer, and
        return the head to run.

        Raises:
            InvalidInput: the folder holds another kind of model.
        """
        raise NotImplementedError


class CrossEncoder(CrossEncoderBase):
    """A cross-encoder reranker for any Hugging Face sequence-classification model.

    Args:
        model: Local folder, or a Hugging Face id found in the local cache (or downloaded
            unless ``HF_HUB_OFFLINE`` is set).
        backend: ``"onnx"`` (ONNX Runtime over a cached, fused export; exported with torch
            once per weights) or ``"torch"`` (transformers, the reference).
        activation: ``"sigmoid"`` maps the score to a probability in (0, 1); ``"none"`` keeps
            the raw logit (log-odds). None means sigmoid. With two labels the raw score is
            ``logit[relevant] - logit[not relevant]``, whose sigmoid is the softmax
            probability of the relevant class.
        max_length: Tokens per (query, document) pair, at most the position embeddings and
            512; defaults to the tokenizer's ``model_max_length`` within that limit.
            Documents are truncated to fit; the query is kept (see
            :mod:`embedstack.rerank.pairs`).
        batch_size: Pairs per forward pass (pairs are sorted by length first).
        threads: Inference threads; None uses every CPU available to the process.
        quantize: ``"int8"`` for dynamically quantized weights (ONNX only), else None.
        cache_dir: Where exported ONNX models are cached (default ``settings.cache_dir()``).
        show_progress: Progress bar while scoring; None means "when stderr is a terminal".

    Raises:
        ModelNotFound: the weights cannot be found locally (the message lists where we
            looked), or the folder lacks ``config.json``/``tokenizer.json``.
        InvalidInput: an option is out of range, the folder holds no classification model
            (e.g. a bi-encoder), or the model has more than two labels.

    Example:
        >>> reranker = CrossEncoder("my-reranker", backend="onnx")  # doctest: +SKIP
        >>> reranker.score("query", ["doc a", "doc b"]).shape  # doctest: +SKIP
        (2,)
    """

    def _prepare(self, info: dict[str, Any], max_length: int | None) -> Head:
        path = self.path
        heads = info["architectures"]
        if heads and not any(str(a).endswith("ForSequenceClassification") for a in heads):
            raise InvalidInput(
                f"{path} holds a {', '.join(map(str, heads))}, not a *ForSequenceClassification "
                "model: a cross-encoder needs a classification head (train one with "
                "`embedstack train reranker`)"
            )
        if info["split"]:
            raise InvalidInput(
                f"{path} is a split cross-encoder (its first layers read query and document "
                "apart): load it with load_reranker() or SplitCrossEncoder"
            )
        if info["num_labels"] not in (1, 2):
            raise InvalidInput(
                f"{path} is a classifier with {info['num_labels']} labels; a reranker needs "
                "1 (relevance score) or 2 (not relevant / relevant)"
            )
        self.num_labels = int(info["num_labels"])
        self.max_length = max_length or int(info["max_length"])
        self.tokenizer = PairTokenizer(path, self.max_length)
        return CLASSIFIER

    # -- identity ---------------------------------------------------------------------------
    def __repr__(self) -> str:
        quant = f", quantize={self.quantize!r}" if self.quantize else ""
        return (
            f"CrossEncoder({self.name!r}, backend={self.backend_name!r}{quant}, "
            f"max_length={self.max_length})"
        )

    # -- scoring ----------------------------------------------------------------------------
    def score(self, query: str, documents: Sequence[str]) -> FloatArray:
        """Relevance of each document to ``query``.

        Args:
            query: A non-blank query.
            documents: Non-blank documents (at least one).

        Returns:
            ``(len(documents),) float32`` in input order; higher is more relevant. With
            ``activation="sigmoid"`` the scores are probabilities in (0, 1).

        Raises:
            InvalidInput: blank or non-str query or document, or no documents.
        """
        query, docs = validate_query_documents(query, documents)
        raw = self._raw_scores(query, docs)
        return sigmoid(raw) if self.activation == "sigmoid" else raw

    def rerank(
        self, query: str, documents: Sequence[str], top_n: int | None = None
    ) -> list[tuple[int, float]]:
        """Documents ordered by relevance: ``(index in documents, score)``, best first.

        Ties keep the lower index first. ``top_n`` keeps the best ``top_n`` (None keeps all).

        Raises:
            InvalidInput: as :meth:`score`, or ``top_n`` not a positive integer.
        """
        check_top_n(top_n)
        return rank(self.score(query, documents), top_n)

    def _raw_scores(self, query: str, docs: list[str]) -> FloatArray:
        encodings = self.tokenizer.encode(query, docs)
        out = np.empty(len(docs), dtype=np.float32)
        batches = list(length_batches(encodings, self.batch_size))
        show = progress_enabled(self.show_progress) and len(batches) > 1
        if not show:
            for rows in batches:
                out[rows] = self._logits_to_raw(self._model(pad(encodings, rows)))
            return out
        from rich.progress import Progress

        with Progress(transient=True) as progress:
            task = progress.add_task(f"reranking with {self.name}", total=len(docs))
            for rows in batches:
                out[rows] = self._logits_to_raw(self._model(pad(encodings, rows)))
                progress.advance(task, len(rows))
        return out

    def _logits_to_raw(self, logits: FloatArray) -> FloatArray:
        logits = np.asarray(logits, dtype=np.float32).reshape(len(logits), -1)
        if logits.shape[1] != self.num_labels:
            raise ModelNotFound(
                f"{self.path}: the model returned {logits.shape[1]} logits, its config says "
                f"{self.num_labels}; the folder is inconsistent"
            )
        if self.num_labels == 1:
            return logits[:, 0].copy()
        return (logits[:, 1] - logits[:, 0]).astype(np.float32)
