"""Probe (issue 18): how milvus-lite answers a ``doc_id in [...]`` filter against a
primary-key get, with and without an INVERTED index on ``doc_id``: 50,000 rows, 10 ids,
median ms of 10 tries.

    .venv/bin/python benchmarks/milvus_lookup_probe.py WORKDIR
"""

from __future__ import annotations

import json
import sys
import time

from pymilvus import DataType, MilvusClient


def median_ms(fn: object) -> float:
    t = []
    for _ in range(10):
        t0 = time.perf_counter()
        fn()  # type: ignore[operator]
        t.append(time.perf_counter() - t0)
    return sorted(t)[5] * 1e3


def main() -> None:
    client = MilvusClient(sys.argv[1] + "/t.db")
    for name, scalar in (("noidx", None), ("inv", "INVERTED")):
        if client.has_collection(name):
            client.drop_collection(name)
        schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("pk", DataType.VARCHAR, is_primary=True, max_length=100)
        schema.add_field("doc_id", DataType.VARCHAR, max_length=100)
        schema.add_field("gen", DataType.INT64)
        schema.add_field("text", DataType.VARCHAR, max_length=2000)
        schema.add_field("v", DataType.FLOAT_VECTOR, dim=2)
        params = client.prepare_index_params()
        params.add_index("v", index_type="FLAT", metric_type="IP")
        if scalar:
            params.add_index("doc_id", index_type=scalar)
        client.create_collection(name, schema=schema, index_params=params,
                                 consistency_level="Strong")  # fmt: skip
        for i in range(0, 50000, 5000):
            client.insert(name, [{"pk": f"1:{j}", "doc_id": f"doc{j}", "gen": 1, "text": "x" * 500,
                                  "v": [1.0, 0.0]} for j in range(i, i + 5000)])  # fmt: skip
        client.flush(name)
        client.load_collection(name)
        print(name, [client.describe_index(name, f) for f in client.list_indexes(name)])
        ids = [f"doc{j}" for j in range(0, 50000, 5000)]
        expr = f"doc_id in {json.dumps(ids)} and gen <= 1"
        print(name, "by filter ms", median_ms(lambda n=name, e=expr: client.query(
            n, filter=e, output_fields=["doc_id", "text"], limit=1000)))  # fmt: skip
        pks = [f"1:{j}" for j in range(0, 50000, 5000)]
        print(name, "by key ms", median_ms(lambda n=name, p=pks: client.get(
            n, ids=p, output_fields=["doc_id", "text"])))  # fmt: skip


if __name__ == "__main__":
    main()
