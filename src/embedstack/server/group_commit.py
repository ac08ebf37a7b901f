"""Group commit of an index's writes: the requests waiting for the writer, applied together.

Each served index has one writable handle used by one thread, one call at a time. Under
load, upserts and deletes queue behind each other and each pays a whole commit (a SQLite
transaction and fsync, or an engine transaction). Here, when the writer becomes free it
takes **every** waiting write request of the index, in arrival order, up to
``max_group_requests`` requests and ``max_group_documents`` documents and ids (a single
larger request goes alone), and applies the group as a few index writes:

* consecutive upserts → one :meth:`~embedstack.index.Index.upsert_many` (one atomic write
  that returns each request's :class:`~embedstack.index.AddResult` as if it had been
  upserted alone, ``chunks`` included); consecutive deletes → one ``delete``;
* a request naming an id that an earlier request of the same run names starts a new run,
  and so does a change of kind: every request sees what the requests before it wrote,
  exactly as if they were applied one at a time in arrival order (the contract);
* each request is answered after the write that holds it has committed.

Isolation: a combined call that raises an :class:`~embedstack.errors.EmbedstackError`
(one request's bad input; the index writes nothing) is retried one request at a time, in
order, so only the bad request gets its 4xx. A delete naming a missing document is refused
(404) before the combined delete, alone. Any other exception leaves the writer in an
unknown state: the hub closes and reopens it, and every request of that run not yet
answered gets the error. With ``merge=False`` every request is its own group (the
behaviour before group commit).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from embedstack.errors import EmbedstackError
from embedstack.server.batching import Overloaded
from embedstack.server.errors import ApiError

if TYPE_CHECKING:
    from embedstack.index import Index

__all__ = ["Call", "Delete", "Op", "Upsert", "WriteQueue", "apply_run", "runs"]

logger = logging.getLogger("embedstack.server")

#: Refused on purpose, before anything is written: the writer handle stays usable.
REFUSALS = (EmbedstackError, ApiError)


@dataclass(frozen=True)
class Upsert:
    """An upsert request's documents (dicts as ``Index.upsert`` takes them)."""

    docs: list[dict[str, Any]]


@dataclass(frozen=True)
class Delete:
    """A delete request's ids: all must exist (else 404, nothing deleted)."""

    ids: list[str]


@dataclass(frozen=True)
class Call:
    """Any other write: ``fn(writer)``, never merged."""

    fn: Callable[[Index], Any]


Op = Upsert | Delete | Call
#: ``(True, result)`` or ``(False, exception)`` for one request.
Outcome = tuple[bool, Any]


def size(op: Op) -> int:
    """Documents or ids of ``op`` (1 for a call)."""
    if isinstance(op, Upsert):
        return len(op.docs)
    return len(op.ids) if isinstance(op, Delete) else 1


def _ids(op: Op) -> set[str]:
    if isinstance(op, Upsert):
        return {str(d.get("id")) for d in op.docs if isinstance(d, dict)}
    return set(op.ids) if isinstance(op, Delete) else set()


def runs(ops: Sequence[Op]) -> list[list[int]]:
    """Split a group (in arrival order) into runs applied as one index write each:
    consecutive requests of one kind whose ids do not meet; a call runs alone.

    Example:
        >>> [len(r) for r in runs([Upsert([{"id": "a"}]), Upsert([{"id": "b"}]),
        ...                         Delete(["a"]), Upsert([{"id": "a"}])])]
        [2, 1, 1]
    """
    out: list[list[int]] = []
    seen: set[str] = set()
    for i, op in enumerate(ops):
        ids = _ids(op)
        last = ops[out[-1][0]] if out else None
        if last is None or isinstance(op, Call) or type(op) is not type(last) or ids & seen:
            out.append([i])
            seen = set(ids)
        else:
            out[-1].append(i)
            seen |= ids
    return out


def delete_documents(index: Index, ids: list[str]) -> int:
    """Delete ``ids`` from ``index``; 404 (nothing deleted) when one is not there."""
    _check_present(index, ids)
    return index.delete(ids)


def _check_present(index: Index, ids: list[str]) -> None:
    missing = [i for i in dict.fromkeys(ids) if index.get(i) is None]
    if missing:
        shown = ", ".join(repr(i) for i in missing[:5])
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise ApiError(
            404,
            f"documents not in the index: {shown}{more}; nothing was deleted",
            code="document_not_found",
            param="ids",
        )


def _alone(index: Index, op: Op) -> Any:
    if isinstance(op, Upsert):
        return index.upsert(op.docs)
    if isinstance(op, Delete):
        return delete_documents(index, op.ids)
    return op.fn(index)


WriteHook = Callable[[int, int], None]


