"""The statistics of ``embedstack pick``: a paired randomization test, Holm's correction and
the Pareto front. numpy only, no I/O.

* :func:`paired_randomization` — the paired (sign-flip) randomization test over queries
  (Fisher 1935; as recommended for IR evaluation by Smucker, Allan & Carterette 2007, "A
  Comparison of Statistical Significance Tests for Information Retrieval Evaluation", CIKM).
  Under the null hypothesis the two systems are exchangeable on each query, so each per-query
  difference is as likely to have either sign; the p-value is the share of sign assignments
  whose mean difference is at least as large in magnitude as the observed one (two-sided).
* :func:`holm` — Holm's step-down correction (Holm 1979) of the p-values of the comparisons
  of one best candidate against every other one, controlling the family-wise error rate.
* :func:`pareto_front` — which points no other point dominates.

Example:
    >>> delta, p = paired_randomization([0.5, 0.5], [0.5, 0.5])
    >>> delta, p
    (0.0, 1.0)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from embedstack.errors import InvalidInput

__all__ = ["TEST_NAME", "holm", "paired_randomization", "pareto_front"]

TEST_NAME = "paired randomization (sign-flip), two-sided"
_BLOCK = 1024  # permutations scored at once: bounds memory at _BLOCK x n_queries


def _vector(values: Sequence[float] | npt.ArrayLike, name: str) -> npt.NDArray[np.float64]:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1 or arr.size == 0:
        raise InvalidInput(f"{name} must be a non-empty 1-d sequence of per-query scores")
    if not np.all(np.isfinite(arr)):
        raise InvalidInput(f"{name} holds NaN or infinite values")
    return arr


def paired_randomization(
    baseline: Sequence[float] | npt.ArrayLike,
    other: Sequence[float] | npt.ArrayLike,
    *,
    n_permutations: int = 10_000,
    seed: int = 0,
) -> tuple[float, float]:
    """Two-sided paired randomization test of ``mean(other - baseline) == 0``.

    With ``n`` queries, when ``2**n <= n_permutations`` every sign assignment is enumerated
    and the p-value is exact: ``#{s : |mean(s * d)| >= |mean(d)|} / 2**n``. Otherwise
    ``n_permutations`` random sign vectors (seeded) estimate it as ``(hits + 1) /
    (n_permutations + 1)`` (the observed assignment counted once, so p is never 0).

    Args:
        baseline: ``(n,)`` per-query scores of the reference system.
        other: ``(n,)`` per-query scores of the compared system, same query order.
        n_permutations: random sign assignments when the exact test is too large.
        seed: seeds the random signs.

    Returns:
        ``(delta, p_value)``: ``delta = mean(other) - mean(baseline)``.

    Raises:
        InvalidInput: empty, non-finite or differently sized inputs; ``n_permutations < 1``.

    Example:
        >>> paired_randomization([0.0, 0.0, 0.0], [1.0, 2.0, 3.0])  # 2 of 8 sign sets reach 6
        (2.0, 0.25)
    """
    a = _vector(baseline, "baseline")
    b = _vector(other, "other")
    if a.shape != b.shape:
        raise InvalidInput(f"paired scores differ in length: {a.size} and {b.size} queries")
    if (
        isinstance(n_permutations, bool)
        or not isinstance(n_permutations, int)
        or n_permutations < 1
    ):
        raise InvalidInput(f"n_permutations must be a positive integer, got {n_permutations!r}")
    diff = b - a
    n = diff.size
    observed = float(diff.mean())
    # differences below float noise count as ties, so identical runs give p = 1 exactly
    target = abs(diff.sum()) - 1e-9 * max(1.0, float(np.abs(diff).sum()))
    if n <= 20 and 2**n <= n_permutations:
        codes = np.arange(2**n, dtype=np.int64)[:, None] >> np.arange(n, dtype=np.int64)
        signs = 1.0 - 2.0 * (codes & 1)
        hits = int(np.count_nonzero(np.abs(signs @ diff) >= target))
        return observed, hits / 2**n
    rng = np.random.default_rng(seed)
    hits = 0
    for start in range(0, n_permutations, _BLOCK):
        size = min(_BLOCK, n_permutations - start)
        flips = rng.integers(0, 2, size=(size, n), dtype=np.int8) * 2 - 1
        hits += int(np.count_nonzero(np.abs(flips @ diff) >= target))
    return observed, (hits + 1) / (n_permutations + 1)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-adjusted p-values, in the input order (Holm 1979).

    The i-th smallest of ``m`` p-values is multiplied by ``m - i + 1`` (i from 1), then made
    non-decreasing along that order and capped at 1; an adjusted p below alpha rejects with
    family-wise error at most alpha.

    Example:
        >>> holm([0.01, 0.04, 0.03])
        [0.03, 0.06, 0.06]
    """
    p = np.asarray(p_values, dtype=np.float64)
    if p.ndim != 1 or np.any(~np.isfinite(p)) or np.any((p < 0) | (p > 1)):
        raise InvalidInput("p-values must be a 1-d sequence of numbers in [0, 1]")
    m = p.size
    order = np.argsort(p, kind="stable")
    scaled = p[order] * (m - np.arange(m))
    adjusted = np.minimum(np.maximum.accumulate(scaled), 1.0)
    out = np.empty(m)
    out[order] = adjusted
    return [round(float(x), 12) for x in out]


def pareto_front(
    quality: Sequence[float], latency: Sequence[float], size: Sequence[float]
) -> list[bool]:
    """Which points are on the Pareto front of (quality up, latency down, size down).

    A point is dominated when another is at least as good on all three objectives and
    strictly better on one; identical points dominate neither each other.

    Example:
        >>> pareto_front([0.5, 0.4, 0.6], [10, 5, 20], [100, 100, 400])
        [True, True, True]
        >>> pareto_front([0.5, 0.4], [10, 12], [100, 100])
        [True, False]
    """
    q = _vector(quality, "quality")
    lat = _vector(latency, "latency")
    sz = _vector(size, "size")
    if not q.shape == lat.shape == sz.shape:
        raise InvalidInput("quality, latency and size must have the same length")
    at_least = (
        (q[:, None] >= q[None, :]) & (lat[:, None] <= lat[None, :]) & (sz[:, None] <= sz[None, :])
    )
    strictly = (
        (q[:, None] > q[None, :]) | (lat[:, None] < lat[None, :]) | (sz[:, None] < sz[None, :])
    )
    dominated = np.any(at_least & strictly, axis=0)  # [i, j]: i dominates j
    return [not bool(d) for d in dominated]
