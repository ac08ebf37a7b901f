"""Dynamic micro-batching: concurrent embedding requests merged into one model call.

One :class:`MicroBatcher` serves one (model, side) pair. Requests wait in a bounded
``asyncio.Queue``; a single worker task takes the first waiting request, then keeps
taking requests until ``max_wait_s`` has passed since it took the first one, or the batch
would exceed ``max_texts`` texts or ``max_tokens`` estimated tokens (a request that does
not fit is held for the next batch; a single request larger than the budget runs alone).
The merged texts go to the model in ONE call that runs in a worker thread (``run`` is
awaited, the event loop never computes), and each request gets its own rows back.

While a model call runs, new requests queue up, so under load a batch forms without any
waiting: the wait only matters when the server is nearly idle, where it costs at most
``max_wait_s`` of latency. A full queue refuses new requests at once
(:class:`Overloaded`, answered 503 + ``Retry-After``) instead of letting latency grow
without bound. With ``merge=False`` every request is its own model call, through the same
queue (the server's ``--no-batching`` mode).

Isolation: if a merged call fails, each request in it is retried alone, so one bad
request cannot fail the others. Requests whose client went away (cancelled futures) are
dropped before the call.

Example:
    >>> async def main():                                                # doctest: +SKIP
    ...     b = MicroBatcher("m", run, max_texts=64, max_tokens=8192, max_wait_s=0.005,
    ...                      queue_size=128)
    ...     vectors, tokens = await b.submit(["hello"], tokens=3)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import numpy as np

__all__ = ["EmbedResult", "Gate", "MicroBatcher", "Overloaded"]

logger = logging.getLogger("embedstack.server")

# (vectors (n, dim) float32, token counts (n,) int64), one row per text.
EmbedResult = tuple[np.ndarray, np.ndarray]
RunFn = Callable[[list[str]], Awaitable[EmbedResult]]
BatchHook = Callable[[int, int], None]


class Overloaded(Exception):
    """The queue is full; the request was not accepted."""


class Gate:
    """Bounded concurrency with a bounded waiting line, for work that is not batched.

    At most ``limit`` holders at once; at most ``queue_size`` waiting for a slot; one more
    raises :class:`Overloaded` at once instead of queueing without bound.

    Args:
        name: Label for messages.
        limit: Concurrent holders.
        queue_size: Waiters allowed beyond ``limit``.
    """

    def __init__(self, name: str, limit: int, queue_size: int) -> None:
        self.name = name
        self.limit = limit
        self.queue_size = queue_size
        self._waiting = 0
        self._busy = 0
        self._sem: asyncio.Semaphore | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def depth(self) -> int:
        """Callers waiting for a slot."""
        return self._waiting

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one slot for the ``async with`` block.

        Raises:
            Overloaded: ``queue_size`` callers are already waiting.
        """
        loop = asyncio.get_running_loop()
        if self._sem is None or self._loop is not loop:
            self._sem, self._loop = asyncio.Semaphore(self.limit), loop
        sem = self._sem
        if self._busy >= self.limit and self._waiting >= self.queue_size:
            raise Overloaded(f"{self.name}: {self._waiting} requests waiting")
        self._waiting += 1
        try:
            await sem.acquire()
        finally:
            self._waiting -= 1
        self._busy += 1
        try:
            yield
        finally:
            self._busy -= 1
            sem.release()


@dataclass
class _Pending:
    texts: list[str]
    tokens: int
    future: asyncio.Future[EmbedResult] = field(repr=False)


