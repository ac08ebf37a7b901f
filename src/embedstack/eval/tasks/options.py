"""The options of a task evaluation, as one frozen object, and the encoding they imply."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from embedstack import vectors
from embedstack.encoders.base import TextEncoder
from embedstack.errors import DimensionMismatch, InvalidInput

__all__ = ["TaskOptions", "embed"]


@dataclass(frozen=True)
class TaskOptions:
    """How a task is evaluated; the defaults are MTEB's.

    Attributes:
        split: The evaluated split (``<split>.jsonl`` in a folder, or the lines whose
            ``"split"`` field says so in a single file).
        dim: Matryoshka truncation of every embedding (re-normalized); ``None`` keeps the
            model's full dimension.
        seed: Seeds the training-set sampling and the classifier (classification) and
            k-means (clustering). MTEB's tasks default to 42.
        n_experiments: Classification: classifiers trained, each on a fresh sample; the
            scores are their means (MTEB ``n_experiments``).
        samples_per_label: Classification: training examples drawn per label for each
            experiment (MTEB ``samples_per_label``).
        max_iter: Classification: iterations of the logistic regression (MTEB: 100).
        kmeans_batch_size: Clustering: mini-batch size of k-means (MTEB: 500).
        mrr_k: Reranking: cut-off of the reciprocal rank (MTEB: 10).
    """

    split: str = "test"
    dim: int | None = None
    seed: int = 42
    n_experiments: int = 10
    samples_per_label: int = 8
    max_iter: int = 100
    kmeans_batch_size: int = 500
    mrr_k: int = 10

    def __post_init__(self) -> None:
        if not self.split or "/" in self.split or self.split.startswith("."):
            raise InvalidInput(f"invalid split name {self.split!r}; use e.g. 'test' or 'dev'")
        if self.dim is not None and self.dim < 1:
            raise DimensionMismatch(f"dim must be >= 1, got {self.dim}")
        for name in (
            "n_experiments",
            "samples_per_label",
            "max_iter",
            "kmeans_batch_size",
            "mrr_k",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidInput(f"{name} must be an integer >= 1, got {value!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise InvalidInput(f"seed must be an integer >= 0, got {self.seed!r}")

    @classmethod
    def from_kwargs(cls, options: dict[str, Any]) -> TaskOptions:
        """Build from keyword arguments, naming the valid ones when one is unknown."""
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(options) - set(names))
        if unknown:
            raise InvalidInput(
                f"unknown task option(s) {', '.join(unknown)}; valid: {', '.join(names)}"
            )
        return cls(**options)


def embed(
    encoder: TextEncoder,
    texts: Sequence[str],
    dim: int | None,
    kind: Literal["text", "query", "document"] = "text",
) -> np.ndarray:
    """Encode ``texts`` once each (duplicates share a row) as ``(n, dim) float32``.

    ``kind`` picks the encoder's method: ``text`` is :meth:`encode` (symmetric, no prefix),
    as MTEB encodes classification, clustering and pair-classification inputs; ``query`` and
    ``document`` add the model's prefixes, as MTEB's reranking does.
    """
    unique = list(dict.fromkeys(texts))
    method = {
        "text": encoder.encode,
        "query": encoder.encode_queries,
        "document": encoder.encode_documents,
    }[kind]
    matrix = np.asarray(method(unique), dtype=np.float32)
    if dim is not None and dim != matrix.shape[1]:
        if dim > matrix.shape[1]:
            raise DimensionMismatch(f"dim must be in [1, {matrix.shape[1]}], got {dim}")
        matrix = vectors.truncate(matrix, dim)
    row = {text: i for i, text in enumerate(unique)}
    return matrix[[row[t] for t in texts]]
