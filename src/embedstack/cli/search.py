"""``embedstack search``: one query against an index, by mode or by pipeline."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.table import Table

from embedstack.cli.app import RerankerOpt, app, out
from embedstack.cli.index_cmds import open_target
from embedstack.encoders.backends import avoid_ort_spinning
from embedstack.errors import InvalidInput
from embedstack.index.protocols import DEFAULT_MODE, SearchOptions

__all__ = ["FilterOpt", "search"]

FilterOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--filter",
        help="key=value, key!=value, key>=n, key>n, key<=n, key<n, 'key in a,b', "
        "'key not in a,b' (repeat = and).",
    ),
]


@app.command()
def search(
    directory: Annotated[str, typer.Argument(help="Index directory or engine URI.")],
    query: Annotated[str, typer.Argument(help="The search query.")],
    mode: Annotated[
        str, typer.Option(help="dense, bm25, sparse (an index created with --sparse) or hybrid.")
    ] = DEFAULT_MODE,
    k: Annotated[
        int | None, typer.Option("-k", help="Number of results [default: 10, or the pipeline's].")
    ] = None,
    filters: FilterOpt = None,
    fusion: Annotated[str, typer.Option(help="rrf or weighted (hybrid mode).")] = "rrf",
    alpha: Annotated[float, typer.Option(help="Dense weight in weighted fusion, 0..1.")] = 0.5,
    pipeline: Annotated[
        str | None,
        typer.Option(
            help="Run a pipeline instead of --mode: preset, saved name, JSON file or "
            "string, e.g. 'bm25(top=100) -> rerank(top=20) -> top 10'."
        ),
    ] = None,
    reranker: RerankerOpt = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print JSON lines (with each document's text).")
    ] = False,
) -> None:
    """Search an index (dense, BM25, hybrid, or a retrieval pipeline)."""
    from embedstack.index.filters import parse_filter_args

    if reranker is not None and pipeline is None:
        raise InvalidInput("--reranker needs --pipeline (e.g. --pipeline hybrid-rerank)")
    if not query.strip():
        raise InvalidInput("the query is empty: give the text to search for")
    where = parse_filter_args(filters or []) or None
    # every option is checked before the index (and its model) is loaded
    options = SearchOptions(mode=mode, k=10 if k is None else k, filter=where, fusion=fusion,
                            alpha=alpha)  # fmt: skip
    if pipeline is not None:  # several models take turns on the same cores
        avoid_ort_spinning()
    with open_target(directory, readonly=True) as index:
        if pipeline is not None:
            from embedstack.pipeline import Pipeline

            runner = Pipeline(pipeline, index=index, reranker=reranker)
            hits = runner.run(index, query, k, filter=where)
            label = f"pipeline {runner.name}"
        else:
            manifest = getattr(index, "manifest", None)
            if (
                options.mode == "sparse"
                and isinstance(manifest, dict)
                and not manifest.get("sparse")
            ):
                raise InvalidInput(
                    f"{directory} has no sparse postings: create an index with `embedstack "
                    "index create NEW_DIR --sparse splade-tiny` to search with --mode sparse"
                )
            hits = index.search(
                query, mode=options.mode, k=options.k, filter=options.filter,
                fusion=options.fusion, alpha=options.alpha,
            )  # fmt: skip
            label = options.mode
    if as_json:
        for hit in hits:
            row = {
                "rank": hit.rank,
                "id": hit.doc_id,
                "score": hit.score,
                "title": hit.title,
                "text": hit.text,
                "span": hit.span,
                "ranks": hit.ranks,
                "metadata": hit.metadata,
            }
            out.print(json.dumps(row, default=str), soft_wrap=True)
        return
    table = Table(title=f"{label}: {query}")
    for column in ("#", "id", "score", "title / snippet"):
        table.add_column(column)
    for hit in hits:
        table.add_row(str(hit.rank), hit.doc_id, f"{hit.score:.4f}", snippet(hit))
    out.print(table)


def snippet(hit: Any, width: int = 90) -> str:
    """The hit's title and the start of its best passage, on one line."""
    text = hit.text
    if hit.span:
        text = text[hit.span[0] : hit.span[1]]
    text = " ".join(text.split())
    head = f"{hit.title}: " if hit.title else ""
    body = text[: max(20, width - len(head))]
    return head + body + ("…" if len(text) > len(body) else "")
