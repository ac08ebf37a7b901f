"""SciFact nDCG@10 through milvus-lite against the local index: bm25, dense, hybrid.

The same corpus, encoder and queries go into a local index and into Milvus indexes with
exact (FLAT) and HNSW dense search; every mode is evaluated on each. The hashing encoder
(``HashEncoder(256)``, no model download, seconds to encode) isolates the storage engine:
issue 18 asks for equality within 0.002 nDCG@10 with exact search and 0.01 with HNSW.

One more column measures Milvus's *own* BM25 (its ``BM25`` function over a
``standard`` tokenizer with lowercase, the local index's English stop words and the
Snowball English stemmer), the alternative :mod:`embedstack.index.backends.milvus_bm25`
explains not using.

Example:
    .venv/bin/python benchmarks/milvus_quality.py --datasets ../shared/datasets \\
        --out benchmarks/results/milvus_quality.json
    .venv/bin/python benchmarks/milvus_quality.py --targets milvus-bm25-function --merge
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from embedstack import HashEncoder
from embedstack.eval import evaluate, iter_corpus, load_beir
from embedstack.index import Index
from embedstack.index.tokenize import STOPWORDS_EN

ROOT = Path(__file__).resolve().parents[1]
MODES = ("bm25", "dense", "hybrid")
BATCH = 500


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--datasets", type=Path, default=ROOT.parent / "shared" / "datasets")
    p.add_argument("--dataset", default="scifact")
    p.add_argument("--dim", type=int, default=256, help="hashing encoder dimension")
    p.add_argument("--workdir", type=Path, default=None, help="default: a temporary folder")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" /
                   "milvus_quality.json")  # fmt: skip
    p.add_argument(
        "--targets",
        default="local,milvus-flat,milvus-hnsw,milvus-bm25-function",
        help="comma-separated subset to run",
    )
    p.add_argument(
        "--merge",
        action="store_true",
        help="update the numbers of --out (from an earlier run) instead of replacing",
    )
    return p.parse_args(argv)


def _run(idx: Any, queries: dict[str, str], mode: str) -> tuple[dict[str, dict[str, float]], float]:
    qids = list(queries)
    t0 = time.perf_counter()
    hits = idx.search_many([queries[q] for q in qids], mode=mode, k=10)
    elapsed = time.perf_counter() - t0
    return {q: {h.doc_id: h.score for h in hs} for q, hs in zip(qids, hits, strict=True)}, elapsed


def _ingest(idx: Any, docs: list[dict[str, Any]]) -> float:
    t0 = time.perf_counter()
    for i in range(0, len(docs), BATCH):
        idx.add(docs[i : i + BATCH])
    return time.perf_counter() - t0


def native_bm25(path: Path, docs: list[dict[str, Any]], queries: dict[str, str]) -> dict[str, Any]:
    """nDCG run of Milvus's BM25 function (k1=1.2, b=0.75) over ``title + " " + text``."""
    from pymilvus import DataType, Function, FunctionType, MilvusClient

    client = MilvusClient(str(path))
    analyzer = {"tokenizer": "standard", "filter": [
        "lowercase", {"type": "stop", "stop_words": sorted(STOPWORDS_EN)},
        {"type": "stemmer", "language": "english"}]}  # fmt: skip
    try:
        s = client.create_schema(auto_id=False, enable_dynamic_field=False)
        s.add_field("pk", DataType.VARCHAR, is_primary=True, max_length=512)
        s.add_field("text", DataType.VARCHAR, max_length=65535, enable_analyzer=True,
                    analyzer_params=analyzer)  # fmt: skip
        s.add_field("bm", DataType.SPARSE_FLOAT_VECTOR)
        s.add_function(Function(name="bm25", function_type=FunctionType.BM25,
                                input_field_names=["text"], output_field_names=["bm"]))  # fmt: skip
        params = client.prepare_index_params()
        params.add_index("bm", index_type="SPARSE_INVERTED_INDEX", metric_type="BM25",
                         params={"bm25_k1": 1.2, "bm25_b": 0.75})  # fmt: skip
        client.create_collection("native", schema=s, index_params=params,
                                 consistency_level="Strong")  # fmt: skip
        rows = [{"pk": d["id"], "text": (d["title"] + " " + d["text"]).strip()} for d in docs]
        for i in range(0, len(rows), BATCH):
            client.insert("native", rows[i : i + BATCH])
        qids = list(queries)
        t0 = time.perf_counter()
        res = client.search("native", data=[queries[q] for q in qids], anns_field="bm",
                            limit=10, output_fields=["pk"],
                            search_params={"metric_type": "BM25"})  # fmt: skip
        elapsed = time.perf_counter() - t0
        # ranked by the engine's order: milvus-lite reports BM25 as distance = -score
        run = {q: {h["pk"]: float(len(hs) - r) for r, h in enumerate(hs)}
               for q, hs in zip(qids, res, strict=True)}  # fmt: skip
        return {"run": run, "seconds": elapsed}
    finally:
        client.close()
        from milvus_lite.server_manager import server_manager_instance

        server_manager_instance.release_server(str(path))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    ds = load_beir(args.datasets / args.dataset)
    docs = [{"id": d.id, "title": d.title, "text": d.text} for d in iter_corpus(ds)]
    work = Path(args.workdir or tempfile.mkdtemp(prefix="milvus-quality-"))
    work.mkdir(parents=True, exist_ok=True)
    enc = HashEncoder(args.dim)
    targets = {
        "local": str(work / "local"),
        "milvus-flat": f"milvus://{work / 'milvus.db'}?index=flat",
        "milvus-hnsw": f"milvus://{work / 'milvus.db'}?index=hnsw",
    }
    report: dict[str, Any] = {"dataset": args.dataset, "n_docs": len(docs),
                              "n_queries": len(ds.queries), "encoder": f"hash-{args.dim}",
                              "ndcg@10": {}, "ingest_s": {}, "search_s": {}}  # fmt: skip
    wanted = [t.strip() for t in args.targets.split(",") if t.strip()]
    if args.merge and args.out.is_file():
        old = json.loads(args.out.read_text())
        for key in ("ndcg@10", "ingest_s", "search_s"):
            for sub, value in old.get(key, {}).items():
                if isinstance(value, dict):
                    report[key].setdefault(sub, {}).update(value)
                else:
                    report[key][sub] = value
    for name, target in targets.items():
        if name not in wanted:
            continue
        idx = Index.create(target, encoder=enc, ann="hnsw" if name.endswith("hnsw") else None)
        try:
            report["ingest_s"][name] = round(_ingest(idx, docs), 2)
            for mode in MODES:
                run, secs = _run(idx, ds.queries, mode)
                ndcg = evaluate(ds.qrels, run, [10])["ndcg@10"]
                report["ndcg@10"].setdefault(mode, {})[name] = ndcg
                report["search_s"].setdefault(mode, {})[name] = round(secs, 2)
        finally:
            idx.close()
        print(name, {m: round(report["ndcg@10"][m][name], 4) for m in MODES}, flush=True)
    if "milvus-bm25-function" in wanted:
        native = native_bm25(work / "native.db", docs, ds.queries)
        ndcg = evaluate(ds.qrels, native["run"], [10])["ndcg@10"]
        report["ndcg@10"].setdefault("bm25", {})["milvus-bm25-function"] = ndcg
        report["search_s"].setdefault("bm25", {})["milvus-bm25-function"] = round(
            native["seconds"], 2
        )
    report["environment"] = {
        "python": sys.version.split()[0], "platform": platform.platform(),
        "pymilvus": metadata.version("pymilvus"), "milvus-lite": metadata.version("milvus-lite"),
        "command": shlex.join([sys.executable, *sys.argv]),
    }  # fmt: skip
    print(json.dumps({k: report[k] for k in ("ndcg@10", "ingest_s", "search_s")}, indent=1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    return report


if __name__ == "__main__":
    main()
