"""An updatable on-disk BM25 index: immutable segments, tombstones, compaction.

Scores are Lucene's BM25 (Robertson & Zaragoza 2009; the Lucene variant as compared by
Kamphuis et al. 2020)::

    idf(t)   = ln(1 + (N - df(t) + 0.5) / (df(t) + 0.5))
    score(d) = sum over query tokens t of idf(t) * tf / (tf + k1*(1 - b + b*dl/avgdl))

with ``N``, ``df`` and ``avgdl`` taken over the *live* documents when the query runs, so a
deleted document changes scores exactly as if it had never been indexed. The constant factor
``(k1 + 1)`` of the classic numerator is left out, as Lucene does since 8.0 (LUCENE-8563) and
bm25s does: it scales every score alike and changes no ranking. Analysis is bm25s's English
default (see :mod:`embedstack.index.tokenize`), so scores match
``bm25s.BM25(method="lucene")`` up to float32 rounding.

On-disk layout (every array an ``.npy`` file, ``allow_pickle=False``)::

    lexical.json               manifest, replaced atomically; the commit point of every write
    seg-000001/                one immutable segment per add() batch (or per compact())
        segment.json           counts: n_docs, n_terms, n_postings
        keys.npy               (n_docs,) int64      caller's doc keys
        lengths.npy            (n_docs,) int32      tokens per doc after stopword removal
        terms.npy              (bytes,) uint8       UTF-8 stems joined by "\\n", in term order
        indptr.npy             (n_terms + 1,) int64 CSR row pointers, term -> postings
        docs.npy               (n_postings,) int32  segment-local doc ids, ascending per term
        tfs.npy                (n_postings,) int32  term frequencies
    seg-000001.del-000007.npy  (n_deleted,) int32   tombstones: segment-local ids, sorted

A write builds new files under temporary names, fsyncs them, renames them in place, then
flips ``lexical.json``; files it replaced are deleted only after the flip, so a crash
leaves the previous state. One writer at a time: the owner of the index serialises writes.

Example:
    >>> idx = LexicalIndex.create(tmp / "bm25")                       # doctest: +SKIP
    >>> idx.add([10, 11], ["cats purr", "dogs bark"])                  # doctest: +SKIP
    >>> idx.search("cat", k=5)                                         # doctest: +SKIP
    (array([0.3150669], dtype=float32), array([10]))
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from embedstack._typing import FloatArray, IntArray
from embedstack.errors import IndexCorrupt, InvalidInput
from embedstack.index.tokenize import Analyzer, Vocabulary

__all__ = ["LexicalIndex", "LexicalStats"]

FORMAT = "embedstack-lexical"
FORMAT_VERSION = 1
MANIFEST = "lexical.json"
_CACHE_MAX_POSTINGS = 1 << 24  # per-term impact cache is cleared beyond this many entries


@dataclass(frozen=True)
class LexicalStats:
    """Size of a :class:`LexicalIndex`.

    Attributes:
        n_docs: live (searchable) documents.
        n_segments: segments on disk; :meth:`LexicalIndex.compact` brings this to 1.
        n_tombstones: deleted documents whose postings are still on disk.
        bytes_on_disk: total size of the index directory's files, in bytes.
    """

    n_docs: int
    n_segments: int
    n_tombstones: int
    bytes_on_disk: int


@dataclass
class _Segment:
    name: str
    keys: IntArray  # (n,) int64
    lengths: npt.NDArray[np.int32]  # (n,)
    gids: IntArray  # (n_terms,) global term id of each local term
    indptr: IntArray  # (n_terms + 1,)
    docs: npt.NDArray[np.int32]  # (n_postings,)
    tfs: npt.NDArray[np.int32]  # (n_postings,)
    deleted: npt.NDArray[np.int32]  # sorted local ids of tombstoned docs
    tomb_file: str | None = None
    local: npt.NDArray[np.int32] | None = None  # global term id -> local row, -1 if absent

    def row(self, gid: int) -> int:
        if self.local is None:
            self.local = np.full(int(self.gids.max(initial=-1)) + 1, -1, dtype=np.int32)
            self.local[self.gids] = np.arange(len(self.gids))
        return int(self.local[gid]) if gid < len(self.local) else -1

    def meta(self) -> dict[str, Any]:
        return {"name": self.name, "n_docs": len(self.keys), "n_terms": len(self.gids),
                "n_postings": len(self.docs), "tombstones": self.tomb_file,
                "n_tombstones": len(self.deleted)}  # fmt: skip


# --- atomic file helpers ---------------------------------------------------------------------


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _save_npy(path: Path, array: np.ndarray) -> None:
    """Write ``array`` to ``path`` (fsynced; the caller renames or fsyncs the directory)."""
    with open(path, "wb") as f:
        np.save(f, np.ascontiguousarray(array), allow_pickle=False)
        f.flush()
        os.fsync(f.fileno())


def _save_json_atomic(path: Path, obj: dict[str, Any]) -> None:
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _load_npy(path: Path, dtype: type, mmap: bool = False) -> np.ndarray:
    try:
        arr = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise IndexCorrupt(f"cannot read {path}: {exc}") from exc
    if arr.ndim != 1 or arr.dtype != np.dtype(dtype):
        raise IndexCorrupt(f"{path} holds {arr.dtype}{arr.shape}, expected 1-d {np.dtype(dtype)}")
    return arr


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


# --- input validation ------------------------------------------------------------------------


def _as_keys(doc_keys: Iterable[int] | np.ndarray, what: str = "doc_keys") -> IntArray:
    arr = np.asarray(doc_keys if isinstance(doc_keys, np.ndarray) else list(doc_keys))
    if arr.size == 0:
        return np.zeros(0, dtype=np.int64)
    if arr.ndim != 1 or arr.dtype.kind not in "iu":
        raise InvalidInput(f"{what} must be a 1-d sequence of integers, got {arr.dtype}{arr.shape}")
    if arr.dtype.kind == "u" and arr.max() > np.iinfo(np.int64).max:
        raise InvalidInput(f"{what} must fit in int64")
    return arr.astype(np.int64, copy=False)


def _check_k(k: int) -> int:
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k <= 0:
        raise InvalidInput(f"k must be a positive integer, got {k!r}")
    return int(k)


def _top_k(scores: np.ndarray, keys: IntArray, k: int) -> tuple[FloatArray, IntArray]:
    """The ``k`` best of ``scores`` (float32, descending), ties broken by key ascending."""
    s32 = scores.astype(np.float32)
    if len(s32) > k:
        threshold = np.partition(s32, len(s32) - k)[len(s32) - k]
        sel = np.flatnonzero(s32 >= threshold)
        s32, keys = s32[sel], keys[sel]
    order = np.lexsort((keys, -s32))[:k]
    return s32[order], keys[order]


_EMPTY: tuple[FloatArray, IntArray] = (np.zeros(0, np.float32), np.zeros(0, np.int64))


@dataclass
class _View:
    """Collection-wide arrays over all segments' doc slots, rebuilt after each write."""

    offsets: IntArray  # (n_segments + 1,) first slot of each segment
    keys: IntArray  # (n_slots,) doc key of each slot
    live: npt.NDArray[np.bool_]  # (n_slots,)
    norm: npt.NDArray[np.float64]  # (n_slots,) k1 * (1 - b + b * dl / avgdl)
    n_live: int
    sorted_keys: IntArray  # live keys, ascending
    sorted_slots: IntArray  # their slots

    def lookup(self, keys: IntArray) -> tuple[IntArray, npt.NDArray[np.bool_]]:
        """Slots of ``keys`` among live docs, and whether each was found."""
        pos = np.searchsorted(self.sorted_keys, keys)
        pos = np.minimum(pos, max(len(self.sorted_keys) - 1, 0))
        if len(self.sorted_keys) == 0:
            return np.zeros(len(keys), np.int64), np.zeros(len(keys), np.bool_)
        return self.sorted_slots[pos], self.sorted_keys[pos] == keys


