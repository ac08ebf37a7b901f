"""Encoding throughput of a distilled static model against its teacher, same texts.

The first ``--limit`` documents of a BEIR corpus (``Document.full_text``: title and text) are
encoded with ``encode_documents`` by ``Encoder(--static)`` (the ``"static"`` backend: one
tokenization and one gather per text) and by ``Encoder(--teacher)`` (ONNX fp32, the default
backend), both loaded and warmed up once. The two alternate within each repeat and their
order rotates between repeats, so machine noise hits both; docs/s is the median over
``--repeats`` and the ratio is static / teacher. Prints one JSON object (also to ``--out``).

Example:
    nice -n 19 .venv/bin/python benchmarks/static_throughput.py --static models/minilm-static \
        --teacher all-MiniLM-L6-v2 --limit 600 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def measure(args: argparse.Namespace) -> dict[str, Any]:
    from embedstack import Encoder
    from embedstack.eval import load_corpus

    _, texts = load_corpus(args.datasets / args.dataset)  # Document.full_text: title + text
    texts = texts[: args.limit] if args.limit else texts
    encoders = {
        "static": Encoder(args.static, show_progress=False),
        "teacher": Encoder(args.teacher, threads=args.threads, show_progress=False),
    }
    for encoder in encoders.values():
        encoder.encode_documents(texts[:8])  # warm-up: graphs, tokenizer, first allocations
    seconds: dict[str, list[float]] = {name: [] for name in encoders}
    order = list(encoders)
    for repeat in range(args.repeats):
        for name in order[repeat % 2 :] + order[: repeat % 2]:
            started = time.perf_counter()
            encoders[name].encode_documents(texts)
            seconds[name].append(time.perf_counter() - started)
    docs_per_s = {name: len(texts) / statistics.median(s) for name, s in seconds.items()}
    return {
        "dataset": args.dataset,
        "docs": len(texts),
        "repeats": args.repeats,
        "threads": args.threads,
        "static": str(args.static),
        "teacher": args.teacher,
        "dims": {name: encoder.dim for name, encoder in encoders.items()},
        "seconds": seconds,
        "docs_per_s": docs_per_s,
        "ratio_static_over_teacher": docs_per_s["static"] / docs_per_s["teacher"],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--datasets", type=Path, default=ROOT.parent / "shared" / "datasets")
    parser.add_argument("--dataset", default="scifact")
    parser.add_argument("--static", type=Path, required=True, help="distilled static folder")
    parser.add_argument("--teacher", default="all-MiniLM-L6-v2")
    parser.add_argument("--limit", type=int, default=600, help="first N docs (0: all)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    text = json.dumps(measure(args), indent=2)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
