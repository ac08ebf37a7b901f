""":class:`MilvusStore`: an embedstack index in Milvus (milvus-lite embedded, or a cluster).

URIs and collections: :mod:`embedstack.index.backends.milvus_client`; filters:
:mod:`~embedstack.index.backends.milvus_filters`; BM25:
:mod:`~embedstack.index.backends.milvus_bm25`.

Milvus has no multi-row transactions. A batch is made all-or-nothing for readers by a
**generation** marker: the state row in the meta collection (one row, so one atomic upsert)
holds ``committed``, and every read filters ``gen <= committed``. A write:

1. marks the state ``inflight = g`` (``g = committed + 1``);
2. inserts the batch's document and chunk rows with ``gen = g`` — invisible to readers —
   after registering their ids (:data:`~.milvus_rows.REGISTRY`: a superset, read by key);
3. adds the batch's terms to the vocabulary and its document frequencies;
4. for replaced documents, writes a *hide* list (their ids, generations below ``g``);
5. **commits**: one upsert of the state row with ``committed = g``, the new counts, and the
   hide list in force — readers now see the new versions and not the replaced ones;
6. deletes the replaced rows, then clears the hide list.

A delete is steps 4–6 with no rows to insert. A writer opening the index after a crash
(``inflight`` set) deletes the rows above ``committed``, finishes a pending hide list and
recomputes the document frequencies from the committed rows, which is what a crash can
leave: uncommitted rows (invisible, then removed), replaced rows (hidden, then removed),
and between steps 3 and 5 document frequencies that already count the batch (BM25 IDF off
by the batch until recovery or its commit). One writer per index at a time: Milvus has no
lock the store could take, so concurrent writers are the user's to prevent; readers in any
number of processes see each commit on their next call.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from embedstack._typing import FloatArray
from embedstack.encoders.sparse_vectors import SparseVectors
from embedstack.errors import IndexCorrupt, IndexNotFound, InvalidInput
from embedstack.index.backends import milvus_bm25 as bm
from embedstack.index.backends import milvus_check, milvus_rows, milvus_sparse
from embedstack.index.backends.base import Ranked, Store, StoredChunk, StoredDoc, StoreStats
from embedstack.index.backends.milvus_client import (
    MilvusTarget,
    connect,
    create_collections,
    disconnect,
    parse_uri,
)
from embedstack.index.backends.milvus_filters import exists_expr, marks, to_expr
from embedstack.index.backends.milvus_rows import (
    BATCH,
    HitGenerations,
    by_doc_id,
    doc_key,
    lit,
    query_all,
)
from embedstack.index.filters import compile_filter

__all__ = ["MilvusStore"]

_STATE = "state"
_MANIFEST = "manifest"
_HIDE_PART = 50_000  # bytes of hidden ids per meta row
_DENSE_OUT = ["doc_id", "gen", "chunk_no", "start", "end"]


def _utf8_len(value: str) -> int:
    return len(value.encode("utf-8"))


class MilvusStore(Store):
    """An index in Milvus; see the module docstring for the write protocol and
    :mod:`~embedstack.index.backends.base` for the contract (SPLADE vectors:
    :mod:`~embedstack.index.backends.milvus_sparse`)."""

    supports_sparse = True

    def __init__(self, target: MilvusTarget, client: Any, manifest: dict[str, Any],
                 readonly: bool) -> None:  # fmt: skip
        self.target = target
        self.client = client
        self.manifest = manifest
        self.location = target.location
        self.readonly = readonly
        self.k1 = float(manifest["bm25"]["k1"])
        self.b = float(manifest["bm25"]["b"])
        self.docs_c = target.collection("docs")
        self.chunks_c = target.collection("chunks")
        self.meta_c = target.collection("meta")
        self.terms = bm.Terms(client, self.meta_c)
        self._closed = False
        self._hits = HitGenerations()  # a hit's document by key (milvus_rows)

    # --- lifecycle ---------------------------------------------------------------------------

    @classmethod
    def create(cls, uri: str, manifest: dict[str, Any]) -> MilvusStore:
        target = parse_uri(uri)
        if target.lite:
            Path(target.uri).parent.mkdir(parents=True, exist_ok=True)
        client = connect(target)
        try:
            if client.has_collection(target.collection("meta")):
                raise InvalidInput(f"an index already exists at {target.location}; use "
                                   "Index.open() (or another ?index= name)")  # fmt: skip
            create_collections(client, target, int(manifest["encoder"]["dim"]), manifest["ann"],
                               sparse=bool(manifest.get("sparse")))  # fmt: skip
            store = cls(target, client, manifest, readonly=False)
            store._put_meta(_MANIFEST, json.dumps(manifest))
            store._put_state(cls._empty_state())
            return store
        except BaseException:
            disconnect(target, client)
            raise

    @classmethod
    def open(cls, uri: str, readonly: bool) -> MilvusStore:
        target = parse_uri(uri)
        if target.lite and not Path(target.uri).exists():
            raise IndexNotFound(f"no index at {target.location}: create one with "
                                "Index.create()", location=target.location)  # fmt: skip
        client = connect(target)
        try:
            if not client.has_collection(target.collection("meta")):
                raise IndexNotFound(f"no index at {target.location}: create one with "
                                    "Index.create()", location=target.location)  # fmt: skip
            for part in ("meta", "docs", "chunks"):  # a restarted server holds them released
                client.load_collection(target.collection(part))
            rows = client.get(target.collection("meta"), ids=[_MANIFEST], output_fields=["data"])
            try:
                manifest = json.loads(rows[0]["data"])
            except (IndexError, KeyError, ValueError) as exc:
                raise IndexCorrupt(f"{target.location}: unreadable manifest ({exc})") from exc
            store = cls(target, client, manifest, readonly)
            if not readonly:
                store.recover()
            return store
        except BaseException:
            disconnect(target, client)
            raise

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            disconnect(self.target, self.client)

    # --- the state row -------------------------------------------------------------------------

    @staticmethod
    def _empty_state() -> dict[str, Any]:
        return {"committed": 0, "inflight": None, "hide": None, "n_docs": 0, "n_chunks": 0,
                "sum_dl": 0, "next_tid": bm.NO_TERMS + 1, milvus_rows.REGISTRY: True}  # fmt: skip

    def _put_meta(self, pk: str, data: str, a: int = 0) -> None:
        self.client.upsert(self.meta_c, [milvus_rows.meta_row(pk, a, data)])

    def _state(self) -> dict[str, Any]:
        rows = self.client.get(self.meta_c, ids=[_STATE], output_fields=["data"])
        if not rows:
            raise IndexCorrupt(f"{self.location}: the state row is missing")
        state: dict[str, Any] = json.loads(rows[0]["data"])
        return state

    def _put_state(self, state: dict[str, Any]) -> None:
        self._put_meta(_STATE, json.dumps(state))

    def _hidden(self, state: dict[str, Any]) -> tuple[list[str], int]:
        """The ids hidden below a generation by the state's hide list."""
        hide = state.get("hide")
        if not hide:
            return [], 0
        pks = [f"hide:{hide['gen']}:{i}" for i in range(hide["parts"])]
        rows = self.client.get(self.meta_c, ids=pks, output_fields=["data"])
        ids = [i for r in rows for i in json.loads(r["data"])]
        return ids, int(hide["gen"])

    def _visible(self, state: dict[str, Any], flt: dict[str, Any] | None = None) -> str:
        """The expression of committed, not hidden rows (matching ``flt``)."""
        expr = f"gen <= {int(state['committed'])}"
        ids, below = self._hidden(state)
        if ids:
            expr += f" and not (doc_id in {lit(ids)} and gen < {below})"
        return expr + (f" and {to_expr(flt)}" if flt else "")

    def _write_hide(self, gen: int, ids: Sequence[str]) -> dict[str, int]:
        parts: list[list[str]] = [[]]
        size = 0
        for i in ids:
            if size > _HIDE_PART:
                parts.append([])
                size = 0
            parts[-1].append(i)
            size += _utf8_len(i) + 4
        for n, part in enumerate(parts):
            self._put_meta(f"hide:{gen}:{n}", json.dumps(part, ensure_ascii=False))
        return {"gen": gen, "parts": len(parts)}

    def _clean(self, state: dict[str, Any]) -> None:
        """Step 6: delete the hidden rows, then clear the hide list."""
        ids, below = self._hidden(state)
        for i in range(0, len(ids), BATCH):
            expr = f"doc_id in {lit(ids[i : i + BATCH])} and gen < {below}"
            self.client.delete(self.chunks_c, filter=expr)
            self.client.delete(self.docs_c, filter=expr)
        hide = state.get("hide")
        self._put_state({**state, "hide": None})
        if hide:
            pks = [f"hide:{hide['gen']}:{i}" for i in range(hide["parts"])]
            self.client.delete(self.meta_c, ids=pks)

    def _writable(self) -> None:
        if self.readonly:
            raise InvalidInput(f"{self.location} was opened readonly; open it without readonly")

    # --- reads ---------------------------------------------------------------------------------

    def _query(self, coll: str, expr: str, fields: list[str]) -> list[dict[str, Any]]:
        return query_all(self.client, coll, expr, fields)

    def _rows(self, coll: str, ids: Sequence[str], fields: list[str],
              state: dict[str, Any]) -> list[dict[str, Any]]:  # fmt: skip
        return by_doc_id(self.client, coll, ids, fields, self._visible(state),
                         one_per_id=coll == self.docs_c)  # fmt: skip

    def existing(self, ids: Sequence[str]) -> dict[str, str]:
        state, ids = self._state(), list(ids)
        if state.get(milvus_rows.REGISTRY):  # by key first: the filter below scans
            ids = milvus_rows.registered(self.client, self.meta_c, ids)
        rows = self._rows(self.docs_c, ids, ["doc_id", "hash"], state) if ids else []
        return {r["doc_id"]: r["hash"] for r in rows}

    def docs(self, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        fields = ["doc_id", "gen", "title", "text", "metadata"]
        state = self._state()
        hidden, below = self._hidden(state)
        rows = self._hits.fetch(self.client, self.docs_c, ids, fields,
                                int(state["committed"]), hidden, below)  # fmt: skip
        found = {r["doc_id"] for r in rows}
        rest = [i for i in ids if i not in found]
        if rest:  # not seen in a search, or replaced since: by filter
            rows += self._rows(self.docs_c, rest, fields, state)
        return {r["doc_id"]: {"id": r["doc_id"], "title": r["title"], "text": r["text"],
                              "metadata": json.loads(r["metadata"])} for r in rows}  # fmt: skip

    def count(self) -> int:
        return int(self._state()["n_docs"])

    def _filtered(self, state: dict[str, Any], flt: dict[str, Any] | None) -> str:
        """The visible rows matching ``flt``; a key no visible document has is an error."""
        visible = self._visible(state)
        if not flt:
            return visible
        _, _, keys = compile_filter(flt)
        for key in keys:
            hit = self.client.query(self.docs_c, filter=f"{visible} and "
                                    f"{exists_expr(key, 'meta', 'marks')}",
                                    output_fields=["doc_id"], limit=1)  # fmt: skip
            if not hit:
                raise InvalidInput(f"filter on a missing key: no document has metadata key {key!r}")
        return f"{visible} and {to_expr(flt)}"

    def search_dense(self, queries: FloatArray, k: int,
                     flt: dict[str, Any] | None) -> list[list[Ranked]]:  # fmt: skip
        state = self._state()
        expr = self._filtered(state, flt)
        limit = min(bm.MAX_LIMIT, k + 16)  # ties at the cut are settled by id upstream
        params: dict[str, Any] = {"metric_type": "IP"}
        if self.manifest.get("ann") == "hnsw":
            # ten graph candidates per document wanted: chunks of one document crowd the
            # graph's neighbourhoods, and grouping by document needs distinct ones
            params["params"] = {"ef": min(max(10 * limit, 200), 4096)}
        out = []
        for i in range(0, len(queries), 100):
            res = self.client.search(
                self.chunks_c, data=[q.tolist() for q in queries[i : i + 100]],
                anns_field="vec", limit=limit, filter=expr, group_by_field="doc_id",
                output_fields=_DENSE_OUT, search_params=params,
            )  # fmt: skip
            for hits in res:
                self._hits.remember(h["entity"] for h in hits)
                ranked = [Ranked(h["entity"]["doc_id"], float(h["distance"]),
                                 (int(h["entity"]["chunk_no"]), int(h["entity"]["start"]),
                                  int(h["entity"]["end"]))) for h in hits]  # fmt: skip
                ranked.sort(key=lambda r: (-np.float32(r.score), r.doc_id))
                out.append(ranked[:k])
        return out

    def search_bm25(self, queries: Sequence[Sequence[str]], k: int,
                    flt: dict[str, Any] | None) -> list[list[Ranked]]:  # fmt: skip
        state = self._state()
        expr = self._filtered(state, flt)
        tids = self.terms.lookup({s for q in queries for s in q})
        dfs = self.terms.dfs(tids.values())
        n, sum_dl = int(state["n_docs"]), int(state["sum_dl"])
        avgdl = sum_dl / n if n else 0.0
        out: list[list[Ranked]] = []
        for q in queries:
            counts = Counter(tids[s] for s in q if s in tids)
            weights = {t: c * bm.idf(n, dfs[t]) for t, c in counts.items()}
            if not weights or n == 0:
                out.append([])
                continue
            res = self.client.search(
                self.docs_c, data=[weights], anns_field="bm", limit=bm.candidate_depth(k),
                filter=expr, output_fields=["doc_id", "gen", "tf", "dl"],
                search_params={"metric_type": "IP"},
            )[0]  # fmt: skip
            self._hits.remember(h["entity"] for h in res)
            scored = [(float(np.float32(bm.bm25_score(h["entity"]["tf"], int(h["entity"]["dl"]),
                                                      weights, avgdl, self.k1, self.b))),
                       h["entity"]["doc_id"]) for h in res]  # fmt: skip
            scored.sort(key=lambda x: (-x[0], x[1]))
            out.append([Ranked(doc_id, s) for s, doc_id in scored[:k] if s > 0])
        return out

    def search_sparse(self, queries: SparseVectors, k: int,
                      flt: dict[str, Any] | None) -> list[list[Ranked]]:  # fmt: skip
        if not self.manifest.get("sparse"):
            return super().search_sparse(queries, k, flt)
        state = self._state()
        expr = self._filtered(state, flt)
        return milvus_sparse.search(
            self.client, self.chunks_c, queries, k, expr, min(bm.MAX_LIMIT, k + 16),
            lambda ids: self._rows(self.chunks_c, ids, milvus_sparse.OUT, state),
        )  # fmt: skip

    def dense_scores(self, query: FloatArray, ids: Sequence[str]) -> dict[str, float]:
        rows = self._rows(self.chunks_c, list(ids), ["doc_id", "vec"], self._state())
        q = np.asarray(query, dtype=np.float32)
        best: dict[str, float] = {}
        for r in rows:
            s = float(np.dot(np.asarray(r["vec"], dtype=np.float32), q))
            best[r["doc_id"]] = max(s, best.get(r["doc_id"], -np.inf))
        return best

    # --- writes --------------------------------------------------------------------------------

    def write(self, docs: Sequence[StoredDoc], chunks: Sequence[StoredChunk],
              vectors: FloatArray, *, replace: bool,
              sparse: SparseVectors | None = None) -> None:  # fmt: skip
        self._writable()
        milvus_check.check_sizes(docs)
        sp = milvus_check.sparse_rows(self.manifest, len(chunks), sparse)
        state = self._state()
        held = self.existing([d.id for d in docs])
        if held and not replace:
            raise InvalidInput(f"ids already in the index: {sorted(held)[:5]}; use upsert()")
        g = int(state["committed"]) + 1
        self._put_state({**state, "inflight": g})  # 1. a crash from here on is recovered
        ids, next_tid = self.terms.assign({s for d in docs for s in d.terms},
                                          int(state["next_tid"]))  # fmt: skip
        old = self._rows(self.docs_c, sorted(held), ["doc_id", "dl", "tf"], state)
        old_chunks = len(self._rows(self.chunks_c, sorted(held), ["doc_id"], state))
        n = int(state["n_docs"]) + len(docs) - len(old)
        sum_dl = int(state["sum_dl"]) + sum(d.length for d in docs) - sum(r["dl"] for r in old)
        avgdl = sum_dl / n if n else 0.0
        rows = []
        for d in docs:
            tf = {ids[s]: c for s, c in d.terms.items()}
            meta = json.loads(d.metadata_json)
            rows.append({"pk": f"{g}:{doc_key(d.id)}", "doc_id": d.id, "gen": g, "title": d.title,
                         "text": d.text, "metadata": d.metadata_json, "hash": d.content_hash,
                         "meta": meta, "marks": marks(meta), "dl": d.length, "avgdl": avgdl,
                         "tf": {t: float(c) for t, c in tf.items()} or {bm.NO_TERMS: 1e-30},
                         "bm": bm.impacts(tf, d.length, avgdl, self.k1, self.b)})  # fmt: skip
        crow = []
        for row, (c, v) in enumerate(zip(chunks, vectors, strict=True)):
            d = docs[c.doc]
            extra = {milvus_sparse.FIELD: sp[row]} if sp else {}
            crow.append({**extra, "pk": f"{g}:{c.chunk_no}:{doc_key(d.id)}", "doc_id": d.id,
                         "gen": g, "chunk_no": c.chunk_no, "start": c.start, "end": c.end,
                         "meta": rows[c.doc]["meta"], "marks": rows[c.doc]["marks"],
                         "vec": v.tolist()})  # fmt: skip
        if state.get(milvus_rows.REGISTRY):  # before the rows: the registry is a superset
            milvus_rows.register(self.client, self.meta_c, [d.id for d in docs])
        for coll, batch in ((self.docs_c, rows), (self.chunks_c, crow)):  # 2. invisible rows
            for i in range(0, len(batch), BATCH):
                self.client.insert(coll, batch[i : i + BATCH])
        delta: Counter[int] = Counter(t for r in rows for t in r["tf"])  # 3. statistics
        delta.subtract(Counter(int(t) for r in old for t in r["tf"]))
        self.terms.add_df(delta)
        hide = self._write_hide(g, sorted(held)) if held else None  # 4.
        new = {**state, "committed": g, "inflight": None, "hide": hide, "n_docs": n,
               "sum_dl": sum_dl, "next_tid": next_tid,
               "n_chunks": int(state["n_chunks"]) + len(chunks) - old_chunks}  # fmt: skip
        self._put_state(new)  # 5. the commit point
        if hide:
            self._clean(new)  # 6.
        self._seal()

    def delete(self, ids: Sequence[str]) -> int:
        self._writable()
        state = self._state()
        wanted = list(dict.fromkeys(ids))
        old = self._rows(self.docs_c, wanted, ["doc_id", "dl", "tf"], state)
        missing = [i for i in wanted if i not in {r["doc_id"] for r in old}]
        if missing:
            raise InvalidInput(f"ids not in the index: {missing[:5]}; nothing was deleted")
        if not wanted:
            return 0
        old_chunks = len(self._rows(self.chunks_c, wanted, ["doc_id"], state))
        g = int(state["committed"]) + 1
        self._put_state({**state, "inflight": g})
        gone: Counter[int] = Counter()
        gone.subtract(int(t) for r in old for t in r["tf"])
        self.terms.add_df(gone)
        hide = self._write_hide(g, wanted)
        new = {**state, "committed": g, "inflight": None, "hide": hide,
               "n_docs": int(state["n_docs"]) - len(old),
               "sum_dl": int(state["sum_dl"]) - sum(int(r["dl"]) for r in old),
               "n_chunks": int(state["n_chunks"]) - old_chunks}  # fmt: skip
        self._put_state(new)
        self._clean(new)
        self._seal()
        return len(wanted)

    def _seal(self) -> None:
        """milvus-lite searches rows not yet flushed by brute force in Python (seconds per
        query at a few thousand rows); flushing after a write seals them into indexed
        segments. A server flushes on its own schedule (explicit flushes are rate-limited
        there), so this is milvus-lite only."""
        if self.target.lite:
            for coll in (self.docs_c, self.chunks_c):
                self.client.flush(coll)

    # --- maintenance ---------------------------------------------------------------------------

    def recover(self) -> None:
        """Undo what a crashed writer left (see the module docstring)."""
        milvus_check.recover(self)

    def stats(self) -> StoreStats:
        return milvus_check.stats(self)

    def check(self) -> None:
        milvus_check.check(self)

    def compact(self) -> None:
        self._writable()
        for coll in (self.docs_c, self.chunks_c, self.meta_c):
            self.client.compact(coll)
