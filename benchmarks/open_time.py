"""How long ``Index.open`` takes on an existing local index (issue 18: ≤ 1 s), each open in a
fresh process, wall and CPU seconds, before and after a write.

A series on ``INDEX`` (copy it first: writer opens recover and may record files, and the
series writes ``--write`` documents into it):

1. the first writer open (what an upgrade's first open pays), then ``--repeat`` writer and
   ``--repeat`` reader re-opens;
2. a writer adds ``--write`` small documents and closes;
3. the first reader and the first writer open after that write, then re-opens.

Each open is timed alone, then one query (``--mode``) is timed as ``first_query_s``.
``--src`` runs the children on another source tree (the code before a change), so both sides
are measured by the same script on copies of the same index. The index must have been built
with ``benchmarks/scale.py`` (encoder ``hash-256``).

Example:
    cp -r runs/s100k/local /tmp/before && cp -r runs/s100k/local /tmp/after
    .venv/bin/python benchmarks/open_time.py /tmp/before --src /tmp/main-src --out before.json
    .venv/bin/python benchmarks/open_time.py /tmp/after --out after.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parents[1]

CHILD = """
import json, sys, time
from embedstack import HashEncoder
from embedstack.index import Index
path, action, mode, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
enc = HashEncoder(256)
if action == "write":
    idx = Index.open(path, encoder=enc)
    idx.add([{"id": f"open-time-{i}", "text": f"protein folding note {i} zyxw{i}"}
             for i in range(n)])
    idx.close()
    print(json.dumps({}))
    sys.exit()
t0, c0 = time.perf_counter(), time.process_time()
idx = Index.open(path, encoder=enc, readonly=action == "reader")
wall, cpu = time.perf_counter() - t0, time.process_time() - c0
t0 = time.perf_counter()
idx.search("protein folding in cells", mode=mode, k=10)
first = time.perf_counter() - t0
idx.close()
print(json.dumps({"open_s": round(wall, 4), "open_cpu_s": round(cpu, 4),
                  "first_query_s": round(first, 4)}))
"""


def child(args: argparse.Namespace, action: str) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(args.src)}
    cmd = [sys.executable, "-c", CHILD, str(args.index), action, args.mode, str(args.write)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
    out: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return out


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "runs": runs,
        "median_open_s": statistics.median(r["open_s"] for r in runs),
        "median_open_cpu_s": statistics.median(r["open_cpu_s"] for r in runs),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("index", type=Path, help="a local index folder (a copy: it is written)")
    parser.add_argument("--src", type=Path, default=HERE / "src", help="source tree to run")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--write", type=int, default=200, help="documents added mid-series")
    parser.add_argument("--mode", default="bm25", choices=["bm25", "dense", "hybrid"])
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.repeat < 1 or args.write < 1:
        parser.error("--repeat and --write must be positive")
    report: dict[str, Any] = {"index": str(args.index), "src": str(args.src),
                              "mode": args.mode, "command": " ".join(sys.argv)}  # fmt: skip
    report["first_writer_open"] = summary([child(args, "writer")])
    report["writer_reopen"] = summary([child(args, "writer") for _ in range(args.repeat)])
    report["reader_reopen"] = summary([child(args, "reader") for _ in range(args.repeat)])
    child(args, "write")
    report["first_reader_after_write"] = summary([child(args, "reader")])
    report["first_writer_after_write"] = summary([child(args, "writer")])
    report["reopen_after_write"] = summary(
        [child(args, action) for action in ("reader", "writer") for _ in range(args.repeat)]
    )
    text = json.dumps(report, indent=2)
    if args.out is not None:
        args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
