"""Vector math for embedding retrieval: normalization, similarity, exact top-k, quantization.

Pure numpy, no I/O. One convention holds everywhere: **a higher score is more similar**, so
distances (euclidean, manhattan) come back negated; only :func:`hamming_distance` and
:func:`binary_topk` return plain distances (lower is more similar), as their names say.
Every top-k returns ``(scores, indices)`` sorted best first, ties broken by the lower document
index, and is chunked over documents and queries so memory stays bounded by the chunk sizes.

Matryoshka truncation follows Kusupati et al. 2022; int8 and binary quantization with
rescoring follow Yamada et al. 2021 and Shakir, Aarsen & Lee 2024 (Hugging Face blog).

The package is split by representation: :mod:`~embedstack.vectors._float` (normalization,
truncation, similarity, exact top-k), :mod:`~embedstack.vectors._int8` (scalar quantization)
and :mod:`~embedstack.vectors._binary` (sign bits, Hamming search, rescoring), over the
validation and chunked top-k they share in :mod:`~embedstack.vectors._common`. Import the
public names from here; the submodules are free to change.
"""

from __future__ import annotations

from embedstack.vectors._binary import (
    binary_search_rescore,
    binary_topk,
    hamming_distance,
    quantize_binary,
    unpack_binary,
)
from embedstack.vectors._float import normalize, pairwise, topk, truncate
from embedstack.vectors._int8 import (
    Int8Calibration,
    calibrate_int8,
    dequantize_int8,
    int8_scores,
    int8_topk,
    quantize_int8,
)

__all__ = [
    "Int8Calibration",
    "binary_search_rescore",
    "binary_topk",
    "calibrate_int8",
    "dequantize_int8",
    "hamming_distance",
    "int8_scores",
    "int8_topk",
    "normalize",
    "pairwise",
    "quantize_binary",
    "quantize_int8",
    "topk",
    "truncate",
    "unpack_binary",
]
