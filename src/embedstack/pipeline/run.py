"""Running a :class:`~embedstack.pipeline.PipelineConfig` against an index.

A pipeline runs on anything that implements
:class:`~embedstack.index.protocols.Searchable` (the local :class:`~embedstack.index.Index`,
or an external engine), and a built :class:`Pipeline` is a
:class:`~embedstack.index.protocols.SearchPlan`: ``index.search(query, pipeline=p)`` calls
``p.run(index, query, k, filter=...)``; the index never imports this package.

Per query: each generator runs (one batched ``search_many`` per generator), a fusion
merges their lists, each rescoring stage reorders the head of the list, and the first ``k``
become :class:`~embedstack.index.Hit` objects whose ``ranks`` and ``scores`` hold every
stage the document went through (``{"bm25": 3, "dense": 1, "rrf": 1, "rerank": 2}``) and
whose ``score`` is the last stage's. Ties keep the previous order (generators and fusion
break ties by document id, like :meth:`Index.search`).

A ``colbert`` stage reads the candidates' token vectors from the index when the index stores
them (see :meth:`Pipeline.uses_stored_vectors`); only the query is encoded then. Likewise a
``rerank`` stage whose cross-encoder is a split one (:mod:`embedstack.rerank.split`) whose
document states the index stores: it scores each candidate's first chunk (the passage it
would read at query time) with only the layers above the split.

Time spent in each stage is measured per query (a batched generator's time is split evenly
among the batch's queries) and returned by :meth:`Pipeline.trace` /
:meth:`Pipeline.trace_many` as :class:`PipelineResult` ``timings``.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from embedstack import fusion as fuse
from embedstack.errors import EmbedstackError, InvalidInput
from embedstack.latency import latency_summary
from embedstack.pipeline.config import Colbert, Rerank, Rrf, Weighted
from embedstack.pipeline.presets import PipelineSpec, resolve_pipeline
from embedstack.pipeline.scorers import (
    STORED,
    TRAIN_HINT,
    Scorer,
    as_scorer,
    stored,
)
from embedstack.pipeline.scorers import load_colbert as _load_colbert
from embedstack.pipeline.scorers import load_reranker as _load_reranker

if TYPE_CHECKING:
    from embedstack.index import Hit
    from embedstack.index.protocols import Searchable

__all__ = ["Pipeline", "PipelineResult", "Scorer", "TRAIN_HINT", "stage_latency"]

RERANK_RRF_K = 60  # the RRF constant of Cormack et al. (2009), as everywhere else here


@dataclass(frozen=True)
class PipelineResult:
    """The hits of one query and the time each stage took for it.

    Attributes:
        hits: at most ``k`` hits, best first.
        timings: seconds per stage, keyed by stage label (``"bm25"``, ``"rrf"``,
            ``"rerank"``, ... in pipeline order), plus ``"total"``.
    """

    hits: list[Hit]
    timings: dict[str, float] = field(default_factory=dict)


@dataclass
class _Candidate:
    doc_id: str
    hit: Hit  # a generator's hit: title, text, metadata, chunk and span
    score: float
    ranks: dict[str, int] = field(default_factory=dict)
    scores: dict[str, float] = field(default_factory=dict)


def _labels(kinds: Sequence[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for kind in kinds:
        seen[kind] = seen.get(kind, 0) + 1
        out.append(kind if seen[kind] == 1 else f"{kind}_{seen[kind]}")
    return out


def _passage(hit: Hit) -> str:
    return f"{hit.title} {hit.text}" if hit.title.strip() else hit.text


class Pipeline:
    """A validated pipeline with its models loaded, ready to run against any index.

    A :class:`~embedstack.index.protocols.SearchPlan`: ``Index.search(q, pipeline=p)`` runs
    it. Build it once and reuse it: building loads the models its stages name.

    Args:
        config: a :class:`PipelineConfig`, its dict, a JSON file, a preset or saved name
            (saved names need ``index``), or a compact string.
        index: the index whose saved pipelines a name may refer to: its directory, or an
            index object with a ``path`` (one without has no saved pipelines).
        reranker: the cross-encoder of every ``rerank`` stage: a
            :mod:`embedstack.rerank` model name or folder, or an object with ``name`` and
            ``score(query, documents)``; overrides the stages' ``model``.
        colbert: likewise for ``colbert`` stages. A ``colbert`` stage with no model scores
            the token vectors stored in the index (an index created with ``colbert=``); one
            whose model is the index's ColBERT model (same ``model_id``) does too, its query
            encoded by the index's encoder. Any other model encodes the candidates on every
            query.
        reranker_options: keyword options for loading models by name (e.g. ``threads``).

    Raises:
        InvalidInput: an invalid config, or a ``rerank``/``colbert`` stage with no model
            (the message says how to pass or train one).
        ModelNotFound: a named model that cannot be found.

    Example:
        >>> p = Pipeline("hybrid")                                          # doctest: +SKIP
        >>> [h.doc_id for h in p.run(index, "why do cats purr", k=3)]       # doctest: +SKIP
        ['d7', 'd1', 'd4']
    """

    def __init__(
        self,
        config: PipelineSpec,
        *,
        index: Searchable | str | os.PathLike[str] | None = None,
        reranker: Scorer | str | os.PathLike[str] | None = None,
        colbert: Scorer | str | os.PathLike[str] | None = None,
        reranker_options: dict[str, Any] | None = None,
    ) -> None:
        self.name, self.config = resolve_pipeline(config, index=index)
        cfg = self.config
        self.labels: list[str] = _labels(
            [g.kind for g in cfg.generators]
            + ([cfg.fusion.kind] if cfg.fusion else [])
            + [s.kind for s in cfg.stages]
        )
        options = dict(reranker_options or {})
        cache: dict[tuple[str, str], Scorer] = {}
        self._scorers: list[Scorer | None] = []
        for i, stage in enumerate(cfg.stages):
            given = reranker if isinstance(stage, Rerank) else colbert
            if not isinstance(stage, Rerank | Colbert):
                self._scorers.append(None)
                continue
            source: Scorer | str | os.PathLike[str] | None = (
                given if given is not None else stage.model
            )
            if source is None:
                if isinstance(stage, Rerank):
                    raise InvalidInput(
                        f"stages.{i} (rerank) of pipeline {self.name!r} has no cross-encoder: "
                        + TRAIN_HINT
                    )
                self._scorers.append(STORED)  # the index's own token vectors, at run time
                continue
            load = _load_reranker if isinstance(stage, Rerank) else _load_colbert
            key = (stage.kind, os.fspath(source)) if isinstance(source, str | os.PathLike) else None
            if key is not None and key in cache:
                self._scorers.append(cache[key])
                continue
            scorer = as_scorer(source, "reranker" if isinstance(stage, Rerank) else "colbert",
                                load, options)  # fmt: skip
            if key is not None:
                cache[key] = scorer
            self._scorers.append(scorer)

    @property
    def models(self) -> dict[str, str]:
        """``{stage label: model name}`` of the ``rerank`` and ``colbert`` stages."""
        labels = self.labels[len(self.labels) - len(self._scorers) :]
        pairs = zip(labels, self._scorers, strict=True)
        return {label: str(scorer.name) for label, scorer in pairs if scorer is not None}

    def uses_stored_vectors(self, index: Searchable) -> list[str]:
        """Labels of the stages that score ``index``'s stored token vectors instead of
        encoding the candidates at query time: ``colbert`` stages with no model or with the
        index's ColBERT model, and ``rerank`` stages whose split cross-encoder is the one
        whose document states the index stores."""
        labels = self.labels[len(self.labels) - len(self._scorers) :]
        return [label for label, scorer in zip(labels, self._scorers, strict=True)
                if stored(index, scorer)]  # fmt: skip

    def __repr__(self) -> str:
        return f"Pipeline({self.name!r}: {self.config.to_string()})"

    # --- public runs -------------------------------------------------------------------------

    def run(
        self, index: Searchable, query: str, k: int | None = None, *,
        filter: dict[str, Any] | None = None,  # noqa: A002 - the public argument name
    ) -> list[Hit]:  # fmt: skip
        """The hits of one query (see :meth:`trace_many` for the arguments)."""
        return self.trace(index, query, k, filter=filter).hits

    def run_many(
        self, index: Searchable, queries: Sequence[str], k: int | None = None, *,
        filter: dict[str, Any] | None = None,  # noqa: A002
    ) -> list[list[Hit]]:  # fmt: skip
        """The hits of each query (see :meth:`trace_many`)."""
        return [r.hits for r in self.trace_many(index, queries, k, filter=filter)]

    def trace(
        self, index: Searchable, query: str, k: int | None = None, *,
        filter: dict[str, Any] | None = None,  # noqa: A002
    ) -> PipelineResult:  # fmt: skip
        """Hits and per-stage timings of one query (see :meth:`trace_many`)."""
        if not isinstance(query, str):
            raise InvalidInput(f"a query must be str, got {type(query).__name__}")
        return self.trace_many(index, [query], k, filter=filter)[0]

    def trace_many(
        self, index: Searchable, queries: Sequence[str], k: int | None = None, *,
        filter: dict[str, Any] | None = None,  # noqa: A002
    ) -> list[PipelineResult]:  # fmt: skip
        """Run the pipeline for each query.

        Args:
            index: the index to search: any :class:`~embedstack.index.protocols.Searchable`
                (the generators call its ``search_many`` with ``mode=``, ``k=`` and
                ``filter=``; rescoring stages its ``dense_scores`` / ``colbert_scores``).
            queries: non-blank query strings.
            k: results per query (default: the config's ``k``); never more than the last
                stage passes on.
            filter: a metadata filter, applied by every generator (so every candidate
                passes it).

        Returns:
            One :class:`PipelineResult` per query.

        Raises:
            InvalidInput: an empty query, ``k <= 0``, a bad filter, a generator the index
                does not support, or a reranker returning the wrong number of scores.
        """
        if isinstance(queries, str | bytes):
            raise InvalidInput("pass a list of queries to trace_many, or use trace(query)")
        qs = list(queries)
        if k is None:
            k = self.config.final_k
        if isinstance(k, bool) or not isinstance(k, int) or k <= 0:
            raise InvalidInput(f"k must be a positive integer, got {k!r}")
        if not qs:
            return []
        cfg = self.config
        labels = iter(self.labels)
        per_gen: list[tuple[str, list[list[Hit]]]] = []
        shared: dict[str, float] = {}
        for gen in cfg.generators:
            label = next(labels)
            start = time.perf_counter()
            found = index.search_many(qs, mode=gen.kind, k=gen.top, filter=filter)
            per_gen.append((label, found))
            shared[label] = (time.perf_counter() - start) / len(qs)
        fusion_label = next(labels) if cfg.fusion else None
        stage_labels = list(labels)
        results = []
        for qi, query in enumerate(qs):
            timings = dict(shared)
            start = time.perf_counter()
            cands = self._fuse([(lb, lists[qi]) for lb, lists in per_gen], fusion_label)
            if fusion_label is not None:
                timings[fusion_label] = time.perf_counter() - start
            for i, label in enumerate(stage_labels):
                t0 = time.perf_counter()
                cands = self._rescore(index, query, cands, i, label)
                timings[label] = time.perf_counter() - t0
            t0 = time.perf_counter()
            hits = self._hits(cands[:k])
            rest = time.perf_counter() - t0
            timings["total"] = sum(timings.values()) + rest
            results.append(PipelineResult(hits, timings))
        return results

    # --- stages ------------------------------------------------------------------------------

    def _fuse(self, lists: list[tuple[str, list[Hit]]], label: str | None) -> list[_Candidate]:
        by_id: dict[str, _Candidate] = {}
        for name, hits in lists:
            for hit in hits:
                cand = by_id.get(hit.doc_id)
                if cand is None:
                    cand = by_id[hit.doc_id] = _Candidate(hit.doc_id, hit, hit.score)
                elif cand.hit.chunk is None and hit.chunk is not None:
                    cand.hit = hit  # keep the best chunk a dense-like generator found
                cand.ranks[name] = hit.rank
                cand.scores[name] = float(hit.score)
        if label is None:
            return [by_id[h.doc_id] for h in lists[0][1]]
        fusion = self.config.fusion
        if isinstance(fusion, Rrf):
            fused = fuse.rrf([[h.doc_id for h in hits] for _, hits in lists], k=fusion.k)
        elif isinstance(fusion, Weighted):
            fused = fuse.weighted(
                [{h.doc_id: float(h.score) for h in hits} for _, hits in lists],
                alpha=fusion.alpha,
                normalization=fusion.normalization,
            )
        else:
            raise EmbedstackError(f"unknown fusion {fusion!r}")
        out = []
        for rank, (doc_id, score) in enumerate(fused, 1):
            cand = by_id[doc_id]
            cand.score = float(score)
            cand.ranks[label], cand.scores[label] = rank, float(score)
            out.append(cand)
        return out

    def _rescore(
        self, index: Searchable, query: str, cands: list[_Candidate], i: int, label: str
    ) -> list[_Candidate]:
        stage = self.config.stages[i]
        head = cands[: stage.top]
        if not head:
            return head
        scorer = self._scorers[i]
        if scorer is None:  # dense_rescore
            raw = index.dense_scores(query, [c.doc_id for c in head])
            name = "dense_rescore"
        elif stored(index, scorer):
            # a rerank stage reads what its cross-encoder reads at query time, the first chunk
            first = stage.kind == "rerank"
            ids = [c.doc_id for c in head]
            raw = index.colbert_scores(query, ids, chunks="first" if first else "all")
            name = f"colbert vectors of index {getattr(index, 'path', '?')}"
        elif scorer is STORED:
            raise InvalidInput(
                f"stages.{i} (colbert) of pipeline {self.name!r} has no ColBERT model and the "
                f"index {getattr(index, 'path', '?')} stores no ColBERT vectors: create the "
                "index with colbert=NAME_OR_DIR (CLI: index create --colbert), or pass "
                "colbert=NAME_OR_DIR or set the stage's model to encode candidates at query time"
            )
        else:
            raw = scorer.score(query, [_passage(c.hit) for c in head])
            name = f"{stage.kind} model {getattr(scorer, 'name', '?')!r}"
        scores = np.asarray(raw, dtype=np.float64).reshape(-1)
        if scores.shape[0] != len(head) or np.isnan(scores).any():
            raise EmbedstackError(
                f"{name} returned {np.shape(raw)} scores with NaN={bool(np.isnan(scores).any())} "
                f"for {len(head)} documents; expected ({len(head)},) numbers"
            )
        order = sorted(range(len(head)), key=lambda j: (-scores[j], j))
        model_rank = {j: rank for rank, j in enumerate(order, 1)}
        final = [(j, float(scores[j])) for j in order]
        if getattr(stage, "fuse", "none") == "rrf":  # arrival order ⊕ model order
            ids = [c.doc_id for c in head]
            position = {doc: j for j, doc in enumerate(ids)}
            fused = fuse.rrf([ids, [ids[j] for j in order]], k=RERANK_RRF_K)
            final = [(position[doc], float(score)) for doc, score in fused]
        out = []
        for j, score in final:
            cand = head[j]
            cand.score = score
            cand.ranks[label], cand.scores[label] = model_rank[j], float(scores[j])
            out.append(cand)
        return out

    @staticmethod
    def _hits(cands: list[_Candidate]) -> list[Hit]:
        from dataclasses import replace

        return [
            replace(c.hit, score=c.score, rank=rank, ranks=dict(c.ranks), scores=dict(c.scores))
            for rank, c in enumerate(cands, 1)
        ]


def stage_latency(timings: Sequence[dict[str, float]]) -> dict[str, dict[str, float]]:
    """Per-stage latency percentiles over queries: ``{stage: {"latency_ms_p50",
    "latency_ms_p99", "latency_ms_mean"}}``, stages in pipeline order, ``"total"`` last.

    Raises:
        InvalidInput: no timings.
    """

    if not timings:
        raise InvalidInput("stage_latency needs the timings of at least one query")
    names = list(dict.fromkeys(name for t in timings for name in t))
    names = [n for n in names if n != "total"] + (["total"] if "total" in names else [])
    return {
        name: latency_summary([t[name] for t in timings if name in t and math.isfinite(t[name])])
        for name in names
    }
