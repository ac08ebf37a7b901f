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
    RerankerOpt,
    _encoder,
    _write_json,
    app,
    err,
    out,
)
from embedstack.encoders.registry import DEFAULT_MODEL
from embedstack.errors import InvalidInput
from embedstack.index.protocols import DEFAULT_MODE
from embedstack.settings import cache_dir

HEADLINE = ("ndcg@10", "recall@100", "mrr@10", "map@100")


def _show(title: str, report: dict[str, Any], keys: tuple[str, ...]) -> None:
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key in keys:
        value = report[key]
        table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    out.print(table)


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text).strip("._") or "model"


def _check_path(option: str, value: str | None) -> None:
    """A value written as a path (``./x``, ``../x``, ``/x``, ``~/x``) must exist."""
    if value is None or not value.startswith((".", "/", "~")):
        return
    if not Path(value).expanduser().exists():
        raise InvalidInput(f"{option} {value}: no such file or folder")


def _check_out(option: str, path: Path | None) -> None:
    if path is not None and (path.is_dir() or (path.parent.exists() and not path.parent.is_dir())):
        raise InvalidInput(f"{option} {path}: cannot write a file there")


@app.command("eval")
def eval_retrieval(
    dataset_dir: Annotated[
        Path,
        typer.Argument(
            help="BEIR folder (corpus/queries/qrels); with --task, the task's file or folder."
        ),
    ],
    task: Annotated[
        str,
        typer.Option(
            help="retrieval, sts, classification, clustering, pair-classification or "
            "reranking (MTEB's protocols on local JSONL files; see the README)."
        ),
    ] = "retrieval",
    mode: Annotated[
        str | None,
        typer.Option(help=f"dense, bm25 or hybrid [default: {DEFAULT_MODE}]."),
    ] = None,
    retriever: Annotated[
        str | None, typer.Option(hidden=True, help="Deprecated: use --mode.")
    ] = None,
    fusion: Annotated[str, typer.Option(help="Hybrid fusion: rrf or weighted.")] = "rrf",
    alpha: Annotated[float, typer.Option(help="Dense weight for weighted fusion.")] = 0.5,
    index_dir: Annotated[
        Path | None,
        typer.Option(
            "--index",
            help="Index folder to build or reuse (bm25, hybrid, pipelines) [default: in the "
            "cache folder; dense caches the corpus vectors there too].",
        ),
    ] = None,
    model: ModelOpt = DEFAULT_MODEL,
    dim: DimOpt = None,
    precision: PrecisionOpt = "float32",
    rescore: Annotated[bool, typer.Option(help="Rescore binary candidates with int8.")] = True,
    split: Annotated[str, typer.Option(help="qrels split to evaluate.")] = "test",
    depth: Annotated[int, typer.Option(help="Documents ranked per query (dense).")] = 1000,
    backend: BackendOpt = "onnx",
    quantize: QuantizeOpt = None,
    pipeline: Annotated[
        str | None,
        typer.Option(
            help="Evaluate a pipeline (preset, saved name, JSON file or string) "
            "instead of --mode; adds per-stage latency."
        ),
    ] = None,
    reranker: RerankerOpt = None,
    colbert: Annotated[
        str | None,
        typer.Option(
            help="ColBERT model name or folder: the evaluation index also stores its token "
            "vectors, which the pipeline's colbert stages score (e.g. --pipeline hybrid-colbert)."
        ),
    ] = None,
    json_out: JsonOpt = None,
) -> None:
    """Evaluate retrieval on a BEIR dataset: nDCG@10, recall@100, MRR@10, MAP@100, latency.

    Every argument is checked (choices, paths, the pipeline and its models) before the
    corpus is read; the corpus vectors (dense) or the index (bm25, hybrid, pipelines) are
    cached and reused by the next run with the same corpus and model. ``--task`` measures
    another MTEB task type instead (sts, classification, clustering, pair-classification,
    reranking) on a local file, as MTEB computes it; then only --model, --dim, --split,
    --backend, --quantize and --json apply."""
    from embedstack.eval import load_beir
    from embedstack.index.protocols import SearchOptions

    if task != "retrieval":
        given = {
            "--mode": mode is not None, "--retriever": retriever is not None,
            "--fusion": fusion != "rrf", "--alpha": alpha != 0.5, "--index": index_dir is not None,
            "--precision": precision != "float32", "--no-rescore": not rescore,
            "--depth": depth != 1000, "--pipeline": pipeline is not None,
            "--reranker": reranker is not None, "--colbert": colbert is not None,
        }  # fmt: skip
        _eval_task(dataset_dir, task, [k for k, v in given.items() if v], model, dim, split,
                   backend, quantize, json_out)  # fmt: skip
        return
    if retriever is not None:
        err.print("--retriever is deprecated: use --mode")
        if mode is not None and mode != retriever:
            raise InvalidInput(f"--mode {mode} and --retriever {retriever} disagree; use --mode")
    mode = mode or retriever or DEFAULT_MODE
    if mode not in ("dense", "bm25", "hybrid"):
        raise InvalidInput(f"unknown mode {mode!r}; choose dense, bm25 or hybrid")
    if precision not in ("float32", "int8", "binary"):
        raise InvalidInput(f"unknown precision {precision!r}; choose float32, int8 or binary")
    if depth < 1:
        raise InvalidInput(f"--depth must be >= 1, got {depth}")
    from embedstack.encoders.backends import list_backends

    if backend not in list_backends():
        raise InvalidInput(f"unknown backend {backend!r}; choose {', '.join(list_backends())}")
    SearchOptions(mode=mode, fusion=fusion, alpha=alpha)  # the same checks as a search
    if reranker is not None and pipeline is None:
        raise InvalidInput("--reranker needs --pipeline (e.g. --pipeline hybrid-rerank)")
    if colbert is not None and pipeline is None:
        raise InvalidInput("--colbert needs --pipeline (e.g. --pipeline hybrid-colbert)")
    _check_path("--reranker", reranker)
    _check_path("--colbert", colbert)
    _check_out("--json", json_out)
    if index_dir is not None and index_dir.exists() and not index_dir.is_dir():
        raise InvalidInput(f"--index {index_dir}: not a folder")
    dataset = load_beir(dataset_dir, split=split)
    runner = None
    if pipeline is not None:  # parse it and load its models now, not after indexing
        from embedstack.encoders.backends import avoid_ort_spinning
        from embedstack.pipeline import Pipeline

        avoid_ort_spinning()  # several models take turns on the same cores
        saved = index_dir if index_dir is not None and index_dir.is_dir() else None
        runner = Pipeline(pipeline, index=saved, reranker=reranker)
        stored = [s for s in runner.config.stages if s.kind == "colbert" and s.model is None]
        if stored and colbert is None:
            raise InvalidInput(
                f"pipeline {runner.name!r} scores stored ColBERT vectors, but the evaluation "
                "index stores no ColBERT vectors: pass --colbert MODEL to store them"
            )
    encoder = _encoder(model, backend, quantize)
    if dim is not None and not 1 <= dim <= encoder.dim:
        from embedstack.errors import DimensionMismatch

        raise DimensionMismatch(f"--dim must be in [1, {encoder.dim}], got {dim}")
    late = None
    if colbert is not None:
        from embedstack.encoders.colbert import LateInteractionEncoder

        late = LateInteractionEncoder(colbert, backend=backend)
    if mode == "dense" and runner is None:
        report = _eval_dense(dataset, encoder, dim, precision, rescore, depth)
        title = encoder.name
    else:
        from embedstack.eval.index_runner import evaluate_on_index

        name = _slug(f"{dataset.name}-{encoder.name}")
        if late is not None:  # its own folder: the plain evaluation index stays as it is
            name += f"-colbert-{late.weights_hash[:16]}"
        report = evaluate_on_index(
            dataset, encoder, mode=mode, dim=dim, precision=precision, pipeline=runner,
            directory=index_dir or cache_dir() / "eval-indexes" / name, colbert=late,
            search_options={"fusion": fusion, "alpha": alpha} if mode == "hybrid" else None,
        )  # fmt: skip
        title = mode if runner is None else f"pipeline {report['config']['pipeline']}"
    _show(
        f"{dataset.name} ({split}, {report['n_queries']} queries) — {title}",
        report,
        (*HEADLINE, "latency_ms_p50", "latency_ms_p99", "index_bytes"),
    )
    _write_json(json_out, report)


