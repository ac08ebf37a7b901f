"""Training: cross-encoder rerankers and ColBERT models with mined hard negatives (CPU, torch).

Example:
    >>> from embedstack.train import train_colbert, train_reranker
    >>> train_reranker("../shared/datasets/scifact", out="/tmp/rr")  # doctest: +SKIP
    >>> train_colbert("../shared/datasets/scifact", out="/tmp/colbert")  # doctest: +SKIP
"""

from __future__ import annotations

from embedstack.train.colbert import train_colbert
from embedstack.train.common import Group, TrainResult, build_groups
from embedstack.train.negatives import MinedNegatives, mine_hard_negatives, select_negatives
from embedstack.train.reranker import train_reranker

__all__ = [
    "Group",
    "MinedNegatives",
    "TrainResult",
    "build_groups",
    "mine_hard_negatives",
    "select_negatives",
    "train_colbert",
    "train_reranker",
]
