"""``embedstack models distill``: a static token-lookup model from a transformer model.

A thin wrapper over :func:`embedstack.encoders.distill.distill_static` (and
:func:`~embedstack.encoders.distill.convert_model2vec` for a folder model2vec saved).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from embedstack.cli.app import err, models_app, out


@models_app.command("distill")
def models_distill(
    source: Annotated[
        str,
        typer.Argument(
            help="Teacher: registry name, HF id or folder of a transformer model (or a "
            "folder model2vec saved, converted as it is)."
        ),
    ],
    out_dir: Annotated[Path, typer.Option("--out", help="Folder to create (must not exist).")],
    dims: Annotated[
        int | None,
        typer.Option(
            help="PCA dimensions of the static model (default 256; 0: the teacher's width)."
        ),  # fmt: skip
    ] = None,
    pca: Annotated[
        bool, typer.Option("--pca/--no-pca", help="Reduce the token vectors with PCA.")
    ] = True,
    sif: Annotated[
        float, typer.Option(help="SIF coefficient of the Zipf token weights (0 for none).")
    ] = 1e-4,
    dtype: Annotated[str, typer.Option(help="Table storage: float16 or float32.")] = "float16",
    max_length: Annotated[int, typer.Option(help="Tokens read per text.")] = 512,
) -> None:
    """Distill a static model (model2vec: token outputs, PCA, Zipf SIF weights) from a
    local transformer model; use the folder with `--model DIR` in eval and `--models DIR`
    in pick."""
    from embedstack.encoders.distill import (
        DistillOptions,
        convert_model2vec,
        distill_static,
        is_model2vec_folder,
    )
    from embedstack.errors import InvalidInput

    if dtype not in ("float16", "float32"):
        raise InvalidInput(f"--dtype must be float16 or float32, got {dtype!r}")
    if is_model2vec_folder(source):
        path = convert_model2vec(source, out_dir, dtype=dtype, max_length=max_length,  # type: ignore[arg-type]
                                 announce=err.print)  # fmt: skip
    else:
        width = None if dims == 0 else (dims if dims is not None else (256 if pca else None))
        options = DistillOptions(dims=width, pca=pca, sif_coefficient=sif or None,
                                 dtype=dtype, max_length=max_length)  # type: ignore[arg-type]  # fmt: skip
        path = distill_static(source, out_dir, options, announce=err.print)
    facts = json.loads((path / "distill.json").read_text(encoding="utf-8"))
    took = f" in {facts['distill_seconds']:.0f} s" if "distill_seconds" in facts else ""
    err.print(f"{facts['vocab_size']} tokens x {facts['dims']} dims{took}", soft_wrap=True)
    out.print(str(path), soft_wrap=True)
