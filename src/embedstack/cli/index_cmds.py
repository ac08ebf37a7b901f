"""``embedstack index ...`` and ``embedstack search``: thin wrappers over :class:`Index`."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from embedstack.cli.app import DimOpt, ModelOpt, PrecisionOpt, app, err, out
from embedstack.encoders.backends import avoid_ort_spinning
from embedstack.encoders.registry import DEFAULT_MODEL
from embedstack.errors import InvalidInput

index_app = typer.Typer(help="Create, fill and maintain a local index.", no_args_is_help=True)
app.add_typer(index_app, name="index")

DirArg = Annotated[Path, typer.Argument(help="Index directory.")]
ModeOpt = Annotated[
    str, typer.Option(help="dense, bm25, sparse (an index created with --sparse) or hybrid.")
]
FusionOpt = Annotated[str, typer.Option(help="rrf or weighted (hybrid mode).")]
AlphaOpt = Annotated[float, typer.Option(help="Dense weight in weighted fusion, 0..1.")]
FilterOpt = Annotated[
    list[str] | None,
    typer.Option("--filter", help="key=value, key>=number, key<number … (repeat = and)."),
]


@index_app.command("create")
def create(
    directory: DirArg,
    model: ModelOpt = DEFAULT_MODEL,
    dim: DimOpt = None,
    precision: PrecisionOpt = "float32",
    k1: Annotated[float, typer.Option(help="BM25 k1 (Lucene default 1.2).")] = 1.2,
    b: Annotated[float, typer.Option(help="BM25 b (Lucene default 0.75).")] = 0.75,
    chunk_tokens: Annotated[int, typer.Option(help="Chunk window in tokens.")] = 384,
    chunk_overlap: Annotated[int, typer.Option(help="Overlap between windows.")] = 48,
    ann: Annotated[str | None, typer.Option(help="'hnsw' for an approximate index.")] = None,
    sparse: Annotated[
        str | None,
        typer.Option(help="Also store SPLADE postings: a sparse model name or folder."),
    ] = None,
    colbert: Annotated[
        str | None,
        typer.Option(
            help="Also store ColBERT token vectors of every chunk (ColBERT rerank stages "
            "then encode only the query): a ColBERT model name or folder, run with ONNX; or a "
            "split cross-encoder folder (train reranker --split-layer), whose rerank stages "
            "then read the stored document states.",
        ),
    ] = None,
    colbert_precision: Annotated[
        str, typer.Option(help="Stored precision of the ColBERT vectors: float32, float16, int8.")
    ] = "float16",
) -> None:
    """Create an empty index in DIRECTORY."""
    from embedstack.index import BM25Params, ChunkingParams, Index

    index = Index.create(
        directory,
        encoder=model,
        dim=dim,
        precision=precision,  # type: ignore[arg-type]
        bm25=BM25Params(k1=k1, b=b),
        chunking=ChunkingParams(max_tokens=chunk_tokens, overlap=chunk_overlap),
        ann=ann,  # type: ignore[arg-type]
        sparse=sparse,
        colbert=colbert,
        # ONNX, like the dense and sparse encoders: it encodes every chunk, then each query
        colbert_options=None if colbert is None else {"backend": "onnx"},
        colbert_precision=colbert_precision,  # type: ignore[arg-type]
    )
    index.close()
    out.print(f"created {directory}")


@index_app.command("add")
def add(
    directory: DirArg,
    paths: Annotated[list[Path], typer.Argument(help="Folders of .txt/.md, .jsonl files.")],
    batch_size: Annotated[int, typer.Option(help="Documents per atomic batch.")] = 256,
    skip_invalid: Annotated[
        bool, typer.Option(help="Keep valid documents and report invalid lines.")
    ] = False,
) -> None:
    """Add or update documents. Inputs are validated first: without --skip-invalid any
    malformed line refuses the whole command and the index is left unchanged."""
    from embedstack.index import Index
    from embedstack.index.sources import iter_documents, scan_documents

    if batch_size < 1:
        raise InvalidInput(f"--batch-size must be >= 1, got {batch_size}")
    scan = scan_documents(paths)
    if scan.problems:
        shown = "; ".join(str(p) for p in scan.problems[:5])
        more = f" (and {len(scan.problems) - 5} more)" if len(scan.problems) > 5 else ""
        if not skip_invalid:
            raise InvalidInput(
                f"{len(scan.problems)} invalid input(s), nothing was added: {shown}{more}. "
                "Fix them, or pass --skip-invalid to add the valid documents only"
            )
        err.print(f"skipping {len(scan.problems)} invalid input(s): {shown}{more}")
    totals = {"added": 0, "updated": 0, "unchanged": 0}
    started = time.perf_counter()
    with Index.open(directory) as index:
        from embedstack.encoders.base import batched

        docs = iter_documents(paths, skip_invalid=skip_invalid)
        with _progress(scan.n_documents) as advance:
            for batch in batched(docs, batch_size):
                result = index.upsert(batch)
                for key in totals:
                    totals[key] += int(getattr(result, key, 0))
                advance(len(batch))
    seconds = time.perf_counter() - started
    out.print(
        f"{totals['added']} added, {totals['updated']} updated, {totals['unchanged']} unchanged "
        f"in {seconds:.1f}s"
    )


class _progress:
    """A rich progress bar with docs/s and ETA when stderr is a terminal."""

    def __init__(self, total: int) -> None:
        from embedstack.settings import progress_enabled

        self.total = total
        self.enabled = progress_enabled(None)
        self._bar: Any = None

    def __enter__(self) -> Any:
        if not self.enabled:
            return lambda n: None
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        self._bar = Progress(
            TextColumn("indexing"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]} docs/s"),
            TimeRemainingColumn(),
            console=err,
        )
        self._bar.__enter__()
        task = self._bar.add_task("indexing", total=self.total, rate="-")
        start = time.perf_counter()
        done = [0]

        def advance(n: int) -> None:
            done[0] += n
            rate = done[0] / max(time.perf_counter() - start, 1e-9)
            self._bar.update(task, advance=n, rate=f"{rate:.0f}")

        return advance

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)


@index_app.command("delete")
def delete(
    directory: DirArg,
    ids: Annotated[list[str], typer.Argument(help="Document ids to delete.")],
) -> None:
    """Delete documents by id (all or nothing: an unknown id deletes none)."""
    from embedstack.index import Index

    with Index.open(directory) as index:
        removed = index.delete(ids)
    out.print(f"deleted {removed}")


@index_app.command("stats")
def stats(directory: DirArg, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Show document, chunk and byte counts."""
    from embedstack.index import Index

    with Index.open(directory, readonly=True) as index:
        info = index.stats().as_dict()
    if as_json:
        out.print(json.dumps(info, indent=2, sort_keys=True, default=str), soft_wrap=True)
        return
    table = Table(title=str(directory))
    table.add_column("field")
    table.add_column("value", justify="right")
    for key, value in info.items():
        table.add_row(key, str(value))
    out.print(table)