def apply_run(
    index: Index, ops: Sequence[Op], outcomes: list[Outcome | None], on_write: WriteHook
) -> None:
    """Apply one run (see :func:`runs`) to the writable ``index``, filling ``outcomes``.

    ``on_write(n_requests, n_documents)`` is called after each upsert or delete index call
    that returned.
    An exception other than a refusal propagates (the outcomes set so far stand).
    """
    if len(ops) > 1 and isinstance(ops[0], Upsert | Delete):
        live = list(range(len(ops)))
        results: list[Any] = []
        if isinstance(ops[0], Delete):
            live = _present(index, ops, outcomes)
        try:
            if live and isinstance(ops[0], Upsert):
                results = index.upsert_many([ops[i].docs for i in live])  # type: ignore[union-attr]
            elif live:
                index.delete([x for i in live for x in ops[i].ids])  # type: ignore[union-attr]
                results = [len(dict.fromkeys(ops[i].ids)) for i in live]  # type: ignore[union-attr]
        except REFUSALS:
            pass  # one request's bad input (nothing written): apply them one by one
        else:
            if live:
                on_write(len(live), sum(size(ops[i]) for i in live))
            for i, result in zip(live, results, strict=True):
                outcomes[i] = (True, result)
            return
        ops_left = live
    else:
        ops_left = list(range(len(ops)))
    for i in ops_left:
        try:
            result = _alone(index, ops[i])
        except REFUSALS as exc:
            outcomes[i] = (False, exc)
            continue
        if not isinstance(ops[i], Call):  # the metrics count upserts and deletes
            on_write(1, size(ops[i]))
        outcomes[i] = (True, result)


def _present(index: Index, ops: Sequence[Op], outcomes: list[Outcome | None]) -> list[int]:
    """Positions of the delete requests whose ids all exist; the others get their 404."""
    live = []
    for i, op in enumerate(ops):
        try:
            _check_present(index, op.ids)  # type: ignore[union-attr]
        except REFUSALS as exc:
            outcomes[i] = (False, exc)
            continue
        live.append(i)
    return live


@dataclass
class _Pending:
    op: Op
    future: asyncio.Future[Any] = field(repr=False)


ApplyFn = Callable[[list[Op]], list[Outcome]]


class WriteQueue:
    """The waiting line of one index's writes, drained a group at a time.

    Args:
        name: Label for messages.
        apply: Applies a group on the calling thread; one outcome per op, in order.
        executor: The index's single writer thread.
        queue_size: Most requests waiting; more raise :class:`Overloaded`.
        max_requests: Most requests in one group.
        max_documents: Most documents and ids in one group (a larger request goes alone).
        merge: False makes every request its own group.
    """

    def __init__(
        self,
        name: str,
        apply: ApplyFn,
        executor: Executor,
        *,
        queue_size: int,
        max_requests: int,
        max_documents: int,
        merge: bool = True,
    ) -> None:
        self.name = name
        self._apply = apply
        self._executor = executor
        self.queue_size = queue_size
        self.max_requests = max_requests if merge else 1
        self.max_documents = max_documents
        self._waiting: deque[_Pending] = deque()
        self._worker: asyncio.Task[None] | None = None

    def depth(self) -> int:
        """Requests waiting (not yet taken by the writer)."""
        return len(self._waiting)

    async def submit(self, op: Op) -> Any:
        """Queue ``op`` and wait until the write holding it has committed.

        Raises:
            Overloaded: ``queue_size`` requests are already waiting.
            Exception: what applying ``op`` raised.
        """
        loop = asyncio.get_running_loop()
        if self._worker is not None and self._worker.get_loop() is not loop:
            self._waiting.clear()  # the app moved to a new event loop: start afresh
            self._worker = None
        if len(self._waiting) >= self.queue_size:
            raise Overloaded(f"{self.name}: {len(self._waiting)} requests waiting")
        pending = _Pending(op, loop.create_future())
        self._waiting.append(pending)
        if self._worker is None or self._worker.done():
            self._worker = loop.create_task(self._drain(), name=f"writes-{self.name}")
        return await pending.future

    def _take(self) -> list[_Pending]:
        group = [self._waiting.popleft()]
        n_docs = size(group[0].op)
        while self._waiting and len(group) < self.max_requests:
            n = size(self._waiting[0].op)
            if n_docs + n > self.max_documents:
                break
            group.append(self._waiting.popleft())
            n_docs += n
        return group

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        while self._waiting:
            live = [p for p in self._take() if not p.future.done()]  # drop cancelled ones
            if not live:
                continue
            try:
                outcomes = await loop.run_in_executor(
                    self._executor, self._apply, [p.op for p in live]
                )
            except BaseException as exc:  # noqa: BLE001 - answer every request, then go on
                if isinstance(exc, asyncio.CancelledError):
                    for p in live:
                        p.future.cancel()
                    raise
                outcomes = [(False, exc)] * len(live)
            for p, (ok, value) in zip(live, outcomes, strict=True):
                if p.future.done():
                    continue
                if ok:
                    p.future.set_result(value)
                else:
                    p.future.set_exception(value)
