"""``embedstack pick DATA --task classification|clustering|pair-classification|reranking``.

The same choice as a retrieval pick, for another use of the embeddings: the grid is models x
dimensions x storage precisions (no retrieval modes, no BM25), the quality column is the
task's main score as ``embedstack eval --task`` computes it (accuracy, V-measure averaged
over k-means seeds, max AP, MAP; :mod:`~embedstack.eval.pick.task_measure`), latency is
the encoding of one text at a time (p50/p99 over up to :data:`LATENCY_TEXTS` seeded texts;
the classifier, k-means or threshold after it costs microseconds and is not included),
bytes are per stored vector and the costs follow from them as for retrieval ($ per 1M
texts encoded, storage $ per month for ``--corpus-size`` vectors). Then the Pareto front,
the budgets and the recommendation rule of :mod:`~embedstack.eval.pick.recommend`, with
the significance test the task calls for:

* classification: paired randomization over the test examples, each scored by the share of
  the seeded experiments' classifiers that label it right. The experiments' training
  samples are the same for every candidate (MTEB draws them from the labels and the seed
  alone), so this asks whether the difference would hold for other test texts from the same
  source, given those training samples. Its mean difference is exactly the difference in
  mean accuracy. The paired test over the experiments' accuracies (which conditions on the
  test set instead, with only ``n_experiments`` units) is recorded as
  ``significance.p_value_experiments``.
* clustering: paired randomization over :data:`~.task_measure.CLUSTER_SEEDS` k-means seeds
  (each the mean V-measure over the sets): whether the difference exceeds what k-means'
  initialisation alone moves. The quality column is the mean over those seeds, so the best
  candidate, ``delta`` and the test all concern one quantity.
* pair-classification: the paired bootstrap over pairs of :mod:`~.task_stats` (max AP is not
  a mean over pairs).
* reranking: paired randomization over the samples' average precisions (their mean is MAP).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from embedstack import vectors
from embedstack.errors import InvalidInput
from embedstack.eval.pick import measure as m
from embedstack.eval.pick.candidates import PickOptions, build_grid, select_models
from embedstack.eval.pick.data import token_counts
from embedstack.eval.pick.entries import model_entry, prices_entry
from embedstack.eval.pick.plan import _load
from embedstack.eval.pick.prices import Prices, load_prices
from embedstack.eval.pick.progress import Steps
from embedstack.eval.pick.recommend import LONG_DOC_SHARE, mark_front, recommend, significance
from embedstack.eval.pick.stats import TEST_NAME, paired_randomization
from embedstack.eval.pick.task_measure import (
    CLUSTER_SEEDS,
    TASK_UNITS,
    StoredVectors,
    TaskData,
    load_task_data,
    score_candidate,
    stored_precision,
)
from embedstack.eval.pick.task_stats import BOOTSTRAP_SAMPLES, paired_bootstrap
from embedstack.latency import latency_summary
from embedstack.settings import cache_dir

__all__ = ["LATENCY_TEXTS", "run_task_pick"]

logger = logging.getLogger("embedstack.pick")

LATENCY_TEXTS = 100
UNIT = {"classification": "test examples", "clustering": "texts", "pair-classification": "pairs",
        "reranking": "samples"}  # fmt: skip


def _encode(
    encoder: Any, data: TaskData, cache: Path, steps: Steps, seed: int, weights: str
) -> tuple[dict[str, np.ndarray], float, str]:
    """Every distinct text of every kind, encoded once (cached): ``(matrices, seconds, note)``."""
    if hasattr(encoder, "show_progress"):
        encoder.show_progress = False
    matrices: dict[str, np.ndarray] = {}
    seconds, cached_rows = 0.0, 0
    for kind, texts in data.texts.items():
        method = {"text": encoder.encode, "query": encoder.encode_queries,
                  "document": encoder.encode_documents}[kind]  # fmt: skip
        ident = f"{encoder.model_id}|task-{kind}" + ("" if weights == "float32" else f"|{weights}")
        key = m._texts_key(ident, texts)
        folder = cache / "pick-task" / f"{m.slug(encoder.name)}-{key[:16]}"
        matrix = m._load_cached(folder, key, len(texts))
        if matrix is None:
            start, blocks = time.perf_counter(), []
            with steps.task(
                f"encoding {len(texts)} {kind}s with {encoder.name}", len(texts)
            ) as advance:
                for first in range(0, len(texts), 256):
                    chunk = texts[first : first + 256]
                    blocks.append(np.asarray(method(chunk), dtype=np.float32))
                    advance(len(chunk))
            matrix = np.ascontiguousarray(np.concatenate(blocks), dtype=np.float32)
            seconds += time.perf_counter() - start
            m._save_cached(folder, key, matrix)
        else:
            cached_rows += len(texts)
        matrices[kind] = matrix
    total = sum(len(t) for t in data.texts.values())
    if not cached_rows:
        return matrices, seconds, f"all {total} texts"
    rng = np.random.default_rng(seed)
    kind = next(iter(data.texts))
    pool = data.texts[kind]
    sample = [
        pool[i]
        for i in sorted(rng.choice(len(pool), min(m.TIMING_SAMPLE, len(pool)), replace=False))
    ]
    start = time.perf_counter()
    (encoder.encode if kind == "text" else encoder.encode_queries)(sample)
    timed = (time.perf_counter() - start) / len(sample)
    return (
        matrices,
        seconds + timed * cached_rows,
        (
            f"{cached_rows} of {total} vectors from cache; their time estimated on {len(sample)} "
            "sampled texts"
        ),
    )


def _latency(encoder: Any, data: TaskData, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Wall and CPU seconds of encoding each of up to LATENCY_TEXTS texts alone."""
    pool = data.texts[data.latency_kind]
    rng = np.random.default_rng(seed)
    sample = [
        pool[i] for i in sorted(rng.choice(len(pool), min(LATENCY_TEXTS, len(pool)), replace=False))
    ]
    method = encoder.encode if data.latency_kind == "text" else encoder.encode_queries
    method(sample[:1])  # warm-up, untimed
    wall, cpu = np.zeros(len(sample)), np.zeros(len(sample))
    for i, text in enumerate(sample):
        t0, c0 = time.perf_counter(), time.process_time()
        method([text])
        wall[i], cpu[i] = time.perf_counter() - t0, time.process_time() - c0
    return wall, cpu


