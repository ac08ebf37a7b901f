"""Planning the corpus encodings of a pick run before any of them starts.

With ``--time-budget-min`` set, pick first *probes* every model: it encodes
:data:`PROBE_DOCS` seeded sample documents (after one untimed warm-up document) and estimates
the whole corpus as ``probe seconds x corpus tokens / sample tokens`` (tokens capped at the
model's max length; corpus tokens from :func:`~embedstack.eval.pick.data.token_counts`).
The sample goes :data:`PROBE_BATCH` documents at a time, and a probe stops early once its
estimate is :data:`INT8_MAX_SPEEDUP` times what is left of the encoding budget, so a model
that cannot fit costs a few documents, not the whole sample. Vectors already cached (pick's
own cache or ``embedstack eval``'s) cost nothing to encode.
Then, cheapest model first, each model gets:

1. its float32 weights when the estimate fits what is left of the *encoding budget*
   (:data:`ENCODE_SHARE` of the time left after probing; the rest is for the queries, which
   :mod:`~embedstack.eval.pick.timebudget` subsamples to fit, the tests and the report);
2. otherwise, with ``encoder_precision="auto"``, its guarded int8 weights
   (:mod:`embedstack.encoders.runtime.int8guard`) when a probe of those fits; the quality
   cost is recorded: the guard's probe cosine and the fp32/int8 cosine on the sample;
3. otherwise it is **not measured**, and said so: ``not_measured`` in pick.json gives the
   estimate, how far over the budget it is, and the ``--time-budget-min`` (or ``--models``)
   that would include it.

The corpus is never subsampled: a model either ranks every document or is not measured. An
encoding that runs past the deadline anyway (the machine got slower than the probe said) is
stopped and listed the same way. Without a time budget nothing is probed and every model is
encoded (int8 only with ``encoder_precision="int8"``).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from embedstack.encoders.registry import ModelSpec
from embedstack.errors import EmbedstackError
from embedstack.eval.pick import measure as m
from embedstack.eval.pick.candidates import PickOptions
from embedstack.eval.pick.data import PickData, token_counts

__all__ = [
    "ENCODE_SHARE",
    "PROBE_DOCS",
    "ModelPlan",
    "Plan",
    "int8_warning",
    "plan_models",
    "stopped",
]

logger = logging.getLogger("embedstack.pick")

ENCODE_SHARE = 0.75
"""Share of the time left after probing that corpus encodings may use."""
PROBE_DOCS = 16
"""Documents each probe encodes (a seeded sample of the corpus)."""
PROBE_BATCH = 4
"""Probe documents per call; after each, a probe whose estimate cannot fit stops."""
INT8_MAX_SPEEDUP = 4.0
"""int8 weights are probed only when the float32 estimate divided by this would fit."""


@dataclass
class ModelPlan:
    """What pick does with one model: which weights, cached vectors or an estimate."""

    spec: ModelSpec
    encoder: Any
    precision: str  # the encoder's weights: "float32" or "int8"
    cached: np.ndarray | None = None
    estimate_s: float | None = None  # None: no time budget, nothing probed
    probes: dict[str, dict[str, Any]] = field(default_factory=dict)
    int8: dict[str, Any] | None = None  # guard facts and the sample cosine, int8 only
    note: str = ""


@dataclass
class Plan:
    """The models to encode, the ones left out, and the plan's facts for pick.json."""

    models: list[ModelPlan]
    not_measured: list[dict[str, Any]]
    entry: dict[str, Any] | None
    deadline: float | None  # perf_counter time past which an encoding is stopped


def _load(spec: ModelSpec, precision: str) -> Any | None:
    """The model's encoder with ``precision`` weights; None when it has no int8 variant."""
    from embedstack.encoders import load_encoder

    if precision == "float32":
        return load_encoder(spec.name, show_progress=False)
    try:
        encoder = load_encoder(spec.name, show_progress=False, quantize="int8")
    except (EmbedstackError, TypeError) as exc:
        logger.info("%s has no int8 weights here: %s", spec.name, exc)
        return None
    if (
        getattr(encoder, "quantize", None) != "int8"
        or getattr(encoder, "backend_name", "") == "static"
    ):
        return None  # a lookup table or a factory model: int8 weights mean nothing
    return encoder


