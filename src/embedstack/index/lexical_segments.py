"""The on-disk segment format of a :class:`~embedstack.index.lexical.LexicalIndex`.

Layout (every array an ``.npy`` file, ``allow_pickle=False``)::

    lexical.json               manifest, replaced atomically; the commit point of every write
    seg-000001/                one immutable segment per add() batch or merge
        segment.json           counts: n_docs, n_terms, n_postings
        keys.npy               (n_docs,) int64      caller's doc keys
        lengths.npy            (n_docs,) int32      tokens per doc after stopword removal
        terms.npy              (bytes,) uint8       UTF-8 stems joined by "\\n", in term order
        term_ids.npy           (n_terms,) int64     the index-wide id of each term (below)
        indptr.npy             (n_terms + 1,) int64 CSR row pointers, term -> postings
        docs.npy               (n_postings,) int32  segment-local doc ids, ascending per term
        tfs.npy                (n_postings,) int32  term frequencies
    seg-000001.del-000007.npy  (n_deleted,) int32   tombstones: segment-local ids, sorted
    vocab-000007.npy           the vocabulary's runs (:mod:`embedstack.index.lexical_vocab`)

Each segment records the index-wide id its writer gave each of its terms (ascending). Where
``lexical.json`` records the vocabulary's runs, opening reads them and each segment's ids,
not its terms (the ids are checked to be ascending ids of stored terms; ``check()`` compares
every term). Otherwise (an index written before the runs, or by a library that does not
keep them) the vocabulary is rebuilt from the segments' terms and ids, and two segments
sharing a term must agree on its id (checked at open). A segment written before term ids
were stored (its manifest entry lacks ``"term_ids": true``) is read by its terms, which
take the ids of the stored vocabulary or new ones; it gets its ids when a merge rewrites
it. Readers of the older layouts ignore ``term_ids.npy`` and the runs.

This module builds, merges, writes, reads and checks segments; it knows nothing of scoring
(:mod:`embedstack.index.lexical_scoring`) or of the write protocol
(:mod:`embedstack.index.lexical`).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from itertools import repeat
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from embedstack._typing import IntArray
from embedstack.errors import IndexCorrupt
from embedstack.index.manifest import fsync_dir, write_text_atomic
from embedstack.index.tokenize import Vocabulary

if TYPE_CHECKING:
    from embedstack.index.lexical_vocab import Stored

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "MANIFEST",
    "LexicalStats",
    "Segment",
    "build_segment",
    "check_segment",
    "check_segments",
    "load_npy",
    "load_segments",
    "merge_segments",
    "read_manifest",
    "remove",
    "save_json_atomic",
    "save_npy",
    "write_segment",
]

FORMAT = "embedstack-lexical"
FORMAT_VERSION = 1
MANIFEST = "lexical.json"


@dataclass(frozen=True)
class LexicalStats:
    """Size of a :class:`LexicalIndex`.

    Attributes:
        n_docs: live (searchable) documents.
        n_segments: segments on disk: O(log n_docs) under the merge policy;
            :meth:`~embedstack.index.lexical.LexicalIndex.compact` brings this to 1.
        n_tombstones: deleted documents whose postings are still on disk.
        merged_deletes: deleted documents that merges dropped since the last
            :meth:`~embedstack.index.lexical.LexicalIndex.compact` (their postings are gone; an
            :class:`~embedstack.index.Index` still stores their other fields' rows).
        bytes_on_disk: total size of the index directory's files, in bytes.
    """

    n_docs: int
    n_segments: int
    n_tombstones: int
    bytes_on_disk: int
    merged_deletes: int = 0


@dataclass
class Segment:
    """One segment in memory (its arrays memory-mapped when loaded for search)."""

    name: str
    keys: IntArray  # (n,) int64
    lengths: npt.NDArray[np.int32]  # (n,)
    gids: IntArray  # (n_terms,) global term id of each local term
    indptr: IntArray  # (n_terms + 1,)
    docs: npt.NDArray[np.int32]  # (n_postings,)
    tfs: npt.NDArray[np.int32]  # (n_postings,)
    deleted: npt.NDArray[np.int32]  # sorted local ids of tombstoned docs
    tomb_file: str | None = None
    stored_ids: bool = True  # term_ids.npy exists (False: a segment of the older layout)
    local: npt.NDArray[np.int32] | None = None  # global term id -> local row, -1 if absent

    def row(self, gid: int) -> int:
        if self.local is None:
            self.local = np.full(int(self.gids.max(initial=-1)) + 1, -1, dtype=np.int32)
            self.local[self.gids] = np.arange(len(self.gids))
        return int(self.local[gid]) if gid < len(self.local) else -1

    def meta(self) -> dict[str, Any]:
        return {"name": self.name, "n_docs": len(self.keys), "n_terms": len(self.gids),
                "n_postings": len(self.docs), "tombstones": self.tomb_file,
                "n_tombstones": len(self.deleted), "term_ids": self.stored_ids}  # fmt: skip


def save_npy(path: Path, array: np.ndarray) -> None:
    """Write ``array`` to ``path`` (fsynced; the caller renames or fsyncs the directory)."""
    with open(path, "wb") as f:
        np.save(f, np.ascontiguousarray(array), allow_pickle=False)
        f.flush()
        os.fsync(f.fileno())


def save_json_atomic(path: Path, obj: dict[str, Any]) -> None:
    """Atomically replace ``path`` with ``obj`` as JSON (the manifest flip)."""
    write_text_atomic(path, json.dumps(obj, indent=1))


def load_npy(path: Path, dtype: type, mmap: bool = False) -> np.ndarray:
    try:
        arr = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise IndexCorrupt(f"cannot read {path}: {exc}") from exc
    if arr.ndim != 1 or arr.dtype != np.dtype(dtype):
        raise IndexCorrupt(f"{path} holds {arr.dtype}{arr.shape}, expected 1-d {np.dtype(dtype)}")
    return arr


def remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def build_segment(name: str, keys: IntArray, lengths: IntArray, term_ids: IntArray) -> Segment:
    """CSR postings of one batch: ``term_ids`` of all docs concatenated, ``lengths`` per doc."""
    n = len(keys)
    owner = np.repeat(np.arange(n, dtype=np.int64), lengths)
    pairs, tfs = np.unique(term_ids * n + owner, return_counts=True)
    pair_terms = pairs // n
    gids, starts = np.unique(pair_terms, return_index=True)
    return Segment(
        name=name,
        keys=keys.copy(),
        lengths=lengths.astype(np.int32),
        gids=gids,
        indptr=np.append(starts, len(pairs)).astype(np.int64),
        docs=(pairs - pair_terms * n).astype(np.int32),
        tfs=tfs.astype(np.int32),
        deleted=np.zeros(0, np.int32),
    )


def merge_segments(name: str, segments: list[Segment]) -> Segment | None:
    """One segment holding the live documents of ``segments`` in order, or None if none.

    The postings are placed by a counting sort on the term: each segment's rows are already
    grouped by term with documents ascending, and live documents keep their order across
    segments, so each kept posting goes to its term's next free place, segment after
    segment. Memory is the output plus one segment's temporaries (an ``argsort`` of every
    posting at once peaked at 6.2 GB merging a million documents' 80M postings).
    """
    sizes = [len(s.keys) for s in segments]
    offsets = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)]).astype(np.int64)
    keys = np.concatenate([s.keys for s in segments]) if segments else np.zeros(0, np.int64)
    live = np.ones(len(keys), np.bool_)
    for seg, base in zip(segments, offsets.tolist(), strict=False):
        live[base + seg.deleted] = False
    n_live = int(live.sum())
    if n_live == 0:
        return None
    remap = np.full(len(keys), -1, np.int64)
    remap[live] = np.arange(n_live)
    terms = np.unique(np.concatenate([s.gids for s in segments]))
    kept = []  # per segment: (term index of each kept posting, new doc ids, tfs)
    counts = np.zeros(len(terms), np.int64)
    for seg, base in zip(segments, offsets.tolist(), strict=False):
        docs = remap[seg.docs.astype(np.int64) + base]
        keep = docs >= 0
        row_terms = np.searchsorted(terms, seg.gids).astype(np.int32)  # < 2**31 terms
        term = np.repeat(row_terms, np.diff(seg.indptr))[keep]
        seg_counts = np.bincount(term, minlength=len(terms))
        counts += seg_counts
        kept.append((term, seg_counts, docs[keep].astype(np.int32), np.asarray(seg.tfs)[keep]))
        del docs, keep
    indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    out_docs = np.empty(int(indptr[-1]), np.int32)
    out_tfs = np.empty(int(indptr[-1]), np.int32)
    cursor = indptr[:-1].copy()  # each term's next free place
    while kept:
        term, seg_counts, docs, tfs = kept.pop(0)
        firsts = np.concatenate([[0], np.cumsum(seg_counts)[:-1]])  # term's first in segment
        dest = cursor[term] + (np.arange(len(term), dtype=np.int64) - firsts[term])
        out_docs[dest] = docs
        out_tfs[dest] = tfs
        cursor += seg_counts
        del term, docs, tfs, dest
    present = counts > 0
    lengths = np.concatenate([s.lengths for s in segments])[live]
    return Segment(
        name=name,
        keys=keys[live],
        lengths=lengths.astype(np.int32),
        gids=terms[present],
        indptr=np.concatenate([[0], np.cumsum(counts[present])]).astype(np.int64),
        docs=out_docs,
        tfs=out_tfs,
        deleted=np.zeros(0, np.int32),
    )


def write_segment(root: Path, seg: Segment, vocab: Vocabulary) -> None:
    """Write ``seg`` to ``root/<seg.name>`` via a temporary directory and a rename."""
    final, tmp = root / seg.name, root / f".tmp-{seg.name}"
    remove(tmp)
    remove(final)  # not in the manifest (names are never reused): left by a crashed write
    try:
        tmp.mkdir()
        terms = "\n".join(vocab.terms_of(seg.gids)).encode("utf-8")
        arrays: dict[str, np.ndarray] = {
            "keys": seg.keys,
            "lengths": seg.lengths,
            "terms": np.frombuffer(terms, dtype=np.uint8),
            "term_ids": seg.gids.astype(np.int64),
            "indptr": seg.indptr,
            "docs": seg.docs,
            "tfs": seg.tfs,
        }
        for fname, arr in arrays.items():
            save_npy(tmp / f"{fname}.npy", arr)
        meta = {k: v for k, v in seg.meta().items() if k.startswith("n_") and "tomb" not in k}
        with open(tmp / "segment.json", "w", encoding="utf-8") as f:
            json.dump({"format": FORMAT, **meta}, f)
            f.flush()
            os.fsync(f.fileno())
        fsync_dir(tmp)
        os.rename(tmp, final)
        fsync_dir(root)
    except BaseException:
        remove(tmp)
        raise


def read_manifest(path: Path) -> dict[str, Any]:
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


def load_segments(
    root: Path, metas: list[dict[str, Any]], *, mmap: bool, stored: Stored | None = None
) -> tuple[list[Segment], Vocabulary]:
    """Load the segments ``metas`` names and the vocabulary their term ids make up: the
    ``stored`` one (:mod:`embedstack.index.lexical_vocab`), whose ids the segments' must be,
    or, without it, the one rebuilt from the segments' terms.

    Raises:
        IndexCorrupt: a file is missing or malformed, sizes disagree, or two segments give
            one term two ids (or one id two terms), or a segment's ids are not stored ones.
    """
    loaded = [_load_segment(root, meta, mmap=mmap, terms=stored is None) for meta in metas]
    if stored is not None:
        vocab = stored.vocab
        for seg, terms in loaded:
            if not seg.stored_ids:  # the older layout: ids of its terms, stored with them
                seg.gids = np.fromiter(map(vocab.ids.get, terms, repeat(-1)), np.int64, len(terms))
            if not stored.check_ids(seg.gids) if seg.stored_ids else bool(np.any(seg.gids < 0)):
                raise IndexCorrupt(f"{root / seg.name}: term ids the vocabulary does not hold")
        return [seg for seg, _ in loaded], vocab
    try:
        vocab = Vocabulary.from_ids((s.gids, terms) for s, terms in loaded if s.stored_ids)
    except ValueError as exc:
        raise IndexCorrupt(f"{root}: {exc}") from exc
    for seg, terms in loaded:
        if not seg.stored_ids:  # the older layout: ids from the terms
            seg.gids = vocab.add_many(terms)
    return [seg for seg, _ in loaded], vocab


def _load_segment(
    root: Path, meta: dict[str, Any], *, mmap: bool, terms: bool
) -> tuple[Segment, list[str]]:
    """A segment and its terms (read only with ``terms`` or for a segment of the older
    layout, which comes with empty ``gids``), checking that array sizes agree with ``meta``
    and each other."""
    try:
        name, n_docs, n_terms = meta["name"], meta["n_docs"], meta["n_terms"]
        n_postings, tomb_file = meta["n_postings"], meta["tombstones"]
        stored_ids = meta.get("term_ids", False) is True
    except (KeyError, TypeError) as exc:
        raise IndexCorrupt(f"{root / MANIFEST}: malformed segment entry {meta!r}") from exc
    d = root / name
    keys = load_npy(d / "keys.npy", np.int64)
    lengths = load_npy(d / "lengths.npy", np.int32)
    gids = load_npy(d / "term_ids.npy", np.int64) if stored_ids else np.zeros(0, np.int64)
    indptr = load_npy(d / "indptr.npy", np.int64)
    docs = load_npy(d / "docs.npy", np.int32, mmap=mmap)
    tfs = load_npy(d / "tfs.npy", np.int32, mmap=mmap)
    deleted = (
        load_npy(root / tomb_file, np.int32) if tomb_file is not None else np.zeros(0, np.int32)
    )
    words: list[str] = []
    if terms or not stored_ids:
        raw = load_npy(d / "terms.npy", np.uint8)
        try:
            words = raw.tobytes().decode("utf-8").split("\n") if n_terms else []
        except UnicodeDecodeError as exc:
            raise IndexCorrupt(f"{d / 'terms.npy'} is not UTF-8") from exc
    sizes_ok = (
        len(keys) == len(lengths) == n_docs
        and (len(words) == n_terms if terms or not stored_ids else True)
        and (not stored_ids or len(gids) == n_terms)
        and len(indptr) == n_terms + 1
        and indptr[0] == 0
        and indptr[-1] == len(docs) == len(tfs) == n_postings
        and len(deleted) == meta.get("n_tombstones", len(deleted))
    )
    if not sizes_ok:
        raise IndexCorrupt(f"{d}: array sizes disagree with each other or with {MANIFEST}")
    seg = Segment(name, keys, lengths, gids, indptr, docs, tfs, deleted, tomb_file, stored_ids)
    return seg, words


def check_segments(root: Path, manifest: dict[str, Any]) -> tuple[Vocabulary, IntArray]:
    """Re-read every segment ``manifest`` names, check each (:func:`check_segment`) and
    that no key is live twice; returns the vocabulary their terms and ids make up and the
    ids that segments with stored ids use.

    Raises:
        IndexCorrupt: a file is missing or unreadable, or arrays disagree.
    """
    segments, vocab = load_segments(root, manifest["segments"], mmap=False)
    live_keys = [np.zeros(0, np.int64)]
    for seg in segments:
        check_segment(root / seg.name, seg)
        alive = np.ones(len(seg.keys), np.bool_)
        alive[seg.deleted] = False
        live_keys.append(seg.keys[alive])
    keys = np.concatenate(live_keys)
    if len(np.unique(keys)) != len(keys):
        raise IndexCorrupt(f"{root}: a doc key is live in two segments")
    stored = [s.gids for s in segments if s.stored_ids]
    return vocab, np.unique(np.concatenate([np.zeros(0, np.int64), *stored]))


def check_segment(d: Path, seg: Segment) -> None:
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


def _row_starts(seg: Segment) -> npt.NDArray[np.bool_]:
    """``(n_postings,)`` True where a posting is the first of its term's row."""
    starts = np.zeros(len(seg.docs), np.bool_)
    starts[seg.indptr[:-1][np.diff(seg.indptr) > 0]] = True
    return starts
