"""Lucene BM25 over the live statistics of a set of lexical segments.

Scores are Lucene's BM25 (Robertson & Zaragoza 2009; the Lucene variant as compared by
Kamphuis et al. 2020)::

    idf(t)   = ln(1 + (N - df(t) + 0.5) / (df(t) + 0.5))
    score(d) = sum over query tokens t of idf(t) * tf / (tf + k1*(1 - b + b*dl/avgdl))

with ``N``, ``df`` and ``avgdl`` taken over the *live* documents when the query runs, so a
deleted document changes scores exactly as if it had never been indexed. The constant factor
``(k1 + 1)`` of the classic numerator is left out, as Lucene does since 8.0 (LUCENE-8563) and
bm25s does: it scales every score alike and changes no ranking.

A :class:`Scorer` is built over one list of segments (:mod:`embedstack.index.lexical_segments`)
and is replaced whenever they change; it caches each term's live postings and impacts (and
their ``k``-th best). A top-``k`` search ranks only the documents scoring at least the best
``k``-th impact of one query term, a lower bound of the ``k``-th best score (the "threshold"
that dynamic pruning such as MaxScore, Turtle & Flood 1995, starts from): a few hundred
documents instead of every match, with the same scores and ranking.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from embedstack._typing import FloatArray, IntArray
from embedstack.errors import InvalidInput
from embedstack.index.fields.base import tie_cut
from embedstack.index.lexical_segments import Segment
from embedstack.settings import bm25_cache_bytes

__all__ = ["Scorer", "View", "as_keys", "check_k", "top_k"]

_POSTING_BYTES = 16  # a cached posting: its int64 slot and float64 impact
_CACHE_MAX_FLOORS = 1 << 20  # (term, k) -> k-th best impact entries kept
_FLOOR_SLACK = 1.0 - 2.0**-22  # two float32 ulps below a score floor (see accumulate)
_FLOOR_MIN = float(np.finfo(np.float32).tiny)  # below, float32 ulps are not relative: no floor
_FLOOR_SAMPLE = 1 << 13  # a term's k-th best impact is taken among this many postings at most


def _max_cached_postings() -> int:
    """Postings the impact cache may hold: :func:`embedstack.settings.bm25_cache_bytes`."""
    return bm25_cache_bytes() // _POSTING_BYTES


def as_keys(doc_keys: Iterable[int] | np.ndarray, what: str = "doc_keys") -> IntArray:
    """``doc_keys`` as a 1-d int64 array.

    Raises:
        InvalidInput: not a 1-d sequence of integers that fit in int64.
    """
    arr = np.asarray(doc_keys if isinstance(doc_keys, np.ndarray) else list(doc_keys))
    if arr.size == 0:
        return np.zeros(0, dtype=np.int64)
    if arr.ndim != 1 or arr.dtype.kind not in "iu":
        raise InvalidInput(f"{what} must be a 1-d sequence of integers, got {arr.dtype}{arr.shape}")
    if arr.dtype.kind == "u" and arr.max() > np.iinfo(np.int64).max:
        raise InvalidInput(f"{what} must fit in int64")
    return arr.astype(np.int64, copy=False)


def check_k(k: int) -> int:
    """``k`` as an int, or :class:`InvalidInput` unless it is a positive integer."""
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k <= 0:
        raise InvalidInput(f"k must be a positive integer, got {k!r}")
    return int(k)


def top_k(
    scores: np.ndarray, keys: IntArray, k: int, ties: bool = False
) -> tuple[FloatArray, IntArray]:
    """The ``k`` best of ``scores`` (float32, descending), ties broken by key ascending; with
    ``ties`` also the documents tied with the ``k``-th
    (:func:`~embedstack.index.fields.base.tie_cut`)."""
    s32 = scores.astype(np.float32)
    if len(s32) > k:
        threshold = np.partition(s32, len(s32) - k)[len(s32) - k]
        sel = np.flatnonzero(s32 >= threshold)
        s32, keys = s32[sel], keys[sel]
    order = np.lexsort((keys, -s32))
    order = order[: tie_cut(s32[order], k) if ties else k]
    return s32[order], keys[order]


@dataclass
class View:
    """Collection-wide arrays over all segments' doc slots."""

    offsets: IntArray  # (n_segments + 1,) first slot of each segment
    keys: IntArray  # (n_slots,) doc key of each slot
    live: npt.NDArray[np.bool_]  # (n_slots,)
    norm: npt.NDArray[np.float64]  # (n_slots,) k1 * (1 - b + b * dl / avgdl)
    n_live: int
    sorted_keys: IntArray  # live keys, ascending
    sorted_slots: IntArray  # their slots

    @classmethod
    def build(cls, segments: list[Segment], k1: float, b: float) -> View:
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
        sorted_keys = keys[live_slots][order]
        return cls(offsets, keys, live, norm, len(live_slots), sorted_keys, live_slots[order])

    def lookup(self, keys: IntArray) -> tuple[IntArray, npt.NDArray[np.bool_]]:
        """Slots of ``keys`` among live docs, and whether each was found."""
        pos = np.searchsorted(self.sorted_keys, keys)
        pos = np.minimum(pos, max(len(self.sorted_keys) - 1, 0))
        if len(self.sorted_keys) == 0:
            return np.zeros(len(keys), np.int64), np.zeros(len(keys), np.bool_)
        return self.sorted_slots[pos], self.sorted_keys[pos] == keys


