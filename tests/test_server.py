"""HTTP server against a real uvicorn on 127.0.0.1: the official openai and cohere clients,
the rerank and index APIs, bad input, limits, auth, metrics and the ``serve`` command.

One server per module (started in a thread on a free port, stopped at the end); every
bad-input test runs against that same server, which keeps serving good requests.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from embedstack import HashEncoder, vectors  # noqa: E402
from embedstack.index import Index  # noqa: E402
from embedstack.server import ServerSettings, create_app  # noqa: E402
from embedstack.server.models import tokenizer_of  # noqa: E402
from test_server_helpers import (  # noqa: E402
    HASH,
    RERANKER,
    OverlapReranker,
    ServerThread,
    tier0_models,
)

MINILM = "all-MiniLM-L6-v2"
TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Vitamin D deficiency is associated with bone fractures.",
    "Embeddings map text to vectors.",
]


@pytest.fixture(scope="module")
def hash_registered() -> Iterator[str]:
    with tier0_models() as name:
        yield name


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory: pytest.TempPathFactory, hash_registered: str) -> Path:
    path = tmp_path_factory.mktemp("server") / "papers"
    with Index.create(path, encoder=hash_registered) as index:
        index.add(
            [
                {
                    "id": "cats",
                    "text": "Cats purr when they are content.",
                    "metadata": {"year": 2020},
                },
                {"id": "dogs", "text": "Dogs bark at strangers.", "metadata": {"year": 2021}},
                {"id": "fish", "text": "Fish swim in schools.", "metadata": {"year": 2022}},
            ]
        )
    return path


@pytest.fixture(scope="module")
def server(minilm: Any, index_dir: Path, hash_registered: str) -> Iterator[ServerThread]:
    settings = ServerSettings(
        models=(hash_registered,),
        rerankers=(RERANKER,),
        indexes={"papers": index_dir},
        api_keys=(),
        max_inputs_per_request=64,
        max_chars_per_input=2_000,
        max_body_bytes=256 * 1024,
        max_top_n=5,
        max_k=20,
        preload=True,
    )
    with ServerThread(create_app(settings, encoders={MINILM: minilm})) as running:
        yield running


@pytest.fixture(scope="module")
def http(server: ServerThread) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=60) as client:
        yield client


def _error(response: httpx.Response, status: int) -> dict[str, Any]:
    """Assert ``status`` and OpenAI's error shape; return the inner error object."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    assert isinstance(error["message"], str) and error["message"]
    assert "Traceback" not in error["message"]
    return dict(error)


def _expected(minilm: Any, texts: list[str], dim: int | None = None) -> np.ndarray:
    matrix = np.asarray(minilm.encode_documents(texts))
    return vectors.truncate(matrix, dim) if dim else matrix


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return np.sum(a * b, axis=1)


# -- the official openai client ---------------------------------------------------------------
@pytest.fixture(scope="module")
def openai_client(server: ServerThread) -> Iterator[Any]:
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
    yield client
    client.close()


def test_openai_client_default_encoding(openai_client: Any, minilm: Any) -> None:
    # The client asks for base64 by default and decodes it itself.
    result = openai_client.embeddings.create(model=MINILM, input=TEXTS, dimensions=256)
    got = np.array([item.embedding for item in result.data], dtype=np.float32)
    assert got.shape == (3, 256) and [item.index for item in result.data] == [0, 1, 2]
    assert np.all(_cosines(got, _expected(minilm, TEXTS, 256)) >= 0.9999)
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)  # re-normalized
    assert result.model == MINILM and result.object == "list"
    counted = int(np.sum(minilm.count_tokens(TEXTS)))
    assert result.usage.prompt_tokens == result.usage.total_tokens == counted


def test_openai_client_float_and_base64(openai_client: Any, minilm: Any) -> None:
    expected = _expected(minilm, TEXTS, 256)
    floats = openai_client.embeddings.create(
        model=MINILM, input=TEXTS, dimensions=256, encoding_format="float"
    )
    got = np.array([item.embedding for item in floats.data], dtype=np.float32)
    assert np.all(_cosines(got, expected) >= 0.9999)
    raw = openai_client.embeddings.create(
        model=MINILM, input=TEXTS, dimensions=256, encoding_format="base64"
    )
    decoded = np.stack(
        [np.frombuffer(base64.b64decode(item.embedding), dtype="<f4") for item in raw.data]
    )
    assert decoded.shape == (3, 256) and np.all(_cosines(decoded, expected) >= 0.9999)
    full = openai_client.embeddings.create(model=MINILM, input=TEXTS[0], encoding_format="float")
    assert len(full.data) == 1 and len(full.data[0].embedding) == minilm.dim
    assert _cosines(np.array([full.data[0].embedding]), _expected(minilm, TEXTS[:1]))[0] >= 0.9999


