"""Encoding throughput: embedstack's Encoder against sentence-transformers, same model.

Encodes one BEIR corpus (default SciFact; text = (title + " " + text).strip(), with the
model's document prefix in front, e.g. ``"passage: "`` for multilingual-e5-small: every
system gets the identical strings) with

* ``st``: ``SentenceTransformer(folder, device="cpu").encode(texts, batch_size=32,
  normalize_embeddings=True)``, the torch backend (the project's sentence-transformers);
* ``st-onnx-fp32``: sentence-transformers' own ONNX backend over the file its
  ``export_optimized_onnx_model(model, "O3", copy)`` writes: ``SentenceTransformer(copy,
  backend="onnx", model_kwargs={"file_name": "onnx/model_O3.onnx", ...}).encode(...)`` with
  the same arguments as ``st``;
* ``st-onnx-int8``: the same over its ``export_dynamic_quantized_onnx_model(model, CONFIG,
  copy)`` file (``CONFIG``: the one sentence-transformers offers for this CPU, ``--st-int8``);
* ``onnx-fp32``: ``Encoder(model, backend="onnx")``;
* ``onnx-int8``: ``Encoder(model, backend="onnx", quantize="int8")``;
* ``torch`` (with ``--torch``): ``Encoder(model, backend="torch")``;
* ``onnx-int8-one-graph`` (with ``--one-graph``): ``onnx-int8`` with its flash-attention graph
  for unpadded batches switched off, i.e. the int8 encoder before that graph existed;

all over the same local model folder (``--model``, or several with ``--models a,b`` or
``--models local``: every local transformer model of the registry), found through
embedstack's registry (``open_model``), with the same thread count (``--threads``:
``torch.set_num_threads`` for torch, ONNX Runtime intra-op threads for every ONNX system) and
the same token limit (``max_seq_length`` set to the model's). Exports are built once per
model before timing: ours in embedstack's cache (as in real use), sentence-transformers'
into a temporary copy of the model folder (``st_onnx_peer.py`` gives the exact calls, why
the peer runs from its own package folder, and how it is installed: ``--install-st-onnx``).
A model sentence-transformers cannot load (an ONNX-only folder) times only our systems and
says why.

Every measurement runs in a fresh child process so that its peak RSS
(``VmHWM`` of ``/proc/self/status``, model load included) belongs to that system alone.
The child loads the model, warms up on 8 texts, then times one full ``encode`` of the same
texts (tokenization, batching, pooling and normalization included; nothing is cached
between repeats). Systems alternate within each repeat and their order rotates between
repeats, so machine noise hits all of them; docs/s is the median over ``--repeats``.

Prints one JSON object (also written to ``--out``); per model: docs/s per system, ratios vs
``st`` and, at equal precision, ours vs sentence-transformers' ONNX (``onnx-fp32`` /
``st-onnx-fp32``, ``onnx-int8`` / ``st-onnx-int8``), min/mean cosine of every system's
vectors vs ``st``'s (fp32 torch) and of each int8 system vs its own fp32, peak RSS, and the
files each ONNX system ran. With several models: ``{"models": {name: report}, "summary"}``.

Example:
    .venv/bin/python benchmarks/encode_throughput.py --install-st-onnx --limit 40 --repeats 1
    .venv/bin/python benchmarks/encode_throughput.py --models local --limit 600 --repeats 3 \
        --out results.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

import encode_summary
import st_onnx_peer

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

ST_SYSTEMS = ("st", "st-onnx-fp32", "st-onnx-int8")
SYSTEMS = (*ST_SYSTEMS, "onnx-fp32", "onnx-int8", "torch", "onnx-int8-one-graph")
WARMUP = 8


def _texts(args: argparse.Namespace) -> list[str]:
    from embedstack.eval import load_corpus

    _, texts = load_corpus(args.datasets / args.dataset)
    return texts[: args.limit] if args.limit else texts


def _resolve(name: str) -> tuple[Path, Any]:
    """The model's folder and its embedstack config (prefixes, max length, weights folder)."""
    from embedstack.encoders.loading import load_model_config
    from embedstack.encoders.runtime import open_model
    from embedstack.errors import EmbedstackError

    try:
        found = open_model(name)
        return found.path, load_model_config(found.path, found.spec)
    except EmbedstackError as error:
        raise SystemExit(f"{name}: {error}") from None


