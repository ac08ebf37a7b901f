"""Segments and search latency of a local index after many small writes, without and with
merging of the chunk segments (issue 18: a 10k-request mixed soak left ~3,000 dense
segments and every write slowed searches).

Each arm makes the same ``--writes`` writes on a fresh index with the hashing encoder
(so encoding costs nothing): upserts of 1-4 documents (new ids, or new versions of known
ones) and, one write in five, a delete of 1-2 known ids. Documents are SciFact abstracts
when ``../shared/datasets/scifact`` is present, else synthetic sentences. Then it times
``--queries`` searches per mode (dense, bm25, hybrid; k=10; one query at a time).

Arms: ``never`` (one segment per write and no merging: the index before this change, by a
policy that never fills a tier) and ``tiered`` (the index's default policy,
:data:`embedstack.index._merge.POLICY`). Both run in one process on the same machine, one
after the other.

Usage:
    nice -n 19 python benchmarks/segment_merge.py --writes 600 --queries 100 \
        --out benchmarks/results/issue18/segment_merge.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from embedstack import HashEncoder
from embedstack.index import Index, _merge
from embedstack.index.merge_policy import MergePolicy

DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"
NEVER = MergePolicy(segments_per_tier=10**6, floor_docs=1, max_merged_docs=10**9,
                    deletes_pct_allowed=100.0)  # fmt: skip
MODES = ("dense", "bm25", "hybrid")


def _texts(n: int) -> list[str]:
    corpus = DATASETS / "scifact" / "corpus.jsonl"
    if corpus.exists():
        out = []
        with corpus.open(encoding="utf-8") as f:
            for line in f:
                doc = json.loads(line)
                out.append(f"{doc.get('title', '')}. {doc['text']}"[:1200])
                if len(out) == n:
                    return out
    rng = random.Random(0)
    words = "cell protein gene mouse tumour therapy kinase trial dose immune".split()
    return [" ".join(rng.choices(words, k=40)) for _ in range(n)]


def _ops(n_writes: int, texts: list[str], seed: int) -> list[tuple[str, list[Any]]]:
    rng = random.Random(seed)
    ops: list[tuple[str, list[Any]]] = []
    known: list[str] = []
    next_id = 0
    for _ in range(n_writes):
        if known and rng.random() < 0.2:
            gone = rng.sample(known, min(len(known), rng.randint(1, 2)))
            known = [i for i in known if i not in gone]
            ops.append(("delete", gone))
            continue
        docs = []
        for _ in range(rng.randint(1, 4)):
            if known and rng.random() < 0.5:
                doc_id = rng.choice(known)
            else:
                doc_id, next_id = f"d{next_id}", next_id + 1
                known.append(doc_id)
            if doc_id not in {d["id"] for d in docs}:
                text = texts[rng.randrange(len(texts))]
                docs.append({"id": doc_id, "text": f"{text} v{len(ops)}",
                             "metadata": {"n": len(ops) % 7}})  # fmt: skip
        ops.append(("upsert", docs))
    return ops


def _arm(name: str, policy: MergePolicy, ops: list[tuple[str, list[Any]]], queries: list[str],
         dim: int, root: Path) -> dict[str, Any]:  # fmt: skip
    _merge.POLICY = policy
    idx = Index.create(root / name, encoder=HashEncoder(dim, name=f"hash-{dim}"))
    t0 = time.perf_counter()
    for op, arg in ops:
        idx.upsert(arg) if op == "upsert" else idx.delete(arg)
    write_s = time.perf_counter() - t0
    stats = idx.stats()
    out: dict[str, Any] = {
        "policy": name,
        "segments": stats.segments,
        "docs": stats.n_docs,
        "chunks": stats.n_chunks,
        "dense_bytes": stats.bytes.get("dense", 0),
        "write_s": round(write_s, 2),
        "write_ms_mean": round(1000 * write_s / len(ops), 2),
    }
    for mode in MODES:
        idx.search(queries[0], mode=mode, k=10)  # warm: caches, masks
        times = []
        for q in queries:
            t = time.perf_counter()
            idx.search(q, mode=mode, k=10)
            times.append(1000 * (time.perf_counter() - t))
        times.sort()
        out[f"{mode}_p50_ms"] = round(statistics.median(times), 3)
        out[f"{mode}_p99_ms"] = round(times[min(len(times) - 1, int(0.99 * len(times)))], 3)
    idx.check()
    idx.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writes", type=int, default=600)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument(
        "--fsync",
        action="store_true",
        help="keep fsync (default: off, the writes' I/O is not the subject)",
    )
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if not args.fsync:
        os.fsync = lambda fd: None  # type: ignore[assignment]
    texts = _texts(2000)
    ops = _ops(args.writes, texts, seed=7)
    rng = random.Random(1)
    queries = [" ".join(rng.choice(texts).split()[:8]) for _ in range(args.queries)]
    default = _merge.POLICY
    with tempfile.TemporaryDirectory() as tmp:
        arms = [_arm(n, p, ops, queries, args.dim, Path(tmp))
                for n, p in (("never", NEVER), ("tiered", default))]  # fmt: skip
    _merge.POLICY = default
    result = {
        "benchmark": "segment_merge",
        "writes": args.writes,
        "queries": args.queries,
        "dim": args.dim,
        "fsync": args.fsync,
        "corpus": "scifact" if (DATASETS / "scifact" / "corpus.jsonl").exists() else "synthetic",
        "policy": {
            "segments_per_tier": default.segments_per_tier,
            "floor_rows": default.floor_docs,
            "max_merged_rows": default.max_merged_docs,
        },  # fmt: skip
        "machine": f"{platform.machine()} {os.cpu_count()} cpus, nice 19",
        "arms": arms,
    }
    cols = ["policy", "segments", "docs", "chunks", "write_ms_mean"] + [
        f"{m}_{p}_ms" for m in MODES for p in ("p50", "p99")
    ]
    print(" | ".join(cols))
    for arm in arms:
        print(" | ".join(str(arm[c]) for c in cols))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
