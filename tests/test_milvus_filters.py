"""Milvus filter expressions against the local index's SQLite evaluation as the oracle.

One milvus-lite server for the module (closed at teardown); every filter is run through
:func:`embedstack.index.filters.compile_filter` on SQLite and through
:func:`embedstack.index.backends.milvus_filters.to_expr` on Milvus, over the same metadata.
"""

from __future__ import annotations

import json
import random
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from embedstack.errors import InvalidInput
from embedstack.index.backends.milvus_filters import (
    MAX_EXPR_BYTES,
    FilterNotExpressible,
    exists_expr,
    marks,
    to_expr,
)
from embedstack.index.filters import compile_filter, json_path

pymilvus = pytest.importorskip("pymilvus")
pytest.importorskip("milvus_lite")

# Every kind of value the local index distinguishes, except the documented difference
# (an object under an equality key; see test_documented_differences).
METAS: list[dict[str, Any]] = [
    {"y": 2020, "lang": "en", "tag": ["a", "b"], "n": None},
    {"y": 2020.0, "lang": "de", "tag": "a", "ok": True},
    {"y": 2021.5, "tag": ["c"], "ok": False, "author": {"name": "Ada", "age": 36}},
    {"y": "2020", "lang": "en", "tag": [], "author": {"name": "Bob", "x": None}},
    {"y": True, "tag": [1, "a", None], "v": 1},
    {"y": 1, "lang": None, "v": 1.0, "author": {"name": None}},
    {"y": [2020, 2022], "lang": "fr", "tag": "b", "v": "1"},
    {"y": None, "tag": ["a", 2], "ok": 0},
    {},
    {"lang": "en", "a.b": 3, "a": {"b": 4}, "s": 'say "hi"'},
    {"y": -3, "lang": "EN", "tag": ["A"], "v": 0, "ok": 1},
    {"y": 1e10, "lang": "", "s": "é", "author": {"name": "Ada"}},
]

FILTERS: list[dict[str, Any]] = [
    {"y": 2020}, {"y": 2020.0}, {"y": 1}, {"y": True}, {"y": "2020"}, {"y": None},
    {"y": {"$ne": 2020}}, {"y": {"$ne": None}}, {"y": {"$gte": 2020}}, {"y": {"$lt": 5}},
    {"y": {"$gt": "1"}}, {"y": {"$gte": 2020, "$lt": 2021}}, {"y": {"$in": [1, 2022]}},
    {"y": {"$nin": [2020, None]}}, {"y": {"$exists": True}}, {"y": {"$exists": False}},
    {"tag": "a"}, {"tag": {"$in": ["a", "c"]}}, {"tag": {"$nin": ["a"]}}, {"tag": 1},
    {"tag": {"$ne": "b"}}, {"tag": None}, {"tag": {"$exists": True}}, {"tag": {"$in": []}},
    {"tag": {"$nin": []}}, {"lang": "en"}, {"lang": None}, {"lang": {"$ne": "en"}},
    {"lang": {"$gte": "e"}}, {"lang": ""}, {"lang": {"$in": ["en", None]}},
    {"author.name": "Ada"}, {"author.name": None}, {"author.name": {"$exists": True}},
    {"author.x": {"$exists": True}}, {"author.age": {"$gt": 30}}, {"author": {"$exists": True}},
    {"ok": True}, {"ok": False}, {"ok": 1}, {"ok": {"$gte": 0}}, {"ok": {"$ne": True}},
    {"v": 1}, {"v": "1"}, {"v": {"$lte": 1}}, {"a.b": 4}, {"a.b": 3},
    {"s": 'say "hi"'}, {"s": "é"},
    {"$or": [{"y": 2020}, {"tag": "c"}]},
    {"$and": [{"lang": "en"}, {"$or": [{"y": {"$exists": False}}, {"tag": "a"}]}]},
    {"lang": "en", "tag": {"$nin": ["b"]}},
    {"$or": [{"y": {"$ne": 2020}}, {"lang": {"$nin": ["en", "de"]}}]},
]  # fmt: skip


def _sqlite(metas: list[dict[str, Any]]) -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE docs (key INTEGER PRIMARY KEY, metadata TEXT)")
    conn.executemany("INSERT INTO docs VALUES (?, ?)",
                     [(i, json.dumps(m)) for i, m in enumerate(metas)])  # fmt: skip
    return conn


def _local(conn: sqlite3.Connection, flt: dict[str, Any]) -> set[int]:
    sql, params, _ = compile_filter(flt)
    return {r[0] for r in conn.execute(f"SELECT key FROM docs WHERE {sql}", params)}


