"""The ColBERT encoder of an :class:`~embedstack.index.Index`: checking ``Index.create``'s
``colbert=`` arguments, the manifest's ``colbert`` record, and loading (and checking) the
recorded model when an index is opened or first scores. The stored token vectors are
:mod:`embedstack.index.late`'s.
"""

from __future__ import annotations

import inspect
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from embedstack.encoders.multivector import TOKEN_PRECISIONS, TokenVectors
from embedstack.errors import InvalidInput, ModelMismatch

__all__ = [
    "DEFAULT_PRECISION",
    "DOC_SETTINGS",
    "LateEncoder",
    "check_encoder",
    "manifest_entry",
    "no_store",
    "open_encoder",
    "prepare",
    "resolve_encoder",
]

DEFAULT_PRECISION = "float16"
DOC_SETTINGS = ("doc_maxlen", "markers", "mask_punctuation")  # shape the stored vectors
_OBJECT_OPTIONS = ("query_maxlen", "query_augmentation", *DOC_SETTINGS)


@runtime_checkable
class LateEncoder(Protocol):
    """What an index needs from a ColBERT encoder (a
    :class:`~embedstack.encoders.colbert.LateInteractionEncoder` is one)."""

    @property
    def name(self) -> str: ...

    @property
    def model_id(self) -> str: ...

    @property
    def dim(self) -> int: ...

    def encode_queries(self, texts: Sequence[str]) -> TokenVectors: ...

    def encode_documents(self, texts: Sequence[str]) -> TokenVectors: ...


def _split_folder(name: str | os.PathLike[str]) -> bool:
    """Whether ``name`` is a local split cross-encoder folder (PreTTR: its stored "token
    vectors" are the documents' states at the split layer)."""
    folder = Path(name)
    if not (folder / "config.json").is_file():
        return False
    from embedstack.rerank.split_encoder import is_split

    return is_split(folder)


def _option_names(split: bool = False) -> set[str]:
    from embedstack.encoders.colbert import LateInteractionEncoder
    from embedstack.rerank.split_encoder import SplitCrossEncoder

    init = (SplitCrossEncoder if split else LateInteractionEncoder).__init__
    params = inspect.signature(init).parameters
    return {name for name in params if name not in ("self", "name_or_path", "model")}


def resolve_encoder(colbert: object, options: dict[str, Any] | None) -> LateEncoder:
    """A ColBERT encoder from a registry name / folder (built with ``options``) or as given.

    A split cross-encoder folder (:mod:`embedstack.rerank.split`) gives a
    :class:`~embedstack.rerank.SplitCrossEncoder`: the index then stores the documents'
    states at its split layer, and scoring runs its layers above the split.

    Raises:
        InvalidInput: not a name, folder or ColBERT encoder; options that
            :class:`~embedstack.encoders.colbert.LateInteractionEncoder` does not take, or
            options with an encoder object.
    """
    if isinstance(colbert, str | os.PathLike):
        if not os.fspath(colbert).strip():
            raise InvalidInput("colbert must name a ColBERT model or folder, got ''")
        split = _split_folder(colbert)
        unknown = sorted(set(options or {}) - _option_names(split))
        if unknown:
            kind = "SplitCrossEncoder" if split else "LateInteractionEncoder"
            raise InvalidInput(
                f"colbert_options: unknown option(s) {unknown}; {kind} takes "
                f"{sorted(_option_names(split))}"
            )
        if split:
            from embedstack.rerank.split_encoder import SplitCrossEncoder

            return SplitCrossEncoder(os.fspath(colbert), **(options or {}))
        from embedstack.encoders.colbert import LateInteractionEncoder

        return LateInteractionEncoder(os.fspath(colbert), **(options or {}))
    if isinstance(colbert, LateEncoder):
        if options:
            raise InvalidInput(
                "colbert_options apply only when colbert is a model name or folder; give the "
                "options to the LateInteractionEncoder instead"
            )
        return colbert
    raise InvalidInput(
        "colbert must be a model name, a folder or a LateInteractionEncoder, got "
        f"{type(colbert).__name__}"
    )


def _doc_settings(encoder: LateEncoder) -> dict[str, Any]:
    return {key: getattr(encoder, key, None) for key in DOC_SETTINGS}


