"""Time ``Index.open`` right after the index's files leave the page cache, with a profile.

Drops every file of the index from the page cache (``POSIX_FADV_DONTNEED``: this index's
pages only; the host may still hold them), then opens it in this fresh process with the
read-ahead off (it starts after the open anyway) and prints the wall and CPU seconds and the
open's cProfile by cumulative time. With ``--layout``, also where SQLite keeps each table and
index in ``docs.sqlite`` (``dbstat``: pages and their first and last page numbers), which
decides how scattered the open's two scans are. Usage::

    .venv/bin/python benchmarks/cold_open.py /work/runs/s8/s1m/local-hnsw --reader --layout
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import sqlite3
import time
from pathlib import Path


def drop(index: Path) -> None:
    for p in sorted(f for f in index.rglob("*") if f.is_file()):
        fd = os.open(p, os.O_RDONLY)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.close(fd)


def layout(db: Path) -> list[dict[str, object]]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    rows = conn.execute("SELECT name, count(*), min(pageno), max(pageno) FROM dbstat "
                        "GROUP BY name ORDER BY count(*) DESC").fetchall()  # fmt: skip
    conn.close()
    return [{"name": n, "pages": c, "first": a, "last": b} for n, c, a, b in rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("index", type=Path)
    parser.add_argument("--dim", type=int, default=256, help="the hashing encoder's dimension")
    parser.add_argument("--reader", action="store_true", help="open read-only")
    parser.add_argument("--layout", action="store_true", help="print docs.sqlite's layout")
    parser.add_argument("--profile", type=int, default=0, help="profile lines to print")
    args = parser.parse_args()
    if args.layout:
        for row in layout(args.index / "docs.sqlite"):
            print(json.dumps(row))
    drop(args.index)
    os.environ["EMBEDSTACK_READAHEAD"] = "0"
    from embedstack import HashEncoder, Index

    profile = cProfile.Profile()
    wall, cpu = time.perf_counter(), time.process_time()
    profile.enable()
    idx = Index.open(args.index, encoder=HashEncoder(args.dim), readonly=args.reader)
    profile.disable()
    out = {"index": str(args.index), "reader": args.reader,
           "open_s": round(time.perf_counter() - wall, 3),
           "cpu_s": round(time.process_time() - cpu, 3)}  # fmt: skip
    idx.close()
    print(json.dumps(out), flush=True)
    if args.profile:
        pstats.Stats(profile).sort_stats("cumtime").print_stats(args.profile)


if __name__ == "__main__":
    main()
