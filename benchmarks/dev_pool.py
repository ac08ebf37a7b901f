"""Does a smaller dev pool rank checkpoints the way a larger one does?

``embedstack train embedder`` evaluates its dev split before training and after every epoch by
encoding the dev pool (the dev queries' judged documents and mined negatives, then random
corpus documents up to ``dev_pool``). Encoding dominates each check's cost, so the pool size
sets it. Pools are nested by construction (a larger pool only adds documents), so this script
builds the largest pool once, encodes it with each model, and scores the dev queries over
every smaller pool by restricting the score matrix. A good pool size keeps the models'
ordering; the absolute numbers rise as the pool shrinks (fewer distractors).

Example:
    .venv/bin/python benchmarks/dev_pool.py --models all-MiniLM-L6-v2 \\
        /work/runs/t17b/scifact-plain-sup-e2-b32-L256 --pools 100,300,1000
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", type=Path,
                   default=ROOT.parent / "shared" / "datasets" / "scifact")  # fmt: skip
    p.add_argument("--models", nargs="+", required=True, help="registry names or folders")
    p.add_argument("--pools", default="100,300,1000", help="pool sizes, largest last")
    p.add_argument("--negatives-file", type=Path, default=None,
                   help="the runs' hard_negatives.jsonl (default: mine with BM25)")  # fmt: skip
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)

    import torch
    from sentence_transformers import SentenceTransformer

    from embedstack.eval.metrics import evaluate
    from embedstack.train.embedder_config import EmbedderConfig
    from embedstack.train.embedder_data import load_embedder_data
    from embedstack.train.embedder_model import check_bi_encoder

    torch.set_num_threads(args.threads)
    sizes = sorted(int(s) for s in args.pools.split(","))
    pools: dict[int, list[str]] = {}
    with tempfile.TemporaryDirectory(prefix="embedstack-devpool-") as tmp:
        for size in sizes:
            cfg = EmbedderConfig(dataset_dir=args.dataset, out=Path(tmp) / "out", miner=None,
                                 negatives_file=args.negatives_file, dev_pool=size)  # fmt: skip
            data = load_embedder_data(cfg, Path(tmp))
            pools[size] = list(data.dev.docs)
    dev = data.dev
    for small, large in zip(sizes, sizes[1:], strict=False):
        assert set(pools[small]) <= set(pools[large]), "pools are not nested"
    doc_ids = pools[sizes[-1]]
    qids = list(dev.queries)
    report: dict[str, object] = {"command": shlex.join([sys.executable, *sys.argv]),
                                 "dev_queries": len(qids), "models": {}}  # fmt: skip
    for name in args.models:
        folder, config = check_bi_encoder(name)
        model = SentenceTransformer(str(folder), device="cpu")
        model.max_seq_length = 256
        started = time.perf_counter()
        q = model.encode([config.query_prefix + dev.queries[i] for i in qids],
                         normalize_embeddings=True, batch_size=32)  # fmt: skip
        d = model.encode([config.document_prefix + dev.docs[i] for i in doc_ids],
                         normalize_embeddings=True, batch_size=32)  # fmt: skip
        seconds = time.perf_counter() - started
        scores = np.asarray(q) @ np.asarray(d).T
        row: dict[str, object] = {"encode_s_largest_pool": round(seconds, 1)}
        for size in sizes:
            keep = [j for j, doc in enumerate(doc_ids) if doc in set(pools[size])]
            sub = scores[:, keep]
            run = {qid: {doc_ids[keep[j]]: float(sub[i, j]) for j in range(len(keep))}
                   for i, qid in enumerate(qids)}  # fmt: skip
            row[str(size)] = round(evaluate(dev.qrels, run, k_values=(10,))["ndcg@10"], 4)
        report["models"][name] = row  # type: ignore[index]
        print(name, json.dumps(row), flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
