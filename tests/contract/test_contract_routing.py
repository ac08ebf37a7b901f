"""Where ``Index.create`` / ``Index.open`` send a target: a path is a local directory, a
registered URI scheme its engine, any other scheme a clear error (never a folder named
``scheme:``)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from embedstack import HashEncoder
from embedstack.errors import IndexNotFound, InvalidInput, MissingDependency
from embedstack.index import Index
from embedstack.index.backends import SCHEMES, register_backend, scheme_of


@pytest.mark.parametrize("target", ["foo://host/db", "file:///tmp/x", "s3://bucket/idx"])
def test_unknown_scheme_is_refused_and_creates_nothing(
    target: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InvalidInput, match="unknown index URI scheme"):
        Index.create(target, encoder=HashEncoder(16))
    with pytest.raises(InvalidInput, match="unknown index URI scheme"):
        Index.open(target)
    with pytest.raises(InvalidInput, match="unknown index URI scheme"):
        Index.create(path=target, encoder=HashEncoder(16))
    assert list(tmp_path.iterdir()) == []


def test_postgresql_uri_never_becomes_a_local_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The regression of issue 18: this used to create ``./postgresql:/nowhere/db``."""
    monkeypatch.chdir(tmp_path)
    uri = "postgresql://nobody@127.0.0.1:1/db?index=x&connect_timeout=1"
    with pytest.raises((IndexNotFound, MissingDependency)):  # no server / no psycopg
        Index.create(uri, encoder=HashEncoder(16))
    assert list(tmp_path.iterdir()) == []


def test_a_path_built_from_a_uri_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InvalidInput, match="pass the URI as a str"):
        Index.create(Path("postgresql://h/db"), encoder=HashEncoder(16))
    assert list(tmp_path.iterdir()) == []


def test_paths_stay_local(tmp_path: Path) -> None:
    assert scheme_of(str(tmp_path / "a")) is None
    assert scheme_of(tmp_path / "a:b") is None
    assert scheme_of("POSTGRESQL://h/db") == "postgresql"
    with Index.create(str(tmp_path / "idx"), encoder=HashEncoder(16)) as idx:
        assert type(idx) is Index
    assert (tmp_path / "idx" / "manifest.json").is_file()


def test_register_backend_routes_a_new_scheme(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(SCHEMES, "dummy", "")
    register_backend("dummy", "embedstack.index.backends.nowhere:Store")
    with pytest.raises(ModuleNotFoundError):
        Index.open("dummy://x")
    with pytest.raises(InvalidInput):
        register_backend("bad scheme", "m:C")
    with pytest.raises(InvalidInput):
        register_backend("ok", "no-colon")


def test_core_import_stays_light() -> None:
    code = (
        "import sys, embedstack, embedstack.index; embedstack.Index; "
        "bad = [m for m in ('psycopg', 'pgvector', 'pymilvus', 'pgserver') if m in sys.modules];"
        "print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_remote_index_overrides_every_public_method() -> None:
    """No local code (SQLite store, fields) runs on an engine's index: every public method
    of Index is RemoteIndex's own (the context manager only calls close)."""
    from embedstack.index.backends.remote import RemoteIndex

    public = {n for n in vars(Index) if not n.startswith("_")} | {"__len__"}
    assert public - set(vars(RemoteIndex)) == set()
