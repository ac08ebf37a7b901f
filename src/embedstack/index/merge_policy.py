"""The tiered merge policy of the segmented stores: the BM25 index
(:class:`~embedstack.index.lexical.LexicalIndex`, sizes in documents) and the index's chunk
segments (dense, SPLADE and ColBERT files, sizes in chunk rows; :mod:`embedstack.index._merge`).

Every write makes one segment, and a query visits every segment, so without merging the
segment count grows linearly with the number of writes (about 500 BM25 segments at a
million documents added 2,000 at a time; ~3,000 dense segments after a 10k-request soak
of small upserts). This policy keeps it logarithmic in the corpus, after Lucene's
``TieredMergePolicy`` (McCandless, "Visualizing Lucene's segment merges", 2011). Sizes
are in *items* (documents or chunk rows):

* a segment's size is its number of *live* items; sizes below ``floor_docs`` count as
  ``floor_docs`` (tiny segments are merged eagerly rather than piling up);
* segments are grouped into tiers by size: tier ``t`` holds sizes in
  ``[floor * m**t, floor * m**(t+1))`` with ``m = segments_per_tier``;
* whenever a tier holds ``m`` segments, its ``m`` smallest are merged into one (which lands
  in a higher tier), lowest tier first, until no tier is full;
* a segment too big to merge ``m`` of it within ``max_merged_docs``
  (``live * m > max_merged_docs``) is left alone ("retired"), unless deletes shrink it;
* a segment whose deleted share exceeds ``deletes_pct_allowed`` percent is rewritten without
  its deleted items (merging always drops them: deletes are reclaimed on merge).

After the policy has run, each tier holds at most ``m - 1`` segments and a tier ``t`` exists
only if ``floor * m**t <= n_live``, so :meth:`MergePolicy.max_segments` bounds the count by
``(m - 1) * (log_m(n_live / floor) + 1)`` plus the retired segments
(``n_live * m // max_merged_docs``). Each item is rewritten about ``log_m(n / floor)``
times over the life of the index, plus, while its segment is in tier 0 (below
``floor * m``), once every ``m - 1`` writes (the tier's smallest segments merge with what is
already there): at most about ``floor * m / ((m - 1) * batch)`` times for writes of
``batch`` items, the cost the floor puts on tiny writes to keep their segments few.

Merging changes no BM25 score: its statistics are taken over the live documents whatever
the segmentation (:mod:`embedstack.index.lexical_scoring`); nor any float32 dense score
(rows are copied bit for bit).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from embedstack.errors import InvalidInput

__all__ = ["MergePolicy"]


@dataclass(frozen=True)
class MergePolicy:
    """When a segmented store merges segments (sizes in documents or chunk rows).

    Attributes:
        segments_per_tier: ``m``: segments a tier may hold before they are merged (>= 2);
            also the most segments one merge combines.
        floor_docs: sizes below this count as this (>= 1).
        max_merged_docs: no merge makes a segment of more live documents than this.
        deletes_pct_allowed: a segment with a larger share of deleted documents (percent,
            0-100) is rewritten without them.

    Example:
        >>> MergePolicy(segments_per_tier=4, floor_docs=10).pick([10, 10, 10, 10], [10] * 4)
        [0, 1, 2, 3]
        >>> MergePolicy(segments_per_tier=10, floor_docs=1000).max_segments(1_000_000)
        38
    """

    segments_per_tier: int = 10
    floor_docs: int = 2_000
    max_merged_docs: int = 5_000_000
    deletes_pct_allowed: float = 20.0

    def __post_init__(self) -> None:
        ints = (self.segments_per_tier, self.floor_docs, self.max_merged_docs)
        if any(isinstance(v, bool) or not isinstance(v, int) for v in ints):
            raise InvalidInput(f"merge policy sizes must be integers, got {self!r}")
        if self.segments_per_tier < 2 or self.floor_docs < 1:
            raise InvalidInput("need segments_per_tier >= 2 and floor_docs >= 1")
        if self.max_merged_docs < self.floor_docs * self.segments_per_tier:
            raise InvalidInput("max_merged_docs must be >= floor_docs * segments_per_tier")
        if not 0 <= self.deletes_pct_allowed <= 100:
            raise InvalidInput(f"deletes_pct_allowed must be in [0, 100], got {self!r}")

    def tier(self, live: int) -> int:
        """The tier of a segment of ``live`` documents (0 for anything below the floor)."""
        t, top = 0, self.floor_docs * self.segments_per_tier
        while live >= top:
            t, top = t + 1, top * self.segments_per_tier
        return t

    def retired(self, live: int) -> bool:
        """Whether a segment is too big to merge with ``m - 1`` others."""
        return live * self.segments_per_tier > self.max_merged_docs

    def pick(self, live: Sequence[int], total: Sequence[int]) -> list[int] | None:
        """The next merge for segments of ``live`` live and ``total`` stored documents.

        Returns:
            Ascending positions of the segments to merge into one (a single position: rewrite
            it without its deleted documents), or None when nothing needs merging.
        """
        tiers: dict[int, list[int]] = {}
        for i, n_live in enumerate(live):
            if not self.retired(n_live):
                tiers.setdefault(self.tier(n_live), []).append(i)
        for t in sorted(tiers):  # full tiers first: their merges reclaim deletes too
            members = tiers[t]
            if len(members) >= self.segments_per_tier:
                smallest = sorted(members, key=lambda i: (live[i], i))
                return sorted(smallest[: self.segments_per_tier])
        for i, (n_live, n_all) in enumerate(zip(live, total, strict=True)):
            if n_all and (n_all - n_live) * 100 > self.deletes_pct_allowed * n_all:
                return [i]
        return None

    def max_segments(self, n_live: int) -> int:
        """The most segments an index of ``n_live`` live documents holds once the policy
        has run (see the module docstring)."""
        tiers = self.tier(max(n_live, self.floor_docs)) + 1
        retired = n_live * self.segments_per_tier // self.max_merged_docs
        return (self.segments_per_tier - 1) * tiers + retired
