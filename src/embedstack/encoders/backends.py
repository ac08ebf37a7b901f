"""Inference backends, under their historical import path.

The one backend registry (``onnx`` / ``torch``, :func:`register_backend`) and the ONNX
Runtime session settings live in :mod:`embedstack.encoders.runtime.backends`; the CLI and
server import :func:`avoid_ort_spinning` from here.
"""

from __future__ import annotations

from embedstack.encoders.runtime.backends import avoid_ort_spinning, list_backends, register_backend

__all__ = ["avoid_ort_spinning", "list_backends", "register_backend"]
