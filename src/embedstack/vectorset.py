"""An in-memory set of document vectors at one precision, searched exactly.

``float32`` is exact BLAS search; ``int8`` scores the float query against per-dimension
calibrated int8 codes (4× smaller); ``binary`` retrieves Hamming candidates over sign bits
(32× smaller) and, with ``rescore=True``, rescores them with the float query against int8
codes (Shakir, Aarsen & Lee 2024; Yamada et al. 2021). :attr:`VectorSet.nbytes` counts every
array a search needs, so sizes compare honestly across precisions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from embedstack import vectors
from embedstack._typing import FloatArray, IntArray, Precision
from embedstack.errors import InvalidInput

__all__ = ["VectorSet"]

PRECISIONS: tuple[str, ...] = ("float32", "int8", "binary")


@dataclass(frozen=True)
class VectorSet:
    """Document vectors stored at one precision.

    Attributes:
        precision: ``"float32"``, ``"int8"`` or ``"binary"``.
        dim: Dimension of the float vectors the set was built from.
        data: ``(n, dim) float32``, ``(n, dim) int8`` or ``(n, ceil(dim/8)) uint8``.
        calibration: int8 ranges (int8, and binary with rescoring).
        rescore_codes: int8 codes used to rescore binary candidates, or None.
    """

    precision: Precision
    dim: int
    data: np.ndarray
    calibration: vectors.Int8Calibration | None = None
    rescore_codes: np.ndarray | None = None

    @classmethod
    def from_float(
        cls,
        embeddings: npt.ArrayLike,
        precision: Precision | str = "float32",
        *,
        rescore: bool = True,
        calibration: vectors.Int8Calibration | None = None,
    ) -> VectorSet:
        """Quantize ``(n, dim)`` L2-normalized float vectors to ``precision``.

        Args:
            embeddings: The document vectors.
            precision: Storage precision.
            rescore: For ``binary``: keep int8 codes to rescore Hamming candidates.
            calibration: int8 ranges; by default computed from ``embeddings``.
        """
        if precision not in PRECISIONS:
            raise InvalidInput(f"unknown precision {precision!r}; choose one of {PRECISIONS}")
        matrix = np.ascontiguousarray(embeddings, dtype=np.float32)
        if matrix.ndim != 2:
            raise InvalidInput(f"embeddings must be 2-D (n, dim), got shape {matrix.shape}")
        dim = matrix.shape[1]
        if precision == "float32":
            return cls("float32", dim, matrix)
        if len(matrix) and calibration is None:
            calibration = vectors.calibrate_int8(matrix)
        if precision == "int8":
            codes = (
                vectors.quantize_int8(matrix, calibration)
                if calibration is not None
                else np.zeros((0, dim), dtype=np.int8)
            )
            return cls("int8", dim, codes, calibration)
        bits = vectors.quantize_binary(matrix)
        if not (rescore and calibration is not None):
            return cls("binary", dim, bits)
        codes = vectors.quantize_int8(matrix, calibration)
        return cls("binary", dim, bits, calibration, codes)

    def __len__(self) -> int:
        return int(self.data.shape[0])

    @property
    def nbytes(self) -> int:
        """Bytes of every array a search reads (codes, bits, rescoring codes, ranges)."""
        total = int(self.data.nbytes)
        if self.rescore_codes is not None:
            total += int(self.rescore_codes.nbytes)
        if self.calibration is not None:
            total += int(self.calibration.low.nbytes + self.calibration.high.nbytes)
        return total

    def search(
        self, queries: npt.ArrayLike, k: int, *, rescore_multiplier: int = 4
    ) -> tuple[FloatArray, IntArray]:
        """Top-k documents for ``(nq, dim)`` float queries by dot product (cosine for unit
        vectors). Returns ``(scores, indices)`` of shape ``(nq, min(k, n))``.

        Raises:
            InvalidInput: ``k < 1``.
            DimensionMismatch: queries of another dimension than the set.
        """
        q = np.atleast_2d(np.asarray(queries, dtype=np.float32))
        if len(self) == 0:
            vectors.topk(q, np.zeros((0, self.dim), np.float32), k, metric="dot")
            return np.zeros((len(q), 0), np.float32), np.zeros((len(q), 0), np.int64)
        if self.precision == "float32":
            return vectors.topk(q, self.data, k, metric="dot")
        if self.precision == "int8":
            assert_cal = self.calibration
            if assert_cal is None:  # pragma: no cover - from_float always sets it
                raise InvalidInput("int8 vector set without calibration")
            return vectors.int8_topk(q, self.data, assert_cal, k, metric="dot")
        if self.rescore_codes is not None and self.calibration is not None:
            return vectors.binary_search_rescore(
                q,
                self.data,
                k,
                rescore=(self.rescore_codes, self.calibration),
                rescore_multiplier=rescore_multiplier,
            )
        return vectors.binary_search_rescore(q, self.data, k, rescore=None, candidates=k)
