"""Configuration of the HTTP server: one frozen, validated :class:`ServerSettings` object.

Only pydantic is needed here (a core dependency), so settings can be built and checked
without the ``server`` extra installed.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from embedstack.encoders.registry import DEFAULT_MODEL

__all__ = ["API_KEYS_ENV", "IndexTarget", "ServerSettings", "redact", "split_alias"]

#: Where a served index lives: a local directory (``Path``), or an engine URI (``str`` with
#: a ``scheme://`` routed by :mod:`embedstack.index.backends`: ``postgresql://…?index=NAME``,
#: ``milvus:///abs/file.db?index=NAME``, ``milvus://host:19530?index=NAME`` …).
IndexTarget = Path | str
_PASSWORD = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://[^:/?#@]*):[^/?#@]*@")
_SECRET_PARAM = re.compile(r"([?&](?:password|sslpassword|token)=)[^&#]*", re.IGNORECASE)

API_KEYS_ENV = "EMBEDSTACK_API_KEYS"
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


def _is_folder(entry: str) -> bool:
    return entry.startswith(("/", "./", "../", "~", ".\\", "..\\")) or Path(entry).is_dir()


def split_alias(entry: str) -> tuple[str, str]:
    """Split a served-model entry ``"NAME=SOURCE"`` into ``(name, source)``.

    An entry without a valid ``NAME=`` prefix is served under its folder's name when it is a
    folder (``"./reranker"`` → ``("reranker", "./reranker")``; a path starting with ``/``,
    ``./``, ``../`` or ``~``, or an existing directory), else under its own text
    (``"all-MiniLM-L6-v2"``, a Hugging Face id).

    Example:
        >>> split_alias("minilm=/models/all-MiniLM-L6-v2")
        ('minilm', '/models/all-MiniLM-L6-v2')
        >>> split_alias("BAAI/bge-small-en-v1.5")
        ('BAAI/bge-small-en-v1.5', 'BAAI/bge-small-en-v1.5')
        >>> split_alias("./models/my-reranker/")
        ('my-reranker', './models/my-reranker/')
    """
    name, sep, source = entry.partition("=")
    if sep and name and source and set(name) <= _NAME_CHARS:
        return name, source
    if _is_folder(entry):
        path = Path(entry).expanduser()
        return (path.name or path.resolve().name or entry), entry
    return entry, entry


def redact(target: IndexTarget) -> str:
    """``target`` as text without secrets: a URI's password and its ``password``,
    ``sslpassword`` and ``token`` query parameters become ``***``; a path is returned as is.

    Example:
        >>> redact("postgresql://app:s3cret@db:5432/rag?index=papers")
        'postgresql://app:***@db:5432/rag?index=papers'
        >>> redact("milvus+https://host:443?index=docs&token=abc")
        'milvus+https://host:443?index=docs&token=***'
    """
    if isinstance(target, Path):
        return str(target)
    return _SECRET_PARAM.sub(r"\1***", _PASSWORD.sub(r"\1:***@", target))


def _index_target(name: str, target: IndexTarget) -> IndexTarget:
    """A local path as ``Path``, an engine URI as ``str`` (its scheme must be routed).

    Raises:
        ValueError: an unknown scheme, or a URI that was turned into a ``Path``.
    """
    from embedstack.errors import InvalidInput
    from embedstack.index.backends import SCHEMES, scheme_of

    try:
        scheme = scheme_of(target)
    except InvalidInput as exc:  # Path("postgresql://h/db") lost its "//"
        raise ValueError(f"index {name!r}: {exc}") from None
    if scheme is None:
        return Path(target)
    if scheme not in SCHEMES:
        known = ", ".join(f"{s}://" for s in sorted(SCHEMES))
        raise ValueError(
            f"index {name!r}: unknown index URI scheme {scheme + '://'!r} in "
            f"{redact(target)!r}: an index is a local directory (a path without scheme) or "
            f"lives in an engine: {known}"
        )
    return target


def _keys_from_env() -> tuple[SecretStr, ...]:
    raw = os.environ.get(API_KEYS_ENV, "")
    return tuple(SecretStr(k.strip()) for k in raw.split(",") if k.strip())


class ServerSettings(BaseModel):
    """Everything ``create_app`` needs; frozen (build a new object to change a value).

    Attributes:
        models: Embedding models served, by registry name, Hugging Face id or folder
            (``embedstack models``), or ``NAME=SOURCE`` to serve SOURCE under NAME.
            Requests naming any other model get 404.
        rerankers: Rerankers served by ``/v1/rerank``, ``NAME`` or ``NAME=SOURCE``: a name
            registered with :func:`embedstack.server.rerank.register_reranker`, else
            anything ``embedstack.rerank.load_reranker`` accepts (a name or a folder, served
            under the folder's name; see :func:`split_alias`). The first one is also the
            cross-encoder of index-search pipelines whose ``rerank`` stage names no model;
            a stage that names one must name a served reranker.
        indexes: Indexes served under ``/v1/indexes/{name}``, by name: a local directory
            (a ``Path``, or a ``str`` without scheme), or an engine URI as a ``str``
            (:data:`IndexTarget`; ``postgresql://USER@HOST/DB?index=NAME``,
            ``milvus:///abs/file.db?index=NAME``, ``milvus://HOST:19530?index=NAME``). An
            unknown scheme is refused here; an unreachable engine when the index is first
            opened (at start-up with ``preload``, else 503 ``index_unavailable``).
        preload: Load every model (and open every index) at startup, so a bad name fails
            the start and the first request is not slow. When False (the default for
            ``create_app``) models load on first use, in a worker thread, once;
            ``embedstack serve`` loads everything before it starts listening.
        api_keys: Bearer tokens accepted; empty means no authentication. Defaults to the
            comma-separated ``$EMBEDSTACK_API_KEYS`` read when the settings are built.
        max_inputs_per_request: Texts per embeddings request, documents per rerank or
            upsert request, ids per delete request.
        max_chars_per_input: Characters per text. 100,000 characters is ~25k tokens, beyond
            any served model's context (MiniLM reads 256 tokens), so nothing useful is
            refused while a single request cannot make the tokenizer chew megabytes.
        max_body_bytes: Request body size; larger bodies get 413 before being read.
        max_top_n: Largest ``top_n`` of ``/v1/rerank``.
        max_k: Largest ``k`` of index search.
        micro_batching: Merge concurrent embedding requests into one model call. When off,
            each request is its own model call (still queued, one call at a time per model):
            the benchmark's unbatched mode.
        max_batch_texts: Texts in one merged model call.
        max_batch_tokens: Estimated tokens in one merged model call.
        max_wait_ms: How long the first request of a batch waits for company.
        group_commit: Apply the write requests (upserts, deletes) waiting for an index's
            writer together: consecutive upserts as one atomic index write, consecutive
            deletes as one, each request answered with its own result once that write
            committed, exactly as if the requests were applied one at a time in arrival
            order (:mod:`embedstack.server.group_commit`). A request with bad input is
            refused alone. When off, each request is its own index write (and commit).
        max_group_requests: Write requests in one group.
        max_group_documents: Documents (upserts) and ids (deletes) in one group; a single
            larger request is a group of its own.
        queue_size: Requests waiting per model and side (embeddings), per reranker and per
            index (reads, and writes); beyond it requests get 503 with ``Retry-After``.
        index_readers: Concurrent searches per index (one readonly handle each).
        cors_origins: Origins allowed by CORS; empty (the default) installs no CORS at all.
        retry_after_s: ``Retry-After`` seconds sent with 503.
        keep_alive_s: Seconds an idle HTTP/1.1 connection is kept open for the client's
            next request (uvicorn's ``timeout_keep_alive`` under ``embedstack serve``; give
            any other ASGI server the same). It must exceed how long every client pool and
            load balancer in front keeps an idle connection, or a client can send a request
            on a connection at the instant the server closes it, and gets a reset
            (``httpx.ReadError``) instead of an answer: uvicorn's own default, 5 s, equals
            httpx's pool expiry. The default, 75 s (nginx's ``keepalive_timeout``), is above
            httpx (5 s), aiohttp (15 s), Node.js (4 s free-socket timeout) and the AWS ALB
            and nginx upstream idle timeouts (60 s); raise it above 90 s for Go clients
            (``http.Transport.IdleConnTimeout``) and to above the idle timeout of a load
            balancer that keeps backend connections longer.

    Example:
        >>> ServerSettings(models=("test-hash-64",), api_keys=()).max_inputs_per_request
        2048
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    models: tuple[str, ...] = (DEFAULT_MODEL,)
    rerankers: tuple[str, ...] = ()
    indexes: dict[str, IndexTarget] = Field(default_factory=dict)
    preload: bool = False
    api_keys: tuple[SecretStr, ...] = Field(default_factory=_keys_from_env)
    max_inputs_per_request: int = Field(default=2048, ge=1)
    max_chars_per_input: int = Field(default=100_000, ge=1)
    max_body_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)
    max_top_n: int = Field(default=1000, ge=1)
    max_k: int = Field(default=1000, ge=1)
    micro_batching: bool = True
    max_batch_texts: int = Field(default=256, ge=1)
    max_batch_tokens: int = Field(default=32_768, ge=1)
    max_wait_ms: float = Field(default=5.0, ge=0, le=1000)
    group_commit: bool = True
    max_group_requests: int = Field(default=64, ge=1)
    max_group_documents: int = Field(default=4096, ge=1)
    queue_size: int = Field(default=256, ge=1)
    index_readers: int = Field(default=4, ge=1, le=64)
    cors_origins: tuple[str, ...] = ()
    retry_after_s: int = Field(default=1, ge=1)
    keep_alive_s: int = Field(default=75, ge=1, le=3600)

    @field_validator("models", "rerankers")
    @classmethod
    def _unique(cls, entries: tuple[str, ...]) -> tuple[str, ...]:
        if any(not n.strip() or n != n.strip() for n in entries):
            raise ValueError("model names must be non-empty, without surrounding spaces")
        names = [split_alias(n)[0] for n in entries]
        if len(set(names)) != len(names):
            raise ValueError(
                f"served model names must be unique, got {names}: name them with NAME=SOURCE"
            )
        return entries

    @field_validator("indexes")
    @classmethod
    def _index_names(cls, indexes: dict[str, IndexTarget]) -> dict[str, IndexTarget]:
        for name in indexes:
            if not name or not set(name) <= _NAME_CHARS:
                raise ValueError(f"index name {name!r} must be letters, digits, '-', '_' or '.'")
        return {name: _index_target(name, target) for name, target in indexes.items()}

    @field_validator("api_keys")
    @classmethod
    def _keys(cls, keys: tuple[SecretStr, ...]) -> tuple[SecretStr, ...]:
        for key in keys:
            secret = key.get_secret_value()
            if not secret or secret != secret.strip() or "," in secret:
                raise ValueError("API keys must be non-empty, without spaces or commas")
        return keys

    def model_sources(self) -> dict[str, str]:
        """Served embedding model name → what to load (registry name, HF id or folder)."""
        return dict(split_alias(entry) for entry in self.models)

    def reranker_sources(self) -> dict[str, str]:
        """Served reranker name → what to load (registered name, model name or folder)."""
        return dict(split_alias(entry) for entry in self.rerankers)

    def key_bytes(self) -> tuple[bytes, ...]:
        """The API keys as UTF-8 bytes, for constant-time comparison."""
        return tuple(k.get_secret_value().encode("utf-8") for k in self.api_keys)

    def public_dict(self) -> dict[str, Any]:
        """The settings without secrets (for logs and ``/healthz``-style reports)."""
        data = self.model_dump(mode="json", exclude={"api_keys"})
        data["indexes"] = {name: redact(target) for name, target in self.indexes.items()}
        data["auth"] = bool(self.api_keys)
        return data
