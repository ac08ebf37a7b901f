"""Latency percentiles: numpy only, shared by the pipeline's stage timings and evaluation."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from embedstack.errors import InvalidInput

__all__ = ["as_vector", "latency_summary"]


def as_vector(values: Sequence[float] | npt.ArrayLike, name: str) -> npt.NDArray[np.float64]:
    """``values`` as a finite 1-d float64 array, or :class:`InvalidInput` naming ``name``."""
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise InvalidInput(f"{name} must be a sequence of numbers") from None
    if arr.ndim != 1:
        raise InvalidInput(f"{name} must be one-dimensional, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise InvalidInput(f"{name} holds NaN or infinite values")
    return arr


def latency_summary(seconds: Sequence[float] | npt.ArrayLike) -> dict[str, float]:
    """Summarise per-call latencies.

    Args:
        seconds: ``(n,)`` durations in seconds, ``n >= 1``.

    Returns:
        ``{"latency_ms_p50", "latency_ms_p99", "latency_ms_mean"}`` in milliseconds;
        percentiles use linear interpolation (``np.percentile``'s default).

    Raises:
        InvalidInput: Empty input, or a negative or non-finite duration.

    Example:
        >>> latency_summary([0.001, 0.002, 0.003])
        {'latency_ms_p50': 2.0, 'latency_ms_p99': 2.98, 'latency_ms_mean': 2.0}
    """
    ms = as_vector(seconds, "seconds") * 1000.0
    if ms.size == 0:
        raise InvalidInput("latency_summary needs at least one duration")
    if np.any(ms < 0):
        raise InvalidInput("durations must be non-negative")
    return {
        "latency_ms_p50": float(np.percentile(ms, 50)),
        "latency_ms_p99": float(np.percentile(ms, 99)),
        "latency_ms_mean": float(ms.mean()),
    }