def prepare(
    colbert: object, options: dict[str, Any] | None, precision: object
) -> tuple[LateEncoder | None, dict[str, Any] | None]:
    """Check ``Index.create``'s ColBERT arguments; the encoder and manifest record, or
    ``(None, None)`` without ``colbert``.

    Raises:
        InvalidInput: an unknown precision, options or precision without ``colbert``,
            options that are not a JSON-serialisable dict, or a bad ``colbert``.
    """
    if not isinstance(precision, str) or precision not in TOKEN_PRECISIONS:
        raise InvalidInput(
            f"unknown colbert_precision {precision!r}; choose one of {TOKEN_PRECISIONS}"
        )
    if colbert is None:
        if options is not None:
            raise InvalidInput("colbert_options given without colbert=: name the ColBERT model")
        if precision != DEFAULT_PRECISION:
            raise InvalidInput(
                "colbert_precision given without colbert=: name the ColBERT model whose token "
                "vectors to store"
            )
        return None, None
    if options is not None:
        if not isinstance(options, dict):
            raise InvalidInput(f"colbert_options must be a dict, got {type(options).__name__}")
        try:
            json.dumps(options)
        except (TypeError, ValueError) as exc:
            raise InvalidInput(f"colbert_options must be JSON-serialisable: {exc}") from exc
    encoder = resolve_encoder(colbert, options)
    if not options and not isinstance(colbert, str | os.PathLike):
        # an encoder object: record its settings, so that opening by name rebuilds it
        if hasattr(encoder, "score_states"):  # a split cross-encoder: what shapes its states
            options = {
                "max_length": getattr(encoder, "max_length", None),
                "quantize": getattr(encoder, "quantize", None),
            }
        else:
            options = {
                key: getattr(encoder, key) for key in _OBJECT_OPTIONS if hasattr(encoder, key)
            }
        backend = getattr(encoder, "backend_name", None)
        if isinstance(backend, str):
            options["backend"] = backend
    return encoder, manifest_entry(encoder, options, precision)


def manifest_entry(
    encoder: LateEncoder, options: dict[str, Any] | None, precision: str
) -> dict[str, Any]:
    """The manifest's ``colbert`` record: the model, its options, the stored precision and
    the document-side settings that shape the stored vectors."""
    return {
        "name": encoder.name,
        "model_id": encoder.model_id,
        "dim": int(encoder.dim),
        "precision": precision,
        "options": dict(options or {}),
        **_doc_settings(encoder),
    }


def check_encoder(encoder: LateEncoder, record: dict[str, Any], path: Path) -> None:
    """Raise :class:`ModelMismatch` unless ``encoder`` produced the stored token vectors."""
    if encoder.model_id != record["model_id"] or int(encoder.dim) != int(record["dim"]):
        raise ModelMismatch(
            f"{path} holds {record['dim']}-d ColBERT vectors from {record['model_id']}, not "
            f"{encoder.model_id} ({encoder.dim}-d): open it with the same ColBERT model, or "
            "without colbert= to load the recorded one"
        )
    want = {key: record.get(key) for key in DOC_SETTINGS}
    if _doc_settings(encoder) != want:
        raise ModelMismatch(
            f"{path} holds ColBERT vectors encoded with {want}; the encoder uses "
            f"{_doc_settings(encoder)}: open it with the recorded document settings"
        )


def open_encoder(colbert: object, meta: dict[str, Any], path: Path) -> LateEncoder | None:
    """``Index.open``'s ``colbert`` argument, checked against the manifest (None: load the
    recorded model when first needed).

    Raises:
        InvalidInput: ``colbert`` given for an index that stores no ColBERT vectors.
        ModelMismatch: another model or other document settings than the recorded ones.
    """
    if colbert is None:
        return None
    record = meta.get("colbert")
    if not record:
        raise InvalidInput(f"{path} stores no ColBERT vectors: open it without colbert=")
    named = isinstance(colbert, str | os.PathLike)
    encoder = resolve_encoder(colbert, record.get("options") if named else None)
    check_encoder(encoder, record, path)
    return encoder


def no_store(path: Path) -> InvalidInput:
    return InvalidInput(
        f"{path} stores no ColBERT vectors: create the index with "
        "Index.create(..., colbert='NAME_OR_DIR') (CLI: index create --colbert) to score "
        "with stored token vectors"
    )
