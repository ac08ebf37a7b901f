"""Recovery, integrity checks, statistics, compaction and the ann switch of an index, over
its fields."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from embedstack.errors import IndexCorrupt, InvalidInput
from embedstack.index import manifest
from embedstack.index._types import IndexStats, check_ann
from embedstack.index._writes import discard
from embedstack.index.ann import require_faiss
from embedstack.index.dense import segment_name
from embedstack.index.docstore import DocStore
from embedstack.index.fields.base import Field, Rewrite, Snapshot
from embedstack.index.fields.dense import DenseField

__all__ = ["check", "compact", "recover", "set_ann", "stats"]


def recover(path: Path, fields: Sequence[Field], snapshot: Snapshot) -> None:
    """Undo what a crashed write left behind (writers, at open): every field deletes what
    SQLite does not register; temporary files of the index folder go too."""
    for entry in path.iterdir():
        if entry.name.startswith(".tmp-"):
            entry.unlink(missing_ok=True)
    for field in fields:
        field.recover(snapshot)


def stats(path: Path, meta: dict[str, Any], fields: Sequence[Field],
          snapshot: Snapshot) -> IndexStats:  # fmt: skip
    """See :meth:`Index.stats`: bytes by component (``sqlite`` and each field's, with
    ``total``), documents deleted but still stored, and the manifest's model."""
    out = {"sqlite": sum(
        (path / name).stat().st_size
        for name in ("docs.sqlite", "docs.sqlite-wal", "docs.sqlite-shm")
        if (path / name).exists()
    )}  # fmt: skip
    deleted = 0
    for field in fields:
        stats = field.stats()
        out.update(stats.bytes)
        deleted = max(deleted, stats.n_deleted)
    out["total"] = sum(out.values())
    enc = meta["encoder"]
    return IndexStats(
        n_docs=len(snapshot.live),
        n_chunks=int(sum(int(m.sum()) for m in snapshot.masks())),
        n_deleted=deleted,
        bytes=out,
        segments=len(snapshot.segments),
        model=enc["name"],
        model_id=enc["model_id"],
        dim=int(enc["dim"]),
        precision=meta["precision"],
    )


def check(path: Path, meta: dict[str, Any], store: DocStore, snapshot: Snapshot,
          fields: Sequence[Field]) -> None:  # fmt: skip
    """See :meth:`Index.check`: the manifest, SQLite's own consistency, then each field
    against what SQLite registers (``snapshot``, freshly read)."""
    disk = manifest.read_manifest(path)
    if any(disk.get(key) != meta.get(key) for key in ("encoder", "precision", "sparse", "colbert")):
        raise IndexCorrupt(f"{path / manifest.FILE} changed under the open index")
    problems = store.integrity()
    if problems:
        raise IndexCorrupt(f"{path / 'docs.sqlite'} fails integrity checks: {problems[:5]}")
    conn = store.conn
    orphans = conn.execute(
        "SELECT count(*) FROM chunks c LEFT JOIN docs d ON d.key = c.doc_key "
        "LEFT JOIN segments s ON s.id = c.segment WHERE d.key IS NULL OR s.id IS NULL "
        'OR c.row < 0 OR c.row >= s.n_rows OR c.start < 0 OR c."end" < c.start'
    ).fetchone()[0]
    if orphans:
        raise IndexCorrupt(f"{path}: {orphans} chunks point at missing documents or rows")
    chunkless = conn.execute(
        "SELECT count(*) FROM docs WHERE key NOT IN (SELECT doc_key FROM chunks)"
    ).fetchone()[0]
    if chunkless:
        raise IndexCorrupt(f"{path}: {chunkless} documents have no chunks")
    for field in fields:
        field.check(snapshot)


def compact(store: DocStore, fields: Sequence[Field], snapshot: Snapshot) -> None:
    """See :meth:`Index.compact`.

    Each segment with dead rows is rewritten by every field under a new segment number with
    only its live rows (dense keeps its own int8 calibration, so nothing is re-quantized or
    re-encoded); the SQLite transaction that repoints the chunks and swaps the registrations
    is the commit point, after which every field releases the old segments (BM25 merges
    its own segments then) and SQLite is vacuumed. A failure before the commit discards the
    new segments from every field.
    """
    rewrites: list[Rewrite] = []
    dropped: list[int] = []
    for seg, mask in zip(snapshot.segments, snapshot.masks(), strict=True):
        if mask.all():
            continue
        if not mask.any():
            dropped.append(seg.id)
            continue
        _, new_id = store.reserve(0)
        rewrites.append(Rewrite(seg, new_id, mask))
    new_ids = [rw.new for rw in rewrites]
    try:
        for field in fields:
            field.rewrite(rewrites)
        with store.transaction():
            for rw in rewrites:
                rows = np.flatnonzero(rw.mask)
                store.register_segment(rw.new, f"{segment_name(rw.new)}.npy", len(rows))
                store.move_rows(
                    (rw.new, new, rw.old.id, int(old)) for new, old in enumerate(rows.tolist())
                )
                store.drop_segment(rw.old.id)
            for seg_id in dropped:
                store.drop_segment(seg_id)
    except BaseException:
        discard(fields, new_ids, np.zeros(0, np.int64))
        raise
    old = [rw.old.id for rw in rewrites] + dropped
    for field in fields:
        field.release(old)
    store.vacuum()


def set_ann(path: Path, meta: dict[str, Any], dense: Field, ann: object) -> dict[str, Any]:
    """See :meth:`Index.set_ann`; returns the manifest now on disk (``meta`` itself when
    ``ann`` is already recorded).

    The manifest is the commit point, so a crash at any step leaves a consistent index. To
    HNSW: the graph is built over the stored vectors and saved first, the manifest flips
    after (graph files of an index still recorded as exact are deleted by the next writer's
    recovery). To exact: the manifest flips first, the graph files are deleted after (a
    graph left behind is deleted by recovery too, and never read meanwhile). Readers opened
    before the switch search as they opened until they are reopened.

    Raises:
        InvalidInput: ``ann`` is not None or ``"hnsw"``; nothing changes.
        MissingDependency: ``"hnsw"`` without faiss (the ``ann`` extra); nothing changes.
    """
    check_ann(ann)
    if ann == meta["ann"]:
        return meta
    if not isinstance(dense, DenseField):
        raise InvalidInput(f"{path}: the dense field has no HNSW graph to switch")
    new = {**meta, "ann": ann, "updated_at": manifest.now()}
    if ann == "hnsw":
        require_faiss()
        try:
            dense.build_graph()
            manifest.write_manifest(path, new)
        except BaseException:
            dense.use_ann(None)  # still exact: the graph files go
            raise
    else:
        manifest.write_manifest(path, new)
    dense.use_ann(new["ann"])
    return new