class MicroBatcher:
    """Merge concurrent requests for one model and side into bounded model calls.

    Args:
        name: Label for logs and metrics.
        run: Async function computing ``(vectors, token_counts)`` for a list of texts; it
            must do the work off the event loop (in a thread).
        max_texts: Most texts in one call.
        max_tokens: Most estimated tokens in one call.
        max_wait_s: Longest wait for company after the first request of a batch.
        queue_size: Most requests waiting; more raise :class:`Overloaded`.
        merge: False makes every request its own call.
        on_batch: Called with ``(n_texts, n_requests)`` after each call (metrics).
    """

    def __init__(
        self,
        name: str,
        run: RunFn,
        *,
        max_texts: int,
        max_tokens: int,
        max_wait_s: float,
        queue_size: int,
        merge: bool = True,
        on_batch: BatchHook | None = None,
    ) -> None:
        self.name = name
        self._run = run
        self.max_texts = max_texts
        self.max_tokens = max_tokens
        self.max_wait_s = max_wait_s
        self.merge = merge
        self._on_batch = on_batch
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue(maxsize=queue_size)
        self._held: deque[_Pending] = deque()
        self._worker: asyncio.Task[None] | None = None

    def depth(self) -> int:
        """Requests waiting (not yet in a model call)."""
        return self._queue.qsize() + len(self._held)

    async def submit(self, texts: list[str], tokens: int) -> EmbedResult:
        """Queue ``texts`` (with ``tokens`` estimated tokens) and wait for their rows.

        Raises:
            Overloaded: the queue is full.
        """
        loop = asyncio.get_running_loop()
        if self._worker is not None and self._worker.get_loop() is not loop:
            # The app moved to a new event loop (a test client restarted): start afresh.
            self._queue = asyncio.Queue(maxsize=self._queue.maxsize)
            self._held.clear()
            self._worker = None
        pending = _Pending(texts, max(1, tokens), loop.create_future())
        try:
            self._queue.put_nowait(pending)
        except asyncio.QueueFull:
            raise Overloaded(f"{self.name}: {self._queue.maxsize} requests waiting") from None
        if self._worker is None or self._worker.done():
            self._worker = loop.create_task(self._loop(), name=f"batcher-{self.name}")
        return await pending.future

    async def aclose(self) -> None:
        """Stop the worker; requests still waiting are cancelled."""
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            self._worker = None
        while self._held or not self._queue.empty():
            item = self._held.popleft() if self._held else self._queue.get_nowait()
            item.future.cancel()

    # -- worker -----------------------------------------------------------------------------
    async def _next(self) -> _Pending:
        return self._held.popleft() if self._held else await self._queue.get()

    async def _gather(self) -> list[_Pending]:
        first = await self._next()
        batch = [first]
        if not self.merge:
            return batch
        n_texts, n_tokens = len(first.texts), first.tokens
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_wait_s
        while n_texts < self.max_texts and n_tokens < self.max_tokens:
            if self._held:
                item = self._held.popleft()
            else:
                try:
                    item = self._queue.get_nowait()
                except asyncio.QueueEmpty:
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        break
                    try:
                        # asyncio.timeout cancels at the await, before get() takes an item,
                        # so a timeout never loses a request (wait_for on 3.11 could).
                        async with asyncio.timeout(remaining):
                            item = await self._queue.get()
                    except TimeoutError:
                        break
            if n_texts + len(item.texts) > self.max_texts or n_tokens + item.tokens > (
                self.max_tokens
            ):
                self._held.appendleft(item)  # first in line for the next batch
                break
            batch.append(item)
            n_texts += len(item.texts)
            n_tokens += item.tokens
        return batch

    async def _loop(self) -> None:
        while True:
            batch = await self._gather()
            live = [p for p in batch if not p.future.done()]
            if not live:
                continue
            try:
                await self._call(live)
            except asyncio.CancelledError:
                for p in live:
                    p.future.cancel()
                raise
            except BaseException as exc:  # noqa: BLE001 - never let the worker die silently
                logger.exception("batch worker %s failed", self.name)
                for p in live:
                    if not p.future.done():
                        p.future.set_exception(exc)

    async def _call(self, batch: list[_Pending]) -> None:
        texts = [t for p in batch for t in p.texts]
        try:
            vectors, tokens = await self._run(texts)
        except Exception as exc:
            if len(batch) == 1:
                if not batch[0].future.done():
                    batch[0].future.set_exception(exc)
                return
            for p in batch:  # isolate the failing request(s)
                await self._call([p])
            return
        if self._on_batch is not None:
            self._on_batch(len(texts), len(batch))
        start = 0
        for p in batch:
            stop = start + len(p.texts)
            if not p.future.done():
                p.future.set_result((vectors[start:stop], tokens[start:stop]))
            start = stop
