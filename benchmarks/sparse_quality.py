"""Learned sparse retrieval (SPLADE-tiny) quality, fusion gain, and encode throughput.

For each BEIR dataset one index is built (or reused) under ``--work`` with the default dense
model (all-MiniLM-L6-v2, ONNX), BM25, and SPLADE-tiny postings. Every test query is then
searched (batched ``search_many``, k=100) in these modes:

* ``bm25``, ``dense``, ``sparse`` (SPLADE-tiny alone);
* ``hybrid bm25+dense`` (RRF, k=60) — the default hybrid;
* ``hybrid bm25+dense+sparse`` (RRF, k=60).

Metrics follow BEIR (nDCG@10, recall@100). ``--throughput N`` also times SPLADE-tiny
document encoding on the first N SciFact documents (title + text) with the ONNX export that
pools inside the graph, the ONNX export that returns logits (pooled in numpy), and torch.

Example:
    .venv/bin/python benchmarks/sparse_quality.py --datasets ../shared/datasets \\
        --work /tmp/embedstack-sparse-bench --throughput 300
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
MODES: tuple[tuple[str, dict[str, Any]], ...] = (
    ("bm25", {"mode": "bm25"}),
    ("dense", {"mode": "dense"}),
    ("sparse (SPLADE-tiny)", {"mode": "sparse"}),
    ("hybrid bm25+dense RRF", {"mode": "hybrid"}),
    ("hybrid bm25+dense+sparse RRF", {"mode": "hybrid", "retrievers": ("bm25", "dense", "sparse")}),
)


def build_or_open(dataset: Any, folder: Path, batch: int) -> tuple[Any, float | None]:
    """The dense+BM25+SPLADE index of ``dataset`` in ``folder``, built once.

    Returns the open index and the build time in seconds (None when reused).
    """
    from embedstack.eval.index_runner import corpus_documents
    from embedstack.index import Index

    key = hashlib.sha256(f"{dataset.corpus_path}|minilm|splade-tiny|v1".encode()).hexdigest()
    stamp = folder / "bench-source.json"
    if stamp.is_file() and json.loads(stamp.read_text()).get("key") == key:
        return Index.open(folder), None
    if folder.exists():
        import shutil

        shutil.rmtree(folder)
    start = time.perf_counter()
    index = Index.create(folder, encoder="all-MiniLM-L6-v2", sparse="splade-tiny")
    docs = list(corpus_documents(dataset))
    for i in range(0, len(docs), batch):
        index.upsert(docs[i : i + batch])
        print(
            f"  {dataset.name}: {min(i + batch, len(docs))}/{len(docs)} docs "
            f"({time.perf_counter() - start:.0f} s)",
            file=sys.stderr,
            flush=True,
        )
    elapsed = time.perf_counter() - start
    stamp.write_text(json.dumps({"key": key, "build_seconds": elapsed}))
    return index, elapsed


def evaluate_modes(index: Any, dataset: Any, depth: int = 100) -> dict[str, dict[str, float]]:
    from embedstack.eval import evaluate

    qids = list(dataset.queries)
    texts = [dataset.queries[q] for q in qids]
    out: dict[str, dict[str, float]] = {}
    for label, options in MODES:
        start = time.perf_counter()
        results = index.search_many(texts, k=depth, **options)
        elapsed = time.perf_counter() - start
        run = {
            q: {h.doc_id: float(h.score) for h in hits}
            for q, hits in zip(qids, results, strict=True)
        }
        metrics = evaluate(dataset.qrels, run, k_values=[10, 100])
        out[label] = {
            "ndcg@10": metrics["ndcg@10"],
            "recall@100": metrics["recall@100"],
            "ms_per_query": 1000 * elapsed / len(qids),
        }
        print(
            f"  {dataset.name} {label}: nDCG@10 {metrics['ndcg@10']:.4f} "
            f"R@100 {metrics['recall@100']:.4f}",
            file=sys.stderr,
            flush=True,
        )
    return out


def throughput(datasets: Path, n: int) -> dict[str, float]:
    """SPLADE-tiny document encoding speed (docs/s) by backend / export."""
    import numpy as np

    from embedstack.encoders.runtime import Graph, RuntimeOptions, make_runner
    from embedstack.encoders.splade import SPLADE, SparseEncoder
    from embedstack.eval import iter_corpus
    from embedstack.settings import cache_dir

    texts = []
    for doc in iter_corpus(datasets / "scifact"):
        texts.append(doc.full_text)
        if len(texts) == n:
            break
    out: dict[str, float] = {}
    enc = SparseEncoder("splade-tiny")
    enc.encode_documents(texts[:8])  # warm up (and export on first use)
    logits = dataclasses.replace(  # the same model, exported without the pooling
        SPLADE, task="splade-logits", prefix="splade-logits", shipped=None, reference=None,
        graphs=(Graph("model", "logits", lambda m, t: m(**t).logits),),
    )  # fmt: skip

    def numpy_pooled() -> Any:
        runner = make_runner("onnx", logits, RuntimeOptions(enc.path, enc.identity, cache_dir()))

        def pooled(batch: dict[str, np.ndarray]) -> np.ndarray:
            masked = runner(batch) * batch["attention_mask"][..., None].astype(np.float32)
            return np.log1p(np.maximum(masked.max(axis=1), 0)).astype(np.float32)

        return pooled

    variants = (
        ("onnx, pooling in graph", lambda: enc._model),
        ("onnx, logits + numpy pooling", numpy_pooled),
        ("torch", lambda: SparseEncoder("splade-tiny", backend="torch")._model),
    )
    tokens = int(sum(len(e.ids) for e in enc.tokenizer.encode_batch(texts)))
    for label, make in variants:
        enc._model = make()
        enc.encode_documents(texts[:8])
        start = time.perf_counter()
        enc.encode_documents(texts)
        elapsed = time.perf_counter() - start
        out[label] = len(texts) / elapsed
        print(f"  throughput {label}: {out[label]:.1f} docs/s", file=sys.stderr, flush=True)
    out["mean_tokens_per_doc"] = tokens / len(texts)
    return out


def markdown(report: dict[str, Any]) -> str:
    lines = [
        "| dataset | retrieval | nDCG@10 | recall@100 | ms/query (batched) |",
        "|---|---|---|---|---|",
    ]
    for name, modes in report["datasets"].items():
        for label, m in modes.items():
            lines.append(
                f"| {name} | {label} | {m['ndcg@10']:.4f} | {m['recall@100']:.4f} | "
                f"{m['ms_per_query']:.1f} |"
            )
    if report.get("throughput"):
        lines += ["", "| SPLADE-tiny document encoding | docs/s |", "|---|---|"]
        tp = report["throughput"]
        for label, value in tp.items():
            if label != "mean_tokens_per_doc":
                lines.append(f"| {label} | {value:.1f} |")
        lines.append(
            f"\n(mean {tp['mean_tokens_per_doc']:.0f} tokens per document, "
            f"{report['env']['cpus']} CPUs, load average at start "
            f"{report['env']['loadavg']})"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", type=Path, default=ROOT.parent / "shared" / "datasets")
    parser.add_argument("--names", nargs="+", default=["scifact", "nfcorpus"])
    parser.add_argument("--work", type=Path, default=Path("/tmp/embedstack-sparse-bench"))
    parser.add_argument("--batch", type=int, default=512, help="documents per index batch")
    parser.add_argument(
        "--throughput",
        type=int,
        default=0,
        metavar="N",
        help="time SPLADE-tiny encoding of N SciFact documents",
    )
    parser.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks" / "results" / "sparse_quality.json"
    )
    args = parser.parse_args()

    from embedstack.encoders.fetch import fetch
    from embedstack.eval import load_beir

    fetch("splade-tiny")
    report: dict[str, Any] = {
        "command": shlex.join([sys.executable.split("/")[-1], *sys.argv]),
        "env": {
            "python": platform.python_version(),
            "cpus": len(os.sched_getaffinity(0)),
            "loadavg": [round(x, 2) for x in os.getloadavg()],
        },
        "datasets": {},
        "build_seconds": {},
    }
    for name in args.names:
        dataset = load_beir(args.datasets / name, split="test")
        index, built = build_or_open(dataset, args.work / name, args.batch)
        with index:
            report["build_seconds"][name] = built
            report["index_bytes"] = {**report.get("index_bytes", {}), name: index.stats().bytes}
            report["datasets"][name] = evaluate_modes(index, dataset)
    if args.throughput:
        report["throughput"] = throughput(args.datasets, args.throughput)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    table = markdown(report)
    args.out.with_suffix(".md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