class LexicalIndex:
    """BM25 over a directory of immutable segments that stays exact under add and delete.

    Build one with :meth:`create`, reopen it with :meth:`open`. Not thread-safe; one writer.

    Args: (use :meth:`create` or :meth:`open` rather than the constructor)
        path: the index directory.
        manifest: its parsed ``lexical.json``.
        segments: its loaded segments.
        vocab: the vocabulary the segments' terms were added to.

    Example:
        >>> idx = LexicalIndex.create(tmp / "bm25", k1=1.2, b=0.75)      # doctest: +SKIP
        >>> idx.add([1, 2, 3], ["red apples", "green apples", "red cars"])  # doctest: +SKIP
        >>> idx.delete([2])                                                # doctest: +SKIP
        >>> idx.search("red apple", k=2)[1]                                # doctest: +SKIP
        array([1, 3])
    """

    def __init__(
        self, path: Path, manifest: dict[str, Any], segments: list[_Segment], vocab: Vocabulary
    ) -> None:
        self.path = path
        self.k1 = float(manifest["k1"])
        self.b = float(manifest["b"])
        self._manifest = manifest
        self._segments = segments
        self._analyzer = Analyzer(vocab)
        self._view_cache: _View | None = None
        self._postings: dict[int, tuple[IntArray, npt.NDArray[np.float64]]] = {}
        self._cached = 0

    # --- lifecycle ---------------------------------------------------------------------------

    @classmethod
    def create(cls, path: str | os.PathLike[str], k1: float = 1.2, b: float = 0.75) -> LexicalIndex:
        """Create an empty index in ``path`` (a new or empty directory).

        Raises:
            InvalidInput: ``path`` holds files already, or ``k1``/``b`` are out of range
                (``k1 >= 0``, ``0 <= b <= 1``).
        """
        path = Path(path)
        numbers = all(isinstance(x, int | float) and not isinstance(x, bool) for x in (k1, b))
        if not (numbers and math.isfinite(k1) and k1 >= 0 and math.isfinite(b) and 0 <= b <= 1):
            raise InvalidInput(f"need k1 >= 0 and 0 <= b <= 1, got k1={k1!r}, b={b!r}")
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise InvalidInput(f"{path} exists and is not an empty directory; use open()")
        path.mkdir(parents=True, exist_ok=True)
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "library_version": _library_version(),
            "k1": float(k1),
            "b": float(b),
            "analyzer": "bm25s-en: lower, (?u)\\b\\w\\w+\\b, lucene english stopwords, snowball",
            "generation": 0,
            "next_segment": 1,
            "segments": [],
        }
        _save_json_atomic(path / MANIFEST, manifest)
        return cls(path, manifest, [], Vocabulary())

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> LexicalIndex:
        """Open the index in ``path``.

        Raises:
            InvalidInput: ``path`` is not a directory.
            IndexCorrupt: the manifest or a file it names is missing or malformed.
        """
        path = Path(path)
        if not path.is_dir():
            raise InvalidInput(f"no index at {path}: create one with LexicalIndex.create()")
        manifest = _read_manifest(path)
        vocab = Vocabulary()
        segments = [_load_segment(path, meta, vocab, mmap=True) for meta in manifest["segments"]]
        return cls(path, manifest, segments, vocab)

    # --- writes ------------------------------------------------------------------------------

    def add(self, doc_keys: Sequence[int] | IntArray, texts: Sequence[str]) -> None:
        """Index ``texts`` under ``doc_keys`` as one new segment.

        Args:
            doc_keys: ``(n,)`` int64 keys, unique, none of them live in the index (keys of
                deleted documents may be reused).
            texts: ``n`` strings; an empty text is a length-0 document that never matches.

        Raises:
            InvalidInput: mismatched lengths, non-str text, duplicate or live keys. Nothing
                is changed.
        """
        keys = _as_keys(doc_keys)
        texts = list(texts)
        if len(keys) != len(texts):
            raise InvalidInput(f"{len(keys)} doc_keys for {len(texts)} texts")
        bad = next((i for i, t in enumerate(texts) if not isinstance(t, str)), None)
        if bad is not None:
            raise InvalidInput(f"texts[{bad}] is {type(texts[bad]).__name__}, not str")
        if len(keys) == 0:
            return
        if len(np.unique(keys)) != len(keys):
            raise InvalidInput("doc_keys contains duplicates")
        _, found = self._view().lookup(keys)
        if found.any():
            raise InvalidInput(f"doc_keys already indexed: {keys[found][:5].tolist()}")
        ids, lengths = self._analyzer.analyze(texts, grow=True)
        name = f"seg-{self._manifest['next_segment']:06d}"
        seg = _build_segment(name, keys, lengths, ids)
        _write_segment(self.path, seg, self._analyzer.vocab)
        try:
            self._commit([*self._segments, seg], next_segment=self._manifest["next_segment"] + 1)
        except BaseException:
            _remove(self.path / name)
            raise

    def delete(self, doc_keys: Sequence[int] | IntArray) -> None:
        """Tombstone the live documents ``doc_keys`` (repeats in the request are ignored).

        Raises:
            InvalidInput: a key is not live (unknown or already deleted). Nothing is changed.
        """
        keys = np.unique(_as_keys(doc_keys))
        if len(keys) == 0:
            return
        view = self._view()
        slots, found = view.lookup(keys)
        if not found.all():
            raise InvalidInput(f"doc_keys not in the index: {keys[~found][:5].tolist()}")
        owner = np.searchsorted(view.offsets, slots, side="right") - 1
        gen = self._manifest["generation"] + 1
        segments, written, replaced = list(self._segments), [], []
        try:
            for si in np.unique(owner).tolist():
                seg = segments[si]
                local = slots[owner == si] - view.offsets[si]
                deleted = np.union1d(seg.deleted, local).astype(np.int32)
                fname = f"{seg.name}.del-{gen:06d}.npy"
                tmp = self.path / f".tmp-{fname}"
                written += [tmp.name, fname]
                _save_npy(tmp, deleted)
                os.replace(tmp, self.path / fname)
                replaced.append(seg.tomb_file)
                segments[si] = _Segment(**{**seg.__dict__, "deleted": deleted, "tomb_file": fname})
            self._commit(segments)
        except BaseException:
            for fname in written:
                _remove(self.path / fname)
            raise
        for old in replaced:
            if old is not None:
                _remove(self.path / old)

    def compact(self) -> None:
        """Merge all segments into one without the deleted documents, then delete the old
        files (and any left over by an interrupted write), reclaiming their bytes."""
        segs = self._segments
        if len(segs) > 1 or (segs and len(segs[0].deleted)):
            view = self._view()
            name = f"seg-{self._manifest['next_segment']:06d}"
            merged = _merge_segments(name, segs, view)
            if merged is not None:
                _write_segment(self.path, merged, self._analyzer.vocab)
            try:
                self._commit(
                    [merged] if merged is not None else [],
                    next_segment=self._manifest["next_segment"] + 1,
                )
            except BaseException:
                _remove(self.path / name)
                raise
        self._collect_garbage()

    def _commit(self, segments: list[_Segment], **changes: Any) -> None:
        """Flip the manifest to ``segments``; the in-memory state follows only on success."""
        manifest = {
            **self._manifest,
            **changes,
            "generation": self._manifest["generation"] + 1,
            "segments": [s.meta() for s in segments],
        }
        _save_json_atomic(self.path / MANIFEST, manifest)
        self._manifest, self._segments = manifest, segments
        self._view_cache = None
        self._postings.clear()
        self._cached = 0

    def _collect_garbage(self) -> None:
        keep = {MANIFEST} | {s.name for s in self._segments}
        keep |= {s.tomb_file for s in self._segments if s.tomb_file}
        for entry in self.path.iterdir():
            if entry.name not in keep and entry.name.startswith(("seg-", ".tmp-")):
                _remove(entry)

    # --- reads -------------------------------------------------------------------------------

    def search(
        self, query: str, k: int, *, allowed: IntArray | None = None
    ) -> tuple[FloatArray, IntArray]:
        """The ``k`` best live documents for ``query``.

        Args:
            query: free text, analysed like the documents.
            k: how many results at most (> 0).
            allowed: optional ``(m,)`` int64 doc keys to restrict the search to (keys that
                are not live are ignored). Up to ``k`` of them are returned whenever they match.

        Returns:
            ``(scores, doc_keys)``: ``(r,)`` float32 BM25 scores, descending, ties by key
            ascending, and ``(r,)`` int64 keys; ``r <= k`` counts only documents sharing a
            term with the query (an empty or all-stopword query gives ``r = 0``).
        """
        k = _check_k(k)
        return self._search(self._analyzer.analyze_queries([_as_query(query)])[0], k, allowed)

    def search_many(
        self, queries: Sequence[str], k: int, *, allowed: IntArray | None = None
    ) -> list[tuple[FloatArray, IntArray]]:
        """:meth:`search` for each of ``queries`` (analysed in one batch)."""
        k = _check_k(k)
        texts = [_as_query(q) for q in queries]
        return [self._search(ids, k, allowed) for ids in self._analyzer.analyze_queries(texts)]

    def score_docs(self, query: str, doc_keys: Sequence[int] | IntArray) -> FloatArray:
        """BM25 scores of ``query`` for the given live documents, for rescoring and fusion.

        Returns:
            ``(len(doc_keys),)`` float32, 0 where a document shares no term with the query.

        Raises:
            InvalidInput: a key is not live.
        """
        keys = _as_keys(doc_keys)
        slots, found = self._view().lookup(keys)
        if not found.all():
            raise InvalidInput(f"doc_keys not in the index: {keys[~found][:5].tolist()}")
        out = np.zeros(len(keys), dtype=np.float32)
        cand, scores = self._accumulate(self._analyzer.analyze_queries([_as_query(query)])[0])
        if len(cand) and len(keys):
            pos = np.minimum(np.searchsorted(cand, slots), len(cand) - 1)
            hit = cand[pos] == slots
            out[hit] = scores[pos[hit]]
        return out

    def _search(
        self, term_ids: IntArray, k: int, allowed: IntArray | None
    ) -> tuple[FloatArray, IntArray]:
        slots, scores = self._accumulate(term_ids)
        if allowed is not None and len(slots):
            allowed_slots, found = self._view().lookup(_as_keys(allowed, "allowed"))
            keep = np.isin(slots, allowed_slots[found])
            slots, scores = slots[keep], scores[keep]
        if len(slots) == 0:
            return _EMPTY[0].copy(), _EMPTY[1].copy()
        return _top_k(scores, self._view().keys[slots], k)

    def _accumulate(self, term_ids: IntArray) -> tuple[np.ndarray, np.ndarray]:
        """Sorted slots of the live documents matching ``term_ids`` and their scores."""
        if len(term_ids) == 0 or not self._segments:
            return np.zeros(0, np.int64), np.zeros(0, np.float64)
        uniq, counts = np.unique(term_ids, return_counts=True)
        parts = [self._term_postings(int(t)) for t in uniq.tolist()]
        slots = np.concatenate([p[0] for p in parts])
        reps = counts.tolist()
        weights = np.concatenate(
            [p[1] * c if c > 1 else p[1] for p, c in zip(parts, reps, strict=True)]
        )
        n_slots = len(self._view().keys)
        if len(slots) * 8 < n_slots:  # few hits: sort them rather than sweep every doc
            cand, inverse = np.unique(slots, return_inverse=True)
            return cand, np.bincount(inverse, weights, minlength=len(cand))
        dense = np.bincount(slots, weights, minlength=n_slots)
        cand = np.flatnonzero(dense)
        return cand, dense[cand]

    def _term_postings(self, gid: int) -> tuple[IntArray, npt.NDArray[np.float64]]:
        """Live slots holding term ``gid`` and their BM25 impacts (idf * saturated tf)."""
        hit = self._postings.get(gid)
        if hit is not None:
            return hit
        view = self._view()
        slot_parts, tf_parts = [], []
        for seg, base in zip(self._segments, view.offsets.tolist(), strict=False):
            row = seg.row(gid)
            if row >= 0:
                lo, hi = seg.indptr[row], seg.indptr[row + 1]
                slot_parts.append(seg.docs[lo:hi].astype(np.int64) + base)
                tf_parts.append(seg.tfs[lo:hi])
        slots = np.concatenate(slot_parts) if slot_parts else np.zeros(0, np.int64)
        tf = np.concatenate(tf_parts).astype(np.float64) if tf_parts else np.zeros(0)
        live = view.live[slots]
        if not live.all():
            slots, tf = slots[live], tf[live]
        df = len(slots)
        idf = np.log1p((view.n_live - df + 0.5) / (df + 0.5))
        impacts = idf * tf / (tf + view.norm[slots])
        if self._cached > _CACHE_MAX_POSTINGS:
            self._postings.clear()
            self._cached = 0
        self._postings[gid] = (slots, impacts)
        self._cached += df
        return slots, impacts

    def _view(self) -> _View:
        if self._view_cache is None:
            self._view_cache = _build_view(self._segments, self.k1, self.b)
        return self._view_cache

    def __len__(self) -> int:
        return self._view().n_live

    def keys(self) -> IntArray:
        """``(n_docs,)`` int64 keys of the live documents, ascending."""
        return self._view().sorted_keys.copy()

    def stats(self) -> LexicalStats:
        """Live documents, segments, tombstones and bytes on disk."""
        size = sum(f.stat().st_size for f in self.path.rglob("*") if f.is_file())
        return LexicalStats(
            n_docs=len(self),
            n_segments=len(self._segments),
            n_tombstones=sum(len(s.deleted) for s in self._segments),
            bytes_on_disk=size,
        )

    def check(self) -> None:
        """Re-read every file the manifest names and verify the postings' invariants.

        Raises:
            IndexCorrupt: a file is missing or unreadable, or arrays disagree (counts,
                pointers, doc ids, term frequencies vs lengths, tombstones, duplicate keys).
        """
        manifest = _read_manifest(self.path)
        live_keys = []
        for meta in manifest["segments"]:
            seg = _load_segment(self.path, meta, Vocabulary(), mmap=False)
            _check_segment(self.path / seg.name, seg)
            alive = np.ones(len(seg.keys), np.bool_)
            alive[seg.deleted] = False
            live_keys.append(seg.keys[alive])
        keys = np.concatenate(live_keys) if live_keys else np.zeros(0, np.int64)
        if len(np.unique(keys)) != len(keys):
            raise IndexCorrupt(f"{self.path}: a doc key is live in two segments")


