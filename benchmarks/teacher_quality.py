"""How well a bi-encoder ensemble teacher ranks, against its members and the student.

A Margin-MSE teacher is only worth distilling if it ranks better than the student. This
scores every query of a judged split over the whole corpus with each model alone (cosine)
and with :class:`embedstack.train.teachers.DenseTeacher` (the members' mean corpus z-score,
what ``train embedder --teacher A,B`` distils), and reports nDCG@10 and recall@100. Use a
split the student is not evaluated on (SciFact: ``train``); the labels only measure, nothing
is trained. Corpus vectors come from the cache ``embedstack pick`` fills.

    .venv/bin/python benchmarks/teacher_quality.py --dataset scifact --split train \\
        --members all-mpnet-base-v2,multilingual-e5-small --out /tmp/teacher.json
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="scifact")
    p.add_argument("--datasets", type=Path, default=ROOT.parent / "shared" / "datasets")
    p.add_argument("--split", default="train")
    p.add_argument("--members", default="all-mpnet-base-v2,multilingual-e5-small")
    p.add_argument("--student", default="all-MiniLM-L6-v2")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=None)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from embedstack.eval import evaluate, load_beir, load_corpus
    from embedstack.train.teachers import load_teacher

    data = args.datasets / args.dataset
    split = load_beir(data, split=args.split)
    ids, texts = load_corpus(data)
    members = [m.strip() for m in args.members.split(",") if m.strip()]

    def ranked(teacher: Any) -> dict[str, float]:
        run = {}
        for qid, query in split.queries.items():
            scores = np.asarray(teacher.score(query, texts))
            top = np.argpartition(-scores, 100)[:100]
            run[qid] = {ids[i]: float(scores[i]) for i in top}
        metrics = evaluate(split.qrels, run, [10, 100])
        return {k: round(metrics[k], 4) for k in ("ndcg@10", "recall@100")}

    report: dict[str, Any] = {"command": shlex.join([sys.executable, *sys.argv]),
                              "dataset": args.dataset, "split": args.split,
                              "queries": len(split.queries), "models": {}}  # fmt: skip
    corpus = lambda: texts  # noqa: E731
    for name in [args.student, *members, ",".join(members)]:
        started = time.perf_counter()
        # one model as its own student: the z-scores are put back on its own cosine scale,
        # so this is its plain cosine ranking
        teacher = load_teacher(name, student=args.student if "," in name else name,
                               corpus=corpus, threads=args.threads)  # fmt: skip
        label = f"ensemble ({name})" if "," in name else name
        report["models"][label] = {**ranked(teacher),
                                   "seconds": round(time.perf_counter() - started, 1)}  # fmt: skip
        print(label, report["models"][label], flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
