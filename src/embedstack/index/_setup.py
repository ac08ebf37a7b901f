"""What :meth:`Index.create` and :meth:`Index.open` check before touching the disk: the
arguments, the encoders against the manifest, and the manifest of a new index."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from embedstack.chunking import ChunkingParams
from embedstack.encoders import TextEncoder
from embedstack.encoders.splade import SparseTextEncoder
from embedstack.errors import DimensionMismatch, IndexNotFound, InvalidInput, ModelMismatch
from embedstack.index import late_model, manifest
from embedstack.index import sparse as sparse_index
from embedstack.index._embedding import Chunker
from embedstack.index._maintenance import recover
from embedstack.index._state import chunk_args, load_snapshot, lock, resolve_encoder
from embedstack.index._types import BM25Params, check_ann
from embedstack.index.docstore import DocStore
from embedstack.index.fields.base import Field, Snapshot
from embedstack.index.fields.local import create_fields, open_fields
from embedstack.vectorset import PRECISIONS

__all__ = ["Parts", "create_parts", "open_parts", "recorded_chunker"]

Encoders = tuple[TextEncoder, SparseTextEncoder | None, late_model.LateEncoder | None]
#: What ``Index.__init__`` takes: path, manifest, encoder, store, fields, the snapshot a
#: writer recovered with (None: the index reads it), lock descriptor (None: readonly).
Parts = tuple[Path, dict[str, Any], TextEncoder, DocStore, list[Field], Snapshot | None, int | None]


def check_create(path: Path, precision: object, ann: object, bm25: object,
                 chunking: object) -> None:  # fmt: skip
    """``Index.create``'s plain arguments.

    Raises:
        InvalidInput: an unknown precision or ann, wrong parameter types, or ``path`` not
            a new or empty directory.
    """
    if precision not in PRECISIONS:
        raise InvalidInput(f"unknown precision {precision!r}; choose one of {PRECISIONS}")
    check_ann(ann)
    if not isinstance(bm25, BM25Params) or not isinstance(chunking, ChunkingParams):
        raise InvalidInput("bm25 must be a BM25Params and chunking a ChunkingParams")
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise InvalidInput(f"{path} exists and is not an empty directory; use Index.open()")
    if ann == "hnsw":
        from embedstack.index.ann import require_faiss

        require_faiss()


def new_manifest(
    enc: TextEncoder, dim: int | None, *, precision: str, bm25: BM25Params,
    chunking: ChunkingParams, chunker: Chunker, ann: str | None,
    encoder_options: dict[str, Any] | None, sparse: SparseTextEncoder | None,
    sparse_options: dict[str, Any] | None, colbert_record: dict[str, Any] | None,
) -> dict[str, Any]:  # fmt: skip
    """The manifest of a new index (see :mod:`embedstack.index.manifest`).

    Raises:
        DimensionMismatch: ``dim`` not in ``[1, encoder.dim]``.
    """
    full = int(enc.dim)
    dim = full if dim is None else dim
    if isinstance(dim, bool) or not isinstance(dim, int) or not 1 <= dim <= full:
        raise DimensionMismatch(f"dim must be in [1, {full}] for {enc.name}, got {dim!r}")
    return {
        "format": manifest.FORMAT,
        "format_version": manifest.FORMAT_VERSION,
        "library_version": manifest.library_version(),
        "created_at": manifest.now(),
        "encoder": {"name": enc.name, "model_id": enc.model_id, "dim": dim,
                    "full_dim": full, "options": dict(encoder_options or {})},
        "precision": precision,
        "bm25": {"k1": bm25.k1, "b": bm25.b},
        "chunking": {"max_tokens": chunking.max_tokens, "overlap": chunking.overlap,
                     "allow_any": chunking.allow_any,
                     "effective_max_tokens": chunker.window,
                     "effective_overlap": chunker.overlap,
                     "tokenizer": chunker.tokenizer, "title": "every chunk"},
        "ann": ann,
        "sparse": None if sparse is None else sparse_index.manifest_entry(sparse,
                                                                         sparse_options),
        "colbert": colbert_record,
    }  # fmt: skip


def open_encoders(path: Path, meta: dict[str, Any], encoder: object, sparse: object,
                  colbert: object) -> Encoders:  # fmt: skip
    """``Index.open``'s encoders, checked against the manifest (sparse and ColBERT None:
    loaded from the manifest when first needed).

    Raises:
        DimensionMismatch: the encoder's dimension differs from the recorded one.
        ModelMismatch: another model than the recorded one.
        InvalidInput: ``sparse`` or ``colbert`` for an index that stores neither.
    """
    rec = meta["encoder"]
    enc = resolve_encoder(rec["name"] if encoder is None else encoder, rec.get("options"))
    if int(enc.dim) != int(rec["full_dim"]):
        raise DimensionMismatch(
            f"{path} holds {rec['full_dim']}-d vectors from {rec['model_id']}; the encoder "
            f"{enc.model_id} produces {enc.dim}-d vectors"
        )
    if enc.model_id != rec["model_id"]:
        raise ModelMismatch(
            f"{path} was built with {rec['model_id']}, not {enc.model_id}: open it with the "
            "same model, or build a new index"
        )
    senc = None
    if sparse is not None:
        if not meta.get("sparse"):
            raise InvalidInput(f"{path} has no sparse postings: open it without sparse=")
        senc = sparse_index.resolve_encoder(sparse, meta["sparse"].get("options"))
        sparse_index.check_encoder(senc, meta["sparse"], path)
    return enc, senc, late_model.open_encoder(colbert, meta, path)


def create_parts(path: Path, *, encoder: object, dim: int | None, precision: str,
                 bm25: BM25Params, chunking: ChunkingParams, ann: str | None,
                 encoder_options: dict[str, Any] | None, sparse: object,
                 sparse_options: dict[str, Any] | None, colbert: object,
                 colbert_options: dict[str, Any] | None,
                 colbert_precision: str) -> Parts:  # fmt: skip
    """Check ``Index.create``'s arguments, then lay out the new index and take its lock."""
    check_create(path, precision, ann, bm25, chunking)
    cenc, colbert_record = late_model.prepare(colbert, colbert_options, colbert_precision)
    enc = resolve_encoder(encoder, encoder_options)
    senc = None if sparse is None else sparse_index.resolve_encoder(sparse, sparse_options)
    meta = new_manifest(
        enc, dim, precision=precision, bm25=bm25, chunking=chunking,
        chunker=Chunker(enc, chunking), ann=ann, encoder_options=encoder_options, sparse=senc,
        sparse_options=sparse_options, colbert_record=colbert_record,
    )  # fmt: skip
    path.mkdir(parents=True, exist_ok=True)
    fd = lock(path)
    try:
        store = DocStore(path, create=True)
        fields = create_fields(path, meta, enc, senc, cenc)
        try:
            manifest.write_manifest(path, meta)
        except TypeError as exc:
            (path / manifest.FILE).unlink(missing_ok=True)
            raise InvalidInput(f"encoder_options must be JSON-serialisable: {exc}") from exc
    except BaseException:
        os.close(fd)
        raise
    return path, meta, enc, store, fields, None, fd


