"""sentence-transformers ``Dense`` modules after pooling, read and run with numpy.

Many sentence-transformers models project the pooled vector before normalizing it: a
``Dense`` module (``nn.Linear`` + activation) such as distiluse-base-multilingual-cased's
768 → 512 tanh layer, LaBSE's 768 → 768 tanh pooler or the PCA layer of
sentence-transformers' dimensionality-reduction recipe. A folder saves each one as
``N_Dense/config.json`` (``in_features``, ``out_features``, ``bias``,
``activation_function``, optionally ``use_residual``, ``module_input_name`` and
``module_output_name``) and ``N_Dense/model.safetensors`` (``linear.weight``
``(out, in)``, ``linear.bias`` ``(out,)``, ``residual.weight`` ``(out, in)``).

:func:`read_dense` checks a module's config and files when the folder is loaded (no weights
read); :meth:`DenseLayer.load` reads the weights (never a pickle: a folder holding only
``pytorch_model.bin`` is refused) and :class:`DenseHead` applies the layers in order::

    y = act(x @ W.T + b)  (+ x, or + x @ R.T, when use_residual)

Example:
    >>> layer = read_dense(Path("distiluse/2_Dense"))  # doctest: +SKIP
    >>> DenseHead((layer.load(),))(pooled).shape  # doctest: +SKIP
    (2, 512)
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from embedstack._typing import FloatArray
from embedstack.encoders.convert.safetensors_np import read_safetensors
from embedstack.errors import DimensionMismatch, InvalidInput, ModelNotFound

__all__ = ["ACTIVATIONS", "DenseHead", "DenseLayer", "DenseWeights", "read_dense"]

WEIGHTS = "model.safetensors"
SENTENCE_EMBEDDING = "sentence_embedding"

ACTIVATIONS: dict[str, Callable[[FloatArray], FloatArray]] = {
    "Identity": lambda x: x,
    "Tanh": np.tanh,
    "ReLU": lambda x: np.maximum(x, np.float32(0)),
    "Sigmoid": lambda x: (
        np.float32(0.5) * (np.float32(1) + np.tanh(x / np.float32(2)))
    ),  # no overflow
}
"""The ``torch.nn`` activations a Dense module may name (class name → numpy function)."""


@dataclass(frozen=True)
class DenseLayer:
    """One ``Dense`` module as its folder describes it (weights not read).

    Attributes:
        path: The module's folder (``N_Dense``).
        in_features: Input width.
        out_features: Output width.
        bias: Whether ``linear.bias`` is added.
        activation: A key of :data:`ACTIVATIONS`.
        residual: ``use_residual``: the input (or its ``residual.weight`` projection when the
            widths differ) is added after the activation.
    """

    path: Path
    in_features: int
    out_features: int
    bias: bool
    activation: str
    residual: bool = False

    @property
    def files(self) -> tuple[Path, Path]:
        """The files whose bytes define the layer (hashed into the model's identity)."""
        return self.path / "config.json", self.path / WEIGHTS

    def load(self) -> DenseWeights:
        """The layer's weights as float32 arrays.

        Raises:
            ModelNotFound: the weights file is unreadable or lacks a tensor of the right shape.
        """
        file = self.path / WEIGHTS
        try:
            tensors = read_safetensors(file)
        except (OSError, InvalidInput) as exc:
            raise ModelNotFound(f"cannot read the Dense weights {file}: {exc}") from exc
        shape = (self.out_features, self.in_features)
        weight = _tensor(tensors, "linear.weight", shape, file)
        bias = _tensor(tensors, "linear.bias", (self.out_features,), file) if self.bias else None
        residual = None
        if self.residual and self.in_features != self.out_features:
            residual = _tensor(tensors, "residual.weight", shape, file)
        return DenseWeights(self, weight, bias, residual)


def _tensor(tensors: dict[str, Any], key: str, shape: tuple[int, ...], file: Path) -> FloatArray:
    array = tensors.get(key)
    if array is None or tuple(array.shape) != shape:
        found = "none" if array is None else f"shape {tuple(array.shape)}"
        raise ModelNotFound(f"{file}: expected tensor {key!r} of shape {shape}, found {found}")
    return np.ascontiguousarray(array, dtype=np.float32)


@dataclass(frozen=True, eq=False)
class DenseWeights:
    """A loaded :class:`DenseLayer`: ``weight`` ``(out, in)``, ``bias`` ``(out,)`` or None,
    ``residual`` ``(out, in)`` or None (identity residual, or none)."""

    layer: DenseLayer
    weight: FloatArray
    bias: FloatArray | None
    residual: FloatArray | None

    def __call__(self, x: FloatArray) -> FloatArray:
        """``(n, in)`` → ``(n, out)`` float32."""
        out = x @ self.weight.T
        if self.bias is not None:
            out += self.bias
        out = ACTIVATIONS[self.layer.activation](out)
        if self.layer.residual:
            out = out + (x if self.residual is None else x @ self.residual.T)
        return np.asarray(out, dtype=np.float32)


@dataclass(frozen=True, eq=False)
class DenseHead:
    """The Dense layers of a folder in ``modules.json`` order, applied to pooled vectors."""

    layers: tuple[DenseWeights, ...]

    @property
    def in_features(self) -> int:
        """Width of the pooled vectors the head takes."""
        return self.layers[0].layer.in_features

    @property
    def out_features(self) -> int:
        """Width of the vectors the head gives."""
        return self.layers[-1].layer.out_features

    def __call__(self, pooled: FloatArray) -> FloatArray:
        """``(n, in_features)`` → ``(n, out_features)`` float32.

        Raises:
            DimensionMismatch: ``pooled`` is not ``in_features`` wide.
        """
        if pooled.ndim != 2 or pooled.shape[1] != self.in_features:
            raise DimensionMismatch(f"the Dense head takes {self.in_features}-d pooled vectors, "
                                    f"got shape {pooled.shape}")  # fmt: skip
        out = np.asarray(pooled, dtype=np.float32)
        for layer in self.layers:
            out = layer(out)
        return out

    @classmethod
    def load(cls, layers: Sequence[DenseLayer]) -> DenseHead | None:
        """The head of ``layers`` (weights read), or None when there are none."""
        return cls(tuple(layer.load() for layer in layers)) if layers else None


def read_dense(folder: Path) -> DenseLayer:
    """Check a ``Dense`` module's folder: its config, activation and weights file.

    Raises:
        ModelNotFound: no readable ``config.json``, or weights only as ``pytorch_model.bin``
            (a pickle, which embedstack never loads) or not at all.
        InvalidInput: an activation other than :data:`ACTIVATIONS`, a Dense on other
            features than the sentence embedding, or bad widths.
    """
    file = folder / "config.json"
    try:
        config = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelNotFound(f"cannot read the Dense config {file}: {exc}") from exc
    if not isinstance(config, dict):
        raise ModelNotFound(f"{file} is not a JSON object")
    n_in, n_out = config.get("in_features"), config.get("out_features")
    if not (type(n_in) is int and type(n_out) is int and n_in > 0 and n_out > 0):
        raise InvalidInput(f"{file}: in_features and out_features must be positive ints, "
                           f"got {n_in!r} and {n_out!r}")  # fmt: skip
    for key in ("module_input_name", "module_output_name"):
        if config.get(key, SENTENCE_EMBEDDING) != SENTENCE_EMBEDDING:
            raise InvalidInput(f"{file}: a Dense on {config[key]!r} is not supported (only on "
                               f"the pooled {SENTENCE_EMBEDDING!r})")  # fmt: skip
    activation = _activation(config.get("activation_function"), file)
    if not (folder / WEIGHTS).is_file():
        pickled = (folder / "pytorch_model.bin").is_file()
        why = "only pytorch_model.bin (a pickle, never loaded)" if pickled else "no weights"
        raise ModelNotFound(f"{folder} holds {why}: re-save the model with safetensors "
                            f"(SentenceTransformer(...).save(path)) to get {WEIGHTS}")  # fmt: skip
    return DenseLayer(folder, n_in, n_out, bool(config.get("bias", True)),
                      activation, bool(config.get("use_residual", False)))  # fmt: skip


def _activation(name: object, file: Path) -> str:
    """The :data:`ACTIVATIONS` key of a saved ``activation_function`` (default Tanh, as
    sentence-transformers' own default)."""
    if name is None:
        return "Tanh"
    text = str(name)
    short = text.rpartition(".")[2]
    if text.startswith("torch.nn.") and short in ACTIVATIONS:
        return short
    raise InvalidInput(f"{file}: activation_function {text!r} is not supported (supported: "
                       f"{', '.join(f'torch.nn.{a}' for a in ACTIVATIONS)})")  # fmt: skip
