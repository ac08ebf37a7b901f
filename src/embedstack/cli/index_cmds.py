"""``embedstack index ...``: thin wrappers over :class:`~embedstack.index.Index`."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from embedstack.cli.app import DimOpt, ModelOpt, PrecisionOpt, app, err, out
from embedstack.cli.errors import EXIT_INTERRUPTED, open_index
from embedstack.cli.progress import Progress
from embedstack.encoders.registry import DEFAULT_MODEL
from embedstack.errors import InvalidInput

index_app = typer.Typer(help="Create, fill and maintain a local index.", no_args_is_help=True)
app.add_typer(index_app, name="index")

TargetArg = Annotated[
    str, typer.Argument(help="Index directory, or an engine URI (postgresql://…?index=NAME).")
]


def open_target(target: str, *, readonly: bool = False) -> Any:
    """Open the index at ``target``: a directory, or an engine URI routed by its scheme."""
    from embedstack.index import Index
    from embedstack.index.backends import scheme_of

    if scheme_of(target) is None:
        return open_index(Path(target), readonly=readonly)
    return Index.open(target, readonly=readonly)


@index_app.command("create")
def create(
    target: TargetArg,
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
    """Create an empty index in TARGET: a new directory, or an engine URI
    (postgresql://USER@HOST/DB?index=NAME)."""
    from embedstack.index import BM25Params, ChunkingParams, Index, manifest
    from embedstack.index.backends import scheme_of

    directory = Path(target)
    if (
        scheme_of(target) is None
        and directory.exists()
        and (not directory.is_dir() or any(directory.iterdir()))
    ):
        held = " (it holds an index)" if (directory / manifest.FILE).is_file() else ""
        raise InvalidInput(
            f"{directory} exists and is not an empty directory{held}: add documents to an "
            f"index with `embedstack index add {directory} FILES`, or pick a new directory"
        )
    index = Index.create(
        target if scheme_of(target) else directory,
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
    out.print(f"created {target}")


@index_app.command("add")
def add(
    directory: TargetArg,
    paths: Annotated[
        list[Path],
        typer.Argument(
            help="Files or folders: .txt, .md, .rst, .html, .jsonl, or a BEIR folder. Ids of "
            "files are FOLDER-NAME/RELATIVE-PATH."
        ),
    ],
    include: Annotated[
        list[str] | None,
        typer.Option("--include", help="Only read files matching this glob (repeatable)."),
    ] = None,
    exclude: Annotated[
        list[str] | None,
        typer.Option("--exclude", help="Leave out files matching this glob (repeatable)."),
    ] = None,
    id_prefix: Annotated[
        str | None,
        typer.Option(help="First part of file ids instead of the folder's name ('' for none)."),
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Documents per atomic batch.")] = 256,
    skip_invalid: Annotated[
        bool, typer.Option(help="Keep valid documents and report invalid lines.")
    ] = False,
    ray: Annotated[
        bool,
        typer.Option(
            "--ray",
            help="Read, chunk and encode on Ray (the running cluster, RAY_ADDRESS, or a local "
            "one); this process writes. Also reads .parquet files (id, text, title, metadata "
            "columns). Needs the 'ray' extra.",
        ),
    ] = False,
    workers: Annotated[int, typer.Option(help="With --ray: encoding actors, one model each.")] = 2,
) -> None:
    """Add or update documents. Inputs are validated first: without --skip-invalid any
    malformed line refuses the whole command and the index is left unchanged. Hidden folders
    (.git, .venv) and node_modules are not read; every skipped file is counted on stderr.
    A file whose id the index holds for another file is refused (pass --id-prefix)."""
    from embedstack.encoders.base import batched
    from embedstack.index.sources import (
        SourceOptions,
        describe_skipped,
        find_conflicts,
        find_earlier_ids,
        iter_documents,
        scan_documents,
    )

    if batch_size < 1:
        raise InvalidInput(f"--batch-size must be >= 1, got {batch_size}")
    if workers < 1:
        raise InvalidInput(f"--workers must be >= 1, got {workers}")
    options = SourceOptions(tuple(include or ()), tuple(exclude or ()), id_prefix)
    # --ray also reads Parquet files (validated by the Ray path itself)
    readable = [p for p in paths if not (ray and p.suffix.lower() == ".parquet" and p.is_file())]
    scan = scan_documents(readable, options)
    skipped = describe_skipped(scan)
    if skipped:
        err.print(skipped, soft_wrap=True)
    with open_target(directory) as index:
        earlier = find_earlier_ids(index, scan)
        if earlier:
            shown = " ".join(earlier[:3]) + (" …" if len(earlier) > 3 else "")
            err.print(
                f"note: {len(earlier)} of these files are also stored under the ids an earlier "
                f"version gave them ({shown}); remove those with `embedstack index delete "
                f"{directory} {shown}`",
                soft_wrap=True,
            )
        clashes = find_conflicts(index, scan.file_sources)
        problems = scan.problems + list(clashes.values())
        conflicts = frozenset(clashes)
        if problems:
            shown = "; ".join(str(p) for p in problems[:5])
            more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
            hint = " (pass --id-prefix to name these files apart)" if conflicts else ""
            if not skip_invalid:
                raise InvalidInput(
                    f"{len(problems)} invalid input(s), nothing was added: {shown}{more}{hint}. "
                    "Fix them, or pass --skip-invalid to add the valid documents only"
                )
            err.print(f"skipping {len(problems)} invalid input(s): {shown}{more}", soft_wrap=True)
        if scan.n_documents - len(conflicts) <= 0 and not problems and readable == paths:
            raise InvalidInput(
                "nothing to add: no supported files in "
                + ", ".join(map(str, paths))
                + (f" ({skipped})" if skipped else "")
                + "; supported: .txt, .md, .rst, .html, .jsonl and BEIR folders"
            )
        totals = {"added": 0, "updated": 0, "unchanged": 0}
        started = time.perf_counter()
        if not ray:
            docs = iter_documents(paths, options, skip_invalid=skip_invalid, skip_ids=conflicts)
            try:
                with Progress(scan.n_documents - len(conflicts), scan.n_chars, console=err) as bar:
                    for batch in batched(docs, batch_size):
                        result = index.upsert(batch)
                        for key in totals:
                            totals[key] += int(getattr(result, key, 0))
                        bar.advance(len(batch), sum(len(d["text"]) for d in batch))
            except KeyboardInterrupt:
                err.print(
                    f"interrupted: {_totals(totals)} committed before Ctrl-C; the batch in "
                    "progress was not written. Run the same command again to add the rest."
                )
                raise typer.Exit(EXIT_INTERRUPTED) from None
    if ray:  # after the lock is released: the Ray driver opens the index as its one writer
        from embedstack.integrations.ray_ingest import ingest

        with Progress(scan.n_documents - len(conflicts), scan.n_chars, console=err) as bar:
            done = ingest(directory, paths, workers=workers, options=options,
                          skip_invalid=skip_invalid, skip_ids=conflicts, batch_docs=batch_size,
                          on_batch=bar.advance)  # fmt: skip
        totals = {key: int(getattr(done, key)) for key in totals}
    seconds = time.perf_counter() - started
    out.print(f"{_totals(totals)} in {seconds:.1f}s")


def _totals(totals: dict[str, int]) -> str:
    return f"{totals['added']} added, {totals['updated']} updated, {totals['unchanged']} unchanged"


@index_app.command("delete")
def delete(
    directory: TargetArg,
    ids: Annotated[list[str], typer.Argument(help="Document ids to delete.")],
) -> None:
    """Delete documents by id (all or nothing: an unknown id deletes none)."""
    with open_target(directory) as index:
        removed = index.delete(ids)
    out.print(f"deleted {removed}")


@index_app.command("stats")
def stats(directory: TargetArg, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Show document, chunk and byte counts."""
    with open_target(directory, readonly=True) as index:
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
def compact(directory: TargetArg) -> None:
    """Merge segments and reclaim the space of deleted documents."""
    with open_target(directory) as index:
        before = index.stats().bytes_total
        index.compact()
        after = index.stats().bytes_total
    out.print(f"compacted: {before} → {after} bytes")


@index_app.command("ann")
def switch_ann(
    directory: TargetArg,
    to: Annotated[
        str,
        typer.Option(
            "--ann",
            help="'hnsw': build a faiss HNSW graph once from the stored vectors and save it "
            "(extra 'ann'); 'exact': search exactly and delete the graph.",
        ),
    ],
) -> None:
    """Switch a local index's dense search between exact and an HNSW graph, without
    re-encoding (an engine URI keeps the vector index chosen at create)."""
    from embedstack.index.backends import scheme_of

    if to not in ("hnsw", "exact"):
        raise InvalidInput(f"unknown --ann {to!r}; choose hnsw or exact")
    with open_target(directory) as index:
        before = index.ann or "exact"
        if before == to:
            out.print(f"{directory}: dense search is already {to}; nothing to do", soft_wrap=True)
            return
        if to == "hnsw" and scheme_of(directory) is None:  # an engine refuses at once
            err.print(f"building the HNSW graph over {index.stats().n_chunks} chunks…")
        started = time.perf_counter()
        index.set_ann("hnsw" if to == "hnsw" else None)
        seconds = time.perf_counter() - started
    out.print(f"{directory}: dense search {before} → {to} in {seconds:.1f}s", soft_wrap=True)


@index_app.command("check")
def check(directory: TargetArg) -> None:
    """Verify the index's integrity (exit code 1 with the problem if it fails)."""
    with open_target(directory, readonly=True) as index:
        index.check()
    out.print("ok")
