"""The served models: lazy loading, one worker thread per model, and its micro-batchers.

Every model (encoder or reranker) owns a single-thread executor: it loads there and every
call to it runs there, so calls to one model never overlap (ONNX Runtime already uses all
cores for one call) and the event loop never computes. Embedding calls go through a
:class:`~embedstack.server.batching.MicroBatcher` per (model, side); rerank calls through a
:class:`~embedstack.server.batching.Gate` per reranker, so both have bounded queues.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal, TypeVar

import numpy as np

from embedstack.encoders import TextEncoder, load_encoder
from embedstack.errors import InvalidInput, ModelNotFound
from embedstack.server.batching import EmbedResult, Gate, MicroBatcher
from embedstack.server.errors import ApiError
from embedstack.server.metrics import Metrics
from embedstack.server.rerank import Reranker, resolve_reranker
from embedstack.server.settings import ServerSettings

__all__ = [
    "ModelHub",
    "Side",
    "count_tokens",
    "blank_token_ids",
    "decode_tokens",
    "estimate_tokens",
    "length_groups",
    "tokenizer_of",
]

logger = logging.getLogger("embedstack.server")

Side = Literal["query", "document"]
T = TypeVar("T")
_WORD = re.compile(r"\w+|[^\w\s]", re.UNICODE)


def count_tokens(encoder: TextEncoder, texts: list[str]) -> np.ndarray:
    """Tokens per text as the model reads them (``(n,) int64``, special tokens included,
    after truncation); a word count for encoders without a tokenizer (hashing)."""
    counter = getattr(encoder, "count_tokens", None)
    if counter is not None:
        return np.asarray(counter(texts), dtype=np.int64)
    return np.array([len(_WORD.findall(t)) for t in texts], dtype=np.int64)


def estimate_tokens(encoder: TextEncoder, texts: list[str]) -> int:
    """A cheap token estimate for batch budgeting (no tokenization): ~3 characters per
    token, capped by the model's ``max_length``."""
    cap = int(getattr(encoder, "max_length", 0) or 0) or 1 << 30
    return sum(min(cap, len(t) // 3 + 2) for t in texts)


def tokenizer_of(encoder: TextEncoder) -> Any | None:
    """The model's ``tokenizers.Tokenizer``, or None for encoders without one."""
    tokenizer = getattr(encoder, "tokenizer", None)
    if tokenizer is None:
        tokenizer = getattr(encoder, "_tokenizer", None)
    return tokenizer if hasattr(tokenizer, "decode") else None


def decode_tokens(encoder: TextEncoder, ids: list[int], *, position: int = 0) -> str:
    """Text of a token-id array, decoded with the model's tokenizer (special tokens dropped).

    Args:
        encoder: The model the ids belong to.
        ids: Token ids.
        position: Index of the array in the request (for messages).

    Raises:
        InvalidInput: the model has no tokenizer, or an id is outside its vocabulary.
    """
    tokenizer = tokenizer_of(encoder)
    if tokenizer is None:
        raise InvalidInput(
            f"model {encoder.name!r} has no tokenizer to decode token ids: send text instead"
        )
    size = int(tokenizer.get_vocab_size(with_added_tokens=True))
    bad = next((i for i in ids if not 0 <= i < size), None)
    if bad is not None:
        raise InvalidInput(
            f"input[{position}]: token id {bad} is outside the vocabulary of {encoder.name} "
            f"[0, {size})"
        )
    return str(tokenizer.decode(ids, skip_special_tokens=True))


def blank_token_ids(tokenizer: Any) -> tuple[int, ...]:
    """Ids that decode to blank text on their own (special tokens such as ``[PAD]``,
    ``[CLS]``): an input made only of these decodes to an empty text."""
    size = int(tokenizer.get_vocab_size(with_added_tokens=True))
    return tuple(
        i for i in range(size) if not str(tokenizer.decode([i], skip_special_tokens=True)).strip()
    )


def length_groups(counts: np.ndarray, ratio: float = 0.8) -> list[np.ndarray]:
    """Split texts into groups of similar token counts, longest first.

    A model batch is padded to its longest text, so a merged batch of short and long
    requests would spend most of its compute on padding (32 SciFact queries: 22 tokens on
    average, 50 at most, so one padded batch computes 2.3x the tokens). A new group
    starts when a text is shorter than ``ratio`` times the group's longest one.

    Args:
        counts: ``(n,)`` token counts.
        ratio: Shortest/longest token count allowed within a group, in (0, 1].

    Returns:
        Index arrays into ``counts``, covering every position once.

    Example:
        >>> [g.tolist() for g in length_groups(np.array([10, 50, 45, 12, 30]))]
        [[1, 2], [4], [3, 0]]
    """
    order = np.argsort(-counts, kind="stable")
    groups: list[np.ndarray] = []
    start = 0
    for i in range(1, len(order) + 1):
        if i == len(order) or counts[order[i]] < ratio * counts[order[start]]:
            groups.append(order[start:i])
            start = i
    return groups


def _embed(encoder: TextEncoder, side: Side, texts: list[str]) -> EmbedResult:
    """One merged model call: texts of similar length are encoded together (see
    :func:`length_groups`), rows come back in input order."""
    method = encoder.encode_queries if side == "query" else encoder.encode_documents
    counts = count_tokens(encoder, texts)
    if len(texts) < 2 or getattr(encoder, "count_tokens", None) is None:
        return np.asarray(method(texts), dtype=np.float32), counts
    groups = length_groups(counts)
    parts = [np.asarray(method([texts[i] for i in g]), dtype=np.float32) for g in groups]
    vectors = np.empty((len(texts), parts[0].shape[1]), dtype=np.float32)
    for group, part in zip(groups, parts, strict=True):
        vectors[group] = part
    return vectors, counts


def _not_served(kind: str, name: str, served: list[str], where: str) -> ApiError:
    listed = ", ".join(served) or "none"
    return ApiError(
        404,
        f"{kind} {name!r} is not served here; served {kind}s: {listed} ({where})",
        code="model_not_found",
        param="model",
    )


class ModelHub:
    """Encoders and rerankers named in the settings, loaded once, each on its own thread.

    Args:
        settings: What to serve.
        metrics: Where batch sizes and queue depths are reported.
        encoders: Already built encoders, served under these names (added to
            ``settings.models``; never loaded again).
        rerankers: Already built rerankers, likewise.
    """

    def __init__(
        self,
        settings: ServerSettings,
        metrics: Metrics,
        *,
        encoders: Mapping[str, TextEncoder] | None = None,
        rerankers: Mapping[str, Reranker] | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.model_sources = settings.model_sources()
        self.reranker_sources = settings.reranker_sources()
        self._encoders: dict[str, TextEncoder] = dict(encoders or {})
        self._rerankers: dict[str, Reranker] = dict(rerankers or {})
        for name in self._encoders:
            self.model_sources.setdefault(name, name)
        for name in self._rerankers:
            self.reranker_sources.setdefault(name, name)
        self._executors: dict[str, ThreadPoolExecutor] = {}
        self._load_locks: dict[str, threading.Lock] = {}
        self._batchers: dict[tuple[str, Side], MicroBatcher] = {}
        self._gates: dict[str, Gate] = {}
        self._lock = threading.Lock()
        self._token_limits: tuple[int, tuple[int, ...]] | None = None

    # -- threads ----------------------------------------------------------------------------
    def _executor(self, key: str) -> ThreadPoolExecutor:
        with self._lock:
            if key not in self._executors:
                prefix = f"model-{key}"[:40]
                self._executors[key] = ThreadPoolExecutor(1, thread_name_prefix=prefix)
            return self._executors[key]

    async def run(self, key: str, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on the model's worker thread and await the result."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor(key), functools.partial(fn, *args))

    def call(self, key: str, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on the model's worker thread and wait for it, from a worker
        thread (an index search running a pipeline); never from the event loop."""
        return self._executor(key).submit(fn, *args).result()

    def _load_sync(
        self, key: str, cache: dict[str, Any], name: str, loader: Callable[[], Any]
    ) -> Any:
        with self._lock:
            lock = self._load_locks.setdefault(key, threading.Lock())
        with lock:  # one load per model, whichever thread asks first
            if name not in cache:
                cache[name] = loader()
        return cache[name]

    async def _load(
        self, key: str, cache: dict[str, Any], name: str, loader: Callable[[], Any]
    ) -> Any:
        """Load ``name`` into ``cache`` on the worker thread ``key`` (once)."""
        if name in cache:
            return cache[name]
        return await self.run(key, self._load_sync, key, cache, name, loader)

    # -- encoders ---------------------------------------------------------------------------
    def _encoder_loader(self, name: str) -> Callable[[], TextEncoder]:
        if name not in self.model_sources:
            raise _not_served("model", name, list(self.model_sources), "GET /v1/models")
        return functools.partial(load_encoder, self.model_sources[name], show_progress=False)

    async def encoder(self, name: str) -> TextEncoder:
        """The encoder served as ``name``, loaded on first use.

        Raises:
            ApiError: 404 when ``name`` is not served.
        """
        if name in self._encoders:
            return self._encoders[name]
        loader = self._encoder_loader(name)
        encoder: TextEncoder = await self._load(f"enc:{name}", self._encoders, name, loader)
        return encoder

    def loaded_encoder(self, name: str) -> TextEncoder | None:
        """The encoder ``name`` if it is loaded already (never loads)."""
        return self._encoders.get(name)

    def token_limits(self) -> tuple[int, tuple[int, ...]] | bool | None:
        """What the served models accept as token ids, for the OpenAPI document: None
        while some model is not loaded yet or some has no tokenizer and another has one,
        False when none has a tokenizer (token ids are refused), else ``(vocabulary
        size, ids that decode to blank)`` — the smallest vocabulary and every model's
        blank ids, so what the document allows every model accepts."""
        encoders = [self._encoders.get(name) for name in self.model_sources]
        if not encoders or any(e is None for e in encoders):
            return None
        found = [tokenizer_of(e) for e in encoders if e is not None]
        tokenizers = [t for t in found if t is not None]
        if not tokenizers:
            return False
        if len(tokenizers) < len(found):
            return None
        if self._token_limits is None:
            sizes = [int(t.get_vocab_size(with_added_tokens=True)) for t in tokenizers]
            blank = sorted({i for t in tokenizers for i in blank_token_ids(t)})
            self._token_limits = (min(sizes), tuple(blank))
        return self._token_limits

    def loaded_encoders(self) -> list[TextEncoder]:
        """Every encoder loaded so far."""
        return list(self._encoders.values())

    def batcher(self, encoder: TextEncoder, name: str, side: Side) -> MicroBatcher:
        """The micro-batcher of model ``name`` for ``side``, created on first use."""
        key = (name, side)
        if key not in self._batchers:
            s = self.settings

            async def run(texts: list[str]) -> EmbedResult:
                return await self.run(f"enc:{name}", _embed, encoder, side, texts)

            def on_batch(n_texts: int, n_requests: int) -> None:
                self.metrics.batch(name, n_texts, n_requests)

            self._batchers[key] = MicroBatcher(
                f"{name}/{side}",
                run,
                max_texts=s.max_batch_texts,
                max_tokens=s.max_batch_tokens,
                max_wait_s=s.max_wait_ms / 1000,
                queue_size=s.queue_size,
                merge=s.micro_batching,
                on_batch=on_batch,
            )
            self.metrics.queue_gauge(
                name, lambda: sum(b.depth() for (m, _), b in self._batchers.items() if m == name)
            )
        return self._batchers[key]

    # -- rerankers --------------------------------------------------------------------------
    def _reranker_loader(self, name: str) -> Callable[[], Reranker]:
        if name not in self.reranker_sources:
            raise _not_served("reranker", name, list(self.reranker_sources), "GET /v1/models")
        factory = resolve_reranker(self.reranker_sources[name])

        def load() -> Reranker:
            reranker = factory()
            if not isinstance(reranker, Reranker):
                raise ModelNotFound(
                    f"reranker {name!r} loaded a {type(reranker).__name__}, which has no "
                    "`name` and `score(query, documents)`"
                )
            return reranker

        return load

    async def reranker(self, name: str) -> Reranker:
        """The reranker served as ``name``, built by its factory on first use.

        Raises:
            ApiError: 404 when ``name`` is not served.
            ModelNotFound: the reranker cannot be loaded.
        """
        if name in self._rerankers:
            return self._rerankers[name]
        loader = self._reranker_loader(name)
        reranker: Reranker = await self._load(f"rerank:{name}", self._rerankers, name, loader)
        return reranker

    async def rerank(self, name: str, reranker: Reranker, query: str, docs: list[str]) -> Any:
        """Scores of ``docs`` (``(n,)``), computed on the reranker's thread, at most
        ``queue_size`` requests waiting.

        Raises:
            Overloaded: too many requests are waiting for this reranker.
        """
        gate = self._gates.get(name)
        if gate is None:
            gate = self._gates[name] = Gate(f"reranker {name}", 1, self.settings.queue_size)
            self.metrics.queue_gauge(f"rerank:{name}", gate.depth)
        async with gate.slot():
            return await self.run(f"rerank:{name}", reranker.score, query, docs)

    # -- lifecycle --------------------------------------------------------------------------
    def load_all(self) -> None:
        """Load every served model now, on the calling thread (``embedstack serve``).

        Raises:
            ModelNotFound: a model or reranker cannot be found.
            EmbedstackError: any other loading error of the library.
        """
        for name in self.model_sources:
            self._load_sync(f"enc:{name}", self._encoders, name, self._encoder_loader(name))
        for name in self.reranker_sources:
            loader = self._reranker_loader(name)
            self._load_sync(f"rerank:{name}", self._rerankers, name, loader)

    async def preload(self) -> None:
        """Load every served model now, on the models' threads (``ServerSettings.preload``)."""
        for name in self.model_sources:
            await self.encoder(name)
        for name in self.reranker_sources:
            await self.reranker(name)

    async def aclose(self) -> None:
        """Stop the batchers and the worker threads."""
        for batcher in self._batchers.values():
            await batcher.aclose()
        self._batchers.clear()
        with self._lock:
            executors = list(self._executors.values())
            self._executors.clear()
        for executor in executors:
            executor.shutdown(wait=False, cancel_futures=True)
