"""BM25's first queries against their repeat, in one process: term-cache misses, wall time,
and the time ``np.add.at`` takes in each pass (cProfile).

Opens a local index built by ``scale.py`` (files in the page cache, read-ahead off), runs
``scale.py``'s queries twice in ``--mode`` (bm25 or hybrid, ``k=10``), and reports per pass
how many times the scorer computed a term's impacts (a miss of its term cache), the pass's
seconds, and cProfile's total for ``np.add.at`` (the dense accumulation). One dense query
first loads the dense side (an HNSW graph) outside the passes. The distinct query
terms and their postings are counted too. Run it under another checkout's code with
``SCALE_SRC=OTHER/src`` (``scale.py`` puts that first on the path). Usage::

    .venv/bin/python benchmarks/bm25_pass_probe.py /work/runs/s8/s1m/local-hnsw --mode hybrid
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import sys
import time
from pathlib import Path

os.environ["EMBEDSTACK_READAHEAD"] = "0"
for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_name] = "1"

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from scale import queries  # noqa: E402

_ADD_AT = "<method 'at' of 'numpy.ufunc' objects>"  # cProfile's name for np.add.at


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("index", type=Path, help="a local index built by scale.py (hash-N)")
    parser.add_argument("--mode", default="hybrid", choices=("bm25", "hybrid"))
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--datasets", type=Path, default=HERE.parent.parent / "shared" / "datasets")
    args = parser.parse_args()

    import embedstack.index.lexical_scoring as scoring
    from embedstack import HashEncoder, Index

    print(f"# {scoring.__file__}", file=sys.stderr)

    misses = [0]
    postings: dict[int, int] = {}
    compute = scoring.Scorer._term_postings

    def counted(self: scoring.Scorer, gid: int) -> object:
        hit = gid in self._postings
        out = compute(self, gid)
        misses[0] += not hit
        postings[gid] = len(out[0])
        return out

    scoring.Scorer._term_postings = counted  # type: ignore[method-assign]
    qs = queries(args.datasets, args.queries)
    idx = Index.open(args.index, encoder=HashEncoder(args.dim), readonly=True)
    idx.search(qs[0], mode="dense", k=10)  # loads the dense side (an HNSW graph), no BM25 term
    passes = []
    for _ in range(2):
        misses[0] = 0
        profile = cProfile.Profile()
        t0 = time.perf_counter()
        profile.enable()
        for q in qs:
            idx.search(q, mode=args.mode, k=10)
        profile.disable()
        wall = time.perf_counter() - t0
        stats = pstats.Stats(profile).stats  # type: ignore[attr-defined]
        add_at = sum(
            v[2] for k, v in stats.items() if k[2] == "<method 'at' of 'numpy.ufunc' objects>"
        )
        passes.append({"misses": misses[0], "seconds": round(wall, 3),
                       "add_at_s": round(add_at, 3)})  # fmt: skip
    idx.close()
    print(json.dumps({"index": str(args.index), "mode": args.mode, "queries": len(qs),
                      "terms": len(postings), "postings": sum(postings.values()),
                      "passes": passes}))  # fmt: skip


if __name__ == "__main__":
    main()
