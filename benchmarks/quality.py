"""Retrieval and STS quality across Matryoshka dimensions and storage precisions.

For each BEIR dataset the corpus is encoded **once**; every (dim x precision) setting then
reuses those vectors through ``evaluate_dense(doc_embeddings=...)`` (queries are encoded by
``evaluate_dense`` per setting, one at a time). Precisions:

* ``float32``: exact dot product;
* ``int8``: float query against per-dimension calibrated int8 document codes;
* ``binary``: Hamming top-``depth`` over sign bits, reordered by float query . +-1 bits;
* ``binary+rescore``: Hamming top-``depth * 4`` candidates rescored with float query . int8.

Every metric is also reported as *retention*, the ratio to float32 at the same dim. Because
``depth`` (1000) times the library's rescore multiplier (4) is close to or above the corpus
size of SciFact (5,183) and NFCorpus (3,633), ``binary+rescore`` at that depth rescoring
nearly the whole corpus; a second table therefore sweeps the multiplier at a top-``k`` request
(``--sweep-k``, default 10), where the candidate pool is what a search really pays for.

STS-B Spearman (cosine of symmetric embeddings) is measured at each dim. Prints Markdown
tables and writes one JSON report with the environment and the exact command line.

Example:
    .venv/bin/python benchmarks/quality.py --datasets ../shared/datasets
    .venv/bin/python benchmarks/quality.py --quantize int8 --dims 384 \\
        --out benchmarks/results/quality_int8.json --baseline benchmarks/results/quality.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

import numpy as np

from embedstack import DEFAULT_MODEL, Encoder, vectors
from embedstack.eval import evaluate, evaluate_dense, evaluate_sts, load_beir, load_corpus, load_sts
from embedstack.vectorset import VectorSet

ROOT = Path(__file__).resolve().parents[1]
SETTINGS: tuple[tuple[str, str, bool], ...] = (  # label, precision, rescore
    ("float32", "float32", True),
    ("int8", "int8", True),
    ("binary", "binary", False),
    ("binary+rescore", "binary", True),
)
METRICS = ("ndcg@10", "recall@100", "mrr@10")
# Acceptance targets (default model, ONNX fp32, full dim): value and tolerance.
REPRO = {"scifact": (0.645, 0.003), "nfcorpus": (0.316, 0.003), "stsb": (0.820, 0.005)}
MIN_RETENTION = {"int8": 0.99, "binary+rescore": 0.95}
MIN_INT8_ENCODER = 0.995


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def _names(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--datasets", type=Path, default=ROOT.parent / "shared" / "datasets")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "quality.json")
    p.add_argument("--datasets-list", type=_names, default=_names("scifact,nfcorpus"))
    p.add_argument("--dims", type=_ints, default=_ints("384,256,128,64"))
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument(
        "--quantize",
        choices=("none", "int8"),
        default="none",
        help="encoder weights: fp32 (none) or dynamic int8 ONNX",
    )
    p.add_argument("--sts", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--depth", type=int, default=1000, help="documents ranked per query")
    p.add_argument(
        "--sweep-k",
        type=int,
        default=10,
        help="results requested in the binary+rescore multiplier sweep (0: no sweep)",
    )
    p.add_argument("--sweep-multipliers", type=_ints, default=_ints("1,2,4,8,16,32,100"))
    p.add_argument(
        "--baseline",
        type=Path,
        default=None,
        help="an fp32 report of this script, to compare an int8 encoder against",
    )
    p.add_argument(
        "--cache",
        type=Path,
        default=None,
        help="folder to keep/reuse corpus embeddings (.npy) between runs",
    )
    p.add_argument("--check", action="store_true", help="exit 1 when an acceptance check fails")
    return p.parse_args(argv)


def environment() -> dict[str, Any]:
    versions: dict[str, str | None] = {}
    for dist in ("embedstack", "numpy", "onnxruntime", "tokenizers", "pytrec-eval-terrier"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": affinity,
        "load_average_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "versions": versions,
    }


def _interpreter() -> str:
    """The Python that ran this, relative to the working directory when inside it."""
    exe = Path(sys.executable)
    try:
        return str(exe.relative_to(Path.cwd()))
    except ValueError:
        return str(exe)


class _MemoEncoder:
    """Delegates to an encoder, memoizing ``encode`` so STS at several dims encodes once."""

    def __init__(self, encoder: Encoder) -> None:
        self._encoder = encoder
        self._memo: dict[tuple[str, ...], np.ndarray] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._encoder, name)

    def encode(self, texts: list[str]) -> np.ndarray:
        key = tuple(texts)
        if key not in self._memo:
            self._memo[key] = self._encoder.encode(list(key))
        return self._memo[key]


def corpus_embeddings(
    encoder: Encoder, dataset: Any, cache: Path | None
) -> tuple[list[str], np.ndarray, float | None]:
    """``(ids, (n, dim) float32, seconds to encode or None when read from the cache)``."""
    ids, texts = load_corpus(dataset)
    texts = [t or i for i, t in zip(ids, texts, strict=True)]  # as evaluate_dense does
    tag = f"{dataset.name}-{encoder.model_id.replace('/', '_')}-{encoder.quantize or 'fp32'}"
    if cache is not None and (cache / f"{tag}.npy").is_file():
        saved = json.loads((cache / f"{tag}.json").read_text())
        if saved["ids"] == ids:
            return ids, np.load(cache / f"{tag}.npy", allow_pickle=False), None
    start = time.perf_counter()
    matrix = encoder.encode_documents(texts)
    seconds = time.perf_counter() - start
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
        np.save(cache / f"{tag}.npy", matrix, allow_pickle=False)
        (cache / f"{tag}.json").write_text(json.dumps({"ids": ids}))
    return ids, matrix, seconds


def rescore_sweep(
    encoder: Encoder,
    dataset: Any,
    ids: list[str],
    docs: np.ndarray,
    dims: list[int],
    k: int,
    multipliers: list[int],
) -> list[dict[str, Any]]:
    """nDCG@k of binary+rescore at a top-``k`` request for each candidate multiplier,
    against float32 and int8 at the same dim (all from one batch encoding of the queries)."""
    qids = list(dataset.queries)
    queries_full = encoder.encode_queries([dataset.queries[q] for q in qids])
    cutoff = [k]
    rows = []
    for dim in dims:
        d = docs if dim == docs.shape[1] else vectors.truncate(docs, dim)
        q = queries_full if dim == queries_full.shape[1] else vectors.truncate(queries_full, dim)

        def score(store: VectorSet, mult: int = 4, q: np.ndarray = q) -> float:
            s, idx = store.search(q, k, rescore_multiplier=mult)
            run = {
                qid: {ids[int(i)]: float(v) for v, i in zip(s[r], idx[r], strict=True)}
                for r, qid in enumerate(qids)
            }
            return evaluate(dataset.qrels, run, cutoff)[f"ndcg@{k}"]

        ref = score(VectorSet.from_float(d, "float32"))
        int8 = score(VectorSet.from_float(d, "int8"))
        binary = VectorSet.from_float(d, "binary", rescore=True)
        for mult in multipliers:
            value = score(binary, mult)
            rows.append(
                {
                    "dim": dim,
                    "k": k,
                    "multiplier": mult,
                    "candidates": min(k * mult, len(ids)),
                    f"ndcg@{k}": value,
                    "float32": ref,
                    "int8": int8,
                    "retention": value / ref,
                }
            )
    return rows


def fmt_bytes(n: int) -> str:
    return f"{n / 2**20:.2f} MiB" if n >= 2**20 else f"{n / 2**10:.0f} KiB"


def dataset_table(name: str, rows: list[dict[str, Any]]) -> str:
    head = (
        f"**{name}** ({rows[0]['n_queries']} queries)\n\n"
        "| dim | precision | nDCG@10 | ret. | recall@100 | ret. | MRR@10 | ret. "
        "| index | p50 ms |\n"
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|\n"
    )
    lines = []
    for r in rows:
        cells = [str(r["dim"]), r["setting"]]
        for m in METRICS:
            cells += [f"{r[m]:.4f}", f"{r['retention'][m]:.1%}"]
        cells += [fmt_bytes(r["index_bytes"]), f"{r['latency_ms_p50']:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return head + "\n".join(lines) + "\n"


def sweep_table(name: str, rows: list[dict[str, Any]]) -> str:
    k = rows[0]["k"]
    head = (
        f"**{name}**, binary+rescore at a top-{k} request\n\n"
        f"| dim | multiplier | candidates | nDCG@{k} | float32 | int8 | retention |\n"
        "|---:|---:|---:|---:|---:|---:|---:|\n"
    )
    body = "\n".join(
        f"| {r['dim']} | {r['multiplier']} | {r['candidates']} | {r[f'ndcg@{k}']:.4f} "
        f"| {r['float32']:.4f} | {r['int8']:.4f} | {r['retention']:.1%} |"
        for r in rows
    )
    return head + body + "\n"


def checks_for(report: dict[str, Any], baseline: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Acceptance checks that apply to this run's configuration."""
    out: list[dict[str, Any]] = []
    cfg = report["config"]
    full = cfg["full_dim"]
    default = cfg["model"] == DEFAULT_MODEL and cfg["backend"] == "onnx"
    for name, ds in report["datasets"].items():
        by = {(r["dim"], r["setting"]): r for r in ds["settings"]}
        if default and cfg["quantize"] is None and name in REPRO and (full, "float32") in by:
            target, tol = REPRO[name]
            value = by[(full, "float32")]["ndcg@10"]
            out.append(
                {
                    "check": f"{name} nDCG@10 fp32 = {target} ± {tol}",
                    "value": value,
                    "pass": abs(value - target) <= tol,
                }
            )
        if name == "scifact":
            for (dim, setting), r in sorted(by.items(), key=lambda kv: -kv[0][0]):
                if setting in MIN_RETENTION:
                    ret = r["retention"]["ndcg@10"]
                    out.append(
                        {
                            "check": f"scifact dim {dim} {setting} retains "
                            f">= {MIN_RETENTION[setting]:.0%} nDCG@10",
                            "value": ret,
                            "pass": ret >= MIN_RETENTION[setting],
                        }
                    )
        if cfg["quantize"] == "int8" and baseline and name == "scifact":
            base = {(r["dim"], r["setting"]): r for r in baseline["datasets"][name]["settings"]}
            for dim in sorted({d for d, s in by if s == "float32"}, reverse=True):
                if (dim, "float32") in base:
                    ratio = by[(dim, "float32")]["ndcg@10"] / base[(dim, "float32")]["ndcg@10"]
                    out.append(
                        {
                            "check": f"scifact dim {dim} int8 encoder retains >= "
                            f"{MIN_INT8_ENCODER:.1%} of fp32 nDCG@10",
                            "value": ratio,
                            "pass": ratio >= MIN_INT8_ENCODER,
                        }
                    )
    sts = report.get("sts")
    if sts and default and cfg["quantize"] is None:
        value = next((r["spearman"] for r in sts if r["dim"] == full), None)
        if value is not None:
            target, tol = REPRO["stsb"]
            out.append(
                {
                    "check": f"STS-B Spearman fp32 = {target} ± {tol}",
                    "value": value,
                    "pass": abs(value - target) <= tol,
                }
            )
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    root = args.datasets
    missing = [n for n in args.datasets_list if not (root / n / "corpus.jsonl").is_file()]
    if args.sts:
        missing += [] if (root / "stsb" / "sts-test.csv").is_file() else ["stsb/sts-test.csv"]
    if not root.is_dir() or missing:
        what = f"{root} does not exist" if not root.is_dir() else f"missing in {root}: {missing}"
        print(
            f"error: evaluation data not found ({what}); pass --datasets DIR holding "
            "scifact/, nfcorpus/, stsb/ (see ../shared/datasets/README.md)",
            file=sys.stderr,
        )
        return 2
    baseline = json.loads(args.baseline.read_text()) if args.baseline else None

    quantize: Literal["int8"] | None = None if args.quantize == "none" else "int8"
    encoder = Encoder(args.model, backend="onnx", quantize=quantize, show_progress=False)
    full = encoder.dim
    report: dict[str, Any] = {
        "command": shlex.join([_interpreter(), *sys.argv]),
        "executable": sys.executable,
        "cwd": os.getcwd(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "environment": environment(),
        "config": {
            "model": encoder.name,
            "model_id": encoder.model_id,
            "backend": "onnx",
            "quantize": quantize,
            "full_dim": full,
            "dims": args.dims,
            "depth": args.depth,
            "rescore_multiplier": 4,
            "sweep_k": args.sweep_k,
            "sweep_multipliers": args.sweep_multipliers,
        },
        "datasets": {},
    }
    tables: list[str] = []
    for name in args.datasets_list:
        dataset = load_beir(root / name, split="test")
        ids, docs, seconds = corpus_embeddings(encoder, dataset, args.cache)
        print(
            f"{name}: {len(ids)} docs encoded in "
            f"{'(cache)' if seconds is None else f'{seconds:.0f} s'}",
            file=sys.stderr,
        )
        rows: list[dict[str, Any]] = []
        for dim in args.dims:
            ref: dict[str, float] = {}
            for label, precision, rescore in SETTINGS:
                r = evaluate_dense(
                    encoder,
                    dataset,
                    dim=dim,
                    precision=precision,  # type: ignore[arg-type]
                    rescore=rescore,
                    depth=args.depth,
                    doc_embeddings=(ids, docs),
                )
                if label == "float32":
                    ref = {m: r[m] for m in METRICS}
                r["setting"] = label
                r["dim"] = dim
                r["retention"] = {m: (r[m] / ref[m] if ref[m] else float("nan")) for m in METRICS}
                rows.append(r)
                print(
                    f"  dim {dim:>4} {label:<15} nDCG@10 {r['ndcg@10']:.4f} "
                    f"({r['retention']['ndcg@10']:.1%})",
                    file=sys.stderr,
                )
        entry: dict[str, Any] = {"n_docs": len(ids), "encode_seconds": seconds, "settings": rows}
        tables.append(dataset_table(name, rows))
        if args.sweep_k > 0:
            entry["rescore_sweep"] = rescore_sweep(
                encoder, dataset, ids, docs, args.dims, args.sweep_k, args.sweep_multipliers
            )
            tables.append(sweep_table(name, entry["rescore_sweep"]))
        report["datasets"][name] = entry

    if args.sts:
        sts_data = load_sts(root / "stsb" / "sts-test.csv")
        memo = _MemoEncoder(encoder)
        sts = [{"dim": d, **evaluate_sts(memo, sts_data, dim=d)} for d in args.dims]  # type: ignore[arg-type]
        top = next((r["spearman"] for r in sts if r["dim"] == full), None)
        for r in sts:
            r["retention"] = r["spearman"] / top if top else None
        report["sts"] = sts
        tables.append(
            f"**STS-B test** ({sts[0]['n_pairs']} pairs), Spearman x 100 of cosine\n\n"
            "| dim | Spearman | vs full dim |\n|---:|---:|---:|\n"
            + "\n".join(
                f"| {r['dim']} | {100 * r['spearman']:.2f} | "
                + (f"{r['retention']:.1%}" if r["retention"] else "n/a")
                + " |"
                for r in sts
            )
            + "\n"
        )

    report["checks"] = checks_for(report, baseline)
    report["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1, default=float) + "\n")

    print(f"`{report['command']}`\n")
    print("\n".join(tables))
    if report["checks"]:
        print("| acceptance check | value | |\n|---|---:|---|")
        for c in report["checks"]:
            print(f"| {c['check']} | {c['value']:.4f} | {'pass' if c['pass'] else 'FAIL'} |")
    print(f"\nreport written to {args.out}", file=sys.stderr)
    failed = [c for c in report["checks"] if not c["pass"]]
    return 1 if args.check and failed else 0


if __name__ == "__main__":
    sys.exit(main())