def _guard_facts(encoder: Any) -> dict[str, Any] | None:
    """The int8 guard's check of ``encoder``'s graph from its cache manifest, if it has one."""
    from embedstack.encoders.runtime.cache import read_manifest

    path = getattr(getattr(encoder, "_model", None), "path", None)
    if not isinstance(path, Path):
        return None
    check = read_manifest(path.parent).get("int8_check")
    return dict(check) if isinstance(check, dict) else None


class _Corpus:
    """The probe sample and the token arithmetic of the estimates."""

    def __init__(self, data: PickData, seed: int) -> None:
        n = len(data.doc_texts)
        rng = np.random.default_rng(seed)
        size = min(PROBE_DOCS, n)
        self.index = sorted(int(i) for i in rng.choice(n, size, replace=False))
        self.texts = [data.doc_texts[i] for i in self.index]
        self.sample_tokens, _ = token_counts(self.texts, seed=seed)
        self.corpus_tokens, _ = token_counts(data.doc_texts, seed=seed)
        self.n = n
        self.warmup = min(self.texts, key=len)

    def scale(self, max_length: int, done: int) -> float:
        """Corpus tokens over the first ``done`` sample documents' tokens, each capped at
        ``max_length``."""
        cap = max_length + 2  # [CLS] and [SEP]
        corpus = float(np.minimum(self.corpus_tokens, cap).mean()) * self.n
        sample = float(np.minimum(self.sample_tokens[:done], cap).sum())
        return corpus / max(sample, 1.0)


def _probe(
    encoder: Any, corpus: _Corpus, max_length: int, stop_over: float
) -> tuple[dict[str, Any], np.ndarray]:
    """Time the sample, :data:`PROBE_BATCH` documents at a time, stopping early once the
    estimate exceeds ``stop_over`` seconds (a model that cannot fit, even with int8)."""
    encoder.encode_documents([corpus.warmup])  # sessions and arenas: not the corpus's cost
    blocks, seconds, done, est = [], 0.0, 0, 0.0
    while done < len(corpus.texts):
        t0 = time.perf_counter()
        batch = corpus.texts[done : done + PROBE_BATCH]
        blocks.append(np.asarray(encoder.encode_documents(batch), dtype=np.float32))
        seconds += time.perf_counter() - t0
        done += len(batch)
        est = seconds * corpus.scale(max_length, done)
        if est > stop_over:
            break
    probe = {
        "docs": done,
        "seconds": seconds,
        "token_scale": corpus.scale(max_length, done),
        "estimated_encode_s": est,
        "docs_per_s": corpus.n / max(est, 1e-9),
        "stopped_early": done < len(corpus.texts),
    }
    return probe, np.concatenate(blocks)


def _cosines(a: np.ndarray, b: np.ndarray) -> dict[str, Any]:
    na = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    nb = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    n = min(len(na), len(nb))  # an early-stopped probe has fewer
    cos = np.einsum("ij,ij->i", na[:n], nb[:n])
    return {"min": float(cos.min()), "mean": float(cos.mean()), "n_docs": len(cos)}


def _minutes_up(seconds: float) -> int:
    return max(1, math.ceil(seconds / 60.0))


def _left_out(
    spec: ModelSpec, plan: ModelPlan, available: float, spent: float, before: float
) -> dict[str, Any]:
    estimates = {p: probe["estimated_encode_s"] for p, probe in plan.probes.items()}
    est = min(estimates.values())
    precision = min(estimates, key=lambda p: estimates[p])
    include = _minutes_up(spent + (before + est) / ENCODE_SHARE)
    alone = _minutes_up(spent + est / ENCODE_SHARE)
    over = est - max(available, 0.0)
    tried = ", ".join(f"{p} {s / 60:.1f} min" for p, s in estimates.items())
    message = (
        f"{spec.name} not measured: estimated {est / 60:.1f} min for the corpus encoding "
        f"({precision} weights; tried {tried}), over the budget by {over / 60:.1f} min; run "
        f"with --time-budget-min {include} to include it, or --models {spec.name} "
        f"--time-budget-min {alone} to measure it alone"
    )
    return {
        "model": spec.name,
        "reason": "time_budget",
        "estimated_encode_s": est,
        "estimated_precision": precision,
        "estimates_s": estimates,
        "available_s": max(available, 0.0),
        "over_by_s": over,
        "time_budget_min_to_include": include,
        "time_budget_min_alone": alone,
        "probes": plan.probes,
        "message": message,
    }


