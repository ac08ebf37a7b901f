"""Query latency right after opening an index whose files are not in the page cache, with and
without the read-ahead of ``embedstack.index.readahead``, and with the files in it.

Each case runs in a fresh process (the term cache starts empty, as after any open). First
every file of the index is dropped from the page cache (``POSIX_FADV_DONTNEED``: this
index's pages only) or, for ``warm``, read once. Then the index is opened, and ``scale.py``'s
queries are timed as ``scale.py`` times them (10 warm-up queries, then all of them, one pass:
most BM25 queries bring terms the index has not scored yet), then all of them again
(``again_*``: every term scored, every file read). ``cold-no-readahead`` runs with
``EMBEDSTACK_READAHEAD=0``. Wall and CPU milliseconds. Usage::

    .venv/bin/python benchmarks/readahead_probe.py /work/runs/s8/s1m/local-hnsw --mode dense
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
CASES = ("cold-no-readahead", "cold-readahead", "warm")


def set_cache(index: Path, warm: bool) -> None:
    for p in sorted(f for f in index.rglob("*") if f.is_file()):
        if warm:
            with open(p, "rb") as f:
                while f.read(1 << 24):
                    pass
        else:
            fd = os.open(p, os.O_RDONLY)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            os.close(fd)


def child(args: argparse.Namespace) -> dict[str, object]:
    sys.path.insert(0, str(HERE))
    from embedstack import HashEncoder, Index
    from scale import latency, queries

    set_cache(args.index, warm=args.child == "warm")
    qs = queries(args.datasets, args.queries)
    t0 = time.perf_counter()
    idx = Index.open(args.index, encoder=HashEncoder(args.dim), readonly=True)
    open_s = time.perf_counter() - t0
    out = latency(lambda q: idx.search(q, mode=args.mode, k=10), qs)
    # the same queries again in the same process: every term already scored, files read
    again = latency(lambda q: idx.search(q, mode=args.mode, k=10), qs, warmup=0)
    idx.close()
    return {"case": args.child, "open_s": round(open_s, 3), **out,
            **{f"again_{k}": v for k, v in again.items()}}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("index", type=Path, help="a local index built by scale.py (hash-256)")
    parser.add_argument("--mode", default="bm25", choices=("bm25", "dense", "hybrid"))
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--datasets", type=Path, default=HERE.parent.parent / "shared" / "datasets")
    parser.add_argument("--dim", type=int, default=256, help="the HashEncoder's dimension")
    parser.add_argument("--rounds", type=int, default=1, help="times to run the three cases")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--child", choices=CASES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return
    runs = []
    for _ in range(args.rounds):
        for case in CASES:
            cmd = [sys.executable, __file__, str(args.index), "--mode", args.mode,
                   "--queries", str(args.queries), "--datasets", str(args.datasets),
                   "--dim", str(args.dim), "--child", case]  # fmt: skip
            env = {**os.environ, "EMBEDSTACK_READAHEAD": "0" if case == CASES[0] else "1"}
            done = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
            runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(json.dumps(runs[-1]), flush=True)
    keys = ("p50_ms", "p99_ms", "cpu_p50_ms", "cpu_p99_ms", "again_p50_ms", "again_p99_ms",
            "open_s")  # fmt: skip
    summary = {c: {k: float(np.median([r[k] for r in runs if r["case"] == c])) for k in keys}
               for c in CASES}  # fmt: skip
    result = {"index": str(args.index), "mode": args.mode, "queries": args.queries,
              "command": " ".join(sys.argv), "runs": runs, "median": summary}  # fmt: skip
    print(json.dumps(summary, indent=1))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
