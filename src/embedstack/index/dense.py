"""Dense vector segments: one immutable ``.npy`` file set per add batch (until merged),
searched exactly.

Files under ``dense/`` (all ``allow_pickle=False``, memory-mapped when read)::

    seg-000001.npy        (n_rows, dim) float32 | (n_rows, dim) int8 | (n_rows, ceil(dim/8)) uint8
    seg-000001.cal.npy    (2, dim) float32 int8 calibration: rows low, high (int8 and binary)
    seg-000001.codes.npy  (n_rows, dim) int8 rescoring codes (binary only)

A segment file is useless until ``docs.sqlite`` registers it; unregistered files are left
over by a crash and removed by the next writer. Rows carry no liveness of their own: a row
is live when a chunk in SQLite points at it, so deletes write nothing here. Writes merge
segments by the index's tiered policy (:mod:`embedstack.index._merge`) and compaction
rewrites them, both through :func:`merge_rows`: a new segment number holding the live rows
of its sources, registered by the SQLite commit that drops the sources.

Search is exact: every live, allowed row is scored (float32 dot product, int8 asymmetric
dot product, or binary Hamming candidates rescored with int8 codes — Shakir, Aarsen & Lee
2024), rows are masked *before* top-k so a filter never makes a search under-return, and
chunk scores are aggregated to documents by their maximum (MaxP, Dai & Callan 2019).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from embedstack import vectors
from embedstack._typing import FloatArray, IntArray
from embedstack.errors import IndexCorrupt, InvalidInput
from embedstack.index.fields.base import DocHits, aggregate, empty_hits
from embedstack.index.manifest import fsync_dir, save_npy

__all__ = [
    "DenseSegment",
    "load_segment",
    "merge_rows",
    "search_docs",
    "segment_files",
    "segment_name",
    "write_segment",
]

_QUERY_BATCH = 64
_BINARY_MULTIPLIER = 4  # Hamming candidates per rescored row (Shakir et al. 2024 use 4)


@dataclass
class DenseSegment:
    """One segment in memory.

    Attributes:
        id: segment number (registered in ``docs.sqlite``).
        data: the stored rows (see the module docstring for dtypes and shapes).
        calibration: int8 ranges (int8 and binary).
        codes: binary rescoring codes.
        row_keys: ``(n_rows,)`` int64 document key of each row, -1 for a dead row.
    """

    id: int
    data: np.ndarray
    calibration: vectors.Int8Calibration | None
    codes: np.ndarray | None
    row_keys: IntArray

    def __len__(self) -> int:
        return int(self.data.shape[0])

    def floats(self, rows: IntArray | slice = slice(None)) -> FloatArray:
        """Rows as float32 (decoded for int8; int8 rescoring codes decoded for binary)."""
        if self.calibration is None:
            return np.asarray(self.data[rows], dtype=np.float32)
        codes = self.data if self.codes is None else self.codes
        return vectors.dequantize_int8(np.asarray(codes[rows]), self.calibration)


def segment_name(segment: int) -> str:
    return f"seg-{segment:06d}"


def write_segment(
    root: Path, segment: int, embeddings: FloatArray, precision: str, row_keys: IntArray
) -> DenseSegment:
    """Quantize ``(n, dim)`` float32 L2-normalized ``embeddings`` and write them durably.

    Returns the segment as written (in memory). The files are not registered anywhere: the
    caller commits them by registering the segment in SQLite.
    """
    root.mkdir(exist_ok=True)
    name = segment_name(segment)
    cal = codes = None
    if precision == "float32":
        data: np.ndarray = np.ascontiguousarray(embeddings, dtype=np.float32)
    else:
        cal = vectors.calibrate_int8(embeddings)
        q8 = vectors.quantize_int8(embeddings, cal)
        if precision == "int8":
            data = q8
        else:
            data, codes = vectors.quantize_binary(embeddings), q8
    save_npy(root / f"{name}.npy", data)
    if cal is not None:
        save_npy(root / f"{name}.cal.npy", np.stack([cal.low, cal.high]).astype(np.float32))
    if codes is not None:
        save_npy(root / f"{name}.codes.npy", codes)
    fsync_dir(root)
    return DenseSegment(segment, data, cal, codes, row_keys)


def merge_rows(
    root: Path, parts: Sequence[tuple[DenseSegment, np.ndarray]], new_id: int, precision: str
) -> list[str]:
    """Merging and compaction: write the rows of each segment of ``parts`` selected by its
    mask, one segment after the other, as segment ``new_id``; returns the file names.

    float32 rows and binary sign bits are copied bit for bit, so no score changes. int8
    codes (and binary's int8 rescoring codes) need one calibration per segment: the merged
    one spans every source's range (per dimension, the lowest low and highest high), so
    the rows of a source whose calibration already equals it (one segment compacted, or a
    large segment absorbing small ones) keep their codes exactly, and only the others are
    re-quantized from their decoded values, each value moving by at most half a step of
    the merged calibration, ``(high - low) / 255 / 2``. At least one row must be selected.
    """
    parts = [(seg, np.asarray(mask, dtype=np.bool_)) for seg, mask in parts]
    kept = [(seg, mask) for seg, mask in parts if mask.any()]
    if not kept:
        raise InvalidInput("merge_rows needs at least one selected row")
    names = segment_files(new_id, precision)
    data = np.concatenate([np.asarray(seg.data)[mask] for seg, mask in kept])
    arrays = [data]
    if precision != "float32":
        cal = _union([seg.calibration for seg, _ in kept])
        codes = np.concatenate([_recode(seg, mask, cal) for seg, mask in kept])
        arrays = [codes, np.stack([cal.low, cal.high]).astype(np.float32)]
        if precision == "binary":
            arrays = [data, arrays[1], codes]
    for name, arr in zip(names, arrays, strict=True):
        save_npy(root / name, arr)
    fsync_dir(root)
    return names


def _union(cals: Sequence[vectors.Int8Calibration | None]) -> vectors.Int8Calibration:
    """The calibration spanning every one of ``cals`` (per dimension: lowest low, highest
    high); the first one itself when it already does."""
    known = [cal for cal in cals if cal is not None]
    if len(known) != len(cals) or not known:
        raise IndexCorrupt("an int8 or binary dense segment has no calibration")
    low = np.min([cal.low for cal in known], axis=0)
    high = np.max([cal.high for cal in known], axis=0)
    first = known[0]
    if np.array_equal(low, first.low) and np.array_equal(high, first.high):
        return first
    return vectors.Int8Calibration(low.astype(np.float32), high.astype(np.float32))


def _recode(seg: DenseSegment, mask: np.ndarray, cal: vectors.Int8Calibration) -> np.ndarray:
    """The int8 codes of ``seg``'s rows selected by ``mask`` under calibration ``cal``: its
    own codes when its calibration is ``cal``, else re-quantized from the decoded rows."""
    own = seg.calibration
    codes = np.asarray(seg.data if seg.codes is None else seg.codes)[mask]
    if own is None:
        raise IndexCorrupt(f"dense segment {seg.id} has no calibration")
    if own is cal or (np.array_equal(own.low, cal.low) and np.array_equal(own.high, cal.high)):
        return codes
    return vectors.quantize_int8(vectors.dequantize_int8(codes, own), cal)


def segment_files(segment: int, precision: str) -> list[str]:
    """File names of a segment at ``precision``."""
    name = segment_name(segment)
    extra = {"float32": [], "int8": [".cal"], "binary": [".cal", ".codes"]}[precision]
    return [f"{name}{suffix}.npy" for suffix in ["", *extra]]


def _load(path: Path, shape: tuple[int, int], dtype: type) -> np.ndarray:
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise IndexCorrupt(f"cannot read {path}: {exc}") from exc
    if arr.shape != shape or arr.dtype != np.dtype(dtype):
        raise IndexCorrupt(
            f"{path} holds {arr.dtype}{arr.shape}, expected {np.dtype(dtype)}{shape}"
        )
    return arr


def load_segment(
    root: Path, segment: int, n_rows: int, dim: int, precision: str, row_keys: IntArray
) -> DenseSegment:
    """Memory-map a registered segment, checking shapes and dtypes.

    Raises:
        IndexCorrupt: a file is missing, unreadable, or of the wrong shape or dtype.
    """
    name = segment_name(segment)
    cal = codes = None
    if precision == "float32":
        data = _load(root / f"{name}.npy", (n_rows, dim), np.float32)
    else:
        raw = np.asarray(_load(root / f"{name}.cal.npy", (2, dim), np.float32))
        try:
            cal = vectors.Int8Calibration(raw[0], raw[1])
        except ValueError as exc:
            raise IndexCorrupt(f"{root / name}.cal.npy: {exc}") from exc
        if precision == "int8":
            data = _load(root / f"{name}.npy", (n_rows, dim), np.int8)
        else:
            data = _load(root / f"{name}.npy", (n_rows, -(-dim // 8)), np.uint8)
            codes = _load(root / f"{name}.codes.npy", (n_rows, dim), np.int8)
    return DenseSegment(segment, data, cal, codes, row_keys)


def _scores(seg: DenseSegment, q: FloatArray, mask: np.ndarray, depth: int) -> FloatArray:
    """``(nq, n_rows)`` float32 scores, ``-inf`` where ``mask`` is False (or, for binary,
    outside the Hamming candidates)."""
    if seg.calibration is None:
        s = q @ np.asarray(seg.data).T
    elif seg.codes is None:
        s = vectors.int8_scores(q, seg.data, seg.calibration)
    else:
        dist = vectors.hamming_distance(vectors.quantize_binary(q), seg.data).astype(np.float64)
        dist[:, ~mask] = np.inf
        n_cand = min(depth * _BINARY_MULTIPLIER, len(seg))
        cand = np.argpartition(dist, n_cand - 1, axis=1)[:, :n_cand]
        s = np.full(dist.shape, -np.inf, dtype=np.float32)
        for i in range(len(q)):
            rows = np.sort(cand[i][np.isfinite(dist[i, cand[i]])])
            if len(rows):
                s[i, rows] = vectors.int8_scores(q[i : i + 1], seg.codes[rows], seg.calibration)[0]
        return s
    s = np.asarray(s, dtype=np.float32)
    s[:, ~mask] = -np.inf
    return s


def search_docs(
    segments: list[DenseSegment], queries: FloatArray, masks: list[np.ndarray], depth: int
) -> list[DocHits]:
    """The ``depth`` best documents for each query by max chunk score, over allowed rows.

    Args:
        segments: the live segments.
        queries: ``(nq, dim)`` float32 L2-normalized.
        masks: per segment, ``(n_rows,)`` bool: rows that may be returned (live and passing
            the filter); applied before any top-k, so nothing is lost to the filter.
        depth: documents per query.

    Returns:
        One :class:`DocHits` per query with ``min(depth, documents with an allowed row)``
        entries.
    """
    out: list[DocHits] = []
    for q0 in range(0, len(queries), _QUERY_BATCH):
        q = queries[q0 : q0 + _QUERY_BATCH]
        out += _search_batch(segments, masks, q, depth)
    return out


def _whole(
    small: list[tuple[DenseSegment, FloatArray]], pending: list[int]
) -> tuple[FloatArray, IntArray, IntArray, IntArray]:
    """Every row of the ``small`` segments (those no bigger than a fetch) as one block of
    ``(len(pending), n_rows)`` scores, keys, segments and rows: what taking each segment's
    rows one by one gives, in a few numpy calls however many segments there are (a server
    writing a few documents at a time makes thousands)."""
    sizes = [len(seg) for seg, _ in small]
    ends = np.cumsum(sizes)
    scores = np.concatenate([s for _, s in small], axis=1)[pending]
    shape = scores.shape
    keys = np.concatenate([seg.row_keys for seg, _ in small])
    ids = np.repeat(np.array([seg.id for seg, _ in small], np.int64), sizes)
    rows = np.arange(int(ends[-1]), dtype=np.int64) - np.repeat(ends - sizes, sizes)
    keys, ids, rows = (np.broadcast_to(a, shape) for a in (keys, ids, rows))
    return scores, keys, ids, rows


def _search_batch(
    segments: list[DenseSegment], masks: list[np.ndarray], q: FloatArray, depth: int
) -> list[DocHits]:
    per_seg = [
        (seg, _scores(seg, q, mask, depth))
        for seg, mask in zip(segments, masks, strict=True)
        if mask.any()
    ]
    n_live = int(np.count_nonzero(np.concatenate(masks))) if masks else 0
    fetch = min(max(2 * depth, depth + 8), n_live) if n_live else 0
    results: list[DocHits | None] = [None] * len(q)
    pending = list(range(len(q)))
    while pending:  # over-fetch chunks, aggregate, and fetch more where too few documents
        parts_s: list[np.ndarray] = []
        parts_k: list[np.ndarray] = []
        parts_seg: list[np.ndarray] = []
        parts_row: list[np.ndarray] = []
        small = [(seg, s) for seg, s in per_seg if len(seg) <= fetch]
        if small:  # all their rows are candidates
            block_s, block_k, block_seg, block_row = _whole(small, pending)
            parts_s.append(block_s)
            parts_k.append(block_k)
            parts_seg.append(block_seg)
            parts_row.append(block_row)
        for seg, s in per_seg:
            if len(seg) <= fetch:
                continue
            sub = s[pending]
            rows = np.argpartition(-sub, fetch - 1, axis=1)[:, :fetch]
            parts_s.append(np.take_along_axis(sub, rows, axis=1))
            parts_k.append(seg.row_keys[rows])
            parts_seg.append(np.full(rows.shape, seg.id, np.int64))
            parts_row.append(rows)
        still = []
        for j, qi in enumerate(pending):
            if not per_seg:
                results[qi] = empty_hits()
                continue
            hits = aggregate(*(np.concatenate([p[j] for p in parts])
                                for parts in (parts_s, parts_k, parts_seg, parts_row)))  # fmt: skip
            if len(hits.keys) < depth and fetch < n_live:
                still.append(qi)
            else:
                results[qi] = hits.head(depth)
        pending = still
        fetch = min(fetch * 4, n_live)
    return [r for r in results if r is not None]
