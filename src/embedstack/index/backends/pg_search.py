"""The search statements of :mod:`embedstack.index.backends.postgres`.

* Dense, exact: every chunk passing the filter is scored (``query · vector`` by pgvector's
  operator), each document keeps its best chunk (``DISTINCT ON``), the ``k`` best documents
  by score (as float32, like the local index) then doc id in code-point order
  (``COLLATE "C"``).
* Dense, HNSW: the graph's nearest chunks (``ORDER BY embedding <op> q LIMIT m`` with
  ``hnsw.ef_search = m``, m = 10 k between 100 and pgvector's maximum of 1000), then the
  filter and the per-document maximum over them; when they hold fewer than ``k`` documents the exact
  statement answers, so a filtered search returns ``k`` whenever ``k`` documents match.
* BM25: Lucene's formula (:mod:`embedstack.index.lexical_scoring`), in the same snapshot:
  ``N`` and the average length from the ``totals`` row, ``df`` counted over the live
  postings of the query's terms, ``idf(t) = log1p((N - df + 0.5) / (df + 0.5))`` computed
  here as the local scorer does, then one statement sums
  ``idf * tf / (tf + k1 * (1 - b + b * dl / avgdl)) * count(t in query)`` per document,
  in the local scorer's order of operations. The postings carry ``dl`` and their key covers
  ``tf`` and ``dl``, so without a filter the sums are an index-only scan grouped by the
  document's integer key; only the best ``k`` (with every document tied with the k-th, so
  the doc-id tie-break stays exact) are joined to their ids. A filter joins every matching
  posting to its document.
* Sparse (SPLADE): ``sum(query weight * weight)`` per chunk over the postings of the
  query's terms (float8 sums of the stored float4 weights, as the local scorer's float64),
  each document's best chunk, the ``k`` best documents by the same order.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from embedstack._typing import FloatArray
from embedstack.index.backends.base import Ranked
from embedstack.index.backends.pg_filters import compile_pg, key_path

__all__ = ["Queries", "check", "compile_pg"]

_EF_MAX = 1000  # pgvector's largest hnsw.ef_search
_EF_MIN = 100
_EF_PER_K = 10  # chunks the graph hands over per document asked for (MaxP and recall)
_ORDER = 'ORDER BY s::real DESC, doc_id COLLATE "C" LIMIT %s'

Where = tuple[str, list[Any]]


def _ranked(rows: list[tuple[Any, ...]]) -> list[Ranked]:
    return [Ranked(r[0], float(r[1]), (int(r[2]), int(r[3]), int(r[4])) if len(r) > 2 else None)
            for r in rows]  # fmt: skip


class Queries:
    """The statements of one index (schema ``schema``; ``op`` the pgvector distance
    operator, ``<#>`` negative inner product or ``<=>`` cosine distance)."""

    def __init__(self, schema: str, op: str, hnsw: bool, k1: float, b: float) -> None:
        self.s = f'"{schema}"'
        self.op = op
        self.hnsw = hnsw
        self.k1, self.b = float(k1), float(b)
        # score from the distance: -(negative inner product), or 1 - cosine distance
        self.score = "-({d})" if op == "<#>" else "1 - ({d})"

    def has_key(self, conn: Any, key: str) -> bool:
        """Whether some document's metadata has ``key`` (even with a null value)."""
        row = conn.execute(
            f"SELECT EXISTS (SELECT 1 FROM {self.s}.docs "
            "WHERE jsonb_path_exists(metadata, %s::jsonpath, '{}'::jsonb, true))",
            (key_path(key),),
        ).fetchone()
        return bool(row[0])

    def dense(self, conn: Any, q: FloatArray, k: int, where: Where) -> list[Ranked]:
        """The ``k`` best documents for one query vector, MaxP over chunks."""
        if self.hnsw:
            for m in sorted({min(_EF_MAX, max(_EF_MIN, _EF_PER_K * k)), _EF_MAX}):
                got = self._hnsw(conn, q, k, where, m)
                if len(got) >= k:
                    return got
        dist = f"c.embedding {self.op} %s"
        sql = (
            "SELECT doc_id, s, chunk_no, start_char, end_char FROM ("
            f"SELECT DISTINCT ON (c.doc_key) d.doc_id, {self.score.format(d=dist)} AS s, "
            f"c.chunk_no, c.start_char, c.end_char FROM {self.s}.chunks c "
            f"JOIN {self.s}.docs d ON d.key = c.doc_key WHERE {where[0]} "
            f"ORDER BY c.doc_key, {dist}, c.chunk_no) t {_ORDER}"
        )
        return _ranked(conn.execute(sql, [q, *where[1], q, k]).fetchall())

    def _hnsw(self, conn: Any, q: FloatArray, k: int, where: Where, m: int) -> list[Ranked]:
        conn.execute("SELECT set_config('hnsw.ef_search', %s, true)", (str(m),))
        sql = (
            "WITH cand AS MATERIALIZED (SELECT doc_key, chunk_no, start_char, end_char, "
            f"embedding {self.op} %s AS dist FROM {self.s}.chunks "
            f"ORDER BY embedding {self.op} %s LIMIT %s) "
            "SELECT doc_id, s, chunk_no, start_char, end_char FROM ("
            f"SELECT DISTINCT ON (c.doc_key) d.doc_id, {self.score.format(d='c.dist')} AS s, "
            f"c.chunk_no, c.start_char, c.end_char FROM cand c "
            f"JOIN {self.s}.docs d ON d.key = c.doc_key WHERE {where[0]} "
            f"ORDER BY c.doc_key, c.dist, c.chunk_no) t {_ORDER}"
        )
        return _ranked(conn.execute(sql, [q, q, m, *where[1], k]).fetchall())

    def bm25(self, conn: Any, terms: list[str], k: int, where: Where) -> list[Ranked]:
        """The ``k`` best documents for one analysed query (its stems, repeats kept)."""
        if not terms:
            return []
        n, total = conn.execute(f"SELECT n_docs, total_length FROM {self.s}.totals").fetchone()
        uniq, counts = np.unique(np.asarray(terms, dtype=object), return_counts=True)
        df = dict(conn.execute(
            f"SELECT term, count(*) FROM {self.s}.postings WHERE term = ANY(%s) GROUP BY term",
            (uniq.tolist(),)).fetchall())  # fmt: skip
        present = [i for i, t in enumerate(uniq.tolist()) if df.get(t, 0) > 0]
        if not present:
            return []
        dfs = np.asarray([df[uniq[i]] for i in present], dtype=np.float64)
        idf = np.log1p((float(n) - dfs + 0.5) / (dfs + 0.5))  # as lexical_scoring
        avgdl = float(total) / float(n) if total > 0 else 1.0
        score = (
            "sum(w.idf * p.tf / (p.tf + %s * (1 - %s + %s * p.dl / %s)) * w.c) AS s "
            "FROM unnest(%s::text[], %s::float8[], %s::float8[]) AS w(term, idf, c) "
            f"JOIN {self.s}.postings p ON p.term = w.term"
        )
        params = [self.k1, self.b, self.b, avgdl, [uniq[i] for i in present], idf.tolist(),
                  [float(counts[i]) for i in present]]  # fmt: skip
        if where[0] == "true":  # no filter: sums by key, ids for the best k (and ties) only
            sql = (
                "SELECT d.doc_id, t.s FROM (SELECT doc_key, s FROM (SELECT p.doc_key, "
                f"{score} GROUP BY p.doc_key) a ORDER BY s::real DESC FETCH FIRST %s ROWS "
                f"WITH TIES) t JOIN {self.s}.docs d ON d.key = t.doc_key "
                f'ORDER BY t.s::real DESC, d.doc_id COLLATE "C" LIMIT %s'
            )
            return _ranked(conn.execute(sql, [*params, k, k]).fetchall())
        sql = (
            f"SELECT doc_id, s FROM (SELECT d.doc_id, {score} "
            f"JOIN {self.s}.docs d ON d.key = p.doc_key WHERE {where[0]} "
            f"GROUP BY d.doc_id) t {_ORDER}"
        )
        return _ranked(conn.execute(sql, [*params, *where[1], k]).fetchall())

    def sparse(self, conn: Any, term_ids: list[int], weights: list[float], k: int,
               where: Where) -> list[Ranked]:  # fmt: skip
        """The ``k`` best documents for one SPLADE query (term ids and weights)."""
        if not term_ids:
            return []
        sql = (
            "SELECT doc_id, s, chunk_no, start_char, end_char FROM ("
            "SELECT DISTINCT ON (x.doc_key) d.doc_id, x.s, x.chunk_no, c.start_char, "
            "c.end_char FROM (SELECT p.doc_key, p.chunk_no, sum(w.qw * p.weight) AS s "
            f"FROM unnest(%s::int[], %s::float8[]) AS w(term, qw) JOIN {self.s}.sparse p "
            "ON p.term = w.term GROUP BY p.doc_key, p.chunk_no) x "
            f"JOIN {self.s}.docs d ON d.key = x.doc_key JOIN {self.s}.chunks c "
            "ON c.doc_key = x.doc_key AND c.chunk_no = x.chunk_no "
            f"WHERE x.s > 0 AND {where[0]} ORDER BY x.doc_key, x.s DESC, x.chunk_no) t {_ORDER}"
        )
        return _ranked(conn.execute(sql, [term_ids, weights, *where[1], k]).fetchall())

    def scores(self, conn: Any, q: FloatArray, ids: list[str]) -> dict[str, float]:
        """``{id: best chunk score}`` of the ``ids`` held."""
        score = self.score.format(d=f"c.embedding {self.op} %s")
        rows = conn.execute(
            f"SELECT d.doc_id, max({score}) FROM {self.s}.chunks c JOIN {self.s}.docs d "
            "ON d.key = c.doc_key WHERE d.doc_id = ANY(%s) GROUP BY d.doc_id",
            (q, ids),
        ).fetchall()
        return {r[0]: float(r[1]) for r in rows}


def check(conn: Any, schema: str, dim: int) -> list[str]:
    """What is wrong with the index in ``schema`` (empty: nothing)."""
    s = f'"{schema}"'
    problems = []
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        n, total = conn.execute(f"SELECT n_docs, total_length FROM {s}.totals").fetchone()
        real = conn.execute(f"SELECT count(*), coalesce(sum(length), 0) FROM {s}.docs").fetchone()
        if (n, total) != tuple(real):
            problems.append(f"BM25 totals {n, total} differ from the documents' {tuple(real)}")
        bad = conn.execute(
            f"SELECT count(*) FROM {s}.docs d WHERE NOT EXISTS "
            f"(SELECT 1 FROM {s}.chunks c WHERE c.doc_key = d.key)"
        ).fetchone()[0]
        if bad:
            problems.append(f"{bad} documents have no chunk vectors")
        bad = conn.execute(
            f"SELECT count(*) FROM {s}.docs d WHERE d.length <> coalesce((SELECT sum(tf) "
            f"FROM {s}.postings p WHERE p.doc_key = d.key), 0)"
        ).fetchone()[0]
        if bad:
            problems.append(f"{bad} documents' BM25 postings do not add up to their length")
        bad = conn.execute(
            f"SELECT count(*) FROM {s}.postings p JOIN {s}.docs d ON d.key = p.doc_key "
            "WHERE p.dl <> d.length"
        ).fetchone()[0]
        if bad:
            problems.append(f"{bad} BM25 postings carry another length than their document's")
        bad = conn.execute(
            f"SELECT count(*) FROM {s}.chunks WHERE vector_dims(embedding) <> %s", (dim,)
        ).fetchone()[0]
        if bad:
            problems.append(f"{bad} chunk vectors are not {dim}-d")
    return problems
