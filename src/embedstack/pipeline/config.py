"""The declarative pipeline configuration: validated, frozen pydantic models.

A pipeline is read left to right::

    generators           fusion          rescoring stages                    final k
    bm25(top=100) + dense(top=100) -> rrf(k=60) -> rerank(top=20) -> top 10

* **generators** (``bm25``, ``dense``, ``sparse``) each retrieve their ``top`` documents;
* a **fusion** (``rrf`` or ``weighted``) merges two or more generators' lists into one
  (their union); a single generator needs none;
* each **rescoring stage** (``dense_rescore``, ``rerank``, ``colbert``) takes the ``top``
  best candidates of the list before it, scores them, and passes on exactly those ``top``,
  best first (the candidates below ``top`` are dropped);
* the first ``k`` candidates of the last list are returned.

So ``top`` on a rescoring stage is its *depth*, what its cost depends on: ``rerank(top=20)``
runs the cross-encoder on 20 documents. Validation rejects what cannot work: an unknown
stage, ``top <= 0``, a stage asked to rescore more candidates than can reach it, a fusion of
one generator, several generators without a fusion, a final ``k`` larger than the last list.
Every error is an :class:`~embedstack.errors.InvalidInput` naming the field
(``stages.1.top: ...``).

Example:
    >>> cfg = PipelineConfig(generators=[Bm25(top=100), Dense(top=100)], fusion=Rrf(k=60),
    ...                      stages=[Rerank(top=20)], k=10)
    >>> cfg.to_string()
    'bm25(top=100) + dense(top=100) -> rrf(k=60) -> rerank(top=20) -> top 10'
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from embedstack.errors import InvalidInput

__all__ = [
    "Bm25",
    "Colbert",
    "Dense",
    "DenseRescore",
    "FusionSpec",
    "GeneratorSpec",
    "PipelineConfig",
    "Rerank",
    "Rrf",
    "Sparse",
    "StageSpec",
    "Weighted",
    "describe_validation_error",
]

GENERATOR_KINDS: tuple[str, ...] = ("bm25", "dense", "sparse")
FUSION_KINDS: tuple[str, ...] = ("rrf", "weighted")
STAGE_KINDS: tuple[str, ...] = ("dense_rescore", "rerank", "colbert")
DEFAULT_K = 10
_TAGS = frozenset(GENERATOR_KINDS + FUSION_KINDS + STAGE_KINDS)

Top = Annotated[int, Field(gt=0, strict=True)]
ModelRef = Annotated[str, Field(min_length=1, strict=True, pattern=r"\S")]


def describe_validation_error(exc: ValidationError, what: str = "pipeline") -> str:
    """One line per problem, each naming the field path (``stages.1.top: ...``)."""
    parts = []
    for error in exc.errors():
        loc = [str(x) for x in error["loc"] if x not in _TAGS]  # drop union tags
        msg = str(error["msg"]).removeprefix("Value error, ")
        if error["type"] not in ("value_error", "union_tag_invalid", "union_tag_not_found"):
            msg += f" (got {error.get('input')!r})"
        if error["type"] == "union_tag_not_found":
            msg = "missing 'kind'"
        parts.append(f"{'.'.join(loc)}: {msg}" if loc else msg)
    return f"invalid {what}: " + "; ".join(parts)


class _Spec(BaseModel):
    """Frozen, closed (``extra="forbid"``) model whose validation errors are InvalidInput."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise InvalidInput(describe_validation_error(exc, type(self).__name__)) from None

    # Mark this __init__ as pydantic's own, so that nested specs are validated by the core
    # schema (one ValidationError with full paths) and only direct construction comes here.
    __init__.__pydantic_base_init__ = True  # type: ignore[attr-defined]


# --- generators ---------------------------------------------------------------------------------


class Bm25(_Spec):
    """BM25 candidates (Robertson & Zaragoza 2009): the index's ``top`` best by BM25."""

    kind: Literal["bm25"] = "bm25"
    top: Top = 100


class Dense(_Spec):
    """Dense candidates: the ``top`` best documents by max cosine over their chunks."""

    kind: Literal["dense"] = "dense"
    top: Top = 100


