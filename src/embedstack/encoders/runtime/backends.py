"""The one backend registry: run a :class:`~embedstack.encoders.runtime.export.Head`'s graphs
on numpy batches.

A runner maps ``{input name: (batch, seq) int64}`` (or, for a split cross-encoder's upper
graph, states) to the graph's float32 output; pooling and heads that are plain numpy
(normalization, a ColBERT projection) stay with the encoder. ``onnx`` (ONNX Runtime over the
cached export, the fast default) and ``torch`` (transformers, the reference the exports are
tested against) are built in; :func:`register_backend` adds others.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from embedstack._typing import FloatArray
from embedstack.encoders.runtime.cache import ensure_export
from embedstack.encoders.runtime.export import Head, has_torch_weights, load_torch, probe_inputs
from embedstack.encoders.runtime.identity import ModelId
from embedstack.errors import EmbedstackError, InvalidInput

__all__ = [
    "UNPADDED_MIN_TOKENS",
    "UNPADDED_MIN_WIDTH",
    "Runner",
    "RuntimeOptions",
    "avoid_ort_spinning",
    "list_backends",
    "make_runner",
    "ort_session",
    "ort_spinning",
    "register_backend",
    "resolve_threads",
]

Batch = dict[str, np.ndarray]

UNPADDED_MIN_WIDTH = 64
"""Narrowest unpadded batch the int8 encoder sends to its flash-attention graph."""
UNPADDED_MIN_TOKENS = 1024
"""Fewest tokens (rows x width) in an unpadded batch sent to the flash-attention graph."""


@dataclass(frozen=True)
class RuntimeOptions:
    """What every backend receives.

    Attributes:
        path: Folder with the Hugging Face weights.
        id: The weights' identity (names the cache entry).
        cache_dir: Root of embedstack's cache.
        quantize: ``None`` or ``"int8"`` (dynamic int8 weights, ONNX only).
        threads: Intra-op threads; None uses the number of CPUs available to the process.
        trust_remote_code: Allow custom modelling code (torch/transformers).
    """

    path: Path
    id: ModelId
    cache_dir: Path
    quantize: str | None = None
    threads: int | None = None
    trust_remote_code: bool = False


class Runner(Protocol):
    """What a backend provides: the head's graphs as numpy functions."""

    input_names: tuple[str, ...]

    def __call__(self, batch: Batch) -> FloatArray:
        """The first graph over a padded batch."""
        ...

    def run(self, stem: str, feed: Batch) -> FloatArray:
        """The graph called ``stem``."""
        ...


def ort_spinning() -> bool:
    """Whether ONNX Runtime's intra-op threads spin between runs (``EMBEDSTACK_ORT_SPINNING``,
    default on).

    Spinning shaves latency off back-to-back runs of one model (bulk encoding) but burns CPU
    while waiting. Where several sessions take turns on the same cores (a pipeline encoding
    the query and then running a cross-encoder, or a server beside its event loop), the
    threads of the model that just ran spin while the next model needs those cores; see
    :func:`avoid_ort_spinning`.
    """
    return os.environ.get("EMBEDSTACK_ORT_SPINNING", "1").strip().lower() not in (
        "0", "false", "no", "off",
    )  # fmt: skip


def avoid_ort_spinning() -> None:
    """Turn spinning off for the sessions created from now on, unless
    ``EMBEDSTACK_ORT_SPINNING`` already says otherwise.

    ``embedstack serve`` and the CLI's pipeline search/eval call it before loading models. On
    2 cores, the SciFact three-stage pipeline (MiniLM query encoding, then an int8 MiniLM
    cross-encoder on 20 pairs) went from p50 252 / p99 337 ms to 229 / 309 ms, and its query
    encoding from 11 / 26 ms to 9 / 14 ms (``benchmarks/pipeline_latency.py``, the runs in
    docs/benchmarks.md).
    """
    os.environ.setdefault("EMBEDSTACK_ORT_SPINNING", "0")


def resolve_threads(requested: int | None) -> int:
    """``requested`` (at least 1), or the CPUs available to the process when None.

    Raises:
        InvalidInput: ``requested`` below 1.
    """
    if requested is not None:
        if requested < 1:
            raise InvalidInput(f"threads must be >= 1, got {requested}")
        return requested
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


