"""The numbers ``encode_throughput.py`` reports from its timed runs and saved vectors.

Per system: the median docs/s over the repeats (and every run), the ratio to
sentence-transformers' torch backend (``st``), the ratio at equal precision for our ONNX
systems (``onnx-fp32`` / ``st-onnx-fp32``, ``onnx-int8`` / ``st-onnx-int8``), peak RSS,
min/mean cosine of its vectors to the reference's (``st``, fp32 torch; ``onnx-fp32`` where
sentence-transformers cannot run the model) and of each int8 system to its own fp32 system,
and the ONNX files it ran.
"""

from __future__ import annotations

import statistics
from typing import Any

import numpy as np

EQUAL_PRECISION = {"onnx-fp32": "st-onnx-fp32", "onnx-int8": "st-onnx-int8"}
FP32_OF = {
    "onnx-int8": "onnx-fp32",
    "onnx-int8-one-graph": "onnx-fp32",
    "st-onnx-int8": "st-onnx-fp32",
}


def key(system: str) -> str:
    """``st-onnx-fp32`` -> ``st_onnx_fp32``, for field names such as ``ratio_vs_...``."""
    return system.replace("-", "_")


def cosines(ours: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """Min and mean cosine between matching rows of two ``(n, dim)`` arrays."""
    a = ours / np.linalg.norm(ours, axis=1, keepdims=True)
    b = reference / np.linalg.norm(reference, axis=1, keepdims=True)
    cos = np.einsum("ij,ij->i", a.astype(np.float64), b.astype(np.float64))
    return {"min": round(float(cos.min()), 6), "mean": round(float(cos.mean()), 6)}


def summarize(
    systems: list[str], runs: dict[str, list[dict[str, Any]]], vectors: dict[str, np.ndarray]
) -> dict[str, Any]:
    """One entry per system from its runs (``docs_per_s``, ``peak_rss_mib``, ``files``) and
    its vectors (the first repeat's)."""
    medians = {s: statistics.median(r["docs_per_s"] for r in runs[s]) for s in systems}
    reference = "st" if "st" in systems else "onnx-fp32"
    out: dict[str, Any] = {}
    for system in systems:
        entry: dict[str, Any] = {
            "docs_per_s": round(medians[system], 2),
            "docs_per_s_runs": [round(r["docs_per_s"], 2) for r in runs[system]],
        }
        if "st" in systems:
            entry["ratio_vs_st"] = round(medians[system] / medians["st"], 3)
        peer = EQUAL_PRECISION.get(system)
        if peer is not None and peer in systems:
            entry[f"ratio_vs_{key(peer)}"] = round(medians[system] / medians[peer], 3)
        entry["peak_rss_mib"] = round(max(r["peak_rss_mib"] for r in runs[system]), 1)
        entry["child_seconds"] = round(
            statistics.median(r["child_seconds"] for r in runs[system]), 1
        )
        if system != reference:
            entry[f"cosine_vs_{key(reference)}"] = cosines(vectors[system], vectors[reference])
        fp32 = FP32_OF.get(system)
        if fp32 is not None and fp32 in systems:
            entry[f"cosine_vs_{key(fp32)}"] = cosines(vectors[system], vectors[fp32])
        if runs[system][0].get("files"):
            entry["files"] = runs[system][0]["files"]
        out[system] = entry
    return out


def equal_precision(systems: dict[str, Any]) -> dict[str, float]:
    """Ours / sentence-transformers' ONNX docs/s at equal precision, where both ran."""
    found = {}
    for ours, peer in EQUAL_PRECISION.items():
        field = f"ratio_vs_{key(peer)}"
        if field in systems.get(ours, {}):
            found[ours] = systems[ours][field]
    return found


def combine(reports: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """One model's report as it is; several as ``{"models": ..., "summary": ...}`` where the
    summary holds each model's equal-precision and vs-``st`` ratios."""
    if len(reports) == 1:
        return next(iter(reports.values()))
    summary = {}
    for name, report in reports.items():
        line: dict[str, Any] = {"equal_precision": report["equal_precision"]}
        for system in ("onnx-fp32", "onnx-int8"):
            ratio = report["systems"].get(system, {}).get("ratio_vs_st")
            if ratio is not None:
                line[f"{key(system)}_vs_st"] = ratio
        if report.get("skipped"):
            line["skipped"] = sorted(report["skipped"])
        summary[name] = line
    return {"models": reports, "summary": summary}