def test_openai_token_ids_and_query_side(
    openai_client: Any, http: httpx.Client, minilm: Any
) -> None:
    tokenizer = tokenizer_of(minilm)
    ids = [tokenizer.encode(t, add_special_tokens=False).ids for t in TEXTS[:2]]
    result = openai_client.embeddings.create(model=MINILM, input=ids, encoding_format="float")
    got = np.array([item.embedding for item in result.data])
    decoded = [tokenizer.decode(i, skip_special_tokens=True) for i in ids]
    assert np.all(_cosines(got, _expected(minilm, decoded)) >= 0.9999)
    one = openai_client.embeddings.create(model=MINILM, input=ids[0], encoding_format="float")
    assert len(one.data) == 1 and _cosines(np.array([one.data[0].embedding]), got[:1])[0] > 0.9999
    query = http.post(
        "/v1/embeddings", json={"model": MINILM, "input": TEXTS[:1], "input_type": "query"}
    )
    assert query.status_code == 200, query.text
    want = np.asarray(minilm.encode_queries(TEXTS[:1]))
    assert _cosines(np.array([query.json()["data"][0]["embedding"]]), want)[0] >= 0.9999


def test_models_list(openai_client: Any, http: httpx.Client) -> None:
    listed = {m.id: m for m in openai_client.models.list().data}
    assert set(listed) == {MINILM, HASH, RERANKER}
    raw = http.get("/v1/models").json()
    assert raw["object"] == "list"
    cards = {m["id"]: m for m in raw["data"]}
    assert cards[MINILM]["dimensions"] == 384 and cards[HASH]["dimensions"] == 64
    assert cards[RERANKER]["type"] == "rerank" and cards[MINILM]["object"] == "model"
    assert http.get(f"/v1/models/{HASH}").json()["id"] == HASH
    _error(http.get("/v1/models/nope"), 404)


def test_concurrent_requests_are_batched_and_equal(
    http: httpx.Client, server: ServerThread
) -> None:
    texts = [f"sentence number {i} about topic {i % 7}" for i in range(40)]
    results: dict[int, list[float]] = {}

    def one(i: int) -> None:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            response = client.post("/v1/embeddings", json={"model": HASH, "input": texts[i]})
            assert response.status_code == 200, response.text
            results[i] = response.json()["data"][0]["embedding"]

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(texts))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    got = np.array([results[i] for i in range(len(texts))])
    assert np.allclose(got, HashEncoder(64, name=HASH).encode_documents(texts), atol=1e-6)
    metrics = http.get("/metrics").text
    assert f'embedstack_batch_requests_count{{model="{HASH}"}}' in metrics


# -- rerank -----------------------------------------------------------------------------------
def test_rerank_cohere_shape(http: httpx.Client) -> None:
    documents = ["cats purr", "dogs bark loudly at cats", {"text": "fish swim", "id": "f"}]
    response = http.post(
        "/v1/rerank",
        json={
            "model": RERANKER,
            "query": "why do cats purr",
            "documents": documents,
            "top_n": 2,
            "return_documents": True,
        },
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"id", "model", "results", "meta"} and body["model"] == RERANKER
    want = OverlapReranker().score("why do cats purr", ["cats purr", "dogs bark loudly at cats",
                                                         "fish swim"])  # fmt: skip
    order = np.argsort(-want, kind="stable")[:2].tolist()
    assert [r["index"] for r in body["results"]] == order == [0, 1]
    assert [r["relevance_score"] for r in body["results"]] == pytest.approx(want[order].tolist())
    assert body["results"][0]["document"] == {"text": "cats purr"}
    plain = http.post(
        "/v1/rerank", json={"model": RERANKER, "query": "fish", "documents": documents}
    ).json()
    assert len(plain["results"]) == 3 and "document" not in plain["results"][0]
    assert plain["results"][0]["index"] == 2


def test_rerank_with_the_cohere_client(server: ServerThread) -> None:
    cohere = pytest.importorskip("cohere")
    with httpx.Client(timeout=30) as transport:
        _cohere_calls(cohere, server.url, transport)


def _cohere_calls(cohere: Any, url: str, transport: httpx.Client) -> None:
    client = cohere.Client(api_key="unused", base_url=url, httpx_client=transport)
    result = client.rerank(
        model=RERANKER,
        query="dogs bark",
        documents=["cats purr", "dogs bark at night", "birds sing"],
        top_n=2,
        return_documents=True,
    )
    assert [r.index for r in result.results] == [1, 0]
    assert result.results[0].document is not None
    assert result.results[0].document.text == "dogs bark at night"
    assert result.results[0].relevance_score > result.results[1].relevance_score
    v2 = cohere.ClientV2(api_key="unused", base_url=url, httpx_client=transport)
    result2 = v2.rerank(model=RERANKER, query="birds", documents=["cats", "birds sing"])
    assert [r.index for r in result2.results] == [1, 0]