def ort_session(path: Path, threads: int | None) -> Any:
    """An ONNX Runtime CPU session with embedstack's settings: ``threads`` intra-op threads
    (None: the CPUs available), one inter-op thread, quiet logs, spinning per
    :func:`ort_spinning`. Every ONNX graph embedstack runs opens its session here."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = resolve_threads(threads)
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    if not ort_spinning():
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class OnnxRunner:
    """ONNX Runtime sessions over the cached export of a head's graphs.

    With ``quantize="int8"`` and a head that allows it, long batches without padding (every
    row as long as the longest: the full-length chunks that dominate bulk encoding of long
    documents) run through a second graph whose attention has no padding mask, which ONNX
    Runtime executes with its CPU flash attention kernel; its session opens on the first
    such batch. Measured with all-MiniLM-L6-v2 on 2 cores (``benchmarks/onnx_profile.py
    --unpadded-sweep``, see docs/benchmarks.md): 1.03-1.09x faster for batches of 4,096
    tokens at widths 64-256, no faster at narrower widths (0.995-1.006x) and slower for
    single texts (0.84-0.99x), hence :data:`UNPADDED_MIN_WIDTH` and
    :data:`UNPADDED_MIN_TOKENS`. fp32 gained nothing (0.95-1.05x), so it keeps one session.
    """

    def __init__(self, head: Head, options: RuntimeOptions) -> None:
        int8 = options.quantize == "int8"
        first = head.graphs[0].stem
        shipped = options.path / head.shipped if head.shipped else None
        if shipped is not None and shipped.is_file() and not int8 and len(head.graphs) == 1:
            files: dict[str, Path] | None = {first: shipped}
        else:
            files = self._ensure(head, options, "int8" if int8 else "fp32")
        if files is None:  # pragma: no cover - fp32 and int8 always exist
            raise EmbedstackError(f"no ONNX export of {options.id}")
        self.paths = files
        self.path: Path = files[first]
        self.unpadded_path: Path | None = None
        if int8 and head.unpadded:
            unpadded = self._ensure(head, options, "int8-unpadded")
            self.unpadded_path = unpadded[first] if unpadded else None
        self._threads = options.threads
        self.sessions = {stem: ort_session(file, options.threads) for stem, file in files.items()}
        self.session = self.sessions[first]
        self.input_names = tuple(i.name for i in self.session.get_inputs())
        self._first = first
        self._unpadded: tuple[Any, tuple[str, ...]] | None = None

    @staticmethod
    def _ensure(head: Head, options: RuntimeOptions, variant: Any) -> dict[str, Path] | None:
        return ensure_export(head, options.path, options.id, options.cache_dir, variant,
                             trust_remote_code=options.trust_remote_code)  # fmt: skip

    def _session_for(self, batch: Batch) -> tuple[Any, tuple[str, ...]]:
        mask = batch["attention_mask"]
        rows, width = mask.shape
        if (
            self.unpadded_path is None
            or width < UNPADDED_MIN_WIDTH
            or rows * width < UNPADDED_MIN_TOKENS
            or not mask.all()
        ):
            return self.session, self.input_names
        if self._unpadded is None:
            session = ort_session(self.unpadded_path, self._threads)
            self._unpadded = session, tuple(i.name for i in session.get_inputs())
        return self._unpadded

    def __call__(self, batch: Batch) -> FloatArray:
        session, names = self._session_for(batch)
        output = session.run(None, {name: batch[name] for name in names})[0]
        return np.asarray(output, dtype=np.float32)

    def run(self, stem: str, feed: Batch) -> FloatArray:
        if stem == self._first:
            return self(feed)
        session = self.sessions[stem]
        names = [i.name for i in session.get_inputs()]
        return np.asarray(session.run(None, {n: feed[n] for n in names})[0], dtype=np.float32)


class TorchRunner:
    """transformers in eval mode running the head's forward functions: the reference."""

    def __init__(self, head: Head, options: RuntimeOptions) -> None:
        if options.quantize is not None:
            raise InvalidInput("quantize='int8' needs backend='onnx'")
        if head.shipped and not has_torch_weights(options.path):
            raise InvalidInput(
                f"{options.id.name} ships only an ONNX graph ({head.shipped}), no weights for "
                "torch: use backend='onnx'"
            )
        self.threads = resolve_threads(options.threads)
        self.model = load_torch(head, options.path, trust=options.trust_remote_code)
        import torch

        self._torch = torch
        self.head = head
        self.input_names = probe_inputs(self.model)

    def __call__(self, batch: Batch) -> FloatArray:
        return self.run(self.head.graphs[0].stem, batch)

    def run(self, stem: str, feed: Batch) -> FloatArray:
        torch, graph = self._torch, self.head.graph(stem)
        forward = graph.forward
        if stem == self.head.graphs[0].stem and self.head.reference is not None:
            forward = self.head.reference
        previous = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            with torch.inference_mode():
                tensors = {n: torch.from_numpy(feed[n]) for n in graph.inputs or self.input_names}
                out = forward(self.model, tensors)
            return np.ascontiguousarray(out.float().numpy(), dtype=np.float32)
        finally:
            torch.set_num_threads(previous)


Factory = Callable[[Head, RuntimeOptions], Runner]
_BACKENDS: dict[str, Factory] = {"onnx": OnnxRunner, "torch": TorchRunner}


def register_backend(name: str, factory: Factory) -> None:
    """Make ``backend=name`` build its runner with ``factory(head, options)`` (every
    encoder kind: dense, SPLADE, ColBERT, cross-encoder, split cross-encoder)."""
    _BACKENDS[name] = factory


def list_backends() -> list[str]:
    """Names of the available backends."""
    return sorted(_BACKENDS)


def make_runner(name: str, head: Head, options: RuntimeOptions) -> Runner:
    """Build a backend by name.

    Raises:
        InvalidInput: unknown backend name (the message lists the known ones).
        MissingDependency: the torch backend or an export needs the ``torch`` extra.
    """
    if name not in _BACKENDS:
        raise InvalidInput(f"unknown backend {name!r}; choose one of {list_backends()}")
    return _BACKENDS[name](head, options)
