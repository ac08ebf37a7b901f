"""The backend factory of the contract suite: every test here runs once per backend.

A backend joins with one entry in :data:`BACKENDS` (its name → the name of a fixture that
returns a callable making a fresh, empty target: a directory path or a URI) and, where it
cannot do exactly what the local index does, a named entry in :data:`DIFFERENCES` that the
tests consult with :func:`differs` (documented in docs/architecture.md, "Adding a storage
engine").

PostgreSQL runs for real: ``pgserver`` (PyPI wheel with PostgreSQL and pgvector) starts one
server per session under pytest's temporary folder and stops it at the end; each test gets
its own index namespace (``?index=tN``). Without pgserver the PostgreSQL runs are skipped.
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from embedstack import HashEncoder
from embedstack.index import Index

#: backend name -> fixture returning ``() -> str``, a fresh target for a new index.
BACKENDS: dict[str, str] = {
    "local": "local_target",
    "postgresql": "pg_target",
}

#: backend -> {difference name: what differs}. Tests that meet a difference call
#: ``differs(backend, name)`` and assert the documented behaviour instead.
DIFFERENCES: dict[str, dict[str, str]] = {
    "postgresql": {
        "precision": "float32 vectors only (pgvector 'vector'); int8/binary are refused",
        "sparse": "no SPLADE postings or ColBERT vectors (sparse=/colbert= refused)",
        "n_deleted": "dead rows are reclaimed by (auto)vacuum: stats().n_deleted is always 0",
        "nul": "a NUL character in a document is InvalidInput (PostgreSQL text cannot hold it)",
    },
}

DIM = 64


def encoder() -> HashEncoder:
    """The suite's encoder: 64-d feature hashing (fast, deterministic)."""
    return HashEncoder(DIM)


def differs(backend: str, name: str) -> bool:
    """Whether ``backend`` has the documented difference ``name``."""
    return name in DIFFERENCES.get(backend, {})


@dataclass
class Backend:
    """One backend under test, with one fresh target for its index."""

    name: str
    target: str
    make: Callable[[], str] | None = None
    opened: list[Index] = field(default_factory=list)

    def fresh(self) -> Backend:
        """Another target on the same backend (its indexes closed with this one's)."""
        assert self.make is not None
        other = Backend(self.name, self.make(), self.make, self.opened)
        return other

    def create(self, **kwargs: Any) -> Index:
        kwargs.setdefault("encoder", encoder())
        idx = Index.create(self.target, **kwargs)
        self.opened.append(idx)
        return idx

    def open(self, **kwargs: Any) -> Index:
        kwargs.setdefault("encoder", encoder())
        idx = Index.open(self.target, **kwargs)
        self.opened.append(idx)
        return idx


@pytest.fixture(params=sorted(BACKENDS))
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    """Each backend in turn, with a fresh target; every index it opened is closed after."""
    make: Callable[[], str] = request.getfixturevalue(BACKENDS[request.param])
    b = Backend(request.param, make(), make)
    yield b
    for idx in b.opened:
        idx.close()


@pytest.fixture()
def local_target(tmp_path: Path) -> Callable[[], str]:
    counter = itertools.count()
    return lambda: str(tmp_path / f"idx{next(counter)}")


@pytest.fixture(scope="session")
def pg_uri() -> Iterator[str]:
    """The URI of a PostgreSQL + pgvector server for this session (pgserver), stopped and
    its folder removed at the end; skipped when pgserver, psycopg or pgvector is missing.

    The data folder is a fresh system temporary folder rather than pytest's: run as root,
    pgserver runs PostgreSQL as its own user, which must traverse the folder's parents, and
    pytest keeps its base folder private (0700, re-applied by every concurrent session).
    """
    for module in ("pgserver", "psycopg", "pgvector"):
        pytest.importorskip(module, reason=f"{module} not installed: pip install "
                            "embedstack[postgres]")  # fmt: skip
    root = Path(tempfile.mkdtemp(prefix="embedstack-pg-"))
    run = root / "run"
    run.mkdir(mode=0o700)  # platformdirs wants a private runtime dir (pgserver's lock file)
    old = os.environ.get("XDG_RUNTIME_DIR")
    os.environ["XDG_RUNTIME_DIR"] = str(run)
    try:
        import pgserver

        server = pgserver.get_server(root / "data", cleanup_mode="stop")
        try:
            yield server.get_uri("postgres")
        finally:
            server.cleanup()
    finally:
        if old is None:
            os.environ.pop("XDG_RUNTIME_DIR", None)
        else:
            os.environ["XDG_RUNTIME_DIR"] = old
        shutil.rmtree(root, ignore_errors=True)


_pg_names = itertools.count()


@pytest.fixture()
def pg_target(pg_uri: str) -> Callable[[], str]:
    sep = "&" if "?" in pg_uri else "?"
    return lambda: f"{pg_uri}{sep}index=t{next(_pg_names)}"
