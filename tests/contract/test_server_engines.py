"""The HTTP server serving indexes held by engines, named by URI: PostgreSQL (this suite's
pgserver) and milvus-lite, through the same routes as a local index; engines that cannot be
opened answer 503 (or fail ``embedstack serve`` with one line); and the mixed soak on
PostgreSQL (slow)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from embedstack.index import Index  # noqa: E402
from embedstack.server import ServerSettings, create_app  # noqa: E402
from test_server_helpers import ServerThread, soak, tier0_models  # noqa: E402

ENGINES = {"postgresql": "pg_target", "milvus": "milvus_target"}
DOCS = [
    {"id": "cats", "text": "Cats purr when they are content.", "metadata": {"year": 2020}},
    {"id": "dogs", "text": "Dogs bark at strangers.", "metadata": {"year": 2021}},
    {"id": "fish", "text": "Fish swim in schools.", "metadata": {"year": 2022}},
]


@pytest.fixture()
def model() -> Iterator[str]:
    with tier0_models() as name:
        yield name


@pytest.fixture(params=sorted(ENGINES))
def engine_uri(request: pytest.FixtureRequest) -> str:
    make: Callable[[], str] = request.getfixturevalue(ENGINES[request.param])
    return make()


def _error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    return error


def test_server_serves_an_engine_index_by_uri(engine_uri: str, model: str) -> None:
    with Index.create(engine_uri, encoder=model) as index:
        index.add(DOCS)
    settings = ServerSettings(models=(model,), indexes={"eng": engine_uri}, api_keys=(),
                              preload=True)  # fmt: skip
    with ServerThread(create_app(settings)) as server, httpx.Client(base_url=server.url) as http:
        assert http.get("/v1/indexes").json()["data"] == ["eng"]
        assert http.get("/v1/indexes/eng").json()["n_docs"] == 3
        hits = http.post("/v1/indexes/eng/search", json={"query": "purr", "mode": "bm25"}).json()
        assert [h["id"] for h in hits["data"]] == ["cats"]
        body = {"query": "animals", "mode": "dense", "filter": {"year": 2021}}
        assert [h["id"] for h in http.post("/v1/indexes/eng/search", json=body).json()["data"]] == [
            "dogs"
        ]
        piped = http.post("/v1/indexes/eng/search", json={"query": "bark", "pipeline": "hybrid"})
        assert piped.status_code == 200 and piped.json()["data"][0]["id"] == "dogs"
        new = [
            {"id": "owls", "text": "Owls hunt at night."},
            {"id": "cats", "text": "Cats sleep most of the day.", "metadata": {"year": 2023}},
        ]
        done = http.post("/v1/indexes/eng/documents", json={"documents": new})
        assert done.json() == {**done.json(), "added": 1, "updated": 1, "unchanged": 0}
        gone = http.request("DELETE", "/v1/indexes/eng/documents", json={"ids": ["fish"]})
        assert gone.json() == {"deleted": 1}
        missing = http.request("DELETE", "/v1/indexes/eng/documents", json={"ids": ["fish"]})
        assert _error(missing, 404)["code"] == "document_not_found"
        sparse = http.post("/v1/indexes/eng/search", json={"query": "cats", "mode": "sparse"})
        assert "no sparse (SPLADE) postings" in _error(sparse, 422)["message"]
        hits = http.post("/v1/indexes/eng/search", json={"query": "night", "mode": "bm25"}).json()
        assert [h["id"] for h in hits["data"]] == ["owls"]  # the write is visible to readers
    with Index.open(engine_uri, readonly=True) as index:  # read back, not the responses
        assert index.get("fish") is None
        owls = index.get("owls")
        assert owls is not None and owls["text"] == "Owls hunt at night."
        cats = index.get("cats")
        assert cats is not None and cats["text"] == "Cats sleep most of the day."
        assert cats["metadata"] == {"year": 2023} and len(index) == 3


UNREACHABLE = [
    "postgresql://nobody@127.0.0.1:1/nowhere?index=papers",  # nothing listens on port 1
    "postgresql://nobody@127.0.0.1:1/nowhere?index=Bad-Name",  # refused by the URI parser
    "milvus:///nowhere/file.sqlite?index=docs",  # milvus-lite needs a .db file
]


@pytest.mark.parametrize("uri", UNREACHABLE)
def test_an_index_that_cannot_be_opened_is_503_not_a_traceback(
    uri: str, model: str, caplog: pytest.LogCaptureFixture
) -> None:
    pytest.importorskip("psycopg" if uri.startswith("postgresql") else "pymilvus")
    settings = ServerSettings(models=(model,), indexes={"x": uri}, api_keys=())
    with ServerThread(create_app(settings)) as server, httpx.Client(base_url=server.url) as http:
        for response in (
            http.post("/v1/indexes/x/search", json={"query": "cats"}),
            http.get("/v1/indexes/x"),
            http.post("/v1/indexes/x/documents", json={"documents": [DOCS[0]]}),
            http.post("/v1/indexes/x/search", json={"query": "cats", "mode": "sparse"}),
        ):
            error = _error(response, 503)
            assert (
                error["code"] == "index_unavailable"
                and "index 'x' is unavailable" in (error["message"])
            )
            assert response.headers["Retry-After"] == "1"
            assert "127.0.0.1" not in response.text and "nowhere" not in response.text
        ok = http.post("/v1/embeddings", json={"model": model, "input": "still serving"})
        assert ok.status_code == 200
        assert http.get("/openapi.json").status_code == 200  # describes the API regardless
    assert any("cannot be opened" in r.getMessage() for r in caplog.records)


def test_serve_fails_with_one_line_when_an_engine_is_unreachable(
    model: str, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("psycopg")
    from embedstack.cli import run

    uri = "postgresql://nobody:pw@127.0.0.1:1/nowhere?index=papers"
    assert run(["serve", "--model", model, "--index", uri, "--port", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error:") and "cannot connect to" in err[-1]
    assert "pw@" not in err[-1] and "Traceback" not in "\n".join(err)
    assert run(["serve", "--model", model, "--index", "x=mysql://h/db"]) == 2
    err = capsys.readouterr().err.strip()
    assert "unknown index URI scheme 'mysql://'" in err and "\n" not in err


@pytest.mark.slow
def test_mixed_soak_on_postgresql(pg_target: Callable[[], str], model: str) -> None:
    result, checked, acked = soak(pg_target(), model, requests=300, concurrency=8)
    assert result["errors"] == 0, result["first_errors"]
    assert checked["ok"], checked
    assert checked["deleted_checked"] > 0 and checked["count_matches"] is True
    assert checked["present_checked"] + checked["deleted_checked"] == len(acked.docs)
