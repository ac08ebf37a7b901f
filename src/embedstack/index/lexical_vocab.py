"""The persisted vocabulary of a :class:`~embedstack.index.lexical.LexicalIndex`: every term
id of the index in a few append-only run files, so that opening reads one list of terms
instead of every segment's (issue 18: open in under a second at a million documents).

Layout, in the lexical folder beside the segments::

    vocab-000007.npy   (bytes,) uint8   UTF-8 terms of ids start .. start + n_terms - 1,
                                        joined by "\\n"; "" for an id no term holds (a hole)

and in ``lexical.json``::

    "vocab": {"generation": 7, "runs": [{"file": "vocab-000003.npy", "start": 0,
                                         "n_terms": 51200}, ...]}

Runs are contiguous from id 0 and cover every id the segments use. Ids are only ever
appended (a write's new terms take the next ids), so a write adds one run holding its new
terms; a run is then merged with the one before it while that one is less than twice its
size, so the runs of ``V`` terms number O(log V) and each term is rewritten O(log V) times.
:meth:`~embedstack.index.lexical.LexicalIndex.compact` writes a single run in which the
terms no segment uses any more become holes.

A write's run is written under a fresh name, fsynced and renamed before the manifest flip
that names it, and the runs it replaces are deleted after the flip: a crash leaves the
previous state (the new run an unreferenced leftover) or the new one. ``generation`` is the
manifest generation of the write that recorded the runs; every write of this library records
them again. A writer that does not know the runs (a library before them) keeps the record
but bumps the generation: the record is then ignored, the vocabulary is rebuilt from the
segments' terms (``terms.npy`` and ``term_ids.npy``, still written for such readers), and
the next write of this library, or its next open as a writer, records runs again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from embedstack.errors import IndexCorrupt
from embedstack.index.lexical_segments import MANIFEST, load_npy, load_segments
from embedstack.index.manifest import fsync_dir, save_npy
from embedstack.index.tokenize import Vocabulary

__all__ = ["PREFIX", "Stored", "check", "current", "files", "load", "record", "write"]

PREFIX = "vocab-"


class Stored:
    """A vocabulary read from its runs, with ``known``: ``(len(vocab),)`` bool, False at
    holes, so that segments' ids can be checked against it without a Python loop."""

    def __init__(self, vocab: Vocabulary, known: npt.NDArray[np.bool_]) -> None:
        self.vocab = vocab
        self.known = known

    def check_ids(self, gids: np.ndarray) -> bool:
        """Whether ``gids`` are strictly ascending ids of stored terms (as every segment
        this library writes has them)."""
        if len(gids) == 0:
            return True
        in_range = int(gids[0]) >= 0 and int(gids[-1]) < len(self.known)
        return in_range and bool(np.all(np.diff(gids) > 0)) and bool(self.known[gids].all())


def files(manifest: dict[str, Any]) -> set[str]:
    """The run files ``manifest`` names (stale or not)."""
    rec = manifest.get("vocab")
    if not isinstance(rec, dict) or not isinstance(rec.get("runs"), list):
        return set()
    return {r["file"] for r in rec["runs"] if isinstance(r, dict) and "file" in r}


def current(manifest: dict[str, Any]) -> bool:
    """Whether ``manifest`` records runs written at its own generation (not stale)."""
    rec = manifest.get("vocab")
    return isinstance(rec, dict) and rec.get("generation") == manifest["generation"]


def load(root: Path, manifest: dict[str, Any]) -> Stored | None:
    """The vocabulary ``manifest``'s runs hold; None when it records none or they are stale
    (the caller then rebuilds it from the segments).

    Raises:
        IndexCorrupt: a run is missing or unreadable, the runs are not contiguous from 0, a
            run holds a wrong number of terms, or a term has two ids.
    """
    if not current(manifest):
        return None
    raws, start = [], 0
    try:
        for run in manifest["vocab"]["runs"]:
            if run["start"] != start or not run["n_terms"] > 0:
                raise IndexCorrupt(f"{root / MANIFEST}: vocabulary runs are not contiguous")
            raws.append((load_npy(root / run["file"], np.uint8), int(run["n_terms"])))
            start += int(run["n_terms"])
    except (KeyError, TypeError) as exc:
        raise IndexCorrupt(f"{root / MANIFEST}: malformed vocabulary record") from exc
    terms, known = [], []
    for data, n in raws:
        try:
            part = data.tobytes().decode("utf-8").split("\n")
        except UnicodeDecodeError as exc:
            raise IndexCorrupt(f"{root}: a vocabulary run is not UTF-8") from exc
        if len(part) != n:
            raise IndexCorrupt(f"{root}: a vocabulary run holds {len(part)} terms, not {n}")
        terms += part
        known.append(_lengths(data) > 0)
    try:
        vocab = Vocabulary.from_terms(terms)
    except ValueError as exc:
        raise IndexCorrupt(f"{root}: {exc}") from exc
    return Stored(vocab, np.concatenate(known) if known else np.zeros(0, np.bool_))


