"""``embedstack demo``: index this project's README and docs/, then compare retrievers.

The main job of ``make demo``: a real index built with the default model, and for a few
questions the dense, BM25 and hybrid top results side by side.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from embedstack.cli.app import app, out
from embedstack.encoders.registry import DEFAULT_MODEL
from embedstack.errors import InvalidInput

QUESTIONS = (
    "How do I install the project and run its tests?",
    "Which BM25 parameters and tokenization does the index use?",
    "how much quality does int8 or binary quantization lose",
    "what happens when the process is killed while adding documents",
)


def _sources(root: Path) -> list[Path]:
    found = [root / "README.md"] if (root / "README.md").is_file() else []
    if (root / "docs").is_dir():
        found.append(root / "docs")
    return found


@app.command()
def demo(
    root: Annotated[Path, typer.Option(help="Project folder whose README/docs to index.")] = Path(),
    index_dir: Annotated[Path | None, typer.Option("--index", help="Where to build.")] = None,
    model: Annotated[str, typer.Option("--model", "-m")] = DEFAULT_MODEL,
    k: Annotated[int, typer.Option("-k")] = 3,
) -> None:
    """Index README.md and docs/ and show dense vs BM25 vs hybrid results side by side."""
    from embedstack.index import ChunkingParams, Index
    from embedstack.index.sources import iter_documents, scan_documents

    sources = _sources(root)
    if not sources:
        raise InvalidInput(f"{root.resolve()} has no README.md or docs/ to index")
    directory = index_dir or root / ".cache" / "demo-index"
    if directory.exists():
        shutil.rmtree(directory)
    scan = scan_documents(sources)
    started = time.perf_counter()
    with Index.create(
        directory, encoder=model, chunking=ChunkingParams(max_tokens=256, overlap=48)
    ) as index:
        index.add(iter_documents(sources, skip_invalid=True))
        stats = index.stats()
        out.print(
            f"[bold]Indexed[/] {stats.n_docs} documents ({stats.n_chunks} chunks, "
            f"{len(scan.problems)} skipped) with {model} in "
            f"{time.perf_counter() - started:.1f}s → {directory}\n"
        )
        for question in QUESTIONS:
            table = Table(title=f"[bold]{question}[/]", show_lines=True, expand=True)
            columns = {}
            for mode in ("dense", "bm25", "hybrid"):
                table.add_column(mode, ratio=1)
                hits = index.search(question, mode=mode, k=k)
                columns[mode] = [_label(h) for h in hits]
            for row in range(k):
                table.add_row(*(c[row] if row < len(c) else "" for c in columns.values()))
            out.print(table)


def _label(hit: object) -> str:
    from embedstack.cli.index_cmds import _snippet

    return f"{hit.doc_id} ({hit.score:.3f})\n{_snippet(hit, 110)}"  # type: ignore[attr-defined]
