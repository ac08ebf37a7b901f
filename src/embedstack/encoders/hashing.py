"""A deterministic, weight-free encoder: the hashing trick over word unigrams and bigrams.

Useful as a lexical-ish baseline, for demos without weights, and as the tier-0 fake encoder
of the test suite (it is exact, instant and identical on every machine). Vectors are
L2-normalized signed feature hashes (Weinberger et al. 2009).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from typing import Any

import numpy as np

from embedstack import vectors
from embedstack._typing import FloatArray
from embedstack.encoders.base import validate_texts
from embedstack.encoders.registry import ModelSpec
from embedstack.encoders.runtime.identity import Identified, ModelId
from embedstack.errors import InvalidInput

__all__ = ["HashEncoder"]

_WORD = re.compile(r"\w+", re.UNICODE)


class HashEncoder(Identified):
    """Signed feature hashing of lower-cased words and word bigrams into ``dim`` buckets.

    Args:
        dim: Output dimension.
        name: Name reported by :attr:`name` (the registry name when built from a spec).

    Example:
        >>> enc = HashEncoder(64)
        >>> enc.encode(["hello world"]).shape
        (1, 64)
    """

    def __init__(self, dim: int = 256, *, name: str | None = None) -> None:
        if dim < 1:
            raise InvalidInput(f"dim must be >= 1, got {dim}")
        self._dim = dim
        self.identity = ModelId(name or f"hash-{dim}", "hash-v1")  # no weights: a version
        self._cache: dict[str, tuple[int, float]] = {}

    @classmethod
    def from_spec(cls, spec: ModelSpec, **_: Any) -> HashEncoder:
        """Factory used by registry entries (``ModelSpec(factory=HashEncoder.from_spec)``)."""
        return cls(spec.dim, name=spec.name)

    @property
    def dim(self) -> int:
        return self._dim

    def _bucket(self, feature: str) -> tuple[int, float]:
        hit = self._cache.get(feature)
        if hit is None:
            digest = hashlib.blake2b(feature.encode("utf-8"), digest_size=8).digest()
            value = int.from_bytes(digest, "little")
            hit = (value % self._dim, 1.0 if (value >> 63) & 1 else -1.0)
            if len(self._cache) < 1_000_000:
                self._cache[feature] = hit
        return hit

    def encode(self, texts: Iterable[str]) -> FloatArray:
        """Encode texts into ``(n, dim) float32`` L2-normalized vectors."""
        items = validate_texts(texts)
        if not items:
            raise InvalidInput("nothing to encode: pass at least one text")
        out = np.zeros((len(items), self._dim), dtype=np.float32)
        for row, text in enumerate(items):
            words = _WORD.findall(text.lower())
            features = words + [f"{a} {b}" for a, b in zip(words, words[1:], strict=False)]
            for feature in features:
                col, sign = self._bucket(feature)
                out[row, col] += sign
        return vectors.normalize(out)

    def encode_queries(self, texts: Iterable[str]) -> FloatArray:
        """Same as :meth:`encode` (the hashing encoder is symmetric)."""
        return self.encode(texts)

    def encode_documents(self, texts: Iterable[str]) -> FloatArray:
        """Same as :meth:`encode` (the hashing encoder is symmetric)."""
        return self.encode(texts)