def _lengths(data: np.ndarray) -> npt.NDArray[np.int64]:
    """Byte length of each ``"\\n"``-separated term of a run."""
    ends = np.append(np.flatnonzero(data == 10), len(data))
    return np.diff(ends, prepend=-1) - 1


def record(
    manifest: dict[str, Any], vocab: Vocabulary, generation: int, *, prune: np.ndarray | None
) -> tuple[dict[str, Any], Vocabulary, str | None]:
    """What to record for ``vocab`` at ``generation``: the runs (those of a current record
    kept, its missing tail added, tail runs merged as the module docstring says), the
    vocabulary they hold, and the name of the one run to write (None: nothing new). With
    ``prune`` (the ids the segments use), one run in which every other id is a hole, and
    that smaller vocabulary. Writes nothing (:func:`write` does)."""
    name = f"{PREFIX}{generation:06d}.npy"
    if prune is not None:
        keep = np.zeros(len(vocab), np.bool_)
        keep[prune] = True
        column = np.array(vocab.terms, dtype=object)
        column[~keep] = ""
        vocab = Vocabulary.from_terms(column.tolist())
        one: list[dict[str, Any]] = [{"file": name, "start": 0, "n_terms": len(vocab)}]
        if not len(vocab):
            return {"generation": generation, "runs": []}, vocab, None
        return {"generation": generation, "runs": one}, vocab, name
    runs: list[dict[str, Any]] = (
        [dict(r) for r in manifest["vocab"]["runs"]] if current(manifest) else []
    )
    covered = runs[-1]["start"] + runs[-1]["n_terms"] if runs else 0
    if len(vocab) <= covered:
        return {"generation": generation, "runs": runs}, vocab, None
    runs.append({"file": name, "start": covered, "n_terms": len(vocab) - covered})
    while len(runs) >= 2 and runs[-2]["n_terms"] < 2 * runs[-1]["n_terms"]:
        last = runs.pop()
        runs[-1] = {"file": name, "start": runs[-1]["start"],
                    "n_terms": runs[-1]["n_terms"] + last["n_terms"]}  # fmt: skip
    return {"generation": generation, "runs": runs}, vocab, name


def write(root: Path, rec: dict[str, Any], vocab: Vocabulary, new: str | None) -> None:
    """Store ``rec``'s run ``new`` (if any) durably: fsynced, renamed in place, the folder
    fsynced, so that a manifest naming it never outlives it."""
    if new is None or not rec["runs"]:
        return
    run = rec["runs"][-1]  # the new run is always the last
    lo, hi = run["start"], run["start"] + run["n_terms"]
    data = "\n".join(vocab.terms[lo:hi]).encode("utf-8")
    save_npy(root / new, np.frombuffer(data, dtype=np.uint8))
    fsync_dir(root)


def check(root: Path, manifest: dict[str, Any], derived: Vocabulary, ids: np.ndarray) -> None:
    """``check()``: the stored runs (when current) give each of ``ids`` (those segments
    with stored ids use) the term ``derived`` (rebuilt from the segments' terms) gives it,
    and hold every term of the segments as open reads them.

    Raises:
        IndexCorrupt: they disagree, or a run is unreadable.
    """
    stored = load(root, manifest)
    if stored is None:
        return
    load_segments(root, manifest["segments"], mmap=True, stored=stored)
    terms = stored.vocab.terms
    for tid in ids.tolist():
        if tid >= len(terms) or terms[tid] != derived.terms[tid]:
            raise IndexCorrupt(f"{root}: the stored vocabulary gives id {tid} another term")