@pytest.fixture(scope="module")
def milvus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A milvus-lite collection holding METAS (key, meta JSON, marks), closed at teardown."""
    from pymilvus import DataType, MilvusClient

    path: Path = tmp_path_factory.mktemp("milvus") / "filters.db"
    client = MilvusClient(str(path))
    try:
        schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("key", DataType.INT64, is_primary=True)
        schema.add_field("meta", DataType.JSON)
        schema.add_field("marks", DataType.JSON)
        schema.add_field("v", DataType.FLOAT_VECTOR, dim=2)
        params = client.prepare_index_params()
        params.add_index("v", index_type="FLAT", metric_type="IP")
        client.create_collection("f", schema=schema, index_params=params,
                                 consistency_level="Strong")  # fmt: skip
        client.insert("f", [{"key": i, "meta": m, "marks": marks(m), "v": [1.0, 0.0]}
                            for i, m in enumerate(METAS)])  # fmt: skip
        yield client
    finally:
        client.close()


def _remote(client: Any, flt: dict[str, Any], metas: int = len(METAS)) -> set[int]:
    rows = client.query("f", filter=to_expr(flt), output_fields=["key"], limit=metas + 1)
    return {int(r["key"]) for r in rows}


@pytest.mark.parametrize("flt", FILTERS, ids=[json.dumps(f) for f in FILTERS])
def test_same_documents_as_the_local_index(milvus: Any, flt: dict[str, Any]) -> None:
    assert _remote(milvus, flt) == _local(_sqlite(METAS), flt)


def _random_filter(rng: random.Random, depth: int = 0) -> dict[str, Any]:
    keys = ["y", "tag", "lang", "ok", "v", "author.name", "author.age", "n", "nope"]
    values: list[Any] = [2020, 1, 0, True, False, None, "a", "en", "2020", 1.0, 36, "Ada"]
    if depth < 2 and rng.random() < 0.3:
        op = rng.choice(["$or", "$and"])
        return {op: [_random_filter(rng, depth + 1) for _ in range(rng.randint(1, 3))]}
    key = rng.choice(keys)
    kind = rng.choice(["eq", "$ne", "$in", "$nin", "$exists", "range"])
    if kind == "eq":
        return {key: rng.choice(values)}
    if kind in ("$in", "$nin"):
        return {key: {kind: rng.sample(values, rng.randint(0, 3))}}
    if kind == "$exists":
        return {key: {"$exists": rng.random() < 0.5}}
    if kind == "range":
        bound = rng.choice([0, 1, 2020, 2020.5, 40, "a", "e", "2020"])
        return {key: {rng.choice(["$gt", "$gte", "$lt", "$lte"]): bound}}
    return {key: {"$ne": rng.choice(values)}}


def test_random_filters_agree_with_the_local_index(milvus: Any) -> None:
    rng = random.Random(18)
    conn = _sqlite(METAS)
    for _ in range(150):
        flt = _random_filter(rng)
        assert _remote(milvus, flt) == _local(conn, flt), flt


def test_documented_differences(tmp_path: Path) -> None:
    """Exactly the difference the module docstring names: an object under an equality key
    (SQLite iterates its values); booleans inside arrays match alike."""
    from pymilvus import DataType, MilvusClient

    metas = [{"author": {"name": "Ada"}}, {"flags": [True]}, {"flags": [1]}]
    client = MilvusClient(str(tmp_path / "diff.db"))
    try:
        schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("key", DataType.INT64, is_primary=True)
        schema.add_field("meta", DataType.JSON)
        schema.add_field("marks", DataType.JSON)
        schema.add_field("v", DataType.FLOAT_VECTOR, dim=2)
        params = client.prepare_index_params()
        params.add_index("v", index_type="FLAT", metric_type="IP")
        client.create_collection("f", schema=schema, index_params=params,
                                 consistency_level="Strong")  # fmt: skip
        client.insert("f", [{"key": i, "meta": m, "marks": marks(m), "v": [1.0, 0.0]}
                            for i, m in enumerate(metas)])  # fmt: skip
        conn = _sqlite(metas)
        assert _local(conn, {"author": "Ada"}) == {0}
        assert _remote(client, {"author": "Ada"}) == set()
        for same in ({"flags": True}, {"flags": 1}, {"author.name": "Ada"}):
            assert _remote(client, same) == _local(conn, same), same
    finally:
        client.close()


def test_marks_name_null_and_boolean_paths_outside_arrays() -> None:
    assert marks({"n": None, "ok": True, "a": {"b": None}, "t": [None, True], "x": 1}) == [
        'null:["n"]', 'bool:["ok"]', 'null:["a", "b"]',
    ]  # fmt: skip
    assert marks({"a.b": None}) != marks({"a": {"b": None}})


def test_invalid_filters_raise_the_local_errors() -> None:
    for bad in ({"y": {"$regex": "a"}}, {"$not": {"y": 1}}, {"": 1}, {"y": [1]}, {"$or": []}):
        with pytest.raises(InvalidInput) as local:
            compile_filter(bad)
        with pytest.raises(InvalidInput) as remote:
            to_expr(bad)
        assert str(remote.value) == str(local.value)


def test_a_huge_filter_is_a_typed_error() -> None:
    values = [f"value-{i:08d}" for i in range(MAX_EXPR_BYTES // 20)]
    with pytest.raises(FilterNotExpressible, match="bytes, over"):
        to_expr({"tag": {"$in": values}})


def test_exists_expr_counts_null_values() -> None:
    assert exists_expr("a.b", "meta", "marks") == (
        '(exists meta["a"]["b"] or json_contains(marks, "null:[\\"a\\", \\"b\\"]"))'
    )
    assert json_path("a.b") == '$."a"."b"'
