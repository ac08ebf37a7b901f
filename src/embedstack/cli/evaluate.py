"""``embedstack eval`` and ``embedstack eval-sts``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, cast

import typer
from rich.table import Table

from embedstack._typing import Precision
from embedstack.cli.app import (
    BackendOpt,
    DimOpt,
    JsonOpt,
    ModelOpt,
    PrecisionOpt,
    QuantizeOpt,
    _encoder,
    _write_json,
    app,
    out,
)
from embedstack.encoders.registry import DEFAULT_MODEL
from embedstack.errors import InvalidInput

HEADLINE = ("ndcg@10", "recall@100", "mrr@10", "map@100")


def _show(title: str, report: dict[str, Any], keys: tuple[str, ...]) -> None:
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key in keys:
        value = report[key]
        table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    out.print(table)


@app.command("eval")
def eval_retrieval(
    dataset_dir: Annotated[Path, typer.Argument(help="BEIR folder (corpus/queries/qrels).")],
    retriever: Annotated[str, typer.Option(help="dense, bm25 or hybrid.")] = "dense",
    fusion: Annotated[str, typer.Option(help="Hybrid fusion: rrf or weighted.")] = "rrf",
    alpha: Annotated[float, typer.Option(help="Dense weight for weighted fusion.")] = 0.5,
    index_dir: Annotated[
        Path | None,
        typer.Option("--index", help="Index folder to build or reuse (bm25/hybrid)."),
    ] = None,
    model: ModelOpt = DEFAULT_MODEL,
    dim: DimOpt = None,
    precision: PrecisionOpt = "float32",
    rescore: Annotated[bool, typer.Option(help="Rescore binary candidates with int8.")] = True,
    split: Annotated[str, typer.Option(help="qrels split to evaluate.")] = "test",
    depth: Annotated[int, typer.Option(help="Documents ranked per query.")] = 1000,
    backend: BackendOpt = "onnx",
    quantize: QuantizeOpt = None,
    pipeline: Annotated[
        str | None,
        typer.Option(
            help="Evaluate a pipeline (preset, saved name, JSON file or string) "
            "instead of --retriever; adds per-stage latency."
        ),
    ] = None,
    reranker: Annotated[
        str | None, typer.Option(help="Cross-encoder name or folder for the pipeline's rerank.")
    ] = None,
    colbert: Annotated[
        str | None,
        typer.Option(
            help="ColBERT model name or folder: the evaluation index also stores its token "
            "vectors, which the pipeline's colbert stages score (e.g. --pipeline hybrid-colbert)."
        ),
    ] = None,
    json_out: JsonOpt = None,
) -> None:
    """Evaluate retrieval on a BEIR dataset: nDCG@10, recall@100, MRR@10, MAP@100, latency."""
    from embedstack.eval import evaluate_dense, load_beir

    if retriever not in ("dense", "bm25", "hybrid"):
        raise InvalidInput(f"unknown retriever {retriever!r}; choose dense, bm25 or hybrid")
    if precision not in ("float32", "int8", "binary"):
        raise InvalidInput(f"unknown precision {precision!r}; choose float32, int8 or binary")
    if depth < 1:
        raise InvalidInput(f"--depth must be >= 1, got {depth}")
    if reranker is not None and pipeline is None:
        raise InvalidInput("--reranker needs --pipeline (e.g. --pipeline hybrid-rerank)")
    if colbert is not None and pipeline is None:
        raise InvalidInput("--colbert needs --pipeline (e.g. --pipeline hybrid-colbert)")
    dataset = load_beir(dataset_dir, split=split)
    if retriever != "dense" or pipeline is not None:
        report = _eval_index(
            dataset, retriever, model, dim, precision, fusion, alpha, index_dir, backend, quantize,
            pipeline=(pipeline, reranker), colbert=colbert,
        )  # fmt: skip
        if pipeline is not None:
            retriever = f"pipeline {report['config']['pipeline']}"
        _show(
            f"{dataset.name} ({split}, {report['n_queries']} queries) — {retriever}",
            report,
            (*HEADLINE, "latency_ms_p50", "latency_ms_p99", "index_bytes"),
        )
        _write_json(json_out, report)
        return
    encoder = _encoder(model, backend, quantize)
    if dim is not None and not 1 <= dim <= encoder.dim:
        from embedstack.errors import DimensionMismatch

        raise DimensionMismatch(f"--dim must be in [1, {encoder.dim}], got {dim}")
    report = evaluate_dense(
        encoder,
        dataset,
        dim=dim,
        precision=cast(Precision, precision),
        rescore=rescore,
        depth=depth,
    )
    _show(
        f"{dataset.name} ({split}, {report['n_queries']} queries) — {encoder.name}",
        report,
        (*HEADLINE, "latency_ms_p50", "latency_ms_p99", "index_bytes"),
    )
    _write_json(json_out, report)


@app.command("eval-sts")
def eval_sts(
    sts_file: Annotated[Path, typer.Argument(help="STS-B style tab-separated file.")],
    model: ModelOpt = DEFAULT_MODEL,
    dim: DimOpt = None,
    backend: BackendOpt = "onnx",
    quantize: QuantizeOpt = None,
    json_out: JsonOpt = None,
) -> None:
    """Spearman correlation of cosine similarity with gold STS scores."""
    from embedstack.eval import evaluate_sts, load_sts

    data = load_sts(sts_file)
    encoder = _encoder(model, backend, quantize)
    if dim is not None and not 1 <= dim <= encoder.dim:
        from embedstack.errors import DimensionMismatch

        raise DimensionMismatch(f"--dim must be in [1, {encoder.dim}], got {dim}")
    report = evaluate_sts(encoder, data, dim=dim)
    _show(f"STS — {encoder.name}", report, ("spearman", "n_pairs"))
    _write_json(json_out, report)


def _eval_index(
    dataset: Any,
    retriever: str,
    model: str,
    dim: int | None,
    precision: str,
    fusion: str,
    alpha: float,
    index_dir: Path | None,
    backend: str,
    quantize: str | None,
    pipeline: tuple[str | None, str | None] = (None, None),
    colbert: str | None = None,
) -> dict[str, Any]:
    from embedstack.eval.index_runner import build_or_open_index, evaluate_index
    from embedstack.settings import cache_dir

    if fusion not in ("rrf", "weighted"):
        raise InvalidInput(f"unknown fusion {fusion!r}; choose rrf or weighted")
    if pipeline[0] is not None:  # several models take turns on the same cores
        from embedstack.encoders.backends import avoid_ort_spinning

        avoid_ort_spinning()
    encoder = _encoder(model, backend, quantize)
    options: dict[str, Any] = {"encoder": encoder, "dim": dim, "precision": precision}
    name = f"{dataset.name}-{encoder.name}"
    if colbert is not None:  # its own folder: the plain evaluation index stays as it is
        from embedstack.encoders.colbert import LateInteractionEncoder

        late = LateInteractionEncoder(colbert, backend=backend)
        options["colbert"] = late
        name += f"-colbert-{late.weights_hash[:16]}"
    directory = index_dir or cache_dir() / "eval-indexes" / name
    index = build_or_open_index(dataset, directory, create_options=options)
    search_options: dict[str, Any] = {}
    if retriever == "hybrid":
        search_options = {"fusion": fusion, "alpha": alpha}
    try:
        if pipeline[0] is not None:
            from embedstack.pipeline import Pipeline

            runner = Pipeline(pipeline[0], index=index, reranker=pipeline[1])
            report = evaluate_index(index, dataset, mode="pipeline", pipeline=runner)
        else:
            report = evaluate_index(index, dataset, mode=retriever, search_options=search_options)
    finally:
        index.close()
    report["config"].update(model=encoder.name, model_id=encoder.model_id, precision=precision)
    report["config"]["index_dir"] = str(directory)
    if "colbert" in options:
        report["config"]["colbert"] = options["colbert"].model_id
    return report
