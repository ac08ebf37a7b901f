"""Where the dense ONNX encoder spends its time, and whether two cheap session/graph
variants speed it up.

Runs the cached ONNX export of all-MiniLM-L6-v2 (``--variant int8`` or ``fp32``) over the
first ``--limit`` documents of a BEIR corpus, batched the way :class:`embedstack.Encoder`
batches (sorted by length, 4,096-token budget, 256 tokens max), with ``--threads`` threads:

1. **Profile**: ONNX Runtime's per-node profiler, kernel time summed per operator type.
2. **Variants** (``--repeats`` alternating runs each, docs/s of the bare session):
   ``default``; ``denormal-zero`` (``session.set_denormal_as_zero``: flush denormal floats,
   which are slow on x86 when present); ``fast-gelu`` (every ``BiasGelu`` node replaced by
   ``FastGelu``, the tanh approximation ONNX Runtime's optimizer offers as
   ``enable_gelu_approximation``), with the min cosine of its mean-pooled vectors to the
   default's.
3. **Graph variants** (``--graph-variants``, int8 only), rebuilt from the cached unfused
   export the way :mod:`embedstack.encoders.onnx_export` builds the default (ONNX Runtime's
   BERT optimizer, then dynamic per-channel int8), changing one fusion option:
   ``multi-head-attention`` (``use_multi_head_attention``: the Q/K/V projections stay
   separate int8 MatMuls and attention runs in the ``MultiHeadAttention`` kernel instead of
   ``QAttention``) and ``unfused-attention`` (``enable_attention=False``: attention as
   plain MatMul/Softmax nodes).
4. **Unpadded sweep** (``--unpadded-sweep``): the graph the encoder runs for batches without
   padding (``MultiHeadAttention`` with no padding mask, i.e. ONNX Runtime's CPU flash
   attention; the cached ``model.unpadded.int8.onnx`` for int8, built the same way without
   quantization for fp32) against the default graph, on random token ids without padding at
   widths 8-256, one text per batch and ``4096 // width`` texts per batch, ``--repeats``
   alternating timings each. This is the measurement behind the encoder's
   ``UNPADDED_MIN_WIDTH`` / ``UNPADDED_MIN_TOKENS`` and behind int8 alone using the graph.

Prints one JSON object (also written to ``--out``).

Example:
    .venv/bin/python benchmarks/onnx_profile.py --variant int8 --limit 1000 --repeats 6
    .venv/bin/python benchmarks/onnx_profile.py --variant int8 --unpadded-sweep --repeats 5
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def _feeds(path: Path, texts: list[str], inputs: set[str]) -> list[dict[str, np.ndarray]]:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(path / "tokenizer.json"))
    tok.enable_truncation(256)
    tok.no_padding()
    enc = tok.encode_batch(texts)
    order = sorted(range(len(enc)), key=lambda i: len(enc[i].ids))
    batches: list[list[int]] = [[]]
    for i in order:
        if batches[-1] and (len(batches[-1]) + 1) * len(enc[i].ids) > 4096:
            batches.append([])
        batches[-1].append(i)
    feeds = []
    for rows in batches:
        width = max(len(enc[i].ids) for i in rows)
        ids = np.zeros((len(rows), width), np.int64)
        mask = np.zeros_like(ids)
        for r, i in enumerate(rows):
            n = len(enc[i].ids)
            ids[r, :n], mask[r, :n] = enc[i].ids, 1
        feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        feeds.append({k: v for k, v in feed.items() if k in inputs})
    return feeds


def _session(model: Path, threads: int, *, denormal: bool = False, profile: bool = False) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    options.enable_profiling = profile
    if denormal:
        options.add_session_config_entry("session.set_denormal_as_zero", "1")
    return ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])


def _fast_gelu(model: Path, out: Path) -> int:
    import onnx

    graph = onnx.load(str(model))
    replaced = 0
    for node in graph.graph.node:
        if node.op_type == "BiasGelu":  # same inputs (x, bias), tanh approximation
            node.op_type = "FastGelu"
            replaced += 1
    onnx.save(graph, str(out))
    return replaced


def _graph_variant(source: Path, out: Path, option: str, value: bool) -> None:
    """``source`` (the unfused export) optimized with one fusion option changed, then
    quantized as the default int8 variant is."""
    import logging
    import warnings

    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    options = FusionOptions("bert")
    setattr(options, option, value)
    logging.getLogger().addHandler(logging.NullHandler())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fused = out.with_suffix(".opt.onnx")
        graph = optimize_model(
            str(source), model_type="bert", num_heads=12, hidden_size=384, opt_level=1,
            optimization_options=options,
        )  # fmt: skip
        graph.save_model_to_file(str(fused))
        quantize_dynamic(
            str(fused), str(out), weight_type=QuantType.QInt8, per_channel=True,
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )  # fmt: skip


def _unpadded_sweep(encoder: Any, variant: str, threads: int, repeats: int) -> list[dict[str, Any]]:
    from embedstack.encoders.runtime.cache import read_manifest as _manifest
    from embedstack.encoders.runtime.export import _without_padding_mask

    model = encoder._model
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        if variant == "int8":
            unpadded = model.unpadded_path
        else:
            unpadded = Path(tmp) / "unpadded.onnx"
            if not _without_padding_mask(model.path.with_name("model.onnx"), unpadded,
                                         _manifest(model.path.parent)):  # fmt: skip
                unpadded = None
        if unpadded is None:
            raise SystemExit("this model has no unpadded graph (its attention does not fuse)")
        sessions = {
            "default": _session(model.path, threads),
            "unpadded": _session(unpadded, threads),
        }
        rows = []
        for width in (8, 16, 32, 64, 96, 128, 192, 256):
            for batch in (1, 4096 // width):
                ids = rng.integers(1000, 20000, size=(batch, width))
                ids[:, 0], ids[:, -1] = 101, 102
                full = {"input_ids": ids, "attention_mask": np.ones_like(ids),
                        "token_type_ids": np.zeros_like(ids)}  # fmt: skip
                loops = max(3, int(200 * 64 / (batch * width)))
                ms: dict[str, list[float]] = {"default": [], "unpadded": []}
                for rep in range(repeats):
                    for name in ("default", "unpadded")[:: 1 if rep % 2 == 0 else -1]:
                        session = sessions[name]
                        feed = {i.name: full[i.name] for i in session.get_inputs()}
                        started = time.perf_counter()
                        for _ in range(loops):
                            session.run(None, feed)
                        ms[name].append((time.perf_counter() - started) / loops * 1e3)
                default, flash = statistics.median(ms["default"]), statistics.median(ms["unpadded"])
                rows.append({"width": width, "batch": batch, "default_ms": round(default, 3),
                             "unpadded_ms": round(flash, 3),
                             "speedup": round(default / flash, 3)})  # fmt: skip
                print(rows[-1], file=sys.stderr, flush=True)
    return rows


def _pooled(outputs: list[np.ndarray], feeds: list[dict[str, np.ndarray]]) -> np.ndarray:
    vectors = []
    for hidden, feed in zip(outputs, feeds, strict=True):
        mask = feed["attention_mask"][..., None].astype(np.float32)
        v = (hidden * mask).sum(1) / mask.sum(1)
        vectors.append(v / np.linalg.norm(v, axis=1, keepdims=True))
    return np.concatenate(vectors)


def main() -> None:
    here = ROOT.parent
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", type=Path, default=here / "shared" / "datasets")
    parser.add_argument("--dataset", default="scifact")
    parser.add_argument("--variant", choices=("int8", "fp32"), default="int8")
    parser.add_argument("--limit", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=6)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--graph-variants",
        action="store_true",
        help="also time the multi-head-attention / unfused-attention graphs",
    )
    parser.add_argument(
        "--unpadded-sweep",
        action="store_true",
        help="only time the unpadded (flash-attention) graph against the default by width",
    )
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    from embedstack import Encoder
    from embedstack.eval import load_corpus

    encoder = Encoder("all-MiniLM-L6-v2", backend="onnx",
                      quantize="int8" if args.variant == "int8" else None,
                      threads=args.threads, show_progress=False)  # fmt: skip
    if args.unpadded_sweep:
        sweep = _unpadded_sweep(encoder, args.variant, args.threads, args.repeats)
        _write({"command": " ".join([".venv/bin/python", *sys.argv]), "cpus": os.cpu_count(),
                "loadavg": os.getloadavg(), "variant": args.variant,
                "unpadded_sweep": sweep}, args.out)  # fmt: skip
        return
    model = Path(encoder._model.path)
    folder = Path(encoder.config.transformer_path)
    _, texts = load_corpus(args.datasets / args.dataset)
    texts = texts[: args.limit]
    base = _session(model, args.threads)
    feeds = _feeds(folder, texts, {i.name for i in base.get_inputs()})

    profiled = _session(model, args.threads, profile=True)
    for feed in feeds:
        profiled.run(None, feed)
    trace = Path(profiled.end_profiling())
    per_op: collections.Counter[str] = collections.Counter()
    for event in json.loads(trace.read_text()):
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            per_op[event["args"]["op_name"]] += event["dur"]
    trace.unlink()
    total = sum(per_op.values())
    profile = {op: {"ms": round(us / 1e3, 1), "share": round(us / total, 4)}
               for op, us in per_op.most_common()}  # fmt: skip

    with tempfile.TemporaryDirectory() as tmp:
        fast = Path(tmp) / "fast_gelu.onnx"
        replaced = _fast_gelu(model, fast)
        sessions = {"default": base, "denormal-zero": _session(model, args.threads, denormal=True),
                    "fast-gelu": _session(fast, args.threads)}  # fmt: skip
        if args.graph_variants:
            if args.variant != "int8":
                parser.error("--graph-variants rebuilds int8 graphs: use --variant int8")
            graphs = [("multi-head-attention", "use_multi_head_attention", True),
                      ("unfused-attention", "enable_attention", False)]  # fmt: skip
            for name, option, value in graphs:
                built = Path(tmp) / f"{name}.onnx"
                _graph_variant(model.with_name("model.onnx"), built, option, value)
                sessions[name] = _session(built, args.threads)
        names = list(sessions)
        rates: dict[str, list[float]] = {n: [] for n in names}
        outputs: dict[str, list[np.ndarray]] = {}
        for rep in range(args.repeats):
            for name in names[rep % len(names) :] + names[: rep % len(names)]:
                started = time.perf_counter()
                outputs[name] = [sessions[name].run(None, feed)[0] for feed in feeds]
                rates[name].append(len(texts) / (time.perf_counter() - started))
    reference = _pooled(outputs["default"], feeds)
    median = {n: statistics.median(r) for n, r in rates.items()}
    report = {
        "command": " ".join([".venv/bin/python", *sys.argv]),
        "cpus": os.cpu_count(),
        "loadavg": os.getloadavg(),
        "model": str(model),
        "documents": len(texts),
        "profile": profile,
        "variants": {
            n: {
                "docs_per_s": [round(x, 2) for x in rates[n]],
                "median_docs_per_s": round(median[n], 2),
                "ratio_vs_default": round(median[n] / median["default"], 3),
                "min_cosine_vs_default": round(
                    float((reference * _pooled(outputs[n], feeds)).sum(1).min()), 6
                ),
            }
            for n in names
        },  # fmt: skip
        "fast_gelu_nodes": replaced,
    }
    _write(report, args.out)


def _write(report: dict[str, Any], out: Path | None) -> None:
    text = json.dumps(report, indent=2)
    print(text)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")


if __name__ == "__main__":
    main()
