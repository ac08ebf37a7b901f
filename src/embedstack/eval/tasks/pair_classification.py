"""Pair classification: is a pair similar? Scored by thresholding a similarity, as MTEB does.

MTEB's ``AbsTaskPairClassification`` embeds both sides of every pair and, for each scoring
function (cosine and dot similarity, Euclidean and Manhattan distance, where a smaller
distance means more similar), reports:

* ``accuracy``: the best accuracy of a threshold placed between two consecutive scores of the
  sorted pairs (the threshold after the last pair is not tried, as in MTEB);
* ``f1``, ``precision``, ``recall``: the best F1 over the same thresholds and the precision and
  recall it comes with;
* ``ap``: the average precision of the ranking of the pairs by the score (scikit-learn's
  ``average_precision_score``, no threshold).

Each is reported as ``<function>_<metric>`` and the best over the functions as
``max_<metric>``; the main score is ``max_ap`` (MTEB's main score for its pair-classification
tasks). Pairs tied on a score are taken in file order, as MTEB's stable sort takes them.

Example:
    >>> import numpy as np
    >>> scores = threshold_scores(np.array([0.9, 0.8, 0.3]), np.array([1, 0, 1]))
    >>> round(scores["accuracy"], 4), round(scores["f1"], 4)
    (0.6667, 0.6667)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from embedstack.encoders.base import TextEncoder
from embedstack.errors import InvalidInput, require
from embedstack.eval.tasks.formats import Pairs
from embedstack.eval.tasks.options import TaskOptions, embed

__all__ = ["FUNCTIONS", "evaluate_pair_classification", "pair_scores", "threshold_scores"]

MAIN_METRIC = "max_ap"
FUNCTIONS = ("cosine", "dot", "euclidean", "manhattan")  # the last two: distances
METRICS = ("accuracy", "f1", "precision", "recall", "ap")


def threshold_scores(
    scores: np.ndarray, labels: np.ndarray, *, higher_is_similar: bool = True
) -> dict[str, float]:
    """Best-threshold accuracy and F1 (with its precision and recall) and the AP of ``scores``.

    Args:
        scores: ``(n,)`` one score a pair.
        labels: ``(n,)`` 1 for a similar pair, 0 otherwise; both must occur.
        higher_is_similar: False for distances.

    Returns:
        ``{"accuracy", "f1", "precision", "recall", "ap"}``.
    """
    require("sklearn", "eval", "pair-classification tasks")
    from sklearn.metrics import average_precision_score

    labels = np.asarray(labels, dtype=np.int64)
    scores = np.asarray(scores, dtype=np.float64)
    order = np.argsort(-scores if higher_is_similar else scores, kind="stable")
    ranked = labels[order][:-1]  # every cut after pair i, for i < n - 1
    positives = np.cumsum(ranked)  # similar pairs at or above the cut
    taken = np.arange(1, len(ranked) + 1)
    negatives_below = int((labels == 0).sum()) - np.cumsum(1 - ranked)
    accuracy = float(((positives + negatives_below) / len(labels)).max(initial=0.0))
    precision = positives / taken
    recall = positives / max(int(labels.sum()), 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(positives > 0, 2 * precision * recall / (precision + recall), 0.0)
    best = int(np.argmax(f1)) if len(f1) else 0  # the first cut reaching the best F1
    found = len(f1) > 0 and f1[best] > 0
    ap = average_precision_score(labels, scores if higher_is_similar else -scores)
    return {
        "accuracy": accuracy,
        "f1": float(f1[best]) if found else 0.0,
        "precision": float(precision[best]) if found else 0.0,
        "recall": float(recall[best]) if found else 0.0,
        "ap": float(ap),
    }


def pair_scores(left: np.ndarray, right: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Every function's metrics for pairs ``(left[i], right[i])``, and the best of each.

    Args:
        left: ``(n, dim)`` embeddings of the first sentences.
        right: ``(n, dim)`` embeddings of the second sentences.
        labels: ``(n,)`` 0/1.

    Returns:
        ``<function>_<metric>`` for every function of :data:`FUNCTIONS` and metric, and
        ``max_<metric>``.
    """
    labels = np.asarray(labels, dtype=np.int64)
    if labels.min(initial=1) == labels.max(initial=0) or len(labels) < 2:
        raise InvalidInput("pair classification needs pairs labelled 1 and pairs labelled 0")
    a = np.asarray(left, dtype=np.float64)
    b = np.asarray(right, dtype=np.float64)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    by_function = {
        "cosine": (np.sum(a * b, axis=1) / np.where(norms == 0, 1.0, norms), True),
        "dot": (np.sum(a * b, axis=1), True),
        "euclidean": (np.linalg.norm(a - b, axis=1), False),
        "manhattan": (np.abs(a - b).sum(axis=1), False),
    }
    out: dict[str, float] = {}
    for function, (values, higher) in by_function.items():
        for metric, value in threshold_scores(values, labels, higher_is_similar=higher).items():
            out[f"{function}_{metric}"] = value
    for metric in METRICS:
        out[f"max_{metric}"] = max(out[f"{function}_{metric}"] for function in FUNCTIONS)
    return out


def evaluate_pair_classification(
    encoder: TextEncoder, pairs: Pairs, options: TaskOptions
) -> dict[str, Any]:
    """Embed both sides of every pair (once per distinct text) and score them."""
    texts = pairs.sentences1 + pairs.sentences2
    matrix = embed(encoder, texts, options.dim)
    n = len(pairs.labels)
    report: dict[str, Any] = pair_scores(matrix[:n], matrix[n:], np.asarray(pairs.labels))
    report["n_examples"] = n
    return report
