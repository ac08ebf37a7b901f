"""Model identity: which weights produced a vector, as one frozen value.

Indexes, ColBERT stores and pipelines record the model that produced their vectors as
``name@hash16``: the name the model was loaded by and the first 16 hex digits of the SHA-256
of its weights (:func:`~embedstack.encoders.runtime.folder.weights_hash`). :class:`ModelId`
builds that string and parses it back, so no caller splits on ``@`` itself.

Example:
    >>> ident = ModelId("all-MiniLM-L6-v2", "0123456789abcdef" * 4)
    >>> str(ident)
    'all-MiniLM-L6-v2@0123456789abcdef'
    >>> ModelId.parse(str(ident)).same_weights(ident)
    True
"""

from __future__ import annotations

from dataclasses import dataclass

from embedstack.errors import InvalidInput

__all__ = ["HASH_DIGITS", "Identified", "ModelId"]

HASH_DIGITS = 16
"""Hex digits of the weights hash kept in the recorded identity."""


@dataclass(frozen=True)
class ModelId:
    """The identity of loaded weights.

    Attributes:
        name: Registry name, Hugging Face id or folder the model was loaded by.
        weights_hash: SHA-256 (hex) of the weights, or its recorded prefix after
            :meth:`parse`; weight-free encoders use a version tag (``"hash-v1"``).

    Raises:
        InvalidInput: an empty name or hash.
    """

    name: str
    weights_hash: str

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise InvalidInput(f"a model id needs a name, got {self.name!r}")
        digest = self.weights_hash
        if not isinstance(digest, str) or not digest or "@" in digest:
            raise InvalidInput(f"a model id needs a weights hash, got {self.weights_hash!r}")

    @property
    def short_hash(self) -> str:
        """The part of the hash that is recorded (first :data:`HASH_DIGITS` characters)."""
        return self.weights_hash[:HASH_DIGITS]

    def __str__(self) -> str:
        return f"{self.name}@{self.short_hash}"

    @classmethod
    def parse(cls, text: str) -> ModelId:
        """The identity a ``name@hash16`` string records (the name may contain ``@``).

        Raises:
            InvalidInput: no ``@``, or an empty name or hash.
        """
        name, sep, digest = str(text).rpartition("@")
        if not sep or not name or not digest:
            raise InvalidInput(f"{text!r} is not a model id of the form 'name@weights-hash'")
        return cls(name, digest)

    def same_weights(self, other: ModelId | str) -> bool:
        """Whether ``other`` (an identity, or a bare weights hash) names the same weights,
        whatever name either was loaded by."""
        digest = other.weights_hash if isinstance(other, ModelId) else str(other)
        return bool(digest) and digest[:HASH_DIGITS] == self.short_hash


class Identified:
    """Mixin for every model class: ``name``, ``model_id`` and ``weights_hash`` read from
    one :class:`ModelId` in ``self.identity``, so no class rebuilds the string itself."""

    identity: ModelId

    @property
    def name(self) -> str:
        """Registry name, Hugging Face id or path the model was loaded by."""
        return self.identity.name

    @property
    def model_id(self) -> str:
        """``name@hash16``: what indexes record of the model (``str`` of :attr:`identity`)."""
        return str(self.identity)

    @property
    def weights_hash(self) -> str:
        """SHA-256 of the weights (a version tag for weight-free encoders)."""
        return self.identity.weights_hash