def test_reranker_from_library_loader(monkeypatch: pytest.MonkeyPatch) -> None:
    import embedstack.rerank
    from embedstack.errors import ModelNotFound
    from embedstack.server.rerank import resolve_reranker

    loaded: list[tuple[str, dict[str, Any]]] = []

    def load(name: str, **options: Any) -> OverlapReranker:
        loaded.append((name, options))
        return OverlapReranker()

    monkeypatch.setattr(embedstack.rerank, "load_reranker", load)
    factory = resolve_reranker("cross-encoder/some-model")
    assert loaded == []  # nothing is loaded until the server calls the factory
    assert isinstance(factory(), OverlapReranker)
    assert loaded == [("cross-encoder/some-model", {"show_progress": False})]
    monkeypatch.undo()
    with pytest.raises(ModelNotFound, match="not found"):
        resolve_reranker("/nonexistent/reranker")()


def test_serve_reranker_folder_is_the_pipelines_reranker_loaded_once(
    tmp_path: Path, index_dir: Path, hash_registered: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``serve --reranker ./reranker``: served as ``reranker``, THE cross-encoder of the
    presets that rerank, loaded once for any number of pipeline searches."""
    import embedstack.rerank
    from embedstack.pipeline import Pipeline

    loads: list[str] = []

    def load(name: str, **options: Any) -> OverlapReranker:
        loads.append(name)
        return OverlapReranker()

    monkeypatch.setattr(embedstack.rerank, "load_reranker", load)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "reranker").mkdir()
    settings = ServerSettings(
        models=(HASH,), rerankers=("./reranker",), indexes={"papers": index_dir}, api_keys=()
    )
    queries = ["cats purr", "dogs bark", "fish swim", "animals at night"] * 3
    app = create_app(settings)
    with ServerThread(app) as running, httpx.Client(base_url=running.url) as client:
        search = "/v1/indexes/papers/search"
        assert [m["id"] for m in client.get("/v1/models").json()["data"]][-1] == "reranker"
        with Index.open(index_dir, readonly=True) as index:
            local = Pipeline("hybrid-rerank", reranker=OverlapReranker())
            expected = {q: [h.doc_id for h in local.run(index, q, 3)] for q in queries}
        for q in queries:
            got = client.post(search, json={"query": q, "pipeline": "hybrid-rerank", "k": 3})
            assert got.status_code == 200, got.text
            body = got.json()
            assert body["mode"] is None and body["pipeline"] == {
                "name": "hybrid-rerank",
                "config": local.config.to_string(),
                "models": {"rerank": "reranker"},
            }
            assert [h["id"] for h in body["data"]] == expected[q]
            assert {"rrf", "rerank"} <= set(body["data"][0]["ranks"])
        # a stage may name the served reranker by its name or the folder it came from
        for model in ("reranker", "./reranker", str(tmp_path / "reranker")):
            spec = f'bm25(top=10) -> rerank("{model}", top=3)'
            named = client.post(search, json={"query": "cats", "pipeline": spec})
            assert named.status_code == 200, named.text
            assert named.json()["pipeline"]["models"] == {"rerank": "reranker"}
        rerank = client.post(
            "/v1/rerank", json={"model": "reranker", "query": "cats", "documents": ["cats", "x"]}
        )
        assert rerank.status_code == 200, rerank.text
        other = 'bm25(top=10) -> rerank("./elsewhere", top=3)'
        refused = client.post(search, json={"query": "cats", "pipeline": other})
        error = _error(refused, 400)
        assert error["param"] == "pipeline" and "'./elsewhere' is not served" in error["message"]
        assert "served rerankers: reranker" in error["message"]
        assert len(app.state.embedstack.pipelines) == 2  # hybrid-rerank, and bm25 -> rerank
    assert loads == ["./reranker"]  # one load, at start, for every route and pipeline


def test_pipeline_with_rerank_on_a_server_without_reranker(
    index_dir: Path, hash_registered: str
) -> None:
    settings = ServerSettings(models=(HASH,), indexes={"papers": index_dir}, api_keys=())
    search = "/v1/indexes/papers/search"
    with ServerThread(create_app(settings)) as running, httpx.Client(base_url=running.url) as c:
        refused = c.post(search, json={"query": "cats", "pipeline": "hybrid-rerank"})
        error = _error(refused, 400)
        assert error["param"] == "pipeline" and "serve --reranker DIR" in error["message"]
        assert _error(c.post(search, json={"query": "cats", "pipeline": ""}), 422)
        assert _error(c.post(search, json={"query": "cats", "pipeline": " "}), 422)
        assert c.post(search, json={"query": "cats", "pipeline": "hybrid"}).status_code == 200


def test_search_request_speaks_search_options(http: httpx.Client) -> None:
    """The server's search fields are SearchOptions' (same names, same checks), and the
    default mode is DEFAULT_MODE."""
    from dataclasses import fields

    from embedstack.index.protocols import DEFAULT_MODE, SearchOptions
    from embedstack.server.index_schemas import SearchRequest

    names = {f.name for f in fields(SearchOptions)}
    assert names <= set(SearchRequest.model_fields)
    assert SearchRequest(query="q").mode == DEFAULT_MODE == "hybrid"
    assert SearchRequest.model_fields["k"].default == SearchOptions().k
    assert SearchRequest.model_fields["candidates"].default == SearchOptions().candidates
    assert SearchRequest.model_fields["rrf_k"].default == SearchOptions().rrf_k
    search = "/v1/indexes/papers/search"
    plain = http.post(search, json={"query": "dogs", "k": 3}).json()
    hybrid = http.post(search, json={"query": "dogs", "k": 3, "mode": "hybrid"}).json()
    assert plain["mode"] == "hybrid" and plain["data"] == hybrid["data"]
    knobs = {"mode": "hybrid", "k": 2, "retrievers": ["bm25", "dense"], "rrf_k": 1.0,
             "candidates": 2}  # fmt: skip
    tuned = http.post(search, json={"query": "dogs", **knobs})
    assert tuned.status_code == 200, tuned.text
    assert set(tuned.json()["data"][0]["ranks"]) >= {"bm25", "dense"}
    dup = {"query": "dogs", "retrievers": ["bm25", "bm25"]}
    assert _error(http.post(search, json=dup), 422)["param"] == "retrievers"
    assert _error(http.post(search, json={"query": "dogs", "rrf_k": 0}), 422)
    assert _error(http.post(search, json={"query": "dogs", "candidates": 0}), 422)
    schema = http.get("/openapi.json").json()["components"]["schemas"]
    request = schema.get("SearchRequest-Input", schema.get("SearchRequest"))
    assert request["properties"]["retrievers"]["anyOf"][0]["uniqueItems"] is True
    assert "sparse" not in request["properties"]["mode"]["enum"]  # no served index has it
    for word in ("`k`", "`top_n`", "`top`"):
        assert word in json.dumps(request)


# -- indexes ----------------------------------------------------------------------------------
def test_index_stats_search_upsert_delete(http: httpx.Client, index_dir: Path) -> None:
    assert http.get("/v1/indexes").json()["data"] == ["papers"]
    stats = http.get("/v1/indexes/papers").json()
    assert stats["name"] == "papers" and stats["n_docs"] == 3 and stats["model"] == HASH
    hits = http.post("/v1/indexes/papers/search", json={"query": "cats purr", "mode": "bm25"})
    assert hits.status_code == 200 and hits.json()["data"][0]["id"] == "cats"
    hybrid = http.post(
        "/v1/indexes/papers/search",
        json={"query": "dogs", "mode": "hybrid", "k": 2, "fusion": "weighted", "alpha": 0.3},
    ).json()
    assert len(hybrid["data"]) == 2 and hybrid["data"][0]["id"] == "dogs"
    filtered = http.post(
        "/v1/indexes/papers/search",
        json={"query": "animals", "k": 5, "filter": {"year": {"$gte": 2021}}},
    ).json()
    assert {h["id"] for h in filtered["data"]} == {"dogs", "fish"}
    upsert = http.post(
        "/v1/indexes/papers/documents",
        json={"documents": [{"id": "owls", "text": "Owls hunt at night.", "title": "Owls"},
                            {"id": "cats", "text": "Cats purr when they are content.",
                             "metadata": {"year": 2020}}]},
    )  # fmt: skip
    assert upsert.status_code == 200, upsert.text
    assert upsert.json() == {"added": 1, "updated": 0, "unchanged": 1, "chunks": 1}
    found = http.post("/v1/indexes/papers/search", json={"query": "owls hunt", "mode": "bm25"})
    assert found.json()["data"][0]["id"] == "owls"  # readers see the committed write
    missing = http.request("DELETE", "/v1/indexes/papers/documents", json={"ids": ["owls", "nope"]})
    assert "nope" in _error(missing, 404)["message"]
    deleted = http.request("DELETE", "/v1/indexes/papers/documents", json={"ids": ["owls"]})
    assert deleted.status_code == 200 and deleted.json() == {"deleted": 1}
    assert http.get("/v1/indexes/papers").json()["n_docs"] == 3
    pipeline = http.post("/v1/indexes/papers/search", json={"query": "x", "pipeline": "nope"})
    error = _error(pipeline, 400)
    assert "unknown pipeline 'nope'" in error["message"] and error["param"] == "pipeline"
    bm25 = http.post("/v1/indexes/papers/search", json={"query": "cats purr", "pipeline": "bm25"})
    assert bm25.status_code == 200, bm25.text
    body = bm25.json()
    assert body["mode"] is None and body["pipeline"]["name"] == "bm25"
    assert body["pipeline"]["config"] == "bm25(top=100) -> top 10"
    assert [h["id"] for h in body["data"]] == [h["id"] for h in hits.json()["data"]]


def test_index_writer_locked_by_another_writer_gets_409(
    tmp_path: Path, hash_registered: str
) -> None:
    path = tmp_path / "locked"
    holder = Index.create(path, encoder=hash_registered)  # holds the write lock
    settings = ServerSettings(models=(HASH,), indexes={"locked": path}, api_keys=())
    body = {"documents": [{"id": "x", "text": "some text"}]}
    try:
        with ServerThread(create_app(settings)) as other, httpx.Client(base_url=other.url) as c:
            locked = c.post("/v1/indexes/locked/documents", json=body)
            error = _error(locked, 409)
            assert error["code"] == "index_locked" and locked.headers["retry-after"] == "1"
            assert c.post("/v1/indexes/locked/search", json={"query": "x"}).status_code == 200
            holder.close()  # the other writer is done: the next write takes the lock
            assert c.post("/v1/indexes/locked/documents", json=body).status_code == 200
            hits = c.post("/v1/indexes/locked/search", json={"query": "some text"}).json()
            assert [h["id"] for h in hits["data"]] == ["x"]
    finally:
        holder.close()


# -- bad input: the right 4xx, OpenAI's error shape, and the server keeps serving -------------
@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        ({"model": HASH, "input": []}, 422, "empty list"),
        ({"model": HASH, "input": ""}, 400, "empty"),
        ({"model": HASH, "input": ["ok", "   "]}, 400, "text 1"),
        ({"model": HASH, "input": ["x"] * 100_000}, 413, "262144"),  # body limit first
        ({"model": HASH, "input": ["x"] * 65}, 422, "at most 64"),
        ({"model": HASH, "input": "y" * 2_001}, 422, "at most 2000"),
        ({"model": HASH, "input": 42}, 422, "got int"),
        ({"model": HASH, "input": ["a", 1]}, 422, "all strings"),
        ({"model": HASH, "input": [[1, 2], []]}, 422, "input[1]"),
        ({"model": HASH, "input": [True]}, 422, "input"),
        ({"model": 7, "input": "x"}, 422, "model"),
        ({"input": "x"}, 422, "model: Field required"),
        ({"model": HASH, "input": "x", "dimensions": 0}, 422, "dimensions"),
        ({"model": HASH, "input": "x", "dimensions": 65}, 400, "between 1 and 64"),
        ({"model": HASH, "input": "x", "dimensions": "8"}, 422, "dimensions"),
        ({"model": HASH, "input": "x", "encoding_format": "int8"}, 422, "encoding_format"),
        ({"model": HASH, "input": [5, 6]}, 400, "no tokenizer"),
        ({"model": MINILM, "input": [10**9]}, 400, "outside the vocabulary"),
        ({"model": "gpt-4", "input": "x"}, 404, "not served"),
    ],
)
def test_bad_embedding_requests(
    http: httpx.Client, body: dict[str, Any], status: int, needle: str
) -> None:
    error = _error(http.post("/v1/embeddings", json=body), status)
    assert needle in error["message"], error


def test_one_megabyte_string_gets_413(http: httpx.Client) -> None:
    error = _error(http.post("/v1/embeddings", json={"model": HASH, "input": "a" * 1_000_000}), 413)
    assert "262144" in error["message"] and error["code"] == "body_too_large"


def test_streamed_body_over_the_limit_gets_413(server: ServerThread) -> None:
    def chunks() -> Iterator[bytes]:  # no Content-Length: chunked transfer encoding
        yield b'{"model": "test-hash-64", "input": "'
        for _ in range(40):
            yield b"z" * 10_000
        yield b'"}'

    with httpx.Client(base_url=server.url, timeout=30) as client:
        response = client.post(
            "/v1/embeddings", content=chunks(), headers={"content-type": "application/json"}
        )
    assert _error(response, 413)["code"] == "body_too_large"


def test_malformed_json_and_wrong_routes(http: httpx.Client) -> None:
    bad = http.post(
        "/v1/embeddings",
        content=b'{"model": "x", "input": [',
        headers={"content-type": "application/json"},
    )
    error = _error(bad, 400)
    assert error["code"] == "invalid_json" and "not valid JSON" in error["message"]
    assert _error(http.post("/v1/embeddings", content=b"\xff\xfe"), 422)  # no content type
    not_utf8 = http.post(
        "/v1/embeddings", content=b'{"input": "\xff"}', headers={"content-type": "application/json"}
    )
    assert _error(not_utf8, 400)["code"] == "invalid_json"
    assert _error(http.get("/v1/nothing-here"), 404)["code"] == "not_found"
    assert _error(http.get("/v1/embeddings"), 405)["code"] == "method_not_allowed"
    assert _error(http.post("/v1/embeddings"), 422)["message"].startswith("the request needs")


def test_bad_rerank_and_index_requests(http: httpx.Client) -> None:
    base = {"model": RERANKER, "query": "q", "documents": ["a", "b"]}
    assert "at most 5" in _error(http.post("/v1/rerank", json={**base, "top_n": 6}), 422)["message"]
    assert _error(http.post("/v1/rerank", json={**base, "top_n": 0}), 422)["param"] == "top_n"
    assert _error(http.post("/v1/rerank", json={**base, "documents": []}), 422)
    assert _error(http.post("/v1/rerank", json={**base, "documents": [{"txt": "a"}]}), 422)
    assert _error(http.post("/v1/rerank", json={**base, "query": " "}), 422)
    assert _error(http.post("/v1/rerank", json={**base, "model": "nope"}), 404)["param"] == "model"
    assert _error(http.post("/v1/rerank", json={**base, "return_documents": "yes"}), 422)
    assert _error(http.get("/v1/indexes/nope"), 404)["code"] == "index_not_found"
    search = "/v1/indexes/papers/search"
    assert "at most 20" in _error(http.post(search, json={"query": "q", "k": 21}), 422)["message"]
    assert _error(http.post(search, json={"query": "q", "mode": "sparse"}), 422)
    assert _error(http.post(search, json={"query": "q", "filter": {"$bad": 1}}), 400)
    assert _error(http.post(search, json={"query": "q", "alpha": 2}), 422)
    assert _error(http.post("/v1/indexes/nope/search", json={"query": "q"}), 404)
    upsert = "/v1/indexes/papers/documents"
    assert _error(http.post(upsert, json={"documents": [{"id": "a"}]}), 422)
    assert _error(http.post(upsert, json={"documents": [{"id": "a", "text": "\t"}]}), 422)
    dup = [{"id": "a", "text": "x"}, {"id": "a", "text": "y"}]
    assert "repeats" in _error(http.post(upsert, json={"documents": dup}), 400)["message"]
    assert _error(http.request("DELETE", upsert, json={"ids": []}), 422)


def test_server_keeps_serving_after_bad_input(http: httpx.Client) -> None:
    bad = [
        http.post("/v1/embeddings", content=b"{", headers={"content-type": "application/json"}),
        http.post("/v1/embeddings", json={"model": HASH, "input": "a" * 300_000}),
        http.post("/v1/embeddings", json={"model": HASH, "input": []}),
        http.post("/v1/rerank", json={"model": RERANKER, "query": "q", "documents": 3}),
    ]
    assert [r.status_code for r in bad] == [400, 413, 422, 422]
    ok = http.post("/v1/embeddings", json={"model": HASH, "input": ["still alive"]})
    assert ok.status_code == 200 and len(ok.json()["data"][0]["embedding"]) == 64
    assert http.get("/healthz").json()["status"] == "ok"
    metrics = http.get("/metrics").text
    for status in (200, 400, 413, 422):
        labels = f'route="/v1/embeddings",method="POST",status="{status}"'
        assert f"embedstack_requests_total{{{labels}}}" in metrics
    assert 'route="/v1/rerank",method="POST",status="422"' in metrics
    assert 'embedstack_request_duration_seconds_bucket{route="/v1/embeddings",le="+Inf"}' in metrics
    assert "embedstack_batch_texts_bucket" in metrics and "embedstack_queue_depth" in metrics


# -- auth, CORS, overload -------------------------------------------------------------------
@pytest.fixture(scope="module")
def auth_server(hash_registered: str) -> Iterator[ServerThread]:
    settings = ServerSettings(
        models=(hash_registered,),
        api_keys=("key-one", "key-two"),
        cors_origins=("https://a.example",),
    )
    with ServerThread(create_app(settings)) as running:
        yield running


def test_api_keys(auth_server: ServerThread) -> None:
    body = {"model": HASH, "input": "hello"}
    with httpx.Client(base_url=auth_server.url) as client:
        missing = _error(client.post("/v1/embeddings", json=body), 401)
        assert missing["code"] == "invalid_api_key" and "Bearer" in missing["message"]
        wrong = client.post("/v1/embeddings", json=body, headers={"Authorization": "Bearer nope"})
        assert _error(wrong, 401)["code"] == "invalid_api_key"
        basic = client.post("/v1/embeddings", json=body, headers={"Authorization": "Basic key-one"})
        assert _error(basic, 401)
        # malformed JSON without a key is refused as unauthenticated before it is parsed
        assert _error(client.post("/v1/embeddings", content=b"{"), 401)
        many = client.post(  # the default limits: 8 MiB bodies, 2048 inputs
            "/v1/embeddings",
            json={"model": HASH, "input": ["x"] * 100_000},
            headers={"Authorization": "Bearer key-one"},
        )
        assert "at most 2048" in _error(many, 422)["message"]
        for key in ("key-one", "key-two"):
            ok = client.post(
                "/v1/embeddings", json=body, headers={"Authorization": f"Bearer {key}"}
            )
            assert ok.status_code == 200, ok.text
        assert client.get("/healthz").status_code == 200  # health and metrics stay open
        assert client.get("/metrics").status_code == 200
        schema = client.get("/openapi.json").json()
        assert schema["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
        preflight = client.options(
            "/v1/embeddings",
            headers={"Origin": "https://a.example", "Access-Control-Request-Method": "POST"},
        )
        assert preflight.headers["access-control-allow-origin"] == "https://a.example"


def test_no_cors_unless_configured(http: httpx.Client) -> None:
    response = http.get("/healthz", headers={"Origin": "https://a.example"})
    assert "access-control-allow-origin" not in response.headers


def test_keys_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMBEDSTACK_API_KEYS", "alpha, beta")
    assert ServerSettings(models=(HASH,)).key_bytes() == (b"alpha", b"beta")
    monkeypatch.delenv("EMBEDSTACK_API_KEYS")
    assert ServerSettings(models=(HASH,)).key_bytes() == ()


def test_full_queue_gets_503_with_retry_after(hash_registered: str) -> None:
    """One request in the model call, one waiting (queue_size=1): the rest get 503 at once."""
    settings = ServerSettings(models=(hash_registered,), api_keys=(), queue_size=1)
    entered = threading.Event()
    gate_release = threading.Event()

    class Slow(HashEncoder):
        def encode_documents(self, texts: Any) -> Any:
            entered.set()
            gate_release.wait(30)
            return super().encode_documents(texts)

    app = create_app(settings, encoders={HASH: Slow(64, name=HASH)})
    with ServerThread(app) as running:
        statuses: list[int] = []
        retry: list[str] = []

        def one() -> None:
            with httpx.Client(base_url=running.url, timeout=60) as client:
                r = client.post("/v1/embeddings", json={"model": HASH, "input": "x"})
                statuses.append(r.status_code)
                if r.status_code == 503:
                    retry.append(r.headers.get("retry-after", ""))
                    assert r.json()["error"]["code"] == "overloaded"

        first = threading.Thread(target=one)
        first.start()
        assert entered.wait(30), "the first request never reached the model"
        threads = [threading.Thread(target=one) for _ in range(5)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 30
        while len(statuses) < 4 and time.monotonic() < deadline:  # 4 refused, 1 queued
            time.sleep(0.01)
        gate_release.set()
        for thread in [first, *threads]:
            thread.join()
    assert statuses.count(503) == 4 and set(retry) == {"1"}
    assert statuses.count(200) == 2


# -- app factory and the serve command --------------------------------------------------------
def test_import_builds_nothing() -> None:
    import subprocess
    import sys

    code = (
        "import sys, embedstack.server, embedstack.cli;"
        "print('fastapi' in sys.modules, 'uvicorn' in sys.modules, 'onnxruntime' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split()[:2] == ["False", "False"]


def test_openapi_has_the_instance_limits(http: httpx.Client) -> None:
    schema = http.get("/openapi.json").json()
    components = schema["components"]["schemas"]
    embed = components.get("EmbeddingRequest-Input", components.get("EmbeddingRequest"))
    assert embed["properties"]["model"]["enum"] == [HASH, MINILM]
    branches = embed["properties"]["input"]["anyOf"]
    assert {b.get("maxItems") for b in branches} >= {64} and branches[0]["maxLength"] == 2000
    search = components["SearchRequest"]["properties"]["k"]
    assert search["maximum"] == 20
    params = schema["paths"]["/v1/indexes/{name}/search"]["post"]["parameters"]
    assert params[0]["schema"]["enum"] == ["papers"]


def test_serve_user_errors_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from embedstack.cli import run

    assert run(["serve", "--index", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "not an embedstack index" in err and "\n" not in err
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert run(["serve", "--model", "no-such-model-xyz", "--port", "0"]) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error:") and "no-such-model-xyz" in err[-1]
    monkeypatch.setitem(__import__("sys").modules, "fastapi", None)
    assert run(["serve"]) == 3
    err = capsys.readouterr().err.strip()
    assert "embedstack[server]" in err and "\n" not in err


def test_serve_command_runs_uvicorn(minilm: Any, tmp_path: Path) -> None:
    import os
    import signal
    import socket
    import subprocess
    import sys

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [
        sys.executable, "-c", "from embedstack.cli import main; main()", "serve",
        "--model", MINILM, "--port", str(port), "--api-key", "k", "--log-level", "warning",
    ]  # fmt: skip
    log = tmp_path / "serve.log"
    with log.open("w") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env=os.environ)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, log.read_text()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        url = f"http://127.0.0.1:{port}/v1/embeddings"
        body = {"model": MINILM, "input": ["hello"]}
        assert httpx.post(url, json=body).status_code == 401
        ok = httpx.post(url, json=body, headers={"Authorization": "Bearer k"})
        assert ok.status_code == 200 and len(ok.json()["data"][0]["embedding"]) == 384
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0, log.read_text()
    assert "serving all-MiniLM-L6-v2" in log.read_text()


def test_unexpected_errors_are_a_generic_500(caplog: pytest.LogCaptureFixture) -> None:
    class Broken(HashEncoder):
        def encode_documents(self, texts: Any) -> Any:
            raise RuntimeError("secret detail /srv/models/weights.bin")

    settings = ServerSettings(models=(), api_keys=())
    app = create_app(settings, encoders={"broken": Broken(8, name="broken")})
    with ServerThread(app) as running, httpx.Client(base_url=running.url) as client:
        response = client.post("/v1/embeddings", json={"model": "broken", "input": "x"})
        error = _error(response, 500)
        assert error["message"] == "internal server error" and error["code"] == "internal_error"
        assert "secret" not in response.text
        assert client.get("/healthz").status_code == 200
    assert any("secret detail" in r.getMessage() or r.exc_info for r in caplog.records)


def test_docs_page_works_offline(http: httpx.Client) -> None:
    """/docs is one self-contained page: no script, style or link from another host."""
    import re

    page = http.get("/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    html = page.text
    assert "://" not in html and "//cdn" not in html  # no absolute URL at all
    refs = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)""", html)
    assert refs == ["openapi.json"]  # only the served document, same origin
    assert 'fetch("openapi.json")' in html
    assert http.get("/redoc").status_code == 404  # ReDoc would load from a CDN too
    assert http.get("/openapi.json").json()["paths"]  # what the page renders


