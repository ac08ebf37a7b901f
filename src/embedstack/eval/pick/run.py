"""``embedstack pick`` end to end: measure every candidate, test, recommend, write pick.json.

Order of work: read the data (judged or proxy), choose the models, plan the corpus
encodings within ``--time-budget-min`` (:mod:`~embedstack.eval.pick.plan`: float32 or
guarded int8 weights per model, or listed in ``not_measured``), encode each kept model's
corpus once (cached), build the grid and one BM25 index, fit the number of queries to
``--time-budget-min`` (a seeded subsample, said in ``data.subsample_note``), encode each
query alone per model, search it with every candidate, then compute metrics, costs, the
Pareto front, the significance tests and the recommendation. The output is
``OUT/pick.json`` (format: ``pick.json`` contract, ``kind = "embedstack.pick"``), plus
``report.md`` / ``report.html`` when :mod:`embedstack.eval.report` is installed.
"""

from __future__ import annotations

import json
import logging
import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from embedstack.errors import InvalidInput
from embedstack.eval.pick import measure as m
from embedstack.eval.pick.candidates import CandidateSpec, PickOptions, build_grid, select_models
from embedstack.eval.pick.data import PickData, load_pick_data, token_counts
from embedstack.eval.pick.entries import MAIN_METRIC, candidate_entry, model_entry, prices_entry
from embedstack.eval.pick.plan import int8_warning, plan_models, stopped
from embedstack.eval.pick.prices import Prices, load_prices
from embedstack.eval.pick.progress import Steps
from embedstack.eval.pick.recommend import mark_front, recommend, significance
from embedstack.eval.pick.task_measure import refuse_task_file
from embedstack.eval.pick.timebudget import fit_queries, pilot_seconds
from embedstack.settings import cache_dir

__all__ = ["MAIN_METRIC", "run_pick", "write_pick"]

logger = logging.getLogger("embedstack.pick")

FORMAT_VERSION = 1


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def run_pick(
    data_path: str | Path,
    out_dir: str | Path,
    options: PickOptions | None = None,
    *,
    command: str | None = None,
) -> dict[str, Any]:
    """Measure every candidate on ``data_path`` and write ``out_dir/pick.json``.

    Returns:
        The pick result (what ``pick.json`` holds).

    With ``options.task`` other than ``retrieval``, ``data_path`` is that task's JSONL file
    and the pick is :func:`~embedstack.eval.pick.task_run.run_task_pick`'s.

    Raises:
        InvalidInput: bad data or options (see :func:`load_pick_data`, :class:`PickOptions`),
            a task file without ``--task`` or a BEIR folder with it.
        ModelNotFound: an unknown model, or one not fetched (the message says what to run).

    Example:
        >>> result = run_pick("../shared/datasets/scifact", "out",
        ...                   PickOptions(models=("all-MiniLM-L6-v2",)))  # doctest: +SKIP
        >>> result["recommendation"]["candidate"]  # doctest: +SKIP
        'all-MiniLM-L6-v2|384|int8|hybrid'
    """

    options = options or PickOptions()
    start = time.perf_counter()
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InvalidInput(f"--out {out}: exists and is not a folder")
    if options.task != "retrieval":
        from embedstack.eval.pick.task_run import run_task_pick

        result = run_task_pick(data_path, out, options, command=command, start=start)
        write_pick(result, out)
        return result
    refuse_task_file(data_path)
    prices = load_prices(options.price_file)
    data = load_pick_data(
        data_path,
        split=options.split,
        seed=options.seed,
        max_proxy_queries=options.max_proxy_queries,
    )
    specs, warnings = select_models(options)
    build_grid(specs, options, len(data.doc_ids))  # bad --dims/--modes fail before probing
    out.mkdir(parents=True, exist_ok=True)
    steps = Steps(options.show_progress)
    counts, counter = token_counts(data.doc_texts, seed=options.seed)
    cache = options.cache_dir or cache_dir() / "eval-embeddings"
    plan = plan_models(specs, data, options, start, cache)
    encoders: dict[str, Any] = {}
    docs: dict[str, np.ndarray] = {}
    models: dict[str, dict[str, Any]] = {}
    share_over: dict[str, float] = {}
    not_measured = list(plan.not_measured)
    for planned in plan.models:
        spec, encoder = planned.spec, planned.encoder
        probe = planned.probes.get(planned.precision)
        timed = None
        if probe is not None:
            timed = (
                probe["estimated_encode_s"],
                f"vectors from cache; throughput from the plan's probe of {probe['docs']} "
                "sampled documents",
            )
        try:
            matrix, encode_s, timing = m.encode_corpus(
                encoder,
                data.doc_texts,
                cache,
                steps,
                seed=options.seed,
                beir=data.beir,
                ids=data.doc_ids,
                precision=planned.precision,
                timed=timed,
                deadline=plan.deadline,
            )
        except m.OutOfTime as exc:
            not_measured.append(stopped(spec.name, exc, plan.entry or {}))
            continue
        encoders[spec.name], docs[spec.name] = encoder, matrix
        limit = int(getattr(encoder, "max_length", spec.max_length))
        share_over[spec.name] = float(np.mean(counts > limit)) if counts.size else 0.0
        models[spec.name] = model_entry(
            spec, encoder, encode_s, len(data.doc_ids), timing, share_over[spec.name], planned
        )
    kept = [s for s in specs if s.name in models]
    if specs and not kept and not any(mode == "bm25" for mode in options.modes or ("bm25",)):
        raise InvalidInput(
            f"no model fits --time-budget-min {options.time_budget_min:g}: "
            + "; ".join(entry["message"] for entry in not_measured)
        )
    grid, grid_warnings = build_grid(kept, options, len(data.doc_ids))
    warnings += grid_warnings
    warnings += [entry["message"] for entry in not_measured]
    warnings += [int8_warning(name, entry) for name, entry in models.items()
                 if entry["encoder_precision"] == "int8"]  # fmt: skip
    for warning in warnings:  # also in recommendation.warnings, which the CLI prints
        logger.info("%s", warning)
    needs_bm25 = any(c.mode in ("bm25", "hybrid") for c in grid)
    bm25 = m.Bm25(data.doc_ids, data.doc_texts, out / ".pick-bm25") if needs_bm25 else None
    try:
        return _measure_all(
            data,
            grid,
            encoders,
            docs,
            models,
            bm25,
            prices,
            options,
            steps,
            out,
            start,
            warnings,
            share_over,
            counts,
            counter,
            command,
            plan.entry,
            not_measured,
        )
    finally:
        if bm25 is not None:
            bm25.close()


