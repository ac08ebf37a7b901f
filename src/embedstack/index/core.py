"""The :class:`Index`: documents, dense chunk vectors and BM25 in one directory.

Layout::

    manifest.json   encoder (name, model_id, dims), precision, BM25 and chunking parameters
    docs.sqlite     documents, chunks, dense segment registry — the source of truth
    dense/          seg-NNNNNN*.npy vector segments, one per add batch
    sparse/         seg-NNNNNN.*.npy SPLADE postings of the same chunks (indexes created
                    with ``sparse=``; see :mod:`embedstack.index.sparse`)
    colbert/        seg-NNNNNN.*.npy ColBERT token vectors of the same chunks (indexes
                    created with ``colbert=``; see :mod:`embedstack.index.late`)
    lexical/        a LexicalIndex (BM25) keyed by the documents' SQLite keys
    write.lock      held (flock) by the one writer; readers take no lock

Commit protocol (a crash at any point leaves the last committed state):

* **add / upsert**: validate the whole batch; embed; reserve keys and a segment number in
  SQLite; write the dense (and sparse, ColBERT) segment files (fsynced, unregistered); add
  to BM25 (its own atomic manifest flip); then ONE SQLite transaction inserts the documents
  and chunks, registers the segment and removes replaced documents — the commit point.
  Replaced documents are tombstoned in BM25 afterwards.
* **delete**: the SQLite transaction first (commit point), BM25 tombstones after.
* **recovery**: a writer opening the index deletes BM25 documents that SQLite does not
  have and removes dense (sparse, ColBERT) files SQLite does not register. Readers mask
  every result by the keys SQLite has, so they never see uncommitted data.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from embedstack._typing import Precision
from embedstack.chunking import ChunkingParams
from embedstack.encoders import TextEncoder
from embedstack.encoders.multivector import TokenPrecision
from embedstack.encoders.splade import SparseTextEncoder
from embedstack.errors import DimensionMismatch, InvalidInput, ModelMismatch
from embedstack.index import dense, late, late_model, manifest
from embedstack.index import sparse as sparse_index
from embedstack.index._embedding import Chunker
from embedstack.index._state import State, chunk_args, library_version, lock, resolve_encoder
from embedstack.index._types import (
    AddResult,
    BM25Params,
    Fusion,
    Hit,
    IndexStats,
    Mode,
    Normalization,
)
from embedstack.index._validate import NewDoc, check_ids, validate_docs
from embedstack.index.docstore import DocStore
from embedstack.index.lexical import LexicalIndex
from embedstack.vectorset import PRECISIONS

if TYPE_CHECKING:
    from embedstack.pipeline import Pipeline, PipelineSpec

__all__ = ["Index"]

ANN_CHOICES = (None, "hnsw")


class Index:
    """A hybrid (dense + BM25) retrieval index in a directory; see the module docstring.

    Build one with :meth:`create`, reopen it with :meth:`open`. One writer at a time (a
    second one gets :class:`IndexLocked`); any number of ``readonly`` readers, which see
    each committed write on their next call. Not thread-safe: use one object per thread.

    Example:
        >>> idx = Index.create(tmp / "idx", encoder="all-MiniLM-L6-v2")      # doctest: +SKIP
        >>> idx.add([{"id": "d1", "text": "Cats purr.", "metadata": {"year": 2021}}])
        AddResult(added=1, updated=0, unchanged=0, chunks=1)                  # doctest: +SKIP
        >>> idx.search("kitten", mode="hybrid", k=1)[0].doc_id               # doctest: +SKIP
        'd1'
    """

    def __init__(self, path: Path, meta: dict[str, Any], encoder: TextEncoder,
                 store: DocStore, lexical: LexicalIndex, lock_fd: int | None) -> None:  # fmt: skip
        self.path = path
        self.manifest = meta
        self.encoder = encoder
        self.readonly = lock_fd is None
        self.precision: str = meta["precision"]
        self.dim: int = int(meta["encoder"]["dim"])
        self.ann: str | None = meta["ann"]
        self._store = store
        self._lexical = lexical
        self._lock_fd = lock_fd
        self._chunker = Chunker(encoder, ChunkingParams(**chunk_args(meta)))
        # the recorded window wins: every batch of an index is chunked alike
        self._chunker.window = int(meta["chunking"]["effective_max_tokens"])
        self._chunker.overlap = int(meta["chunking"]["effective_overlap"])
        self._known_keys: set[str] = set()
        self._hnsw: Any = None
        self._closed = False
        self._sparse_encoder: SparseTextEncoder | None = None
        record = meta.get("sparse")
        self._sparse = (sparse_index.SegmentCache(path / sparse_index.DIR,
                        int(record["vocab_size"])) if record else None)  # fmt: skip
        self._colbert_encoder: late_model.LateEncoder | None = None
        self._colbert = late.cache_for(path, meta)
        self._state = self._load_state()

    # --- lifecycle ---------------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        path: str | os.PathLike[str],
        *,
        encoder: str | TextEncoder = "all-MiniLM-L6-v2",
        dim: int | None = None,
        precision: Precision = "float32",
        bm25: BM25Params = BM25Params(),  # noqa: B008 - frozen dataclass
        chunking: ChunkingParams = ChunkingParams(),  # noqa: B008 - frozen dataclass
        ann: Literal["hnsw"] | None = None,
        encoder_options: dict[str, Any] | None = None,
        sparse: str | SparseTextEncoder | None = None,
        sparse_options: dict[str, Any] | None = None,
        colbert: str | os.PathLike[str] | late_model.LateEncoder | None = None,
        colbert_options: dict[str, Any] | None = None,
        colbert_precision: TokenPrecision = "float16",
    ) -> Index:
        """Create an empty index in ``path`` (a new or empty directory).

        Args:
            path: the index directory.
            encoder: a registry name (loaded with ``encoder_options``) or a TextEncoder.
            dim: store vectors truncated to this Matryoshka dimension (Kusupati et al.
                2022), ``1 <= dim <= encoder.dim``; None keeps the full dimension.
            precision: ``"float32"``, ``"int8"`` or ``"binary"`` (with int8 rescoring).
            bm25: BM25 parameters.
            chunking: chunk window; the effective window (capped by the encoder's
                ``max_length`` minus special tokens, see
                :func:`~embedstack.chunking.effective_window`) is recorded in the manifest.
            ann: None for exact dense search, ``"hnsw"`` for a faiss HNSW graph.
            encoder_options: keyword options for :func:`load_encoder`, recorded so that
                :meth:`open` loads the same encoder.
            sparse: also store SPLADE postings of every chunk, for ``mode="sparse"`` and
                sparse hybrid retrievers: a sparse model name (``"splade-tiny"``), a
                masked-LM folder, or a :class:`~embedstack.encoders.splade.SparseEncoder`.
            sparse_options: keyword options for the SparseEncoder, recorded like
                ``encoder_options``.
            colbert: also store ColBERT token vectors of every chunk, for
                :meth:`colbert_scores` (late-interaction reranking with only the query
                encoded): a model name or folder, or a
                :class:`~embedstack.encoders.colbert.LateInteractionEncoder` (whose settings
                are recorded as its options).
            colbert_options: keyword options for the LateInteractionEncoder, recorded like
                ``encoder_options``.
            colbert_precision: stored precision of the token vectors: ``"float16"``
                (default; the same SciFact nDCG@10 as float32 at half the bytes),
                ``"float32"`` or ``"int8"`` (per-token scale).

        Raises:
            InvalidInput: ``path`` is not empty, or an argument is invalid.
            DimensionMismatch: ``dim`` larger than the encoder's.
        """
        path = Path(path)
        if precision not in PRECISIONS:
            raise InvalidInput(f"unknown precision {precision!r}; choose one of {PRECISIONS}")
        if ann not in ANN_CHOICES:
            raise InvalidInput(f"unknown ann {ann!r}; choose None or 'hnsw'")
        if not isinstance(bm25, BM25Params) or not isinstance(chunking, ChunkingParams):
            raise InvalidInput("bm25 must be a BM25Params and chunking a ChunkingParams")
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise InvalidInput(f"{path} exists and is not an empty directory; use Index.open()")
        cenc, colbert_record = late_model.prepare(colbert, colbert_options, colbert_precision)
        enc = resolve_encoder(encoder, encoder_options)
        senc = None if sparse is None else sparse_index.resolve_encoder(sparse, sparse_options)
        full = int(enc.dim)
        dim = full if dim is None else dim
        if isinstance(dim, bool) or not isinstance(dim, int) or not 1 <= dim <= full:
            raise DimensionMismatch(f"dim must be in [1, {full}] for {enc.name}, got {dim!r}")
        if ann == "hnsw":
            from embedstack.index.ann import require_faiss

            require_faiss()
        chunker = Chunker(enc, chunking)
        path.mkdir(parents=True, exist_ok=True)
        fd = lock(path)
        try:
            store = DocStore(path, create=True)
            lexical = LexicalIndex.create(path / "lexical", k1=bm25.k1, b=bm25.b)
            (path / "dense").mkdir()
            if senc is not None:
                (path / sparse_index.DIR).mkdir()
            if cenc is not None:
                (path / late.DIR).mkdir()
            meta = {
                "format": manifest.FORMAT,
                "format_version": manifest.FORMAT_VERSION,
                "library_version": library_version(),
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
                "sparse": None if senc is None else sparse_index.manifest_entry(senc,
                                                                               sparse_options),
                "colbert": colbert_record,
            }  # fmt: skip
            try:
                manifest.write_manifest(path, meta)
            except TypeError as exc:
                (path / manifest.FILE).unlink(missing_ok=True)
                raise InvalidInput(f"encoder_options must be JSON-serialisable: {exc}") from exc
        except BaseException:
            os.close(fd)
            raise
        index = cls(path, meta, enc, store, lexical, fd)
        index._sparse_encoder = senc
        index._colbert_encoder = cenc
        return index

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        encoder: str | TextEncoder | None = None,
        readonly: bool = False,
        sparse: str | SparseTextEncoder | None = None,
        colbert: str | os.PathLike[str] | late_model.LateEncoder | None = None,
    ) -> Index:
        """Open an existing index.

        Args:
            path: the index directory.
            encoder: None loads the recorded encoder by name (with its recorded options);
                a name or TextEncoder must have the recorded model_id and dimension.
            readonly: search only, without taking the write lock.
            sparse: for an index with sparse postings: None loads the recorded sparse model
                when first needed; a name or SparseEncoder must have the recorded model_id.
            colbert: for an index with ColBERT token vectors: None loads the recorded model
                (with its recorded options) when first needed; a name or
                LateInteractionEncoder must have the recorded model_id, dimension and
                document settings.

        Raises:
            IndexCorrupt: not an index, or unreadable parts.
            IndexLocked: another writer holds the lock (only when not ``readonly``).
            DimensionMismatch: the encoder's dimension differs from the recorded one.
            ModelMismatch: the encoder's (or the sparse or ColBERT model's) model_id differs
                from the recorded one.
        """
        path = Path(path)
        if not path.is_dir():
            raise InvalidInput(f"no index at {path}: create one with Index.create()")
        meta = manifest.read_manifest(path)
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
        cenc = late_model.open_encoder(colbert, meta, path)
        fd = None if readonly else lock(path)
        try:
            store = DocStore(path, readonly=readonly)
            lexical = LexicalIndex.open(path / "lexical")
            index = cls(path, meta, enc, store, lexical, fd)
            index._sparse_encoder = senc
            index._colbert_encoder = cenc
            if not readonly:
                from embedstack.index._maintenance import reconcile

                reconcile(index)
        except BaseException:
            if fd is not None:
                os.close(fd)
            raise
        return index

    def close(self) -> None:
        """Release the write lock and the database connection (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._store.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> Index:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __len__(self) -> int:
        self._refresh()
        return len(self._state.live)

    # --- state -------------------------------------------------------------------------------

    def _version(self) -> tuple[int, int]:
        try:
            mtime = (self.path / "lexical" / "lexical.json").stat().st_mtime_ns
        except OSError:
            mtime = -1
        return self._store.data_version(), mtime

    def _load_state(self) -> State:
        version = self._version()
        conn = self._store.conn
        conn.execute("BEGIN")
        try:
            registry = self._store.segments()
            row_keys = [self._store.row_keys(seg, n) for seg, _, n in registry]
            live = self._store.live_keys()
        finally:
            conn.execute("COMMIT")
        root = self.path / "dense"
        segments = [
            dense.load_segment(root, seg, n, self.dim, self.precision, keys)
            for (seg, _, n), keys in zip(registry, row_keys, strict=True)
        ]
        if self.readonly:
            self._lexical = LexicalIndex.open(self.path / "lexical")
        exact = bool(np.array_equal(self._lexical.keys(), live))
        self._hnsw = None
        return State(segments, live, exact, version)

    def _refresh(self) -> None:
        """Readers: reload when another process committed since the last call."""
        if self._closed:
            raise InvalidInput(f"the index at {self.path} is closed")
        if self.readonly and self._version() != self._state.version:
            self._state = self._load_state()

    def _writable(self) -> None:
        if self._closed:
            raise InvalidInput(f"the index at {self.path} is closed")
        if self.readonly:
            raise InvalidInput(f"{self.path} was opened readonly; open it without readonly")

    def live_masks(self) -> list[np.ndarray]:
        """Per-segment boolean masks of live rows (cached until the next write)."""
        st = self._state
        if st.masks is None:
            st.masks = [np.isin(seg.row_keys, st.live) for seg in st.segments]
        return st.masks

    # --- writes ------------------------------------------------------------------------------

    def add(self, docs: Iterable[dict[str, Any]]) -> AddResult:
        """Add new documents as one atomic batch.

        Args:
            docs: ``{"id": str, "text": str, "title"?: str, "metadata"?: dict}`` items.

        Returns:
            :class:`AddResult` with ``added`` and ``chunks``.

        Raises:
            InvalidInput: a bad item (named by position), an id repeated in the batch, or an
                id already in the index (use :meth:`upsert`). Nothing is written.
        """
        self._writable()
        batch = validate_docs(docs)
        existing = self._store.existing([d.id for d in batch])
        for doc in batch:
            if doc.id in existing:
                raise InvalidInput(
                    f"document {doc.position}: id {doc.id!r} is already in the index; use "
                    "upsert() to replace it"
                )
        n_chunks = self._write(batch, [])
        return AddResult(added=len(batch), chunks=n_chunks)

    def upsert(self, docs: Iterable[dict[str, Any]]) -> AddResult:
        """Add new documents and replace changed ones, as one atomic batch.

        A document whose content hash (sha256 of title, text and metadata) equals the
        stored one is skipped and not re-embedded.

        Raises:
            InvalidInput: as :meth:`add`, except that existing ids are allowed.
        """
        self._writable()
        batch = validate_docs(docs)
        existing = self._store.existing([d.id for d in batch])
        changed = [d for d in batch if existing.get(d.id, (0, ""))[1] != d.content_hash]
        replaced = [existing[d.id][0] for d in changed if d.id in existing]
        n_chunks = self._write(changed, replaced)
        return AddResult(added=len(changed) - len(replaced), updated=len(replaced),
                         unchanged=len(batch) - len(changed), chunks=n_chunks)  # fmt: skip

    def _write(self, batch: Sequence[NewDoc], replaced: list[int]) -> int:
        from embedstack.index._writes import write_batch

        return write_batch(self, batch, replaced)

    def delete(self, ids: Iterable[str]) -> int:
        """Delete documents by id; returns how many were deleted.

        Raises:
            InvalidInput: an id not in the index (all are named, up to 5); nothing changes.
        """
        self._writable()
        wanted = check_ids(ids)
        existing = self._store.existing(wanted)
        missing = [i for i in wanted if i not in existing]
        if missing:
            raise InvalidInput(f"ids not in the index: {missing[:5]}; nothing was deleted")
        if not wanted:
            return 0
        keys = [existing[i][0] for i in wanted]
        with self._store.transaction():
            self._store.delete_keys(keys)
        self._lexical.delete(keys)
        st = self._state
        self._state = State(st.segments, np.setdiff1d(st.live, keys).astype(np.int64), True,
                             self._version())  # fmt: skip
        self._known_keys.clear()
        self._hnsw = None
        return len(keys)

    # --- reads -------------------------------------------------------------------------------

    def get(self, doc_id: str) -> dict[str, Any] | None:
        """The stored document ``{"id", "title", "text", "metadata"}``, or None."""
        self._refresh()
        if not isinstance(doc_id, str):
            raise InvalidInput(f"doc_id must be str, got {type(doc_id).__name__}")
        return self._store.get(doc_id)

    def search(
        self,
        query: str,
        *,
        mode: Mode = "dense",
        k: int = 10,
        filter: dict[str, Any] | None = None,  # noqa: A002 - the public argument name
        fusion: Fusion = "rrf",
        alpha: float = 0.5,
        rrf_k: float = 60,
        candidates: int = 100,
        normalization: Normalization = "minmax",
        retrievers: Sequence[str] | None = None,
        pipeline: Pipeline | PipelineSpec | None = None,
    ) -> list[Hit]:
        """Search for one query; see :meth:`search_many` for the arguments.

        ``pipeline`` runs a retrieval pipeline instead of ``mode`` (a
        :class:`~embedstack.pipeline.Pipeline`, a config, a JSON file, a preset or a name
        saved with this index, or a compact string; see :mod:`embedstack.pipeline`): ``k``
        (10 unless given, whatever the pipeline's own ``k``) and ``filter`` apply, the other
        arguments are ignored.
        """
        if not isinstance(query, str):
            raise InvalidInput(f"a query must be str, got {type(query).__name__}")
        if pipeline is not None:
            from embedstack.pipeline.run import search_with_pipeline

            return search_with_pipeline(self, query, pipeline, k=k, filter=filter)
        return self.search_many(
            [query], mode=mode, k=k, filter=filter, fusion=fusion, alpha=alpha, rrf_k=rrf_k,
            candidates=candidates, normalization=normalization, retrievers=retrievers,
        )[0]  # fmt: skip

    def search_many(
        self,
        queries: Sequence[str],
        *,
        mode: Mode = "dense",
        k: int = 10,
        filter: dict[str, Any] | None = None,  # noqa: A002 - the public argument name
        fusion: Fusion = "rrf",
        alpha: float = 0.5,
        rrf_k: float = 60,
        candidates: int = 100,
        normalization: Normalization = "minmax",
        retrievers: Sequence[str] | None = None,
    ) -> list[list[Hit]]:
        """Search several queries at once (query encoding is batched).

        Args:
            queries: non-blank query strings.
            mode: ``"dense"`` (cosine over chunk vectors, max per document), ``"bm25"``,
                ``"sparse"`` (SPLADE dot product over chunk postings, max per document; indexes
                created with ``sparse=``), or ``"hybrid"`` (``retrievers``, fused).
            k: results per query, ``>= 1``.
            filter: a metadata filter (see :mod:`embedstack.index.filters`), applied before
                top-k so ``k`` results come back whenever ``k`` documents match. A key no
                document has is an error.
            fusion: ``"rrf"`` (Cormack et al. 2009) or ``"weighted"`` (Bruch et al. 2023).
            alpha: weighted fusion: weight of the dense scores (BM25 gets ``1 - alpha``).
            rrf_k: RRF's constant (60, as in the paper).
            candidates: hybrid: documents taken from each retriever before fusion (at least
                ``k``); see :mod:`embedstack.index.search` for why 100.
            normalization: weighted fusion: ``"minmax"`` or ``"zscore"``.
            retrievers: hybrid: which of ``"bm25"``, ``"dense"``, ``"sparse"`` to fuse
                (default ``("bm25", "dense")``); with weighted fusion and three retrievers
                ``alpha`` is not used and each gets weight 1/3.

        Returns:
            One list of at most ``k`` :class:`Hit` per query, best first.

        Raises:
            InvalidInput: an empty query, ``k <= 0``, an unknown mode, fusion, retriever or
                normalization, a bad filter or a filter on a key no document has, or
                ``"sparse"`` on an index without sparse postings.
        """
        from embedstack.index.search import search_many

        self._refresh()
        return search_many(
            self, queries, mode=mode, k=k, filter=filter or None, fusion=fusion, alpha=alpha,
            rrf_k=rrf_k, candidates=candidates, normalization=normalization,
            retrievers=retrievers,
        )  # fmt: skip

    def dense_scores(self, query: str, doc_ids: Sequence[str]) -> np.ndarray:
        """Score given documents against ``query`` with their stored chunk vectors.

        Only the query is encoded; each document scores the maximum over its chunks, as in
        dense search (see :mod:`embedstack.index.rescoring`).

        Args:
            query: a non-blank query.
            doc_ids: document ids, any order, repeats allowed.

        Returns:
            ``(len(doc_ids),)`` float32, ``-inf`` for an id the index does not hold.

        Raises:
            InvalidInput: an empty query or a non-str id.
        """
        from embedstack.index.rescoring import dense_scores

        self._refresh()
        return dense_scores(self, query, doc_ids)

    @property
    def colbert_model(self) -> str | None:
        """The model_id of the stored ColBERT token vectors, or None when the index stores
        none (it was created without ``colbert=``)."""
        record = self.manifest.get("colbert")
        return str(record["model_id"]) if record else None

    def colbert_scores(
        self, query: str, doc_ids: Sequence[str], *, chunks: Literal["all", "first"] = "all"
    ) -> np.ndarray:
        """Score given documents against ``query`` by ColBERT MaxSim over their stored token
        vectors (Khattab & Zaharia 2020).

        Only the query is encoded (``encode_queries`` of the index's ColBERT encoder); only
        the candidates' token rows are read. Each document scores the maximum over its
        chunks, as in dense search (see :mod:`embedstack.index.late`). An index created with
        a split cross-encoder (:class:`~embedstack.rerank.SplitCrossEncoder`) stores its
        document states instead, and the score is that model's, from its layers above the
        split.

        Args:
            query: a non-blank query.
            doc_ids: document ids, any order, repeats allowed.
            chunks: ``"all"`` (max over a document's chunks) or ``"first"`` (its first
                chunk only: title and the start of the text, the passage a cross-encoder
                reads at query time, at a fraction of the cost for long documents).

        Returns:
            ``(len(doc_ids),)`` float32, ``-inf`` for an id the index does not hold.

        Raises:
            InvalidInput: an empty query, a non-str id, or an index created without
                ``colbert=``.

        Example:
            >>> idx.colbert_scores("do cats purr?", ["d1", "d2", "nope"])  # doctest: +SKIP
            array([21.3, 14.9, -inf], dtype=float32)
        """
        self._refresh()
        return late.colbert_scores(self, query, doc_ids, chunks)

    # --- maintenance ---------------------------------------------------------------------------

    def stats(self) -> IndexStats:
        """Documents, chunks, pending deletions, bytes by component, segments, model."""
        from embedstack.index._maintenance import stats

        self._refresh()
        return stats(self)

    def check(self) -> None:
        """Verify the whole index; raises :class:`IndexCorrupt` naming what is wrong."""
        from embedstack.index._maintenance import check

        if self._closed:
            raise InvalidInput(f"the index at {self.path} is closed")
        check(self)

    def compact(self) -> None:
        """Rewrite dense segments without dead rows, merge BM25 segments and VACUUM SQLite,
        reclaiming the space of deleted and replaced documents."""
        from embedstack.index._maintenance import compact

        self._writable()
        compact(self)
        self._state = self._load_state()
