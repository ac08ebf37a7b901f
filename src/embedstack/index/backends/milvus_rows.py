"""Reading the rows of an index's Milvus collections by document id
(:class:`~embedstack.index.backends.milvus.MilvusStore`).

Rows are keyed ``{generation}:{digest of the doc id}`` (documents) and
``{generation}:{chunk_no}:{digest}`` (chunks). A filter ``doc_id in [...]`` finds the
visible version of each id but scans the collection, since milvus-lite keeps no scalar
index (89 ms for 10 ids among 50k rows; 1.3 ms by primary key:
``benchmarks/milvus_lookup_probe.py``). :class:`HitGenerations`
remembers the generation of the rows a search returned, so the documents of its hits are one
primary-key get.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from typing import Any

__all__ = [
    "BATCH",
    "REGISTRY",
    "HitGenerations",
    "by_doc_id",
    "doc_key",
    "get_rows",
    "lit",
    "meta_row",
    "query_all",
    "register",
    "registered",
    "upsert_rows",
]

BATCH = 1000  # rows per insert / ids per "in" list
_GENS_KEPT = 100_000  # hits' generations remembered


def doc_key(doc_id: str) -> str:
    """The primary-key part of a document id: a digest, so that pymilvus's iterators, which
    page by pasting the last key into an expression unescaped, never meet a quote."""
    return hashlib.sha256(doc_id.encode("utf-8")).hexdigest()


def meta_row(pk: str, a: int = 0, data: str = "") -> dict[str, Any]:
    """A row of the meta collection (its vector field is a placeholder Milvus requires)."""
    return {"pk": pk, "a": a, "data": data, "v": [1.0, 0.0]}


def get_rows(client: Any, coll: str, pks: Sequence[str], fields: list[str],
             batch: int = BATCH) -> list[dict[str, Any]]:  # fmt: skip
    """The rows of ``coll`` with primary keys ``pks`` (those that exist), ``batch`` keys per
    get."""
    out: list[dict[str, Any]] = []
    for n in range(0, len(pks), batch):
        out += client.get(coll, ids=list(pks[n : n + batch]), output_fields=fields)
    return out


def upsert_rows(client: Any, coll: str, rows: Sequence[dict[str, Any]],
                batch: int = BATCH) -> None:  # fmt: skip
    """Upsert ``rows`` into ``coll``, ``batch`` rows per call."""
    for n in range(0, len(rows), batch):
        client.upsert(coll, list(rows[n : n + batch]))


def lit(values: Sequence[str]) -> str:
    return json.dumps(list(values), ensure_ascii=False)


def query_all(client: Any, coll: str, expr: str, fields: list[str]) -> list[dict[str, Any]]:
    """Every row of ``coll`` matching ``expr`` (paged by an iterator)."""
    out: list[dict[str, Any]] = []
    it = client.query_iterator(coll, batch_size=4000, filter=expr, output_fields=fields)
    try:
        while batch := it.next():
            out.extend(batch)
    finally:
        it.close()
    return out


def by_doc_id(client: Any, coll: str, ids: Sequence[str], fields: list[str], visible: str,
              *, one_per_id: bool) -> list[dict[str, Any]]:  # fmt: skip
    """The ``visible`` rows of ``coll`` whose doc id is in ``ids`` (``one_per_id``: the
    documents collection, at most one visible row per id, so no iterator is needed)."""
    out: list[dict[str, Any]] = []
    for i in range(0, len(ids), BATCH):
        expr = f"doc_id in {lit(ids[i : i + BATCH])} and {visible}"
        if one_per_id:
            out.extend(client.query(coll, filter=expr, output_fields=fields, limit=BATCH))
        else:
            out.extend(query_all(client, coll, expr, fields))
    return out


class HitGenerations:
    """Doc id → generation of the row the last searches returned for it."""

    def __init__(self) -> None:
        self._gens: dict[str, int] = {}

    def remember(self, entities: Iterable[dict[str, Any]]) -> None:
        """Note the generation of each returned row (an entity with ``doc_id`` and ``gen``)."""
        for e in entities:
            if len(self._gens) >= _GENS_KEPT:
                self._gens.clear()
            self._gens[e["doc_id"]] = int(e["gen"])

    def fetch(self, client: Any, coll: str, ids: Sequence[str], fields: list[str],
              committed: int, hidden: Sequence[str],
              below: int) -> list[dict[str, Any]]:  # fmt: skip
        """The visible document rows of the remembered ``ids``, by primary key. A row is
        visible exactly when the filter of :func:`by_doc_id` would return it: committed
        (generation ≤ ``committed``) and not ``hidden`` below generation ``below`` by a
        pending replacement. ``fields`` must hold ``doc_id`` and ``gen``."""
        known = {i: g for i in dict.fromkeys(ids) if (g := self._gens.get(i)) is not None
                 and g <= committed}  # fmt: skip
        gone = set(hidden)
        pks = [f"{g}:{doc_key(i)}" for i, g in known.items() if not (i in gone and g < below)]
        rows = get_rows(client, coll, pks, fields)
        return [r for r in rows if known.get(r["doc_id"]) == int(r["gen"])]


# The id registry: one meta row ``id:{digest}`` per document id ever written, inserted before
# the document's rows. A superset of the ids the index holds (a crashed write or a delete
# leaves its rows), so a batch of new ids is told apart by primary key, and only the ids it
# finds are looked for by filter: the filter scans the collection, which made each add cost
# time proportional to the index (milvus_ingest_probe.py). An index whose state lacks
# ``REGISTRY`` (written before it) has no registry and filters every id.
REGISTRY = "registry"


def _registry_pk(doc_id: str) -> str:
    return f"id:{doc_key(doc_id)}"


def registered(client: Any, meta: str, ids: Sequence[str]) -> list[str]:
    """The ids of ``ids`` in the registry of meta collection ``meta``."""
    keys = {_registry_pk(i): i for i in ids}
    return [keys[r["pk"]] for r in get_rows(client, meta, list(keys), ["pk"])]


def register(client: Any, meta: str, ids: Sequence[str]) -> None:
    """Add ``ids`` to the registry (idempotent)."""
    upsert_rows(client, meta, [meta_row(_registry_pk(i)) for i in ids])
