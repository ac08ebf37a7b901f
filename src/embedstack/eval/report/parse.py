"""Parse one input of ``embedstack report``: a pick.json or an ``embedstack eval`` result.

Each parser checks the fields it uses and raises :class:`~embedstack.errors.InvalidInput`
naming the input and the key (``pick.json: candidates[3].metrics.ndcg@10 must be a number``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from embedstack.errors import InvalidInput
from embedstack.eval.report.study import Candidate, Run

__all__ = ["PICK_KIND", "read_eval", "read_pick", "read_result"]

PICK_KIND = "embedstack.pick"
FORMAT_VERSION = 1
# what `embedstack eval` reports that the candidate table shows (main metric first)
EVAL_RETRIEVAL_METRICS = ("ndcg@10", "recall@100", "mrr@10", "map@100")
EVAL_STS_METRICS = ("spearman",)


def read_result(path: Path) -> dict[str, Any]:
    """Parse one result file (strict JSON: ``NaN`` and ``Infinity`` are refused).

    Raises:
        InvalidInput: missing or unreadable file, invalid JSON, or not a JSON object.
    """

    def refuse(constant: str) -> Any:
        raise InvalidInput(f"{path}: {constant} is not valid JSON (use null for unmeasured)")

    if not path.is_file():
        raise InvalidInput(f"{path}: no such file")
    try:
        value = json.loads(path.read_text(encoding="utf-8"), parse_constant=refuse)
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"{path}: not UTF-8 text ({exc.reason})") from None
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"{path}: invalid JSON at line {exc.lineno}: {exc.msg}") from None
    except OSError as exc:
        raise InvalidInput(f"{path}: cannot read it: {exc.strerror}") from None
    if not isinstance(value, dict):
        raise InvalidInput(f"{path}: expected a JSON object, got {type(value).__name__}")
    return value


class _Reader:
    """Typed access to one input with error messages naming the input and the key."""

    def __init__(self, label: str) -> None:
        self.label = label

    def fail(self, where: str, what: str) -> InvalidInput:
        return InvalidInput(f"{self.label}: {where} {what}")

    def mapping(self, obj: Any, where: str) -> Mapping[str, Any]:
        if not isinstance(obj, Mapping):
            raise self.fail(where, f"must be an object, got {type(obj).__name__}")
        return obj

    def text(self, obj: Mapping[str, Any], key: str, where: str, *, optional: bool = False) -> Any:
        value = obj.get(key)
        if value is None and optional:
            return None
        if not isinstance(value, str) or not value:
            raise self.fail(f"{where}.{key}", f"must be a non-empty string, got {value!r}")
        return value

    def number(self, obj: Mapping[str, Any], key: str, where: str) -> float | None:
        value = obj.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail(f"{where}.{key}", f"must be a number or null, got {value!r}")
        if not math.isfinite(value):
            raise self.fail(f"{where}.{key}", f"must be finite, got {value!r}")
        return float(value)

    def integer(self, obj: Mapping[str, Any], key: str, where: str) -> int | None:
        value = obj.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise self.fail(f"{where}.{key}", f"must be a positive integer or null, got {value!r}")
        return value


def _pick_candidate(reader: _Reader, raw: Any, where: str, source: int) -> Candidate:
    obj = reader.mapping(raw, where)
    metrics_raw = reader.mapping(obj.get("metrics"), f"{where}.metrics")
    metrics = {str(k): reader.number(metrics_raw, k, f"{where}.metrics") for k in metrics_raw}
    main = reader.text(obj, "main_metric", where)
    if main not in metrics:
        raise reader.fail(f"{where}.main_metric", f"{main!r} is not one of its metrics")
    cost = obj.get("cost") or {}
    cost = reader.mapping(cost, f"{where}.cost")
    significance = obj.get("significance")
    if significance is not None:
        significance = reader.mapping(significance, f"{where}.significance")
        reader.number(significance, "delta", f"{where}.significance")
        reader.number(significance, "p_value", f"{where}.significance")
    misses = obj.get("budget_misses") or []
    if not isinstance(misses, list):
        raise reader.fail(f"{where}.budget_misses", "must be a list")
    within = obj.get("within_budgets")
    mode = reader.text(obj, "mode", where)
    return Candidate(
        id=reader.text(obj, "id", where),
        model=reader.text(obj, "model", where, optional=True) or mode,  # BM25 has no model
        dim=reader.integer(obj, "dim", where),
        full_dim=reader.integer(obj, "full_dim", where),
        precision=reader.text(obj, "precision", where, optional=True) or "-",
        mode=mode,
        metrics=metrics,
        main_metric=main,
        latency_ms_p50=reader.number(obj, "latency_ms_p50", where),
        latency_ms_p99=reader.number(obj, "latency_ms_p99", where),
        bytes_per_doc=reader.number(obj, "bytes_per_doc", where),
        encode_docs_per_s=reader.number(obj, "encode_docs_per_s", where),
        usd_per_1m_queries=reader.number(cost, "usd_per_1m_queries", f"{where}.cost"),
        storage_usd_per_month=reader.number(cost, "storage_usd_per_month", f"{where}.cost"),
        significance=significance,
        within_budgets=within if isinstance(within, bool) else None,
        budget_misses=tuple(reader.mapping(m, f"{where}.budget_misses[]") for m in misses),
        source=source,
    )


def read_pick(raw: Mapping[str, Any], label: str, source: int) -> tuple[dict[str, Any], Run]:
    reader = _Reader(label)
    version = raw.get("format_version")
    if version != FORMAT_VERSION:
        raise reader.fail("format_version", f"{version!r} is not supported (expected 1)")
    data = reader.mapping(raw.get("data"), "data")
    evaluation = data.get("evaluation")
    if evaluation not in ("judged", "proxy"):
        raise reader.fail("data.evaluation", f"must be 'judged' or 'proxy', got {evaluation!r}")
    raw_candidates = raw.get("candidates")
    if not isinstance(raw_candidates, list) or not raw_candidates:
        raise reader.fail("candidates", "must be a non-empty list")
    candidates = [
        _pick_candidate(reader, c, f"candidates[{i}]", source) for i, c in enumerate(raw_candidates)
    ]
    recommendation = raw.get("recommendation")
    if recommendation is not None:
        recommendation = reader.mapping(recommendation, "recommendation")
    notes = []
    if data.get("queries_subsampled"):
        notes.append(data.get("subsample_note") or "queries were subsampled")
    models = raw.get("models") or []
    left_out = raw.get("not_measured") or []
    if not isinstance(left_out, list):
        raise reader.fail("not_measured", "must be a list")
    for i, entry in enumerate(left_out):
        where = f"not_measured[{i}]"
        reader.text(reader.mapping(entry, where), "model", where)
        reader.text(entry, "message", where)
        reader.number(entry, "estimated_encode_s", where)
    run = Run(
        kind="pick",
        label=label,
        command=raw.get("command") if isinstance(raw.get("command"), str) else None,
        elapsed_s=reader.number(raw, "elapsed_s", "top level"),
        created=raw.get("created") if isinstance(raw.get("created"), str) else None,
        recommendation=recommendation,
        budgets=reader.mapping(raw.get("budgets") or {}, "budgets"),
        models=tuple(reader.mapping(m, "models[]") for m in models),
        not_measured=tuple(left_out),
    )
    return {
        "task": str(raw.get("task") or "retrieval"),
        "dataset": str(data.get("name") or data.get("path") or "unnamed data"),
        "evaluation": evaluation,
        "candidates": candidates,
        "notes": [str(n) for n in notes if n],
        "proxy_note": str(data.get("proxy_note") or "") if evaluation == "proxy" else "",
        "stored_front": {
            c["id"] for c in raw_candidates if isinstance(c, Mapping) and c.get("pareto")
        },
        "n_queries": data.get("n_queries"),
        "prices": reader.mapping(raw.get("prices") or {}, "prices"),
        "data": data,
    }, run


def read_eval(raw: Mapping[str, Any], label: str, source: int) -> tuple[dict[str, Any], Run]:
    reader = _Reader(label)
    config = reader.mapping(raw.get("config"), "config")
    keys: tuple[str, ...]
    if "ndcg@10" in raw:
        task, keys = "retrieval", EVAL_RETRIEVAL_METRICS
    elif "spearman" in raw:
        task, keys = "sts", EVAL_STS_METRICS
    else:
        raise reader.fail("top level", "has neither ndcg@10 nor spearman: not an eval result")
    metrics = {k: reader.number(raw, k, "top level") for k in keys if k in raw}
    mode = str(config.get("mode") or config.get("retriever") or ("sts" if task == "sts" else "?"))
    if config.get("pipeline"):
        mode = f"pipeline {config['pipeline']}"
    model = "bm25" if mode == "bm25" else reader.text(config, "model", "config")
    index = config.get("index")  # an index-based eval (bm25, hybrid) records its stats
    index = index if isinstance(index, Mapping) else {}
    dim = None
    if mode != "bm25":
        dim = reader.integer(config, "dim", "config")
        dim = dim if dim is not None else reader.integer(index, "dim", "config.index")
    precision = "-" if mode == "bm25" else str(config.get("precision") or "float32")
    n_docs = raw.get("n_docs") or config.get("n_docs") or index.get("n_docs")
    index_bytes = reader.number(raw, "index_bytes", "top level")
    per_doc = None
    if index_bytes is not None and isinstance(n_docs, int) and n_docs > 0:
        per_doc = index_bytes / n_docs
    candidate = Candidate(
        id="bm25" if mode == "bm25" else f"{model}|{dim}|{precision}|{mode}",
        model=model,
        dim=dim,
        full_dim=reader.integer(config, "full_dim", "config"),
        precision=precision,
        mode=mode,
        metrics=metrics,
        main_metric=keys[0],
        latency_ms_p50=reader.number(raw, "latency_ms_p50", "top level"),
        latency_ms_p99=reader.number(raw, "latency_ms_p99", "top level"),
        bytes_per_doc=per_doc,
        source=source,
    )
    dataset = str(config.get("dataset") or "unnamed data")
    split = config.get("split")
    notes = []
    if per_doc is None and index_bytes is not None:
        notes.append(
            f"{label} records no document count, so its bytes per document are unknown "
            f"({index_bytes:,.0f} index bytes in all)"
        )
    run = Run(kind="eval", label=label, command=None, elapsed_s=None, created=None)
    return {
        "task": task,
        "dataset": dataset,
        "split": split,
        "evaluation": str(config.get("evaluation") or "judged"),
        "candidates": [candidate],
        "notes": notes,
        "proxy_note": "",
        "stored_front": set(),
        "n_queries": raw.get("n_queries") or raw.get("n_pairs"),
        "prices": {},
        "data": {},
    }, run
