"""The write path of an :class:`~embedstack.index.Index` over its fields: add/upsert and
delete, with rollback written once for every field (see the commit protocol in
:mod:`embedstack.index.core`)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from embedstack._typing import IntArray
from embedstack.errors import InvalidInput
from embedstack.index import _merge
from embedstack.index._embedding import Chunker
from embedstack.index._types import AddResult
from embedstack.index._validate import NewDoc, check_ids, validate_batches, validate_docs
from embedstack.index.dense import segment_name
from embedstack.index.docstore import DocStore
from embedstack.index.fields.base import Batch, Field, SegmentRows, Snapshot

__all__ = [
    "Plan",
    "commit",
    "delete_batch",
    "discard",
    "keys_of",
    "plan",
    "plan_many",
    "plan_valid",
    "write_batch",
]


@dataclass(frozen=True)
class Plan:
    """What an add or upsert will write: the new or changed documents, the keys of the
    stored documents they replace, and how many were unchanged."""

    changed: list[NewDoc]
    replaced: list[int]
    unchanged: int

    def result(self, chunks: int) -> AddResult:
        updated = len(self.replaced)
        return AddResult(added=len(self.changed) - updated, updated=updated,
                         unchanged=self.unchanged, chunks=chunks)  # fmt: skip


def plan(store: DocStore, docs: Iterable[dict[str, Any]], *, replace: bool) -> Plan:
    """Validate a batch against the store (nothing is written).

    A document whose content hash equals the stored one is unchanged (not re-embedded).

    Raises:
        InvalidInput: a bad item, an id repeated in the batch, or (``replace`` False) an id
            already in the index.
    """
    return plan_valid(store, validate_docs(docs), replace=replace)


def plan_valid(store: DocStore, batch: list[NewDoc], *, replace: bool) -> Plan:
    """:func:`plan` of a batch already validated."""
    existing = store.existing([d.id for d in batch])
    if not replace:
        for doc in batch:
            if doc.id in existing:
                raise InvalidInput(
                    f"document {doc.position}: id {doc.id!r} is already in the index; use "
                    "upsert() to replace it"
                )
    changed = [d for d in batch if existing.get(d.id, (0, ""))[1] != d.content_hash]
    replaced = [existing[d.id][0] for d in changed if d.id in existing]
    return Plan(changed, replaced, len(batch) - len(changed))


def plan_many(store: DocStore, batches: Sequence[Iterable[dict[str, Any]]]) -> list[Plan]:
    """:func:`plan` (upsert) of several batches written as one; no id may be in two, so
    each is planned against the stored state exactly as if the others were written first.

    Raises:
        InvalidInput: a bad batch (``batch 2: ...``), or an id in two batches.
    """
    return [plan_valid(store, b, replace=True) for b in validate_batches(batches)]


def commit(
    store: DocStore,
    fields: Sequence[Field],
    chunker: Chunker,
    snapshot: Snapshot,
    use: Callable[[Snapshot], None],
    plans: Sequence[Plan],
) -> list[AddResult]:
    """Write the changed documents of every plan as ONE batch (:func:`write_batch`) and
    switch the fields to the new snapshot with ``use``; each plan's own result (its
    documents' chunks counted exactly). On failure the fields are switched back to
    ``snapshot`` (what SQLite still registers) and the error propagates."""
    changed = [d for p in plans for d in p.changed]
    counts = np.zeros(0, dtype=np.int64)
    if changed:
        replaced = [k for p in plans for k in p.replaced]
        try:
            counts, new = write_batch(store, fields, chunker, snapshot, changed, replaced)
        except BaseException:
            use(snapshot)  # fields re-sync with what SQLite still registers
            raise
        use(new)
    results, start = [], 0
    for p in plans:
        stop = start + len(p.changed)
        results.append(p.result(int(counts[start:stop].sum())))
        start = stop
    return results


def keys_of(store: DocStore, ids: Iterable[str]) -> list[int]:
    """The keys of documents to delete.

    Raises:
        InvalidInput: an id not in the index (up to 5 named).
    """
    wanted = check_ids(ids)
    existing = store.existing(wanted)
    missing = [i for i in wanted if i not in existing]
    if missing:
        raise InvalidInput(f"ids not in the index: {missing[:5]}; nothing was deleted")
    return [existing[i][0] for i in wanted]


def discard(fields: Sequence[Field], segments: Sequence[int], keys: IntArray) -> None:
    """Roll back uncommitted data of ``segments`` and ``keys`` in every field.

    Every field is asked, whether or not it got to write: a failure part-way leaves data in
    some fields only. A field that fails to discard does not stop the others; what remains
    is removed by the next writer's recovery.
    """
    for field in fields:
        try:
            field.discard(segments, keys)
        except Exception:  # noqa: BLE001 - recovery at the next open removes the rest
            continue


def write_batch(
    store: DocStore,
    fields: Sequence[Field],
    chunker: Chunker,
    snapshot: Snapshot,
    batch: Sequence[NewDoc],
    replaced: list[int],
) -> tuple[IntArray, Snapshot]:
    """Encode, write and commit one batch; returns its chunk count per document (in
    ``batch`` order) and the new snapshot.

    Every field prepares (encodes) first; then SQLite reserves the keys and the segment
    number, each field writes uncommitted, the fields write the merges the policy asks for
    (:mod:`embedstack.index._merge`), and ONE SQLite transaction commits the batch and its
    merges. A failure anywhere before that commit discards the batch and the merged
    segments from every field.
    """
    if not batch:
        return np.zeros(0, dtype=np.int64), snapshot
    chunks = chunker.chunks([d.title for d in batch], [d.text for d in batch])
    work = Batch(
        texts=[d.full_text for d in batch],
        chunks=[c.embed for c in chunks],
        chunk_doc=np.asarray([c.doc for c in chunks], dtype=np.int64),
    )
    prepared = [field.prepare(work) for field in fields]
    first, seg_id = store.reserve(len(batch))
    keys = np.arange(first, first + len(batch), dtype=np.int64)
    gone = np.asarray(replaced, dtype=np.int64)
    live = np.union1d(np.setdiff1d(snapshot.live, gone), keys).astype(np.int64)
    rows = SegmentRows(seg_id, len(chunks), work.row_keys(keys))
    merge: _merge.MergePlan | None = None
    try:
        for field, data in zip(fields, prepared, strict=True):
            field.write(work, data, seg_id, keys)
        merge = _merge.plan(store, [*snapshot.segments, rows], live)
        if merge.rewrites:
            for field in fields:
                field.rewrite(merge.rewrites)
        with store.transaction():
            store.delete_keys(replaced)
            store.register_segment(seg_id, f"{segment_name(seg_id)}.npy", len(chunks))
            store.insert_docs(
                (int(k), d.id, d.title, d.text, d.metadata_json, d.content_hash)
                for k, d in zip(keys, batch, strict=True)
            )
            store.insert_chunks(
                (int(keys[c.doc]), c.chunk_no, c.start, c.end, seg_id, row)
                for row, c in enumerate(chunks)
            )
            _merge.commit(store, merge)
    except BaseException:
        discard(fields, [seg_id, *(merge.new if merge else [])], keys)
        raise
    if len(gone):
        for field in fields:
            field.remove(gone)
    _merge.release(fields, merge)
    return np.bincount(work.chunk_doc, minlength=len(batch)).astype(np.int64), merge.snapshot


def delete_batch(
    store: DocStore, fields: Sequence[Field], snapshot: Snapshot, keys: list[int]
) -> Snapshot:
    """Delete documents: the SQLite transaction first (the commit point), then each field
    drops them; returns the new snapshot."""
    with store.transaction():
        store.delete_keys(keys)
    gone = np.asarray(keys, dtype=np.int64)
    for field in fields:
        field.remove(gone)
    return Snapshot(np.setdiff1d(snapshot.live, gone).astype(np.int64), snapshot.segments)
