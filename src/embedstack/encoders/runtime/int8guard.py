"""Dynamic int8 that is checked against fp32 before it is cached.

ONNX Runtime's dynamic int8 quantizes each MatMul's activations per tensor (uint8, one
scale for the whole batch) and its weights per output channel (int8). Two things break that
for some architectures, found on all-mpnet-base-v2 (cosine 0.03 to fp32 before this module):

* **u8 x s8 saturation**: CPUs without VNNI (AVX2 only) multiply uint8 activations by int8
  weights with ``vpmaddubsw``, whose int16 sum of two products overflows (255 x 127 x 2 >
  32767). 7-bit weights (``reduce_range``) cannot overflow. MPNet fell from 0.84 to 0.03
  mean cosine on these machines from this alone.
* **activation outliers**: MPNet's FFN down-projections (layers 6-10) read GELU outputs whose
  largest value is 130-240 times their RMS, so one per-tensor scale leaves the other values a
  few levels. Those MatMuls stay fp32.

:func:`quantize_checked` measures instead of guessing: it quantizes as before, runs fp32 and
int8 on :data:`PROBE_TEXTS` (mean-pooled over the mask, cosine per text) and stops at the
first of these that is close enough, keeping the closest one it tried: (1) the plain
quantization (:data:`TARGET`; all-MiniLM-L6-v2 reaches 0.968 on these texts, 0.989 on
SciFact), (2) 7-bit weights, (3) 7-bit weights leaving fp32 the 1, 2, 4, ... MatMuls whose
inputs have the largest max/RMS ratio on the probes (:data:`FALLBACK_TARGET`, or until
doubling gains under 0.005). all-mpnet-base-v2 ends at step 3 with 8 of its 72 MatMuls
fp32 (probe cosines 0.76 / 0.95 / 0.98 with 0 / 4 / 8 of them, 0.98 with 12). Models that
were fine keep the exact graph they had (BERT, MiniLM); the steps taken and the measured
cosine go to the cache manifest (``int8_check``), with a log line whenever a fallback was
needed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "FALLBACK_TARGET",
    "PROBE_TEXTS",
    "TARGET",
    "outlier_matmuls",
    "probe_cosines",
    "quantize_checked",
]

logger = logging.getLogger(__name__)

TARGET = 0.95
"""Lowest probe cosine (fp32 vs int8) at which the plain quantization is kept."""
FALLBACK_TARGET = 0.975
"""Lowest probe cosine at which a fallback step is kept (each costs speed)."""

PROBE_TEXTS = (
    "A man is playing a guitar on the stage.",
    "How do I reset my password if I no longer have access to my email?",
    "Aspirin lowers the risk of a second heart attack in adults with coronary disease.",
    "The central bank raised interest rates, and stock markets fell sharply on Tuesday.",
    "Mitochondria produce most of the chemical energy needed to power the cell's reactions.",
    "Der Zug nach Berlin hat heute zwanzig Minuten Verspätung.",
    "She found the old photographs in a box under the stairs.",
    "Vaccination of children against measles has reduced mortality worldwide. "
    "Large cohort studies across several continents found no association between the "
    "vaccine and autism, while outbreaks followed each drop in coverage below ninety-five "
    "percent. Public health agencies recommend two doses, the first at twelve months.",
)
"""Calibration texts: short and long, several domains, one non-English."""

Quantize = Callable[..., None]


def probe_feed(tokenizer_json: Path, names: list[str], max_length: int = 256) -> dict[str, Any]:
    """:data:`PROBE_TEXTS` tokenized and right-padded for a graph's inputs ``names``."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_json))
    tokenizer.enable_truncation(max_length)
    encodings = tokenizer.encode_batch(list(PROBE_TEXTS))
    width = max(len(e.ids) for e in encodings)
    ids = np.zeros((len(encodings), width), dtype=np.int64)
    mask = np.zeros_like(ids)
    for row, encoding in enumerate(encodings):
        ids[row, : len(encoding.ids)] = encoding.ids
        mask[row, : len(encoding.ids)] = 1
    tensors = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
    return {name: tensors[name] for name in names if name in tensors}


