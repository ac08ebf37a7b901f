"""The field protocol: what :class:`~embedstack.index.Index` needs from a stored retriever.

An index is SQLite (documents, chunks, the segment registry — the single source of truth)
plus a list of *fields*, each storing one representation of the same chunks: dense vectors,
BM25 postings, SPLADE postings, token vectors. The index composes fields through the
:class:`Field` protocol below and never reads their attributes, so that crash recovery and
rollback are written once, over the list, and a field may live anywhere: the local fields
(:mod:`embedstack.index.fields.local`) keep files in the index directory, an external engine
(PostgreSQL + pgvector, Milvus) implements the same methods against its own storage.

The contract, in the order of a write (see the commit protocol in :mod:`embedstack.index.core`):

1. :meth:`Field.prepare` encodes a :class:`Batch` (no writes; may take seconds).
2. :meth:`Field.write` stores it *uncommitted*: under the batch's reserved segment number
   and document keys, which SQLite does not register yet. Readers never see it, because
   every result is masked by the keys SQLite has (:class:`Snapshot`).
3. SQLite commits. If anything failed before, the index calls :meth:`Field.discard` on every
   field (a field must accept a discard of data it never wrote, or wrote in part).
4. :meth:`Field.remove` drops the documents the commit deleted or replaced (best effort: a
   crash here is repaired by :meth:`Field.recover`).
5. :meth:`Field.refresh` moves the field's search view to the new :class:`Snapshot`.

A writer opening an index calls :meth:`Field.recover` with what SQLite registers; the field
deletes everything else. Compaction is :meth:`Field.rewrite` (uncommitted, discarded on
failure) then, after the SQLite commit, :meth:`Field.release`; so is a merge of segments,
which a write makes in its own commit (:mod:`embedstack.index._merge`).

Searching fields also implement :class:`Retriever` (rank documents, masked by an allowed
key set) and/or :class:`Rescorer` (score given chunk rows).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from embedstack._typing import FloatArray, IntArray

__all__ = [
    "Batch",
    "DocHits",
    "Field",
    "FieldStats",
    "Rescorer",
    "Retriever",
    "Rewrite",
    "SegmentRows",
    "Snapshot",
    "aggregate",
    "empty_hits",
    "merges",
    "tie_cut",
]


@dataclass(frozen=True)
class Batch:
    """One add/upsert batch, as every field sees it.

    Attributes:
        texts: per document, its full text (title and text), what BM25 indexes.
        chunks: per chunk row, the text embedded (title included).
        chunk_doc: ``(n_rows,)`` int64 position in ``texts`` of each chunk's document.
    """

    texts: list[str]
    chunks: list[str]
    chunk_doc: IntArray

    def row_keys(self, keys: IntArray) -> IntArray:
        """``(n_rows,)`` document key of each chunk row, given the documents' ``keys``."""
        return keys[self.chunk_doc]


@dataclass(frozen=True)
class SegmentRows:
    """A registered segment: its number, row count and each row's document key (-1 dead)."""

    id: int
    n_rows: int
    row_keys: IntArray


@dataclass
class Snapshot:
    """What SQLite registers at one moment: the live documents and the segments.

    Every field masks its results by it, so uncommitted or deleted data never shows.

    Attributes:
        live: ascending int64 keys of the live documents.
        segments: the registered segments, by number.
        version: changes whenever any process commits (SQLite and every field's own
            commit token), so readers know when to reload.
    """

    live: IntArray
    segments: list[SegmentRows]
    version: Hashable = None
    _live_masks: list[np.ndarray] | None = field(default=None, repr=False)
    _row_keys: IntArray | None = field(default=None, repr=False)

    def masks(self, allowed: IntArray | None = None) -> list[np.ndarray]:
        """Per-segment row masks: rows whose document is live (``allowed`` None, cached)
        or in ascending ``allowed``.

        One membership test over every segment's rows at once, split into per-segment
        views: an index written in many small batches holds thousands of segments, and a
        test per segment made each search pay that many numpy calls."""
        if allowed is not None:
            return self._split(np.isin(self._all_row_keys(), allowed))
        if self._live_masks is None:
            self._live_masks = self._split(np.isin(self._all_row_keys(), self.live))
        return self._live_masks

    def _all_row_keys(self) -> IntArray:
        """``(total rows,)`` every segment's row keys, in segment order (cached)."""
        if self._row_keys is None:
            parts = [seg.row_keys for seg in self.segments]
            self._row_keys = np.concatenate(parts) if parts else np.zeros(0, np.int64)
        return self._row_keys

    def _split(self, mask: np.ndarray) -> list[np.ndarray]:
        ends = np.cumsum([len(seg.row_keys) for seg in self.segments]).tolist()
        return [mask[start:end] for start, end in zip([0, *ends], ends, strict=False)]

    def is_live(self, key: int) -> bool:
        pos = int(np.searchsorted(self.live, key))
        return pos < len(self.live) and int(self.live[pos]) == key


