"""Export a model's graphs to ONNX with torch, fuse them, quantize them.

A :class:`Head` says what an encoder kind runs on top of the transformer: which
``transformers`` auto class to load and one or more :class:`Graph` s, each a forward function
``(model, named tensors) -> tensor``. The exporter traces every graph with torch's
TorchScript exporter (the graph pattern ONNX Runtime's transformer optimizer fuses into its
Attention kernel; torch.export is the fallback), fuses it (``<stem>.opt.onnx``), and builds
the variants on demand: dynamic int8 (``<stem>.int8.onnx``) and, for heads that allow it,
int8 with the attention fused into ``MultiHeadAttention`` and the padding mask removed
(``<stem>.unpadded.int8.onnx``): valid only for batches without padding, where ONNX Runtime
runs its CPU flash attention (tiled, never materializing the sequence x sequence scores). A
model whose attention does not fuse gets no unpadded graph (the manifest records
``"unpadded": false``). The torch backend runs the same forward functions, so the reference
and the export cannot drift apart.
"""

from __future__ import annotations

import inspect
import logging
import shutil
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from embedstack.errors import require

__all__ = [
    "OPSET",
    "OPTIMIZABLE",
    "Graph",
    "Head",
    "adopt_shipped",
    "export_head",
    "has_torch_weights",
    "load_torch",
    "probe_inputs",
]

logger = logging.getLogger(__name__)

OPSET = 17
OPTIMIZABLE = {"bert", "roberta", "xlm-roberta", "distilbert", "mpnet", "electra", "deberta-v2"}
TOKEN_INPUTS = ("input_ids", "attention_mask", "token_type_ids")

Forward = Callable[[Any, dict[str, Any]], Any]


@dataclass(frozen=True)
class Graph:
    """One ONNX graph of a model.

    Attributes:
        stem: File stem in the cache entry (``"model"`` gives ``model.onnx``).
        output: Name of the graph's one output.
        forward: ``(torch model, {input name: tensor}) -> tensor``; traced for ONNX and run
            by the torch backend.
        pooled: The output has no sequence axis (``(batch, ...)``).
        inputs: Fixed input names; empty means the model's token inputs
            (:func:`probe_inputs`).
        example: ``(torch, model) -> {name: tensor}`` for inputs that are not token ids.
        fuse: Run ONNX Runtime's transformer optimizer over the export.
    """

    stem: str
    output: str
    forward: Forward
    pooled: bool = False
    inputs: tuple[str, ...] = ()
    example: Callable[[Any, Any], dict[str, Any]] | None = None
    fuse: bool = True


@dataclass(frozen=True)
class Head:
    """What an encoder kind adds on top of the runtime.

    Attributes:
        task: Recorded in the cache manifest; an entry of another task is never reused.
        prefix: Cache folder prefix (``"splade"`` gives ``onnx/splade-<name>-<hash16>/``).
        loader: The ``transformers`` auto class (``"AutoModel"``, ``"AutoModelForMaskedLM"``,
            ``"AutoModelForSequenceClassification"``).
        graphs: The graphs; the first is what calling a backend runs.
        reference: The torch backend's forward for the first graph when it should differ
            from the exported one (computed another way, to check the export against).
        unpadded: The first graph may get the int8 flash-attention variant.
        shipped: A file of the model folder used as the first graph's fp32 export instead
            of exporting (a folder that ships its own ONNX graph).
        info: ``model -> dict`` of head-specific facts for the manifest.
    """

    task: str
    prefix: str
    loader: str
    graphs: tuple[Graph, ...]
    reference: Forward | None = None
    unpadded: bool = False
    shipped: str | None = None
    info: Callable[[Any], dict[str, Any]] | None = None

    def graph(self, stem: str) -> Graph:
        """The graph called ``stem``."""
        return next(g for g in self.graphs if g.stem == stem)


def load_torch(head: Head, path: Path, *, eager: bool = False, trust: bool = False) -> Any:
    """``transformers.<head.loader>.from_pretrained(path)`` in eval mode (``eager``
    attention for export: the pattern the ONNX optimizer fuses).

    Raises:
        MissingDependency: torch or transformers is not installed (extra ``torch``).
    """
    require("torch", "torch", "the torch backend and ONNX export")
    transformers = require("transformers", "torch", "the torch backend and ONNX export")
    kwargs: dict[str, Any] = {"trust_remote_code": trust}
    if eager:
        kwargs["attn_implementation"] = "eager"
    return getattr(transformers, head.loader).from_pretrained(path, **kwargs).eval()


