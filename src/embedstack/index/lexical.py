"""An updatable on-disk BM25 index: immutable segments, tombstones, compaction.

Modules, one responsibility each:

* analysis — :mod:`embedstack.index.tokenize` (bm25s's English default: lowercase, word
  split, Lucene's stopwords, Snowball stemming);
* the segment format — :mod:`embedstack.index.lexical_segments` (write, read, merge, check),
  and the stored vocabulary — :mod:`embedstack.index.lexical_vocab` (opening reads it);
* when to merge — :mod:`embedstack.index.lexical_merge` (a tiered policy: O(log n) segments);
* scoring — :mod:`embedstack.index.lexical_scoring` (Lucene BM25 over live statistics, so a
  deleted document changes scores exactly as if it had never been indexed; scores match
  ``bm25s.BM25(method="lucene")`` up to float32 rounding).

This module is the write protocol over them. A write builds new files under temporary
names, fsyncs them, renames them in place, then flips ``lexical.json``; files it replaced
are deleted only after the flip, so a crash leaves the previous state. One writer at a
time: the owner of the index serialises writes.

Example:
    >>> idx = LexicalIndex.create(tmp / "bm25")                       # doctest: +SKIP
    >>> idx.add([10, 11], ["cats purr", "dogs bark"])                  # doctest: +SKIP
    >>> idx.search("cat", k=5)                                         # doctest: +SKIP
    (array([0.3150669], dtype=float32), array([10]))
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from embedstack._typing import FloatArray, IntArray
from embedstack.errors import IndexCorrupt, InvalidInput
from embedstack.index import lexical_segments as fmt
from embedstack.index import lexical_vocab as vocab_fmt
from embedstack.index.lexical_merge import MergePolicy
from embedstack.index.lexical_scoring import Scorer, as_keys, check_k
from embedstack.index.lexical_segments import LexicalStats
from embedstack.index.manifest import library_version
from embedstack.index.readahead import read_ahead
from embedstack.index.tokenize import Analyzer, Vocabulary

__all__ = ["LexicalIndex", "LexicalStats", "MergePolicy"]

_OPEN_RETRIES = 5
_POSTINGS = ("docs.npy", "tfs.npy")  # memory-mapped: read ahead at open (readahead.py)

FORMAT = fmt.FORMAT
FORMAT_VERSION = fmt.FORMAT_VERSION
MANIFEST = fmt.MANIFEST


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
        self,
        path: Path,
        manifest: dict[str, Any],
        segments: list[fmt.Segment],
        vocab: Vocabulary,
        merge_policy: MergePolicy = MergePolicy(),  # noqa: B008 - frozen dataclass
    ) -> None:
        self.path = path
        self.merge_policy = merge_policy
        self.k1 = float(manifest["k1"])
        self.b = float(manifest["b"])
        self._manifest = manifest
        self._segments = segments
        self._analyzer = Analyzer(vocab)
        self._scoring: Scorer | None = None

    # --- lifecycle ---------------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        path: str | os.PathLike[str],
        k1: float = 1.2,
        b: float = 0.75,
        merge_policy: MergePolicy = MergePolicy(),  # noqa: B008 - frozen dataclass
    ) -> LexicalIndex:
        """Create an empty index in ``path`` (a new or empty directory); ``merge_policy``
        says when writes merge segments (:mod:`embedstack.index.lexical_merge`).

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
            "library_version": library_version(),
            "k1": float(k1),
            "b": float(b),
            "analyzer": "bm25s-en: lower, (?u)\\b\\w\\w+\\b, lucene english stopwords, snowball",
            "generation": 0,
            "next_segment": 1,
            "segments": [],
            "vocab": {"generation": 0, "runs": []},
        }
        fmt.save_json_atomic(path / MANIFEST, manifest)
        return cls(path, manifest, [], Vocabulary(), merge_policy)

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        merge_policy: MergePolicy = MergePolicy(),  # noqa: B008 - frozen dataclass
    ) -> LexicalIndex:
        """Open the index in ``path`` (``merge_policy`` as in :meth:`create`; it is not
        recorded: any policy reads any index).

        A reader in another process may open while the writer merges and deletes replaced
        segments; a segment that vanished under a manifest that changed meanwhile is
        retried with the new manifest.

        Raises:
            InvalidInput: ``path`` is not a directory.
            IndexCorrupt: the manifest or a file it names is missing or malformed.
        """
        path = Path(path)
        if not path.is_dir():
            raise InvalidInput(f"no index at {path}: create one with LexicalIndex.create()")
        for attempt in range(1, _OPEN_RETRIES + 1):  # noqa: B007 - last attempt re-raises
            manifest = fmt.read_manifest(path)
            try:
                stored = vocab_fmt.load(path, manifest)
                segments, vocab = fmt.load_segments(
                    path, manifest["segments"], mmap=True, stored=stored
                )
                break
            except IndexCorrupt:
                changed = fmt.read_manifest(path)["generation"] != manifest["generation"]
                if not changed or attempt == _OPEN_RETRIES:
                    raise
        read_ahead(path / m["name"] / f for m in manifest["segments"] for f in _POSTINGS)
        return cls(path, manifest, segments, vocab, merge_policy)

    # --- writes ------------------------------------------------------------------------------

    def add(self, doc_keys: Sequence[int] | IntArray, texts: Sequence[str]) -> None:
        """Index ``texts`` under ``doc_keys`` as one new segment, then merge segments as the
        merge policy asks (in the same commit).

        Args:
            doc_keys: ``(n,)`` int64 keys, unique, none of them live in the index (keys of
                deleted documents may be reused).
            texts: ``n`` strings; an empty text is a length-0 document that never matches.

        Raises:
            InvalidInput: mismatched lengths, non-str text, duplicate or live keys. Nothing
                is changed.
        """
        keys = as_keys(doc_keys)
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
        _, found = self._scorer().view.lookup(keys)
        if found.any():
            raise InvalidInput(f"doc_keys already indexed: {keys[found][:5].tolist()}")
        ids, lengths = self._analyzer.analyze(texts, grow=True)
        name = f"seg-{self._manifest['next_segment']:06d}"
        seg = fmt.build_segment(name, keys, lengths, ids)
        self._publish([*self._segments, seg], [seg.name], policy=True)

    def delete(self, doc_keys: Sequence[int] | IntArray) -> None:
        """Tombstone the live documents ``doc_keys`` (repeats in the request are ignored).

        Raises:
            InvalidInput: a key is not live (unknown or already deleted). Nothing is changed.
        """
        keys = np.unique(as_keys(doc_keys))
        if len(keys) == 0:
            return
        view = self._scorer().view
        slots, found = view.lookup(keys)
        if not found.all():
            raise InvalidInput(f"doc_keys not in the index: {keys[~found][:5].tolist()}")
        owner = np.searchsorted(view.offsets, slots, side="right") - 1
        gen = self._manifest["generation"] + 1
        segments, written = list(self._segments), []
        try:
            for si in np.unique(owner).tolist():
                seg = segments[si]
                local = slots[owner == si] - view.offsets[si]
                deleted = np.union1d(seg.deleted, local).astype(np.int32)
                fname = f"{seg.name}.del-{gen:06d}.npy"
                tmp = self.path / f".tmp-{fname}"
                written += [tmp.name, fname]
                fmt.save_npy(tmp, deleted)
                os.replace(tmp, self.path / fname)
                segments[si] = fmt.Segment(
                    **{**seg.__dict__, "deleted": deleted, "tomb_file": fname}
                )
        except BaseException:
            for fname in written:
                fmt.remove(self.path / fname)
            raise
        self._publish(segments, written)

    def compact(self) -> None:
        """Merge all segments into one without the deleted documents, then delete the old
        files (and any left over by an interrupted write), reclaiming their bytes."""
        segs = self._segments
        if len(segs) > 1 or (segs and len(segs[0].deleted)):
            self._publish(segs, [], merge=list(range(len(segs))))
        elif self._manifest.get("merged_deletes"):
            self._commit(segs, prune=True, merged_deletes=0)
        self.collect_garbage()

    def _publish(
        self,
        segments: list[fmt.Segment],
        written: list[str],
        *,
        policy: bool = False,
        merge: list[int] | None = None,
    ) -> None:
        """Commit ``segments`` (whose files ``written`` are new) after the merges the policy
        asks for (with ``policy``: adds merge, deletes only tombstone, as in Lucene, where
        merges are found when a segment is flushed) or the one forced ``merge``, in ONE
        manifest flip; then delete the files the new state no longer names.

        Merged segments are written under fresh names before the flip, so a crash anywhere
        leaves either the previous manifest (the new files are unreferenced leftovers) or
        the new one (the replaced files are); never a mix.
        """
        next_segment = self._manifest["next_segment"]
        reclaimed = 0 if merge is not None else self._manifest.get("merged_deletes", 0)
        if any(s.name == f"seg-{next_segment:06d}" for s in segments):
            next_segment += 1  # add(): the new segment took the next name
        try:
            for seg in segments:
                if seg.name in written:
                    fmt.write_segment(self.path, seg, self._analyzer.vocab)
            while (pick := self._policy_pick(segments) if policy else merge) is not None:
                name = f"seg-{next_segment:06d}"
                next_segment += 1
                reclaimed += 0 if merge is not None else sum(len(segments[i].deleted) for i in pick)
                merged = fmt.merge_segments(name, [segments[i] for i in pick])
                segments = [s for i, s in enumerate(segments) if i not in set(pick)]
                if merged is not None:
                    written.append(name)
                    fmt.write_segment(self.path, merged, self._analyzer.vocab)
                    segments.append(merged)
                if merge is not None:
                    break
            old_files = _files(self._segments)
            self._commit(segments, prune=merge is not None, next_segment=next_segment,
                         merged_deletes=reclaimed)  # fmt: skip
        except BaseException:
            for fname in written:
                fmt.remove(self.path / fname)
            raise
        for fname in (old_files | set(written)) - _files(segments):
            fmt.remove(self.path / fname)

    def _policy_pick(self, segments: list[fmt.Segment]) -> list[int] | None:
        total = [len(s.keys) for s in segments]
        live = [n - len(s.deleted) for n, s in zip(total, segments, strict=True)]
        return self.merge_policy.pick(live, total)

    def _commit(self, segments: list[fmt.Segment], *, prune: bool = False, **changes: Any) -> None:
        """Flip the manifest to ``segments`` and the vocabulary's runs (with ``prune``,
        holes for the terms they no longer use); the in-memory state follows only on
        success, and the runs it no longer names are deleted after the flip."""
        generation = self._manifest["generation"] + 1
        used = [np.zeros(0, np.int64), *(s.gids for s in segments)] if prune else None
        rec, vocab, new = vocab_fmt.record(
            self._manifest, self._analyzer.vocab, generation,
            prune=None if used is None else np.concatenate(used),
        )  # fmt: skip
        manifest = {**self._manifest, **changes, "generation": generation,
                    "segments": [s.meta() for s in segments], "vocab": rec}  # fmt: skip
        try:
            vocab_fmt.write(self.path, rec, vocab, new)
            fmt.save_json_atomic(self.path / MANIFEST, manifest)
        except BaseException:
            if new is not None:
                fmt.remove(self.path / new)
            raise
        stale = vocab_fmt.files(self._manifest) - vocab_fmt.files(manifest)
        self._manifest, self._segments = manifest, segments
        self._scoring = None
        if vocab is not self._analyzer.vocab:  # pruned: forget the words of dropped terms
            self._analyzer = Analyzer(vocab)
        for name in stale:
            fmt.remove(self.path / name)

    def save_vocabulary(self) -> None:
        """Record the vocabulary's runs where the manifest holds none current (an index
        written before them, or by a library that does not keep them), so the next open
        reads them: one manifest flip that changes no document."""
        if not vocab_fmt.current(self._manifest):
            self._commit(self._segments)

    def collect_garbage(self) -> None:
        """Delete files the manifest does not name: leftovers of an interrupted write or of
        a crash between a manifest flip and the deletion of what it replaced."""
        keep = {MANIFEST} | _files(self._segments) | vocab_fmt.files(self._manifest)
        for entry in self.path.iterdir():
            if entry.name not in keep and entry.name.startswith(("seg-", ".tmp-", "vocab-")):
                fmt.remove(entry)

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
        k = check_k(k)
        return self._scorer().search(
            self._analyzer.analyze_queries([_as_query(query)])[0], k, allowed
        )

    def search_many(
        self,
        queries: Sequence[str],
        k: int,
        *,
        allowed: IntArray | None = None,
        ties: bool = False,
    ) -> list[tuple[FloatArray, IntArray]]:
        """:meth:`search` for each of ``queries`` (analysed in one batch); with ``ties``,
        each result also holds the documents tied with its ``k``-th."""
        k = check_k(k)
        texts = [_as_query(q) for q in queries]
        scorer = self._scorer()
        if len(texts) == 1:  # one query's term ids are the whole analysis: no split
            analysed = [self._analyzer.analyze(texts, grow=False)[0]]
        else:
            analysed = self._analyzer.analyze_queries(texts)
        return [scorer.search(ids, k, allowed, ties) for ids in analysed]

    def score_docs(self, query: str, doc_keys: Sequence[int] | IntArray) -> FloatArray:
        """BM25 scores of ``query`` for the given live documents, for rescoring and fusion.

        Returns:
            ``(len(doc_keys),)`` float32, 0 where a document shares no term with the query.

        Raises:
            InvalidInput: a key is not live.
        """
        keys = as_keys(doc_keys)
        slots, found = self._scorer().view.lookup(keys)
        if not found.all():
            raise InvalidInput(f"doc_keys not in the index: {keys[~found][:5].tolist()}")
        term_ids = self._analyzer.analyze_queries([_as_query(query)])[0]
        return self._scorer().score_slots(term_ids, slots)

    def _scorer(self) -> Scorer:
        if self._scoring is None:
            self._scoring = Scorer(self._segments, self.k1, self.b)
        return self._scoring

    def __len__(self) -> int:
        return self._scorer().view.n_live

    def keys(self) -> IntArray:
        """``(n_docs,)`` int64 keys of the live documents, ascending."""
        return self._scorer().view.sorted_keys.copy()

    def stats(self) -> LexicalStats:
        """Live documents, segments, tombstones and bytes on disk."""
        size = sum(f.stat().st_size for f in self.path.rglob("*") if f.is_file())
        return LexicalStats(
            n_docs=len(self),
            n_segments=len(self._segments),
            n_tombstones=sum(len(s.deleted) for s in self._segments),
            bytes_on_disk=size,
            merged_deletes=int(self._manifest.get("merged_deletes", 0)),
        )

    def check(self) -> None:
        """Re-read every file the manifest names and verify the postings' invariants.

        Raises:
            IndexCorrupt: a file is missing or unreadable, or arrays disagree (counts,
                pointers, doc ids, term frequencies vs lengths, tombstones, duplicate keys,
                the stored vocabulary vs the segments' terms).
        """
        manifest = fmt.read_manifest(self.path)
        vocab_fmt.check(self.path, manifest, *fmt.check_segments(self.path, manifest))


def _files(segments: list[fmt.Segment]) -> set[str]:
    """Names of the files and folders under the index directory that ``segments`` use."""
    return {s.name for s in segments} | {s.tomb_file for s in segments if s.tomb_file}


def _as_query(query: object) -> str:
    if not isinstance(query, str):
        raise InvalidInput(f"a query must be str, got {type(query).__name__}")
    return query
