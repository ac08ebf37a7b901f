"""The normalised shapes a report is made of: candidates, the runs they came from, the study.

:mod:`embedstack.eval.report.parse` builds them from pick.json and eval results;
:func:`embedstack.eval.report.load.load_results` merges them into one :class:`Study`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Candidate", "Run", "Study"]


@dataclass(frozen=True)
class Candidate:
    """One measured configuration, whatever file it came from.

    Attributes:
        id: unique within the study (``model|dim|precision|mode``; ``#N`` appended when two
            inputs hold the same id).
        metrics: metric name → value (``None`` when not measured).
        latency_ms_p50: query latency percentiles in milliseconds (encode + search).
        bytes_per_doc: index bytes per document, ``None`` when unknown.
        usd_per_1m_queries: self-hosting cost of a million queries, ``None`` when unknown.
        storage_usd_per_month: storage cost at the study's corpus size.
        significance: the input's paired test against its best candidate, or ``None``.
        budget_misses: ``({"budget", "limit", "value", "over_by"}, ...)``.
        source: position of the input it came from.
        pareto: on the front of the merged study (set by :func:`load_results`).
    """

    id: str
    model: str
    dim: int | None
    full_dim: int | None
    precision: str
    mode: str
    metrics: Mapping[str, float | None]
    main_metric: str
    latency_ms_p50: float | None = None
    latency_ms_p99: float | None = None
    bytes_per_doc: float | None = None
    encode_docs_per_s: float | None = None
    usd_per_1m_queries: float | None = None
    storage_usd_per_month: float | None = None
    significance: Mapping[str, Any] | None = None
    within_budgets: bool | None = None
    budget_misses: tuple[Mapping[str, Any], ...] = ()
    source: int = 0
    pareto: bool = False

    @property
    def score(self) -> float | None:
        """The main metric's value."""
        return self.metrics.get(self.main_metric)


@dataclass(frozen=True)
class Run:
    """One input file: how it was made and, for a pick, its recommendation."""

    kind: str  # "pick" or "eval"
    label: str
    command: str | None
    elapsed_s: float | None
    created: str | None
    recommendation: Mapping[str, Any] | None = None
    budgets: Mapping[str, Any] = field(default_factory=dict)
    models: tuple[Mapping[str, Any], ...] = ()
    not_measured: tuple[Mapping[str, Any], ...] = ()  # models a pick's time budget left out


@dataclass(frozen=True)
class Study:
    """Everything one report shows: the merged candidates and where they came from."""

    task: str
    dataset: str
    evaluation: str  # "judged" or "proxy"
    main_metric: str
    candidates: tuple[Candidate, ...]
    runs: tuple[Run, ...]
    notes: tuple[str, ...]  # subsampling, differing query sets, unknown sizes
    prices: Mapping[str, Any] = field(default_factory=dict)
    data: Mapping[str, Any] = field(default_factory=dict)
    recommended: tuple[str, ...] = ()
    proxy_notes: tuple[
        str, ...
    ] = ()  # how each proxy evaluation built its queries  # candidate ids the picks recommend

    def candidate(self, cid: str) -> Candidate | None:
        """The candidate with id ``cid``, or ``None``."""
        return next((c for c in self.candidates if c.id == cid), None)