def _library_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("embedstack")
    except PackageNotFoundError:
        return "unknown"


def _as_query(query: object) -> str:
    if not isinstance(query, str):
        raise InvalidInput(f"a query must be str, got {type(query).__name__}")
    return query


# --- segments --------------------------------------------------------------------------------


def _build_view(segments: list[_Segment], k1: float, b: float) -> _View:
    sizes = [len(s.keys) for s in segments]
    offsets = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)]).astype(np.int64)
    n = int(offsets[-1])
    keys = np.concatenate([s.keys for s in segments]) if segments else np.zeros(0, np.int64)
    lengths = np.zeros(n, np.float64)
    live = np.ones(n, np.bool_)
    for seg, base in zip(segments, offsets.tolist(), strict=False):
        lengths[base : base + len(seg.keys)] = seg.lengths
        live[base + seg.deleted] = False
    live_slots = np.flatnonzero(live)
    avgdl = float(lengths[live_slots].mean()) if len(live_slots) else 0.0
    norm = k1 * (1.0 - b + b * lengths / (avgdl if avgdl > 0 else 1.0))
    order = np.argsort(keys[live_slots], kind="stable")
    return _View(
        offsets, keys, live, norm, len(live_slots), keys[live_slots][order], live_slots[order]
    )


def _build_segment(name: str, keys: IntArray, lengths: IntArray, term_ids: IntArray) -> _Segment:
    """CSR postings of one batch: ``term_ids`` of all docs concatenated, ``lengths`` per doc."""
    n = len(keys)
    owner = np.repeat(np.arange(n, dtype=np.int64), lengths)
    pairs, tfs = np.unique(term_ids * n + owner, return_counts=True)
    pair_terms = pairs // n
    gids, starts = np.unique(pair_terms, return_index=True)
    return _Segment(
        name=name,
        keys=keys.copy(),
        lengths=lengths.astype(np.int32),
        gids=gids,
        indptr=np.append(starts, len(pairs)).astype(np.int64),
        docs=(pairs - pair_terms * n).astype(np.int32),
        tfs=tfs.astype(np.int32),
        deleted=np.zeros(0, np.int32),
    )