@index_app.command("compact")
def compact(directory: DirArg) -> None:
    """Merge segments and reclaim the space of deleted documents."""
    from embedstack.index import Index

    with Index.open(directory) as index:
        before = index.stats().bytes_total
        index.compact()
        after = index.stats().bytes_total
    out.print(f"compacted: {before} → {after} bytes")


@index_app.command("check")
def check(directory: DirArg) -> None:
    """Verify the index's integrity (exit code 1 with the problem if it fails)."""
    from embedstack.index import Index

    with Index.open(directory, readonly=True) as index:
        index.check()
    out.print("ok")


@app.command()
def search(
    directory: DirArg,
    query: Annotated[str, typer.Argument(help="The search query.")],
    mode: ModeOpt = "hybrid",
    k: Annotated[
        int | None, typer.Option("-k", help="Number of results [default: 10, or the pipeline's].")
    ] = None,
    filters: FilterOpt = None,
    fusion: FusionOpt = "rrf",
    alpha: AlphaOpt = 0.5,
    pipeline: Annotated[
        str | None,
        typer.Option(
            help="Run a pipeline instead of --mode: preset, saved name, JSON file or "
            "string, e.g. 'bm25(top=100) -> rerank(top=20) -> top 10'."
        ),
    ] = None,
    reranker: Annotated[
        str | None, typer.Option(help="Cross-encoder name or folder for the pipeline's rerank.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON lines.")] = False,
) -> None:
    """Search an index (dense, BM25, hybrid, or a retrieval pipeline)."""
    from embedstack.index import Index
    from embedstack.index.filters import parse_filter_args

    if reranker is not None and pipeline is None:
        raise InvalidInput("--reranker needs --pipeline (e.g. --pipeline hybrid-rerank)")
    where = parse_filter_args(filters or [])
    if pipeline is not None:  # several models take turns on the same cores
        avoid_ort_spinning()
    with Index.open(directory, readonly=True) as index:
        if pipeline is not None:
            from embedstack.pipeline import Pipeline

            runner = Pipeline(pipeline, index=index, reranker=reranker)
            hits = runner.run(index, query, k, filter=where)
            mode = f"pipeline {runner.name}"
        else:
            hits = index.search(
                query, mode=mode, k=10 if k is None else k, filter=where, fusion=fusion,
                alpha=alpha,
            )  # fmt: skip
    if as_json:
        for hit in hits:
            row = {
                "rank": hit.rank,
                "id": hit.doc_id,
                "score": hit.score,
                "title": hit.title,
                "span": hit.span,
                "ranks": hit.ranks,
                "metadata": hit.metadata,
            }
            out.print(json.dumps(row, default=str), soft_wrap=True)
        return
    table = Table(title=f"{mode}: {query}")
    for column in ("#", "id", "score", "title / snippet"):
        table.add_column(column)
    for hit in hits:
        table.add_row(str(hit.rank), hit.doc_id, f"{hit.score:.4f}", _snippet(hit))
    out.print(table)


def _snippet(hit: Any, width: int = 90) -> str:
    text = hit.text
    if hit.span:
        text = text[hit.span[0] : hit.span[1]]
    text = " ".join(text.split())
    head = f"{hit.title}: " if hit.title else ""
    body = text[: max(20, width - len(head))]
    return head + body + ("…" if len(text) > len(body) else "")
