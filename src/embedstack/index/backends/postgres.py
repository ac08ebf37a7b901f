"""PostgreSQL + pgvector as an index's store (``postgresql://…`` targets).

What it keeps and how (tables: :mod:`embedstack.index.backends.pg_sql`):

* documents with JSONB metadata (filters: :mod:`embedstack.index.backends.pg_filters`, the
  local filter language with the local semantics), chunks with their pgvector vectors, and
  BM25 postings (term, document, tf, document length); the live statistics ``N`` and
  the total length are a one-row table updated in every write's transaction, ``df`` is
  counted over the live postings at query time, so a deleted document changes scores
  exactly as if it had never been indexed (Lucene BM25, as
  :mod:`embedstack.index.lexical_scoring`; queries: :mod:`~.pg_search`);
* dense search exact (a scan, MaxP over chunks) or through pgvector's HNSW index
  (``ann="hnsw"``), with an exact fallback whenever the graph's candidates hold fewer than
  ``k`` documents passing the filter, so ``k`` come back whenever ``k`` match;
* every write (a batch, a delete) is ONE transaction: all or nothing. Writers of one index
  take a transaction-scoped advisory lock, so concurrent batches from several processes
  apply one after another (encoding happens before, in parallel); readers never wait
  (MVCC) and each search reads one snapshot.

Read replicas: ``Index.open(replica_uri, readonly=True)`` searches a hot standby (reads
only; replication lag applies). Writes go to the primary.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from embedstack._typing import FloatArray
from embedstack.encoders.sparse_vectors import SparseVectors
from embedstack.errors import (
    IndexCorrupt,
    IndexNotFound,
    InvalidInput,
    MissingDependency,
)
from embedstack.index.backends import pg_search
from embedstack.index.backends.base import Ranked, Store, StoredChunk, StoredDoc, StoreStats
from embedstack.index.backends.pg_sql import (
    METRICS,
    POSTINGS_LAYOUT,
    PgTarget,
    ddl,
    parse_uri,
    upgrade_postings,
)
from embedstack.index.manifest import FORMAT, FORMAT_VERSION

__all__ = ["PostgresStore"]

_REQUIRED = ("format", "format_version", "encoder", "precision", "bm25", "chunking", "ann")


def _psycopg() -> Any:
    try:
        import psycopg
        from pgvector.psycopg import register_vector  # noqa: F401
    except ImportError as exc:
        raise MissingDependency(exc.name or "psycopg", "postgres", "postgresql:// indexes") from exc
    return psycopg


def _connect(target: PgTarget, *, readonly: bool) -> Any:
    psycopg = _psycopg()
    try:
        conn = psycopg.connect(target.conninfo, autocommit=True)
    except psycopg.Error as exc:
        msg = " ".join(str(exc).split())
        raise IndexNotFound(
            f"cannot connect to {target.location}: {msg}", target.location
        ) from None
    if readonly:
        conn.execute("SET default_transaction_read_only = on")
    return conn


def _no_nul(docs: Sequence[StoredDoc]) -> None:
    for d in docs:
        for what, value in (("id", d.id), ("title", d.title), ("text", d.text),
                            ("metadata", d.metadata_json)):  # fmt: skip
            if "\x00" in value or (what == "metadata" and "\\u0000" in value):
                raise InvalidInput(
                    f"document {d.id!r}: its {what} holds a NUL character, which PostgreSQL "
                    "text cannot store; nothing was written"
                )


def _upgrade(conn: Any, target: PgTarget, meta: dict[str, Any],
             readonly: bool) -> dict[str, Any]:  # fmt: skip
    """Bring an index written by an earlier embedstack (postings without the document
    length) to today's layout, in one transaction (a writer only: a reader says how)."""
    if readonly:
        raise IndexCorrupt(
            f"{target.location}: the index was written by an earlier embedstack (BM25 postings "
            "without document lengths); open it once as a writer (readonly=False) to upgrade "
            "it in place"
        )
    Json = _psycopg().types.json.Jsonb
    options = {**meta.get("backend_options", {}), "postings": POSTINGS_LAYOUT}
    meta = {**meta, "backend_options": options}
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))",
                     (f"embedstack:{target.name}",))  # fmt: skip
        row = conn.execute(f'SELECT body FROM "{target.name}".manifest FOR UPDATE').fetchone()
        if row[0].get("backend_options", {}).get("postings", 1) != POSTINGS_LAYOUT:
            for stmt in upgrade_postings(target.name):  # another writer may have done it
                conn.execute(stmt)
            conn.execute(f'UPDATE "{target.name}".manifest SET body = %s', (Json(meta),))
        else:
            meta = row[0]
    conn.execute(f'VACUUM (ANALYZE) "{target.name}".postings')
    return meta