def _merge_segments(name: str, segments: list[_Segment], view: _View) -> _Segment | None:
    """One segment holding the live documents of ``segments`` in order, or None if none."""
    if view.n_live == 0:
        return None
    remap = np.full(len(view.keys), -1, np.int64)
    remap[view.live] = np.arange(view.n_live)
    gid_parts, doc_parts, tf_parts = [], [], []
    for seg, base in zip(segments, view.offsets.tolist(), strict=False):
        docs = remap[seg.docs.astype(np.int64) + base]
        keep = docs >= 0
        gid_parts.append(np.repeat(seg.gids, np.diff(seg.indptr))[keep])
        doc_parts.append(docs[keep])
        tf_parts.append(np.asarray(seg.tfs)[keep])
    gid = np.concatenate(gid_parts)
    order = np.argsort(gid, kind="stable")  # docs stay ascending within a term
    gid = gid[order]
    gids, starts = np.unique(gid, return_index=True)
    lengths = np.concatenate([s.lengths for s in segments])[view.live]
    return _Segment(
        name=name,
        keys=view.keys[view.live],
        lengths=lengths.astype(np.int32),
        gids=gids,
        indptr=np.append(starts, len(gid)).astype(np.int64),
        docs=np.concatenate(doc_parts)[order].astype(np.int32),
        tfs=np.concatenate(tf_parts)[order].astype(np.int32),
        deleted=np.zeros(0, np.int32),
    )