def _session(model: Path | bytes) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def _pooled(model: Path, feed: dict[str, Any]) -> np.ndarray:
    out = np.asarray(_session(model).run(None, feed)[0], dtype=np.float64)
    if out.ndim == 3:
        mask = feed["attention_mask"][..., None].astype(np.float64)
        out = (out * mask).sum(axis=1) / np.maximum(mask.sum(axis=1), 1.0)
    out = out.reshape(len(out), -1)
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


def probe_cosines(fp32: Path, int8: Path, feed: dict[str, Any]) -> np.ndarray:
    """Cosine between the fp32 and int8 graphs' (mean-pooled) first outputs, per probe text."""
    return np.einsum("ij,ij->i", _pooled(fp32, feed), _pooled(int8, feed))


def outlier_matmuls(fp32: Path, feed: dict[str, Any]) -> list[str]:
    """Names of the MatMuls with a constant weight, the largest input max/RMS first.

    The ratio is what per-tensor activation quantization suffers from: the step is about
    ``2 max / 255``, so a ratio of 200 leaves the typical value under one step.
    """
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(str(fp32))
    weights = {init.name for init in model.graph.initializer}
    matmuls = [n for n in model.graph.node if n.op_type == "MatMul" and n.input[1] in weights]
    inputs = sorted({n.input[0] for n in matmuls})
    known = {o.name for o in model.graph.output}
    for name in inputs:
        if name not in known:
            model.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    values = dict(zip(inputs, _session(model.SerializeToString()).run(inputs, feed), strict=True))

    def ratio(name: str) -> float:
        x = np.asarray(values[name], dtype=np.float64)
        rms = float(np.sqrt(np.mean(x * x)))
        return float(np.abs(x).max()) / rms if rms > 0 else 0.0

    ratios = {n.name: ratio(n.input[0]) for n in matmuls}
    return sorted(ratios, key=lambda n: -ratios[n])


def quantize_checked(
    src: Path, dst: Path, feed: dict[str, Any] | None, quantize: Quantize, label: str
) -> dict[str, Any]:
    """Write the int8 graph of ``src`` to ``dst``, falling back step by step (module doc)
    while the probe cosine is too low, and keep the closest graph; the manifest facts.

    Args:
        src: The fp32 graph.
        dst: Where the int8 graph goes.
        feed: Probe inputs (:func:`probe_feed`); None quantizes once, unchecked.
        quantize: ``quantize(src, dst, reduce_range=..., exclude=[...])``.
        label: Model name for the log line.
    """
    quantize(src, dst, reduce_range=False, exclude=())
    if feed is None:
        return {"checked": False}
    first = float(probe_cosines(src, dst, feed).min())
    best: tuple[float, bool, list[str]] = (first, False, [])
    if first < TARGET:
        quantize(src, dst, reduce_range=True, exclude=())
        last: tuple[float, bool, list[str]] = (float(probe_cosines(src, dst, feed).min()), True, [])
        order: list[str] = []
        count, previous = 1, -1.0
        while last[0] < FALLBACK_TARGET and last[0] - previous >= 0.005:
            best = max(best, last, key=lambda state: state[0])
            order = order or outlier_matmuls(src, feed)
            if count > len(order):
                break
            previous = last[0]
            quantize(src, dst, reduce_range=True, exclude=order[:count])
            last = (float(probe_cosines(src, dst, feed).min()), True, order[:count])
            count *= 2
        if last[0] >= best[0]:
            best = last
        else:  # an earlier step was closer: rebuild it
            quantize(src, dst, reduce_range=best[1], exclude=best[2])
        if best[1]:
            logger.warning(
                "int8 of %s: plain dynamic int8 reached cosine %.3f to fp32 on the probe "
                "texts; falling back to 7-bit weights%s: cosine %.3f",
                label,
                first,
                f" and {len(best[2])} fp32 MatMuls" if best[2] else "",
                best[0],
            )
    return {
        "checked": True,
        "reduce_range": best[1],
        "fp32_matmuls": best[2],
        "probe_min_cosine": round(best[0], 4),
        "plain_min_cosine": round(first, 4),
    }
