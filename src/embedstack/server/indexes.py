"""Served indexes: concurrent readers, one writer, all off the event loop.

:class:`~embedstack.index.Index` objects are not thread-safe (one object per thread), so:

* **reads** (search, stats) take a ``readonly`` handle from a per-index pool, use it on a
  worker thread and put it back; at most ``ServerSettings.index_readers`` run at once per
  index and at most ``queue_size`` wait (:class:`~embedstack.server.batching.Gate`), so
  the pool never holds more handles than that. Readonly handles take no file lock and see
  every committed write on their next call.
* **writes** (upsert, delete) go through ONE writable handle per index, opened at the
  first write and kept, used only from that index's single writer thread, one call at a
  time — the index's single-writer discipline. The handle holds the index's write lock
  from then on; if another process holds it when the server first writes, the requests
  get 409 (``IndexLocked``) and the next write tries again. Requests waiting for the
  writer are applied together (group commit, :mod:`embedstack.server.group_commit`;
  ``ServerSettings.group_commit``): as if one at a time in arrival order, with fewer
  commits. At most ``queue_size`` wait; more get 503.

All handles of an index share one encoder object: the served embedding model with the
same ``model_id`` when there is one (and the index records no special encoder options),
else one loaded with the first handle. ONNX Runtime sessions and ``tokenizers`` are safe
to call from several threads.

An index may live in an engine (``ServerSettings.indexes`` holds a URI such as
``postgresql://…?index=NAME`` or ``milvus:///abs/file.db?index=NAME``): its handles are
:class:`~embedstack.index.backends.remote.RemoteIndex` objects, each with its own
connection, pooled and used exactly like local ones. An index that cannot be opened when a
request first needs it (engine unreachable, no index of that name, a bad URI) answers 503
``index_unavailable`` with ``Retry-After``, the cause logged, not sent; the next request
tries again.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from embedstack.errors import EmbedstackError, IndexLocked, InvalidInput
from embedstack.server.batching import Gate
from embedstack.server.errors import ApiError
from embedstack.server.group_commit import (
    Call,
    Delete,
    Op,
    Outcome,
    Upsert,
    WriteQueue,
    apply_run,
    runs,
)
from embedstack.server.metrics import Metrics
from embedstack.server.settings import IndexTarget, ServerSettings, redact

if TYPE_CHECKING:
    from embedstack.encoders import TextEncoder
    from embedstack.index import AddResult, Index

__all__ = ["IndexHub"]

logger = logging.getLogger("embedstack.server")
T = TypeVar("T")
_ApplyOf = Callable[["_Served", list[Op]], list[Outcome]]


class _Served:
    def __init__(
        self, name: str, target: IndexTarget, settings: ServerSettings, apply: _ApplyOf
    ) -> None:
        self.name = name
        self.target = target  # a Path, or an engine URI (str)
        self.pool: queue.SimpleQueue[Index] = queue.SimpleQueue()
        self.readers = Gate(f"index {name}", settings.index_readers, settings.queue_size)
        self.writer: Index | None = None
        self.writer_thread = ThreadPoolExecutor(1, thread_name_prefix=f"index-{name}"[:40])
        self.writes = WriteQueue(
            f"index {name} (writes)",
            functools.partial(apply, self),
            self.writer_thread,
            queue_size=settings.queue_size,
            max_requests=settings.max_group_requests,
            max_documents=settings.max_group_documents,
            merge=settings.group_commit,
        )
        self.encoder: TextEncoder | None = None
        self.open_lock = threading.Lock()
        self.manifest: dict[str, Any] | None = None  # read on first use (fixed parts only)


@contextmanager
def _manifest_of(target: IndexTarget) -> Iterator[dict[str, Any]]:
    """The manifest of the index at ``target``: a local ``manifest.json``, or the one an
    engine keeps (read through a readonly store connection, held open for the block so
    that an embedded engine is not stopped and restarted in between)."""
    if isinstance(target, Path):
        from embedstack.index.manifest import read_manifest

        yield read_manifest(target)
        return
    from embedstack.index.backends import scheme_of, store_class

    store = store_class(str(scheme_of(target))).open(target, True)
    try:
        yield store.manifest
    finally:
        store.close()


def _unavailable(served: _Served, error: EmbedstackError) -> ApiError:
    """The 503 answered when index ``served`` cannot be opened; the cause (which may name
    hosts and paths) is logged, not sent."""
    logger.error("index %r at %s cannot be opened: %s", served.name, redact(served.target), error)
    return ApiError(
        503,
        f"index {served.name!r} is unavailable: it cannot be opened now (its storage is "
        "unreachable or misconfigured; the server log says why); retry later",
        code="index_unavailable",
        headers={"Retry-After": "1"},
    )


class IndexHub:
    """The indexes named in ``ServerSettings.indexes``."""

    def __init__(
        self,
        settings: ServerSettings,
        metrics: Metrics | None = None,
        *,
        shared_encoders: Callable[[], Iterable[TextEncoder]] = tuple,
    ) -> None:
        self._shared = shared_encoders
        self._metrics = metrics
        self._served = {
            name: _Served(name, target, settings, self._apply_sync)
            for name, target in settings.indexes.items()
        }
        if metrics is not None:
            for name, served in self._served.items():
                metrics.queue_gauge(
                    f"index:{name}",
                    functools.partial(lambda s: s.readers.depth() + s.writes.depth(), served),
                )

    def names(self) -> list[str]:
        """Names of the served indexes, sorted."""
        return sorted(self._served)

    def _get(self, name: str) -> _Served:
        served = self._served.get(name)
        if served is None:
            known = ", ".join(self.names()) or "none"
            raise ApiError(
                404,
                f"index {name!r} is not served here; served indexes: {known} (GET /v1/indexes)",
                code="index_not_found",
                param="name",
            )
        return served

    def path(self, name: str) -> Path | None:
        """The directory of index ``name``; None for an index held by an engine (it has no
        folder, hence no saved pipelines).

        Raises:
            ApiError: 404 for an unknown index.
        """
        target = self._get(name).target
        return target if isinstance(target, Path) else None

    def has_sparse(self, name: str) -> bool:
        """Whether index ``name`` stores SPLADE postings (searchable with mode ``sparse``).

        Raises:
            ApiError: 404 for an unknown index; 503 for one that cannot be opened.
        """
        served = self._get(name)
        if served.manifest is None:
            try:
                with served.open_lock, _manifest_of(served.target) as manifest:
                    served.manifest = manifest
            except EmbedstackError as exc:
                raise _unavailable(served, exc) from None
        return bool(served.manifest.get("sparse"))

    def any_sparse(self) -> bool:
        """Whether some served index stores SPLADE postings; indexes that cannot be opened
        now are skipped (the API description must not fail with an engine)."""
        for name in self.names():
            try:
                if self.has_sparse(name):
                    return True
            except ApiError:
                continue
        return False

    def _shared_encoder(self, manifest: dict[str, Any]) -> TextEncoder | None:
        """A served encoder that produced this index's vectors, if one is loaded."""
        recorded = manifest["encoder"]
        if recorded.get("options"):
            return None  # built with special options (quantization …): load its own
        return next((e for e in self._shared() if e.model_id == recorded["model_id"]), None)

    def _open(self, served: _Served, *, readonly: bool) -> Index:
        """A new handle of ``served`` (the first one picks the encoder).

        Raises:
            EmbedstackError: the index cannot be opened (as :meth:`Index.open`).
        """
        from embedstack.index import Index

        with served.open_lock:  # the first open loads the encoder; later ones reuse it
            if served.encoder is not None:
                return Index.open(served.target, encoder=served.encoder, readonly=readonly)
            with _manifest_of(served.target) as manifest:
                served.manifest = manifest
                served.encoder = self._shared_encoder(manifest)
                index = Index.open(served.target, encoder=served.encoder, readonly=readonly)
            if served.encoder is None:
                served.encoder = index.encoder
        return index

    def _open_for_request(self, served: _Served, *, readonly: bool) -> Index:
        """:meth:`_open` for a request: a failure to open is the server's, not the
        client's (503 ``index_unavailable``), except a write lock held elsewhere (409)."""
        try:
            return self._open(served, readonly=readonly)
        except IndexLocked:
            raise
        except InvalidInput as exc:  # unreachable engine, no such index, bad URI
            raise _unavailable(served, exc) from None

    def _read_sync(self, served: _Served, fn: Callable[[Index], T]) -> T:
        try:
            index = served.pool.get_nowait()
        except queue.Empty:
            index = self._open_for_request(served, readonly=True)
        try:
            result = fn(index)
        except EmbedstackError:
            served.pool.put(index)  # a refused request leaves the handle usable
            raise
        except BaseException:
            index.close()  # unknown state: do not reuse
            raise
        served.pool.put(index)
        return result

    def _apply_sync(self, served: _Served, ops: list[Op]) -> list[Outcome]:
        """Apply a group of writes on the writer thread, run by run (see
        :func:`~embedstack.server.group_commit.runs`); one outcome per op."""
        outcomes: list[Outcome | None] = [None] * len(ops)
        metrics = self._metrics

        def on_write(n_requests: int, n_docs: int) -> None:
            if metrics is not None:
                metrics.index_write(served.name, n_requests, n_docs)

        for run in runs(ops):
            if served.writer is None:
                try:
                    # IndexLocked → 409, an engine that cannot be reached → 503; the whole
                    # rest of the group gets it (one try per group), the next group retries
                    served.writer = self._open_for_request(served, readonly=False)
                except BaseException as exc:  # noqa: BLE001 - every request gets the error
                    return [o or (False, exc) for o in outcomes]
            answers: list[Outcome | None] = [None] * len(run)
            try:
                apply_run(served.writer, [ops[i] for i in run], answers, on_write)
            except BaseException as exc:  # noqa: BLE001 - answered below, then reopened
                writer, served.writer = served.writer, None
                writer.close()  # unknown state: reopen (and reconcile) on the next write
                answers = [a or (False, exc) for a in answers]
            for i, answer in zip(run, answers, strict=True):
                outcomes[i] = answer
        return [o or (False, RuntimeError("write not applied")) for o in outcomes]

    async def read(self, name: str, fn: Callable[[Index], T]) -> T:
        """Run ``fn`` with a readonly handle of index ``name`` on a worker thread.

        Raises:
            ApiError: 404 for an unknown index; 503 for one that cannot be opened.
            Overloaded: ``queue_size`` reads are already waiting.
        """
        served = self._get(name)
        async with served.readers.slot():
            return await asyncio.to_thread(self._read_sync, served, fn)

    async def write(self, name: str, fn: Callable[[Index], T]) -> T:
        """Run ``fn`` with the one writable handle of index ``name``, in turn with the
        other writes (never merged with them).

        Raises:
            ApiError: 404 for an unknown index; 503 for one that cannot be opened.
            Overloaded: ``queue_size`` writes are already waiting.
            IndexLocked: another process holds the index's write lock.
            Exception: what ``fn`` raised.
        """
        result: T = await self._get(name).writes.submit(Call(fn))
        return result

    async def upsert(self, name: str, docs: list[dict[str, Any]]) -> AddResult:
        """``Index.upsert(docs)`` on index ``name``, group-committed with the upserts
        waiting beside it; the result is this request's own.

        Raises:
            InvalidInput: a bad document (only this request is refused).
            ApiError, Overloaded, IndexLocked: as :meth:`write`.
        """
        result: AddResult = await self._get(name).writes.submit(Upsert(docs))
        return result

    async def delete(self, name: str, ids: list[str]) -> int:
        """Delete ``ids`` from index ``name`` (group-committed); how many were deleted.

        Raises:
            ApiError: 404 ``document_not_found`` when one id is not in the index (nothing
                of this request is deleted); else as :meth:`write`.
        """
        deleted: int = await self._get(name).writes.submit(Delete(ids))
        return deleted

    def load_all(self) -> None:
        """Open one reader of every index now, on the calling thread (loads the encoders).

        Raises:
            EmbedstackError: an index cannot be opened (not an index, corrupt, bad model).
        """
        for name in self.names():
            served = self._served[name]
            served.pool.put(self._open(served, readonly=True))

    async def preload(self) -> None:
        """Open one reader of every index now (loads their encoders; fails fast)."""
        for name in self.names():
            await self.read(name, lambda index: None)

    def close(self) -> None:
        """Close the writers and every pooled handle."""
        for served in self._served.values():
            served.writer_thread.shutdown(wait=True, cancel_futures=True)
            if served.writer is not None:
                served.writer.close()
                served.writer = None
            while True:
                try:
                    handle: Any = served.pool.get_nowait()
                except queue.Empty:
                    break
                handle.close()
