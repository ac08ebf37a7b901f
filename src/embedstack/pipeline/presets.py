"""Named pipelines: the presets, pipelines saved with an index, and resolving a spec.

Presets (each in the compact form of :mod:`embedstack.pipeline.grammar`):

=================  ==================================================================
``bm25``           ``bm25(top=100) -> top 10``
``dense``          ``dense(top=100) -> top 10``
``hybrid``         ``bm25(top=100) + dense(top=100) -> rrf(k=60) -> top 10`` — the same
                   ranking as ``Index.search(mode="hybrid")``
``hybrid-rerank``  ``hybrid -> rerank(top=50) -> top 10``: the cross-encoder scores the
                   50 best fused candidates
``three-stage``    ``bm25(top=100) -> dense_rescore(top=100) -> rerank(top=20) -> top 10``:
                   BM25's 100 are rescored with the stored dense vectors, and the
                   cross-encoder reads the dense top 20 (k=5 keeps its top 5)
``hybrid-colbert`` ``hybrid -> colbert(top=50) -> top 10``: ColBERT MaxSim over the token
                   vectors the index stores (an index created with ``colbert=``) reorders
                   the 50 best fused candidates; only the query is encoded
``three-stage-     ``bm25(top=100) -> dense_rescore(top=100) -> colbert(top=20) -> top 10``:
colbert``          ``three-stage`` with ColBERT over stored token vectors as the precision
                   stage (SciFact on 2 cores: p99 37 ms against the cross-encoder's 309)
=================  ==================================================================

A pipeline saved with an index is ``INDEX/pipelines/NAME.json`` (the JSON form of
:class:`~embedstack.pipeline.PipelineConfig`); ``embedstack search INDEX "q" --pipeline NAME``
finds it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

from embedstack.errors import InvalidInput
from embedstack.pipeline.config import PipelineConfig
from embedstack.pipeline.grammar import parse_pipeline

if TYPE_CHECKING:
    from embedstack.index.protocols import Searchable

__all__ = [
    "PRESETS",
    "PipelineSpec",
    "get_preset",
    "list_pipelines",
    "list_presets",
    "resolve_pipeline",
    "save_pipeline",
]

PipelineSpec: TypeAlias = "PipelineConfig | Mapping[str, Any] | str | os.PathLike[str]"
"""What names a pipeline: a config, its JSON-like dict, a JSON file, a preset or saved name,
or a compact string."""

PIPELINES_DIR = "pipelines"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")

PRESETS: dict[str, str] = {
    "bm25": "bm25(top=100) -> top 10",
    "dense": "dense(top=100) -> top 10",
    "hybrid": "bm25(top=100) + dense(top=100) -> rrf(k=60) -> top 10",
    "hybrid-rerank": "bm25(top=100) + dense(top=100) -> rrf(k=60) -> rerank(top=50) -> top 10",
    "three-stage": "bm25(top=100) -> dense_rescore(top=100) -> rerank(top=20) -> top 10",
    "hybrid-colbert": "bm25(top=100) + dense(top=100) -> rrf(k=60) -> colbert(top=50) -> top 10",
    "three-stage-colbert": "bm25(top=100) -> dense_rescore(top=100) -> colbert(top=20) -> top 10",
}


def list_presets() -> dict[str, str]:
    """``{name: compact form}`` of the presets."""
    return dict(PRESETS)


def get_preset(name: str, *, k: int | None = None) -> PipelineConfig:
    """The preset ``name``, with its final ``k`` replaced when given.

    Raises:
        InvalidInput: an unknown preset (the message lists them), or a ``k`` the preset's
            last list cannot fill.

    Example:
        >>> get_preset("hybrid").to_string()
        'bm25(top=100) + dense(top=100) -> rrf(k=60) -> top 10'
    """
    if name not in PRESETS:
        raise InvalidInput(f"unknown preset {name!r}; presets: {', '.join(PRESETS)}")
    cfg = parse_pipeline(PRESETS[name])
    if k is None:
        return cfg
    return PipelineConfig.from_dict({**cfg.to_dict(), "k": k}, source=f"preset {name}")


def _check_name(name: object) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise InvalidInput(
            f"pipeline name {name!r}: use 1-64 letters, digits, '_', '.' or '-' (starting with "
            "a letter or digit)"
        )
    return name


def _root(index: Searchable | str | os.PathLike[str]) -> Path | None:
    """``INDEX/pipelines`` of an index directory or of an index object with a ``path``; None
    for an index that lives elsewhere (an external engine has no saved pipelines)."""
    if isinstance(index, str | os.PathLike):
        return Path(index) / PIPELINES_DIR
    path = getattr(index, "path", None)
    return Path(path) / PIPELINES_DIR if isinstance(path, str | os.PathLike) else None


def save_pipeline(
    index: Searchable | str | os.PathLike[str], name: str, config: PipelineSpec
) -> Path:
    """Save a pipeline with an index as ``INDEX/pipelines/NAME.json`` (atomically; an existing
    pipeline of that name is replaced).

    Args:
        index: an open :class:`~embedstack.index.Index` or its directory.
        name: 1-64 of ``[A-Za-z0-9_.-]``, not a preset's name.
        config: anything :func:`resolve_pipeline` accepts.

    Returns:
        The file written.

    Raises:
        InvalidInput: a bad name, a preset's name, a directory that is not an index, or an
            invalid config.
    """
    _check_name(name)
    if name in PRESETS:
        raise InvalidInput(f"pipeline name {name!r} is a preset; choose another name")
    cfg = resolve_pipeline(config, index=index)[1]
    root = _root(index)
    if root is None or not (root.parent / "manifest.json").is_file():
        where = root.parent if root is not None else f"a {type(index).__name__}"
        raise InvalidInput(
            f"{where} is not an index directory: create one with Index.create() "
            "(CLI: `embedstack index create DIR`)"
        )
    root.mkdir(exist_ok=True)
    import json

    path = root / f"{name}.json"
    tmp = root / f".tmp-{name}.json"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(json.dumps(cfg.to_dict(), indent=2, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def list_pipelines(index: Searchable | str | os.PathLike[str]) -> list[str]:
    """Names of the pipelines saved with ``index``, sorted."""
    root = _root(index)
    if root is None or not root.is_dir():
        return []
    return sorted(p.stem for p in root.glob("*.json") if _NAME.match(p.stem))


def _read_file(path: Path) -> PipelineConfig:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"cannot read pipeline file {path}: {exc}") from None
    return PipelineConfig.from_json(text, source=f"pipeline file {path}")


def resolve_pipeline(
    spec: PipelineSpec, *, index: Searchable | str | os.PathLike[str] | None = None
) -> tuple[str, PipelineConfig]:
    """Turn a pipeline spec into ``(display name, config)``.

    A string is, in this order: a pipeline saved with ``index``, a preset, a ``.json`` file
    (or any existing file), or the compact form.

    Raises:
        InvalidInput: an unknown name (saved pipelines and presets are listed), an unreadable
            file, or an invalid config.
    """
    if isinstance(spec, PipelineConfig):
        return "custom", spec
    if isinstance(spec, Mapping):
        return "custom", PipelineConfig.from_dict(spec)
    if isinstance(spec, os.PathLike):
        return Path(spec).stem, _read_file(Path(spec))
    if not isinstance(spec, str):
        raise InvalidInput(
            "pipeline must be a PipelineConfig, a dict, a JSON file, a preset or saved name, "
            f"or a pipeline string; got {type(spec).__name__}"
        )
    text = spec.strip()
    root = _root(index) if index is not None else None
    if root is not None and _NAME.match(text) and (root / f"{text}.json").is_file():
        return text, _read_file(root / f"{text}.json")
    if text in PRESETS:
        return text, get_preset(text)
    if text.endswith(".json") or (text and Path(text).is_file()):
        if not Path(text).is_file():
            raise InvalidInput(f"pipeline file {text} does not exist")
        return Path(text).stem, _read_file(Path(text))
    if any(ch in text for ch in "(+>") or text.split(" ")[0] in ("bm25", "dense", "sparse"):
        return "custom", parse_pipeline(text)
    saved = list_pipelines(index) if index is not None else []
    where = f"; saved with the index: {', '.join(saved)}" if saved else ""
    raise InvalidInput(
        f"unknown pipeline {spec!r}: not a saved pipeline, a preset or a file. Presets: "
        f"{', '.join(PRESETS)}{where}; or write one, e.g. 'bm25(top=100) -> top 10'"
    )
