"""The mixed soak, small: embeddings, searches, upserts and deletes from concurrent clients
against a served local index, then the index read back (``benchmarks/server_mixed.py``, the
workload of ``benchmarks/server_load.py --mixed``); and served-index settings given as
engine URIs (typed errors for bad ones, secrets kept out of reports)."""

from __future__ import annotations

import random
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from embedstack.cli.serve import index_dirs  # noqa: E402
from embedstack.errors import IndexCorrupt, InvalidInput  # noqa: E402
from embedstack.index import Index  # noqa: E402
from embedstack.server import ServerSettings  # noqa: E402
from embedstack.server.settings import redact  # noqa: E402
from test_server_helpers import SOAK_TEXTS as TEXTS  # noqa: E402
from test_server_helpers import ServerThread, soak, tier0_models  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import server_mixed  # noqa: E402
from server_mixed import Acked, make_doc, token, verify  # noqa: E402


@pytest.fixture()
def hash_model() -> Iterator[str]:
    with tier0_models() as name:
        yield name


def test_mixed_soak_keeps_every_acknowledged_write(tmp_path: Path, hash_model: str) -> None:
    result, checked, acked = soak(tmp_path / "idx", hash_model, requests=300, concurrency=8)
    assert result["errors"] == 0, result["first_errors"]
    assert result["requests"] == 300
    kinds = result["per_kind"]
    assert all(kinds[k]["n"] > 0 for k in server_mixed.KINDS), kinds
    assert checked["ok"], checked
    # the run wrote and deleted for real, and the check looked at all of it
    assert checked["deleted_checked"] > 0 and len(acked.docs) > 100
    assert checked["present_checked"] + checked["deleted_checked"] == len(acked.docs)
    assert checked["count_matches"] is True
    assert any(d is not None and d["metadata"]["version"] > 0 for d in acked.docs.values())


class _FakeIndex:
    """An index read back with one stale document and one resurrected one."""

    def __init__(self, docs: dict[str, dict[str, Any]]) -> None:
        self.docs = docs

    def get(self, doc_id: str) -> dict[str, Any] | None:
        return self.docs.get(doc_id)

    def search(self, query: str, *, mode: str, k: int) -> list[Any]:
        class Hit:
            def __init__(self, doc_id: str) -> None:
                self.doc_id = doc_id

        return [Hit(i) for i, d in self.docs.items() if query in d["text"].split()][:k]

    def __len__(self) -> int:
        return len(self.docs)

    def check(self) -> None:
        raise IndexCorrupt("segment 3 is short")


def test_verify_reports_stale_missing_and_resurrected_documents() -> None:
    acked = Acked()
    acked.seed(4, TEXTS)
    stored = {d["id"]: d for d in (make_doc(f"d{i}", 0, TEXTS) for i in range(4))}
    acked.docs["d1"] = make_doc("d1", 1, TEXTS)  # acknowledged v1; the index kept v0
    acked.versions["d1"] = 1
    acked.docs["d2"] = None  # acknowledged delete; the index still has it
    del stored["d3"]  # acknowledged upsert, lost
    out = verify(_FakeIndex(stored), acked)
    assert not out["ok"]
    assert out["wrong_content"] == 1 and out["examples"]["wrong_content"] == ["d1"]
    assert out["not_found_by_bm25"] == 1  # d1: its v1 token (d3, missing, is not searched)
    assert out["missing"] == 1 and out["examples"]["missing"] == ["d3"]
    assert out["deleted_but_present"] == 1 and out["deleted_but_found_by_bm25"] == 1
    # 3 stored (d0, d1, d2) and 3 acknowledged present (d0, d1, d3): a count alone is blind
    assert out["count_matches"] is True
    assert out["check"] == "segment 3 is short"


class _Reply:
    def __init__(self, status_code: int, body: dict[str, int]) -> None:
        self.status_code, self.body, self.text = status_code, body, str(body)

    def json(self) -> dict[str, int]:
        return self.body


class _WriteClient:
    """Answers writes as ``mode`` says: ``ok`` (counts every id), ``refuse`` (503),
    ``miscount`` (200, counting none) or ``raise`` (a transport error)."""

    def __init__(self, mode: str) -> None:
        self.mode = mode

    async def post(self, url: str, json: dict[str, Any]) -> _Reply:
        return self._answer({"added": len(json["documents"]), "updated": 0, "unchanged": 0})

    async def request(self, method: str, url: str, json: dict[str, Any]) -> _Reply:
        return self._answer({"deleted": len(json["ids"])})

    def _answer(self, counts: dict[str, int]) -> _Reply:
        if self.mode == "raise":
            raise ConnectionError("connection reset")
        if self.mode == "refuse":
            return _Reply(503, {})
        return _Reply(200, counts if self.mode == "ok" else dict.fromkeys(counts, 0))


@pytest.mark.parametrize("kind", ["upsert", "delete"])
@pytest.mark.parametrize("mode", ["ok", "refuse", "miscount", "raise"])
async def test_writes_are_recorded_only_when_acknowledged(kind: str, mode: str) -> None:
    acked = Acked()
    acked.seed(6, TEXTS)
    before = dict(acked.docs)
    run = server_mixed._Run(acked, random.Random(0), TEXTS)
    call = server_mixed._CALLS[kind](_WriteClient(mode), run, "m", "idx")
    if mode == "raise":
        with pytest.raises(ConnectionError):
            await call
    else:
        error = await call
        assert (error is None) == (mode == "ok")
        assert error is None or error.startswith(f"{kind} {503 if mode == 'refuse' else 200}: ")
    assert acked.busy == set()  # every id is free again, whatever happened
    changed = {i for i, d in acked.docs.items() if before.get(i, "absent") != d}
    if mode == "ok":
        assert changed and acked.uncertain == set()
        assert all((acked.docs[i] is None) == (kind == "delete") for i in changed)
    else:  # nothing recorded, and the ids it named are excluded from the check
        assert changed == set() and acked.uncertain