def open_parts(path: Path, encoder: object, readonly: bool, sparse: object,
               colbert: object) -> Parts:  # fmt: skip
    """Read and check an index's manifest and encoders, take the lock (writers) and
    recover what a crashed writer left (see :func:`~embedstack.index._maintenance.recover`)
    against the snapshot, which the index then starts from: recovery changes the fields, never
    what SQLite registers, and the lock keeps other writers out, so it is read once.
    """
    if not path.is_dir():
        raise IndexNotFound(
            f"no index at {path}: create one with Index.create()", location=str(path)
        )
    meta = manifest.read_manifest(path)
    enc, senc, cenc = open_encoders(path, meta, encoder, sparse, colbert)
    fd = None if readonly else lock(path)
    snap = None
    try:
        store = DocStore(path, readonly=readonly)
        fields = open_fields(path, meta, enc, readonly=readonly, sparse=senc, colbert=cenc)
        if not readonly:
            snap = load_snapshot(store, fields)
            recover(path, fields, snap)
    except BaseException:
        if fd is not None:
            os.close(fd)
        raise
    return path, meta, enc, store, fields, snap, fd


def recorded_chunker(encoder: TextEncoder, meta: dict[str, Any]) -> Chunker:
    """The chunker of an index: the recorded window wins, so every batch is chunked alike."""
    chunker = Chunker(encoder, ChunkingParams(**chunk_args(meta)))
    chunker.window = int(meta["chunking"]["effective_max_tokens"])
    chunker.overlap = int(meta["chunking"]["effective_overlap"])
    return chunker
