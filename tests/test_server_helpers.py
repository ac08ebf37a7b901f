"""Helpers of the server tests: uvicorn in a thread, a tiny deterministic reranker, the
tier-0 models registered for a whole module, and the small mixed soak (no tests here)."""

from __future__ import annotations

import asyncio
import socket
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

HASH = "test-hash-64"
RERANKER = "test-overlap"


class OverlapReranker:
    """Deterministic: the share of query words found in the document, minus a tiny
    length tie-breaker (shorter first)."""

    name = RERANKER

    def score(self, query: str, documents: Sequence[str]) -> np.ndarray:
        words = set(query.lower().split())
        return np.array(
            [
                len(words & set(d.lower().split())) / max(1, len(words)) - len(d) * 1e-6
                for d in documents
            ],
            dtype=np.float32,
        )


@contextmanager
def tier0_models() -> Iterator[str]:
    """Register the hashing model ``test-hash-64`` and the overlap reranker; yield the model."""
    from embedstack import HashEncoder, ModelSpec, register_model, unregister_model
    from embedstack.server import register_reranker, unregister_reranker

    spec = ModelSpec(HASH, "embedstack/test-hash", 64, 512, factory=HashEncoder.from_spec)
    register_model(spec, overwrite=True)
    register_reranker(RERANKER, OverlapReranker)
    try:
        yield HASH
    finally:
        unregister_reranker(RERANKER)
        unregister_model(HASH)


class ServerThread:
    """uvicorn serving ``app`` on a free 127.0.0.1 port in a thread; a context manager that
    waits for startup and stops the server cleanly."""

    def __init__(self, app: Any, settings: Any = None) -> None:
        """``settings``: run with the config ``embedstack serve`` builds from these
        :class:`~embedstack.server.ServerSettings` (its keep-alive) instead of uvicorn's."""
        import uvicorn

        from embedstack.cli.serve import uvicorn_config

        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        config = (
            uvicorn.Config(app, log_level="warning", lifespan="on")
            if settings is None
            else uvicorn_config(app, settings, "127.0.0.1", self.port, "warning")
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )

    def __enter__(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                self.sock.close()
                raise RuntimeError("the test server did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.sock.close()
        assert not self.thread.is_alive(), "the test server did not stop"


SOAK_TEXTS = [
    f"{subject} {verb} {thing} in study {i}."
    for i, (subject, verb, thing) in enumerate(
        (s, v, t)
        for s in ("Vitamin D", "Protein folding", "Gene expression", "The immune response")
        for v in ("changes", "predicts", "reduces")
        for t in ("bone density", "tumour growth", "sleep quality", "insulin levels")
    )
]


def soak(
    target: str | Path, model: str, *, requests: int, concurrency: int, seed_docs: int = 100
) -> tuple[dict[str, Any], dict[str, Any], Any]:
    """The mixed soak of ``benchmarks/server_mixed.py``, small and in-process: seed an index
    at ``target`` (a folder or an engine URI) with ``model``, serve it, send the mixed load,
    stop the server and read the index back. Returns (load result, verification, Acked)."""
    import httpx

    from embedstack.index import Index
    from embedstack.server import ServerSettings, create_app

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from server_mixed import Acked, mixed_load, verify

    acked = Acked()
    with Index.create(target, encoder=model) as index:
        index.add(acked.seed(seed_docs, SOAK_TEXTS))
    settings = ServerSettings(models=(model,), indexes={"soak": target}, api_keys=())

    async def load(url: str) -> dict[str, Any]:
        async with httpx.AsyncClient(base_url=url, timeout=300) as client:
            return await mixed_load(
                client, model=model, index="soak", acked=acked, texts=SOAK_TEXTS,
                requests=requests, concurrency=concurrency,
            )  # fmt: skip

    with ServerThread(create_app(settings)) as server:
        result = asyncio.run(load(server.url))
    with Index.open(target, readonly=True) as index:
        return result, verify(index, acked), acked
