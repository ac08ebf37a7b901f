"""Inference backends: the model runtime's one registry, under its historical import path.

The CLI and server import :func:`avoid_ort_spinning` from here; the implementation lives in
:mod:`embedstack.encoders.runtime.backends`.
"""

from __future__ import annotations

from embedstack.encoders.runtime.backends import (
    UNPADDED_MIN_TOKENS,
    UNPADDED_MIN_WIDTH,
    Runner,
    RuntimeOptions,
    avoid_ort_spinning,
    list_backends,
    make_runner,
    ort_session,
    ort_spinning,
    register_backend,
)

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
]
