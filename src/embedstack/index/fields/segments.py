"""What the three local segment-file fields (dense, SPLADE, token vectors) share.

Each stores, under its own folder of the index directory, one immutable file set per
segment number, with exactly the rows of that segment (chunk row ``i`` is row ``i``). A file
set is useless until SQLite registers its segment, so discarding, recovering and releasing
are all "delete the files of these segment numbers" (or "of every segment but these").
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from pathlib import Path
from typing import Any

from embedstack._typing import IntArray
from embedstack.index.fields.base import FieldStats, Snapshot
from embedstack.index.manifest import fsync_dir, remove_all_but

__all__ = ["SegmentFiles", "dir_bytes"]


def dir_bytes(path: Path) -> int:
    """Total size of the files under ``path`` (0 when it does not exist)."""
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else 0


class SegmentFiles:
    """Base of the local segment-file fields: file bookkeeping by segment number.

    Subclasses set :attr:`name`, implement :meth:`files` and keep loaded segments in
    :attr:`loaded` (segment numbers are never reused, so entries stay valid until released).
    """

    name: str

    def __init__(self, root: Path, encoder: Any = None) -> None:
        self.root = root
        self.loaded: dict[int, object] = {}
        self._encoder = encoder

    @property
    def encoder_loaded(self) -> bool:
        """Whether the field's own encoder is loaded (a recorded one loads when first
        needed)."""
        return self._encoder is not None

    def _lazy_encoder(
        self,
        record: dict[str, Any],
        resolve: Callable[[str, dict[str, Any] | None], Any],
        check: Callable[[Any, dict[str, Any], Path], None],
    ) -> Any:
        """The encoder given at open, else the one ``record`` names (``resolve``d with its
        recorded options and ``check``ed against it), loaded once."""
        if self._encoder is None:
            encoder = resolve(record["name"], record.get("options"))
            check(encoder, record, self.root.parent)
            self._encoder = encoder
        return self._encoder

    def files(self, segment: int) -> list[str]:
        """File names of ``segment`` (every file it may have)."""
        raise NotImplementedError

    def _unlink(self, segments: Sequence[int]) -> None:
        for seg in segments:
            self.loaded.pop(seg, None)
            for name in self.files(seg):
                (self.root / name).unlink(missing_ok=True)

    def discard(self, segments: Sequence[int], keys: IntArray) -> None:
        self._unlink(segments)

    def remove(self, keys: IntArray) -> None:
        """Nothing to do: a row is live when SQLite points a chunk at it."""

    def _kept(self) -> set[str]:
        """Files of the field's folder that are not per-segment but kept by recovery."""
        return set()

    def close(self) -> None:
        """Nothing to flush: every write is durable when it returns."""

    def recover(self, snapshot: Snapshot) -> None:
        registered = {seg.id for seg in snapshot.segments}
        keep = {n for seg in registered for n in self.files(seg)} | self._kept()
        remove_all_but(self.root, keep)
        self.loaded = {k: v for k, v in self.loaded.items() if k in registered}

    def release(self, segments: Sequence[int], *, reclaim: bool = True) -> None:
        self._unlink(segments)
        if self.root.is_dir():
            fsync_dir(self.root)

    def version(self) -> Hashable:
        return None

    def stats(self) -> FieldStats:
        return FieldStats({self.name: dir_bytes(self.root)})

    def _retain(self, snapshot: Snapshot) -> None:
        """Forget loaded segments that ``snapshot`` no longer registers."""
        ids = {seg.id for seg in snapshot.segments}
        self.loaded = {k: v for k, v in self.loaded.items() if k in ids}
