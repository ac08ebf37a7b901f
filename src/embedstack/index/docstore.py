"""The document store: SQLite (WAL) holding documents, chunks and the dense segment registry.

SQLite is the single source of truth of an :class:`~embedstack.index.Index`: a document
exists exactly when its row is in ``docs``, and a dense vector row is live exactly when a
``chunks`` row points at it. Every write of the index commits here last (adds) or first
(deletes), in one transaction.

Schema (numbered migrations, recorded in ``schema_migrations``)::

    meta(name TEXT PRIMARY KEY, value INTEGER)        counters: next_key, next_segment
    docs(key INTEGER PRIMARY KEY, id TEXT UNIQUE, title, text, metadata JSON, content_hash)
    chunks(doc_key, chunk_no, start, end, segment, row)  PRIMARY KEY (doc_key, chunk_no)
    segments(id INTEGER PRIMARY KEY, file TEXT, n_rows INTEGER, created_at TEXT)

Document keys and segment numbers are reserved from ``meta`` in their own transaction before
any file is written, so a key or a segment file name is never reused, even after a crash.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from embedstack._typing import IntArray
from embedstack.errors import IndexCorrupt, InvalidInput
from embedstack.index.filters import compile_filter, json_path

__all__ = ["DocRow", "DocStore", "parse_metadata"]

FILE = "docs.sqlite"
_BATCH = 500  # ids per IN (...) query

MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
    INSERT INTO meta VALUES ('next_key', 1), ('next_segment', 1);
    CREATE TABLE docs (
        key INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        title TEXT NOT NULL,
        text TEXT NOT NULL,
        metadata TEXT NOT NULL CHECK (json_valid(metadata)),
        content_hash TEXT NOT NULL
    );
    CREATE TABLE segments (
        id INTEGER PRIMARY KEY,
        file TEXT NOT NULL UNIQUE,
        n_rows INTEGER NOT NULL,
        created_at TEXT NOT NULL
    );
    CREATE TABLE chunks (
        doc_key INTEGER NOT NULL REFERENCES docs(key),
        chunk_no INTEGER NOT NULL,
        start INTEGER NOT NULL,
        "end" INTEGER NOT NULL,
        segment INTEGER NOT NULL REFERENCES segments(id),
        row INTEGER NOT NULL,
        PRIMARY KEY (doc_key, chunk_no)
    );
    CREATE UNIQUE INDEX chunks_by_row ON chunks(segment, row);
    """,
)


#: A document's stored fields: ``(id, title, text, metadata JSON)``.
DocRow = tuple[str, str, str, str]


def parse_metadata(text: str) -> dict[str, Any]:
    """A document's metadata from its stored JSON (most documents have none: ``{}``)."""
    if text == "{}":
        return {}
    value: dict[str, Any] = json.loads(text)
    return value


