"""The PostgreSQL filter compiler selects exactly what the local (SQLite) one selects.

Hypothesis draws metadata (scalars of every JSON type, arrays, nested objects, nulls) and
filters (every operator, ``$and`` / ``$or``, dotted keys, keys some documents lack) and the
two compilers run on the same rows: the local index is the oracle, quirks included
(``true`` equals ``1``, object member values match like array elements).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from embedstack.index.backends.pg_filters import compile_pg
from embedstack.index.filters import compile_filter

psycopg = pytest.importorskip("psycopg", reason="pip install embedstack[postgres]")

scalars = st.sampled_from([None, True, False, 0, 1, 2, -1, 1.0, 1.5, 1e20, "a", "b", "A", "1",
                           "", "é", "true"])  # fmt: skip
values = st.one_of(
    scalars,
    st.lists(scalars, max_size=3),
    st.fixed_dictionaries({"x": scalars}, optional={"y": st.lists(scalars, max_size=2)}),
)
metadata = st.dictionaries(st.sampled_from(["k", "n"]), values, max_size=2)
KEYS = st.sampled_from(["k", "n", "n.x", "n.y", "absent"])
bounds = st.sampled_from([-1, 0, 1, 2, 0.5, 1.0, "a", "b", "", "é", "1"])
operator = st.one_of(
    st.tuples(st.sampled_from(["$eq", "$ne"]), scalars),
    st.tuples(st.sampled_from(["$in", "$nin"]), st.lists(scalars, max_size=3)),
    st.tuples(st.sampled_from(["$gt", "$gte", "$lt", "$lte"]), bounds),
    st.tuples(st.just("$exists"), st.booleans()),
)
conditions = st.one_of(scalars, st.lists(operator, min_size=1, max_size=2).map(dict))
leaf = st.dictionaries(KEYS, conditions, min_size=1, max_size=2)
filters = st.recursive(
    leaf,
    lambda inner: st.one_of(
        st.builds(
            lambda op, subs: {op: subs},
            st.sampled_from(["$and", "$or"]),
            st.lists(inner, min_size=1, max_size=3),
        ),  # fmt: skip
        st.builds(lambda a, b: {**a, **b}, leaf, inner),
    ),
    max_leaves=5,
)


@pytest.fixture(scope="module")
def pg(pg_uri: str) -> Iterator[Any]:
    with psycopg.connect(pg_uri, autocommit=True) as conn:
        conn.execute("CREATE TEMP TABLE docs (key int PRIMARY KEY, metadata jsonb NOT NULL)")
        yield conn


def _local(rows: list[str], flt: dict[str, Any]) -> set[int]:
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE docs (key INTEGER PRIMARY KEY, metadata TEXT NOT NULL)")
    conn.executemany("INSERT INTO docs VALUES (?, ?)", enumerate(rows))
    sql, params, _ = compile_filter(flt)
    return {k for (k,) in conn.execute(f"SELECT key FROM docs WHERE {sql}", params)}


def _pg(conn: Any, rows: list[str], flt: dict[str, Any]) -> set[int]:
    conn.execute("TRUNCATE docs")
    with conn.cursor() as cur:
        cur.executemany("INSERT INTO docs VALUES (%s, %s::jsonb)", list(enumerate(rows)))
    sql, params, _ = compile_pg(flt, "d.metadata")
    return {k for (k,) in conn.execute(f"SELECT key FROM docs d WHERE {sql}", params)}


def _check(pg: Any, metas: list[dict[str, Any]], flts: list[dict[str, Any]]) -> None:
    rows = [json.dumps(m, sort_keys=True, ensure_ascii=False) for m in metas]
    for flt in flts:
        assert _pg(pg, rows, flt) == _local(rows, flt), (flt, metas)


def _property(examples: int) -> Any:
    @settings(max_examples=examples, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow,
                                     HealthCheck.function_scoped_fixture])  # fmt: skip
    @given(metas=st.lists(metadata, min_size=1, max_size=10),
           flts=st.lists(filters, min_size=1, max_size=4))  # fmt: skip
    def check(pg: Any, metas: list[dict[str, Any]], flts: list[dict[str, Any]]) -> None:
        _check(pg, metas, flts)

    return check


test_same_documents_as_the_local_index = _property(60)
test_same_documents_as_the_local_index_many = pytest.mark.slow(_property(2000))


def test_examples_of_the_quirks(pg: Any) -> None:
    rows = [json.dumps(m) for m in ({"a": True}, {"a": 1}, {"a": {"x": 1}}, {"a": [None]},
                                    {"a": None}, {}, {"a": "1"}, {"a": [[1]]})]  # fmt: skip
    for flt, want in (({"a": 1}, {0, 1, 2}), ({"a": None}, {4}), ({"a": {"$ne": 1}}, {3, 4, 5,
                      6, 7}), ({"a": {"$exists": True}}, {0, 1, 2, 3, 4, 6, 7}),
                      ({"a": {"$gte": "1"}}, {6}), ({"a.x": {"$lt": 2}}, {2})):  # fmt: skip
        assert _local(rows, flt) == want, flt
        assert _pg(pg, rows, flt) == want, flt
