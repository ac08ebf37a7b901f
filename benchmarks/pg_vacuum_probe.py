"""Probe (issue 18): PostgreSQL BM25 latency over 20k ``scale.py`` documents before and
after one VACUUM of the postings (an index-only scan reads the table for every row on a page
the visibility map does not mark all-visible). p50 / p99 ms of 300 queries, k=10.

    .venv/bin/python benchmarks/pg_vacuum_probe.py WORKDIR
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE))

import pgserver  # noqa: E402
import psycopg  # noqa: E402

import scale  # noqa: E402
from embedstack import HashEncoder, Index  # noqa: E402
from embedstack.index.backends.pg_sql import parse_uri  # noqa: E402


def main() -> None:
    work = Path(sys.argv[1])
    data = HERE.parent.parent / "shared" / "datasets"
    server = pgserver.get_server(work / "pgdata", cleanup_mode="stop")
    server.psql("CREATE EXTENSION IF NOT EXISTS vector;")
    uri = server.get_uri() + "&index=exp"
    pool, qs = scale.sentences(data), scale.queries(data, 300)
    idx = Index.create(uri, encoder=HashEncoder(256))
    for batch in scale.batches(pool, 20000, 2000):
        idx.add(batch)

    def latency() -> tuple[float, float]:
        t = []
        for q in qs:
            t0 = time.perf_counter()
            idx.search(q, mode="bm25", k=10)
            t.append(time.perf_counter() - t0)
        return float(np.percentile(t, 50) * 1e3), float(np.percentile(t, 99) * 1e3)

    print("before vacuum", latency())
    print("again", latency())
    with psycopg.connect(parse_uri(uri).conninfo, autocommit=True) as conn:
        conn.execute('VACUUM (ANALYZE) "exp".postings')
    print("after vacuum", latency())
    idx.close()


if __name__ == "__main__":
    main()