class Sparse(_Spec):
    """Learned sparse (SPLADE, Formal et al. 2021) candidates; needs an index with a sparse
    mode."""

    kind: Literal["sparse"] = "sparse"
    top: Top = 100


# --- fusion ------------------------------------------------------------------------------------


class Rrf(_Spec):
    """Reciprocal rank fusion (Cormack et al. 2009): ``sum 1 / (k + rank)``."""

    kind: Literal["rrf"] = "rrf"
    k: Annotated[float, Field(gt=0, allow_inf_nan=False, strict=True)] = 60


class Weighted(_Spec):
    """Convex combination of normalized scores (Bruch et al. 2023) of exactly two
    generators: ``alpha`` weighs the first, ``1 - alpha`` the second."""

    kind: Literal["weighted"] = "weighted"
    alpha: Annotated[float, Field(ge=0, le=1, strict=True)] = 0.5
    normalization: Literal["minmax", "zscore"] = "minmax"


# --- rescoring stages --------------------------------------------------------------------------


class DenseRescore(_Spec):
    """Rescore the ``top`` candidates by max cosine over their *stored* chunk vectors
    (no document is re-embedded; only the query is encoded)."""

    kind: Literal["dense_rescore"] = "dense_rescore"
    top: Top = 100


class Rerank(_Spec):
    """Cross-encoder reranking (Nogueira & Cho 2019) of the ``top`` candidates.

    The cross-encoder reads ``query`` with each candidate's ``title + " " + text`` (the whole
    document, truncated by the model at its maximum length), not the best chunk: BEIR's
    reranking baselines score title and text, and the best chunk is only known for
    documents the dense generator found.

    Attributes:
        model: name or folder of the cross-encoder (loaded with
            :func:`embedstack.rerank.load_reranker`); None means it is given when the
            pipeline is built (``reranker=`` / ``--reranker``).
        top: candidates scored, and passed on.
        fuse: ``"none"`` orders the candidates by the model's score alone; ``"rrf"`` orders
            them by reciprocal rank fusion (k=60) of the order they arrived in and the
            model's order, the model's score kept in ``Hit.scores``. Fusing keeps what the
            first stage knew, a safeguard for a reranker trained on little data.
    """

    kind: Literal["rerank"] = "rerank"
    model: ModelRef | None = None
    top: Top = 20
    fuse: Literal["none", "rrf"] = "none"


class Colbert(_Spec):
    """Late-interaction rescoring (ColBERTv2, Santhanam et al. 2022) of the ``top``
    candidates; ``model`` and ``fuse`` as for :class:`Rerank` (``colbert=``).

    On an index that stores ColBERT token vectors (created with ``colbert=``), a stage with
    no model, or with the index's model, scores the stored vectors of the candidates' chunks
    (each document its best chunk, like dense search); otherwise the model encodes the
    candidates' ``title + " " + text`` on every query."""

    kind: Literal["colbert"] = "colbert"
    model: ModelRef | None = None
    top: Top = 20
    fuse: Literal["none", "rrf"] = "none"


GeneratorSpec = Annotated[Bm25 | Dense | Sparse, Field(discriminator="kind")]
FusionSpec = Annotated[Rrf | Weighted, Field(discriminator="kind")]
StageSpec = Annotated[DenseRescore | Rerank | Colbert, Field(discriminator="kind")]


def _number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() and math.isfinite(x) else repr(float(x))


