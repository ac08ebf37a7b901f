"""Probe (issue 18): where milvus-lite's ingest time goes as the collection grows.

``scale.py``'s documents (hash-256, batches of 2,000) are added to a fresh milvus-lite index;
each ``add`` is timed, and within it the time spent in ``MilvusStore.existing`` (the check
that no id of the batch is in the index already: a ``doc_id in [...]`` filter, which
milvus-lite answers by scanning the collection). One JSON line per ``--every`` documents::

    .venv/bin/python benchmarks/milvus_ingest_probe.py WORKDIR --n 100000
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("workdir", type=Path)
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=2000)
    parser.add_argument("--every", type=int, default=20_000)
    parser.add_argument("--datasets", type=Path, default=HERE.parent.parent / "shared" / "datasets")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    sys.path.insert(0, str(HERE))
    from embedstack import HashEncoder, Index
    from embedstack.index.backends.milvus import MilvusStore
    from scale import batches, sentences

    spent = {"existing": 0.0}
    real = MilvusStore.existing

    def timed(self: MilvusStore, ids: object) -> dict[str, str]:
        t0 = time.perf_counter()
        try:
            return real(self, ids)  # type: ignore[arg-type]
        finally:
            spent["existing"] += time.perf_counter() - t0

    MilvusStore.existing = timed  # type: ignore[method-assign]
    args.workdir.mkdir(parents=True, exist_ok=True)
    uri = f"milvus://{args.workdir / 'probe.db'}?index=probe"
    rows, done, add_s, t_all = [], 0, 0.0, time.perf_counter()
    with Index.create(uri, encoder=HashEncoder(256)) as idx:
        for batch in batches(sentences(args.datasets), args.n, args.batch):
            t0 = time.perf_counter()
            idx.add(batch)
            add_s += time.perf_counter() - t0
            done += len(batch)
            if done % args.every == 0 or done == args.n:
                row = {"docs": done, "add_s": round(add_s, 2),
                       "existing_s": round(spent["existing"], 2),
                       "docs_per_s": round(args.every / add_s, 1) if add_s else None}  # fmt: skip
                print(json.dumps(row), flush=True)
                rows.append(row)
                add_s, spent["existing"] = 0.0, 0.0
    result = {"n": args.n, "batch": args.batch, "every": args.every, "rows": rows,
              "total_s": round(time.perf_counter() - t_all, 1)}  # fmt: skip
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
