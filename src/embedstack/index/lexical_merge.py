"""The tiered merge policy of a :class:`~embedstack.index.lexical.LexicalIndex`: the
policy lives in :mod:`embedstack.index.merge_policy`, shared with the index's chunk
segments; this name keeps the BM25 side's imports working."""

from __future__ import annotations

from embedstack.index.merge_policy import MergePolicy

__all__ = ["MergePolicy"]
