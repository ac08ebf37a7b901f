"""The persisted HNSW graph of a dense field: one published graph file next to the segments.

Files under ``dense/``::

    hnsw-000007.faiss    faiss ``write_index`` of the IndexHNSWFlat (vectors and links)
    hnsw-000007.alias.npy  (only with aliases) int64, the graph rows of each aliased
                         (merged) segment's rows, one segment after the other
    hnsw-000007.json     what it holds: format, dim, M, efConstruction, the
                         ``[segment id, n_rows]`` of each segment in graph order, and the
                         ``[segment id, n_rows]`` of each alias (in the ``.alias.npy`` order)

The ``.json`` is the publication mark, written last: the ``.faiss`` (and ``.alias.npy``)
is written under a temporary name, fsynced and renamed first, so a crash leaves either the
previous graph or the new one, and a ``.faiss`` without its ``.json`` is a leftover.
Numbers only grow; the newest published set is the graph, older ones are deleted once a
newer one is published.

A graph is a cache of the segments' rows keyed by segment id, and segment ids are never
reused, so a graph stays valid whatever happened since it was saved: rows of segments that
SQLite never registered (a crash between the graph write and the commit) or no longer
registers (deleted, compacted, merged) are dead rows that searches mask out; segments it
lacks are added when it is loaded. An alias is saved only once its merged segment is
committed, so it never names rows of a segment that might be rolled back.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from embedstack.errors import IndexCorrupt
from embedstack.index import ann
from embedstack.index.manifest import fsync_dir, save_npy, write_text_atomic
from embedstack.index.readahead import read_ahead

__all__ = ["FORMAT", "alias_file", "graph_files", "load", "newest", "remove_older", "save"]

FORMAT = "embedstack-hnsw"
FORMAT_VERSION = 1
_NAME = re.compile(r"^hnsw-(\d{6})\.json$")


def graph_files(number: int) -> list[str]:
    """The file names of graph ``number`` (its ``.alias.npy``: :func:`alias_file`)."""
    return [f"hnsw-{number:06d}.faiss", f"hnsw-{number:06d}.json"]


def alias_file(number: int) -> str:
    """The name of graph ``number``'s alias rows, present when it has aliases."""
    return f"hnsw-{number:06d}.alias.npy"


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
    aliases = list(graph.aliases.items())
    if aliases:
        save_npy(root / alias_file(number), np.concatenate([pos for _, pos in aliases]))
    record = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "dim": dim,
        "M": ann.M,
        "ef_construction": ann.EF_CONSTRUCTION,
        "metric": "inner_product",
        "n_rows": graph.n_rows,
        "segments": [[seg, n] for seg, n in graph.covered],
        "aliases": [[seg, len(pos)] for seg, pos in aliases],
    }
    write_text_atomic(root / meta, json.dumps(record))
    graph.persisted, graph.number, graph.remapped = graph.n_rows, number, 0
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
        sizes = [(int(seg), int(n)) for seg, n in record.get("aliases", [])]
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
    aliases = _aliases(root / alias_file(number), sizes, total)
    if mmap:
        read_ahead([root / data])  # its vectors stay on disk until read: ask for them now
    ann.EVENTS["load"] += 1
    return ann.HnswGraph(index, covered, persisted=total, number=number, viewed=bool(mmap),
                         aliases=aliases)  # fmt: skip


def _aliases(path: Path, sizes: list[tuple[int, int]], n_rows: int) -> dict[int, np.ndarray]:
    """The aliases a graph record lists, read from ``path`` and checked against it."""
    if not sizes:
        return {}
    try:
        flat = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise IndexCorrupt(f"cannot read the HNSW graph aliases {path}: {exc}") from exc
    total = sum(n for _, n in sizes)
    if (
        flat.shape != (total,)
        or flat.dtype != np.int64
        or (total and (flat.min() < 0 or flat.max() >= n_rows))
    ):
        raise IndexCorrupt(f"{path} holds {flat.dtype}{flat.shape}, not {total} graph rows")
    ends = np.cumsum([n for _, n in sizes]).tolist()
    return {seg: flat[end - n : end] for (seg, n), end in zip(sizes, ends, strict=True)}


def remove_older(root: Path, number: int) -> None:
    """Delete graph files (and leftovers) other than graph ``number``'s."""
    keep = {*graph_files(number), alias_file(number)}
    gone = False
    for p in root.iterdir():
        if p.name.startswith(("hnsw-", ".tmp-hnsw-")) and p.name not in keep:
            p.unlink(missing_ok=True)
            gone = True
    if gone:
        fsync_dir(root)
