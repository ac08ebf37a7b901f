"""Milvus URIs, connections and the three collections of an embedstack index.

URIs (the index name defaults to ``embedstack``)::

    milvus:///abs/path/file.db?index=NAME        milvus-lite, embedded (the file is created)
    milvus://host:19530?index=NAME               a Milvus server or cluster, over HTTP
    milvus://user:password@host:19530/db?index=NAME      with credentials and a database
    milvus+https://host:443?index=NAME&token=TOKEN       TLS (Zilliz Cloud: a token)

The same client code serves both: ``pymilvus.MilvusClient`` starts an embedded milvus-lite
server for a local ``*.db`` file and speaks gRPC to a remote one. The token may also come
from the ``EMBEDSTACK_MILVUS_TOKEN`` environment variable, so it stays out of logs.

An index ``NAME`` is three collections (each needs a vector field; the meta collection's is
a 2-d dummy):

* ``NAME__docs`` — one row per document version: id, title, text, canonical metadata JSON,
  content hash, ``meta`` (JSON, filtered) and ``marks`` (see
  :mod:`~embedstack.index.backends.milvus_filters`), BM25 length ``dl``, the average length
  when written ``avgdl``, term frequencies ``tf`` and BM25 impacts ``bm`` (sparse, keyed by
  term id), and its generation ``gen``;
* ``NAME__chunks`` — one row per chunk: document id, ``gen``, chunk number, character span,
  ``meta``/``marks``, the dense vector ``vec`` and, for an index created with ``sparse=``,
  its SPLADE weights ``sp``;
* ``NAME__meta`` — the manifest, the state row (the commit point), the vocabulary
  (``s:<stem>`` → term id) and document frequencies (``d:<term id>``).
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from embedstack.errors import IndexLocked, InvalidInput, require

__all__ = ["MilvusTarget", "connect", "create_collections", "disconnect", "parse_uri"]

TOKEN_ENV = "EMBEDSTACK_MILVUS_TOKEN"
SCHEMES = ("milvus", "milvus+http", "milvus+https")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,100}$")
MAX_VARCHAR = 65535  # Milvus's VARCHAR max_length, in bytes
MAX_ID = 4096  # bytes of a document id
META_DIM = 2
_LITE_USERS: Counter[str] = Counter()  # open clients per milvus-lite data directory
_LITE_LOCK = threading.Lock()


@dataclass(frozen=True)
class MilvusTarget:
    """A parsed ``milvus://`` URI.

    Attributes:
        uri: what ``MilvusClient`` connects to (a ``.db`` path or ``http(s)://host:port``).
        index: the index name (collection prefix).
        db: the database (cluster only), ``""`` for the default.
        token: ``user:password`` or an API token, ``""`` for none.
        location: the URI for messages, without credentials.
    """

    uri: str
    index: str
    db: str
    token: str
    location: str

    @property
    def lite(self) -> bool:
        """Whether this is an embedded milvus-lite file."""
        return not self.uri.startswith(("http://", "https://"))

    def collection(self, part: str) -> str:
        """The name of one of the index's collections (``docs``, ``chunks``, ``meta``)."""
        return f"{self.index}__{part}"


def parse_uri(uri: str) -> MilvusTarget:
    """Parse a ``milvus://`` URI (see the module docstring).

    Raises:
        InvalidInput: another scheme, a lite path not ending in ``.db``, an invalid index
            name, or unknown query parameters.
    """
    if not isinstance(uri, str):
        raise InvalidInput(f"a Milvus URI must be a str, got {type(uri).__name__}")
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise InvalidInput(
            f"not a Milvus URI: {uri!r}; use {', '.join(s + '://' for s in SCHEMES)}"
        )
    query = parse_qs(parts.query, keep_blank_values=True)
    unknown = sorted(set(query) - {"index", "token"})
    if unknown:
        raise InvalidInput(f"unknown Milvus URI parameter(s) {unknown}; known: index, token")
    index = query.get("index", ["embedstack"])[-1]
    if not _NAME.match(index):
        raise InvalidInput(
            f"invalid index name {index!r}: letters, digits and '_', starting with a letter "
            "or '_', at most 101 characters"
        )
    token = query.get("token", [""])[-1] or os.environ.get(TOKEN_ENV, "")
    if not parts.netloc:
        path = unquote(parts.path)
        if scheme != "milvus" or not path.endswith(".db") or not os.path.isabs(path):
            raise InvalidInput(
                f"{uri!r}: an embedded milvus-lite index is milvus:///absolute/path/file.db; "
                "a server is milvus://host:19530"
            )
        return MilvusTarget(path, index, "", "", f"milvus://{path}?index={index}")
    host = parts.hostname or ""
    if parts.username:
        token = token or f"{unquote(parts.username)}:{unquote(parts.password or '')}"
    port = parts.port or (443 if scheme == "milvus+https" else 19530)
    http = "https" if scheme == "milvus+https" else "http"
    db = unquote(parts.path.strip("/"))
    where = f"{host}:{port}" + (f"/{db}" if db else "")
    return MilvusTarget(f"{http}://{host}:{port}", index, db, token,
                        f"{scheme}://{where}?index={index}")  # fmt: skip


def connect(target: MilvusTarget) -> Any:
    """A ``MilvusClient`` for ``target`` (milvus-lite starts its embedded server).

    Raises:
        MissingDependency: pymilvus (or, for a ``.db`` file, milvus-lite) is not installed.
        IndexLocked: another process has the milvus-lite file open (one process per file).
        InvalidInput: the server cannot be reached.
    """
    pymilvus = require("pymilvus", "milvus", "Milvus indexes")
    if target.lite:
        require("milvus_lite", "milvus", "embedded Milvus (milvus-lite) indexes")
    try:
        client = pymilvus.MilvusClient(target.uri, token=target.token, db_name=target.db,
                                       timeout=30)  # fmt: skip
    except pymilvus.MilvusException as exc:
        if target.lite and _locked(target.uri):
            raise IndexLocked(
                f"{target.location} is open in another process: milvus-lite serves one "
                "process per file; to share an index between processes, run a Milvus server "
                "(milvus://host:19530)", location=target.location,
            ) from exc  # fmt: skip
        raise InvalidInput(f"cannot connect to Milvus at {target.location}: {exc}") from exc
    if target.lite:
        with _LITE_LOCK:
            _LITE_USERS[os.path.abspath(target.uri)] += 1
    return client


def _locked(path: str) -> bool:
    """Whether another process holds milvus-lite's advisory lock on data directory ``path``."""
    import fcntl

    lock = Path(path) / "LOCK"
    if not lock.is_file():
        return False
    with open(lock, "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return True
        fcntl.flock(fh, fcntl.LOCK_UN)
    return False


def disconnect(target: MilvusTarget, client: Any) -> None:
    """Close ``client``; the last client of a milvus-lite file also stops its embedded
    server (milvus-lite keeps one per file, in threads of this process, until exit)."""
    client.close()
    if not target.lite:
        return
    path = os.path.abspath(target.uri)
    with _LITE_LOCK:
        _LITE_USERS[path] -= 1
        last = _LITE_USERS[path] <= 0
        if last:
            del _LITE_USERS[path]
    if last:
        from milvus_lite.server_manager import server_manager_instance

        server_manager_instance.release_server(path)


def create_collections(client: Any, target: MilvusTarget, dim: int, ann: str | None, *,
                       sparse: bool = False) -> None:  # fmt: skip
    """Create the index's three collections, with ``Strong`` consistency (a read sees
    every write acknowledged before it), dense ``FLAT`` (exact) or ``HNSW``, inner product
    (vectors are L2-normalized, so it is the cosine); ``sparse``: chunks also hold SPLADE
    weights ``sp`` (:mod:`~embedstack.index.backends.milvus_sparse`)."""
    from pymilvus import DataType

    def schema(*fields: tuple[str, Any, dict[str, Any]]) -> Any:
        s = client.create_schema(auto_id=False, enable_dynamic_field=False)
        for name, kind, extra in fields:
            s.add_field(name, kind, **extra)
        return s

    text = {"max_length": MAX_VARCHAR}
    Spec = tuple[str, Any, dict[str, Any]]
    key: tuple[Spec, ...] = (
        ("pk", DataType.VARCHAR, {"is_primary": True, "max_length": MAX_VARCHAR}),
        ("doc_id", DataType.VARCHAR, {"max_length": MAX_ID}),
        ("gen", DataType.INT64, {}),
    )
    filt: tuple[Spec, ...] = (("meta", DataType.JSON, {}), ("marks", DataType.JSON, {}))
    docs = schema(
        *key, ("title", DataType.VARCHAR, text), ("text", DataType.VARCHAR, text),
        ("metadata", DataType.VARCHAR, text), ("hash", DataType.VARCHAR, {"max_length": 64}),
        *filt, ("dl", DataType.INT64, {}), ("avgdl", DataType.DOUBLE, {}),
        ("tf", DataType.SPARSE_FLOAT_VECTOR, {}), ("bm", DataType.SPARSE_FLOAT_VECTOR, {}),
    )  # fmt: skip
    chunks = schema(
        *key, ("chunk_no", DataType.INT64, {}), ("start", DataType.INT64, {}),
        ("end", DataType.INT64, {}), *filt, ("vec", DataType.FLOAT_VECTOR, {"dim": dim}),
        *((("sp", DataType.SPARSE_FLOAT_VECTOR, {}),) if sparse else ()),
    )  # fmt: skip
    meta = schema(
        ("pk", DataType.VARCHAR, {"is_primary": True, "max_length": MAX_VARCHAR}),
        ("a", DataType.INT64, {}), ("data", DataType.VARCHAR, text),
        ("v", DataType.FLOAT_VECTOR, {"dim": META_DIM}),
    )  # fmt: skip
    sparse_ix = {"index_type": "SPARSE_INVERTED_INDEX", "metric_type": "IP"}
    dense = ({"index_type": "HNSW", "metric_type": "IP",
              "params": {"M": 16, "efConstruction": 200}}
             if ann == "hnsw" else {"index_type": "FLAT", "metric_type": "IP"})  # fmt: skip
    splade = {"sp": sparse_ix} if sparse else {}
    for part, sch, vectors in (("meta", meta, {"v": {"index_type": "FLAT", "metric_type": "IP"}}),
                               ("docs", docs, {"tf": sparse_ix, "bm": sparse_ix}),
                               ("chunks", chunks, {"vec": dense, **splade})):  # fmt: skip
        params = client.prepare_index_params()
        for field, spec in vectors.items():
            params.add_index(field, **spec)
        name = target.collection(part)
        client.create_collection(name, schema=sch, consistency_level="Strong")
        # pymilvus's own wait polls each index every 0.5 s (2 s for an empty index's four):
        # ask without it and poll quickly, then load as create_collection would have
        client.create_index(name, params, sync=False)
        _wait_for_indexes(client, name, list(vectors))
        client.load_collection(name)


def _wait_for_indexes(client: Any, name: str, fields: list[str], timeout: float = 600) -> None:
    """Return once every index of ``fields`` on collection ``name`` is built (an empty
    collection's at once); a failed build or ``timeout`` seconds raise ``MilvusException``."""
    from pymilvus import MilvusException

    deadline, pause = time.monotonic() + timeout, 0.005
    pending = list(fields)
    while pending:
        state = client.describe_index(name, pending[0]).get("state")
        if state == "Finished":
            pending.pop(0)
            continue
        if state == "Failed" or time.monotonic() > deadline:
            raise MilvusException(message=f"index on {name}.{pending[0]}: {state}")
        time.sleep(pause)
        pause = min(pause * 2, 0.5)
