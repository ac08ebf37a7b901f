"""ColBERT MaxSim (zero-shot, all-MiniLM-L6-v2 token vectors) reranking the hybrid top-50.

On SciFact test (300 queries): the first stage is the index's default hybrid (BM25 + dense
all-MiniLM-L6-v2, RRF k=60), top 50 per query. Each candidate list is reordered by MaxSim
(Khattab & Zaharia 2020) over L2-normalised MiniLM token vectors, with no projection head
(zero-shot: MiniLM was never trained for late interaction), so queries are not padded with
``[MASK]`` (the encoder's default without a head; a row forces it on). Reported:

* nDCG@10 of the hybrid, of the reranked lists, and of RRF(hybrid rank, MaxSim rank)
  over the same 50 candidates; the corpus' token vectors are encoded
  once into a ``ColbertIndex`` (``--prepare-only`` does just that), and float32 / float16 /
  int8 storage are compared;
* latency per query with stored token vectors: query encoding + MaxSim over 50 documents;
* latency per query of the stateless ``ColbertReranker`` (encodes the 50 documents on every
  call) on the first ``--cold`` queries.

``--dataset NAME`` runs another BEIR folder's test split (default SciFact).

``--model-dir DIR`` evaluates a trained ColBERT folder (``embedstack train colbert``)
instead of zero-shot MiniLM: its head, ``[MASK]`` augmentation and lengths are the folder's,
the comparison row turns augmentation off, and the report goes to
``results/colbert_rerank-<folder name>.json`` unless ``--out`` says otherwise.

Example:
    .venv/bin/python benchmarks/colbert_rerank.py --datasets ../shared/datasets \\
        --index /tmp/embedstack-sparse-bench/scifact
    .venv/bin/python benchmarks/colbert_rerank.py --model-dir ./colbert-scifact
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def first_stage(args: argparse.Namespace, dataset: Any) -> dict[str, list[tuple[str, float]]]:
    """Hybrid top-``depth`` per query, from ``--index`` if it exists, else a new index."""
    from embedstack.eval.index_runner import build_or_open_index
    from embedstack.index import Index

    if (args.index / "manifest.json").is_file():
        index = Index.open(args.index, readonly=True)
    else:
        index = build_or_open_index(
            dataset,
            args.work / f"hybrid-index-{args.dataset}",
            create_options={"encoder": "all-MiniLM-L6-v2"},
        )
    with index:
        qids = list(dataset.queries)
        hits = index.search_many([dataset.queries[q] for q in qids], mode="hybrid", k=args.depth)
        return {q: [(h.doc_id, h.score) for h in hs] for q, hs in zip(qids, hits, strict=True)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", type=Path, default=ROOT.parent / "shared" / "datasets")
    parser.add_argument("--dataset", default="scifact", help="BEIR folder under --datasets")
    parser.add_argument(
        "--index",
        type=Path,
        default=None,
        help="hybrid index (default /tmp/embedstack-sparse-bench/DATASET)",
    )
    parser.add_argument("--work", type=Path, default=Path("/tmp/embedstack-colbert-bench"))
    parser.add_argument("--depth", type=int, default=50)
    parser.add_argument("--cold", type=int, default=20, help="queries timed without a cache")
    parser.add_argument("--backend", default="onnx")
    parser.add_argument(
        "--prepare-only",
        action="store_true",
        help="only encode the corpus' token vectors (reused later)",
    )
    parser.add_argument(
        "--model-dir",
        type=Path,
        default=None,
        help="a trained ColBERT folder to evaluate (default: zero-shot all-MiniLM-L6-v2)",
    )
    parser.add_argument("--out", type=Path, default=None, help="report path (.json)")
    args = parser.parse_args()
    if args.index is None:
        args.index = Path("/tmp/embedstack-sparse-bench") / args.dataset
    results = ROOT / "benchmarks" / "results"
    if args.out is None:
        suffix = "" if args.model_dir is None else f"-{args.model_dir.resolve().name}"
        name = "" if args.dataset == "scifact" else f"_{args.dataset}"
        args.out = results / f"colbert_rerank{name}{suffix}.json"
    model = "all-MiniLM-L6-v2" if args.model_dir is None else str(args.model_dir)

    from embedstack.encoders.colbert import ColbertIndex, ColbertReranker, LateInteractionEncoder
    from embedstack.encoders.multivector import maxsim
    from embedstack.eval import evaluate, iter_corpus, latency_summary, load_beir

    dataset = load_beir(args.datasets / args.dataset, split="test")
    report: dict[str, Any] = {
        "command": shlex.join([sys.executable.split("/")[-1], *sys.argv]),
        "env": {
            "python": platform.python_version(),
            "cpus": len(os.sched_getaffinity(0)),
            "loadavg": [round(x, 2) for x in os.getloadavg()],
        },
    }
    encoder = LateInteractionEncoder(model, backend=args.backend)
    report["model"] = encoder.model_id
    texts = {d.id: d.full_text for d in iter_corpus(dataset)}
    wanted = sorted(texts)
    tag = "minilm" if args.model_dir is None else encoder.weights_hash[:16]
    corpus = "" if args.dataset == "scifact" else f"-{args.dataset}"  # SciFact: earlier stores
    store = args.work / f"colbert{corpus}-{tag}-{args.backend}"
    stamp = store / "encode-seconds.json"
    try:
        index = ColbertIndex.load(store, encoder)
        if set(index.ids) != set(wanted):
            raise ValueError("another corpus")
        report.update(json.loads(stamp.read_text()))
    except Exception:  # noqa: BLE001 - absent or stale: rebuild
        start = time.perf_counter()
        index = ColbertIndex.build(
            encoder, [texts[d] for d in wanted], ids=wanted, precision="float32"
        )
        elapsed = time.perf_counter() - start
        index.save(store)
        stamp.write_text(
            json.dumps(
                {"doc_encode_seconds": elapsed, "doc_encode_docs_per_s": len(wanted) / elapsed}
            )
        )
        report.update(json.loads(stamp.read_text()))
    print(f"{len(wanted)} documents encoded", file=sys.stderr, flush=True)
    if args.prepare_only:
        return
    start = time.perf_counter()
    candidates = first_stage(args, dataset)
    print(f"first stage: {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
    hybrid_run = {q: dict(c) for q, c in candidates.items()}
    report["queries"], report["depth"] = len(candidates), args.depth
    report["ndcg@10"] = {
        "hybrid bm25+dense RRF": evaluate(dataset.qrels, hybrid_run, [10])["ndcg@10"]
    }

    qids = list(candidates)
    latencies = []
    runs: dict[str, dict[str, dict[str, float]]] = {
        p: {} for p in ("float32", "float16", "int8", "augmented", "rrf")
    }
    # the other setting of [MASK] query augmentation: on for zero-shot MiniLM, off for a
    # trained folder (whose default is on)
    augmented = LateInteractionEncoder(
        model, backend=args.backend, query_augmentation=not encoder.query_augmentation
    )
    served = index.vectors.astype("float16")  # what a deployment keeps: half the float32 bytes
    positions = {doc: i for i, doc in enumerate(index.ids)}
    for q in qids:
        ids = [doc for doc, _ in candidates[q]]
        rows = [positions[d] for d in ids]
        t0 = time.perf_counter()
        qv = encoder.encode_queries([dataset.queries[q]]).doc(0)
        scores = maxsim(qv, served.take(rows))
        latencies.append(time.perf_counter() - t0)
        runs["float16"][q] = dict(zip(ids, scores.tolist(), strict=True))
        exact = index.vectors.take(rows)  # int8 codes are per token: quantizing a subset is exact
        for p in ("float32", "int8"):
            sub = exact.astype(p)
            runs[p][q] = dict(zip(ids, maxsim(qv, sub).tolist(), strict=True))
        qa = augmented.encode_queries([dataset.queries[q]]).doc(0)
        runs["augmented"][q] = dict(zip(ids, maxsim(qa, served.take(rows)).tolist(), strict=True))
        colbert_rank = np.empty(len(ids))
        colbert_rank[np.argsort(-scores, kind="stable")] = np.arange(1, len(ids) + 1)
        runs["rrf"][q] = {
            d: 1 / (60 + r + 1) + 1 / (60 + colbert_rank[r]) for r, d in enumerate(ids)
        }
    labels = {
        p: f"ColBERT MaxSim rerank top-{args.depth} ({p} tokens)"
        for p in ("float32", "float16", "int8")
    }
    toggled = "[MASK] query augmentation" if augmented.query_augmentation else "no [MASK] padding"
    labels["augmented"] = f"ColBERT MaxSim rerank top-{args.depth}, {toggled}"
    labels["rrf"] = f"RRF(hybrid rank, MaxSim rank) over the top-{args.depth}"
    for p, run in runs.items():
        report["ndcg@10"][labels[p]] = evaluate(dataset.qrels, run, [10])["ndcg@10"]
    report["latency_stored_tokens"] = latency_summary(latencies)

    reranker = ColbertReranker(encoder)
    cold = []
    for q in qids[: args.cold]:
        docs = [texts[doc] for doc, _ in candidates[q]]
        t0 = time.perf_counter()
        reranker.score(dataset.queries[q], docs)
        cold.append(time.perf_counter() - t0)
    report["latency_reranker_encoding_docs"] = {**latency_summary(cold), "queries": len(cold)}
    dim = index.vectors.dim
    report["bytes_per_token"] = {"float32": 4 * dim, "float16": 2 * dim, "int8": dim + 4}

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    lines = [f"| {args.dataset} test ({report['queries']} queries) | nDCG@10 |", "|---|---|"]
    lines += [f"| {k} | {v:.4f} |" for k, v in report["ndcg@10"].items()]
    s, c = report["latency_stored_tokens"], report["latency_reranker_encoding_docs"]
    lines += [
        "",
        "| latency per query | p50 ms | p99 ms |",
        "|---|---|---|",
        f"| stored token vectors (encode query + MaxSim x{args.depth}) | "
        f"{s['latency_ms_p50']:.1f} | {s['latency_ms_p99']:.1f} |",
        f"| ColbertReranker, encodes {args.depth} docs ({c['queries']} queries) | "
        f"{c['latency_ms_p50']:.1f} | {c['latency_ms_p99']:.1f} |",
        f"\n({report['env']['cpus']} CPUs, load average at start "
        f"{report['env']['loadavg']}; backend {args.backend}; model {encoder.model_id})",
    ]
    table = "\n".join(lines)
    args.out.with_suffix(".md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