def _cached(encoder: Any, data: PickData, cache: Path, precision: str) -> np.ndarray | None:
    return m.cached_corpus(
        encoder, data.doc_texts, cache, precision, beir=data.beir, ids=data.doc_ids
    )


def _try_int8(
    plan: ModelPlan,
    data: PickData,
    cache: Path,
    corpus: _Corpus,
    fp32_sample: np.ndarray,
    stop_over: float,
) -> float | None:
    """Load and probe ``plan``'s int8 weights; their estimate (None: it has none). The
    encoder, cached vectors and quality facts are set on ``plan`` for when it is kept."""
    encoder = _load(plan.spec, "int8")
    if encoder is None:
        return None
    limit = int(getattr(encoder, "max_length", plan.spec.max_length))
    cached = _cached(encoder, data, cache, "int8")
    probe, vecs = _probe(encoder, corpus, limit, stop_over)
    plan.probes["int8"] = probe
    est = 0.0 if cached is not None else float(probe["estimated_encode_s"])
    plan.encoder, plan.cached = encoder, cached  # used only if the plan keeps the model
    plan.int8 = {"guard": _guard_facts(encoder), "sample_cosine": _cosines(fp32_sample, vecs)}
    return est


def plan_models(
    specs: list[ModelSpec], data: PickData, options: PickOptions, start: float, cache: Path
) -> Plan:
    """Decide, for every model, which weights encode the corpus, or that it is left out.

    Args:
        specs: the models chosen (:func:`~embedstack.eval.pick.candidates.select_models`).
        data: the corpus and queries.
        options: ``time_budget_min`` and ``encoder_precision`` matter here.
        start: ``time.perf_counter()`` when the run began.
        cache: the corpus vector cache.
    """
    wanted = "int8" if options.encoder_precision == "int8" else "float32"
    if options.time_budget_min is None:
        plans = []
        for spec in specs:
            encoder = _load(spec, wanted)
            if encoder is None:
                encoder, note = _load(spec, "float32"), "no int8 weights: float32 used"
            else:
                note = ""
            precision = "int8" if wanted == "int8" and not note else "float32"
            plan = ModelPlan(spec, encoder, precision, note=note)
            if precision == "int8":
                plan.int8 = {"guard": _guard_facts(encoder), "sample_cosine": None}
            plans.append(plan)
        return Plan(plans, [], None, None)
    budget = options.time_budget_min * 60.0
    corpus = _Corpus(data, options.seed)
    plans = []
    samples: dict[str, np.ndarray] = {}
    for spec in specs:
        encoder = _load(spec, wanted) or _load(spec, "float32")
        precision = "int8" if getattr(encoder, "quantize", None) == "int8" else "float32"
        plan = ModelPlan(spec, encoder, precision)
        limit = int(getattr(encoder, "max_length", spec.max_length))
        plan.cached = _cached(encoder, data, cache, precision)
        hopeless = INT8_MAX_SPEEDUP * ENCODE_SHARE * (budget - (time.perf_counter() - start))
        plan.probes[precision], samples[spec.name] = _probe(encoder, corpus, limit, hopeless)
        plan.estimate_s = (
            0.0 if plan.cached is not None else plan.probes[precision]["estimated_encode_s"]
        )
        plans.append(plan)
    spent = time.perf_counter() - start
    encode_budget = ENCODE_SHARE * (budget - spent)
    committed = 0.0  # estimates of the models kept
    extra = 0.0  # seconds spent quantizing and probing int8 weights

    kept: list[ModelPlan] = []
    over = []
    for plan in sorted(plans, key=lambda p: p.estimate_s or 0.0):  # cheapest first
        est = plan.estimate_s or 0.0
        if plan.cached is not None or est <= encode_budget - committed:  # cached: free
            committed += est
            plan.note = "vectors from cache" if plan.cached is not None else "fits the budget"
            kept.append(plan)
        else:
            over.append(plan)
    still_over = []
    for plan in over:  # then int8 weights, for those that did not fit
        available = encode_budget - extra - committed
        est = plan.estimate_s or 0.0
        if (
            options.encoder_precision != "auto"
            or plan.precision != "float32"
            or est / INT8_MAX_SPEEDUP > available
        ):
            still_over.append(plan)
            continue
        t0 = time.perf_counter()
        int8_est = _try_int8(plan, data, cache, corpus, samples[plan.spec.name], available)
        extra += time.perf_counter() - t0  # quantizing and probing took time
        if int8_est is not None and int8_est <= encode_budget - extra - committed:
            committed += int8_est
            plan.precision, plan.estimate_s = "int8", int8_est
            plan.note = (
                f"float32 weights estimated at {est / 60:.1f} min did not fit the "
                f"encoding budget; guarded int8 weights ({int8_est / 60:.1f} min) did"
            )
            kept.append(plan)
        else:
            still_over.append(plan)
    available = encode_budget - extra - committed
    left = [_left_out(p.spec, p, available, spent, committed + extra) for p in still_over]
    if wanted == "int8":
        for plan in kept:
            if plan.precision == "int8" and plan.int8 is None:
                plan.int8 = {"guard": _guard_facts(plan.encoder), "sample_cosine": None}
    order = {s.name: i for i, s in enumerate(specs)}
    kept.sort(key=lambda p: order[p.spec.name])
    entry = {
        "time_budget_s": budget,
        "encode_share": ENCODE_SHARE,
        "encode_budget_s": max(encode_budget, 0.0),
        "int8_probe_s": extra,
        "estimated_encode_s": committed,
        "probe_docs": len(corpus.texts),
        "probed_at_s": spent,
        "encoder_precision": options.encoder_precision,
        "note": (
            f"each model encoded {len(corpus.texts)} seeded sample documents; the corpus "
            "encoding was estimated as probe seconds x corpus tokens / sample tokens; "
            f"{ENCODE_SHARE:.0%} of the time left after probing went to corpus encodings, "
            "cheapest first; cached vectors count as free; the corpus is never subsampled"
        ),
    }
    deadline = start + budget * (1 - (1 - ENCODE_SHARE) / 2)
    return Plan(kept, left, entry, deadline)