def _candidate_vectors(
    matrices: dict[str, np.ndarray], dim: int, precision: str
) -> tuple[dict[str, np.ndarray], float]:
    """The model's vectors at ``dim`` and ``precision`` (one int8 calibration over all)."""
    parts = {k: v if v.shape[1] == dim else vectors.truncate(v, dim) for k, v in matrices.items()}
    stacked, size = stored_precision(np.concatenate(list(parts.values())), precision)
    out, at = {}, 0
    for kind, part in parts.items():
        out[kind] = stacked[at : at + len(part)]
        at += len(part)
    return out, size


def _test(task: str, options: PickOptions, topts: Any) -> tuple[str, str]:
    """``(significance.test, the test's name in a sentence)``."""
    if task == "pair-classification":
        return (f"paired bootstrap over pairs, {BOOTSTRAP_SAMPLES} resamples, two-sided",
                "paired bootstrap over pairs")  # fmt: skip
    units = TASK_UNITS[task]
    if task == "classification":
        units = units.replace("the seeded experiments'", f"{topts.n_experiments} seeded")
    exact = task == "clustering" and 2**CLUSTER_SEEDS <= options.n_permutations
    count = "exact" if exact else f"{options.n_permutations} permutations"
    return (
        f"{TEST_NAME} over {units}, {count}",
        f"paired randomization test over {UNIT[task] if task != 'clustering' else 'k-means seeds'}",
    )


