"""The mixed soak of the HTTP server: embeddings, index searches, upserts and deletes from
concurrent clients, then a read-back of the index that checks every acknowledged write.

Used by ``benchmarks/server_load.py --mixed`` (a real ``embedstack serve`` subprocess on a
local and a PostgreSQL-backed index) and by the tests (an in-process server, small runs).

The workload (:func:`mixed_load`): ``requests`` requests from ``concurrency`` clients over
one ``httpx.AsyncClient``; each request's kind is drawn with :data:`WEIGHTS`:

* ``embed``: ``POST /v1/embeddings``, 1–4 texts;
* ``search``: ``POST /v1/indexes/{name}/search``, mode dense, bm25 or hybrid, ``k`` 10,
  one in four with a metadata filter;
* ``upsert``: ``POST /v1/indexes/{name}/documents``, 1–4 documents, half of them new ids,
  the others new versions of known ids (present or deleted);
* ``delete``: ``DELETE /v1/indexes/{name}/documents``, 1–2 ids believed present.

Writes to one id never overlap in time (an id is taken while a write naming it is in
flight), so the order of a single id's acknowledgements is the order the server applied
them, and :class:`Acked` — built from acknowledged responses only — says what the index
must hold afterwards. A write that fails (any non-2xx, a transport error, an unexpected
body) counts as an error and makes its ids uncertain (excluded from the check).

:func:`verify` then reads the index itself (not the server's answers): every acknowledged
upsert is there with its acknowledged title, text and metadata and is found by BM25 for
its version's unique token, every acknowledged delete is gone (``get`` is None and BM25
for its last token does not find it), the document count matches, and ``Index.check()``
passes where the engine has one.
"""

from __future__ import annotations

import asyncio
import random
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np

KINDS = ("embed", "search", "upsert", "delete")
WEIGHTS = (0.35, 0.35, 0.2, 0.1)
_LETTERS = "bcdfghjklmnpqrstvwxz"  # consonants only: no English suffix for a stemmer to cut


def register_hash(model: str) -> bool:
    """Register ``hash-DIM`` as a model (the hashing encoder at DIM dimensions) when
    ``model`` is such a name; returns whether it was one."""
    if not re.fullmatch(r"hash-[1-9][0-9]{0,4}", model):
        return False
    from embedstack import HashEncoder, ModelSpec, register_model

    dim = int(model.split("-")[1])
    spec = ModelSpec(model, "embedstack/hash", dim, 512, factory=HashEncoder.from_spec)
    register_model(spec, overwrite=True)
    return True


def _letters(n: int) -> str:
    out = ""
    while True:
        n, r = divmod(n, len(_LETTERS))
        out = _LETTERS[r] + out
        if n == 0:
            return out


def token(doc_id: str, version: int) -> str:
    """The word only version ``version`` of document ``doc_id`` contains (``doc_id`` is
    ``d<n>``), e.g. ``qqcvbq``: letters only, so every analyzer keeps it whole."""
    return f"qq{_letters(int(doc_id[1:]))}v{_letters(version)}q"


def make_doc(doc_id: str, version: int, texts: list[str]) -> dict[str, Any]:
    """Version ``version`` of document ``doc_id``: a real sentence plus its unique token."""
    n = int(doc_id[1:])
    body = texts[(n * 7 + version) % len(texts)]
    return {
        "id": doc_id,
        "title": f"document {n} version {version}",
        "text": f"{body} {token(doc_id, version)}",
        "metadata": {"group": n % 8, "version": version},
    }


@dataclass
class Acked:
    """What the index must hold, from acknowledged writes only.

    Attributes:
        docs: id → the acknowledged document, or None after an acknowledged delete.
        versions: id → the last version written (acknowledged or not).
        uncertain: ids a failed write named: their state is unknown.
        busy: ids a write in flight names (no second write may name them).
    """

    docs: dict[str, dict[str, Any] | None] = field(default_factory=dict)
    versions: dict[str, int] = field(default_factory=dict)
    uncertain: set[str] = field(default_factory=set)
    busy: set[str] = field(default_factory=set)
    next_id: int = 0

    def seed(self, n: int, texts: list[str]) -> list[dict[str, Any]]:
        """``n`` first documents (version 0), recorded as present; add them to the index."""
        docs = [make_doc(f"d{i}", 0, texts) for i in range(n)]
        for d in docs:
            self.docs[d["id"]] = d
            self.versions[d["id"]] = 0
        self.next_id = n
        return docs

    def present(self) -> list[str]:
        """Ids that must be in the index."""
        return [i for i, d in self.docs.items() if d is not None and i not in self.uncertain]

    def deleted(self) -> list[str]:
        """Ids that must not be in the index."""
        return [i for i, d in self.docs.items() if d is None and i not in self.uncertain]