def _local_models() -> list[str]:
    """Every registered dense transformer model whose folder is on this machine."""
    from embedstack.encoders.registry import list_models
    from embedstack.encoders.static import is_static_folder

    names = []
    for spec in list_models():
        path = spec.bundled_path() if spec.kind == "dense" and not spec.factory else None
        if path is not None and not is_static_folder(path):
            names.append(spec.name)
    return names


def _encoder(system: str, args: argparse.Namespace) -> Any:
    from embedstack import Encoder

    encoder = Encoder(
        args.model,
        backend="torch" if system == "torch" else "onnx",
        quantize="int8" if system.startswith("onnx-int8") else None,
        batch_tokens=args.batch_tokens,
        batch_size=args.batch_size,
        threads=args.threads,
        cache_dir=args.cache_dir,
        show_progress=False,
    )
    if system == "onnx-int8-one-graph":
        runner: Any = encoder._model
        runner.unpadded_path = None  # every batch through the default int8 graph
    return encoder


def _child(args: argparse.Namespace) -> None:
    """Measure one system once; print a JSON line; save the vectors to ``--vectors``."""
    if args.child == "st-onnx-export":
        print(json.dumps(st_onnx_peer.export(args.folder, args.work, args.st_int8, args.threads)))
        return
    if args.child == "prepare":  # our cached exports, built here so the parent stays small
        from embedstack import Encoder

        for quantize in (None, "int8"):
            Encoder(args.model, cache_dir=args.cache_dir, quantize=quantize, show_progress=False)
        print("{}")
        return
    texts: list[str] = json.loads(args.texts.read_text(encoding="utf-8"))
    files: list[str] = []
    if args.child in ST_SYSTEMS or args.child == "torch":
        import torch

        torch.set_num_threads(args.threads)
    if args.child in ST_SYSTEMS:
        if args.child == "st":
            from sentence_transformers import SentenceTransformer

            model = SentenceTransformer(str(args.folder), device="cpu")
            model.max_seq_length = args.max_length
        else:
            file_name = args.st_onnx_file
            model = st_onnx_peer.load(str(args.folder), file_name, args.threads, args.max_length)
            files = [file_name]

        def run(items: list[str]) -> np.ndarray:
            return np.asarray(
                model.encode(
                    items,
                    batch_size=st_onnx_peer.ST_BATCH_SIZE,
                    normalize_embeddings=True,
                    show_progress_bar=False,
                )
            )
    else:
        encoder = _encoder(args.child, args)
        paths = getattr(encoder._model, "paths", {})
        files = [str(p) for p in paths.values()]
        unpadded = getattr(encoder._model, "unpadded_path", None)
        if unpadded:
            files.append(f"{unpadded} (unpadded batches)")

        prefix = encoder.config.document_prefix

        def run(items: list[str]) -> np.ndarray:
            # the texts carry the document prefix already (every system gets the same
            # strings); encode_documents puts it back, where encode() would prepend the
            # symmetric prefix too ("query: passage: ..." for e5)
            assert all(t.startswith(prefix) for t in items)
            return np.asarray(encoder.encode_documents([t[len(prefix) :] for t in items]))

    run(texts[:WARMUP])
    start = time.perf_counter()
    vectors = run(texts)
    seconds = time.perf_counter() - start
    if args.vectors:
        np.save(args.vectors, vectors.astype(np.float32), allow_pickle=False)
    result = {"seconds": seconds, "docs": len(texts), "peak_rss_mib": _peak_rss_mib()}
    print(json.dumps({**result, "files": files}))


