"""The ``embedstack`` commands: models, embed, similarity, eval, eval-sts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from rich import box
from rich.console import Console
from rich.table import Table

from embedstack import vectors
from embedstack.cli.errors import EXIT_CODES
from embedstack.encoders import list_models, load_encoder
from embedstack.encoders.base import validate_texts
from embedstack.encoders.registry import DEFAULT_MODEL, ModelSpec
from embedstack.errors import InvalidInput

app = typer.Typer(
    name="embedstack",
    help="Embed, index, search and evaluate text retrieval, offline and fast on CPU.",
    epilog=EXIT_CODES,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)

ModelOpt = Annotated[str, typer.Option("--model", "-m", help="Registry name, HF id or folder.")]
BackendOpt = Annotated[str, typer.Option(help="Inference backend: onnx or torch.")]
QuantizeOpt = Annotated[
    str | None, typer.Option(help="'int8' for the dynamically quantized ONNX model.")
]
DimOpt = Annotated[int | None, typer.Option(help="Matryoshka truncation to this dimension.")]
PrecisionOpt = Annotated[str, typer.Option(help="float32, int8 or binary.")]
JsonOpt = Annotated[Path | None, typer.Option("--json", help="Write the report to this file.")]


def _version(value: bool) -> None:
    if value:
        from embedstack import __version__

        out.print(f"embedstack {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Embed, index, search and evaluate text retrieval, offline and fast on CPU."""


def _encoder(model: str, backend: str = "onnx", quantize: str | None = None) -> Any:
    if quantize not in (None, "int8", "none"):
        raise InvalidInput(f"--quantize must be 'int8' or omitted, got {quantize!r}")
    options: dict[str, Any] = {"backend": backend}
    if quantize == "int8":
        options["quantize"] = "int8"
    return load_encoder(model, **options)


def _available(spec: ModelSpec) -> bool:
    if spec.factory is not None or spec.bundled_path() is not None:
        return True
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(spec.source, "config.json"), str)
    except Exception:  # noqa: BLE001 - a broken cache means "not available"
        return False


def _write_json(path: Path | None, report: dict[str, Any]) -> None:
    if path is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    except OSError as exc:
        raise InvalidInput(f"cannot write {path}: {exc.strerror}") from exc
    err.print(f"wrote {path}")


@app.command()
def models(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON lines instead.")] = False,
) -> None:
    """List registered models and whether their weights are on this machine."""
    rows = [(spec, _available(spec)) for spec in list_models()]
    if as_json:
        for spec, ok in rows:
            item = {
                "name": spec.name,
                "source": spec.source,
                "dim": spec.dim,
                "max_length": spec.max_length,
                "pooling": spec.pooling,
                "query_prefix": spec.query_prefix,
                "document_prefix": spec.document_prefix,
                "matryoshka_dims": list(spec.matryoshka_dims),
                "license": spec.license,
                "available": ok,
            }
            out.print(json.dumps(item), soft_wrap=True)
        return
    # names never shrink (they are what users copy); a terminal too narrow for the long
    # columns (prefix, Matryoshka dims) leaves them out and says where to see them
    wide = out.width >= 120
    table = Table(title="embedstack models", box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("name", no_wrap=True, min_width=max(len(s.name) for s, _ in rows))
    columns = ["dim", "max len", "pooling"]
    columns += ["query prefix", "matryoshka"] if wide else []
    for column in (*columns, "license", "local"):
        table.add_column(column, overflow="fold")
    for spec, ok in rows:
        cells = [str(spec.dim), str(spec.max_length), spec.pooling]
        if wide:
            prefix = repr(spec.query_prefix) if spec.query_prefix else ""
            cells += [prefix, ",".join(map(str, spec.matryoshka_dims))]
        table.add_row(spec.name, *cells, spec.license, "yes" if ok else "no")
    out.print(table)
    if not wide:
        out.print("query prefixes and Matryoshka dims: widen the terminal or use --json")


@app.command()
def embed(
    texts: Annotated[list[str], typer.Argument(help="Texts to embed ('-' reads stdin lines).")],
    model: ModelOpt = DEFAULT_MODEL,
    side: Annotated[str, typer.Option(help="query, document or symmetric.")] = "document",
    dim: DimOpt = None,
    precision: PrecisionOpt = "float32",
    backend: BackendOpt = "onnx",
    quantize: QuantizeOpt = None,
) -> None:
    """Print one JSON line per text: {"index", "embedding"}."""
    if texts == ["-"]:
        import sys

        texts = [line.rstrip("\n") for line in sys.stdin]
    if side not in ("query", "document", "symmetric"):
        raise InvalidInput(f"--side must be query, document or symmetric, got {side!r}")
    validate_texts(texts)  # reject bad input before spending seconds loading a model
    encoder = _encoder(model, backend, quantize)
    encode = {
        "query": encoder.encode_queries,
        "document": encoder.encode_documents,
        "symmetric": encoder.encode,
    }[side]
    matrix = np.asarray(encode(texts))
    if dim is not None or precision != "float32":
        matrix = _postprocess(matrix, dim, precision)
    for index, row in enumerate(matrix):
        values = [round(float(x), 6) for x in row] if row.dtype.kind == "f" else row.tolist()
        out.print(json.dumps({"index": index, "embedding": values}), soft_wrap=True)


def _postprocess(matrix: np.ndarray, dim: int | None, precision: str) -> np.ndarray:
    if precision not in ("float32", "int8", "binary"):
        raise InvalidInput(f"unknown precision {precision!r}; choose float32, int8 or binary")
    if dim is not None:
        if not 1 <= dim <= matrix.shape[1]:
            from embedstack.errors import DimensionMismatch

            raise DimensionMismatch(f"--dim must be in [1, {matrix.shape[1]}], got {dim}")
        matrix = vectors.truncate(matrix, dim)
    if precision == "int8":
        return vectors.quantize_int8(matrix, vectors.calibrate_int8(matrix))
    if precision == "binary":
        return vectors.quantize_binary(matrix)
    return matrix


@app.command()
def similarity(
    a: Annotated[str, typer.Argument(help="First text.")],
    b: Annotated[str, typer.Argument(help="Second text.")],
    model: ModelOpt = DEFAULT_MODEL,
    metric: Annotated[str, typer.Option(help="cosine, dot, euclidean or manhattan.")] = "cosine",
    dim: DimOpt = None,
) -> None:
    """Print the similarity of two texts (higher is more similar; distances are negated)."""
    if metric not in ("cosine", "dot", "euclidean", "manhattan"):
        raise InvalidInput(f"unknown metric {metric!r}; choose cosine, dot, euclidean, manhattan")
    validate_texts([a, b])
    encoder = _encoder(model)
    pair = encoder.encode([a, b])
    if dim is not None:
        pair = _postprocess(pair, dim, "float32")
    score = vectors.pairwise(pair[:1], pair[1:], metric=metric)  # type: ignore[arg-type]
    out.print(f"{float(score[0, 0]):.4f}")