@dataclass
class _Run:
    acked: Acked
    rng: random.Random
    texts: list[str]
    latencies: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in KINDS})
    errors: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=lambda: {k: 0 for k in KINDS})

    def free(self, ids: list[str], n: int) -> list[str]:
        """Up to ``n`` ids of ``ids`` no write in flight names, taken (marked busy)."""
        picked: list[str] = []
        for _ in range(4 * n):
            if len(picked) == n or not ids:
                break
            doc_id = self.rng.choice(ids)
            if doc_id not in self.acked.busy and doc_id not in picked:
                picked.append(doc_id)
        self.acked.busy.update(picked)
        return picked


async def _embed(client: Any, run: _Run, model: str, index: str) -> str | None:
    texts = run.rng.sample(run.texts, run.rng.randint(1, 4))
    r = await client.post("/v1/embeddings", json={"model": model, "input": texts})
    if r.status_code != 200 or len(r.json()["data"]) != len(texts):
        return f"embed {r.status_code}: {r.text[:200]}"
    return None


async def _search(client: Any, run: _Run, model: str, index: str) -> str | None:
    body: dict[str, Any] = {
        "query": run.rng.choice(run.texts),
        "mode": run.rng.choice(("dense", "bm25", "hybrid")),
        "k": 10,
    }
    if run.rng.random() < 0.25:
        body["filter"] = {"group": run.rng.randrange(8)}
    r = await client.post(f"/v1/indexes/{index}/search", json=body)
    if r.status_code != 200 or len(r.json()["data"]) > 10:
        return f"search {r.status_code}: {r.text[:200]}"
    return None


async def _write(
    acked: Acked,
    ids: list[str],
    send: Callable[[], Awaitable[Any]],
    confirmed: Callable[[Any], bool],
    what: str,
    outcome: dict[str, dict[str, Any] | None],
) -> str | None:
    """Send one write naming ``ids`` (taken busy) and record ``outcome`` (a document, or None
    for deleted, by id) as acknowledged only when the server answers 200 and ``confirmed``
    accepts the response; a refusal (returned as the error) or a transport error (raised)
    makes ``ids`` uncertain. Either way they are no longer busy."""
    try:
        r = await send()
        if r.status_code != 200 or not confirmed(r):
            acked.uncertain.update(ids)
            return f"{what} {r.status_code}: {r.text[:200]}"
        acked.docs.update(outcome)
        return None
    except BaseException:
        acked.uncertain.update(ids)
        raise
    finally:
        acked.busy.difference_update(ids)