@dataclass(frozen=True)
class Rewrite:
    """Compaction or merging of one segment: keep the rows of ``old`` where ``mask`` is
    True, renumbered from 0 in order, as segment ``new``.

    Rewrites that share ``new`` are a merge: segment ``new`` holds their kept rows one
    rewrite after the other, in list order (:func:`merges` groups them). A later merge may
    take an earlier one's ``new`` as its ``old`` (written just before it)."""

    old: SegmentRows
    new: int
    mask: np.ndarray


def merges(rewrites: Sequence[Rewrite]) -> list[tuple[int, list[Rewrite]]]:
    """``rewrites`` grouped by their ``new`` segment, in order of first appearance.

    Example:
        >>> rows = SegmentRows(1, 2, np.array([7, 8]))
        >>> yes = np.array([True, True])
        >>> [(new, len(g)) for new, g in merges([Rewrite(rows, 5, yes), Rewrite(rows, 5, yes)])]
        [(5, 2)]
    """
    groups: dict[int, list[Rewrite]] = {}
    for rw in rewrites:
        groups.setdefault(rw.new, []).append(rw)
    return list(groups.items())


@dataclass(frozen=True)
class FieldStats:
    """Storage of one field: ``bytes`` by component name (``{"dense": 1234}``) and
    ``n_deleted``, documents deleted but still stored (0 when the field keeps none)."""

    bytes: dict[str, int]
    n_deleted: int = 0


@dataclass
class DocHits:
    """Per-query document results of a retriever, best first (ties by key).

    Attributes:
        keys: document keys.
        scores: each document's score (for chunked fields: its best chunk's).
        segments: segment of each document's best chunk, -1 when unknown (BM25).
        rows: row of that chunk in its segment, -1 when unknown.
    """

    keys: IntArray
    scores: FloatArray
    segments: IntArray
    rows: IntArray

    def head(self, depth: int) -> DocHits:
        """The first ``depth`` hits, and every further hit tied with the last of them
        (:func:`tie_cut`), so the caller can break ties at the cut by document id."""
        n = tie_cut(self.scores, depth)
        return DocHits(self.keys[:n], self.scores[:n], self.segments[:n], self.rows[:n])


#: At most this many hits past the cut are kept because they tie with it.
TIE_LIMIT = 1000


def tie_cut(scores: np.ndarray, depth: int) -> int:
    """How many of ``scores`` (sorted best first) to keep for a cut at ``depth``: ``depth``
    plus the hits after it whose score equals the ``depth``-th (at most :data:`TIE_LIMIT`).

    Retrievers order ties by internal key, i.e. insertion order; keeping the whole tie lets
    the search order it by document id, so that the top ``k`` is the first ``k`` of a deeper
    search and an index built up over time ranks like one built at once.

    Example:
        >>> tie_cut(np.array([3.0, 2.0, 2.0, 2.0, 1.0]), 2)
        4
    """
    n = min(depth, len(scores))
    if n == 0 or n == len(scores):
        return n
    last = scores[n - 1]
    end = min(len(scores), n + TIE_LIMIT)
    ties = np.flatnonzero(scores[n:end] != last)
    return n + (int(ties[0]) if len(ties) else end - n)


def empty_hits() -> DocHits:
    empty = np.zeros(0, np.int64)
    return DocHits(empty, np.zeros(0, np.float32), empty, empty)