def test_constraints_once_refused_with_400_are_in_the_schema(
    minilm: Any, index_dir: Path, hash_registered: str
) -> None:
    """The three schema-valid requests schemathesis found refused with 400 are now outside
    the served schema: token ids that decode to an empty text (and ids beyond the
    vocabulary), an empty pipeline; a repeated upsert id is documented."""
    jsonschema_rs = pytest.importorskip("jsonschema_rs")  # schemathesis' validator

    settings = ServerSettings(models=(), indexes={"papers": index_dir}, api_keys=())
    doc = create_app(settings, encoders={MINILM: minilm}).openapi()
    components = doc["components"]["schemas"]

    def valid(component: str, body: dict[str, Any]) -> bool:
        name = f"{component}-Input" if f"{component}-Input" in components else component
        schema = {"$ref": f"#/components/schemas/{name}", "components": doc["components"]}
        return bool(jsonschema_rs.Draft202012Validator(schema).is_valid(body))

    blank = [0, 101, 102]  # [PAD] [CLS] [SEP]: decodes to ""
    assert not valid("EmbeddingRequest", {"model": MINILM, "input": blank})
    assert not valid("EmbeddingRequest", {"model": MINILM, "input": [blank, [2023]]})
    assert valid("EmbeddingRequest", {"model": MINILM, "input": [101, 2023, 102]})
    assert not valid("EmbeddingRequest", {"model": MINILM, "input": [30522]})
    assert valid("EmbeddingRequest", {"model": MINILM, "input": [30521]})
    assert not valid("SearchRequest", {"query": "q", "pipeline": ""})
    assert not valid("SearchRequest", {"query": "q", "pipeline": " \t"})
    assert valid("SearchRequest", {"query": "q", "pipeline": "hybrid"})
    documents = components.get("UpsertRequest-Input", components.get("UpsertRequest"))
    assert "each id at most once" in documents["properties"]["documents"]["description"]
    # a model without a tokenizer cannot decode token ids: the forms are not offered
    hashing = create_app(ServerSettings(models=(HASH,), api_keys=(), preload=True))
    with ServerThread(hashing) as running:
        served = httpx.get(f"{running.url}/openapi.json").json()["components"]["schemas"]
    request = served.get("EmbeddingRequest-Input", served.get("EmbeddingRequest"))
    forms = request["properties"]["input"]["anyOf"]
    assert [f.get("type") for f in forms] == ["string", "array"]
    assert forms[1]["items"]["type"] == "string"


def test_pipeline_hub_builds_once_per_index_and_spec_and_stays_bounded(
    index_dir: Path, hash_registered: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio

    from embedstack.server import pipelines
    from embedstack.server.metrics import Metrics
    from embedstack.server.models import ModelHub

    monkeypatch.setattr(pipelines, "MAX_PIPELINES", 2)
    hub = pipelines.PipelineHub(ModelHub(ServerSettings(models=(), api_keys=()), Metrics()))

    async def main() -> None:
        hybrid = await hub.get("papers", index_dir, "hybrid")
        assert await hub.get("papers", index_dir, " hybrid ") is hybrid
        assert await hub.get("other", index_dir, "hybrid") is not hybrid  # per index
        assert len(hub) == 2
        await hub.get("papers", index_dir, "bm25")  # the least recently used one goes
        assert len(hub) == 2
        assert await hub.get("papers", index_dir, "hybrid") is not hybrid  # rebuilt

    asyncio.run(main())