def probe_inputs(model: Any) -> tuple[str, ...]:
    """The token inputs ``model.forward`` takes: ids and mask, and token types when the
    model has a token-type vocabulary."""
    accepts = inspect.signature(model.forward).parameters
    names = ["input_ids", "attention_mask"]
    if "token_type_ids" in accepts and int(getattr(model.config, "type_vocab_size", 0) or 0):
        names.append("token_type_ids")
    return tuple(names)


def _example(torch: Any) -> dict[str, Any]:
    mask = torch.ones(2, 16, dtype=torch.long)
    mask[1, 9:] = 0  # trace with padding so mask handling is not folded away
    return {
        "input_ids": torch.full((2, 16), 5, dtype=torch.long),
        "attention_mask": mask,
        "token_type_ids": torch.zeros(2, 16, dtype=torch.long),
        "position_ids": torch.arange(16).repeat(2, 1),
    }


def _export_graph(torch: Any, model: Any, graph: Graph, tokens: tuple[str, ...], out: Path) -> None:
    names = list(graph.inputs or tokens)
    forward = graph.forward

    class _Wrapped(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = model  # a submodule: its weights stay weights

        def forward(self, *tensors: Any) -> Any:
            return forward(self.inner, dict(zip(names, tensors, strict=True)))

    example = _example(torch)
    if graph.example is not None:
        example.update(graph.example(torch, model))
    seq = {0: "batch", 1: "sequence"}
    axes = {n: seq for n in names}
    axes[graph.output] = {0: "batch"} if graph.pooled else seq
    common: dict[str, Any] = {"input_names": names, "output_names": [graph.output],
                              "dynamic_axes": axes, "opset_version": OPSET}  # fmt: skip
    args = tuple(example[n] for n in names)
    wrapped = _Wrapped().eval()
    try:
        torch.onnx.export(wrapped, args, str(out), dynamo=False, **common)
    except Exception:  # noqa: BLE001 - exporter removed or failed: use torch.export
        torch.onnx.export(wrapped, args, str(out), dynamo=True, external_data=False, **common)


def export_head(head: Head, path: Path, staging: Path, *, trust: bool = False) -> dict[str, Any]:
    """Export every graph of ``head`` into ``staging`` (``<stem>.onnx``, fused into
    ``<stem>.opt.onnx`` where the optimizer applies) and return the manifest facts.

    Raises:
        MissingDependency: torch or transformers is not installed (extra ``torch``).
    """
    torch = require("torch", "torch", "exporting a model to ONNX")
    transformers = require("transformers", "torch", "exporting a model to ONNX")
    model = load_torch(head, path, eager=True, trust=trust)
    config = model.config
    tokens = probe_inputs(model)
    info: dict[str, Any] = {
        "inputs": list(tokens),
        "model_type": str(config.model_type),
        "num_heads": int(getattr(config, "num_attention_heads", 0) or 0),
        "hidden_size": int(getattr(config, "hidden_size", 0) or 0),
        "num_layers": int(getattr(config, "num_hidden_layers", 0) or 0),
        "torch": str(torch.__version__),
        "transformers": str(transformers.__version__),
        **(head.info(model) if head.info else {}),
    }
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        for graph in head.graphs:
            _export_graph(torch, model, graph, tokens, staging / f"{graph.stem}.onnx")
    for graph in head.graphs:
        raw, fused = staging / f"{graph.stem}.onnx", staging / f"{graph.stem}.opt.onnx"
        try:
            if graph.fuse:
                _optimize(raw, fused, info)
        except Exception as exc:  # noqa: BLE001 - the unfused graph is correct, only slower
            logger.info("ONNX optimization of %s failed (%s); using it unfused", raw.name, exc)
            fused.unlink(missing_ok=True)
    return info


TORCH_WEIGHTS = ("model.safetensors", "pytorch_model.bin")


def has_torch_weights(path: Path) -> bool:
    """The folder holds weights transformers can load (else only a shipped graph runs)."""
    return any((path / name).is_file() for name in TORCH_WEIGHTS)


def adopt_shipped(head: Head, path: Path, staging: Path) -> dict[str, Any]:
    """Copy the folder's own graph (``head.shipped``) into ``staging`` as the first graph's
    fp32 export, without torch, and return the manifest facts read from it."""
    import onnx

    stem = head.graphs[0].stem
    shutil.copyfile(path / str(head.shipped), staging / f"{stem}.onnx")
    graph = onnx.load(str(staging / f"{stem}.onnx"), load_external_data=False).graph
    initialized = {init.name for init in graph.initializer}
    return {
        "inputs": [i.name for i in graph.input if i.name not in initialized],
        "outputs": [o.name for o in graph.output],
        "shipped": str(head.shipped),
    }


def fp32_file(folder: Path, stem: str) -> Path:
    """The fp32 graph of ``stem``: the fused one when the optimizer applied."""
    fused = folder / f"{stem}.opt.onnx"
    return fused if fused.is_file() else folder / f"{stem}.onnx"


def add_int8(
    folder: Path, stem: str, feed: dict[str, Any] | None = None, label: str = ""
) -> dict[str, Any]:
    """Quantize the fp32 graph of ``stem`` to ``<stem>.int8.onnx`` (if not there yet),
    checked against fp32 on probe inputs ``feed`` when given
    (:func:`~embedstack.encoders.runtime.int8guard.quantize_checked`); the check's facts
    (``{}`` when the file existed)."""
    from embedstack.encoders.runtime.int8guard import quantize_checked

    out = folder / f"{stem}.int8.onnx"
    if out.is_file():
        return {}
    return quantize_checked(fp32_file(folder, stem), out, feed, _quantize, label or stem)


def add_unpadded(folder: Path, stem: str, info: dict[str, Any], label: str) -> bool:
    """Build ``<stem>.unpadded.int8.onnx`` from the raw export; False (nothing written)
    when the attention does not fuse into ``MultiHeadAttention`` or fusion fails."""
    dst = folder / f"{stem}.unpadded.int8.onnx"
    fused = folder / "unpadded.fp32.tmp"
    check = info.get("int8_check") or {}
    if check.get("reduce_range") or check.get("fp32_matmuls"):
        logger.info("no unpadded graph for %s: its int8 needed the checked fallback", label)
        return False
    try:
        if not _without_padding_mask(folder / f"{stem}.onnx", fused, info):
            return False
        _quantize(fused, dst)
        return True
    except Exception as exc:  # noqa: BLE001 - an optional speed-up: never block loading
        logger.warning("no unpadded graph for %s: %s", label, exc)
        dst.unlink(missing_ok=True)
        return False
    finally:
        fused.unlink(missing_ok=True)


def _optimize(src: Path, dst: Path, info: dict[str, Any], *, multi_head: bool = False) -> bool:
    """Fuse attention / LayerNorm / GELU with ONNX Runtime's BERT optimizer; False (nothing
    written) for model types it does not know."""
    if info["model_type"] not in OPTIMIZABLE:
        return False
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    options = FusionOptions("bert")
    options.use_multi_head_attention = multi_head
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        optimized = optimize_model(
            str(src),
            model_type="bert",
            num_heads=info["num_heads"],
            hidden_size=info["hidden_size"],
            opt_level=1,
            optimization_options=options,
        )
        optimized.save_model_to_file(str(dst))
    return True


def _without_padding_mask(src: Path, dst: Path, info: dict[str, Any]) -> bool:
    """Write ``src`` fused into ``MultiHeadAttention`` nodes without their padding mask to
    ``dst`` (fp32); False (and nothing written) when the attention does not fuse so."""
    import onnx

    if not _optimize(src, dst, info, multi_head=True):
        return False
    graph = onnx.load(str(dst))
    attention = [n for n in graph.graph.node if n.op_type == "MultiHeadAttention"]
    if not attention or len(attention) != (info.get("num_layers") or len(attention)):
        dst.unlink()
        return False
    for node in attention:
        if len(node.input) > 4:
            node.input[4] = ""  # key_padding_mask: absent selects the flash kernel
    onnx.save(graph, str(dst))
    return True


def _quantize(
    src: Path, dst: Path, *, reduce_range: bool = False, exclude: Sequence[str] = ()
) -> None:
    """Dynamic int8 quantization (per-channel weights, float activations); ``reduce_range``
    quantizes weights to 7 bits, ``exclude`` names nodes left fp32."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # The quantizer logs through the root logger; a NullHandler keeps `logging.warning` from
    # configuring the root logger of the host application behind its back.
    root = logging.getLogger()
    guard = logging.NullHandler()
    root.addHandler(guard)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import onnx

            quantize_dynamic(
                str(src),
                str(dst),
                weight_type=QuantType.QInt8,
                per_channel=True,
                reduce_range=reduce_range,
                nodes_to_exclude=list(exclude),
                extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
            )
    finally:
        root.removeHandler(guard)


def copy_entry(src: Path, dst: Path) -> None:
    """Copy the files of a cache entry (to add a variant in a staging folder)."""
    for item in src.iterdir():
        shutil.copy2(item, dst / item.name)