def _write_segment(root: Path, seg: _Segment, vocab: Vocabulary) -> None:
    """Write ``seg`` to ``root/<seg.name>`` via a temporary directory and a rename."""
    final, tmp = root / seg.name, root / f".tmp-{seg.name}"
    _remove(tmp)
    _remove(final)  # not in the manifest (names are never reused): left by a crashed write
    try:
        tmp.mkdir()
        terms = "\n".join([vocab.terms[g] for g in seg.gids.tolist()]).encode("utf-8")
        arrays: dict[str, np.ndarray] = {
            "keys": seg.keys,
            "lengths": seg.lengths,
            "terms": np.frombuffer(terms, dtype=np.uint8),
            "indptr": seg.indptr,
            "docs": seg.docs,
            "tfs": seg.tfs,
        }
        for fname, arr in arrays.items():
            _save_npy(tmp / f"{fname}.npy", arr)
        meta = {k: v for k, v in seg.meta().items() if k.startswith("n_") and "tomb" not in k}
        with open(tmp / "segment.json", "w", encoding="utf-8") as f:
            json.dump({"format": FORMAT, **meta}, f)
            f.flush()
            os.fsync(f.fileno())
        _fsync_dir(tmp)
        os.rename(tmp, final)
        _fsync_dir(root)
    except BaseException:
        _remove(tmp)
        raise


