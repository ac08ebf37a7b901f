"""Checks and crash recovery of a :class:`~embedstack.index.backends.milvus.MilvusStore`
(see its module docstring for the write protocol they rely on)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from embedstack.encoders.sparse_vectors import SparseVectors
from embedstack.errors import IndexCorrupt, InvalidInput
from embedstack.index.backends import milvus_bm25 as bm
from embedstack.index.backends import milvus_sparse
from embedstack.index.backends.base import StoredDoc, StoreStats
from embedstack.index.backends.milvus_client import MAX_ID, MAX_VARCHAR
from embedstack.index.backends.milvus_rows import REGISTRY, registered

if TYPE_CHECKING:
    from embedstack.index.backends.milvus import MilvusStore

__all__ = ["check", "check_sizes", "recount", "recover", "sparse_rows", "stats"]


def _utf8_len(value: str) -> int:
    return len(value.encode("utf-8"))


def check_sizes(docs: Sequence[StoredDoc]) -> None:
    """Raise :class:`InvalidInput` for a document field over Milvus's VARCHAR caps."""
    for i, d in enumerate(docs):
        for what, value, cap in (("id", d.id, MAX_ID), ("title", d.title, MAX_VARCHAR),
                                 ("text", d.text, MAX_VARCHAR),
                                 ("metadata", d.metadata_json, MAX_VARCHAR)):  # fmt: skip
            if _utf8_len(value) > cap:
                raise InvalidInput(
                    f"document {i} ({d.id[:80]!r}): its {what} is {_utf8_len(value)} bytes "
                    f"of UTF-8; a Milvus index stores at most {cap} (a VARCHAR field): "
                    "split the document"
                )


def sparse_rows(manifest: dict[str, Any], n_chunks: int,
                sparse: SparseVectors | None) -> list[dict[int, float]] | None:  # fmt: skip
    """The ``sp`` values of a batch's chunks (None for an index without sparse vectors).

    Raises:
        InvalidInput: SPLADE vectors missing for a sparse index, given for another, or not
            one row per chunk.
    """
    if not manifest.get("sparse"):
        if sparse is not None:
            raise InvalidInput("this index stores no sparse vectors: write without sparse=")
        return None
    if sparse is None or len(sparse) != n_chunks:
        got = "none" if sparse is None else f"{len(sparse)} rows"
        raise InvalidInput(f"the batch's SPLADE vectors ({got}) must have one row per chunk "
                           f"({n_chunks})")  # fmt: skip
    return milvus_sparse.chunk_rows(sparse)


def stats(store: MilvusStore) -> StoreStats:
    """The index's sizes: counts from the state row, bytes of a milvus-lite file (0 on a
    server)."""
    state = store._state()
    size = 0
    if store.target.lite:
        p = Path(store.target.uri)
        files = [p] if p.is_file() else [f for f in p.rglob("*") if f.is_file()]
        size = sum(f.stat().st_size for f in files)
    return StoreStats(n_docs=int(state["n_docs"]), n_chunks=int(state["n_chunks"]),
                      n_deleted=0, bytes={"milvus": size, "total": size},
                      segments=0)  # fmt: skip


def recount(store: MilvusStore, state: dict[str, Any]) -> dict[int, int]:
    """Document frequencies of the visible rows."""
    df: Counter[int] = Counter()
    for r in store._query(store.docs_c, store._visible(state), ["tf"]):
        df.update(int(t) for t in r["tf"] if int(t) != bm.NO_TERMS)
    return dict(df)


def recover(store: MilvusStore) -> None:
    """Undo what a crashed writer left: rows above the committed generation and their hide
    rows, document frequencies recounted; then finish a pending hide list. A no-op when the
    state is clean."""
    state = store._state()
    if state.get("inflight") is not None:
        top = int(state["committed"])
        store.client.delete(store.chunks_c, filter=f"gen > {top}")
        store.client.delete(store.docs_c, filter=f"gen > {top}")
        store.client.delete(store.meta_c, filter=f'pk like "hide:{top + 1}:%"')
        counted = recount(store, state)
        store.terms.set_df(counted, set(store.terms.all_dfs()) - set(counted))
        state = {**state, "inflight": None}
        store._put_state(state)
    if state.get("hide"):
        store._clean(state)


def check(store: MilvusStore) -> None:
    """Verify the visible rows against the state row and the document frequencies.

    Raises:
        IndexCorrupt: an unfinished write, documents stored twice or missing from the id
            registry, counts or lengths that differ from the state's, chunks without
            documents (or the reverse), or document frequencies that differ from the stored
            documents'.
    """
    state = store._state()
    where = store.location
    if state.get("inflight") is not None:
        raise IndexCorrupt(f"{where}: a write to generation {state['inflight']} did not "
                           "finish; open the index for writing to recover it")  # fmt: skip
    visible = store._visible(state)
    docs = store._query(store.docs_c, visible, ["doc_id", "dl", "tf"])
    chunks = store._query(store.chunks_c, visible, ["doc_id"])
    ids = Counter(r["doc_id"] for r in docs)
    problems = []
    if any(n > 1 for n in ids.values()):
        problems.append(f"documents stored twice: {[i for i, n in ids.items() if n > 1][:5]}")
    if len(docs) != state["n_docs"] or len(chunks) != state["n_chunks"]:
        problems.append(f"{len(docs)} documents and {len(chunks)} chunks stored, the state "
                        f"says {state['n_docs']} and {state['n_chunks']}")  # fmt: skip
    orphans = {r["doc_id"] for r in chunks} - set(ids)
    if orphans or set(ids) - {r["doc_id"] for r in chunks}:
        problems.append(f"chunks and documents disagree: {sorted(orphans)[:5]}")
    if state.get(REGISTRY):
        missing = set(ids) - set(registered(store.client, store.meta_c, list(ids)))
        if missing:
            problems.append(f"documents missing from the id registry: {sorted(missing)[:5]}")
    if sum(int(r["dl"]) for r in docs) != state["sum_dl"]:
        problems.append("the total BM25 length differs from the state's")
    stored = {t: n for t, n in store.terms.all_dfs().items() if n}
    if stored != recount(store, state):
        problems.append("document frequencies differ from the stored documents'")
    if problems:
        raise IndexCorrupt(f"{where}: " + "; ".join(problems))
