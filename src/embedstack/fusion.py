"""Rank fusion for hybrid retrieval: reciprocal rank fusion and normalized score fusion.

Pure Python and numpy, no I/O. Both functions take each retriever's results best first and
return one fused list ``[(doc_id, score), ...]`` sorted by score descending, ties broken by
``doc_id`` ascending so the output never depends on dict or set order.

* :func:`rrf` — reciprocal rank fusion (Cormack, Clarke & Büttcher 2009, "Reciprocal Rank
  Fusion outperforms Condorcet and individual Rank Learning Methods", SIGIR):
  ``score(d) = sum_i w_i / (k + rank_i(d))`` with 1-based ranks, summed over the lists that
  contain ``d``. It needs no score calibration, which is why it is the default.
* :func:`weighted` — convex combination of normalized scores (Bruch, Gai & Ingber 2023,
  "An Analysis of Fusion Functions for Hybrid Retrieval", ACM TOIS): with two lists
  ``score(d) = alpha * norm(s_1(d)) + (1 - alpha) * norm(s_2(d))``. Bruch et al. find this
  convex combination at least as effective as RRF once ``alpha`` is tuned, and more sample
  efficient; min-max normalization is their recommended default, z-score the alternative.

Example:
    >>> rrf([["a", "b"], ["b", "c"]], k=60)[0]
    ('b', 0.03252247488101534)
    >>> weighted([{"a": 0.9, "b": 0.1}, {"b": 12.0, "c": 3.0}], alpha=0.6)[0]
    ('a', 0.6)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np

from embedstack.errors import InvalidInput

__all__ = ["Normalization", "normalize_scores", "rrf", "weighted"]

Normalization = Literal["minmax", "zscore"]
NORMALIZATIONS: tuple[str, ...] = ("minmax", "zscore")


def _check_weights(weights: Sequence[float] | None, n: int) -> list[float]:
    if weights is None:
        return [1.0] * n
    w = [float(x) for x in weights]
    if len(w) != n:
        raise InvalidInput(f"{len(w)} weights for {n} result lists")
    if not all(math.isfinite(x) and x >= 0 for x in w):
        raise InvalidInput(f"weights must be finite and >= 0, got {w}")
    return w


def _sorted(scores: Mapping[str, float]) -> list[tuple[str, float]]:
    return sorted(scores.items(), key=lambda item: (-item[1], item[0]))


def rrf(
    rankings: Sequence[Sequence[str]], k: float = 60, weights: Sequence[float] | None = None
) -> list[tuple[str, float]]:
    """Reciprocal rank fusion (Cormack, Clarke & Büttcher 2009).

    Args:
        rankings: one list of document ids per retriever, best first. A repeated id within a
            list counts at its first (best) position.
        k: the smoothing constant, ``> 0``; 60 as in the paper (it damps the weight of the
            very top ranks so that one retriever cannot dominate).
        weights: optional non-negative weight per list (default 1 each).

    Returns:
        ``[(doc_id, score)]`` over the union of the lists, score descending, ties by id.

    Raises:
        InvalidInput: ``k <= 0`` or bad weights.

    Example:
        >>> fused = rrf([["a", "b", "c"], ["c", "a"]], k=60)
        >>> [d for d, _ in fused], fused[0][1] == 1 / (60 + 1) + 1 / (60 + 2)
        (['a', 'c', 'b'], True)
    """
    if isinstance(k, bool) or not isinstance(k, int | float) or not k > 0:
        raise InvalidInput(f"rrf k must be a positive number, got {k!r}")
    w = _check_weights(weights, len(rankings))
    fused: dict[str, float] = {}
    for ranking, weight in zip(rankings, w, strict=True):
        seen: set[str] = set()
        for rank, doc in enumerate(ranking, start=1):
            if doc in seen:
                continue
            seen.add(doc)
            fused[doc] = fused.get(doc, 0.0) + weight / (k + rank)
    return _sorted(fused)


def normalize_scores(
    scores: Sequence[float] | np.ndarray, normalization: Normalization | str = "minmax"
) -> np.ndarray:
    """Normalize one retriever's scores (Bruch et al. 2023, section 4).

    ``minmax`` maps to ``[0, 1]`` with ``(s - min) / (max - min)`` (a constant list maps to
    all 1: every retrieved document ties for best); ``zscore`` gives ``(s - mean) / std``
    (population std; a constant list maps to all 0).

    Returns:
        ``(n,)`` float64.

    Raises:
        InvalidInput: unknown normalization or non-finite scores.
    """
    if normalization not in NORMALIZATIONS:
        raise InvalidInput(
            f"unknown normalization {normalization!r}; choose one of {NORMALIZATIONS}"
        )
    s = np.asarray(scores, dtype=np.float64)
    if s.size and not np.isfinite(s).all():
        raise InvalidInput("scores must be finite numbers")
    if s.size == 0:
        return s
    if normalization == "minmax":
        lo, hi = float(s.min()), float(s.max())
        return (s - lo) / (hi - lo) if hi > lo else np.ones_like(s)
    # Corrected two-pass centring (Chan, Golub & LeVeque 1983): the second pass removes the
    # rounding error of the first mean, which the division by a tiny std would magnify when
    # the scores are large and close together.
    centred = s - s.mean()
    centred -= centred.mean()
    std = float(centred.std())
    return centred / std if std > 0 else np.zeros_like(s)


def weighted(
    score_lists: Sequence[Mapping[str, float]],
    alpha: float = 0.5,
    normalization: Normalization | str = "minmax",
    *,
    weights: Sequence[float] | None = None,
) -> list[tuple[str, float]]:
    """Convex combination of normalized scores (Bruch, Gai & Ingber 2023).

    A document missing from a list (not in that retriever's candidates) gets the lowest
    value the normalization can give that list: 0 for ``minmax`` (the bottom of ``[0, 1]``)
    and the list's minimum z-score for ``zscore``, so a document is never better off for
    being missing.

    Args:
        score_lists: one ``{doc_id: score}`` per retriever, higher is better.
        alpha: with two lists and no ``weights``, the weight of the first list (the second
            gets ``1 - alpha``); must be in ``[0, 1]``.
        normalization: ``"minmax"`` or ``"zscore"``.
        weights: explicit non-negative weights, one per list (overrides ``alpha``); needed
            for any number of lists other than two.

    Returns:
        ``[(doc_id, score)]`` over the union of the lists, score descending, ties by id.

    Raises:
        InvalidInput: ``alpha`` outside ``[0, 1]``, bad weights, unknown normalization,
            non-finite scores.

    Example:
        >>> fused = weighted([{"a": 2.0, "b": 1.0}, {"b": 5.0, "c": 1.0}], alpha=0.25)
        >>> fused == [("b", 0.75), ("a", 0.25), ("c", 0.0)]
        True
    """
    if weights is None:
        if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not 0 <= alpha <= 1:
            raise InvalidInput(f"alpha must be a number in [0, 1], got {alpha!r}")
        if len(score_lists) != 2:
            raise InvalidInput(
                f"alpha fuses exactly two lists, got {len(score_lists)}: pass weights"
            )
        w = [float(alpha), 1.0 - float(alpha)]
    else:
        w = _check_weights(weights, len(score_lists))
    fused: dict[str, float] = {}
    floors: list[float] = []
    normalized: list[dict[str, float]] = []
    for scores in score_lists:
        ids = list(scores)
        norm = normalize_scores([scores[d] for d in ids], normalization)
        floor = 0.0 if normalization == "minmax" or norm.size == 0 else float(norm.min())
        floors.append(floor)
        normalized.append(dict(zip(ids, norm.tolist(), strict=True)))
    for doc in set().union(*normalized) if normalized else set():
        fused[doc] = math.fsum(
            weight * part.get(doc, floor)
            for part, weight, floor in zip(normalized, w, floors, strict=True)
        )
    return _sorted(fused)
