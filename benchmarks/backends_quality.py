"""SciFact retrieval quality through each storage backend: local index vs PostgreSQL.

One BEIR dataset (default SciFact) is indexed with the same encoder into each backend:

* ``local exact`` (the reference), ``local hnsw`` (when faiss is installed);
* ``postgresql exact`` (pgvector scan) and ``postgresql hnsw`` (pgvector HNSW index);

and every test query is searched in ``bm25``, ``dense`` and ``hybrid`` (RRF) modes, k=100.
Reported per backend and mode: nDCG@10, recall@100, the difference in nDCG@10 to the local
exact index, the share of queries whose top-10 ids equal the local exact top-10, and ms per
query. Issue 18 asks for |ΔnDCG@10| <= 0.002 (exact) and <= 0.01 (HNSW).

The encoder is the hashing encoder by default (no model to run, so the numbers isolate the
storage engines); ``--model NAME`` uses a registry model instead. PostgreSQL is a throwaway
server started with pgserver in a temporary folder unless ``--pg-uri`` names one.

Example:
    .venv/bin/python benchmarks/backends_quality.py --datasets ../shared/datasets
    .venv/bin/python benchmarks/backends_quality.py --model all-MiniLM-L6-v2 \\
        --pg-uri 'postgresql://me@localhost/bench'
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
MODES = ("bm25", "dense", "hybrid")


@contextmanager
def postgres(uri: str | None, work: Path) -> Iterator[str]:
    """``uri``, or a pgserver started under ``work`` (stopped on exit)."""
    if uri:
        yield uri
        return
    run = work / "pg-run"
    run.mkdir(mode=0o700)
    os.environ["XDG_RUNTIME_DIR"] = str(run)
    import pgserver

    server = pgserver.get_server(work / "pg-data", cleanup_mode="stop")
    try:
        yield server.get_uri("postgres")
    finally:
        server.cleanup()


def encoder(model: str | None) -> Any:
    from embedstack import HashEncoder, load_encoder

    return HashEncoder(256) if model is None else load_encoder(model)


def build(target: str, enc: Any, docs: list[dict[str, Any]], ann: str | None,
          batch: int) -> tuple[Any, float]:  # fmt: skip
    from embedstack.index import Index

    start = time.perf_counter()
    index = Index.create(target, encoder=enc, ann=ann)  # type: ignore[arg-type]
    for i in range(0, len(docs), batch):
        index.add(docs[i : i + batch])
    return index, time.perf_counter() - start


def evaluate(index: Any, dataset: Any) -> dict[str, dict[str, Any]]:
    from embedstack.eval import evaluate as metrics_of

    qids = list(dataset.queries)
    texts = [dataset.queries[q] for q in qids]
    out: dict[str, dict[str, Any]] = {}
    for mode in MODES:
        start = time.perf_counter()
        results = index.search_many(texts, mode=mode, k=100)
        elapsed = time.perf_counter() - start
        run = {q: {h.doc_id: float(h.score) for h in hits}
               for q, hits in zip(qids, results, strict=True)}  # fmt: skip
        m = metrics_of(dataset.qrels, run, k_values=[10, 100])
        out[mode] = {
            "ndcg@10": m["ndcg@10"],
            "recall@100": m["recall@100"],
            "ms_per_query": 1000 * elapsed / len(qids),
            "top10": {q: [h.doc_id for h in hits[:10]] for q, hits in zip(qids, results,
                                                                           strict=True)},
        }  # fmt: skip
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--datasets", type=Path, default=ROOT.parent / "shared" / "datasets")
    ap.add_argument("--dataset", default="scifact")
    ap.add_argument("--model", default=None, help="registry model (default: hashing, 256-d)")
    ap.add_argument("--pg-uri", default=None, help="a PostgreSQL to use instead of pgserver")
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" /
                    "backends_quality.json")  # fmt: skip
    args = ap.parse_args(argv)

    from embedstack.eval import load_beir
    from embedstack.eval.index_runner import corpus_documents

    dataset = load_beir(args.datasets / args.dataset)
    docs = list(corpus_documents(dataset))
    enc = encoder(args.model)
    work = Path(tempfile.mkdtemp(prefix="embedstack-backends-"))
    results: dict[str, Any] = {}
    try:
        with postgres(args.pg_uri, work) as uri:
            sep = "&" if "?" in uri else "?"
            backends: list[tuple[str, str, str | None]] = [
                ("local exact", str(work / "local"), None),
                ("postgresql exact", f"{uri}{sep}index=bq_exact", None),
                ("postgresql hnsw", f"{uri}{sep}index=bq_hnsw", "hnsw"),
            ]
            try:
                import faiss  # noqa: F401

                backends.insert(1, ("local hnsw", str(work / "local-hnsw"), "hnsw"))
            except ImportError:
                print("faiss not installed: no local hnsw row", file=sys.stderr)
            for label, target, ann in backends:
                index, seconds = build(target, enc, docs, ann, args.batch)
                try:
                    results[label] = {"build_seconds": seconds, "modes": evaluate(index, dataset)}
                finally:
                    index.close()
                print(f"{label}: built in {seconds:.1f} s", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    ref = results["local exact"]["modes"]
    print(f"\n{args.dataset}, {len(docs)} docs, {len(dataset.queries)} queries, encoder "
          f"{enc.model_id}\n")  # fmt: skip
    print("| backend | mode | nDCG@10 | Δ vs local exact | R@100 | same top-10 | ms/query |")
    print("|---|---|---|---|---|---|---|")
    for label, res in results.items():
        for mode in MODES:
            r = res["modes"][mode]
            same = sum(r["top10"][q] == ref[mode]["top10"][q] for q in r["top10"])
            r["same_top10"] = same / len(r["top10"])
            r["delta_ndcg@10"] = r["ndcg@10"] - ref[mode]["ndcg@10"]
            print(f"| {label} | {mode} | {r['ndcg@10']:.4f} | {r['delta_ndcg@10']:+.4f} | "
                  f"{r['recall@100']:.4f} | {100 * r['same_top10']:.1f}% | "
                  f"{r['ms_per_query']:.1f} |")  # fmt: skip
    for res in results.values():
        for r in res["modes"].values():
            del r["top10"]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "command": shlex.join([Path(sys.executable).name, *sys.argv]),
        "dataset": args.dataset, "encoder": enc.model_id, "n_docs": len(docs),
        "n_queries": len(dataset.queries), "python": platform.python_version(),
        "machine": platform.machine(), "cpus": os.cpu_count(), "results": results,
    }, indent=2) + "\n")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
