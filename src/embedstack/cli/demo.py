"""``embedstack demo``: index this project's README and docs/, then compare retrievers.

The main job of ``make demo``: a real index built with the default model, and for a few
questions the dense, BM25 and hybrid top results side by side.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

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
        found.extend(sorted((root / "docs").rglob("*.md")))
    return found


def _sections(path: Path, root: Path) -> Iterator[dict[str, Any]]:
    """One document per Markdown section (a heading and its body, code fences respected).

    A project's docs are a handful of long files; indexed whole, every question would
    return the same three files. Sections make the retrievers' differences visible.
    """
    name = path.relative_to(root).as_posix() if path.is_relative_to(root) else path.name
    title, fenced, n = path.stem, False, 0
    body: list[str] = []
    sections: list[tuple[str, list[str]]] = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        if not fenced and line.startswith("#"):
            sections.append((title, body))
            title, body = line.lstrip("#").strip() or title, []
        else:
            body.append(line)
    sections.append((title, body))
    for title, lines in sections:
        text = "\n".join(lines).strip()
        if text:
            n += 1
            yield {"id": f"{name}#{n}", "title": f"{name} › {title}", "text": text}


@app.command()
def demo(
    root: Annotated[Path, typer.Option(help="Project folder whose README/docs to index.")] = Path(),
    index_dir: Annotated[Path | None, typer.Option("--index", help="Where to build.")] = None,
    model: Annotated[str, typer.Option("--model", "-m")] = DEFAULT_MODEL,
    k: Annotated[int, typer.Option("-k")] = 3,
) -> None:
    """Index README.md and docs/ and show dense vs BM25 vs hybrid results side by side."""
    from embedstack.index import ChunkingParams, Index

    sources = _sources(root)
    if not sources:
        raise InvalidInput(f"{root.resolve()} has no README.md or docs/ to index")
    directory = index_dir or root / ".cache" / "demo-index"
    if directory.exists():
        shutil.rmtree(directory)
    docs = [doc for path in sources for doc in _sections(path, root)]
    started = time.perf_counter()
    with Index.create(
        directory, encoder=model, chunking=ChunkingParams(max_tokens=256, overlap=48)
    ) as index:
        index.add(docs)
        stats = index.stats()
        out.print(
            f"[bold]Indexed[/] {stats.n_docs} sections of {len(sources)} Markdown files "
            f"({stats.n_chunks} chunks) with {model} in "
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
    from embedstack.cli.search import snippet

    return f"[dim]{hit.score:.3f}[/] {snippet(hit, 140)}"  # type: ignore[attr-defined]
