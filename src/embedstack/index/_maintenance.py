"""Recovery, integrity checks, statistics and compaction of an :class:`Index`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from embedstack.errors import EmbedstackError, IndexCorrupt
from embedstack.index import dense, late, manifest
from embedstack.index import sparse as sparse_index
from embedstack.index._types import IndexStats

if TYPE_CHECKING:
    from embedstack.index.core import Index

__all__ = ["check", "compact", "reconcile", "stats"]


def _dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else 0


def reconcile(index: Index) -> None:
    """Undo what a crashed write left behind (writers, at open).

    BM25 documents whose keys SQLite does not have (a batch that crashed before its SQLite
    commit, or deletes committed in SQLite but not yet tombstoned) are deleted from BM25;
    dense, sparse and ColBERT files of unregistered segments and temporary files are
    removed.
    """
    live = index._store.live_keys()
    stray = np.setdiff1d(index._lexical.keys(), live)
    if len(stray):
        index._lexical.delete(stray)
    registered = {seg for seg, _, _ in index._store.segments()}
    keep = {f for seg in registered for f in dense.segment_files(seg, index.precision)}
    root = index.path / "dense"
    removed = False
    for entry in root.iterdir():
        if entry.name not in keep:
            entry.unlink(missing_ok=True)
            removed = True
    for entry in index.path.iterdir():
        if entry.name.startswith(".tmp-"):
            entry.unlink(missing_ok=True)
    if removed:
        manifest.fsync_dir(root)
    if index._sparse is not None:
        sparse_index.remove_unregistered(index.path / sparse_index.DIR, registered)
    if index._colbert is not None:
        late.remove_unregistered(index.path / late.DIR, registered, index._colbert.precision)
    index._state = index._load_state()


def stats(index: Index) -> IndexStats:
    """See :meth:`Index.stats`."""
    st = index._state
    sqlite = sum(
        (index.path / name).stat().st_size
        for name in ("docs.sqlite", "docs.sqlite-wal", "docs.sqlite-shm")
        if (index.path / name).exists()
    )
    sizes = {"sqlite": sqlite, "dense": _dir_bytes(index.path / "dense"),
             "lexical": _dir_bytes(index.path / "lexical")}  # fmt: skip
    if index._sparse is not None:
        sizes["sparse"] = _dir_bytes(index.path / sparse_index.DIR)
    if index._colbert is not None:
        sizes["colbert"] = _dir_bytes(index.path / late.DIR)
    sizes["total"] = sum(sizes.values())
    masks = index.live_masks()
    enc = index.manifest["encoder"]
    return IndexStats(
        n_docs=len(st.live),
        n_chunks=int(sum(int(m.sum()) for m in masks)),
        n_deleted=index._lexical.stats().n_tombstones,
        bytes=sizes,
        segments=len(st.segments),
        model=enc["name"],
        model_id=enc["model_id"],
        dim=index.dim,
        precision=index.precision,
    )


def check(index: Index) -> None:
    """See :meth:`Index.check`."""
    path = index.path
    meta = manifest.read_manifest(path)
    if (meta["encoder"] != index.manifest["encoder"] or meta["precision"] != index.precision
            or meta.get("sparse") != index.manifest.get("sparse")
            or meta.get("colbert") != index.manifest.get("colbert")):  # fmt: skip
        raise IndexCorrupt(f"{path / manifest.FILE} changed under the open index")
    problems = index._store.integrity()
    if problems:
        raise IndexCorrupt(f"{path / 'docs.sqlite'} fails integrity checks: {problems[:5]}")
    store = index._store
    conn = store.conn
    conn.execute("BEGIN")
    try:
        registry = store.segments()
        live = store.live_keys()
        orphans = conn.execute(
            "SELECT count(*) FROM chunks c LEFT JOIN docs d ON d.key = c.doc_key "
            "LEFT JOIN segments s ON s.id = c.segment WHERE d.key IS NULL OR s.id IS NULL "
            'OR c.row < 0 OR c.row >= s.n_rows OR c.start < 0 OR c."end" < c.start'
        ).fetchone()[0]
        chunkless = conn.execute(
            "SELECT count(*) FROM docs WHERE key NOT IN (SELECT doc_key FROM chunks)"
        ).fetchone()[0]
        row_keys = [store.row_keys(seg, n) for seg, _, n in registry]
    finally:
        conn.execute("COMMIT")
    if orphans:
        raise IndexCorrupt(f"{path}: {orphans} chunks point at missing documents or rows")
    if chunkless:
        raise IndexCorrupt(f"{path}: {chunkless} documents have no chunks")
    for (seg, _, n), keys in zip(registry, row_keys, strict=True):
        loaded = dense.load_segment(path / "dense", seg, n, index.dim, index.precision, keys)
        if not np.isfinite(np.asarray(loaded.floats(slice(0, min(n, 1024))))).all():
            raise IndexCorrupt(f"{path}: dense segment {seg} holds non-finite values")
        if index._sparse is not None:
            root = path / sparse_index.DIR
            sparse_index.validate(sparse_index.load_segment(root, seg, n, index._sparse.vocab),
                                  root)  # fmt: skip
        if index._colbert is not None:
            cache = index._colbert
            late.validate(late.load_segment(cache.root, seg, n, cache.dim, cache.precision),
                          cache.root)  # fmt: skip
    try:
        index._lexical.check()
        from embedstack.index.lexical import LexicalIndex

        lexical_keys = LexicalIndex.open(path / "lexical").keys()
    except EmbedstackError as exc:
        raise IndexCorrupt(f"{path / 'lexical'}: {exc}") from exc
    if not np.array_equal(lexical_keys, live):
        missing = np.setdiff1d(live, lexical_keys)[:5].tolist()
        extra = np.setdiff1d(lexical_keys, live)[:5].tolist()
        raise IndexCorrupt(
            f"{path}: BM25 and SQLite disagree on the live documents (missing from BM25: "
            f"{missing}, extra in BM25: {extra}); open the index as a writer to recover"
            if not missing
            else f"{path}: live documents {missing} are missing from the BM25 index"
        )


def compact(index: Index) -> None:
    """See :meth:`Index.compact`.

    Each dense segment with dead rows is rewritten under a new segment number with only its
    live rows (keeping its own int8 calibration, so nothing is re-quantized; its sparse
    postings and ColBERT token vectors, if any, are rewritten alike, without re-encoding);
    the SQLite transaction that repoints the chunks and swaps the registrations is the commit
    point, after which the old files are deleted. Then BM25 merges its segments and SQLite is
    vacuumed.
    """
    st = index._state
    root = index.path / "dense"
    masks = index.live_masks()
    rewrites: list[tuple[dense.DenseSegment, np.ndarray, int]] = []
    dropped: list[int] = []
    for seg, mask in zip(st.segments, masks, strict=True):
        if mask.all():
            continue
        if not mask.any():
            dropped.append(seg.id)
            continue
        _, new_id = index._store.reserve(0)
        rewrites.append((seg, mask, new_id))
    written: list[str] = []
    sparse_root = index.path / sparse_index.DIR
    late_root = index.path / late.DIR
    new_ids = [new_id for _, _, new_id in rewrites]
    try:
        for seg, mask, new_id in rewrites:
            written += _write_rows(root, seg, mask, new_id, index.precision)
            if index._sparse is not None:
                old = index._sparse.get([seg])[0]
                sparse_index.write_rows(sparse_root, old, mask, new_id)
            if index._colbert is not None:
                late.write_rows(late_root, index._colbert.get(seg.id, len(seg)), mask, new_id)
        with index._store.transaction():
            for seg, mask, new_id in rewrites:
                rows = np.flatnonzero(mask)
                index._store.register_segment(new_id, f"{dense.segment_name(new_id)}.npy",
                                              len(rows))  # fmt: skip
                index._store.move_rows(
                    (new_id, new, seg.id, int(old)) for new, old in enumerate(rows.tolist())
                )
                index._store.drop_segment(seg.id)
            for seg_id in dropped:
                index._store.drop_segment(seg_id)
    except BaseException:
        for name in written:
            (root / name).unlink(missing_ok=True)
        sparse_index.remove_segments(sparse_root, new_ids)
        late.remove_segments(late_root, new_ids)
        raise
    for seg_id in [s.id for s, _, _ in rewrites] + dropped:
        for name in dense.segment_files(seg_id, index.precision):
            (root / name).unlink(missing_ok=True)
    manifest.fsync_dir(root)
    if index._sparse is not None:
        sparse_index.remove_segments(sparse_root, [s.id for s, _, _ in rewrites] + dropped)
        manifest.fsync_dir(sparse_root)
    if index._colbert is not None:
        late.remove_segments(late_root, [s.id for s, _, _ in rewrites] + dropped)
        manifest.fsync_dir(late_root)
        index._colbert.retain(set())  # unmap the deleted files: their space is freed now
    index._lexical.compact()
    index._store.vacuum()


def _write_rows(root: Path, seg: dense.DenseSegment, mask: np.ndarray, new_id: int,
                precision: str) -> list[str]:  # fmt: skip
    """Write the rows of ``seg`` selected by ``mask`` as segment ``new_id`` (same codes)."""
    names = dense.segment_files(new_id, precision)
    arrays = [np.asarray(seg.data)[mask]]
    if seg.calibration is not None:
        arrays.append(np.stack([seg.calibration.low, seg.calibration.high]).astype(np.float32))
    if seg.codes is not None:
        arrays.append(np.asarray(seg.codes)[mask])
    for name, arr in zip(names, arrays, strict=True):
        tmp = root / f".tmp-{name}"
        with open(tmp, "wb") as f:
            np.save(f, np.ascontiguousarray(arr), allow_pickle=False)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, root / name)
    manifest.fsync_dir(root)
    return names
