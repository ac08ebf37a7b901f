"""The local BM25 field: a :class:`~embedstack.index.lexical.LexicalIndex` in ``lexical/``,
keyed by the documents' SQLite keys.

Unlike the segment-file fields, BM25 commits on its own (its ``lexical.json`` flip): a
batch added here is searchable by BM25 before SQLite commits it, so searches mask by the
snapshot's live keys whenever the two differ, and discarding a batch tombstones its keys.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from pathlib import Path

import numpy as np

from embedstack._typing import IntArray
from embedstack.errors import EmbedstackError, IndexCorrupt
from embedstack.index.fields.base import Batch, DocHits, FieldStats, Rewrite, Snapshot
from embedstack.index.fields.segments import dir_bytes
from embedstack.index.lexical import MANIFEST, LexicalIndex

__all__ = ["DIR", "BM25Field"]

DIR = "lexical"


class BM25Field:
    """Lucene BM25 over each document's full text (title and text).

    Args:
        root: the ``lexical/`` folder.
        lexical: the open BM25 index.
        readonly: reopen the BM25 index at each refresh (other processes write it).
    """

    name = "bm25"

    def __init__(self, root: Path, lexical: LexicalIndex, readonly: bool) -> None:
        self.root = root
        self.lexical = lexical
        self.readonly = readonly
        # holds exactly the snapshot's live keys (no masking needed); None: not compared yet
        self._exact: bool | None = False
        self._loaded = self.version()  # the commit of lexical.json that ``lexical`` reflects

    def prepare(self, batch: Batch) -> None:
        """Nothing to encode: analysis happens as the batch is written."""

    def write(self, batch: Batch, prepared: None, segment: int, keys: IntArray) -> None:
        self.lexical.add(keys, batch.texts)

    def _delete_present(self, keys: IntArray) -> None:
        present = np.intersect1d(np.asarray(keys, dtype=np.int64), self.lexical.keys())
        if len(present):
            self.lexical.delete(present)

    def discard(self, segments: Sequence[int], keys: IntArray) -> None:
        self._delete_present(keys)

    def remove(self, keys: IntArray) -> None:
        self._delete_present(keys)

    def refresh(self, snapshot: Snapshot) -> None:
        if self.readonly and self.version() != self._loaded:  # another process committed
            self._loaded = self.version()
            self.lexical = LexicalIndex.open(self.root)
        self._exact = None  # compared at the first search: a dense-only reader never pays

    def recover(self, snapshot: Snapshot) -> None:
        """Delete BM25 documents SQLite does not have (a batch that crashed before its
        SQLite commit, or deletes committed in SQLite but not yet tombstoned), and files a
        crashed merge left behind; store the vocabulary of an index written without it."""
        self.lexical.collect_garbage()
        self.lexical.save_vocabulary()
        keys, live = self.lexical.keys(), snapshot.live  # both ascending and unique
        at = np.minimum(np.searchsorted(live, keys), max(len(live) - 1, 0))
        stray = keys[live[at] != keys] if len(live) else keys
        if len(stray):
            self.lexical.delete(stray)

    def check(self, snapshot: Snapshot) -> None:
        path = self.root.parent
        try:
            self.lexical.check()
            keys = LexicalIndex.open(self.root).keys()
        except EmbedstackError as exc:
            raise IndexCorrupt(f"{self.root}: {exc}") from exc
        live = snapshot.live
        if not np.array_equal(keys, live):
            missing = np.setdiff1d(live, keys)[:5].tolist()
            extra = np.setdiff1d(keys, live)[:5].tolist()
            raise IndexCorrupt(
                f"{path}: BM25 and SQLite disagree on the live documents (missing from BM25: "
                f"{missing}, extra in BM25: {extra}); open the index as a writer to recover"
                if not missing
                else f"{path}: live documents {missing} are missing from the BM25 index"
            )

    def rewrite(self, rewrites: Sequence[Rewrite]) -> None:
        """Nothing to rewrite: BM25 is keyed by document, not by segment row."""

    def release(self, segments: Sequence[int], *, reclaim: bool = True) -> None:
        """Compaction (``reclaim``): merge the BM25 segments, dropping deleted documents.
        A merge of the chunk segments needs nothing here (BM25 merges its own)."""
        if reclaim:
            self.lexical.compact()

    def close(self) -> None:
        """Nothing to flush: every write is durable when it returns."""

    def version(self) -> Hashable:
        try:
            return (self.root / MANIFEST).stat().st_mtime_ns
        except OSError:
            return -1

    def stats(self) -> FieldStats:
        # merges drop deleted postings early; the other fields keep those documents' rows
        # until compact(), so they still count as deleted-but-stored
        stats = self.lexical.stats()
        return FieldStats(
            {"lexical": dir_bytes(self.root)}, stats.n_tombstones + stats.merged_deletes
        )

    def search(
        self, queries: list[str], snapshot: Snapshot, allowed: IntArray | None, depth: int
    ) -> list[DocHits]:
        if self._exact is None:
            self._exact = bool(np.array_equal(self.lexical.keys(), snapshot.live))
        mask = None if allowed is None and self._exact else allowed
        if mask is None and not self._exact:
            mask = snapshot.live
        out = []
        for scores, keys in self.lexical.search_many(queries, depth, allowed=mask, ties=True):
            unknown = np.full(len(keys), -1, np.int64)
            out.append(DocHits(keys, scores, unknown, unknown))
        return out
