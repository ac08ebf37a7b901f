"""The report's figures, drawn with matplotlib (the ``plot`` extra) on the Agg canvas.

matplotlib is imported inside :func:`make_plots` only, so ``import embedstack`` stays light.
Figures are drawn from matplotlib's default style with fixed sizes and no ``Software``
metadata, so the same study gives byte-identical PNGs on the same installation. A figure
whose data is absent is not drawn: its :class:`Plot` carries the sentence that says why.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from embedstack.errors import MissingDependency
from embedstack.eval.report.derived import (
    api_lines,
    by_main_metric,
    matryoshka_curves,
    retention,
)
from embedstack.eval.report.load import Candidate, Study

__all__ = ["PLOT_FILES", "Plot", "make_plots"]

PLOT_FILES = (
    "quality_vs_latency.png",
    "quality_vs_bytes.png",
    "matryoshka.png",
    "retention.png",
    "cost.png",
)
MARKERS = {"float32": "o", "int8": "s", "binary": "^"}
LINESTYLES = {"float32": "-", "int8": "--", "binary": ":"}
STYLE: dict[str, Any] = {
    "figure.dpi": 100,
    "savefig.dpi": 100,
    "font.size": 8,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "svg.hashsalt": "embedstack",
    "path.simplify": False,
}
MAX_COST_BARS = 20
MAX_LABELS = 12


@dataclass(frozen=True)
class Plot:
    """One figure of the report: drawn (``png`` and ``file``) or skipped (``skipped``)."""

    file: str
    title: str
    png: bytes | None = None
    skipped: str | None = None


def _colors(study: Study) -> dict[str, Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    models = sorted({c.model for c in study.candidates})
    return {model: cmap(i % 10) for i, model in enumerate(models)}


def _short(c: Candidate) -> str:
    return c.id.replace("|", " ")


def _plane_front(points: list[tuple[float, Candidate]]) -> list[tuple[float, Candidate]]:
    """The points no other beats in this plane (higher metric at a lower or equal x): the
    ones worth a label; sorted by x."""
    best = -float("inf")
    front = []
    for x, c in sorted(points, key=lambda p: (p[0], -(p[1].score or 0.0), p[1].id)):
        if c.score is not None and c.score > best:
            front.append((x, c))
            best = c.score
    return front


def _scatter(study: Study, ax: Any, x_of: Callable[[Candidate], float | None]) -> int:
    """Candidates as points (colour: model, marker: precision), the Pareto front ringed, the
    recommendation starred, the best trade-offs of this plane labelled; returns how many
    candidates had no x value."""
    from matplotlib.lines import Line2D

    colors = _colors(study)
    missing = 0
    front, shown = [], []
    for c in sorted(study.candidates, key=lambda c: c.id):
        x = x_of(c)
        if x is None or c.score is None:
            missing += 1
            continue
        shown.append((x, c))
        ax.scatter(
            [x],
            [c.score],
            color=colors[c.model],
            marker=MARKERS.get(c.precision, "D"),
            s=28,
            alpha=0.85,
            zorder=2,
        )
        if c.pareto:
            front.append((x, c))
        if c.id in study.recommended:
            ax.scatter(
                [x],
                [c.score],
                marker="*",
                s=260,
                facecolor="gold",
                edgecolor="black",
                linewidth=0.8,
                zorder=4,
            )
    for x, c in sorted(front, key=lambda p: (p[0], p[1].id)):
        ax.scatter(
            [x],
            [c.score],
            marker="o",
            s=120,
            facecolor="none",
            edgecolor="black",
            linewidth=1.0,
            zorder=3,
        )
    for x, c in _plane_front(shown)[:MAX_LABELS]:
        ax.annotate(_short(c), (x, c.score), xytext=(5, 4), textcoords="offset points", fontsize=6)
    handles = [Line2D([], [], ls="", marker="o", color=colors[m], label=m) for m in colors]
    precisions = sorted({c.precision for c in study.candidates})
    handles += [
        Line2D([], [], ls="", marker=MARKERS.get(p, "D"), color="gray",
               label=p if p in MARKERS else "no vectors" if p == "-" else p)
        for p in precisions
    ]  # fmt: skip
    handles.append(
        Line2D(
            [],
            [],
            ls="",
            marker="o",
            markersize=10,
            markerfacecolor="none",
            markeredgecolor="black",
            label="Pareto front",
        )
    )
    if study.recommended:
        handles.append(
            Line2D(
                [],
                [],
                ls="",
                marker="*",
                markersize=13,
                markerfacecolor="gold",
                markeredgecolor="black",
                label="recommended",
            )
        )
    # beside the axes: inside, it can hide the very points it explains
    ax.legend(handles=handles, fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_ylabel(study.main_metric)
    return missing


def _quality_latency(study: Study, fig: Any) -> str | None:
    known = [c.latency_ms_p99 for c in study.candidates if c.latency_ms_p99 is not None]
    if not known or all(c.score is None for c in study.candidates):
        return "No candidate has a p99 latency, so quality vs latency is not plotted."
    ax = fig.add_subplot()
    missing = _scatter(study, ax, lambda c: c.latency_ms_p99)
    if min(known) > 0 and max(known) / min(known) > 20:
        ax.set_xscale("log")
    ax.set_xlabel("p99 query latency, ms (encode + search, one query at a time)")
    note = f" ({missing} without a p99 not shown)" if missing else ""
    ax.set_title(f"{study.main_metric} vs p99 latency{note}")
    return None


def _quality_bytes(study: Study, fig: Any) -> str | None:
    if not any(c.bytes_per_doc and c.score is not None for c in study.candidates):
        return "No candidate records its bytes per document, so quality vs size is not plotted."
    ax = fig.add_subplot()
    missing = _scatter(study, ax, lambda c: c.bytes_per_doc or None)
    ax.set_xscale("log")
    ax.set_xlabel("index bytes per document (log scale)")
    note = f" ({missing} without a size not shown)" if missing else ""
    ax.set_title(f"{study.main_metric} vs bytes per document{note}")
    return None


def _matryoshka(study: Study, fig: Any) -> str | None:
    curves = matryoshka_curves(study)
    if not curves:
        return "No model was measured at more than one dimension, so there is no Matryoshka curve."
    colors = _colors(study)
    ax = fig.add_subplot()
    dims = sorted({d for points in curves.values() for d, _ in points})
    for (model, precision, mode), points in curves.items():
        ax.plot(
            [d for d, _ in points],
            [v for _, v in points],
            color=colors[model],
            ls=LINESTYLES.get(precision, "-."),
            marker="o" if mode == "dense" else "s",
            markersize=4,
            label=f"{model} {precision} {mode}",
        )
    ax.set_xscale("log", base=2)
    ax.set_xticks(dims, [str(d) for d in dims])
    ax.minorticks_off()
    ax.set_xlabel("dimension (Matryoshka truncation)")
    ax.set_ylabel(study.main_metric)
    ax.set_title(f"{study.main_metric} vs dimension, per model and precision")
    ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return None


def _retention(study: Study, fig: Any) -> str | None:
    rows = retention(study)
    if not rows:
        return (
            "No int8 or binary candidate has a float32 twin (same model, dimension and mode), "
            "so retention is not plotted."
        )
    configs = sorted({(r.model, r.dim, r.mode) for r in rows}, key=lambda k: (k[0], -k[1], k[2]))
    precisions = sorted({r.precision for r in rows}, key=lambda p: ("int8", "binary").index(p))
    ratio = {(r.model, r.dim, r.mode, r.precision): 100 * r.ratio for r in rows}
    width = 0.8 / len(precisions)
    ax = fig.add_subplot()
    for j, precision in enumerate(precisions):
        xs = [i + j * width for i, k in enumerate(configs) if (*k, precision) in ratio]
        ys = [ratio[(*k, precision)] for k in configs if (*k, precision) in ratio]
        ax.bar(xs, ys, width=width, label=precision, color=("C1", "C3")[j % 2])
    ax.axhline(100, color="black", lw=0.8)
    ax.set_xticks(
        [i + 0.4 - width / 2 for i in range(len(configs))],
        [f"{m}\n{d} {mode}" for m, d, mode in configs],
        fontsize=6,
        rotation=30 if len(configs) > 4 else 0,
        ha="right" if len(configs) > 4 else "center",
    )
    low = min(ratio.values())
    ax.set_ylim(max(0.0, min(90.0, low - 5)), max(101.0, max(ratio.values()) + 1))
    ax.set_ylabel(f"{study.main_metric}, % of float32")
    ax.set_title("retention: quantized vs float32 at the same model, dimension and mode")
    ax.legend(fontsize=7)
    return None


def _cost(study: Study, fig: Any) -> str | None:
    costed = [c for c in by_main_metric(study.candidates) if c.usd_per_1m_queries is not None]
    if not costed:
        return "No candidate has a cost per query, so the cost chart is not drawn."
    apis = [a for a in api_lines(study) if a.usd_per_1m_queries is not None]
    if all(c.usd_per_1m_queries == 0 for c in costed) and not apis:
        return (
            "Every self-hosting cost is $0 under the price file (no CPU price), so the cost "
            "chart is not drawn: give a price file with cpu_usd_per_hour."
        )
    shown = costed[:MAX_COST_BARS]
    ax = fig.add_subplot()
    ys = list(range(len(shown)))[::-1]
    ax.barh(
        ys,
        [c.usd_per_1m_queries or 0.0 for c in shown],
        color=["C2" if c.pareto else "C7" for c in shown],
    )
    ax.set_yticks(ys, [c.id for c in shown], fontsize=6)
    for n, api in enumerate(apis):
        ax.axvline(
            api.usd_per_1m_queries,
            color=f"C{(n + 3) % 10}",
            ls="--",
            lw=1,
            label=f"API {api.name}: ${api.usd_per_1m_queries:,.2f}",
        )
    if apis:
        ax.legend(fontsize=6, loc="lower right")
    ax.set_xlabel("$ per 1M queries (self-hosted; green: Pareto front)")
    more = (
        f" (best {len(shown)} of {len(costed)} by {study.main_metric})"
        if len(costed) > len(shown)
        else ""
    )
    ax.set_title(f"cost per 1M queries{more}")
    return None


DRAW: tuple[tuple[str, str, Callable[[Study, Any], str | None], tuple[float, float]], ...] = (
    (PLOT_FILES[0], "Quality vs p99 latency", _quality_latency, (7.5, 4.8)),
    (PLOT_FILES[1], "Quality vs bytes per document", _quality_bytes, (7.5, 4.8)),
    (PLOT_FILES[2], "Matryoshka curve per model", _matryoshka, (7.5, 4.5)),
    (PLOT_FILES[3], "int8 / binary retention", _retention, (7.5, 4.2)),
    (PLOT_FILES[4], "Cost per 1M queries", _cost, (7.5, 4.8)),
)


def make_plots(study: Study) -> list[Plot]:
    """Draw every figure of ``study`` as PNG bytes (in memory; the caller writes them).

    Raises:
        MissingDependency: matplotlib is not installed (the ``plot`` extra).
    """
    try:
        import matplotlib
        import matplotlib.style
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise MissingDependency("matplotlib", "plot", "report plots") from exc
    plots = []
    with matplotlib.rc_context():
        matplotlib.style.use(["default", STYLE])
        for file, title, draw, size in DRAW:
            fig = Figure(figsize=size, layout="constrained")
            FigureCanvasAgg(fig)
            skipped = draw(study, fig)
            if skipped is not None:
                plots.append(Plot(file, title, skipped=skipped))
                continue
            buffer = io.BytesIO()
            fig.savefig(buffer, format="png", metadata={"Software": None})
            plots.append(Plot(file, title, png=buffer.getvalue()))
    return plots


def write_plots(plots: list[Plot], out_dir: Path) -> list[Path]:
    """Write the drawn figures into ``out_dir``; remove a stale file of a skipped one."""
    written = []
    for plot in plots:
        path = out_dir / plot.file
        if plot.png is None:
            path.unlink(missing_ok=True)
            continue
        path.write_bytes(plot.png)
        written.append(path)
    return written