def _read_manifest(path: Path) -> dict[str, Any]:
    try:
        manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise IndexCorrupt(f"cannot read {path / MANIFEST}: {exc}") from exc
    required = {"format", "format_version", "k1", "b", "generation", "next_segment", "segments"}
    if not isinstance(manifest, dict) or not required <= manifest.keys():
        raise IndexCorrupt(f"{path / MANIFEST} is not a lexical index manifest")
    if manifest["format"] != FORMAT or manifest["format_version"] != FORMAT_VERSION:
        raise IndexCorrupt(
            f"{path / MANIFEST}: unsupported format {manifest['format']!r} "
            f"v{manifest['format_version']!r} (this library reads {FORMAT!r} v{FORMAT_VERSION})"
        )
    return manifest


def _load_segment(root: Path, meta: dict[str, Any], vocab: Vocabulary, *, mmap: bool) -> _Segment:
    """Load a segment, checking that array sizes agree with ``meta`` and each other."""
    try:
        name, n_docs, n_terms = meta["name"], meta["n_docs"], meta["n_terms"]
        n_postings, tomb_file = meta["n_postings"], meta["tombstones"]
    except (KeyError, TypeError) as exc:
        raise IndexCorrupt(f"{root / MANIFEST}: malformed segment entry {meta!r}") from exc
    d = root / name
    keys = _load_npy(d / "keys.npy", np.int64)
    lengths = _load_npy(d / "lengths.npy", np.int32)
    raw = _load_npy(d / "terms.npy", np.uint8)
    indptr = _load_npy(d / "indptr.npy", np.int64)
    docs = _load_npy(d / "docs.npy", np.int32, mmap=mmap)
    tfs = _load_npy(d / "tfs.npy", np.int32, mmap=mmap)
    deleted = (
        _load_npy(root / tomb_file, np.int32) if tomb_file is not None else np.zeros(0, np.int32)
    )
    try:
        terms = raw.tobytes().decode("utf-8").split("\n") if n_terms else []
    except UnicodeDecodeError as exc:
        raise IndexCorrupt(f"{d / 'terms.npy'} is not UTF-8") from exc
    sizes_ok = (
        len(keys) == len(lengths) == n_docs
        and len(terms) == n_terms
        and len(indptr) == n_terms + 1
        and indptr[0] == 0
        and indptr[-1] == len(docs) == len(tfs) == n_postings
        and len(deleted) == meta.get("n_tombstones", len(deleted))
    )
    if not sizes_ok:
        raise IndexCorrupt(f"{d}: array sizes disagree with each other or with {MANIFEST}")
    gids = vocab.add_many(terms)
    return _Segment(name, keys, lengths, gids, indptr, docs, tfs, deleted, tomb_file)