def test_version_tokens_are_distinct_words() -> None:
    seen = {token(f"d{i}", v) for i in range(300) for v in range(5)}
    assert len(seen) == 1500
    assert all(t.isalpha() and t.islower() for t in seen)


# --- served indexes given as URIs -------------------------------------------------------


def test_settings_keep_uris_as_str_and_paths_as_path(tmp_path: Path) -> None:
    uri = "postgresql://app:s3cret@db.example:5432/rag?index=papers"
    settings = ServerSettings(
        indexes={"pg": uri, "local": str(tmp_path), "mv": "milvus:///data/m.db?index=docs"},
        api_keys=(),
    )
    assert settings.indexes == {
        "pg": uri,
        "local": tmp_path,
        "mv": "milvus:///data/m.db?index=docs",
    }
    shown = settings.public_dict()["indexes"]
    assert shown["pg"] == "postgresql://app:***@db.example:5432/rag?index=papers"
    assert "s3cret" not in str(settings.public_dict())


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("mongodb://db/rag?index=x", "unknown index URI scheme 'mongodb://'"),
        (Path("postgresql://db/rag"), "turned into a path; pass the URI as a str"),
    ],
)
def test_settings_refuse_unknown_schemes_and_mangled_uris(target: Any, message: str) -> None:
    with pytest.raises(ValidationError, match="index 'x'") as info:
        ServerSettings(indexes={"x": target}, api_keys=())
    assert message in str(info.value)


def test_redact_hides_passwords_and_tokens() -> None:
    assert redact("milvus://u:pw@h:19530/db?index=a") == "milvus://u:***@h:19530/db?index=a"
    assert redact("milvus+https://h:443?index=a&token=abc") == (
        "milvus+https://h:443?index=a&token=***"
    )
    assert (
        redact("postgresql://u@h/db?password=x&index=y")
        == "postgresql://u@h/db?password=***&index=y"
    )
    assert redact(Path("/srv/idx")) == "/srv/idx"


def test_serve_index_option_takes_uris(tmp_path: Path, hash_model: str) -> None:
    Index.create(tmp_path / "local", encoder=hash_model).close()
    uri = "postgresql://app:pw@db/rag?index=papers"
    got = index_dirs([uri, f"other={uri}", str(tmp_path / "local")])
    assert got == {"papers": uri, "other": uri, "local": tmp_path / "local"}
    with pytest.raises(
        InvalidInput, match=r"name the index: --index NAME=postgresql://app:\*\*\*@"
    ):
        index_dirs(["postgresql://app:pw@db/rag"])
    with pytest.raises(InvalidInput, match="unknown index URI scheme 'redis://'"):
        index_dirs(["cache=redis://h/0"])
    with pytest.raises(InvalidInput, match="two indexes are named 'papers'"):
        index_dirs([uri, f"papers={tmp_path / 'local'}"])


def _healthz(sock: socket.socket) -> bytes:
    """One ``GET /healthz`` on the open connection ``sock``: the response's status line, or
    ``b""`` when the server has closed the connection (end of stream or reset)."""
    try:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                return b""
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:"))  # fmt: skip
        while len(body) < length:
            chunk = sock.recv(65536)
            if not chunk:
                return b""
            body += chunk
        return head.split(b"\r\n")[0]
    except (ConnectionResetError, BrokenPipeError):
        return b""


def _idle_then_reuse(settings: ServerSettings, idle_s: float) -> tuple[bytes, bytes]:
    """Status lines of two requests on one connection to ``embedstack serve``'s uvicorn
    config, ``idle_s`` apart."""
    from embedstack.server import create_app

    with ServerThread(create_app(settings), settings) as running:
        with socket.create_connection(("127.0.0.1", running.port), timeout=30) as sock:
            first = _healthz(sock)
            time.sleep(idle_s)
            return first, _healthz(sock)


def test_served_connections_outlive_client_pools_idle_time() -> None:
    """The soak's PostgreSQL run lost 3 of 10,000 requests to ``ReadError('')``: uvicorn's
    default keep-alive (5 s) equals httpx's pool expiry (5 s), so a client reused a
    connection idle for ~5 s just as the server closed it. ``embedstack serve`` keeps idle
    connections open longer than common client pools (httpx 5 s): one idle for 6 s still
    answers on the same connection."""
    settings = ServerSettings(models=(), api_keys=())
    assert settings.keep_alive_s > 60  # above the usual load-balancer idle timeout too
    first, again = _idle_then_reuse(settings, 6.0)
    assert first.startswith(b"HTTP/1.1 200") and again.startswith(b"HTTP/1.1 200"), again


def test_keep_alive_setting_is_what_serve_runs() -> None:
    first, again = _idle_then_reuse(ServerSettings(models=(), api_keys=(), keep_alive_s=1), 2.0)
    assert first.startswith(b"HTTP/1.1 200") and again == b""  # closed after 1 s idle
    for bad in (0, 3601):
        with pytest.raises(ValidationError, match="keep_alive_s"):
            ServerSettings(models=(), api_keys=(), keep_alive_s=bad)
