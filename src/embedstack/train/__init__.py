"""Training: cross-encoder rerankers with mined hard negatives (CPU, torch).

Example:
    >>> from embedstack.train import train_reranker
    >>> train_reranker("../shared/datasets/scifact", out="/tmp/rr")  # doctest: +SKIP
"""

from __future__ import annotations

from embedstack.train.negatives import MinedNegatives, mine_hard_negatives, select_negatives
from embedstack.train.reranker import Group, TrainResult, build_groups, train_reranker

__all__ = [
    "Group",
    "MinedNegatives",
    "TrainResult",
    "build_groups",
    "mine_hard_negatives",
    "select_negatives",
    "train_reranker",
]
