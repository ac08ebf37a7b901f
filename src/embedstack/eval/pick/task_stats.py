"""The paired bootstrap of ``embedstack pick --task pair-classification``. numpy only, no I/O.

MTEB's pair-classification score, ``max_ap``, is the best average precision over four
similarity functions of the ranking of *all* pairs: it is not a mean of per-pair scores, so
the sign-flip randomization test of :mod:`~embedstack.eval.pick.stats` does not apply (and
swapping two models' raw similarities is not exchangeable: their scales differ). The paired
bootstrap (Efron & Tibshirani 1993, ch. 16; as used for non-decomposable metrics by Koehn
2004 and Berg-Kirkpatrick et al. 2012) resamples the *pairs* with replacement, the same
resample for both candidates (:func:`resample_counts`), and recomputes both ``max_ap`` on
it, giving ``d_b``. The bootstrap distribution of ``d_b`` is centred near the observed
difference ``d``, not near 0, so the null distribution is that of ``d_b - d`` (the shift
method of Efron & Tibshirani 16.4; Berg-Kirkpatrick et al.'s ``d_b > 2d`` is its one-sided
form). The test is two-sided because the baseline is the candidate that scored best on
these very pairs (the data chose the direction), as in the randomization test of
:mod:`~embedstack.eval.pick.stats`::

    p = (1 + #{b : |d_b - d| >= |d|}) / (B + 1)

the observed sample counted once, so p is never 0 (Davison & Hinkley 1997, 4.2). Koehn's
share of resamples in which the best system loses, ``#{b : d_b >= 0} / B``, is a different
(uncentred) quantity and is not what is computed. Consequences: identical candidates give
``d = 0`` and p = 1; swapping the two candidates negates ``d`` and every ``d_b`` and leaves
p unchanged; p is at its floor ``1 / (B + 1)`` exactly when every resample keeps ``d_b``
strictly between ``2d`` and ``0``, so a large difference with a large spread over pairs is
not at the floor.

A resample is a vector of multiplicities (multinomial counts), so the average precision is
computed with weights: over the distinct scores in decreasing order (ties form one
threshold, as in scikit-learn's ``average_precision_score``),
``AP = sum_k (R_k - R_{k-1}) P_k`` with weighted precision ``P_k`` and recall ``R_k``.

Example:
    >>> import numpy as np
    >>> float(weighted_ap(np.array([0.9, 0.8, 0.3]), np.array([1, 0, 1]))[0])  # (1 + 2/3) / 2
    0.8333333333333333
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from embedstack.errors import InvalidInput

__all__ = [
    "BOOTSTRAP_SAMPLES",
    "max_ap_bootstrap",
    "paired_bootstrap",
    "resample_counts",
    "similarity_scores",
    "weighted_ap",
]

BOOTSTRAP_SAMPLES = 1000
_BLOCK = 100  # resamples scored at once: bounds memory at _BLOCK x n_pairs


def similarity_scores(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """``(4, n)`` scores of the pairs ``(left[i], right[i])``, higher meaning more similar.

    The four functions of MTEB's pair classification (as
    :func:`embedstack.eval.tasks.pair_classification.pair_scores`): cosine, dot, and the
    negated Euclidean and Manhattan distances.
    """
    a = np.asarray(left, dtype=np.float64)
    b = np.asarray(right, dtype=np.float64)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    dot = np.sum(a * b, axis=1)
    return np.stack(
        [
            dot / np.where(norms == 0, 1.0, norms),
            dot,
            -np.linalg.norm(a - b, axis=1),
            -np.abs(a - b).sum(axis=1),
        ]
    )


def weighted_ap(
    scores: np.ndarray, labels: np.ndarray, weights: np.ndarray | None = None
) -> np.ndarray:
    """Average precision of ranking by ``scores`` (higher first), once per row of ``weights``.

    Args:
        scores: ``(n,)`` one score a pair.
        labels: ``(n,)`` 1 for a similar pair, 0 otherwise.
        weights: ``(B, n)`` non-negative multiplicities; None means one row of ones.

    Returns:
        ``(B,)`` average precisions; 0.0 for a row whose positives all weigh 0.
    """
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    w = np.ones((1, s.size)) if weights is None else np.atleast_2d(weights).astype(np.float64)
    order = np.argsort(-s, kind="stable")
    s, y, w = s[order], y[order], w[:, order]
    ends = np.r_[np.flatnonzero(np.diff(s) != 0), s.size - 1]  # last index of each tie group
    tps = np.cumsum(w * y, axis=1)[:, ends]
    fps = np.cumsum(w * (1.0 - y), axis=1)[:, ends]
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(tps + fps > 0, tps / (tps + fps), 0.0)
        recall = np.where(tps[:, -1:] > 0, tps / tps[:, -1:], 0.0)
    steps = np.diff(np.concatenate([np.zeros((len(w), 1)), recall], axis=1), axis=1)
    return np.asarray(np.sum(steps * precision, axis=1))


def max_ap_bootstrap(scores: np.ndarray, labels: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``(B,)`` best AP over the functions (rows of ``scores``) per resample."""
    return np.max([weighted_ap(row, labels, weights) for row in scores], axis=0)


