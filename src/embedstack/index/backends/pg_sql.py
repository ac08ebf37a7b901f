"""The PostgreSQL side of :mod:`embedstack.index.backends.postgres`: URIs and the schema.

URI::

    postgresql://USER:PASSWORD@HOST:PORT/DATABASE?index=NAME[&metric=ip|cosine][&…libpq]

``index`` names the index (default ``embedstack``): a PostgreSQL schema of that name holds
its tables, so many indexes share one database. ``metric`` (read at create, recorded) picks
the pgvector operator and HNSW operator class: ``ip`` (inner product, the default) or
``cosine``; stored vectors are L2-normalized, so both rank alike and scores are the cosine.
Every other query parameter (``host=/run/postgresql``, ``sslmode=require``,
``target_session_attrs=…``) is passed to libpq unchanged.

Tables of schema ``NAME``::

    manifest  (id = 1, body jsonb)          the index manifest, as a local manifest.json
    docs      (key bigserial, doc_id text UNIQUE, title, text, metadata jsonb,
               content_hash, length int)     length: BM25 document length
    chunks    (doc_key → docs ON DELETE CASCADE, chunk_no, start_char, end_char,
               embedding vector(dim))        HNSW index on embedding when ann='hnsw'
    postings  (term text, doc_key → docs ON DELETE CASCADE, tf int, dl int)
                                             BM25 postings; dl is the document's length,
                                             copied so that scoring reads no other table,
                                             and the key (term, doc_key) INCLUDEs tf and dl
                                             so that a query is an index-only scan
    totals    (id = 1, n_docs, total_length) live BM25 statistics, kept in each write's
                                             transaction
    sparse    (term int, doc_key → docs ON DELETE CASCADE, chunk_no, weight real)
                                             SPLADE postings of each chunk (only for an
                                             index created with ``sparse=``)

pgvector 0.6 has no sparse vector type (``sparsevec`` came in 0.7), so SPLADE weights are
postings in a table, like BM25's, and scored by SQL: ``sum(query weight * weight)`` per
chunk over the query's terms (the primary key ``(term, doc_key, chunk_no)`` is the inverted
index), the best chunk per document.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from embedstack.errors import InvalidInput

__all__ = [
    "DEFAULT_INDEX",
    "METRICS",
    "POSTINGS_LAYOUT",
    "PgTarget",
    "ddl",
    "parse_uri",
    "upgrade_postings",
]

# an index-only scan reads the heap for every posting on a page not yet marked all-visible
# by a vacuum (3.5x slower BM25 at 20k documents before the first one): autovacuum after 5 %
# new postings instead of PostgreSQL's default 20 %
_POSTINGS_VACUUM = "autovacuum_vacuum_insert_scale_factor = 0.05"

# the postings' layout, recorded in the manifest's backend_options as "postings":
# 1 (absent): (term, doc_key, tf); 2: the document length copied in, covered by the key
POSTINGS_LAYOUT = 2

DEFAULT_INDEX = "embedstack"
METRICS = {"ip": ("<#>", "vector_ip_ops"), "cosine": ("<=>", "vector_cosine_ops")}
_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_RESERVED = ("public", "information_schema")


@dataclass(frozen=True)
class PgTarget:
    """A parsed URI: ``conninfo`` for libpq, the index (schema) ``name``, the ``metric``
    asked for (None: not given), and ``location`` (the URI without password) for
    messages."""

    conninfo: str
    name: str
    metric: str | None
    location: str


def parse_uri(uri: str) -> PgTarget:
    """Split ``uri`` into libpq's part and ours.

    Raises:
        InvalidInput: a bad index name (lower-case letters, digits and ``_``, at most 63,
            not ``public`` or ``pg_*``) or metric, or a parameter given twice.
    """
    parts = urlsplit(uri)
    query = parse_qsl(parts.query, keep_blank_values=True)
    names = [k for k, _ in query]
    if len(set(names)) != len(names):
        raise InvalidInput(f"a parameter is given twice in {uri!r}")
    ours = {k: v for k, v in query if k in ("index", "metric")}
    rest = [(k, v) for k, v in query if k not in ours]
    name = ours.get("index", DEFAULT_INDEX)
    if not _NAME.match(name) or name in _RESERVED or name.startswith("pg_"):
        raise InvalidInput(
            f"invalid index name {name!r} in {uri!r}: use lower-case letters, digits and _, "
            "at most 63 characters, not 'public' or 'pg_*' (it names a PostgreSQL schema)"
        )
    metric = ours.get("metric")
    if metric is not None and metric not in METRICS:
        raise InvalidInput(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")
    conninfo = urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(rest), ""))
    netloc = parts.netloc
    if parts.password:
        netloc = netloc.replace(f":{parts.password}@", ":***@", 1)
    location = urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))
    return PgTarget(conninfo, name, metric, location)


def ddl(schema: str, dim: int, hnsw_opclass: str | None, *, sparse: bool = False) -> list[str]:
    """The statements creating an index's tables in ``schema`` (already validated as a
    plain identifier, so quoting it is enough); ``sparse``: with the SPLADE postings."""
    s = f'"{schema}"'
    out = [
        f"CREATE TABLE {s}.manifest (id int PRIMARY KEY CHECK (id = 1), body jsonb NOT NULL)",
        f"CREATE TABLE {s}.docs (key bigserial PRIMARY KEY, doc_id text NOT NULL UNIQUE, "
        "title text NOT NULL, text text NOT NULL, metadata jsonb NOT NULL, "
        "content_hash text NOT NULL, length int NOT NULL)",
        f"CREATE TABLE {s}.chunks (doc_key bigint NOT NULL REFERENCES {s}.docs (key) "
        "ON DELETE CASCADE, chunk_no int NOT NULL, start_char int NOT NULL, "
        f"end_char int NOT NULL, embedding vector({int(dim)}) NOT NULL, "
        "PRIMARY KEY (doc_key, chunk_no))",
        f"CREATE TABLE {s}.postings (term text NOT NULL, doc_key bigint NOT NULL "
        f"REFERENCES {s}.docs (key) ON DELETE CASCADE, tf int NOT NULL, dl int NOT NULL, "
        f"PRIMARY KEY (term, doc_key) INCLUDE (tf, dl)) WITH ({_POSTINGS_VACUUM})",
        f"CREATE INDEX ON {s}.postings (doc_key)",
        f"CREATE TABLE {s}.totals (id int PRIMARY KEY CHECK (id = 1), n_docs bigint NOT NULL, "
        "total_length bigint NOT NULL)",
        f"INSERT INTO {s}.totals VALUES (1, 0, 0)",
    ]
    if sparse:
        out += [
            f"CREATE TABLE {s}.sparse (term int NOT NULL, doc_key bigint NOT NULL "
            f"REFERENCES {s}.docs (key) ON DELETE CASCADE, chunk_no int NOT NULL, "
            "weight real NOT NULL, PRIMARY KEY (term, doc_key, chunk_no))",
            f"CREATE INDEX ON {s}.sparse (doc_key)",
        ]
    if hnsw_opclass is not None:
        out.append(f"CREATE INDEX ON {s}.chunks USING hnsw (embedding {hnsw_opclass})")
    return out


def upgrade_postings(schema: str) -> list[str]:
    """The statements taking layout-1 postings (no ``dl``) in ``schema`` to layout 2, to run
    in one transaction: the length copied from each document, the key rebuilt to cover it."""
    s = f'"{schema}"'
    return [
        f"ALTER TABLE {s}.postings ADD COLUMN dl int",
        f"UPDATE {s}.postings p SET dl = d.length FROM {s}.docs d WHERE d.key = p.doc_key",
        f"ALTER TABLE {s}.postings ALTER COLUMN dl SET NOT NULL",
        f"ALTER TABLE {s}.postings DROP CONSTRAINT postings_pkey",
        f"ALTER TABLE {s}.postings ADD PRIMARY KEY (term, doc_key) INCLUDE (tf, dl)",
        f"ALTER TABLE {s}.postings SET ({_POSTINGS_VACUUM})",
    ]