def stopped(name: str, exc: m.OutOfTime, entry: dict[str, Any]) -> dict[str, Any]:
    """The ``not_measured`` entry of a model whose encoding passed the deadline."""
    est = exc.seconds * exc.total / max(exc.done, 1)
    alone = _minutes_up(float(entry.get("probed_at_s") or 0.0) + est / ENCODE_SHARE)
    message = (
        f"{name} not measured: its corpus encoding was stopped after {exc.done} of "
        f"{exc.total} documents ({exc.seconds / 60:.1f} min) when the time budget ran out, "
        f"slower than its probe said; at that pace it needs about {est / 60:.1f} min; run "
        f"--models {name} --time-budget-min {alone} to measure it alone"
    )
    return {
        "model": name,
        "reason": "deadline",
        "estimated_encode_s": est,
        "docs_encoded": exc.done,
        "time_budget_min_alone": alone,
        "message": message,
    }


def int8_warning(name: str, model: dict[str, Any]) -> str:
    """What the report and the CLI say about a model measured with int8 weights."""
    facts = model.get("int8") or {}
    parts = []
    guard = facts.get("guard") or {}
    if isinstance(guard.get("probe_min_cosine"), int | float):
        parts.append(
            f"the int8 guard's probe min cosine to float32 {guard['probe_min_cosine']:.3f}"
        )
    sample = facts.get("sample_cosine") or {}
    if isinstance(sample.get("min"), int | float):
        parts.append(
            f"min cosine {sample['min']:.3f} (mean {sample['mean']:.4f}) on "
            f"{sample['n_docs']} sampled documents of this corpus"
        )
    cost = "; ".join(parts) if parts else "its int8 cost was not checked"
    why = model.get("plan_note") or "--encoder-precision int8"
    return (
        f"{name} was measured with guarded int8 weights ({why}): its numbers are those of "
        f"the int8 model, not float32; quality cost: {cost}"
    )
