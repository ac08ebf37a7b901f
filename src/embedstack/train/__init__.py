"""Training: bi-encoders, cross-encoder rerankers and ColBERT models with mined hard negatives
(CPU, torch).

Each trainer takes one frozen config (:mod:`embedstack.train.config`): the options every
trainer shares live in :class:`TrainConfig`, a trainer's own in its subclass
(:class:`RerankerConfig`, :class:`ColbertConfig`, :class:`EmbedderConfig`).

Example:
    >>> from embedstack.train import ColbertConfig, train_colbert, train_reranker
    >>> train_reranker("../shared/datasets/scifact", out="/tmp/rr")  # doctest: +SKIP
    >>> config = ColbertConfig(dataset_dir="../shared/datasets/scifact", out="/tmp/colbert")
    >>> train_colbert(config)  # doctest: +SKIP
    >>> from embedstack.train import train_embedder
    >>> train_embedder("pairs.jsonl", out="/tmp/emb", matryoshka_dims="64")  # doctest: +SKIP
"""

from __future__ import annotations

from embedstack.train.colbert import train_colbert
from embedstack.train.common import Group, TrainResult, build_groups
from embedstack.train.config import ColbertConfig, RerankerConfig, TrainConfig
from embedstack.train.embedder import EmbedderResult, train_embedder
from embedstack.train.embedder_config import EmbedderConfig
from embedstack.train.negatives import MinedNegatives, mine_hard_negatives, select_negatives
from embedstack.train.reranker import train_reranker

__all__ = [
    "ColbertConfig",
    "EmbedderConfig",
    "EmbedderResult",
    "Group",
    "MinedNegatives",
    "RerankerConfig",
    "TrainConfig",
    "TrainResult",
    "build_groups",
    "mine_hard_negatives",
    "select_negatives",
    "train_colbert",
    "train_embedder",
    "train_reranker",
]
