"""Cross-encoder reranking on top of hybrid retrieval: nDCG@10 and reranking latency.

For each BEIR dataset:

1. train a reranker on ``qrels/train.tsv`` with :func:`embedstack.train.train_reranker`
   (or reuse ``--model-dir`` when it already holds one; the test qrels are never read for
   training);
2. build (or reopen) a hybrid index (BM25 + all-MiniLM-L6-v2, RRF k=60) over the corpus;
3. for every test query, take the hybrid top ``--depth`` (50) and rescore it with the
   cross-encoder, one query at a time (the latency a user pays per request);
4. report nDCG@10 / recall@10 / MRR@10 (BEIR definitions, ``embedstack.eval.evaluate``) of

   * ``hybrid``: the first stage alone;
   * ``hybrid+rerank``: the top ``depth`` reordered by the cross-encoder score alone;
   * ``hybrid+rerank (rrf)``: RRF (k=60) of the hybrid rank and the cross-encoder rank, a
     safety net when the reranker is weaker than the first stage on some queries;
   * ``hybrid shuffled``: the same top ``depth`` in a random order (seed 0), the chance
     level a reranker must beat to have learnt anything;

   and the reranking latency p50/p99 per query (``depth`` pairs, ONNX Runtime).

Prints a Markdown table and writes a JSON report with the environment, the load average of
the machine and the exact command line.

Example:
    .venv/bin/python benchmarks/rerank_quality.py --datasets-list scifact \\
        --model-dir /tmp/reranker-{name} --index-dir /tmp/idx-{name}-hybrid
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from embedstack.eval import evaluate, latency_summary, load_beir, load_corpus
from embedstack.eval.index_runner import build_or_open_index
from embedstack.fusion import rrf
from embedstack.rerank import load_reranker
from embedstack.train import train_reranker

ROOT = Path(__file__).resolve().parents[1]
METRICS = ("ndcg@10", "recall@10", "mrr@10", "recall@50")
# Per-dataset training defaults: sized to finish in about 30 minutes on 2 CPU cores.
TRAIN: dict[str, dict[str, Any]] = {
    "scifact": {"epochs": 1, "max_pairs": None, "negatives_per_query": 3},
    "nfcorpus": {"epochs": 1, "max_pairs": 4000, "negatives_per_query": 3},
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--datasets", type=Path, default=ROOT.parent / "shared" / "datasets")
    p.add_argument("--datasets-list", default="scifact,nfcorpus")
    p.add_argument(
        "--model-dir",
        default="/tmp/reranker-{name}",
        help="reranker folder per dataset ({name} is replaced); trained if absent",
    )
    p.add_argument("--index-dir", default="/tmp/idx-{name}-hybrid")
    p.add_argument("--depth", type=int, default=50, help="hybrid candidates reranked per query")
    p.add_argument("--max-length", type=int, default=None, help="reranker tokens per pair")
    p.add_argument("--batch-size", type=int, default=32, help="reranker pairs per batch")
    p.add_argument(
        "--quantize", choices=("int8",), default=None, help="dynamic int8 reranker weights"
    )
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--limit", type=int, default=None, help="evaluate the first N test queries")
    p.add_argument("--train-max-pairs", type=int, default=None)
    p.add_argument("--train-epochs", type=int, default=None)
    p.add_argument("--train-max-length", type=int, default=256)
    p.add_argument("--train-negatives", type=int, default=None)
    p.add_argument("--train-lr", type=float, default=5e-5)
    p.add_argument("--train-batch-size", type=int, default=16)
    p.add_argument("--train-loss", default="bce", choices=("bce", "listwise"))
    p.add_argument("--bf16", action="store_true", help="train under bfloat16 autocast")
    p.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks" / "results" / "rerank_quality.json"
    )
    return p.parse_args(argv)


def train_if_needed(
    name: str, data: Path, model_dir: Path, args: argparse.Namespace
) -> dict[str, Any]:
    """Train into ``model_dir`` unless it holds a model; return the training record."""
    record_file = model_dir / "training_args.json"
    if (model_dir / "config.json").is_file():
        print(f"[{name}] reusing reranker {model_dir}", flush=True)
        return dict(json.loads(record_file.read_text())) if record_file.is_file() else {}
    options = dict(TRAIN.get(name, TRAIN["nfcorpus"]))
    for key, value in (("max_pairs", args.train_max_pairs), ("epochs", args.train_epochs),
                       ("negatives_per_query", args.train_negatives)):  # fmt: skip
        if value is not None:
            options[key] = value
    print(f"[{name}] training a reranker into {model_dir} with {options}", flush=True)
    load_before = os.getloadavg()
    result = train_reranker(data, out=model_dir, split="train", max_length=args.train_max_length,
                            lr=args.train_lr, batch_size=args.train_batch_size,
                            loss=args.train_loss, bf16=args.bf16, threads=args.threads,
                            show_progress=False, **options)  # fmt: skip
    record = dict(json.loads(record_file.read_text()))
    record["loadavg_before"] = load_before
    record["loadavg_after"] = os.getloadavg()
    print(f"[{name}] trained: {result}", flush=True)
    return record


def run_dataset(name: str, args: argparse.Namespace) -> dict[str, Any]:
    data = args.datasets / name
    model_dir = Path(args.model_dir.format(name=name))
    training = train_if_needed(name, data, model_dir, args)
    test = load_beir(data, split="test")
    ids, texts = load_corpus(test)
    corpus = dict(zip(ids, texts, strict=True))
    started = time.perf_counter()
    index = build_or_open_index(test, Path(args.index_dir.format(name=name)),
                                create_options={"encoder": "all-MiniLM-L6-v2"})  # fmt: skip
    print(f"[{name}] index ready in {time.perf_counter() - started:.0f} s", flush=True)
    options: dict[str, Any] = {"threads": args.threads, "batch_size": args.batch_size}
    if args.max_length:
        options["max_length"] = args.max_length
    if args.quantize:
        options["quantize"] = args.quantize
    reranker = load_reranker(model_dir, **options)
    runs: dict[str, dict[str, dict[str, float]]] = {"hybrid": {}, "hybrid+rerank": {},
                                                     "hybrid+rerank (rrf)": {},
                                                     "hybrid shuffled": {}}  # fmt: skip
    chance = random.Random(0)
    latencies: list[float] = []
    queries = list(test.queries.items())[: args.limit]
    load_before = os.getloadavg()
    for qid, text in queries:
        hits = index.search(text, mode="hybrid", k=args.depth)
        runs["hybrid"][qid] = {h.doc_id: float(h.score) for h in hits}
        docs = [h.doc_id for h in hits]
        start = time.perf_counter()
        scores = reranker.score(text, [corpus[d] for d in docs])
        latencies.append(time.perf_counter() - start)
        runs["hybrid+rerank"][qid] = {d: float(s) for d, s in zip(docs, scores, strict=True)}
        reranked = [d for d, _ in sorted(zip(docs, scores, strict=True), key=lambda x: -x[1])]
        runs["hybrid+rerank (rrf)"][qid] = dict(rrf([docs, reranked], k=60))
        shuffled = chance.sample(docs, len(docs))
        runs["hybrid shuffled"][qid] = {d: float(len(docs) - i) for i, d in enumerate(shuffled)}
    index.close()
    qrels = {q: test.qrels[q] for q, _ in queries}
    report = {
        label: {m: evaluate(qrels, run, k_values=[10, 50])[m] for m in METRICS}
        for label, run in runs.items()
    }
    return {
        "dataset": name,
        "n_queries": len(queries),
        "depth": args.depth,
        "reranker": str(model_dir),
        "reranker_max_length": reranker.max_length,
        "reranker_quantize": args.quantize,
        "metrics": report,
        "rerank_latency": latency_summary(latencies),
        "loadavg_during_eval": [load_before, os.getloadavg()],
        "training": training,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    results = [run_dataset(name.strip(), args) for name in args.datasets_list.split(",") if name]
    header = "| dataset | retrieval | nDCG@10 | recall@10 | MRR@10 | rerank p50 ms | p99 ms |"
    lines = [header, "|---|---|---|---|---|---|---|"]
    for res in results:
        lat = res["rerank_latency"]
        for label, values in res["metrics"].items():
            timing = "– | –"
            if label.startswith("hybrid+rerank"):
                timing = f"{lat['latency_ms_p50']:.0f} | {lat['latency_ms_p99']:.0f}"
            cells = [res["dataset"], label, *(f"{values[m]:.4f}" for m in METRICS[:3]), timing]
            lines.append("| " + " | ".join(cells) + " |")
    print("\n".join(lines))
    report = {
        "command": shlex.join([sys.executable, *sys.argv]),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