def _check_segment(d: Path, seg: _Segment) -> None:
    """Deep invariants of a loaded segment (:meth:`LexicalIndex.check`)."""
    n, docs, tfs, deleted = len(seg.keys), np.asarray(seg.docs), np.asarray(seg.tfs), seg.deleted
    checks: list[tuple[Callable[[], bool], str]] = [
        (lambda: bool(np.any(np.diff(seg.indptr) < 0)), "row pointers decrease"),
        (lambda: bool(np.any((docs < 0) | (docs >= n))), "doc ids out of range"),
        (lambda: bool(np.any(tfs < 1)), "term frequencies below 1"),
        (lambda: len(np.unique(seg.gids)) != len(seg.gids), "duplicate terms"),
        (lambda: bool(np.any((np.diff(docs) <= 0) & ~_row_starts(seg)[1:])), "unsorted postings"),
        (lambda: bool(np.any(np.diff(deleted) <= 0)), "unsorted tombstones"),
        (lambda: bool(np.any((deleted < 0) | (deleted >= n))), "tombstones out of range"),
    ]
    for bad, what in checks:  # in order: later checks rely on earlier ones
        if bad():
            raise IndexCorrupt(f"{d}: {what}")
    if not np.array_equal(np.bincount(docs, weights=seg.tfs, minlength=n), seg.lengths):
        raise IndexCorrupt(f"{d}: term frequencies do not add up to the document lengths")


def _row_starts(seg: _Segment) -> npt.NDArray[np.bool_]:
    """``(n_postings,)`` True where a posting is the first of its term's row."""
    starts = np.zeros(len(seg.docs), np.bool_)
    starts[seg.indptr[:-1][np.diff(seg.indptr) > 0]] = True
    return starts
