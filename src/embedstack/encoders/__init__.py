"""Encoders: dense bi-encoders, the model registry and inference backends."""

from __future__ import annotations

import os
from typing import Any

from embedstack.encoders.base import TextEncoder
from embedstack.encoders.dense import Encoder
from embedstack.encoders.hashing import HashEncoder
from embedstack.encoders.registry import (
    DEFAULT_MODEL,
    ModelSpec,
    find_model,
    get_model,
    list_models,
    register_model,
    unregister_model,
)

__all__ = [
    "DEFAULT_MODEL",
    "Encoder",
    "HashEncoder",
    "ModelSpec",
    "TextEncoder",
    "get_model",
    "list_models",
    "load_encoder",
    "register_model",
    "unregister_model",
]


def load_encoder(model: str | os.PathLike[str] = DEFAULT_MODEL, **options: Any) -> TextEncoder:
    """Build the encoder for a registry name, Hugging Face id or folder.

    Registry entries with a ``factory`` (such as hashing encoders) are built by it; everything
    else becomes an :class:`Encoder` with ``options``.
    """
    spec = find_model(os.fspath(model))
    if spec is not None and spec.factory is not None:
        encoder: TextEncoder = spec.factory(spec, **options)
        return encoder
    return Encoder(model, **options)