def resample_counts(n: int, n_samples: int, seed: int) -> Iterator[np.ndarray]:
    """The bootstrap resamples of ``n`` items, in blocks of ``(<= 100, n)`` int counts.

    Row ``b`` says how often each item is drawn in resample ``b``: ``n`` draws with
    replacement, uniform, i.e. one multinomial draw, so every row sums to ``n``. The same
    ``seed`` gives the same ``n_samples`` resamples, so every comparison sees the same ones.
    """
    rng = np.random.default_rng(seed)
    for start in range(0, n_samples, _BLOCK):
        size = min(_BLOCK, n_samples - start)
        yield rng.multinomial(n, np.full(n, 1.0 / n), size=size)


def paired_bootstrap(
    best: np.ndarray,
    other: np.ndarray,
    labels: np.ndarray,
    *,
    n_samples: int = BOOTSTRAP_SAMPLES,
    seed: int = 0,
) -> tuple[float, float]:
    """Two-sided paired bootstrap test of ``max_ap(other) - max_ap(best) == 0``.

    Args:
        best: ``(4, n)`` similarity scores of the reference candidate
            (:func:`similarity_scores`).
        other: ``(4, n)`` those of the compared candidate, same pairs in the same order.
        labels: ``(n,)`` 0/1.
        n_samples: bootstrap resamples ``B``.
        seed: seeds the resamples (:func:`resample_counts`; the same for every comparison).

    Returns:
        ``(delta, p_value)``: ``delta = max_ap(other) - max_ap(best)`` over all pairs and
        ``p_value = (1 + #{b : |d_b - delta| >= |delta|}) / (B + 1)`` (module docstring).

    Raises:
        InvalidInput: mismatched shapes or ``n_samples < 1``.
    """
    y = np.asarray(labels)
    if best.shape != other.shape or best.shape[-1] != y.size or y.size == 0:
        raise InvalidInput("paired bootstrap: both candidates must score the same pairs")
    if n_samples < 1:
        raise InvalidInput(f"n_samples must be >= 1, got {n_samples}")
    observed = float(max_ap_bootstrap(other, y, np.ones((1, y.size)))[0]) - float(
        max_ap_bootstrap(best, y, np.ones((1, y.size)))[0]
    )
    hits = 0
    target = abs(observed) - 1e-12  # differences below float noise count as reaching |d|
    for counts in resample_counts(y.size, n_samples, seed):
        diffs = max_ap_bootstrap(other, y, counts) - max_ap_bootstrap(best, y, counts)
        hits += int(np.count_nonzero(np.abs(diffs - observed) >= target))
    return observed, (hits + 1) / (n_samples + 1)
