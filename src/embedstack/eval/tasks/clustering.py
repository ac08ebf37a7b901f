"""Clustering: the V-measure of mini-batch k-means on embeddings, with MTEB's protocol.

MTEB's clustering tasks (``AbsTaskClusteringLegacy`` with its ``ClusteringEvaluator``) fit,
per clustering set, one ``MiniBatchKMeans`` with as many clusters as the set has gold labels,
``batch_size=500``, k-means++ initialisation run once (``n_init="auto"``, which is 1 for
k-means++) and ``random_state=seed``, then score its assignment against the gold labels with
the V-measure (Rosenberg & Hirschberg 2007), the harmonic mean of homogeneity and
completeness. A set with a single label scores 1.0 without being clustered, as in MTEB. The
main score is the mean V-measure over the sets.

Example:
    >>> import numpy as np
    >>> points = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9]], dtype=np.float32)
    >>> cluster(points, ["x", "x", "y", "y"])
    1.0
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from embedstack.encoders.base import TextEncoder
from embedstack.errors import require
from embedstack.eval.tasks.formats import LabelledTexts
from embedstack.eval.tasks.options import TaskOptions, embed

__all__ = ["cluster", "evaluate_clustering"]

MAIN_METRIC = "v_measure"


def cluster(
    embeddings: np.ndarray, labels: Sequence[str], *, seed: int = 42, batch_size: int = 500
) -> float:
    """The V-measure of MTEB's mini-batch k-means clustering of one set.

    Args:
        embeddings: ``(n, dim)`` float32.
        labels: The gold label of each row; k is the number of distinct labels.
        seed: ``random_state`` of k-means.
        batch_size: Its mini-batch size.

    Returns:
        V-measure in [0, 1]; 1.0 for a set with one label.
    """
    k = len(set(labels))
    if k <= 1:
        return 1.0
    require("sklearn", "eval", "clustering tasks")
    from sklearn.cluster import MiniBatchKMeans
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.metrics import v_measure_score

    model = MiniBatchKMeans(
        n_clusters=k, batch_size=batch_size, n_init=1, random_state=seed, compute_labels=True
    )
    with warnings.catch_warnings():
        # fewer distinct points than labels: k-means says so, the V-measure shows it
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(embeddings)
    return float(v_measure_score(list(labels), model.labels_.tolist()))


def evaluate_clustering(
    encoder: TextEncoder, sets: list[LabelledTexts], options: TaskOptions
) -> dict[str, Any]:
    """Cluster every set; returns the mean, spread and per-set V-measures.

    Returns:
        ``v_measure`` (mean over sets), ``v_measure_std``, ``v_measures`` (one per set, in
        file order), ``n_sets`` and ``n_examples`` (texts over all sets).
    """
    scores = []
    for one in sets:
        matrix = embed(encoder, one.texts, options.dim) if len(set(one.labels)) > 1 else None
        scores.append(
            1.0
            if matrix is None
            else cluster(
                matrix, one.labels, seed=options.seed, batch_size=options.kmeans_batch_size
            )  # fmt: skip
        )
    return {
        "v_measure": float(np.mean(scores)),
        "v_measure_std": float(np.std(scores)),
        "v_measures": scores,
        "n_sets": len(sets),
        "n_examples": sum(len(one.texts) for one in sets),
    }