class PipelineConfig(_Spec):
    """A whole pipeline; see the module docstring for its semantics.

    Attributes:
        generators: one or more candidate generators, each kind at most once.
        fusion: how to merge several generators (required for two or more, refused for one).
        stages: rescoring stages, in order.
        k: results returned by default (a call may ask for fewer or more; it never gets more
            than the last list holds); None means 10, or the last list's depth if smaller
            (see :attr:`final_k`).

    Raises:
        InvalidInput: any invalid field, named by its path.
    """

    generators: tuple[GeneratorSpec, ...]
    fusion: FusionSpec | None = None
    stages: tuple[StageSpec, ...] = ()
    k: Top | None = None

    @model_validator(mode="after")
    def _consistent(self) -> PipelineConfig:
        if not self.generators:
            raise ValueError("generators: at least one is needed (bm25, dense or sparse)")
        seen: dict[str, int] = {}
        for i, gen in enumerate(self.generators):
            if gen.kind in seen:
                raise ValueError(
                    f"generators.{i}.kind: {gen.kind!r} is already generators.{seen[gen.kind]}; "
                    "each generator may appear once"
                )
            seen[gen.kind] = i
        n = len(self.generators)
        if n > 1 and self.fusion is None:
            raise ValueError(f"fusion: {n} generators need a fusion (rrf or weighted)")
        if n == 1 and self.fusion is not None:
            raise ValueError(
                f"fusion: {self.fusion.kind} fuses two or more generators, there is one "
                f"({self.generators[0].kind}); remove the fusion or add a generator"
            )
        if isinstance(self.fusion, Weighted) and n != 2:
            raise ValueError(
                f"fusion: weighted fusion combines exactly two generators (alpha weighs the "
                f"first), got {n}; use rrf"
            )
        available = sum(g.top for g in self.generators)
        source: str = self.fusion.kind if self.fusion else self.generators[0].kind
        for i, stage in enumerate(self.stages):
            if stage.top > available:
                raise ValueError(
                    f"stages.{i}.top: {stage.kind} cannot rescore {stage.top} candidates, at "
                    f"most {available} come from {source}; lower its top"
                )
            available, source = stage.top, stage.kind
        if self.k is not None and self.k > available:
            raise ValueError(
                f"k: {self.k} results asked but at most {available} come from {source}; "
                f"lower k or raise {source}'s top"
            )
        return self

    @property
    def depth(self) -> int:
        """The most candidates the last list can hold (sum of generator tops when fused)."""
        if self.stages:
            return self.stages[-1].top
        return sum(g.top for g in self.generators)

    @property
    def final_k(self) -> int:
        """Results returned by default: :attr:`k`, else ``min(10, depth)``."""
        return self.k if self.k is not None else min(DEFAULT_K, self.depth)

    # --- conversions -----------------------------------------------------------------------

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "pipeline") -> PipelineConfig:
        """Validate a JSON-like mapping (the format of pipeline ``.json`` files).

        Raises:
            InvalidInput: naming ``source`` and each bad field.
        """
        if not isinstance(data, Mapping):
            raise InvalidInput(f"{source} must be a JSON object, got {type(data).__name__}")
        try:
            return cls.model_validate(dict(data))
        except ValidationError as exc:
            raise InvalidInput(describe_validation_error(exc, source)) from None

    @classmethod
    def from_json(cls, text: str, *, source: str = "pipeline") -> PipelineConfig:
        """Parse JSON text (see :meth:`from_dict`)."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InvalidInput(
                f"{source} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
            ) from None
        return cls.from_dict(data, source=source)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict that :meth:`from_dict` reads back to an equal config."""
        return self.model_dump(mode="json")

    def to_string(self) -> str:
        """The compact form (see :func:`embedstack.pipeline.parse_pipeline`)."""
        parts = [" + ".join(f"{g.kind}(top={g.top})" for g in self.generators)]
        if isinstance(self.fusion, Rrf):
            parts.append(f"rrf(k={_number(self.fusion.k)})")
        elif isinstance(self.fusion, Weighted):
            parts.append(f"weighted(alpha={_number(self.fusion.alpha)}, "
                         f"normalization={self.fusion.normalization})")  # fmt: skip
        for stage in self.stages:
            model = getattr(stage, "model", None)
            head = f"{json.dumps(model)}, " if model is not None else ""
            fused = getattr(stage, "fuse", "none")
            tail = f", fuse={fused}" if fused != "none" else ""
            parts.append(f"{stage.kind}({head}top={stage.top}{tail})")
        if self.k is not None:
            parts.append(f"top {self.k}")
        return " -> ".join(parts)

    def __str__(self) -> str:
        return self.to_string()
