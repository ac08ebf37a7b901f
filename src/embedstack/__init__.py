"""embedstack: the whole text-embedding retrieval stack in one install.

Embed → unit-normalize → dot-product, and everything around it that production retrieval
needs. The import is light (numpy only); models load when first asked for.

Example:
    >>> import embedstack
    >>> encoder = embedstack.Encoder()  # all-MiniLM-L6-v2, ONNX Runtime, offline
    >>> encoder.encode_queries(["what is a cat?"]).shape
    (1, 384)
"""

from __future__ import annotations

import logging

from embedstack import vectors
from embedstack.encoders import (
    DEFAULT_MODEL,
    Encoder,
    HashEncoder,
    ModelSpec,
    TextEncoder,
    get_model,
    list_models,
    load_encoder,
    register_model,
    unregister_model,
)
from embedstack.errors import (
    DimensionMismatch,
    EmbedstackError,
    IndexCorrupt,
    IndexLocked,
    InvalidInput,
    MissingDependency,
    ModelMismatch,
    ModelNotFound,
)

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_MODEL",
    "DimensionMismatch",
    "EmbedstackError",
    "Encoder",
    "HashEncoder",
    "IndexCorrupt",
    "IndexLocked",
    "InvalidInput",
    "MissingDependency",
    "ModelMismatch",
    "ModelNotFound",
    "ModelSpec",
    "TextEncoder",
    "__version__",
    "get_model",
    "list_models",
    "load_encoder",
    "register_model",
    "unregister_model",
    "vectors",
]

logging.getLogger("embedstack").addHandler(logging.NullHandler())