def _eval_task(
    path: Path, task: str, retrieval_only: list[str], model: str, dim: int | None, split: str,
    backend: str, quantize: str | None, json_out: Path | None,
) -> None:  # fmt: skip
    """``eval --task T``: every task but retrieval, through :func:`evaluate_task`."""
    from embedstack.eval.tasks import TASKS, evaluate_task

    if task not in TASKS:
        raise InvalidInput(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    if retrieval_only:
        raise InvalidInput(f"{', '.join(retrieval_only)}: only for --task retrieval")
    if not path.exists():
        raise InvalidInput(f"{path}: no such file or folder")
    _check_out("--json", json_out)
    encoder = _encoder(model, backend, quantize)
    options: dict[str, Any] = {"dim": dim} if task == "sts" else {"dim": dim, "split": split}
    report = evaluate_task(encoder, path, task, **options)
    main = report["main_metric"]
    shown = [main] + [
        key
        for key, value in report.items()
        if isinstance(value, float) and key not in ("main_score", main)
        and not key.endswith("_std") and (task != "pair-classification" or key.startswith("max_"))
    ]  # fmt: skip
    title = f"{path.name} ({task}, {report['n_examples']} examples) — {encoder.name}"
    _show(title, report, (*shown, "n_examples"))
    _write_json(json_out, report)


def _eval_dense(
    dataset: Any, encoder: Any, dim: int | None, precision: str, rescore: bool, depth: int
) -> dict[str, Any]:
    """Exact dense retrieval on corpus vectors encoded once per (corpus, model) and cached."""
    from embedstack.eval import evaluate_dense
    from embedstack.eval.index_runner import cached_corpus_embeddings

    folder = cache_dir() / "eval-embeddings" / _slug(f"{dataset.name}-{encoder.name}")
    embeddings = cached_corpus_embeddings(encoder, dataset, folder)
    report = evaluate_dense(
        encoder, dataset, dim=dim, precision=cast(Precision, precision), rescore=rescore,
        depth=depth, doc_embeddings=embeddings,
    )  # fmt: skip
    report["config"]["embeddings_dir"] = str(folder)
    return report


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
