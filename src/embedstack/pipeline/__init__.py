"""Declarative retrieval pipelines: candidate generators → fusion → rescoring → top k.

A pipeline is a validated, frozen :class:`PipelineConfig`, written as Python objects, as
JSON, or in a compact string form::

    bm25(top=100) + dense(top=100) -> rrf(k=60) -> rerank(top=20) -> top 10

Named presets (``bm25``, ``dense``, ``hybrid``, ``hybrid-rerank``, ``three-stage``,
``hybrid-colbert``, ``three-stage-colbert``) and
pipelines saved with an index (``INDEX/pipelines/NAME.json``) are found by name.
:class:`Pipeline` loads the models a config names and runs it against an
:class:`~embedstack.index.Index`, recording each stage's latency.

Example:
    >>> from embedstack.pipeline import Pipeline, parse_pipeline
    >>> cfg = parse_pipeline("bm25(top=100) -> dense_rescore(top=20) -> top 5")
    >>> [s.kind for s in cfg.stages], cfg.k
    (['dense_rescore'], 5)
    >>> result = Pipeline(cfg).trace(index, "why do cats purr")           # doctest: +SKIP
    >>> sorted(result.timings)                                           # doctest: +SKIP
    ['bm25', 'dense_rescore', 'total']
"""

from __future__ import annotations

from embedstack.pipeline.config import (
    Bm25,
    Colbert,
    Dense,
    DenseRescore,
    PipelineConfig,
    Rerank,
    Rrf,
    Sparse,
    Weighted,
)
from embedstack.pipeline.grammar import parse_pipeline
from embedstack.pipeline.presets import (
    PRESETS,
    PipelineSpec,
    get_preset,
    list_pipelines,
    list_presets,
    resolve_pipeline,
    save_pipeline,
)
from embedstack.pipeline.run import Pipeline, PipelineResult, Scorer, stage_latency

__all__ = [
    "PRESETS",
    "Bm25",
    "Colbert",
    "Dense",
    "DenseRescore",
    "Pipeline",
    "PipelineConfig",
    "PipelineResult",
    "PipelineSpec",
    "Rerank",
    "Rrf",
    "Scorer",
    "Sparse",
    "Weighted",
    "get_preset",
    "list_pipelines",
    "list_presets",
    "load_pipeline",
    "parse_pipeline",
    "resolve_pipeline",
    "save_pipeline",
    "stage_latency",
]


def load_pipeline(spec: PipelineSpec, *, index: object = None) -> PipelineConfig:
    """The config a spec names (see :func:`resolve_pipeline`), without loading models.

    Raises:
        InvalidInput: an unknown name, an unreadable file or an invalid config.
    """
    return resolve_pipeline(spec, index=index)[1]  # type: ignore[arg-type]
