"""``embedstack models rotate``: a PCA rotation baked into a dense model.

A thin wrapper over :func:`embedstack.encoders.rotate.rotate_model`; the corpus is read with
the index's file readers (:mod:`embedstack.index.sources`: a BEIR folder, a ``.jsonl`` file,
a folder of text files), as ``index add`` and ``pick`` read it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Annotated

import typer

from embedstack.cli.app import err, models_app, out


def _corpus_texts(path: Path) -> Iterator[str]:
    """Each document's ``title + " " + text`` (what a bi-encoder sees, as in BEIR), after the
    whole corpus was checked (an invalid line refuses it, naming the line)."""
    from embedstack.errors import InvalidInput
    from embedstack.index.sources import describe_skipped, iter_documents, scan_documents

    if not path.exists():
        raise InvalidInput(f"--corpus {path} does not exist")
    scan = scan_documents([path])
    if scan.problems:
        shown = "; ".join(str(p) for p in scan.problems[:3])
        more = f" (and {len(scan.problems) - 3} more)" if len(scan.problems) > 3 else ""
        raise InvalidInput(f"{path}: {len(scan.problems)} invalid inputs: {shown}{more}")
    skipped = describe_skipped(scan)
    if skipped:
        err.print(skipped, soft_wrap=True)
    for doc in iter_documents([path]):
        yield (str(doc.get("title") or "") + " " + str(doc["text"])).strip()


@models_app.command("rotate")
def models_rotate(
    source: Annotated[
        str,
        typer.Argument(help="Dense model: registry name, HF id or sentence-transformers folder."),
    ],
    out_dir: Annotated[
        Path, typer.Option("--out", help="Folder to create (must not exist or be empty).")
    ],
    corpus: Annotated[
        Path,
        typer.Option(
            help="Documents to fit on: a BEIR folder (corpus.jsonl), a .jsonl file with a "
            "text field, or a folder of text files."
        ),
    ],
    sample: Annotated[
        int, typer.Option(help="Documents encoded for the fit (a seeded uniform sample).")
    ] = 10_000,
    seed: Annotated[int, typer.Option(help="Seed of the sample.")] = 0,
    backend: Annotated[
        str, typer.Option(help="Encoder backend for the fit: onnx or torch.")
    ] = "onnx",
) -> None:
    """Bake a PCA rotation into a dense model so its vectors truncate well: the folder is
    the model plus one square Dense layer (full-dimension cosines unchanged, the first
    dimensions carry the most variance of the corpus's document vectors)."""
    from embedstack.cli.progress import Progress
    from embedstack.encoders.rotate import rotate_model
    from embedstack.errors import InvalidInput

    if backend not in ("onnx", "torch"):
        raise InvalidInput(f"--backend must be onnx or torch, got {backend!r}")
    with ExitStack() as stack:
        bars: list[Progress] = []

        def tick(done: int, total: int) -> None:
            if not bars:
                bars.append(stack.enter_context(
                    Progress(total, label="encoding the sample", console=err)))  # fmt: skip
            bars[0].advance(done - bars[0].done)

        result = rotate_model(source, out_dir, _corpus_texts(corpus), sample=sample, seed=seed,
                              backend=backend, announce=err.print, progress=tick)  # fmt: skip
    top = sum(result.variance[: max(1, result.dim // 8)]) / max(sum(result.variance), 1e-30)
    err.print(f"fitted on {result.n_texts} of {result.n_read} documents; the first "
              f"{max(1, result.dim // 8)} of {result.dim} dims carry {top:.0%} of the variance",
              soft_wrap=True)  # fmt: skip
    out.print(str(result.out), soft_wrap=True)
