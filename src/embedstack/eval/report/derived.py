"""Numbers the report derives from a :class:`~embedstack.eval.report.load.Study` (pure).

Shared by the plots and the tables so both always show the same values.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from embedstack.eval.report.load import Candidate, Study

__all__ = [
    "ApiLine",
    "Retention",
    "api_lines",
    "by_main_metric",
    "matryoshka_curves",
    "retention",
]


def by_main_metric(candidates: tuple[Candidate, ...]) -> list[Candidate]:
    """Best first; unmeasured last; ties by p99 latency (faster first), then id, so the
    output is deterministic."""
    inf = float("inf")

    def key(c: Candidate) -> tuple[bool, float, float, str]:
        p99 = c.latency_ms_p99 if c.latency_ms_p99 is not None else inf
        return (c.score is None, -(c.score or 0.0), p99, c.id)

    return sorted(candidates, key=key)


def matryoshka_curves(study: Study) -> dict[tuple[str, str, str], list[tuple[int, float]]]:
    """``(model, precision, mode)`` → ``[(dim, main metric), ...]`` by dim, for every group
    measured at two or more dimensions (Matryoshka truncation: Kusupati et al. 2022)."""
    groups: dict[tuple[str, str, str], dict[int, float]] = {}
    for c in study.candidates:
        if c.dim is None or c.score is None or c.mode == "bm25":
            continue
        groups.setdefault((c.model, c.precision, c.mode), {})[c.dim] = c.score
    return {
        key: sorted(points.items()) for key, points in sorted(groups.items()) if len(points) > 1
    }


@dataclass(frozen=True)
class Retention:
    """A quantized candidate's main metric as a share of its float32 twin's.

    Attributes:
        ratio: ``metric(precision) / metric(float32)`` at the same model, dim and mode.
    """

    model: str
    dim: int
    mode: str
    precision: str
    value: float
    float32_value: float

    @property
    def ratio(self) -> float:
        return self.value / self.float32_value


def retention(study: Study) -> list[Retention]:
    """Every int8/binary candidate that has a float32 twin with a positive main metric."""
    base = {
        (c.model, c.dim, c.mode): c.score
        for c in study.candidates
        if c.precision == "float32" and c.score is not None and c.score > 0
    }
    found = []
    for c in study.candidates:
        twin = base.get((c.model, c.dim, c.mode))
        if c.precision in ("int8", "binary") and c.score is not None and twin and c.dim:
            found.append(Retention(c.model, c.dim, c.mode, c.precision, c.score, twin))
    return sorted(found, key=lambda r: (r.model, -r.dim, r.mode, r.precision))


@dataclass(frozen=True)
class ApiLine:
    """A hosted embedding API as the "self-host vs API" comparison.

    Attributes:
        usd_per_1m_queries: what a million queries cost through it, ``None`` when the
            inputs give neither that cost nor the mean tokens per query.
        corpus_usd: embedding the whole corpus once (``corpus_size`` x mean document tokens),
            ``None`` when either is unknown.
        tokens_per_query: the mean query length the per-query cost assumes.
    """

    name: str
    usd_per_1m_tokens: float | None
    usd_per_1m_queries: float | None
    corpus_usd: float | None
    source: str
    tokens_per_query: float | None = None


def _number(obj: Mapping[str, Any], key: str) -> float | None:
    value = obj.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def api_lines(study: Study) -> list[ApiLine]:
    """The price file's API entries with what they would cost for this study's workload."""
    entries = study.prices.get("api") or []
    query_tokens = _number(study.data, "mean_query_tokens")
    doc_tokens = _number(study.data, "mean_doc_tokens")
    corpus_size = None
    for run in study.runs:
        corpus_size = corpus_size or _number(run.budgets, "corpus_size")
    lines = []
    for entry in entries if isinstance(entries, list) else []:
        if not isinstance(entry, Mapping) or not isinstance(entry.get("name"), str):
            continue
        per_token = _number(entry, "usd_per_1m_tokens")
        per_query = _number(entry, "usd_per_1m_queries")
        corpus = _number(entry, "usd_to_embed_corpus")
        tokens = _number(entry, "tokens_per_query") or query_tokens
        if per_query is None and per_token is not None and tokens is not None:
            per_query = per_token * tokens
        if corpus is None and per_token is not None and doc_tokens and corpus_size is not None:
            corpus = per_token * corpus_size * doc_tokens / 1e6
        source = entry.get("source")
        name, source = entry["name"], source if isinstance(source, str) else ""
        lines.append(ApiLine(name, per_token, per_query, corpus, source, tokens))
    return lines