def _cpu_model() -> str | None:
    """``model name`` of ``/proc/cpuinfo``: int8 speed-ups depend on the CPU (VNNI or not)."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def _peak_rss_mib() -> float:
    """This process's peak RSS: ``VmHWM``, which starts afresh at ``exec`` (``ru_maxrss``
    keeps the parent's peak at fork time, and the parent may have held a large model)."""
    try:
        for line in Path("/proc/self/status").read_text(encoding="utf-8").splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _run_child(flags: list[str], args: argparse.Namespace, peer: bool) -> dict[str, Any]:
    script = str(Path(__file__).resolve())
    command = [sys.executable, script, *flags, f"--threads={args.threads}"]
    command.append(f"--st-int8={args.st_int8}")
    env = {
        **os.environ,
        "TOKENIZERS_PARALLELISM": "true",
        "EMBEDSTACK_NO_PROGRESS": "1",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }
    if peer:
        env = st_onnx_peer.child_env(args.st_onnx_site, env)
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(flags[:2])} failed:\n{done.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    result["child_seconds"] = time.perf_counter() - start  # start-up and load included
    return result


def _spawn(system: str, args: argparse.Namespace, job: dict[str, Any]) -> dict[str, Any]:
    flags = ["--child", system, f"--model={args.model}", f"--texts={job['texts']}"]
    flags += [f"--max-length={job['max_length']}", f"--batch-tokens={args.batch_tokens}"]
    flags += [f"--batch-size={args.batch_size}", f"--cache-dir={args.cache_dir}"]
    if system in ST_SYSTEMS:
        folder = job["folder"] if system == "st" else job["st_onnx"]["folder"]
        flags += ["--folder", str(folder)]
    if system.startswith("st-onnx"):
        flags += ["--st-onnx-file", job["st_onnx"][system.rsplit("-", 1)[1]]["file"]]
    if job.get("vectors") is not None:
        flags += ["--vectors", str(job["vectors"])]
    return _run_child(flags, args, peer=system.startswith("st-onnx"))


def _environment(args: argparse.Namespace, texts: list[str], max_length: int) -> dict[str, Any]:
    import onnxruntime
    import sentence_transformers
    import torch

    from embedstack import Encoder

    counter = Encoder(args.model, cache_dir=args.cache_dir, show_progress=False)
    tokens = counter.count_tokens(texts)
    return {
        "dataset": args.dataset,
        "docs": len(texts),
        "mean_tokens": round(float(tokens.mean()), 1),
        "share_truncated": round(float((tokens >= max_length).mean()), 3),
        "max_length": max_length,
        "threads": args.threads,
        "batch_tokens": args.batch_tokens,
        "batch_size": args.batch_size,
        "st_batch_size": st_onnx_peer.ST_BATCH_SIZE,
        "repeats": args.repeats,
        "cpu": platform.processor() or platform.machine(),
        "cpu_model": _cpu_model(),
        "cpus_available": len(os.sched_getaffinity(0)),
        "onnxruntime": onnxruntime.__version__,
        "torch": torch.__version__,
        "sentence_transformers": sentence_transformers.__version__,
    }


def _systems(args: argparse.Namespace, skip_st: str | None) -> tuple[list[str], dict[str, str]]:
    """The systems to time for this model, and the skipped ones with the reason."""
    optional = {
        "torch": args.torch,
        "onnx-int8-one-graph": args.one_graph,
        "st-onnx-fp32": not args.no_st_onnx,
        "st-onnx-int8": not args.no_st_onnx,
    }
    systems = [s for s in SYSTEMS if optional.get(s, True)]
    skipped = {}
    if skip_st:
        for system in [s for s in systems if s in ST_SYSTEMS or s == "torch"]:
            systems.remove(system)
            skipped[system] = skip_st
    return systems, skipped


def _measure(args: argparse.Namespace) -> dict[str, Any]:
    """Every system over ``args.model``: exports, alternating repeats, the report."""
    begin = time.perf_counter()
    folder, config = _resolve(args.model)
    texts = [config.document_prefix + text for text in _texts(args)]
    systems, skipped = _systems(args, st_onnx_peer.unsupported(folder, config.transformer_path))
    prepare = ["--child", "prepare", "--model", args.model, "--cache-dir", str(args.cache_dir)]
    ours_export_s = _run_child(prepare, args, peer=False)["child_seconds"]
    runs: dict[str, list[dict[str, Any]]] = {s: [] for s in systems}
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="encode-bench-") as tmp:
        job: dict[str, Any] = {
            "texts": Path(tmp) / "texts.json",
            "folder": folder,
            "max_length": config.max_length,
        }
        job["texts"].write_text(json.dumps(texts), encoding="utf-8")
        if "st-onnx-fp32" in systems:
            flags = ["--child", "st-onnx-export", "--folder", str(folder), "--work", tmp]
            job["st_onnx"] = _run_child(flags, args, peer=True)
            print(f"{args.model}: sentence-transformers ONNX export done", file=sys.stderr)
        saved = {s: Path(tmp) / f"{s}.npy" for s in systems}
        for r in range(args.repeats):
            order = systems[r % len(systems) :] + systems[: r % len(systems)]
            for system in order:
                run = _spawn(system, args, {**job, "vectors": saved[system] if r == 0 else None})
                run["docs_per_s"] = run["docs"] / run["seconds"]
                runs[system].append(run)
                print(
                    f"{args.model} repeat {r}: {system:12s} {run['docs_per_s']:8.2f} docs/s",
                    file=sys.stderr,
                )
        vectors = {s: np.load(saved[s], allow_pickle=False) for s in systems}
    report: dict[str, Any] = {
        "model": args.model,
        "folder": str(folder),
        "document_prefix": config.document_prefix,
        "environment": _environment(args, texts, config.max_length),
    }
    report["environment"]["loadavg_before_after"] = [
        round(load_before[0], 2),
        round(os.getloadavg()[0], 2),
    ]
    report["environment"]["wall_seconds"] = {
        "ours_export_or_cache_check": round(ours_export_s, 1),
        "model_total": round(time.perf_counter() - begin, 1),
    }
    if "st_onnx" in job:
        peer = {k: v for k, v in job["st_onnx"].items() if k != "folder"}
        peer["site"] = str(args.st_onnx_site)
        peer["quantization_config_reason"] = args.st_int8_reason
        report["st_onnx"] = peer
    report["systems"] = encode_summary.summarize(systems, runs, vectors)
    if skipped:
        report["skipped"] = skipped
    report["equal_precision"] = encode_summary.equal_precision(report["systems"])
    return report


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--datasets", type=Path, default=ROOT.parent / "shared" / "datasets")
    parser.add_argument("--dataset", default="scifact")
    parser.add_argument("--limit", type=int, default=0, help="first N docs (0: all)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--model", default="all-MiniLM-L6-v2", help="registry name")
    parser.add_argument("--models", default=None, help="comma-separated names, or 'local'")
    parser.add_argument("--torch", action="store_true", help="also time our torch backend")
    parser.add_argument(
        "--one-graph",
        action="store_true",
        help="also time int8 without its flash-attention graph for unpadded batches",
    )
    parser.add_argument(
        "--no-st-onnx", action="store_true", help="skip sentence-transformers' ONNX backend"
    )
    parser.add_argument(
        "--st-onnx-site",
        type=Path,
        default=st_onnx_peer.DEFAULT_SITE,
        help="folder with the peer's packages (st_onnx_requirements.txt)",
    )
    parser.add_argument(
        "--install-st-onnx",
        action="store_true",
        help="install the peer's packages into --st-onnx-site unless present",
    )
    parser.add_argument(
        "--st-int8",
        choices=("auto", *st_onnx_peer.QUANTIZATIONS),
        default="auto",
        help="sentence-transformers' int8 config (auto: cpu)",
    )
    parser.add_argument("--batch-tokens", type=int, default=4096)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--cache-dir", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=None)
    hidden: dict[str, dict[str, Any]] = {
        "--child": {"choices": (*SYSTEMS, "st-onnx-export", "prepare")},
        "--vectors": {"type": Path},
        "--texts": {"type": Path},
        "--folder": {"type": Path},
        "--work": {"type": Path},
        "--max-length": {"type": int},
        "--st-onnx-file": {},
    }
    for flag, options in hidden.items():
        parser.add_argument(flag, default=None, help=argparse.SUPPRESS, **options)
    return parser


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark (or, with ``--child``, one measurement) and print JSON."""
    args = _parser().parse_args(argv)
    args.st_int8_reason = "chosen with --st-int8"
    if args.st_int8 == "auto":
        args.st_int8, args.st_int8_reason = st_onnx_peer.cpu_quantization()
    if args.cache_dir is None:
        from embedstack.settings import cache_dir

        args.cache_dir = cache_dir()
    if args.child:
        _child(args)
        return
    if not args.no_st_onnx:
        if args.install_st_onnx:
            st_onnx_peer.install(args.st_onnx_site)
        st_onnx_peer.check(args.st_onnx_site)
    names = [args.model]
    if args.models:
        names = _local_models() if args.models == "local" else args.models.split(",")
    reports = {}
    for name in [n.strip() for n in names if n.strip()]:
        args.model = name
        reports[name] = _measure(args)
    result = encode_summary.combine(reports)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
