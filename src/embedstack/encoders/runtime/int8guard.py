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
int8 on the probes (:func:`probe_texts`: :data:`PROBE_TEXTS` and :data:`LONG_PARAGRAPHS`
repeated up to the model's max length, since saturation shows on long inputs; mean-pooled
over the mask, cosine per text) and stops at the first of these that is close enough,
keeping the closest one it tried: (1) the plain quantization (kept at or above
:data:`SEVEN_BIT_TARGET`; from :data:`TARGET` up, only 7-bit weights are tried besides it:
all-MiniLM-L6-v2 reaches 0.986 on the probes and keeps its plain graph,
paraphrase-MiniLM-L3-v2 goes from 0.963 to 0.993 with 7-bit weights), (2) 7-bit weights,
(3) 7-bit weights leaving fp32 the 1, 2, 4, ... MatMuls whose
inputs have the largest max/RMS ratio on the probes (:data:`FALLBACK_TARGET`, or, once
above :data:`TARGET`, until doubling gains under 0.005). all-mpnet-base-v2 ends at step 3
with 8 of its 72 MatMuls fp32 (probe cosines 0.76 / 0.95 / 0.98 with 0 / 4 / 8 of them,
0.98 with 12). Models that were fine keep the exact graph they had (BERT, MiniLM); the
steps taken and the measured cosine go to the cache manifest (``int8_check``), with a log
line whenever a fallback was needed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "FALLBACK_TARGET",
    "LONG_PARAGRAPHS",
    "PROBE_TEXTS",
    "PROBE_VERSION",
    "SEVEN_BIT_TARGET",
    "TARGET",
    "check_is_current",
    "long_probe_texts",
    "model_max_length",
    "outlier_matmuls",
    "probe_cosines",
    "probe_feed",
    "probe_texts",
    "quantize_checked",
]

logger = logging.getLogger(__name__)

TARGET = 0.95
"""Lowest probe cosine (fp32 vs int8) at which the plain quantization is kept."""
SEVEN_BIT_TARGET = 0.98
"""Below this probe cosine (but at or above :data:`TARGET`), 7-bit weights are tried too and
kept when closer: they run on the same kernels at the same speed, and they cannot saturate
(paraphrase-MiniLM-L3-v2: plain 0.963 on the probes, 0.941 min on SciFact; 7-bit 0.993 and
0.985). No MatMul is left fp32 on this path."""
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

LONG_PARAGRAPHS = (
    "Randomized controlled trials remain the strongest evidence for the effect of a "
    "treatment. In this trial, two thousand adults with type 2 diabetes were assigned to "
    "metformin or placebo and followed for five years. The primary outcome was the time to "
    "the first cardiovascular event; secondary outcomes included body weight, blood pressure "
    "and kidney function. Treatment reduced the risk of the primary outcome by eighteen "
    "percent, and the effect was consistent across age groups, sexes and baseline glucose "
    "levels. Adverse events were mostly gastrointestinal and resolved within weeks. ",
    "The town grew up around a wooden bridge over the river, where farmers brought grain to "
    "the mill every autumn. When the railway arrived, the old market moved to the station "
    "square, and the bridge was rebuilt in stone. Today visitors walk along the embankment, "
    "eat at the small restaurants near the harbour and watch the boats come in at sunset. "
    "In winter the streets are quiet, the shops close early and fog rolls in from the sea. ",
)
"""Natural paragraphs repeated up to the model's max length (:func:`long_probe_texts`): long
inputs are where some models saturate (paraphrase-MiniLM-L3-v2: probe cosine 0.995 on the
short texts, 0.942 on SciFact abstracts at 128 tokens)."""

PROBE_VERSION = 2
"""Version of the probe set; an ``int8_check`` made with another version is redone."""
PROBE_MAX_LENGTH = 512
"""Longest probe input (tokens), whatever the model accepts."""

Quantize = Callable[..., None]


def model_max_length(folder: Path) -> int:
    """The longest input ``folder``'s model reads (tokens), capped at :data:`PROBE_MAX_LENGTH`:
    ``max_seq_length`` of ``sentence_bert_config.json`` and ``max_position_embeddings`` of
    ``config.json`` (less RoBERTa's padding offset), the smaller of the two where both are
    given (a longer probe than the model's positions fails in the graph), else the cap."""
    import json

    def read(name: str) -> dict[str, Any]:
        try:
            value = json.loads((folder / name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return value if isinstance(value, dict) else {}

    declared = read("sentence_bert_config.json").get("max_seq_length")
    config = read("config.json")
    positions = config.get("max_position_embeddings")
    if isinstance(positions, int) and config.get("model_type") in ("roberta", "xlm-roberta"):
        positions -= 2
    known = [n for n in (declared, positions) if isinstance(n, int) and n >= 1]
    return min([*known, PROBE_MAX_LENGTH])


def long_probe_texts(tokenizer: Any, max_length: int) -> list[str]:
    """Each of :data:`LONG_PARAGRAPHS` repeated until it fills ``max_length`` tokens
    (deterministic: the same tokenizer and length give the same texts)."""
    texts = []
    for paragraph in LONG_PARAGRAPHS:
        per = max(len(tokenizer.encode(paragraph, add_special_tokens=False).ids), 1)
        texts.append((paragraph * (max_length // per + 1)).strip())
    return texts


def probe_texts(tokenizer: Any, max_length: int) -> list[str]:
    """What the guard probes with: :data:`PROBE_TEXTS` and the long ones."""
    return [*PROBE_TEXTS, *long_probe_texts(tokenizer, max_length)]


def probe_feed(
    tokenizer_json: Path, names: list[str], max_length: int | None = None
) -> dict[str, Any]:
    """:func:`probe_texts` tokenized (truncated at ``max_length``, by default the model's own,
    :func:`model_max_length` of the tokenizer's folder) and right-padded for a graph's inputs
    ``names``."""
    from tokenizers import Tokenizer

    if max_length is None:
        max_length = model_max_length(tokenizer_json.parent)
    tokenizer = Tokenizer.from_file(str(tokenizer_json))
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length)
    encodings = tokenizer.encode_batch(probe_texts(tokenizer, max_length))
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
    if first < SEVEN_BIT_TARGET:
        quantize(src, dst, reduce_range=True, exclude=())
        last: tuple[float, bool, list[str]] = (float(probe_cosines(src, dst, feed).min()), True, [])
        order: list[str] = []
        count, previous = 1, -1.0
        # below TARGET, keep doubling whatever one step gained: on a VNNI CPU (no
        # saturation) 7-bit weights gain nothing and the first outlier MatMul little, while
        # 8 of them take all-mpnet-base-v2 from 0.81 past the target
        while (
            first < TARGET
            and last[0] < FALLBACK_TARGET
            and (last[0] < TARGET or last[0] - previous >= 0.005)
        ):
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
        "probe_version": PROBE_VERSION,
        "probe_max_length": int(feed["attention_mask"].shape[1])
        if "attention_mask" in feed
        else None,
    }


def check_is_current(check: Any) -> bool:
    """Whether an ``int8_check`` from a cache manifest was made with today's probes (an
    older one is redone: the long probes catch what the short ones missed). An unchecked
    graph (no probe inputs for its kind) stays as it is."""
    if not isinstance(check, dict):
        return False
    return check.get("checked") is False or check.get("probe_version") == PROBE_VERSION
