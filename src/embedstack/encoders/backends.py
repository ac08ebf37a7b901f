"""Inference backends: run a transformer over token ids and return token vectors.

A backend maps a padded batch ``{"input_ids", "attention_mask"[, "token_type_ids"]}`` of
``(batch, seq) int64`` arrays to ``(batch, seq, hidden) float32`` token vectors; pooling and
normalization happen in numpy in :mod:`embedstack.encoders.dense`, identically for every
backend. ``onnx`` (ONNX Runtime, the fast default) and ``torch`` (the reference) are built in;
:func:`register_backend` adds others.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from embedstack._typing import FloatArray
from embedstack.errors import InvalidInput, require

__all__ = [
    "BackendOptions",
    "TokenModel",
    "list_backends",
    "make_backend",
    "register_backend",
]

Batch = dict[str, np.ndarray]

UNPADDED_MIN_WIDTH = 64
"""Narrowest unpadded batch the int8 encoder sends to its flash-attention graph."""
UNPADDED_MIN_TOKENS = 1024
"""Fewest tokens (rows x width) in an unpadded batch sent to the flash-attention graph."""


class TokenModel(Protocol):
    """What a backend provides: token vectors for a padded batch."""

    input_names: tuple[str, ...]

    def __call__(self, batch: Batch) -> FloatArray: ...


@dataclass(frozen=True)
class BackendOptions:
    """Options every backend receives.

    Attributes:
        transformer_path: Folder with the Hugging Face transformer weights.
        name: Model name (for cache folder names and messages).
        weights: SHA-256 of the weights.
        cache_dir: Root of embedstack's cache.
        quantize: ``None`` or ``"int8"`` (dynamic int8 weights, ONNX only).
        threads: Intra-op threads; None uses the number of CPUs available to the process.
        trust_remote_code: Allow custom modelling code (torch/transformers).
    """

    transformer_path: Path
    name: str
    weights: str
    cache_dir: Path
    quantize: str | None = None
    threads: int | None = None
    trust_remote_code: bool = False


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


def ort_session(path: Path, threads: int | None) -> Any:
    """An ONNX Runtime CPU session with embedstack's settings: ``threads`` intra-op threads
    (None: the CPUs available), one inter-op thread, quiet logs, spinning per
    :func:`ort_spinning`. Every ONNX model embedstack runs (dense, SPLADE, cross-encoder)
    opens its session here."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = _threads(threads)
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    if not ort_spinning():
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _threads(requested: int | None) -> int:
    if requested is not None:
        if requested < 1:
            raise InvalidInput(f"threads must be >= 1, got {requested}")
        return requested
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


class OnnxModel:
    """ONNX Runtime session over the cached, fused export of a model.

    With ``quantize="int8"``, long batches without padding (every row as long as the
    longest: the full-length chunks that dominate bulk encoding of long documents) run through
    a second graph whose attention has no padding mask, which ONNX Runtime executes with its
    CPU flash attention kernel; its session opens on the first such batch. Measured with
    all-MiniLM-L6-v2 on 2 cores (``benchmarks/onnx_profile.py --unpadded-sweep``, see
    docs/benchmarks.md): 1.03-1.09x faster for batches of 4,096 tokens at widths 64-256, no
    faster at narrower widths (0.995-1.006x) and slower for single texts (0.84-0.99x), hence
    :data:`UNPADDED_MIN_WIDTH` and :data:`UNPADDED_MIN_TOKENS`. fp32 gained nothing
    (0.95-1.05x, most within 2% of 1), so it keeps one session. Models whose attention does
    not fuse have no such graph.
    """

    def __init__(self, options: BackendOptions) -> None:

        from embedstack.encoders.onnx_export import ensure_onnx

        int8 = options.quantize == "int8"
        path, name, weights = options.transformer_path, options.name, options.weights
        cache, trust = options.cache_dir, options.trust_remote_code
        self.path: Path = ensure_onnx(
            path, name=name, weights=weights, cache_root=cache, trust_remote_code=trust,
            variant="int8" if int8 else "fp32",
        )  # fmt: skip
        self.unpadded_path: Path | None = None
        if int8:
            self.unpadded_path = ensure_onnx(
                path, name=name, weights=weights, cache_root=cache, trust_remote_code=trust,
                variant="int8-unpadded",
            )  # fmt: skip
        self._threads = options.threads
        self.session = ort_session(self.path, options.threads)
        self.input_names = tuple(i.name for i in self.session.get_inputs())
        self._unpadded: tuple[Any, tuple[str, ...]] | None = None

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


class TorchModel:
    """transformers ``AutoModel`` in eval mode: the reference implementation."""

    def __init__(self, options: BackendOptions) -> None:
        if options.quantize is not None:
            raise InvalidInput("quantize='int8' needs backend='onnx'")
        torch = require("torch", "torch", "the torch backend")
        transformers = require("transformers", "torch", "the torch backend")
        import inspect

        self._torch = torch
        self.threads = _threads(options.threads)
        self.model = transformers.AutoModel.from_pretrained(
            options.transformer_path, trust_remote_code=options.trust_remote_code
        ).eval()
        accepts = inspect.signature(self.model.forward).parameters
        names = ["input_ids", "attention_mask"]
        if "token_type_ids" in accepts and int(
            getattr(self.model.config, "type_vocab_size", 0) or 0
        ):
            names.append("token_type_ids")
        self.input_names = tuple(names)

    def __call__(self, batch: Batch) -> FloatArray:
        torch = self._torch
        previous = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            with torch.inference_mode():
                feed = {n: torch.from_numpy(batch[n]) for n in self.input_names}
                hidden = self.model(**feed).last_hidden_state
            return np.asarray(hidden.float().numpy(), dtype=np.float32)
        finally:
            torch.set_num_threads(previous)


_BACKENDS: dict[str, Callable[[BackendOptions], Any]] = {"onnx": OnnxModel, "torch": TorchModel}


def register_backend(name: str, factory: Callable[[BackendOptions], TokenModel]) -> None:
    """Make ``Encoder(..., backend=name)`` build its model with ``factory(options)``."""
    _BACKENDS[name] = factory


def list_backends() -> list[str]:
    """Names of the available backends."""
    return sorted(_BACKENDS)


def make_backend(name: str, options: BackendOptions) -> TokenModel:
    """Build a backend by name.

    Raises:
        InvalidInput: unknown backend name (the message lists the known ones).
    """
    if name not in _BACKENDS:
        raise InvalidInput(f"unknown backend {name!r}; choose one of {list_backends()}")
    model: TokenModel = _BACKENDS[name](options)
    return model