def _measure_all(
    data: PickData,
    grid: list[CandidateSpec],
    encoders: dict[str, Any],
    docs: dict[str, np.ndarray],
    models: dict[str, dict[str, Any]],
    bm25: m.Bm25 | None,
    prices: Prices,
    options: PickOptions,
    steps: Steps,
    out: Path,
    start: float,
    warnings: list[str],
    share_over: dict[str, float],
    counts: np.ndarray,
    counter: str,
    command: str | None,
    plan_entry: dict[str, Any] | None,
    not_measured: list[dict[str, Any]],
) -> dict[str, Any]:
    qids = [q for q, text in data.queries.items() if text.strip()]
    if len(qids) < len(data.queries):
        warnings.append(f"{len(data.queries) - len(qids)} blank queries left out")
    texts = [data.queries[q] for q in qids]
    pilot = pilot_seconds(encoders, grid, docs, bm25, texts) if options.time_budget_min else 0.0
    take, note = fit_queries(options, start, len(qids), pilot)
    if take < len(qids):
        rng = np.random.default_rng(options.seed)
        keep = sorted(rng.choice(len(qids), take, replace=False))
        qids = [qids[i] for i in keep]
        texts = [texts[i] for i in keep]
        logger.info("%s", note)
    qrels = {q: data.qrels[q] for q in qids}
    runs: dict[str, m.ModelRun] = {}
    for name, encoder in encoders.items():
        vecs, wall, cpu = m.encode_queries(encoder, texts, steps)
        entry = models[name]
        runs[name] = m.ModelRun(
            name,
            entry["model_id"],
            docs[name],
            entry["encode_s"],
            entry["encode_docs_per_s"],
            entry["encode_timing"],
            vecs,
            wall,
            cpu,
        )
    lexical = bm25.run(texts) if bm25 is not None else None
    cands: list[dict[str, Any]] = []
    per_query: dict[str, np.ndarray] = {}
    with steps.task("measuring candidates (queries)", len(grid) * len(qids)) as advance:
        for cand in grid:
            model = runs.get(cand.model) if cand.model else None
            result = m.measure(cand, qids, data.doc_ids, model, lexical, advance)
            entry, scores = candidate_entry(cand, result, qrels, prices, options, models)
            cands.append(entry)
            per_query[cand.id] = scores
    mark_front(cands, MAIN_METRIC, options)
    significance(cands, per_query, options.n_permutations, options.seed)
    context = {
        "evaluation": data.evaluation,
        "n_queries": len(qids),
        "n_docs": len(data.doc_ids),
        "share_over": share_over,
        "warnings": warnings,
    }
    rec = recommend(cands, per_query, models, options, context)
    q_tokens, _ = token_counts(texts, seed=options.seed)
    pick: dict[str, Any] = {
        "kind": "embedstack.pick",
        "format_version": FORMAT_VERSION,
        "created": _now(),
        "command": command,
        "elapsed_s": 0.0,
        "task": "retrieval",
        "data": {
            "path": str(data.path),
            "name": data.name,
            "evaluation": data.evaluation,
            "proxy_note": data.proxy_note,
            "split": data.split,
            "n_docs": len(data.doc_ids),
            "n_queries": len(qids),
            "n_queries_available": len(data.queries),
            "queries_subsampled": note is not None,
            "subsample_note": note,
            "mean_doc_tokens": float(counts.mean()) if counts.size else 0.0,
            "share_docs_over_512_tokens": float(np.mean(counts > 512)) if counts.size else 0.0,
            "token_counter": counter,
            "skipped": data.skipped,
        },
        "budgets": {
            "latency_ms": options.latency_budget_ms,
            "storage_gb": options.storage_budget_gb,
            "corpus_size": options.corpus_size,
            "time_budget_min": options.time_budget_min,
        },
        "prices": prices_entry(prices, counts, q_tokens, options.corpus_size),
        "plan": plan_entry,
        "models": list(models.values()),
        "not_measured": not_measured,
        "candidates": cands,
        "recommendation": rec,
    }
    pick["elapsed_s"] = time.perf_counter() - start
    write_pick(pick, out)
    return pick


def write_pick(result: dict[str, Any], out: Path) -> list[Path]:
    """Write ``out/pick.json`` atomically, then the report when the report module exists.

    Returns:
        The files written.
    """
    target = out / "pick.json"
    tmp = out / "pick.json.tmp"
    tmp.write_text(json.dumps(result, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    os.replace(tmp, target)
    written = [target]
    try:
        from embedstack.eval.report import render_pick  # type: ignore[attr-defined,unused-ignore]
    except ImportError:
        logger.info("embedstack.eval.report is not available: wrote pick.json only")
        return written
    from embedstack.errors import MissingDependency

    try:
        written += list(render_pick(result, out))
    except MissingDependency as exc:  # pick.json holds every measurement: keep it, say why
        logger.warning("report.md / report.html not written: %s", exc)
    return written
