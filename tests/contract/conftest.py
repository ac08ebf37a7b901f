"""The backend factory of the contract suite: every test here runs once per backend.

A backend joins with one entry in ``_backends.BACKENDS`` (its name → the name of a fixture
here that returns a callable making a fresh, empty target: a directory path or a URI) and,
where it cannot do exactly what the local index does, a named entry in
``_backends.DIFFERENCES`` that the tests consult with ``differs`` (documented in
docs/architecture.md, "Adding a storage engine").

PostgreSQL runs for real: ``pgserver`` (PyPI wheel with PostgreSQL and pgvector) starts one
server per session in a system temporary folder and stops it at the end; each test gets its
own index namespace (``?index=tN``). Without pgserver the PostgreSQL runs are skipped.
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from _backends import BACKENDS, Backend


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


@pytest.fixture(scope="session")
def milvus_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A milvus-lite data directory for this session, its embedded server held up by one
    client and stopped at the end; skipped when pymilvus or milvus-lite is missing."""
    for module in ("pymilvus", "milvus_lite"):
        pytest.importorskip(module, reason=f"{module} not installed: pip install "
                            "embedstack[milvus]")  # fmt: skip
    from embedstack.index.backends.milvus_client import connect, disconnect, parse_uri

    path = str(tmp_path_factory.mktemp("milvus") / "contract.db")
    target = parse_uri(f"milvus://{path}")
    keeper = connect(target)
    yield path
    disconnect(target, keeper)


_milvus_names = itertools.count()


@pytest.fixture()
def milvus_target(milvus_db: str) -> Callable[[], str]:
    return lambda: f"milvus://{milvus_db}?index=t{next(_milvus_names)}"
