"""Inference backends of the cross-encoder: a padded batch in, ``(batch, num_labels)`` logits out.

``onnx`` runs ONNX Runtime over the cached export (:mod:`embedstack.rerank.onnx_export`);
``torch`` runs transformers' ``AutoModelForSequenceClassification``, the reference the ONNX
outputs are tested against.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from embedstack._typing import FloatArray
from embedstack.encoders.backends import _threads, ort_session
from embedstack.errors import InvalidInput, require

__all__ = ["ClassifierOptions", "LogitModel", "make_classifier"]

Batch = dict[str, np.ndarray]


class LogitModel(Protocol):
    """What a backend provides: classification logits for a padded batch."""

    input_names: tuple[str, ...]

    def __call__(self, batch: Batch) -> FloatArray: ...


@dataclass(frozen=True)
class ClassifierOptions:
    """Options every reranker backend receives.

    Attributes:
        model_path: Folder with the Hugging Face ``*ForSequenceClassification`` weights.
        name: Model name (for cache folder names and messages).
        weights: SHA-256 of the weights.
        cache_dir: Root of embedstack's cache.
        quantize: ``None`` or ``"int8"`` (ONNX only).
        threads: Intra-op threads; None uses every CPU available to the process.
    """

    model_path: Path
    name: str
    weights: str
    cache_dir: Path
    quantize: str | None = None
    threads: int | None = None


class OnnxClassifier:
    """ONNX Runtime session over the cached, fused export of a classifier."""

    def __init__(self, options: ClassifierOptions) -> None:

        from embedstack.rerank.onnx_export import ensure_rerank_onnx

        self.path = ensure_rerank_onnx(
            options.model_path,
            name=options.name,
            weights=options.weights,
            cache_root=options.cache_dir,
            variant="int8" if options.quantize == "int8" else "fp32",
        )
        self.session = ort_session(self.path, options.threads)
        self.input_names = tuple(i.name for i in self.session.get_inputs())

    def __call__(self, batch: Batch) -> FloatArray:
        feed = {name: batch[name] for name in self.input_names}
        return np.asarray(self.session.run(None, feed)[0], dtype=np.float32)


class TorchClassifier:
    """transformers ``AutoModelForSequenceClassification`` in eval mode (the reference)."""

    def __init__(self, options: ClassifierOptions) -> None:
        if options.quantize is not None:
            raise InvalidInput("quantize='int8' needs backend='onnx'")
        self._torch: Any = require("torch", "torch", "the torch reranker backend")
        transformers = require("transformers", "torch", "the torch reranker backend")
        self.threads = _threads(options.threads)
        self.model: Any = transformers.AutoModelForSequenceClassification.from_pretrained(
            options.model_path
        ).eval()
        accepts = inspect.signature(self.model.forward).parameters
        names = ["input_ids", "attention_mask"]
        if "token_type_ids" in accepts and int(
            getattr(self.model.config, "type_vocab_size", 0) or 0
        ):
            names.append("token_type_ids")
        self.input_names = tuple(names)

    def __call__(self, batch: Batch) -> FloatArray:
        torch = self._torch
        previous = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            with torch.inference_mode():
                feed = {n: torch.from_numpy(batch[n]) for n in self.input_names}
                logits = self.model(**feed).logits
            return np.asarray(logits.float().numpy(), dtype=np.float32)
        finally:
            torch.set_num_threads(previous)


_BACKENDS: dict[str, Any] = {"onnx": OnnxClassifier, "torch": TorchClassifier}


def make_classifier(name: str, options: ClassifierOptions) -> LogitModel:
    """Build a reranker backend by name (``"onnx"`` or ``"torch"``).

    Raises:
        InvalidInput: unknown backend name.
    """
    if name not in _BACKENDS:
        raise InvalidInput(f"unknown backend {name!r}; choose one of {sorted(_BACKENDS)}")
    model: LogitModel = _BACKENDS[name](options)
    return model
