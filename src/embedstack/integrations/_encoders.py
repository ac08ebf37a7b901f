"""The encoder behind an adapter: a registry name, a model folder or a TextEncoder."""

from __future__ import annotations

import os
from typing import Any

from embedstack.encoders import TextEncoder, load_encoder
from embedstack.errors import InvalidInput

__all__ = ["resolve_encoder"]


def resolve_encoder(model: str | os.PathLike[str] | TextEncoder,
                    options: dict[str, Any] | None = None) -> TextEncoder:  # fmt: skip
    """A TextEncoder from a registry name, folder or encoder object.

    Raises:
        InvalidInput: ``model`` is neither a name, a path nor a TextEncoder, or ``options``
            come with an encoder object.
        ModelNotFound: an unknown name.
    """
    if isinstance(model, str | os.PathLike):
        return load_encoder(os.fspath(model), **(options or {}))
    if isinstance(model, TextEncoder):
        if options:
            raise InvalidInput("encoder_options apply to a model name, not to an encoder object")
        return model
    raise InvalidInput(f"model must be a model name or a TextEncoder, got {type(model).__name__}")
