"""Type aliases shared across the package."""

from __future__ import annotations

from typing import Literal, TypeAlias

import numpy as np
import numpy.typing as npt

FloatArray: TypeAlias = npt.NDArray[np.float32]
IntArray: TypeAlias = npt.NDArray[np.int64]
Int8Array: TypeAlias = npt.NDArray[np.int8]
UInt8Array: TypeAlias = npt.NDArray[np.uint8]

Metric = Literal["cosine", "dot", "euclidean", "manhattan"]
Precision = Literal["float32", "int8", "binary"]
Pooling = Literal["mean", "cls", "last"]
Backend = Literal["onnx", "torch"]