async def _upsert(client: Any, run: _Run, model: str, index: str) -> str | None:
    acked, n = run.acked, run.rng.randint(1, 4)
    known = run.free(list(acked.docs), n // 2)
    new = [f"d{acked.next_id + i}" for i in range(n - len(known))]
    acked.next_id += len(new)
    acked.busy.update(new)
    ids = known + new
    docs = []
    for doc_id in ids:
        acked.versions[doc_id] = acked.versions.get(doc_id, -1) + 1
        docs.append(make_doc(doc_id, acked.versions[doc_id], run.texts))

    def confirmed(r: Any) -> bool:
        body = r.json()
        return body["added"] + body["updated"] + body["unchanged"] == len(ids)

    send = partial(client.post, f"/v1/indexes/{index}/documents", json={"documents": docs})
    return await _write(acked, ids, send, confirmed, "upsert", {d["id"]: d for d in docs})


async def _delete(client: Any, run: _Run, model: str, index: str) -> str | None:
    acked = run.acked
    ids = run.free(acked.present(), run.rng.randint(1, 2))
    if not ids:
        return None  # nothing to delete now: counted as a request that did nothing
    send = partial(client.request, "DELETE", f"/v1/indexes/{index}/documents", json={"ids": ids})
    return await _write(acked, ids, send, lambda r: r.json()["deleted"] == len(ids), "delete",
                        dict.fromkeys(ids))  # fmt: skip


_CALLS = {"embed": _embed, "search": _search, "upsert": _upsert, "delete": _delete}


def _summary(ms: list[float]) -> dict[str, Any]:
    if not ms:
        return {"n": 0}
    arr = np.array(ms)
    return {"n": len(ms), "p50_ms": round(float(np.percentile(arr, 50)), 2),
            "p99_ms": round(float(np.percentile(arr, 99)), 2)}  # fmt: skip


async def mixed_load(
    client: Any,
    *,
    model: str,
    index: str,
    acked: Acked,
    texts: list[str],
    requests: int,
    concurrency: int,
    seed: int = 0,
) -> dict[str, Any]:
    """Send ``requests`` mixed requests from ``concurrency`` clients through ``client`` (an
    ``httpx.AsyncClient`` with the server's base URL); ``acked`` is updated from the
    acknowledged writes. Returns errors, requests/s and p50/p99 per kind."""
    import httpx

    run = _Run(acked, random.Random(seed), texts)
    remaining = requests

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            kind = run.rng.choices(KINDS, WEIGHTS)[0]
            start = time.perf_counter()
            try:
                error = await _CALLS[kind](client, run, model, index)
            except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
                error = f"{kind}: {exc!r}"
            run.latencies[kind].append((time.perf_counter() - start) * 1000)
            run.counts[kind] += 1
            if error is not None:
                run.errors.append(error)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - start
    return {
        "requests": sum(run.counts.values()),
        "concurrency": concurrency,
        "errors": len(run.errors),
        "first_errors": run.errors[:5],
        "seconds": round(elapsed, 2),
        "requests_per_s": round(sum(run.counts.values()) / elapsed, 1),
        "per_kind": {k: _summary(v) for k, v in run.latencies.items()},
    }


def verify(index: Any, acked: Acked) -> dict[str, Any]:
    """Read ``index`` back (an open :class:`~embedstack.index.Index`, any backend) and
    check it against ``acked``; ``ok`` is True when nothing is missing, stale or back."""
    present, deleted = acked.present(), acked.deleted()
    missing, wrong, resurrected, unfound, still_found = [], [], [], [], []
    for doc_id, want in ((i, acked.docs[i]) for i in present):
        if want is None:
            continue  # not reached: present() lists acknowledged upserts only
        got = index.get(doc_id)
        if got is None:
            missing.append(doc_id)
            continue
        if (got.get("title"), got["text"], got.get("metadata") or {}) != (
            want["title"], want["text"], want["metadata"]):  # fmt: skip
            wrong.append(doc_id)
        hits = index.search(token(doc_id, want["metadata"]["version"]), mode="bm25", k=3)
        if not hits or hits[0].doc_id != doc_id:
            unfound.append(doc_id)
    for doc_id in deleted:
        if index.get(doc_id) is not None:
            resurrected.append(doc_id)
        hits = index.search(token(doc_id, acked.versions[doc_id]), mode="bm25", k=3)
        if any(h.doc_id == doc_id for h in hits):
            still_found.append(doc_id)
    count = len(index)
    count_ok = count == len(present) if not acked.uncertain else None
    from embedstack.errors import IndexCorrupt

    try:
        index.check()
        check = "ok"
    except IndexCorrupt as exc:
        check = str(exc)
    bad = {
        "missing": missing,
        "wrong_content": wrong,
        "not_found_by_bm25": unfound,
        "deleted_but_present": resurrected,
        "deleted_but_found_by_bm25": still_found,
    }
    return {
        "present_checked": len(present),
        "deleted_checked": len(deleted),
        "uncertain": len(acked.uncertain),
        "documents_in_index": count,
        "count_matches": count_ok,
        **{k: len(v) for k, v in bad.items()},
        "check": check,
        "examples": {k: v[:5] for k, v in bad.items() if v},
        "ok": not any(bad.values()) and count_ok is not False and check == "ok",
    }
