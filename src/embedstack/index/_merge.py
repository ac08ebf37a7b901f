"""Merging the chunk segments of an :class:`~embedstack.index.Index` as it is written.

Every add or upsert writes one segment (dense vectors, and SPLADE postings and ColBERT
token vectors when stored, all under one segment number registered in SQLite), and every
search visits every segment, so a server writing a few documents at a time used to pile up
thousands of them. Each write now also merges segments by the tiered policy of
:mod:`embedstack.index.merge_policy` (sizes in *live chunk rows*; :data:`POLICY`), which
keeps the count logarithmic in the corpus and drops deleted and replaced rows as it goes.

A merge is part of the write that triggers it, with nothing new in the commit protocol
(:mod:`embedstack.index.core`): each field writes the merged segment under a fresh number,
uncommitted, through :meth:`~embedstack.index.fields.base.Field.rewrite` (as compaction
does); the batch's one SQLite transaction then also registers the merged segment, repoints
its chunks and drops the sources; after the commit every field releases the sources. A
failure or crash before the commit leaves the previous state (the new files are
unregistered, removed by the rollback or the next writer's recovery); after it, the
sources' files are unregistered leftovers, removed the same way.

What a merge keeps exact: float32 vectors, binary sign bits, SPLADE weights and ColBERT
token vectors are copied unchanged, so no score changes; int8 codes are re-quantized into
the merged segment's calibration only for sources whose calibration differs
(:func:`embedstack.index.dense.merge_rows`). An HNSW graph keeps its rows: the merged
segment becomes an alias of the graph rows its sources already have
(:meth:`embedstack.index.ann.HnswGraph.remap`, saved with the graph), so a merge inserts
nothing and never rebuilds it. BM25 is keyed by document and merges its own segments.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from embedstack._typing import IntArray
from embedstack.index.dense import segment_name
from embedstack.index.docstore import DocStore
from embedstack.index.fields.base import Field, Rewrite, SegmentRows, Snapshot, merges
from embedstack.index.merge_policy import MergePolicy

__all__ = ["POLICY", "MergePlan", "commit", "plan", "release"]

#: The index's policy, in live chunk rows: tiers of 10 segments, sizes below 100 rows
#: count as 100 (so at most about 111 rows are copied per write into tier 0), no merge
#: past a million rows (one merge then holds about 1.5 GB of 384-d float32 in memory).
POLICY = MergePolicy(segments_per_tier=10, floor_docs=100, max_merged_docs=1_000_000)


@dataclass(frozen=True)
class MergePlan:
    """The merges one write makes.

    Attributes:
        rewrites: what each field writes (sharing a new segment number: one merge), in the
            order they must be written and committed.
        dropped: the source segments, gone after the commit (merged ones, and ones whose
            rows are all dead, which nothing replaces).
        snapshot: the segments and live keys once the write and its merges commit.
    """

    rewrites: list[Rewrite]
    dropped: list[int]
    snapshot: Snapshot

    @property
    def new(self) -> list[int]:
        """The merged segments' numbers."""
        return [new for new, _ in merges(self.rewrites)]


def plan(
    store: DocStore,
    segments: Sequence[SegmentRows],
    live: IntArray,
    policy: MergePolicy | None = None,
) -> MergePlan:
    """The merges ``policy`` (default :data:`POLICY`) asks for over ``segments`` once
    ``live`` (ascending keys) are the live documents; reserves a segment number in
    ``store`` for each merge (nothing else is written).

    Args:
        store: the index's SQLite store.
        segments: every segment after the write, the write's own included.
        live: the live document keys after the write.
        policy: the merge policy.
    """
    policy = POLICY if policy is None else policy
    work = list(segments)
    after = Snapshot(live, work)
    masks = list(after.masks())  # one membership test over every row
    rewrites: list[Rewrite] = []
    dropped: list[int] = []
    while True:
        pick = policy.pick([int(np.count_nonzero(m)) for m in masks], [s.n_rows for s in work])
        if pick is None:
            break
        chosen = set(pick)
        sources = [(work[i], masks[i]) for i in pick]
        work = [s for i, s in enumerate(work) if i not in chosen]
        masks = [m for i, m in enumerate(masks) if i not in chosen]
        dropped += [seg.id for seg, _ in sources]
        n_live = sum(int(np.count_nonzero(m)) for _, m in sources)
        if n_live == 0:
            continue
        _, new = store.reserve(0)
        rewrites += [Rewrite(seg, new, mask) for seg, mask in sources]
        keys = np.concatenate([seg.row_keys[mask] for seg, mask in sources])
        work.append(SegmentRows(new, n_live, keys.astype(np.int64)))
        masks.append(np.ones(n_live, dtype=np.bool_))
    if not dropped:
        return MergePlan([], [], after)
    final = Snapshot(live, work, _live_masks=masks)
    return MergePlan(rewrites, dropped, final)


def commit(store: DocStore, merge: MergePlan) -> None:
    """Inside the write's SQLite transaction: register each merged segment, repoint the
    chunks of its sources' kept rows (the k-th kept row becomes row k), drop the sources."""
    for new, group in merges(merge.rewrites):
        moves: list[tuple[int, int, int, int]] = []
        for rw in group:
            rows = np.flatnonzero(rw.mask).tolist()
            start = len(moves)
            moves += [(new, start + i, rw.old.id, row) for i, row in enumerate(rows)]
        store.register_segment(new, f"{segment_name(new)}.npy", len(moves))
        store.move_rows(moves)
    for seg in merge.dropped:
        store.drop_segment(seg)


def release(fields: Sequence[Field], merge: MergePlan) -> None:
    """After the commit: every field frees the merged-away segments (best effort: what a
    failure leaves is unregistered, removed by the next writer's recovery)."""
    if not merge.dropped:
        return
    for fld in fields:
        try:
            fld.release(merge.dropped, reclaim=False)
        except OSError:
            continue
