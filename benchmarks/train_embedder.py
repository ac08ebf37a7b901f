"""Fine-tune a bi-encoder on a BEIR dataset's train qrels, then measure it on the test split.

Measures (issue 17 "Must show"): test dense nDCG@10 at the full dimension and at 256/128/64
(Matryoshka retention = truncated / full), hybrid nDCG@10 (the index's BM25 + dense fusion)
with the fine-tuned model, the same for the base model (same machine, same run), STS-B
Spearman before and after (the forgetting check), and the training wall time. Only the
``train`` qrels are trained on; the dev split is carved from them; ``test`` is only scored.
Writes one JSON under ``benchmarks/results/issue17/``.

Defaults, and why:

* ``--epochs 2`` with ``--patience 1``: the SBERT/MS MARCO examples train one epoch over
  large data; SciFact has only ~800 train queries, where one epoch is ~23 steps. The dev
  split carved from the train qrels keeps the best epoch.
* ``--batch-size 32``, no GradCache: more in-batch negatives make InfoNCE harder and better
  (Gao et al. 2021 train with thousands), but on a CPU memory is not the limit, time is.
  GradCache (``--mini-batch-size 16``, CachedMNRL) adds a full extra forward pass (measured:
  1.2 examples/s at batch 32 with it, 2 cores), and a larger batch gives fewer optimizer
  steps per epoch (SciFact: ~23 at 32, ~12 at 64). Use it for batches that do not fit in
  memory.
* ``--lr 5e-5`` for SciFact-sized data: the Hugging Face / sentence-transformers trainer
  default, warm-up 10 %, linear decay; ~46 steps over two epochs are few, so the rate is
  the trainer's default rather than MS MARCO's 2e-5 (Reimers & Gurevych) over far more
  steps. The STS-B check watches forgetting.
* ``--negatives 1``: one mined hard negative per pair (SBERT MS MARCO triplets); each extra
  negative column is another full forward pass of ``batch-size`` documents.
* Mining (BM25 + dense over the corpus) costs about as much as encoding the corpus once;
  ``--negatives-file`` reuses an earlier run's ``hard_negatives.jsonl`` (the reranker's too).
* ``--max-seq-length 256``: the base's own length (SciFact abstracts average ~300 tokens);
  lower it (128) to halve the cost when a run must fit the 30-minute budget.

Example:
    .venv/bin/python benchmarks/train_embedder.py --dataset scifact --matryoshka \\
        --time-limit-min 30
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DIMS = (256, 128, 64)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", choices=("scifact", "nfcorpus"), default="scifact")
    p.add_argument("--datasets", type=Path, default=ROOT.parent / "shared" / "datasets")
    p.add_argument("--base", default="all-MiniLM-L6-v2")
    p.add_argument("--matryoshka", action="store_true", help="train dims 256,128,64 too")
    p.add_argument("--matryoshka-weights", default=None,
                   help="loss weights, full dim first, e.g. 1,1,2,4 (default equal)")  # fmt: skip
    p.add_argument("--no-pca-init", action="store_true",
                   help="Matryoshka without rotating the base by PCA first")  # fmt: skip
    p.add_argument("--unsupervised", choices=("ict", "crop"), default=None,
                   help="train on the corpus alone (no qrels)")  # fmt: skip
    p.add_argument("--teacher", default=None,
                   help="Margin-MSE teacher: a cross-encoder folder, or bi-encoders "
                   "comma-separated (GPL with an ensemble)")  # fmt: skip
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--mini-batch-size", type=int, default=None, help="GradCache mini-batch")
    p.add_argument("--negatives", type=int, default=1)
    p.add_argument("--miner", default="all-MiniLM-L6-v2", help="'none': BM25 negatives only")
    p.add_argument("--negatives-file", type=Path, default=None,
                   help="an earlier training's hard_negatives.jsonl (no mining)")  # fmt: skip
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--max-seq-length", type=int, default=256)
    p.add_argument("--max-pairs", type=int, default=None, help="cap on pairs per epoch")
    p.add_argument("--positives-per-query", type=int, default=0,
                   help="judged positives per query per epoch (0: every pair)")  # fmt: skip
    p.add_argument("--dev-fraction", type=float, default=0.1)
    p.add_argument("--patience", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0, help="training seed (data order, pairs)")
    p.add_argument("--time-limit-min", type=float, default=None,
                   help="cap max pairs so training fits (uses --pairs-per-s)")  # fmt: skip
    p.add_argument("--pairs-per-s", type=float, default=None,
                   help="measured training speed for --time-limit-min")  # fmt: skip
    p.add_argument("--skip-base", action="store_true", help="do not re-measure the base")
    p.add_argument("--work", type=Path, default=Path("/tmp/embedstack-issue17"))
    p.add_argument("--out", type=Path, default=None, help="result JSON")
    p.add_argument("--measure-only", type=Path, default=None, metavar="MODEL_DIR",
                   help="skip training: measure a trained folder on test")  # fmt: skip
    return p.parse_args(argv)


def measure(model: Any, dataset: Any, work: Path, threads: int) -> dict[str, Any]:
    """Dense nDCG@10 (full and truncated dims) and hybrid nDCG@10 of ``model`` on test."""
    from embedstack import Encoder
    from embedstack.eval import evaluate_dense, load_corpus
    from embedstack.eval.index_runner import evaluate_on_index

    encoder = Encoder(model, threads=threads)
    ids, texts = load_corpus(dataset)
    started = time.perf_counter()
    docs = encoder.encode_documents(texts)
    report: dict[str, Any] = {"encode_s": round(time.perf_counter() - started, 1), "dense": {}}
    for dim in (None, *DIMS):
        result = evaluate_dense(encoder, dataset, dim=dim, doc_embeddings=(ids, docs))
        report["dense"][str(dim or encoder.dim)] = round(result["ndcg@10"], 4)
    full = report["dense"][str(encoder.dim)]
    report["retention"] = {str(d): round(report["dense"][str(d)] / full, 4) for d in DIMS}
    # hybrid cannot reuse ``docs``: the index embeds its own chunks (title + a window of at
    # most max_length tokens; 10,364 for SciFact's 5,183 abstracts), not truncated documents
    folder = work / f"index-{encoder.identity.weights_hash[:12]}"
    hybrid = evaluate_on_index(dataset, encoder, mode="hybrid", directory=folder)
    report["hybrid"] = round(hybrid["ndcg@10"], 4)
    report["matryoshka_dims"] = list(encoder.matryoshka_dims)
    return report


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from embedstack.eval import load_beir
    from embedstack.train import train_embedder

    data = args.datasets / args.dataset
    test = load_beir(data, split="test")
    if args.measure_only is not None:
        report = {"command": shlex.join([sys.executable, *sys.argv]), "dataset": args.dataset,
                  "model": str(args.measure_only),
                  "tuned": measure(args.measure_only, test, args.work, args.threads)}  # fmt: skip
        path = args.out or ROOT / "benchmarks" / "results" / "issue17" / (
            f"{args.dataset}-{args.measure_only.name}-measured.json")  # fmt: skip
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
        print(json.dumps(report["tuned"], indent=2))
        return 0
    max_pairs = args.max_pairs
    if args.time_limit_min and args.pairs_per_s:
        budget = int(args.time_limit_min * 60 * args.pairs_per_s * 0.8 / args.epochs)
        max_pairs = min(max_pairs or budget, budget)  # 20 % kept for mining and saving
    mrl = "mrl" + (
        "w" + args.matryoshka_weights.replace(",", "-") if args.matryoshka_weights else ""
    )
    parts = [mrl if args.matryoshka else "plain", args.unsupervised or "sup"]
    if args.teacher:
        parts.append("teacher" + str(len(args.teacher.split(","))))
    if args.positives_per_query:
        parts.append(f"ppq{args.positives_per_query}")
    if args.seed:
        parts.append(f"seed{args.seed}")
    tag = "-".join([*parts, f"e{args.epochs}", f"b{args.batch_size}", f"L{args.max_seq_length}"])
    out = args.work / f"{args.dataset}-{tag}"
    started = time.perf_counter()
    result = train_embedder(
        data, out=out, overwrite=True, base=args.base, epochs=args.epochs,
        batch_size=args.batch_size, mini_batch_size=args.mini_batch_size,
        negatives_per_query=args.negatives, negatives_file=args.negatives_file,
        miner=None if args.miner.lower() == "none" else args.miner, lr=args.lr,
        max_seq_length=args.max_seq_length,
        max_pairs=max_pairs, positives_per_query=args.positives_per_query,
        dev_fraction=args.dev_fraction, patience=args.patience,
        threads=args.threads, seed=args.seed, unsupervised=args.unsupervised,
        teacher=args.teacher,
        matryoshka_dims=",".join(map(str, DIMS)) if args.matryoshka else None,
        matryoshka_weights=args.matryoshka_weights,
        pca_init=False if args.no_pca_init else None,
        sts_file=args.datasets / "stsb" / "sts-test.csv",
    )  # fmt: skip
    wall = time.perf_counter() - started
    report: dict[str, Any] = {
        "command": shlex.join([sys.executable, *sys.argv]),
        "machine": {"cpu": platform.processor() or platform.machine(), "threads": args.threads},
        "dataset": args.dataset,
        "train": {
            k: (str(v) if isinstance(v, Path) else v) for k, v in vars(result).items()
        },  # fmt: skip
        "train_wall_s": round(wall, 1),
        "tuned": measure(out, test, args.work, args.threads),
    }
    if not args.skip_base:
        report["base"] = measure(args.base, test, args.work, args.threads)
        report["gain"] = {
            "dense": round(float(np.subtract(*[report[k]["dense"][str(max(
                map(int, report[k]["dense"])))] for k in ("tuned", "base")])), 4),
            "hybrid": round(report["tuned"]["hybrid"] - report["base"]["hybrid"], 4),
        }  # fmt: skip
    path = args.out or ROOT / "benchmarks" / "results" / "issue17" / f"{args.dataset}-{tag}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
    print(json.dumps({k: report[k] for k in ("tuned", "base", "gain") if k in report}, indent=2))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
