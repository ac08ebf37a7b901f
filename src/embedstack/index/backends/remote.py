""":class:`RemoteIndex`: the :class:`~embedstack.index.Index` API over an engine's
:class:`~embedstack.index.backends.base.Store` (see :mod:`embedstack.index.backends.base`
for the split of work and the ranking contract)."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any, Literal

import numpy as np

from embedstack import fusion as fuse
from embedstack import vectors
from embedstack._typing import FloatArray, Precision
from embedstack.chunking import ChunkingParams
from embedstack.encoders import TextEncoder
from embedstack.encoders.multivector import TokenPrecision
from embedstack.encoders.sparse_vectors import SparseVectors
from embedstack.encoders.splade import SparseTextEncoder
from embedstack.errors import DimensionMismatch, InvalidInput
from embedstack.index import late_model
from embedstack.index import sparse as sparse_index
from embedstack.index._embedding import Chunker
from embedstack.index._setup import new_manifest, open_encoders, recorded_chunker
from embedstack.index._state import resolve_encoder
from embedstack.index._types import AddResult, BM25Params, Hit, IndexStats, check_ann
from embedstack.index._validate import NewDoc, check_ids, validate_batches, validate_docs
from embedstack.index.backends import scheme_of, store_class
from embedstack.index.backends.base import Ranked, Store, StoredChunk, StoredDoc
from embedstack.index.core import Index
from embedstack.index.fields.base import Field
from embedstack.index.filters import compile_filter
from embedstack.index.protocols import SearchOptions, SearchPlan
from embedstack.index.rescoring import check_request
from embedstack.index.search import active_retrievers, check_queries
from embedstack.index.tokenize import Analyzer, Vocabulary

__all__ = ["RemoteIndex"]


def _unsupported(what: str, scheme: str) -> InvalidInput:
    return InvalidInput(f"{what} is not supported by {scheme}:// indexes (local indexes only)")


def _store_class(uri: object) -> type[Store]:
    scheme = scheme_of(uri)
    if scheme is None or not isinstance(uri, str):
        raise InvalidInput(f"a remote index needs a URI such as postgresql://…, got {uri!r}")
    return store_class(scheme)


class RemoteIndex(Index):
    """An index held by an engine (PostgreSQL, Milvus…), with :class:`Index`'s API.

    Built by ``Index.create(uri, …)`` / ``Index.open(uri)``. Writes are the store's
    transactions; any number of processes may read and write at once. ``precision`` is
    float32 only and ``colbert`` is not stored (``InvalidInput``); ``sparse`` (SPLADE
    postings, ``mode="sparse"``) where the engine supports it (PostgreSQL, Milvus).

    Example:
        >>> idx = Index.create("postgresql://localhost/db?index=papers",
        ...                    encoder="all-MiniLM-L6-v2")                  # doctest: +SKIP
        >>> idx.search("kitten", mode="bm25", k=1)                          # doctest: +SKIP
    """

    def __init__(self, store: Store, encoder: TextEncoder,  # noqa: D107
                 sparse: SparseTextEncoder | None = None) -> None:  # fmt: skip
        self.uri = store.location
        self.manifest = store.manifest
        self.encoder = encoder
        self.readonly = store.readonly
        self.precision = self.manifest["precision"]
        self.dim = int(self.manifest["encoder"]["dim"])
        self.ann = self.manifest["ann"]
        self._remote = store
        self._scheme = str(self.manifest.get("backend", "remote"))
        self._chunker = recorded_chunker(encoder, self.manifest)
        self._analyzer = Analyzer(Vocabulary())
        self._sparse = sparse
        self._closed = False

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
    ) -> RemoteIndex:
        """Create an empty index at the URI ``path``; arguments as :meth:`Index.create`.

        Raises:
            InvalidInput: an index already at ``path``, a bad URI or argument, or an option
                the engine does not support (``precision`` other than float32,
                ``colbert``; ``sparse`` on an engine without sparse vectors).
            DimensionMismatch: ``dim`` larger than the encoder's.
        """
        store_cls = _store_class(path)
        scheme = str(scheme_of(path))
        if precision != "float32":
            raise _unsupported(f"precision={precision!r}", scheme)
        if colbert is not None:
            raise _unsupported("colbert=", scheme)
        if sparse is not None and not store_cls.supports_sparse:
            raise _unsupported("sparse=", scheme)
        check_ann(ann)
        if not isinstance(bm25, BM25Params) or not isinstance(chunking, ChunkingParams):
            raise InvalidInput("bm25 must be a BM25Params and chunking a ChunkingParams")
        enc = resolve_encoder(encoder, encoder_options)
        senc = None if sparse is None else sparse_index.resolve_encoder(sparse, sparse_options)
        meta = new_manifest(
            enc, dim, precision=precision, bm25=bm25, chunking=chunking,
            chunker=Chunker(enc, chunking), ann=ann, encoder_options=encoder_options,
            sparse=senc, sparse_options=sparse_options, colbert_record=None,
        )  # fmt: skip
        meta["backend"] = store_cls.__module__.rsplit(".", 1)[-1]
        return cls(store_cls.create(str(path), meta), enc, senc)

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        encoder: str | TextEncoder | None = None,
        readonly: bool = False,
        sparse: str | SparseTextEncoder | None = None,
        colbert: str | os.PathLike[str] | late_model.LateEncoder | None = None,
    ) -> RemoteIndex:
        """Open the index at the URI ``path``; arguments and errors as :meth:`Index.open`."""
        store = _store_class(path).open(str(path), bool(readonly))
        try:
            where: Any = store.location
            enc, senc, _ = open_encoders(where, store.manifest, encoder, sparse, colbert)
            return cls(store, enc, senc)
        except BaseException:
            store.close()
            raise

    def close(self) -> None:
        """Release the engine connection (idempotent)."""
        if not self._closed:
            self._closed = True
            self._remote.close()

    def __len__(self) -> int:
        self._check_open()
        return self._remote.count()

    def __repr__(self) -> str:
        return f"RemoteIndex({self.uri!r})"

    @property
    def concurrent_writers(self) -> bool:
        """Whether several processes may write this index at once (PostgreSQL)."""
        return self._remote.concurrent_writers

    @property
    def fields(self) -> tuple[Field, ...]:
        """No local fields: the engine holds every representation."""
        return ()

    def field(self, name: str) -> Field:
        """Refused: a remote index has no local fields."""
        raise InvalidInput(f"{self.uri} is held by an engine and has no local field {name!r}")

    def _check_open(self) -> None:
        if self._closed:
            raise InvalidInput(f"the index at {self.uri} is closed")

    def _refresh(self) -> None:
        self._check_open()

    def _writable(self) -> None:
        self._check_open()
        if self.readonly:
            raise InvalidInput(f"{self.uri} was opened readonly; open it without readonly")

    # --- writes ------------------------------------------------------------------------------

    def add(self, docs: Iterable[dict[str, Any]]) -> AddResult:
        """Add new documents as one atomic batch (see :meth:`Index.add`)."""
        return self._put(docs, replace=False)

    def upsert(self, docs: Iterable[dict[str, Any]]) -> AddResult:
        """Add new and replace changed documents as one atomic batch (see
        :meth:`Index.upsert`)."""
        return self._put(docs, replace=True)

    def upsert_many(self, batches: Sequence[Iterable[dict[str, Any]]]) -> list[AddResult]:
        """Upsert several batches as ONE atomic write, each batch's result as if upserted
        alone in turn (see :meth:`Index.upsert_many`)."""
        self._writable()
        valid = validate_batches(batches)
        ids = [d.id for batch in valid for d in batch]
        existing = self._remote.existing(ids) if ids else {}
        changed = [[d for d in b if existing.get(d.id) != d.content_hash] for b in valid]
        flat = [d for c in changed for d in c]
        counts = np.zeros(len(flat), dtype=np.int64)
        if flat:
            stored, chunks, vecs, sparse = self._prepare(flat)
            self._remote.write(stored, chunks, vecs, replace=True, sparse=sparse)
            counts = np.bincount([c.doc for c in chunks], minlength=len(flat)).astype(np.int64)
        results, start = [], 0
        for batch, c in zip(valid, changed, strict=True):
            updated = sum(d.id in existing for d in c)
            n_chunks = int(counts[start : start + len(c)].sum())
            start += len(c)
            results.append(AddResult(added=len(c) - updated, updated=updated,
                                     unchanged=len(batch) - len(c), chunks=n_chunks))  # fmt: skip
        return results

    def _put(self, docs: Iterable[dict[str, Any]], *, replace: bool) -> AddResult:
        self._writable()
        batch = validate_docs(docs)
        existing = self._remote.existing([d.id for d in batch]) if batch else {}
        if not replace:
            for doc in batch:
                if doc.id in existing:
                    raise InvalidInput(f"document {doc.position}: id {doc.id!r} is already in "
                                       "the index; use upsert() to replace it")  # fmt: skip
        changed = [d for d in batch if existing.get(d.id) != d.content_hash]
        updated = sum(d.id in existing for d in changed)
        if not changed:
            return AddResult(unchanged=len(batch))
        stored, chunks, vecs, sparse = self._prepare(changed)
        self._remote.write(stored, chunks, vecs, replace=replace, sparse=sparse)
        return AddResult(added=len(changed) - updated, updated=updated,
                         unchanged=len(batch) - len(changed), chunks=len(chunks))  # fmt: skip

    def _prepare(
        self, batch: Sequence[NewDoc]
    ) -> tuple[list[StoredDoc], list[StoredChunk], FloatArray, SparseVectors | None]:
        """Chunks, vectors, SPLADE vectors and BM25 terms of a batch, as the local fields
        compute them."""
        chunks = self._chunker.chunks([d.title for d in batch], [d.text for d in batch])
        full = int(self.manifest["encoder"]["full_dim"])
        emb = np.asarray(self.encoder.encode_documents([c.embed for c in chunks]), np.float32)
        if emb.shape != (len(chunks), full):
            raise DimensionMismatch(
                f"the encoder returned {emb.shape}, expected ({len(chunks)}, {full})"
            )
        emb = vectors.truncate(emb, self.dim) if self.dim != full else emb
        stored = []
        for d in batch:
            terms = Counter(self._analyzer.tokens(d.full_text))
            stored.append(StoredDoc(d.id, d.title, d.text, d.metadata_json, d.content_hash,
                                    dict(terms), sum(terms.values())))  # fmt: skip
        rows = [StoredChunk(c.doc, c.chunk_no, c.start, c.end) for c in chunks]
        sparse = self._sparse_documents([c.embed for c in chunks])
        return stored, rows, np.ascontiguousarray(emb, dtype=np.float32), sparse

    def sparse_encoder(self) -> SparseTextEncoder | None:
        """The index's SPLADE encoder (given at open, else the recorded one, loaded on first
        use), or None for an index without sparse postings.

        Raises:
            ModelMismatch, DimensionMismatch: the recorded model changed.
        """
        record = self.manifest.get("sparse")
        if record and self._sparse is None:
            senc = sparse_index.resolve_encoder(record["name"], record.get("options"))
            sparse_index.check_encoder(senc, record, self.uri)  # type: ignore[arg-type]
            self._sparse = senc
        return self._sparse if record else None

    def _searchable_sparse(self) -> SparseTextEncoder:
        senc = self.sparse_encoder()
        if senc is None:
            raise InvalidInput(f"{self.uri} has no sparse postings: create the index with "
                               "Index.create(..., sparse='splade-tiny') to search with "
                               "mode='sparse'")  # fmt: skip
        return senc

    def _sparse_documents(self, texts: list[str]) -> SparseVectors | None:
        """The SPLADE vectors of chunk texts (None without sparse postings)."""
        senc = self.sparse_encoder()
        if senc is None:
            return None
        vecs = senc.encode_documents(texts) if texts else None
        vocab = int(self.manifest["sparse"]["vocab_size"])
        if vecs is None or len(vecs) != len(texts) or vecs.vocab_size != vocab:
            got = (0, vocab) if vecs is None else (len(vecs), vecs.vocab_size)
            raise DimensionMismatch(f"the sparse encoder returned {got[0]} rows over {got[1]} "
                                    f"terms, expected {len(texts)} over {vocab}")  # fmt: skip
        return vecs

    def delete(self, ids: Iterable[str]) -> int:
        """Delete documents by id (see :meth:`Index.delete`)."""
        self._writable()
        wanted = check_ids(ids)
        return self._remote.delete(wanted) if wanted else 0

    # --- reads -------------------------------------------------------------------------------

    def get(self, doc_id: str) -> dict[str, Any] | None:
        """The stored document ``{"id", "title", "text", "metadata"}``, or None."""
        self._check_open()
        if not isinstance(doc_id, str):
            raise InvalidInput(f"doc_id must be str, got {type(doc_id).__name__}")
        return self._remote.docs([doc_id]).get(doc_id)

    def search(self, query: str, options: SearchOptions | None = None, *,
               pipeline: SearchPlan | None = None, **kwargs: Any) -> list[Hit]:  # fmt: skip
        """Search for one query (see :meth:`Index.search`)."""
        return super().search(query, options, pipeline=pipeline, **kwargs)

    def search_many(
        self, queries: Sequence[str], options: SearchOptions | None = None, **kwargs: Any
    ) -> list[list[Hit]]:
        """Search several queries (see :meth:`Index.search_many`); ``mode="sparse"`` needs
        an index created with ``sparse=``."""
        opts = SearchOptions.build(options, **kwargs)
        qs = check_queries(queries)
        self._check_open()
        names = active_retrievers(opts)
        if "sparse" in names and not self.manifest.get("sparse"):
            self._searchable_sparse()  # raises the local index's error
        flt = opts.filter or None
        if flt is not None:
            compile_filter(flt)  # the local index's errors for a bad filter
        if not qs:
            return []
        depth = opts.k if opts.mode != "hybrid" else max(opts.candidates, opts.k)
        found: dict[str, list[list[Ranked]]] = {}
        for name in names:  # fusion order: dense, sparse, bm25
            if name == "dense":
                found[name] = self._remote.search_dense(self._encode_queries(qs), depth, flt)
            elif name == "sparse":
                q = self._searchable_sparse().encode_queries(qs)
                found[name] = self._remote.search_sparse(q, depth, flt)
            else:
                terms = [self._analyzer.tokens(q) for q in qs]
                found[name] = self._remote.search_bm25(terms, depth, flt)
        return self._hits(found, opts, depth, len(qs))

    def _encode_queries(self, queries: list[str]) -> FloatArray:
        q = np.asarray(self.encoder.encode_queries(queries), dtype=np.float32)
        return vectors.truncate(q, self.dim) if q.shape[1] != self.dim else q

    def _hits(self, found: dict[str, list[list[Ranked]]], opts: SearchOptions, depth: int,
              n_queries: int) -> list[list[Hit]]:  # fmt: skip
        """Fuse each query's lists as :mod:`embedstack.index.search` does (scores as float32,
        ties by doc id) and build the hits."""
        results = []
        for qi in range(n_queries):
            per = {name: sorted(((r.doc_id, float(np.float32(r.score))) for r in lists[qi]),
                                key=lambda item: (-item[1], item[0]))[:depth]
                   for name, lists in found.items()}  # fmt: skip
            if len(per) == 1:
                fused = next(iter(per.values()))
            elif opts.fusion == "rrf":
                fused = fuse.rrf([[i for i, _ in lst] for lst in per.values()], k=opts.rrf_k)
            else:
                weights = None if len(per) == 2 else [1 / len(per)] * len(per)
                fused = fuse.weighted([dict(lst) for lst in per.values()], alpha=opts.alpha,
                                      normalization=opts.normalization,
                                      weights=weights)  # fmt: skip
            results.append((per, fused[: opts.k]))
        docs = self._remote.docs(sorted({i for _, fused in results for i, _ in fused}))
        where: dict[tuple[int, str], tuple[int, int, int]] = {}
        for lists in found.values():  # the first retriever that locates a best chunk
            for qi, lst in enumerate(lists):
                for r in lst:
                    if r.chunk is not None:
                        where.setdefault((qi, r.doc_id), r.chunk)
        out = []
        for qi, (per, fused) in enumerate(results):
            rank = {n: {i: r for r, (i, _) in enumerate(lst, 1)} for n, lst in per.items()}
            score_of = {n: dict(lst) for n, lst in per.items()}
            hits: list[Hit] = []
            for doc_id, score in fused:
                doc = docs.get(doc_id)
                if doc is None:  # deleted meanwhile
                    continue
                ranks = {n: rank[n][doc_id] for n in per if doc_id in rank[n]}
                scores = {n: score_of[n][doc_id] for n in per if doc_id in score_of[n]}
                best = where.get((qi, doc_id))
                hits.append(Hit(
                    doc_id=doc_id, score=float(score), rank=len(hits) + 1,
                    chunk=best[0] if best else None, span=(best[1], best[2]) if best else None,
                    ranks=ranks, scores=scores, title=doc["title"], text=doc["text"],
                    metadata=doc["metadata"],
                ))  # fmt: skip
            out.append(hits)
        return out

    def dense_scores(self, query: str, doc_ids: Sequence[str]) -> np.ndarray:
        """Stored-vector scores of given documents (see :meth:`Index.dense_scores`)."""
        self._check_open()
        ids = check_request(query, doc_ids)
        if not ids:
            return np.zeros(0, dtype=np.float32)
        got = self._remote.dense_scores(self._encode_queries([query])[0], sorted(set(ids)))
        return np.asarray([got.get(i, -np.inf) for i in ids], dtype=np.float32)

    @property
    def colbert_model(self) -> str | None:
        """None: engines store no ColBERT vectors."""
        return None

    def colbert_scores(self, query: str, doc_ids: Sequence[str], *,
                       chunks: Literal["all", "first"] = "all") -> np.ndarray:  # fmt: skip
        """Refused: engines store no ColBERT vectors (InvalidInput)."""
        raise _unsupported("colbert_scores", self._scheme)

    # --- maintenance ---------------------------------------------------------------------------

    def stats(self) -> IndexStats:
        """Documents, chunks, bytes and model (see :meth:`Index.stats`)."""
        self._check_open()
        s = self._remote.stats()
        enc = self.manifest["encoder"]
        return IndexStats(n_docs=s.n_docs, n_chunks=s.n_chunks, n_deleted=s.n_deleted,
                          bytes=s.bytes, segments=s.segments, model=enc["name"],
                          model_id=enc["model_id"], dim=self.dim,
                          precision=self.precision)  # fmt: skip

    def check(self) -> None:
        """Verify the stored index; raises IndexCorrupt naming what is wrong."""
        self._check_open()
        self._remote.check()

    def compact(self) -> None:
        """Reclaim the space of deleted and replaced documents."""
        self._writable()
        self._remote.compact()

    def set_ann(self, ann: Literal["hnsw"] | None) -> None:
        """Refused (InvalidInput): the engine owns its vector index, chosen at create."""
        own = {"postgres": "pgvector's HNSW index on its chunks table (CREATE/DROP INDEX)",
               "milvus": "its chunks collection's index (HNSW or FLAT)"}  # fmt: skip
        raise InvalidInput(
            f"set_ann (index ann) switches local indexes only: {self.uri} searches through "
            f"{own.get(self._scheme, 'an index the engine keeps')}, set by ann= at create"
        )