def _compare(task: str, units: dict[str, np.ndarray], labels: Any, options: PickOptions) -> Any:
    """The test of ``task`` (module docstring); ``delta`` is the quality column's difference
    (every unit set averages to the main score, max AP is recomputed by the bootstrap)."""

    def compare(baseline: str, other: str) -> tuple[float, float]:
        if task == "pair-classification":
            return paired_bootstrap(units[baseline], units[other], labels, seed=options.seed)
        return paired_randomization(
            units[baseline], units[other], n_permutations=options.n_permutations, seed=options.seed
        )

    return compare


def _entry(
    cand: Any,
    metrics: dict[str, float],
    main: str,
    size: float,
    model: dict[str, Any],
    prices: Prices,
    options: PickOptions,
    extra: dict[str, Any],
) -> dict[str, Any]:
    return {
        "id": f"{cand.model}|{cand.dim}|{cand.precision}",
        "model": cand.model,
        "dim": cand.dim,
        "full_dim": cand.full_dim,
        "precision": cand.precision,
        "mode": "dense",
        "metrics": metrics,
        "main_metric": main,
        "latency_ms_p50": model["latency"]["latency_ms_p50"],
        "latency_ms_p99": model["latency"]["latency_ms_p99"],
        "latency_ms_mean": model["latency"]["latency_ms_mean"],
        "encode_docs_per_s": model["encode_docs_per_s"],
        "encoder_precision": model["encoder_precision"],
        "bytes_per_doc": size,
        "bytes_per_vector": size,
        "cost": {
            "usd_per_1m_queries": prices.usd_per_1m_queries(model["cpu_s_per_text"]),
            "storage_usd_per_month": prices.storage_usd_per_month(size * options.corpus_size),
            "cpu_ms_per_query": model["cpu_s_per_text"] * 1000.0,
        },
        "task_detail": extra,
        "significance": None,
        "pareto": False,
        "within_budgets": True,
        "budget_misses": [],
    }


