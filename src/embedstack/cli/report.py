"""``embedstack report``: pick.json and eval results as Markdown + HTML with plots."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from embedstack.cli.app import app, err, out


@app.command("report")
def report(
    results: Annotated[
        list[Path],
        typer.Argument(
            help="pick.json files of `embedstack pick` and/or JSON files of "
            "`embedstack eval --json`, all on the same dataset (merged into one table)."
        ),
    ],
    out_dir: Annotated[
        Path, typer.Option("--out", help="Folder for report.md, report.html and the PNG plots.")
    ],
    title: Annotated[str | None, typer.Option(help="Title [default: names the dataset].")] = None,
) -> None:
    """Write report.md and a self-contained report.html (plots embedded) from results.

    Plots: quality vs p99 latency with the Pareto front, quality vs bytes per document, the
    Matryoshka curve per model, int8/binary retention and cost per 1M queries; the candidate
    table gives latency, size, costs, the Pareto front and significance against the best.
    Judged and proxy evaluations, or different datasets, are refused in one report."""
    from embedstack.eval.report import read_result, render_report

    loaded = [read_result(path) for path in results]
    written = render_report(loaded, out_dir, title=title, labels=[str(p) for p in results])
    err.print(f"wrote {len(written)} files to {out_dir}", soft_wrap=True)
    for path in written:
        out.print(str(path), soft_wrap=True)