class Scorer:
    """BM25 over ``segments`` with parameters ``k1`` and ``b``; see the module docstring."""

    def __init__(self, segments: list[Segment], k1: float, b: float) -> None:
        self.segments = segments
        self.view = View.build(segments, k1, b)
        # plain-ndarray views of the (memory-mapped) postings: slicing a np.memmap runs
        # Python code (its __array_finalize__), some microseconds per slice
        self._arrays = [
            (seg, np.asarray(seg.indptr), np.asarray(seg.docs), np.asarray(seg.tfs), base)
            for seg, base in zip(segments, self.view.offsets.tolist(), strict=False)
        ]
        self._all_live = self.view.n_live == len(self.view.keys)
        # term -> (live slots, impacts), least recently used first; ``_cached`` postings, at
        # most ``_max_cached`` (a memory budget: a query set whose terms' postings exceed it
        # makes every lookup a miss under LRU, so it is sized to the machine, not fixed)
        self._postings: OrderedDict[int, tuple[IntArray, npt.NDArray[np.float64]]] = OrderedDict()
        self._cached = 0
        self._max_cached = _max_cached_postings()
        self._buffers = threading.local()  # per thread: searches may run in parallel
        self._kth: dict[tuple[int, int], float] = {}  # (term, k) -> k-th best impact

    def search(
        self, term_ids: IntArray, k: int, allowed: IntArray | None, ties: bool = False
    ) -> tuple[FloatArray, IntArray]:
        """The ``k`` best live documents for one analysed query: ``(scores, keys)`` (with
        ``ties``, also those tied with the ``k``-th)."""
        slots, scores = self.accumulate(term_ids, None if allowed is not None else k)
        if allowed is not None and len(slots):
            allowed_slots, found = self.view.lookup(as_keys(allowed, "allowed"))
            keep = np.isin(slots, allowed_slots[found])
            slots, scores = slots[keep], scores[keep]
        if len(slots) == 0:
            return np.zeros(0, np.float32), np.zeros(0, np.int64)
        return top_k(scores, self.view.keys[slots], k, ties)

    def score_slots(self, term_ids: IntArray, slots: IntArray) -> FloatArray:
        """``(len(slots),)`` float32 scores of one analysed query for live ``slots``."""
        out = np.zeros(len(slots), dtype=np.float32)
        cand, scores = self.accumulate(term_ids)
        if len(cand) and len(slots):
            pos = np.minimum(np.searchsorted(cand, slots), len(cand) - 1)
            hit = cand[pos] == slots
            out[hit] = scores[pos[hit]]
        return out

    def accumulate(self, term_ids: IntArray, k: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Sorted slots of the live documents matching ``term_ids`` and their scores; with
        ``k``, only a subset that holds every document whose float32 score reaches the
        ``k``-th best (so the top ``k`` and its ties are the same as over all of them).

        The subset is what scores at least a floor no worse than the ``k``-th best: each
        impact is positive and float64 addition of positive numbers is monotone, so a
        document's score is at least any one of its terms' weighted impacts, and the
        ``k``-th best score at least the ``k``-th best impact of any one query term. The
        floor is lowered by two float32 ulps so that no document whose float32 score ties
        with the ``k``-th best is left out. Scores are summed exactly as without ``k``,
        so they are bit-identical.
        """
        if len(term_ids) == 0 or not self.segments:
            return np.zeros(0, np.int64), np.zeros(0, np.float64)
        uniq, counts = np.unique(term_ids, return_counts=True)
        gids, reps = uniq.tolist(), counts.tolist()
        parts = [self._term_postings(gid) for gid in gids]
        weights = [p[1] * c if c > 1 else p[1] for p, c in zip(parts, reps, strict=True)]
        n_slots = len(self.view.keys)
        if sum(len(p[0]) for p in parts) * 8 < n_slots:  # few: sort rather than sweep all
            cand, inverse = np.unique(np.concatenate([p[0] for p in parts]), return_inverse=True)
            return cand, np.bincount(inverse, np.concatenate(weights), minlength=len(cand))
        # a term's slots are distinct, so each document's score is 0.0 plus its terms'
        # weights in term order: the sums np.bincount makes of the concatenated postings,
        # without concatenating them
        dense = self._accumulator(n_slots)
        try:
            for (slots, _), w in zip(parts, weights, strict=True):
                np.add.at(dense, slots, w)  # faster than dense[slots] += w at a million slots
            floor = 0.0 if k is None else self._floor(gids, reps, k)
            if floor > 0.0:
                cand = np.flatnonzero(dense >= floor * _FLOOR_SLACK)
            else:
                cand = np.flatnonzero(dense > 0)  # impacts are > 0; a bool mask scans 7x faster
            return cand, dense[cand]
        finally:
            dense.fill(0.0)

    def _accumulator(self, n_slots: int) -> npt.NDArray[np.float64]:
        """This thread's zeroed ``(n_slots,)`` float64 buffer, kept between queries.

        A fresh ``np.zeros`` per query costs page faults whenever the allocator has handed
        the memory back to the kernel, which it does while the term cache grows: at a million
        documents, the first pass over 300 hybrid queries spent 1.1 s in ``np.add.at`` and
        the repeat pass 0.6 s (docs/benchmarks.md). Zeroing the kept buffer is one memset.
        """
        buffer: npt.NDArray[np.float64] | None = getattr(self._buffers, "dense", None)
        if buffer is None or len(buffer) != n_slots:
            buffer = self._buffers.dense = np.zeros(n_slots)
        return buffer

    def _floor(self, gids: list[int], reps: list[int], k: int) -> float:
        """A lower bound of the ``k``-th best score of a query of terms ``gids`` repeated
        ``reps`` times: the largest ``k``-th best weighted impact of one term (0.0 when no
        term matches ``k`` documents).

        A common term's ``k``-th best impact is taken among its first postings only (the
        ``k``-th best of a subset is no better than that of all): common terms have low
        impacts and seldom set the floor, and partitioning all their postings would cost
        their first query as much as computing the impacts did.
        """
        best = 0.0
        for gid, rep in zip(gids, reps, strict=True):
            kth = self._kth.get((gid, k))
            if kth is None:
                impacts = self._term_postings(gid)[1][: max(_FLOOR_SAMPLE, k)]
                n = len(impacts)
                kth = float(np.partition(impacts, n - k)[n - k]) if n >= k else 0.0
                if len(self._kth) >= _CACHE_MAX_FLOORS:
                    self._kth.clear()
                self._kth[(gid, k)] = kth
            # the weights are ``impacts * rep``: the same product, rounded the same way
            best = max(best, kth * rep)
        return best if best >= _FLOOR_MIN else 0.0

    def _term_postings(self, gid: int) -> tuple[IntArray, npt.NDArray[np.float64]]:
        """Live slots holding term ``gid`` and their BM25 impacts (idf * saturated tf)."""
        hit = self._postings.get(gid)
        if hit is not None:
            self._postings.move_to_end(gid)
            return hit
        view = self.view
        doc_parts, tf_parts, bases = [], [], []
        for seg, indptr, docs, tfs, base in self._arrays:
            row = seg.row(gid)
            if row >= 0:
                lo, hi = indptr[row], indptr[row + 1]
                doc_parts.append(docs[lo:hi])
                tf_parts.append(tfs[lo:hi])
                bases.append(base)
        # one pass per part each: local ids -> int64 slots, int32 tfs side by side
        total = sum(len(docs) for docs in doc_parts)
        slots = np.empty(total, np.int64)
        tf = np.empty(total, np.int32)
        at = 0
        for docs, tfs, base in zip(doc_parts, tf_parts, bases, strict=True):
            np.add(docs, base, out=slots[at : at + len(docs)], dtype=np.int64)
            tf[at : at + len(docs)] = tfs
            at += len(docs)
        if not self._all_live:
            live = view.live[slots]
            if not live.all():
                slots, tf = slots[live], tf[live]
        df = len(slots)
        idf = np.log1p((view.n_live - df + 0.5) / (df + 0.5))
        # idf * tf / (tf + norm) with each operation rounded as numpy rounds it on float64
        # operands (an int32 tf converts exactly), without a float64 copy of tf
        impacts = np.multiply(tf, idf, dtype=np.float64)
        saturation = view.norm[slots]
        saturation += tf
        impacts /= saturation
        self._postings[gid] = (slots, impacts)
        self._cached += df
        while self._cached > self._max_cached and len(self._postings) > 1:
            self._cached -= len(self._postings.popitem(last=False)[1][0])
        return slots, impacts