def run_task_pick(
    data_path: str | Path, out: Path, options: PickOptions, *, command: str | None, start: float
) -> dict[str, Any]:
    """Measure every model x dim x precision on a task file; the pick.json of a task pick.

    Raises:
        InvalidInput: retrieval-only options (``--modes``, ``--time-budget-min``), a BEIR
            folder, or a malformed task file (file and line named).
        ModelNotFound: an unknown model, or one not fetched.
    """
    from embedstack.eval.tasks import MAIN_METRICS
    from embedstack.eval.tasks.options import TaskOptions

    task = options.task
    for name, value in (("--modes", options.modes), ("--time-budget-min", options.time_budget_min)):
        if value is not None:
            raise InvalidInput(
                f"{name} applies to retrieval picks only; --task {task} compares models x "
                "dims x precisions on the whole task file"
            )
    prices = load_prices(options.price_file)
    topts = TaskOptions(split=options.split)
    data = load_task_data(data_path, task, topts)
    dense = dataclasses.replace(options, modes=("dense",))
    specs, warnings = select_models(dense)
    all_texts = [t for texts in data.texts.values() for t in texts]
    grid, grid_warnings = build_grid(specs, dense, len(all_texts))
    warnings += grid_warnings
    out.mkdir(parents=True, exist_ok=True)
    steps = Steps(options.show_progress)
    counts, counter = token_counts(all_texts, seed=options.seed)
    cache = options.cache_dir or cache_dir() / "eval-embeddings"
    weights = "int8" if options.encoder_precision == "int8" else "float32"
    models: dict[str, dict[str, Any]] = {}
    matrices: dict[str, dict[str, np.ndarray]] = {}
    for spec in specs:
        encoder = _load(spec, weights) or _load(spec, "float32")
        precision = "int8" if getattr(encoder, "quantize", None) == "int8" else "float32"
        matrices[spec.name], encode_s, note = _encode(encoder, data, cache, steps, options.seed,
                                                      precision)  # fmt: skip
        wall, cpu = _latency(encoder, data, options.seed)
        limit = int(getattr(encoder, "max_length", spec.max_length))
        share = float(np.mean(counts > limit)) if counts.size else 0.0
        entry = model_entry(spec, encoder, encode_s, len(all_texts), note, share)
        entry["encoder_precision"] = precision
        entry["latency"] = latency_summary(wall)
        entry["cpu_s_per_text"] = float(cpu.mean())
        entry["latency_texts"] = len(wall)
        models[spec.name] = entry
        if share > LONG_DOC_SHARE:
            warnings.append(
                f"long texts: {share:.0%} of the texts exceed {spec.name}'s {limit}-token limit "
                "and were truncated when encoded"
            )
    main = MAIN_METRICS[task]
    cands: list[dict[str, Any]] = []
    units: dict[str, np.ndarray] = {}
    with steps.task(f"scoring {len(grid)} candidates ({task})", len(grid)) as advance:
        for cand in grid:
            name = str(cand.model)
            prepared, size = _candidate_vectors(matrices[name], int(cand.dim or 0),
                                                str(cand.precision))  # fmt: skip
            stored = StoredVectors(name, prepared, data.texts)
            metrics, scores, extra = score_candidate(data, stored, topts)
            entry = _entry(cand, metrics, main, size, models[name], prices, options, extra)
            cands.append(entry)
            units[entry["id"]] = scores
            advance(1)
    mark_front(cands, main, options)
    labels = np.asarray(data.payload.labels) if task == "pair-classification" else None
    compare = _compare(task, units, labels, options)
    test_name, test_short = _test(task, options, topts)
    best = significance(cands, {}, options.n_permutations, options.seed, compare=compare,
                        test_name=test_name)  # fmt: skip
    if task == "classification":  # the other conditioning: over the experiments' accuracies
        for entry in cands:
            if entry is not best:
                _, p = paired_randomization(
                    best["task_detail"]["accuracy_per_experiment"],
                    entry["task_detail"]["accuracy_per_experiment"],
                    n_permutations=options.n_permutations,
                    seed=options.seed,
                )
                entry["significance"]["p_value_experiments"] = p
    context = {
        "evaluation": "judged",
        "n_queries": data.n_examples,
        "n_docs": len(all_texts),
        "share_over": {},
        "warnings": warnings,
        "task": task,
        "unit": UNIT[task],
        "test_short": test_short,
        "task_options": dataclasses.asdict(topts),
    }
    rec = recommend(cands, {}, models, options, context, compare=compare)
    for entry in models.values():
        entry.pop("cpu_s_per_text")
    result: dict[str, Any] = {
        "kind": "embedstack.pick",
        "format_version": 1,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": command,
        "elapsed_s": 0.0,
        "task": task,
        "data": {
            "path": str(data.path),
            "name": data.name,
            "evaluation": "judged",
            "proxy_note": None,
            "split": data.split,
            "n_docs": len(all_texts),
            "n_queries": data.n_examples,
            "n_examples": data.n_examples,
            "n_train": data.n_train,
            "unit": UNIT[task],
            "significance_units": TASK_UNITS[task]
            if task != "clustering"
            else f"{CLUSTER_SEEDS} k-means seeds from seed {topts.seed}",
            "latency_texts": min(LATENCY_TEXTS, len(data.texts[data.latency_kind])),
            "latency_kind": data.latency_kind,
            "queries_subsampled": False,
            "subsample_note": None,
            "mean_doc_tokens": float(counts.mean()) if counts.size else 0.0,
            "share_docs_over_512_tokens": float(np.mean(counts > 512)) if counts.size else 0.0,
            "token_counter": counter,
            "task_options": dataclasses.asdict(topts),
        },
        "budgets": {
            "latency_ms": options.latency_budget_ms,
            "storage_gb": options.storage_budget_gb,
            "corpus_size": options.corpus_size,
            "time_budget_min": None,
        },
        "prices": prices_entry(prices, counts, counts, options.corpus_size),
        "plan": None,
        "models": list(models.values()),
        "not_measured": [],
        "candidates": cands,
        "recommendation": rec,
    }
    result["elapsed_s"] = time.perf_counter() - start
    return result
