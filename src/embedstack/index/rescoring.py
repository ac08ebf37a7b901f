"""Rescoring of given documents with their *stored* chunk data (dense vectors, token vectors).

:meth:`Index.dense_scores` scores a candidate list from another retriever (BM25, say) with
the dense vectors already in the index: only the query is encoded, each document's chunk
rows are looked up in SQLite (``chunks`` by ``doc_key``, its primary-key prefix) and scored
exactly like a dense search scores them (float32 dot product; int8 asymmetric dot product;
binary indexes with their int8 rescoring codes), and a document's score is the maximum over
its chunks (MaxP, Dai & Callan 2019). The cost is one query encoding plus
``O(candidate chunks)``, independent of the corpus size.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence

import numpy as np

from embedstack._typing import FloatArray
from embedstack.errors import InvalidInput
from embedstack.index.docstore import DocStore
from embedstack.index.fields.base import Field, Rescorer, Snapshot

__all__ = ["best_per_document", "candidate_rows", "check_request", "rescore"]

_BATCH = 500  # keys per IN (...) query


def check_request(query: object, doc_ids: object) -> list[str]:
    """The ids of a rescoring request, after checking the query and every id.

    Raises:
        InvalidInput: a non-str or blank query, ``doc_ids`` a single string or not
            iterable, or a non-str id.
    """
    if not isinstance(query, str):
        raise InvalidInput(f"a query must be str, got {type(query).__name__}")
    if not query.strip():
        raise InvalidInput("the query is empty or whitespace-only")
    if isinstance(doc_ids, str | bytes):
        raise InvalidInput("doc_ids must be a list of document ids, not one string")
    try:
        ids: list[object] = list(doc_ids)  # type: ignore[call-overload]
    except TypeError:
        raise InvalidInput(f"doc_ids must be a list of ids, got {type(doc_ids).__name__}") from None
    for i, doc_id in enumerate(ids):
        if not isinstance(doc_id, str):
            raise InvalidInput(f"doc_ids[{i}] must be str, got {type(doc_id).__name__}")
    return [str(doc_id) for doc_id in ids]


def candidate_rows(
    store: DocStore, snapshot: Snapshot, ids: Sequence[str], first_only: bool = False
) -> tuple[dict[str, int], dict[int, list[tuple[int, int]]]]:
    """The chunk rows of the live documents among ``ids`` (only each one's first chunk,
    title and start of the text, with ``first_only``).

    Returns:
        ``{doc id: key}`` of the ids the index holds, and ``{segment: [(row, key)]}`` of
        the chunks of the live ones (looked up in SQLite by ``doc_key``).
    """
    keys = {doc_id: key for doc_id, (key, _) in store.existing(ids).items()}
    wanted = sorted({key for key in keys.values() if snapshot.is_live(key)})
    rows: dict[int, list[tuple[int, int]]] = defaultdict(list)  # segment -> (row, key)
    conn = store.conn
    for i in range(0, len(wanted), _BATCH):
        part = wanted[i : i + _BATCH]
        marks = ",".join("?" * len(part))
        query_sql = f"SELECT segment, row, doc_key FROM chunks WHERE doc_key IN ({marks})"
        if first_only:
            query_sql += " AND chunk_no = 0"
        for seg, row, key in conn.execute(query_sql, part):
            rows[int(seg)].append((int(row), int(key)))
    return keys, rows


def best_per_document(
    ids: Sequence[str], keys: dict[str, int], scored: Iterable[tuple[int, float]]
) -> FloatArray:
    """Document scores from chunk scores: each id gets the maximum over its chunks'
    ``(doc key, score)`` pairs in ``scored``.

    Returns:
        ``(len(ids),)`` float32, ``-inf`` for an id without a key in ``keys`` or without a
        scored chunk.
    """
    best: dict[int, float] = {}
    for key, score in scored:
        if score > best.get(key, -np.inf):
            best[key] = float(score)
    out = np.full(len(ids), -np.inf, dtype=np.float32)
    for i, doc_id in enumerate(ids):
        found = keys.get(doc_id)
        if found is not None and found in best:
            out[i] = best[found]
    return out


def rescore(
    store: DocStore, snapshot: Snapshot, field: Field, query: str, ids: list[str],
    first_only: bool = False,
) -> FloatArray:  # fmt: skip
    """Scores of the documents ``ids`` by ``field``'s stored data (max over each document's
    chunks, or its first chunk only); ``-inf`` for ids not live in ``snapshot``.

    Raises:
        InvalidInput: ``field`` cannot rescore.
    """
    if not isinstance(field, Rescorer):
        raise InvalidInput(f"the {field.name!r} field cannot rescore documents")
    keys, rows = candidate_rows(store, snapshot, ids, first_only)
    return best_per_document(ids, keys, field.score_rows(query, snapshot, rows))
