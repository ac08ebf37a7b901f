"""The safetensors container read and written with numpy alone.

Layout (https://github.com/huggingface/safetensors): an unsigned little-endian 64-bit header
length, a JSON header mapping each tensor name to ``{"dtype", "shape", "data_offsets"}``
(offsets relative to the end of the header; an optional ``"__metadata__"`` string map), then
the raw little-endian tensor bytes. Only the dtypes embedstack's converters need are
supported.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from embedstack.errors import InvalidInput

__all__ = ["read_safetensors", "write_safetensors"]

_DTYPES: dict[str, np.dtype] = {
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "F64": np.dtype("<f8"),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "U8": np.dtype("u1"),
}
_NAMES = {dtype: name for name, dtype in _DTYPES.items()}
_MAX_HEADER = 100 << 20


def write_safetensors(
    path: str | os.PathLike[str],
    tensors: Mapping[str, np.ndarray],
    metadata: Mapping[str, str] | None = None,
) -> None:
    """Write ``tensors`` (C-ordered copies, little-endian) to ``path``, fsynced.

    Raises:
        InvalidInput: a dtype the container does not support here.
    """
    header: dict[str, object] = {}
    if metadata:
        header["__metadata__"] = dict(metadata)
    offset = 0
    arrays = []
    for name, array in tensors.items():
        dtype = np.dtype(array.dtype).newbyteorder("<")
        if dtype not in _NAMES:
            raise InvalidInput(f"tensor {name!r}: dtype {array.dtype} is not supported")
        data = np.ascontiguousarray(array, dtype=dtype)
        header[name] = {"dtype": _NAMES[dtype], "shape": list(data.shape),
                        "data_offsets": [offset, offset + data.nbytes]}  # fmt: skip
        offset += data.nbytes
        arrays.append(data)
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)  # keeps the data 8-byte aligned, as the reference does
    with open(path, "wb") as out:
        out.write(struct.pack("<Q", len(blob)))
        out.write(blob)
        for data in arrays:
            out.write(data.data.cast("B"))
        out.flush()
        os.fsync(out.fileno())


def read_safetensors(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Every tensor of a safetensors file as a read-only array over a memory map.

    Raises:
        InvalidInput: the file is not a well-formed safetensors file.
    """
    file = Path(path)
    size = file.stat().st_size
    with file.open("rb") as handle:
        head = handle.read(8)
        if len(head) < 8:
            raise InvalidInput(f"{file} is not a safetensors file (truncated)")
        (length,) = struct.unpack("<Q", head)
        if length > min(size - 8, _MAX_HEADER):
            raise InvalidInput(f"{file} is not a safetensors file (header length {length})")
        try:
            header = json.loads(handle.read(length))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InvalidInput(f"{file} is not a safetensors file: {exc}") from exc
    if not isinstance(header, dict):
        raise InvalidInput(f"{file} is not a safetensors file (header is not an object)")
    buffer = np.memmap(file, dtype=np.uint8, mode="r")
    start = 8 + length
    out: dict[str, np.ndarray] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype = _DTYPES[info["dtype"]]
            shape = tuple(int(n) for n in info["shape"])
            begin, end = (int(n) for n in info["data_offsets"])
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidInput(f"{file}: tensor {name!r} has an unsupported entry") from exc
        count = int(np.prod(shape, dtype=np.int64))
        if end - begin != count * dtype.itemsize or start + end > size or begin < 0:
            raise InvalidInput(f"{file}: tensor {name!r} does not fit the file")
        out[name] = buffer[start + begin : start + end].view(dtype).reshape(shape)
    return out
