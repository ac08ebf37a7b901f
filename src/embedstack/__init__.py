"""embedstack: the whole text-embedding retrieval stack in one install.

Embed → unit-normalize → dot-product, and everything around it that production retrieval
needs. ``import embedstack`` is light: it loads only the standard library and
:mod:`embedstack.errors`. Every other name below is imported on first access (PEP 562), so
``embedstack.Index`` works without paying for numpy, ONNX Runtime, torch, faiss or FastAPI
until the code that needs them runs; models load when first asked for.

Public names:

- models: :class:`Encoder`, :class:`SparseEncoder`, :class:`LateInteractionEncoder`,
  :class:`HashEncoder`, :class:`TextEncoder`, :func:`load_encoder`, the registry
  (:class:`ModelSpec`, :func:`list_models`, :func:`get_model`, :func:`register_model`,
  :func:`unregister_model`, ``DEFAULT_MODEL``);
- reranking: :class:`CrossEncoder`, :func:`load_reranker`;
- storage and search: :class:`Index`, :class:`Hit`, :class:`SearchOptions`, :class:`Pipeline`;
- modules: :mod:`embedstack.vectors`, :mod:`embedstack.fusion`, :mod:`embedstack.eval`;
- every error of :mod:`embedstack.errors`.

``embedstack.eval`` is an attribute but not in ``__all__``: ``from embedstack import *``
would otherwise replace the builtin :func:`eval` with the subpackage.

Example:
    >>> import embedstack
    >>> encoder = embedstack.Encoder()  # doctest: +SKIP
    >>> encoder.encode_queries(["what is a cat?"]).shape  # doctest: +SKIP
    (1, 384)
"""

# No `from __future__ import annotations` and only underscored helpers: every public name of
# this module is an export (tests/test_public_api.py checks that against __all__).
import importlib as _importlib
import logging as _logging
import typing as _t

# Errors are eager: catching one must never trigger an import, and errors.py needs only the
# standard library.
from embedstack.errors import (
    DimensionMismatch,
    EmbedstackError,
    IndexCorrupt,
    IndexLocked,
    IndexNotFound,
    InvalidInput,
    MissingDependency,
    ModelMismatch,
    ModelNotFound,
)

if _t.TYPE_CHECKING:  # what mypy and IDEs see; at run time __getattr__ imports these on demand
    from embedstack import eval as eval  # an attribute, not in __all__ (module docstring)
    from embedstack import fusion, vectors
    from embedstack.encoders import (
        DEFAULT_MODEL,
        Encoder,
        HashEncoder,
        LateInteractionEncoder,
        ModelSpec,
        SparseEncoder,
        TextEncoder,
        get_model,
        list_models,
        load_encoder,
        register_model,
        unregister_model,
    )
    from embedstack.index import Hit, Index
    from embedstack.index.protocols import SearchOptions
    from embedstack.pipeline import Pipeline
    from embedstack.rerank import CrossEncoder, load_reranker

    __version__: str

__all__ = [
    "DEFAULT_MODEL",
    "CrossEncoder",
    "DimensionMismatch",
    "EmbedstackError",
    "Encoder",
    "HashEncoder",
    "Hit",
    "Index",
    "IndexCorrupt",
    "IndexLocked",
    "IndexNotFound",
    "InvalidInput",
    "LateInteractionEncoder",
    "MissingDependency",
    "ModelMismatch",
    "ModelNotFound",
    "ModelSpec",
    "Pipeline",
    "SearchOptions",
    "SparseEncoder",
    "TextEncoder",
    "__version__",
    "fusion",
    "get_model",
    "list_models",
    "load_encoder",
    "load_reranker",
    "register_model",
    "unregister_model",
    "vectors",
]

# Each lazily exported name → the module that defines it publicly.
_LAZY: dict[str, str] = {
    "DEFAULT_MODEL": "embedstack.encoders",
    "Encoder": "embedstack.encoders",
    "HashEncoder": "embedstack.encoders",
    "LateInteractionEncoder": "embedstack.encoders",
    "ModelSpec": "embedstack.encoders",
    "SparseEncoder": "embedstack.encoders",
    "TextEncoder": "embedstack.encoders",
    "get_model": "embedstack.encoders",
    "list_models": "embedstack.encoders",
    "load_encoder": "embedstack.encoders",
    "register_model": "embedstack.encoders",
    "unregister_model": "embedstack.encoders",
    "CrossEncoder": "embedstack.rerank",
    "load_reranker": "embedstack.rerank",
    "Hit": "embedstack.index",
    "Index": "embedstack.index",
    "SearchOptions": "embedstack.index.protocols",
    "Pipeline": "embedstack.pipeline",
}
_SUBMODULES = frozenset({"eval", "fusion", "vectors"})


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("embedstack")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "0+unknown"


def __getattr__(name: str) -> object:
    """Import a public name on first access (PEP 562) and keep it as a module global."""
    value: object
    if name in _SUBMODULES:
        value = _importlib.import_module(f"{__name__}.{name}")
    elif name in _LAZY:
        value = getattr(_importlib.import_module(_LAZY[name]), name)
    elif name == "__version__":
        value = _version()
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__) | _SUBMODULES)


_logging.getLogger("embedstack").addHandler(_logging.NullHandler())
