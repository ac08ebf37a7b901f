"""Group commit of index writes, through the real ASGI app on a real local index.

The order of arrival is made known, not guessed: a write that waits on an event holds the
index's writer (``IndexHub.write``, the hub's own API for any write), the requests are
sent one at a time, each after the one before is seen waiting in the index's queue
(``embedstack_queue_depth``), then the writer is released and the waiting requests are
applied as groups. The contract checked: final documents and every answer equal those of
the same requests applied one at a time in arrival order, with fewer index writes.
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from embedstack.errors import InvalidInput  # noqa: E402
from embedstack.index import Index  # noqa: E402
from embedstack.server import ServerSettings, create_app  # noqa: E402
from test_index_helpers import SMALL_CHUNKS  # noqa: E402
from test_server_helpers import tier0_models  # noqa: E402

NAME = "docs"
URL = f"/v1/indexes/{NAME}/documents"
WORDS = "protein cell gene cancer therapy brain neuron insulin sleep memory kinase trial".split()
IDS = [f"u{i}" for i in range(8)]


@pytest.fixture(scope="module")
def hash_registered() -> Iterator[str]:
    with tier0_models() as name:
        yield name


def _create(path: Path, model: str) -> None:
    with Index.create(path, encoder=model, chunking=SMALL_CHUNKS) as index:
        index.add([{"id": i, "text": f"seed {i} protein"} for i in IDS[:4]])


def _app(path: Path, model: str, **options: Any) -> Any:
    settings = ServerSettings(models=(model,), indexes={NAME: path}, api_keys=(), **options)
    return create_app(settings)


def _metric(app: Any, name: str, label: str) -> float:
    text = app.state.embedstack.metrics.render()
    found = re.search(rf'^{name}\{{[a-z]+="{re.escape(label)}"\}} (\S+)$', text, re.M)
    return float(found.group(1)) if found else 0.0


async def _until(ready: Any) -> None:
    for _ in range(20_000):
        if ready():
            return
        await asyncio.sleep(0.0005)
    raise AssertionError("the server did not get there in 10 s")


async def _in_order(app: Any, requests: list[tuple[str, dict[str, Any]]]) -> list[Any]:
    """Send ``requests`` (method, body) while the writer is held, each queued after the
    one before; release the writer; the responses, in order."""
    state = app.state.embedstack
    release = threading.Event()

    def depth() -> float:
        return _metric(app, "embedstack_queue_depth", f"index:{NAME}")

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        hold = asyncio.ensure_future(state.indexes.write(NAME, lambda index: release.wait(30)))
        await _until(lambda: depth() == 0)  # the writer took the hold and waits
        sent = []
        for i, (method, body) in enumerate(requests):
            sent.append(asyncio.ensure_future(client.request(method, URL, json=body)))
            await _until(lambda i=i: depth() == i + 1)
        release.set()
        assert await hold is True
        return list(await asyncio.gather(*sent))


def _random_requests(rng: np.random.Generator, n: int) -> list[tuple[str, dict[str, Any]]]:
    out: list[tuple[str, dict[str, Any]]] = []
    for _ in range(n):
        kind = rng.random()
        ids = [str(i) for i in rng.choice(IDS, size=int(rng.integers(1, 4)), replace=False)]
        if kind < 0.35:
            out.append(("DELETE", {"ids": ids[:2]}))
            continue
        docs = []
        for doc_id in ids:
            words = rng.choice(WORDS, size=int(rng.integers(1, 40)))  # 1 to 3 chunks
            doc: dict[str, Any] = {"id": doc_id, "text": " ".join(words)}
            if rng.random() < 0.3:
                doc["text"] = f"seed {doc_id} protein"  # often unchanged
            if rng.random() < 0.3:
                doc["metadata"] = {"v": int(rng.integers(0, 2))}
            docs.append(doc)
        if kind > 0.92:
            docs.append(dict(docs[0]))  # an id twice in one request: 400
        out.append(("POST", {"documents": docs}))
    return out


def _sequential(twin: Index, stored: dict[str, dict[str, Any]], method: str,
                body: dict[str, Any]) -> tuple[int, dict[str, Any]]:  # fmt: skip
    """The answer of one request applied alone: from a twin index written one request at a
    time (``chunks``), checked against a plain dict of the documents (the rest)."""
    if method == "DELETE":
        if any(i not in stored for i in body["ids"]):
            return 404, {}
        for i in body["ids"]:
            stored.pop(i, None)
        assert twin.delete(body["ids"]) == len(set(body["ids"]))
        return 200, {"deleted": len(set(body["ids"]))}
    docs = body["documents"]
    try:
        result = twin.upsert(docs).__dict__
    except InvalidInput:
        assert len({d["id"] for d in docs}) < len(docs)
        return 400, {}
    plain = {"id", "text", "metadata"}
    new = {d["id"]: {k: d.get(k, {} if k == "metadata" else None) for k in plain} for d in docs}
    assert result["added"] == sum(i not in stored for i in new)
    assert result["unchanged"] == sum(stored.get(i) == d for i, d in new.items())
    assert result["updated"] == len(new) - result["added"] - result["unchanged"]
    stored.update(new)
    return 200, result


@pytest.mark.parametrize(("seed", "group_commit"), [(0, True), (1, True), (2, True), (3, False)])
def test_concurrent_writes_equal_one_at_a_time_in_arrival_order(
    tmp_path: Path, hash_registered: str, seed: int, group_commit: bool
) -> None:
    served, twin_path = tmp_path / "served", tmp_path / "twin"
    _create(served, hash_registered)
    _create(twin_path, hash_registered)
    app = _app(served, hash_registered, group_commit=group_commit, max_group_requests=5,
               max_group_documents=9)  # fmt: skip
    rng = np.random.default_rng(seed)
    stored = {i: {"id": i, "text": f"seed {i} protein", "metadata": {}} for i in IDS[:4]}
    n_requests = ok_calls = 0

    async def main() -> None:
        nonlocal n_requests, ok_calls
        with Index.open(twin_path) as twin:
            for _ in range(4):
                requests = _random_requests(rng, 12)
                responses = await _in_order(app, requests)
                for (method, body), response in zip(requests, responses, strict=True):
                    status, expected = _sequential(twin, stored, method, body)
                    assert response.status_code == status, (body, response.text)
                    if status == 200:
                        assert response.json() == expected, body
                        ok_calls += 1
                    n_requests += 1
        await app.state.embedstack.aclose()

    asyncio.run(main())
    writes = _metric(app, "embedstack_index_write_requests_count", NAME)
    assert _metric(app, "embedstack_index_write_requests_sum", NAME) == ok_calls
    if group_commit:
        assert writes < ok_calls  # requests shared index writes
    else:
        assert writes == ok_calls  # one index write per request, as before group commit
    with Index.open(served, readonly=True) as index, Index.open(twin_path) as twin:
        assert len(index) == len(stored)
        for doc_id in IDS:
            got = index.get(doc_id)
            assert got == twin.get(doc_id)
            want = stored.get(doc_id)
            if want is None:
                assert got is None
            else:
                assert got is not None and {k: got[k] for k in want} == want
        index.check()


def test_waiting_writes_share_one_index_write(tmp_path: Path, hash_registered: str) -> None:
    """20 upserts and 10 deletes wait for a busy writer: 2 index writes answer all 30."""
    _create(tmp_path / "i", hash_registered)
    app = _app(tmp_path / "i", hash_registered)
    upserts = [("POST", {"documents": [{"id": f"n{i}", "text": f"new {i}"}]}) for i in range(20)]
    deletes = [("DELETE", {"ids": [f"n{i}"]}) for i in range(10)]

    async def main() -> list[Any]:
        responses = await _in_order(app, upserts + deletes)
        await app.state.embedstack.aclose()
        return responses

    responses = asyncio.run(main())
    assert [r.json() for r in responses[:20]] == [
        {"added": 1, "updated": 0, "unchanged": 0, "chunks": 1}
    ] * 20
    assert [r.json() for r in responses[20:]] == [{"deleted": 1}] * 10
    assert _metric(app, "embedstack_index_write_requests_count", NAME) == 2
    assert _metric(app, "embedstack_index_write_requests_sum", NAME) == 30
    assert _metric(app, "embedstack_index_write_documents_sum", NAME) == 30
    with Index.open(tmp_path / "i", readonly=True) as index:
        assert len(index) == 4 + 10
        assert index.get("n9") is None and index.get("n10") is not None


def test_one_bad_request_in_a_group_is_refused_alone(tmp_path: Path, hash_registered: str) -> None:
    _create(tmp_path / "i", hash_registered)
    app = _app(tmp_path / "i", hash_registered)
    requests = [
        ("POST", {"documents": [{"id": "a", "text": "alpha"}]}),
        ("POST", {"documents": [{"id": "b", "text": "beta"}, {"id": "b", "text": "twice"}]}),
        ("POST", {"documents": [{"id": "c", "text": "gamma"}, {"id": "u0", "text": "new"}]}),
        ("DELETE", {"ids": ["u1"]}),
        ("DELETE", {"ids": ["u2", "nope"]}),
        ("DELETE", {"ids": ["u3", "u3"]}),
    ]

    async def main() -> list[Any]:
        responses = await _in_order(app, requests)
        await app.state.embedstack.aclose()
        return responses

    responses = asyncio.run(main())
    assert [r.status_code for r in responses] == [200, 400, 200, 200, 404, 200]
    assert "repeats document 0" in responses[1].json()["error"]["message"]
    assert responses[2].json() == {"added": 1, "updated": 1, "unchanged": 0, "chunks": 2}
    assert responses[4].json()["error"]["code"] == "document_not_found"
    assert [r.json()["deleted"] for r in (responses[3], responses[5])] == [1, 1]
    with Index.open(tmp_path / "i", readonly=True) as index:
        assert sorted(d for d in ["a", "b", "c", "u0", "u1", "u2", "u3"] if index.get(d)) == [
            "a", "c", "u0", "u2",
        ]  # fmt: skip
        assert index.get("u0")["text"] == "new"  # type: ignore[index]


def test_group_bounds_are_validated() -> None:
    from pydantic import ValidationError

    for field in ("max_group_requests", "max_group_documents"):
        with pytest.raises(ValidationError, match=field):
            ServerSettings(models=(), api_keys=(), **{field: 0})
    assert ServerSettings(models=(), api_keys=()).group_commit is True
