"""Pipeline latency: per-stage and end-to-end p50/p99, and nDCG@10, for every preset.

On one BEIR dataset (SciFact by default), every query of the split is run one at a time
through each preset pipeline (``bm25``, ``dense``, ``hybrid``, ``hybrid-rerank``,
``three-stage``, ``hybrid-colbert``, ``three-stage-colbert``) on a single index, with ONNX
Runtime, numpy and the cross-encoder limited to ``--threads`` (2) threads. Latency is
wall-clock per query, measured around ``Pipeline.trace``; per-stage latency comes from its
timings. The first ``--warmup`` queries are run once before measuring. Quality is nDCG@10 /
recall@100 over each pipeline's results (up to 100 per query).

The index (default model all-MiniLM-L6-v2, float32, exact search) is built in ``--index``
(default ``/tmp/idx-scifact-pipeline``) on the first run and reused afterwards. The rerank
presets need ``--reranker DIR_OR_NAME`` (default ``/tmp/reranker-scifact``); when it is
absent they are skipped with a note. Pipelines with a ``colbert`` stage need ``--colbert
DIR_OR_NAME``: the index (give it its own ``--index`` folder) is then built with that model's
token vectors, which the stage scores, encoding only the query. ``--store-reranker`` does the
same for a split cross-encoder given as ``--reranker`` (``embedstack train reranker
--split-layer``): the index stores its document states and the ``rerank`` stages run only the
layers above the split. Prints a Markdown table and, with ``--json``, writes the full report.

Example:
    .venv/bin/python benchmarks/pipeline_latency.py --datasets ../shared/datasets \\
        --reranker /tmp/reranker-scifact --json benchmarks/results/pipeline_latency.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

RERANK_PRESETS = ("hybrid-rerank", "three-stage")


def _limit_threads(n: int) -> None:
    """Cap BLAS / OpenMP pools; must run before numpy is imported."""
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(n)


def _open_index(
    dataset: Any,
    directory: Path,
    model: str,
    threads: int,
    colbert: str | None = None,
    colbert_int8: bool = False,
) -> Any:
    from embedstack import Encoder
    from embedstack.eval.index_runner import build_or_open_index
    from embedstack.index import Index

    encoder = Encoder(model, threads=threads, show_progress=False)
    options: dict[str, Any] = {"encoder": encoder}
    if colbert is not None:
        late = {"backend": "onnx", "threads": threads} | (
            {"quantize": "int8"} if colbert_int8 else {}
        )
        options |= {"colbert": colbert, "colbert_options": late}
    started = time.perf_counter()
    index = build_or_open_index(dataset, directory, create_options=options)
    built = time.perf_counter() - started
    index.close()
    print(f"index {directory}: ready in {built:.1f}s", file=sys.stderr)
    return Index.open(directory, encoder=encoder, readonly=True)


def _measure(
    pipeline: Any, index: Any, dataset: Any, warmup: int, depth: int, limit: int | None
) -> dict[str, Any]:
    from embedstack.eval.metrics import evaluate, latency_summary
    from embedstack.pipeline import stage_latency

    queries = list(dataset.queries.items())[:limit]
    for _, text in queries[:warmup]:
        pipeline.trace(index, text, depth)
    run: dict[str, dict[str, float]] = {}
    latencies: list[float] = []
    timings: list[dict[str, float]] = []
    for qid, text in queries:
        start = time.perf_counter()
        result = pipeline.trace(index, text, depth)
        latencies.append(time.perf_counter() - start)
        timings.append(result.timings)
        run[qid] = {hit.doc_id: float(hit.score) for hit in result.hits}
    metrics = evaluate({qid: dataset.qrels[qid] for qid in run}, run)
    return {
        "pipeline": pipeline.config.to_string(),
        "models": pipeline.models,
        "ndcg@10": metrics["ndcg@10"],
        "recall@100": metrics["recall@100"],
        "n_queries": len(run),
        **latency_summary(latencies),
        "stage_latency": stage_latency(timings),
    }


def _table(results: dict[str, dict[str, Any]], skipped: dict[str, str]) -> str:
    lines = [
        "| preset | queries | nDCG@10 | recall@100 | p50 ms | p99 ms | per-stage p50 / p99 ms |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for name, r in results.items():
        stages = ", ".join(
            f"{stage} {s['latency_ms_p50']:.1f} / {s['latency_ms_p99']:.1f}"
            for stage, s in r["stage_latency"].items()
            if stage != "total"
        )
        lines.append(
            f"| {name} | {r['n_queries']} | {r['ndcg@10']:.4f} | {r['recall@100']:.4f} | "
            f"{r['latency_ms_p50']:.1f} | {r['latency_ms_p99']:.1f} | {stages} |"
        )
    lines += [f"| {name} | skipped: {why} | | | | | |" for name, why in skipped.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark, print a Markdown table, optionally write JSON."""
    here = Path(__file__).resolve().parents[1]
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--datasets", type=Path, default=here.parent / "shared" / "datasets")
    parser.add_argument("--dataset", default="scifact")
    parser.add_argument("--split", default="test")
    parser.add_argument("--index", type=Path, default=Path("/tmp/idx-scifact-pipeline"))
    parser.add_argument("--model", default="all-MiniLM-L6-v2")
    parser.add_argument("--reranker", default="/tmp/reranker-scifact")
    parser.add_argument(
        "--presets",
        default="bm25,dense,hybrid,hybrid-rerank,three-stage,hybrid-colbert,three-stage-colbert",
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--depth", type=int, default=100, help="results kept per query")
    parser.add_argument("--limit", type=int, default=None, help="first N queries only")
    parser.add_argument("--rerank-limit", type=int, default=None,
                        help="first N queries only, for the rerank presets")  # fmt: skip
    parser.add_argument("--rerank-max-length", type=int, default=None,
                        help="cross-encoder tokens per pair (default: the model's)")  # fmt: skip
    parser.add_argument("--rerank-int8", action="store_true", help="int8 ONNX cross-encoder")
    parser.add_argument("--extra", action="append", default=[], metavar="NAME=PIPELINE",
                        help="also measure this pipeline string (repeatable)")  # fmt: skip
    parser.add_argument("--ort-spinning", choices=("on", "off"), default="off",
                        help="ONNX Runtime thread spinning (off: what `embedstack search "
                        "--pipeline` uses)")  # fmt: skip
    parser.add_argument("--colbert", default=None, metavar="DIR_OR_NAME",
                        help="build --index with this ColBERT model's token vectors; pipelines "
                        "with a colbert stage are skipped without it")  # fmt: skip
    parser.add_argument(
        "--store-reranker",
        action="store_true",
        help="store the (split) --reranker's document states in the index, "
        "which its rerank stages then read (give it its own --index)",
    )
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    _limit_threads(args.threads)
    os.environ["EMBEDSTACK_ORT_SPINNING"] = "1" if args.ort_spinning == "on" else "0"

    from embedstack.eval import load_beir
    from embedstack.pipeline import Pipeline, get_preset
    from embedstack.pipeline.presets import PRESETS

    dataset = load_beir(args.datasets / args.dataset, split=args.split)
    names = [n.strip() for n in args.presets.split(",") if n.strip()]
    for name in names:
        get_preset(name)  # fail fast on a typo
    extras: dict[str, str] = {}
    for item in args.extra:
        name, _, spec = item.partition("=")
        extras[name.strip()] = spec.strip()
        names.append(name.strip())
    reranker: Any = None
    skipped: dict[str, str] = {}
    reranking = set(RERANK_PRESETS) | {n for n, spec in extras.items() if "rerank(" in spec}
    wanted_rerank = [n for n in names if n in reranking]
    if wanted_rerank:
        is_path = any(sep in args.reranker for sep in ("/", os.sep))
        if is_path and not Path(args.reranker).exists():
            for name in wanted_rerank:
                skipped[name] = f"no reranker at {args.reranker} (pass --reranker DIR_OR_NAME)"
        else:
            from embedstack.rerank import load_reranker

            options: dict[str, Any] = {"threads": args.threads}
            if args.rerank_max_length is not None:
                options["max_length"] = args.rerank_max_length
            if args.rerank_int8:
                options["quantize"] = "int8"
            reranker = load_reranker(args.reranker, **options)
    for name in names:
        if "colbert(" in extras.get(name, PRESETS.get(name, "")) and args.colbert is None:
            skipped[name] = "needs an index with ColBERT vectors (pass --colbert DIR_OR_NAME)"
    stored = args.reranker if args.store_reranker else args.colbert
    index = _open_index(
        dataset,
        args.index,
        args.model,
        args.threads,
        stored,
        colbert_int8=args.store_reranker and args.rerank_int8,
    )
    results: dict[str, dict[str, Any]] = {}
    try:
        for name in names:
            if name in skipped:
                print(f"{name}: skipped ({skipped[name]})", file=sys.stderr)
                continue
            pipeline = Pipeline(extras.get(name, name),
                                reranker=reranker if name in reranking else None)  # fmt: skip
            limit = args.rerank_limit if name in reranking else args.limit
            results[name] = _measure(pipeline, index, dataset, args.warmup, args.depth, limit)
            r = results[name]
            print(f"{name}: nDCG@10 {r['ndcg@10']:.4f}, p50 {r['latency_ms_p50']:.1f} ms, "
                  f"p99 {r['latency_ms_p99']:.1f} ms", file=sys.stderr)  # fmt: skip
    finally:
        index.close()
    report = {
        "dataset": dataset.name,
        "split": dataset.split,
        "n_queries": len(dataset.queries),
        "model": args.model,
        "reranker": None if reranker is None else getattr(reranker, "name", args.reranker),
        "rerank_max_length": args.rerank_max_length,
        "rerank_int8": args.rerank_int8,
        "ort_spinning": args.ort_spinning,
        "colbert": args.colbert,
        "store_reranker": args.store_reranker,
        "limit": args.limit,
        "rerank_limit": args.rerank_limit,
        "threads": args.threads,
        "cpu_count": os.cpu_count(),
        "index": str(args.index),
        "results": results,
        "skipped": skipped,
    }
    print(_table(results, skipped))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n", "utf-8")


if __name__ == "__main__":
    main()
