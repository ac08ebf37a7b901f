"""The persisted HNSW graph of a dense field: one published graph file next to the segments.

Files under ``dense/``::

    hnsw-000007.faiss    faiss ``write_index`` of the IndexHNSWFlat (vectors and links)
    hnsw-000007.json     what it holds: format, dim, M, efConstruction, and the
                         ``[segment id, n_rows]`` of each segment in graph order

The ``.json`` is the publication mark, written last: the ``.faiss`` is written under a
temporary name, fsynced and renamed first, so a crash leaves either the previous graph or
the new one, and a ``.faiss`` without its ``.json`` is a leftover. Numbers only grow; the
newest published pair is the graph, older pairs are deleted once a newer one is published.

A graph is a cache of the segments' rows keyed by segment id, and segment ids are never
reused, so a graph stays valid whatever happened since it was saved: rows of segments that
SQLite never registered (a crash between the graph write and the commit) or no longer
registers (deleted, compacted) are dead rows that searches mask out; segments it lacks are
added when it is loaded.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from embedstack.errors import IndexCorrupt
from embedstack.index import ann
from embedstack.index.manifest import fsync_dir, write_text_atomic

__all__ = ["FORMAT", "graph_files", "load", "newest", "remove_older", "save"]

FORMAT = "embedstack-hnsw"
FORMAT_VERSION = 1
_NAME = re.compile(r"^hnsw-(\d{6})\.json$")


def graph_files(number: int) -> list[str]:
    """The file names of graph ``number``."""
    return [f"hnsw-{number:06d}.faiss", f"hnsw-{number:06d}.json"]


def newest(root: Path) -> int:
    """The number of the newest published graph in ``root``, 0 when there is none."""
    if not root.is_dir():
        return 0
    found = [int(m.group(1)) for p in root.iterdir() if (m := _NAME.match(p.name))]
    return max(found, default=0)


def save(root: Path, graph: ann.HnswGraph, dim: int) -> None:
    """Publish ``graph`` as a new numbered file pair (see the module docstring)."""
    faiss = ann.require_faiss()
    number = max(newest(root), graph.number) + 1
    data, meta = graph_files(number)
    tmp = root / f".tmp-{data}"
    try:
        faiss.write_index(graph.graph, str(tmp))
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, root / data)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    record = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "dim": dim,
        "M": ann.M,
        "ef_construction": ann.EF_CONSTRUCTION,
        "metric": "inner_product",
        "n_rows": graph.n_rows,
        "segments": [[seg, n] for seg, n in graph.covered],
    }
    write_text_atomic(root / meta, json.dumps(record))
    graph.persisted, graph.number = graph.n_rows, number
    ann.EVENTS["save"] += 1


def load(root: Path, dim: int, number: int | None = None) -> ann.HnswGraph | None:
    """The newest published graph (or graph ``number``), None when there is none.

    Raises:
        IndexCorrupt: the files are unreadable or disagree with each other or with ``dim``.
    """
    number = newest(root) if number is None else number
    if number == 0:
        return None
    data, meta = graph_files(number)
    try:
        record: Any = json.loads((root / meta).read_text(encoding="utf-8"))
        covered = [(int(seg), int(n)) for seg, n in record["segments"]]
        ok = record["format"] == FORMAT and record["format_version"] == FORMAT_VERSION
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise IndexCorrupt(f"cannot read the HNSW graph record {root / meta}: {exc}") from exc
    if not ok or record.get("dim") != dim:
        raise IndexCorrupt(f"{root / meta}: not a {dim}-d {FORMAT} v{FORMAT_VERSION} graph")
    faiss = ann.require_faiss()
    mmap = getattr(faiss, "IO_FLAG_MMAP_IFC", 0)  # vectors memory-mapped: opening is cheap
    try:
        index = faiss.read_index(str(root / data), mmap)
    except RuntimeError as exc:
        raise IndexCorrupt(f"cannot read the HNSW graph {root / data}: {exc}") from exc
    total = sum(n for _, n in covered)
    if index.ntotal != total or index.d != dim or not hasattr(index, "hnsw"):
        raise IndexCorrupt(
            f"{root / data} holds {index.ntotal} {index.d}-d rows, its record says {total}"
        )
    ann.EVENTS["load"] += 1
    return ann.HnswGraph(index, covered, persisted=total, number=number, viewed=bool(mmap))


def remove_older(root: Path, number: int) -> None:
    """Delete graph files (and leftovers) other than graph ``number``'s."""
    keep = set(graph_files(number))
    gone = False
    for p in root.iterdir():
        if p.name.startswith(("hnsw-", ".tmp-hnsw-")) and p.name not in keep:
            p.unlink(missing_ok=True)
            gone = True
    if gone:
        fsync_dir(root)
