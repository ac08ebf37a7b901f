"""The add/upsert write path of an :class:`Index`: chunk, embed, write, commit."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from embedstack import vectors
from embedstack._typing import FloatArray
from embedstack.encoders.splade import SparseVectors
from embedstack.errors import DimensionMismatch
from embedstack.index import dense, late, late_model
from embedstack.index import sparse as sparse_index
from embedstack.index._state import State
from embedstack.index._validate import NewDoc
from embedstack.index.core import Index

__all__ = ["write_batch"]


def _embed(index: Index, texts: list[str]) -> FloatArray:
    emb = np.asarray(index.encoder.encode_documents(texts), dtype=np.float32)
    full = int(index.manifest["encoder"]["full_dim"])
    if emb.shape != (len(texts), full):
        raise DimensionMismatch(
            f"the encoder returned {emb.shape}, expected ({len(texts)}, {full})"
        )
    return vectors.truncate(emb, index.dim) if index.dim != full else emb


def _sparse_embed(index: Index, texts: list[str]) -> SparseVectors:
    vecs = sparse_index.encoder_of(index).encode_documents(texts)
    vocab = int(index.manifest["sparse"]["vocab_size"])
    if len(vecs) != len(texts) or vecs.vocab_size != vocab:
        raise DimensionMismatch(
            f"the sparse encoder returned {len(vecs)} rows over {vecs.vocab_size} terms, "
            f"expected {len(texts)} over {vocab}"
        )
    return vecs


def write_batch(index: Index, batch: Sequence[NewDoc], replaced: list[int]) -> int:
    """Embed and commit one batch; see the commit protocol in :mod:`embedstack.index.core`."""
    if not batch:
        return 0
    chunks = index._chunker.chunks([d.title for d in batch], [d.text for d in batch])
    emb = _embed(index, [c.embed for c in chunks])
    postings = None
    if index._sparse is not None:
        postings = _sparse_embed(index, [c.embed for c in chunks])
    tokens = None
    if index._colbert is not None:
        tokens = late.encode_chunks(late_model.encoder_of(index), [c.embed for c in chunks],
                                    index._colbert.dim, index._colbert.precision)  # fmt: skip
    first, seg_id = index._store.reserve(len(batch))
    keys = np.arange(first, first + len(batch), dtype=np.int64)
    row_keys = keys[[c.doc for c in chunks]]
    root = index.path / "dense"
    files = dense.segment_files(seg_id, index.precision)
    try:
        segment = dense.write_segment(root, seg_id, emb, index.precision, row_keys)
        if postings is not None:
            sparse_index.write_segment(index.path / sparse_index.DIR, seg_id, postings)
        if tokens is not None:
            late.write_segment(index.path / late.DIR, seg_id, tokens)
        index._lexical.add(keys, [d.full_text for d in batch])
    except BaseException:
        for f in files:
            (root / f).unlink(missing_ok=True)
        sparse_index.remove_segments(index.path / sparse_index.DIR, [seg_id])
        late.remove_segments(index.path / late.DIR, [seg_id])
        raise
    try:
        with index._store.transaction():
            index._store.delete_keys(replaced)
            index._store.register_segment(seg_id, files[0], len(chunks))
            index._store.insert_docs(
                (int(k), d.id, d.title, d.text, d.metadata_json, d.content_hash)
                for k, d in zip(keys, batch, strict=True)
            )
            index._store.insert_chunks(
                (int(keys[c.doc]), c.chunk_no, c.start, c.end, seg_id, row)
                for row, c in enumerate(chunks)
            )
    except BaseException:
        index._lexical.delete(keys)
        for f in files:
            (root / f).unlink(missing_ok=True)
        sparse_index.remove_segments(index.path / sparse_index.DIR, [seg_id])
        late.remove_segments(index.path / late.DIR, [seg_id])
        raise
    if replaced:
        index._lexical.delete(replaced)
    st = index._state
    live = np.union1d(np.setdiff1d(st.live, replaced), keys).astype(np.int64)
    index._state = State([*st.segments, segment], live, True, index._version())
    index._known_keys.clear()
    index._hnsw = None
    return len(chunks)