class PostgresStore(Store):
    """One index in a PostgreSQL schema; see the module docstring."""

    supports_sparse = True
    concurrent_writers = True

    def __init__(self, target: PgTarget, conn: Any, manifest: dict[str, Any],
                 readonly: bool) -> None:  # fmt: skip
        from pgvector.psycopg import register_vector

        self._psycopg = _psycopg()
        self.target = target
        self.location = target.location
        self.schema = target.name
        self.manifest = manifest
        self.readonly = readonly
        self._conn = conn
        register_vector(conn)
        metric = manifest.get("backend_options", {}).get("metric", "ip")
        self.sql = pg_search.Queries(self.schema, METRICS[metric][0], manifest["ann"] == "hnsw",
                                     manifest["bm25"]["k1"], manifest["bm25"]["b"])  # fmt: skip
        self._known_keys: set[str] = set()

    # --- lifecycle ---------------------------------------------------------------------------

    @classmethod
    def create(cls, uri: str, manifest: dict[str, Any]) -> PostgresStore:
        target = parse_uri(uri)
        conn = _connect(target, readonly=False)
        try:
            metric = target.metric or "ip"
            meta = {**manifest, "backend_options": {"metric": metric, "schema": target.name,
                                                    "postings": POSTINGS_LAYOUT}}  # fmt: skip
            opclass = METRICS[metric][1] if manifest["ann"] == "hnsw" else None
            Json = _psycopg().types.json.Jsonb
            with conn.transaction():
                if conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'vector'").fetchone() \
                        is None:  # fmt: skip
                    conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
                exists = conn.execute(
                    "SELECT 1 FROM information_schema.tables WHERE table_schema = %s "
                    "AND table_name = 'manifest'", (target.name,)).fetchone()  # fmt: skip
                if exists:
                    raise InvalidInput(
                        f"{target.location} already holds an index named {target.name!r}; "
                        "use Index.open(), or another ?index=NAME"
                    )
                conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{target.name}"')
                for stmt in ddl(target.name, int(manifest["encoder"]["dim"]), opclass,
                                sparse=bool(manifest.get("sparse"))):  # fmt: skip
                    conn.execute(stmt)
                conn.execute(f'INSERT INTO "{target.name}".manifest VALUES (1, %s)', (Json(meta),))
            return cls(target, conn, meta, readonly=False)
        except BaseException:
            conn.close()
            raise

    @classmethod
    def open(cls, uri: str, readonly: bool) -> PostgresStore:
        target = parse_uri(uri)
        conn = _connect(target, readonly=readonly)
        try:
            exists = conn.execute(
                "SELECT 1 FROM information_schema.tables WHERE table_schema = %s "
                "AND table_name = 'manifest'", (target.name,)).fetchone()  # fmt: skip
            if not exists:
                raise IndexNotFound(
                    f"no index named {target.name!r} at {target.location}: create one with "
                    "Index.create()",
                    target.location,
                )
            row = conn.execute(f'SELECT body FROM "{target.name}".manifest').fetchone()
            meta = row[0] if row else None
            if not isinstance(meta, dict) or any(k not in meta for k in _REQUIRED):
                raise IndexCorrupt(f"{target.location}: the manifest table holds no manifest")
            if meta["format"] != FORMAT or meta["format_version"] != FORMAT_VERSION:
                raise IndexCorrupt(
                    f"{target.location}: unsupported format {meta['format']!r} "
                    f"v{meta['format_version']!r} (this library reads {FORMAT!r} v{FORMAT_VERSION})"
                )
            if meta.get("backend_options", {}).get("postings", 1) != POSTINGS_LAYOUT:
                meta = _upgrade(conn, target, meta, readonly)
            return cls(target, conn, meta, readonly)
        except BaseException:
            conn.close()
            raise

    def close(self) -> None:
        self._conn.close()

    @contextmanager
    def _read(self) -> Iterator[Any]:
        """One snapshot for the statements of one read."""
        with self._conn.transaction():
            self._conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            yield self._conn

    @contextmanager
    def _write(self) -> Iterator[Any]:
        """One transaction, after this index's other writers (advisory lock)."""
        with self._conn.transaction():
            self._conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))",
                               (f"embedstack:{self.schema}",))  # fmt: skip
            yield self._conn
        self._known_keys.clear()

    # --- writes ------------------------------------------------------------------------------

    def existing(self, ids: Sequence[str]) -> dict[str, str]:
        rows = self._conn.execute(
            f'SELECT doc_id, content_hash FROM "{self.schema}".docs WHERE doc_id = ANY(%s)',
            (list(ids),),
        ).fetchall()
        return dict(rows)

    def write(self, docs: Sequence[StoredDoc], chunks: Sequence[StoredChunk],
              vectors: FloatArray, *, replace: bool,
              sparse: SparseVectors | None = None) -> None:  # fmt: skip
        _no_nul(docs)
        if bool(self.manifest.get("sparse")) != (sparse is not None) or (
                sparse is not None and len(sparse) != len(chunks)):  # fmt: skip
            raise InvalidInput("a write needs SPLADE vectors, one row per chunk, exactly "
                               "when the index was created with sparse=")  # fmt: skip
        try:
            self._insert(docs, chunks, vectors, replace, sparse)
        except self._psycopg.DataError as exc:  # a value PostgreSQL refuses (NaN vector...)
            msg = " ".join(str(exc).split())[:300]
            raise InvalidInput(
                f"PostgreSQL refused the batch ({msg}); nothing was written"
            ) from None

    def _insert(self, docs: Sequence[StoredDoc], chunks: Sequence[StoredChunk],
                vectors: FloatArray, replace: bool,
                sparse: SparseVectors | None) -> None:  # fmt: skip
        s = f'"{self.schema}"'
        with self._write() as conn:
            old = conn.execute(
                f"SELECT key, doc_id, length FROM {s}.docs WHERE doc_id = ANY(%s) FOR UPDATE",
                ([d.id for d in docs],),
            ).fetchall()
            if old and not replace:
                raise InvalidInput(f"ids already in the index: {sorted(r[1] for r in old)[:5]}; "
                                   "use upsert() to replace them; nothing was written")  # fmt: skip
            if old:
                conn.execute(f"DELETE FROM {s}.docs WHERE key = ANY(%s)", ([r[0] for r in old],))
            keys = [r[0] for r in conn.execute(
                f"SELECT nextval(pg_get_serial_sequence('{s}.docs', 'key')) "
                "FROM generate_series(1, %s)", (len(docs),)).fetchall()]  # fmt: skip
            cur = conn.cursor()
            with cur.copy(f"COPY {s}.docs (key, doc_id, title, text, metadata, content_hash, "
                          "length) FROM STDIN") as cp:  # fmt: skip
                for key, d in zip(keys, docs, strict=True):
                    cp.write_row((key, d.id, d.title, d.text, d.metadata_json, d.content_hash,
                                  d.length))  # fmt: skip
            with cur.copy(f"COPY {s}.chunks (doc_key, chunk_no, start_char, end_char, "
                          "embedding) FROM STDIN") as cp:  # fmt: skip
                for c, vec in zip(chunks, vectors, strict=True):
                    cp.write_row((keys[c.doc], c.chunk_no, c.start, c.end, vec))
            with cur.copy(f"COPY {s}.postings (term, doc_key, tf, dl) FROM STDIN") as cp:
                for key, d in zip(keys, docs, strict=True):
                    for term, tf in d.terms.items():
                        cp.write_row((term, key, tf, d.length))
            if sparse is not None:
                with cur.copy(f"COPY {s}.sparse (term, doc_key, chunk_no, weight) "
                              "FROM STDIN") as cp:  # fmt: skip
                    for n, c in enumerate(chunks):
                        ids, weights = sparse.row(n)
                        for t, w in zip(ids.tolist(), weights.tolist(), strict=True):
                            cp.write_row((t, keys[c.doc], c.chunk_no, w))
            n_docs = conn.execute(
                f"UPDATE {s}.totals SET n_docs = n_docs + %s, total_length = total_length + %s "
                "RETURNING n_docs",
                (len(docs) - len(old), sum(d.length for d in docs) - sum(r[2] for r in old)),
            ).fetchone()[0]
        if 10 * len(docs) >= n_docs:  # a bulk load: plan the next queries on fresh statistics,
            for table in ("docs", "chunks"):  # and mark the postings' pages all-visible so
                conn.execute(f"ANALYZE {s}.{table}")  # that BM25 reads only their index
            conn.execute(f"VACUUM (ANALYZE) {s}.postings")

    def delete(self, ids: Sequence[str]) -> int:
        s = f'"{self.schema}"'
        with self._write() as conn:
            old = conn.execute(
                f"SELECT key, doc_id, length FROM {s}.docs WHERE doc_id = ANY(%s) FOR UPDATE",
                (list(ids),),
            ).fetchall()
            found = {r[1] for r in old}
            missing = [i for i in ids if i not in found]
            if missing:
                raise InvalidInput(f"ids not in the index: {missing[:5]}; nothing was deleted")
            conn.execute(f"DELETE FROM {s}.docs WHERE key = ANY(%s)", ([r[0] for r in old],))
            conn.execute(
                f"UPDATE {s}.totals SET n_docs = n_docs - %s, total_length = total_length - %s",
                (len(old), sum(r[2] for r in old)),
            )
        return len(old)

    # --- reads -------------------------------------------------------------------------------

    def docs(self, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        rows = self._conn.execute(
            f'SELECT doc_id, title, text, metadata FROM "{self.schema}".docs '
            "WHERE doc_id = ANY(%s)", (list(ids),)).fetchall()  # fmt: skip
        return {r[0]: {"id": r[0], "title": r[1], "text": r[2], "metadata": r[3]} for r in rows}

    def _filter(self, conn: Any, flt: dict[str, Any] | None) -> tuple[str, list[Any]]:
        if not flt:
            return "true", []
        sql, params, keys = pg_search.compile_pg(flt)
        for key in keys:
            if key not in self._known_keys:
                if not self.sql.has_key(conn, key):
                    raise InvalidInput(
                        f"filter on a missing key: no document has metadata key {key!r}"
                    )
                self._known_keys.add(key)
        return sql, params

    def search_dense(self, queries: FloatArray, k: int,
                     flt: dict[str, Any] | None) -> list[list[Ranked]]:  # fmt: skip
        with self._read() as conn:
            where = self._filter(conn, flt)
            return [self.sql.dense(conn, q, k, where) for q in queries]

    def search_bm25(self, queries: Sequence[Sequence[str]], k: int,
                    flt: dict[str, Any] | None) -> list[list[Ranked]]:  # fmt: skip
        with self._read() as conn:
            where = self._filter(conn, flt)
            return [self.sql.bm25(conn, list(q), k, where) for q in queries]

    def search_sparse(self, queries: SparseVectors, k: int,
                      flt: dict[str, Any] | None) -> list[list[Ranked]]:  # fmt: skip
        if not self.manifest.get("sparse"):
            return super().search_sparse(queries, k, flt)
        with self._read() as conn:
            where = self._filter(conn, flt)
            rows = [queries.row(i) for i in range(len(queries))]
            return [self.sql.sparse(conn, ids.tolist(), w.astype("float64").tolist(), k, where)
                    for ids, w in rows]  # fmt: skip

    def dense_scores(self, query: FloatArray, ids: Sequence[str]) -> dict[str, float]:
        with self._read() as conn:
            return self.sql.scores(conn, query, list(ids))

    # --- maintenance ---------------------------------------------------------------------------

    def count(self) -> int:
        row = self._conn.execute(f'SELECT n_docs FROM "{self.schema}".totals').fetchone()
        return int(row[0])

    def stats(self) -> StoreStats:
        s = self.schema
        with self._read() as conn:
            n_docs = int(conn.execute(f'SELECT n_docs FROM "{s}".totals').fetchone()[0])
            n_chunks = int(conn.execute(f'SELECT count(*) FROM "{s}".chunks').fetchone()[0])
            size = {
                part: int(
                    conn.execute(
                        "SELECT pg_total_relation_size(%s)", (f'"{s}".{table}',)
                    ).fetchone()[0]
                )  # fmt: skip
                for part, table in (
                    ("docs", "docs"),
                    ("dense", "chunks"),
                    ("lexical", "postings"),
                    *((("sparse", "sparse"),) if self.manifest.get("sparse") else ()),
                )
            }
        size["total"] = sum(size.values())
        return StoreStats(n_docs, n_chunks, 0, size, 0)

    def check(self) -> None:
        problems = pg_search.check(self._conn, self.schema, int(self.manifest["encoder"]["dim"]))
        if problems:
            raise IndexCorrupt(f"{self.location}: " + "; ".join(problems))

    def compact(self) -> None:
        sparse = ("sparse",) if self.manifest.get("sparse") else ()
        for table in ("docs", "chunks", "postings", "totals", *sparse):
            self._conn.execute(f'VACUUM "{self.schema}".{table}')