def _ints(text: str | None) -> IntArray:
    """The integers of a ``group_concat`` of integers (None: no rows)."""
    if not text:
        return np.zeros(0, dtype=np.int64)
    return np.fromstring(text, dtype=np.int64, sep=",")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class DocStore:
    """A connection to ``docs.sqlite``; see the module docstring for the schema.

    Args:
        path: the index directory.
        readonly: refuse writes (``PRAGMA query_only``); readers need no lock.
        create: create the database and run the migrations.
    """

    def __init__(self, path: Path, *, readonly: bool = False, create: bool = False) -> None:
        self.file = path / FILE
        if not create and not self.file.is_file():
            raise IndexCorrupt(f"{self.file} is missing")
        try:
            self.conn = sqlite3.connect(
                self.file, isolation_level=None, check_same_thread=False, timeout=30.0
            )
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=FULL")
            if not readonly:
                self._migrate()
            else:
                self.conn.execute("PRAGMA query_only=1")
                self._check_version()
        except sqlite3.DatabaseError as exc:
            raise IndexCorrupt(f"cannot open {self.file}: {exc}") from exc

    def close(self) -> None:
        self.conn.close()

    # --- schema ------------------------------------------------------------------------------

    def _version(self) -> int:
        try:
            row = self.conn.execute("SELECT max(version) FROM schema_migrations").fetchone()
        except sqlite3.OperationalError as exc:
            raise IndexCorrupt(f"{self.file} has no schema_migrations table") from exc
        return int(row[0] or 0)

    def _check_version(self) -> None:
        version = self._version()
        if version != len(MIGRATIONS):
            raise IndexCorrupt(
                f"{self.file} is at schema version {version}; this library reads "
                f"{len(MIGRATIONS)} (open it once as a writer to migrate)"
                if version < len(MIGRATIONS)
                else f"{self.file} has schema {version}, newer than this library "
                f"({len(MIGRATIONS)}): upgrade embedstack"
            )

    def _migrate(self) -> None:
        self.conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations "
            "(version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)"
        )
        version = self._version()
        if version > len(MIGRATIONS):
            self._check_version()
        for number in range(version + 1, len(MIGRATIONS) + 1):
            with self.transaction():
                for statement in MIGRATIONS[number - 1].split(";"):
                    if statement.strip():
                        self.conn.execute(statement)
                self.conn.execute("INSERT INTO schema_migrations VALUES (?, ?)", (number, _now()))

    def transaction(self) -> _Transaction:
        """``with store.transaction():`` — BEGIN IMMEDIATE ... COMMIT, ROLLBACK on error."""
        return _Transaction(self.conn)

    def data_version(self) -> int:
        """Changes whenever another connection commits (``PRAGMA data_version``)."""
        return int(self.conn.execute("PRAGMA data_version").fetchone()[0])

    # --- reservations ------------------------------------------------------------------------

    def reserve(self, n_keys: int) -> tuple[int, int]:
        """Reserve ``n_keys`` document keys and one segment number; returns their starts."""
        with self.transaction():
            first_key = self._meta("next_key")
            segment = self._meta("next_segment")
            self.conn.execute("UPDATE meta SET value = ? WHERE name = 'next_key'",
                              (first_key + n_keys,))  # fmt: skip
            self.conn.execute(
                "UPDATE meta SET value = ? WHERE name = 'next_segment'", (segment + 1,)
            )
        return first_key, segment

    def _meta(self, name: str) -> int:
        return int(
            self.conn.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()[0]
        )

    # --- reads -------------------------------------------------------------------------------

    def count(self) -> int:
        return int(self.conn.execute("SELECT count(*) FROM docs").fetchone()[0])

    def count_chunks(self) -> int:
        return int(self.conn.execute("SELECT count(*) FROM chunks").fetchone()[0])

    def live_keys(self) -> IntArray:
        """``(n_docs,)`` int64 keys of every live document, ascending."""
        (keys,) = self._columns("SELECT group_concat(key) FROM docs")
        return np.sort(keys)

    def _columns(self, query: str, params: Sequence[object] = ()) -> list[IntArray]:
        """The integer columns of ``query``, one ``group_concat(x)`` aggregate each.

        One row of comma-separated numbers per column, parsed in C: some ten times faster
        than a Python tuple per row at a million rows (what opening an index reads). The
        aggregates of one query step over the same rows, so the columns stay aligned.
        """
        try:
            row = self.conn.execute(query, params).fetchone()
        except sqlite3.DataError:  # beyond SQLite's string limit (~1e8 rows): row by row
            plain, n_cols = re.subn(r"group_concat\((\w+)\)", r"\1", query)
            rows = self.conn.execute(plain, params).fetchall()
            return list(np.array(rows, dtype=np.int64).reshape(len(rows), n_cols).T)
        try:
            cols = [_ints(text) for text in row]
        except ValueError as exc:
            raise IndexCorrupt(f"{self.file}: unreadable integers from {query!r}") from exc
        if len({len(c) for c in cols}) > 1:
            raise IndexCorrupt(f"{self.file}: columns of {query!r} disagree in length")
        return cols

    def existing(self, ids: Sequence[str]) -> dict[str, tuple[int, str]]:
        """``{id: (key, content_hash)}`` for the given ids that exist."""
        out: dict[str, tuple[int, str]] = {}
        for i in range(0, len(ids), _BATCH):
            part = list(ids[i : i + _BATCH])
            marks = ",".join("?" * len(part))
            query = f"SELECT id, key, content_hash FROM docs WHERE id IN ({marks})"
            for doc_id, key, digest in self.conn.execute(query, part):
                out[doc_id] = (int(key), digest)
        return out

    def docs_by_key(self, keys: Iterable[int]) -> dict[int, dict[str, Any]]:
        """``{key: {"id", "title", "text", "metadata"}}`` of the given live keys."""
        return {
            key: {"id": row[0], "title": row[1], "text": row[2],
                  "metadata": parse_metadata(row[3])}
            for key, row in self.rows_by_key(keys).items()
        }  # fmt: skip

    def rows_by_key(self, keys: Iterable[int]) -> dict[int, DocRow]:
        """``{key: (id, title, text, metadata JSON)}`` of the given live keys: one query
        per 500 keys, metadata left unparsed (:func:`parse_metadata` it when needed)."""
        keys = list(keys)
        out: dict[int, DocRow] = {}
        for i in range(0, len(keys), _BATCH):
            part = keys[i : i + _BATCH]
            marks = ",".join("?" * len(part))
            query = f"SELECT key, id, title, text, metadata FROM docs WHERE key IN ({marks})"
            out.update((row[0], row[1:]) for row in self.conn.execute(query, part))
        return out

    def ids_by_key(self, keys: Iterable[int]) -> dict[int, str]:
        """``{key: id}`` of the given live keys."""
        keys = list(keys)
        out: dict[int, str] = {}
        for i in range(0, len(keys), _BATCH):
            part = keys[i : i + _BATCH]
            marks = ",".join("?" * len(part))
            for key, doc_id in self.conn.execute(
                f"SELECT key, id FROM docs WHERE key IN ({marks})", part
            ):
                out[int(key)] = doc_id
        return out

    def get(self, doc_id: str) -> dict[str, Any] | None:
        row = self.conn.execute(
            "SELECT id, title, text, metadata FROM docs WHERE id = ?", (doc_id,)
        ).fetchone()
        if row is None:
            return None
        return {"id": row[0], "title": row[1], "text": row[2], "metadata": json.loads(row[3])}

    def chunk_spans(
        self, pairs: Sequence[tuple[int, int]]
    ) -> dict[tuple[int, int], tuple[int, int, int]]:
        """``{(segment, row): (chunk_no, start, end)}`` for live chunk rows."""
        out: dict[tuple[int, int], tuple[int, int, int]] = {}
        for seg, row in pairs:
            hit = self.conn.execute(
                'SELECT chunk_no, start, "end" FROM chunks WHERE segment = ? AND row = ?',
                (seg, row),
            ).fetchone()
            if hit is not None:
                out[(seg, row)] = (int(hit[0]), int(hit[1]), int(hit[2]))
        return out

    def segments(self) -> list[tuple[int, str, int]]:
        """``[(id, file, n_rows)]`` of the registered dense segments, by id."""
        rows = self.conn.execute("SELECT id, file, n_rows FROM segments ORDER BY id").fetchall()
        return [(int(a), str(b), int(c)) for a, b, c in rows]

    def row_keys(self, segment: int, n_rows: int) -> IntArray:
        """``(n_rows,)`` int64 doc key of each row of ``segment``, -1 for dead rows."""
        return self.all_row_keys([(segment, n_rows)])[segment]

    def all_row_keys(self, segments: Sequence[tuple[int, int]]) -> dict[int, IntArray]:
        """:meth:`row_keys` of every ``(segment, n_rows)``, from one scan of ``chunks``.

        Raises:
            IndexCorrupt: a chunk of one of ``segments`` points outside its rows.
        """
        cols = "group_concat(segment), group_concat(row), group_concat(doc_key)"
        if len(segments) == 1:  # one new segment (a write): its rows only, by the index
            seg, rows, keys = self._columns(
                f"SELECT {cols} FROM chunks WHERE segment = ?", (segments[0][0],)
            )
        else:
            seg, rows, keys = self._columns(f"SELECT {cols} FROM chunks")
        order = np.argsort(seg, kind="stable")
        ids = np.array([sid for sid, _ in segments], dtype=np.int64)
        starts = np.searchsorted(seg[order], ids, side="left").tolist()
        stops = np.searchsorted(seg[order], ids, side="right").tolist()
        out: dict[int, IntArray] = {}
        for (sid, n_rows), lo, hi in zip(segments, starts, stops, strict=True):
            mine = order[lo:hi]
            at = rows[mine]
            if len(at) and (at.min() < 0 or at.max() >= n_rows):
                raise IndexCorrupt(f"{self.file}: a chunk points outside segment {sid}'s rows")
            out[sid] = np.full(n_rows, -1, dtype=np.int64)
            out[sid][at] = keys[mine]
        return out

    def filter_keys(self, flt: dict[str, Any], known: set[str]) -> IntArray:
        """Keys of live documents matching ``flt`` (see :mod:`embedstack.index.filters`),
        ascending.

        Args:
            flt: the filter.
            known: keys already known to exist in some document (a cache the caller keeps;
                keys found to exist are added).

        Raises:
            InvalidInput: bad filter, or a key no document has.
        """
        sql, params, keys = compile_filter(flt)
        for key in keys:
            if key in known:
                continue
            found = self.conn.execute(
                "SELECT 1 FROM docs WHERE json_type(metadata, ?) IS NOT NULL LIMIT 1",
                (json_path(key),),
            ).fetchone()
            if found is None:
                raise InvalidInput(f"filter on a missing key: no document has metadata key {key!r}")
            known.add(key)
        rows = self.conn.execute(
            f"SELECT key FROM docs WHERE {sql} ORDER BY key", params
        ).fetchall()
        return np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))

    # --- writes (inside a transaction) ---------------------------------------------------------

    def insert_docs(self, rows: Iterable[tuple[int, str, str, str, str, str]]) -> None:
        """Insert ``(key, id, title, text, metadata_json, content_hash)`` rows."""
        self.conn.executemany("INSERT INTO docs VALUES (?, ?, ?, ?, ?, ?)", rows)

    def insert_chunks(self, rows: Iterable[tuple[int, int, int, int, int, int]]) -> None:
        """Insert ``(doc_key, chunk_no, start, end, segment, row)`` rows."""
        self.conn.executemany("INSERT INTO chunks VALUES (?, ?, ?, ?, ?, ?)", rows)

    def register_segment(self, segment: int, file: str, n_rows: int) -> None:
        self.conn.execute(
            "INSERT INTO segments VALUES (?, ?, ?, ?)", (segment, file, n_rows, _now())
        )

    def delete_keys(self, keys: Sequence[int]) -> None:
        for i in range(0, len(keys), _BATCH):
            part = list(keys[i : i + _BATCH])
            marks = ",".join("?" * len(part))
            self.conn.execute(f"DELETE FROM chunks WHERE doc_key IN ({marks})", part)
            self.conn.execute(f"DELETE FROM docs WHERE key IN ({marks})", part)

    def drop_segment(self, segment: int) -> None:
        self.conn.execute("DELETE FROM segments WHERE id = ?", (segment,))

    def move_rows(self, moves: Iterable[tuple[int, int, int, int]]) -> None:
        """Repoint chunks: ``(new_segment, new_row, old_segment, old_row)``."""
        self.conn.executemany(
            "UPDATE chunks SET segment = ?, row = ? WHERE segment = ? AND row = ?", moves
        )

    def vacuum(self) -> None:
        self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self.conn.execute("VACUUM")
        self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def integrity(self) -> list[str]:
        """Problems reported by ``PRAGMA integrity_check`` and the foreign-key check."""
        rows = [r[0] for r in self.conn.execute("PRAGMA integrity_check").fetchall()]
        problems = [r for r in rows if r != "ok"]
        problems += [
            f"dangling reference {r}" for r in self.conn.execute("PRAGMA foreign_key_check")
        ]
        return problems


class _Transaction:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> sqlite3.Connection:
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.conn.execute("COMMIT")
        else:
            self.conn.execute("ROLLBACK")
