"""The blocks a report is made of, and how their numbers are written.

``content.py`` decides what the report says as a list of these blocks; ``markdown.py`` and
``html.py`` only format them, so the two files can never disagree. Every string in a block is
plain text (the writers escape it).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from embedstack.eval.report.plots import Plot
from embedstack.eval.report.study import Candidate

__all__ = [
    "CHECK",
    "STAR",
    "Block",
    "Bullets",
    "Callout",
    "Code",
    "Figure",
    "Heading",
    "Para",
    "Table",
    "fmt_budget",
    "fmt_bytes",
    "fmt_duration",
    "fmt_miss",
    "fmt_ms",
    "fmt_num",
    "fmt_significance",
    "fmt_usd",
]

CHECK = "✓"
STAR = "★"


@dataclass(frozen=True)
class Heading:
    text: str
    level: int = 2


@dataclass(frozen=True)
class Para:
    text: str


@dataclass(frozen=True)
class Callout:
    """A prominent notice (proxy evaluation, no recommendation, warnings)."""

    label: str
    text: str


@dataclass(frozen=True)
class Bullets:
    items: tuple[str, ...]


@dataclass(frozen=True)
class Table:
    headers: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


@dataclass(frozen=True)
class Figure:
    plot: Plot


@dataclass(frozen=True)
class Code:
    text: str


Block = Heading | Para | Callout | Bullets | Table | Figure | Code


def fmt_num(value: float | None, digits: int = 4) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def fmt_ms(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:.2f}" if value < 10 else f"{value:.1f}"


def fmt_usd(value: float | None) -> str:
    if value is None:
        return "—"
    if value == 0 or abs(value) >= 100:
        return f"${value:,.0f}"
    return f"${value:,.2f}" if abs(value) >= 0.1 else f"${value:.2g}"


def fmt_bytes(value: float | None) -> str:
    return "—" if value is None else f"{value:,.0f}"


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "not recorded"
    minutes, secs = divmod(round(seconds), 60)
    return f"{seconds:.1f} s" if seconds < 60 else f"{minutes} min {secs:02d} s ({seconds:.0f} s)"


def fmt_budget(entry: Mapping[str, Any], value_key: str) -> str:
    """``latency_ms, limit 10, best 15.2, over by 5.2`` from a budget miss record."""
    parts = [str(entry.get("budget", "budget"))]
    for key, label in (
        ("limit", "limit"),
        (value_key, "best" if value_key == "best_value" else "value"),
        ("over_by", "over by"),
    ):
        if isinstance(entry.get(key), int | float):
            parts.append(f"{label} {entry[key]:,.4g}")
    return ", ".join(parts)


def fmt_miss(entry: Mapping[str, Any]) -> str:
    """``latency_ms +5.2``: a candidate's miss, for its table cell."""
    over = entry.get("over_by")
    return f"{entry.get('budget')} +{over:.4g}" if isinstance(over, int | float) else "missed"


def fmt_significance(c: Candidate) -> str:
    """``-0.0120, p=0.03, significant`` against the input's best candidate, as pick judged it."""
    sig = c.significance
    if not sig:
        return "—"
    if sig.get("baseline") == c.id:
        return "best (baseline)"
    delta, p = sig.get("delta"), sig.get("p_value")
    verdict = sig.get("significant")
    words = "significant" if verdict is True else "not significant" if verdict is False else "?"
    parts = []
    if isinstance(delta, int | float):
        parts.append(f"{delta:+.4f}")
    if isinstance(p, int | float):
        parts.append(f"p={p:.3g}")
    return ", ".join([*parts, words])