def aggregate(scores: np.ndarray, keys: IntArray, segs: IntArray, rows: IntArray) -> DocHits:
    """Chunk scores to document hits: each document's best finite chunk (MaxP, Dai &
    Callan 2019), best first, ties by key."""
    ok = np.isfinite(scores)
    scores, keys, segs, rows = scores[ok], keys[ok], segs[ok], rows[ok]
    order = np.lexsort((rows, segs, -scores))
    scores, keys, segs, rows = scores[order], keys[order], segs[order], rows[order]
    _, first = np.unique(keys, return_index=True)  # best chunk of each document
    best = first[np.lexsort((keys[first], -scores[first]))]
    return DocHits(keys[best], scores[best].astype(np.float32), segs[best], rows[best])


@runtime_checkable
class Field(Protocol):
    """One stored representation of an index's chunks; see the module docstring.

    Attributes:
        name: the field's name (``"dense"``, ``"bm25"``, ``"sparse"``, ``"colbert"``); a
            retriever field answers ``mode=name``.
    """

    name: str

    def prepare(self, batch: Batch) -> Any:
        """Encode ``batch`` (no storage written); the result goes to :meth:`write`."""
        ...

    def write(self, batch: Batch, prepared: Any, segment: int, keys: IntArray) -> None:
        """Store a prepared batch, uncommitted, as segment ``segment`` (chunk row ``i`` is
        row ``i``) under the document ``keys`` (``(n_docs,)`` int64)."""
        ...

    def discard(self, segments: Sequence[int], keys: IntArray) -> None:
        """Remove uncommitted data of ``segments`` and ``keys``, whatever of it exists."""
        ...

    def remove(self, keys: IntArray) -> None:
        """Drop committed-deleted documents (``keys`` were live in this field)."""
        ...

    def refresh(self, snapshot: Snapshot) -> None:
        """Serve searches from ``snapshot`` (reloading what other processes committed)."""
        ...

    def recover(self, snapshot: Snapshot) -> None:
        """Writers, at open: delete what ``snapshot`` does not register (a crashed write)."""
        ...

    def check(self, snapshot: Snapshot) -> None:
        """Re-read and verify everything ``snapshot`` registers; raise IndexCorrupt."""
        ...

    def rewrite(self, rewrites: Sequence[Rewrite]) -> None:
        """Compaction and merging: store the kept rows of the old segments as their new
        ones (rewrites sharing a new segment concatenated, see :class:`Rewrite`),
        uncommitted."""
        ...

    def release(self, segments: Sequence[int], *, reclaim: bool = True) -> None:
        """After the commit of a compaction (``reclaim``: also reclaim deleted space) or of
        a merge (``reclaim`` False: only the merged ``segments`` go): free ``segments``."""
        ...

    def close(self) -> None:
        """The writer closes the index: flush what is kept in memory only (a cache, such
        as an HNSW graph's unsaved rows); everything committed is durable already."""
        ...

    def version(self) -> Hashable:
        """A token that changes when this field commits on its own (None if it never does)."""
        ...

    def stats(self) -> FieldStats:
        """Bytes stored and deleted documents still stored."""
        ...


@runtime_checkable
class Retriever(Protocol):
    """A field that ranks documents (``mode=name``)."""

    name: str

    def search(
        self, queries: list[str], snapshot: Snapshot, allowed: IntArray | None, depth: int
    ) -> list[DocHits]:
        """The ``depth`` best documents per query among the live ones (``allowed`` None)
        or those in ascending ``allowed`` (a filter), masked before top-k."""
        ...


@runtime_checkable
class Rescorer(Protocol):
    """A field that scores given chunk rows against a query (``dense_scores``,
    ``colbert_scores``)."""

    name: str

    def score_rows(
        self, query: str, snapshot: Snapshot, rows: dict[int, list[tuple[int, int]]]
    ) -> Iterable[tuple[int, float]]:
        """``(doc key, chunk score)`` for ``rows`` (``{segment: [(row, key)]}``; segments
        not in ``snapshot`` are skipped: committed after it)."""
        ...
