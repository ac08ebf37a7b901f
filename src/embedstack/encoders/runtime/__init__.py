"""The model runtime: everything between "a model name" and "numbers out of its graph".

Every encoder kind (dense :class:`~embedstack.encoders.Encoder`, SPLADE
:class:`~embedstack.encoders.SparseEncoder`, ColBERT
:class:`~embedstack.encoders.LateInteractionEncoder`, :class:`~embedstack.rerank.CrossEncoder`
and :class:`~embedstack.rerank.SplitCrossEncoder`) goes through it the same way and adds only
its head (which graph to run) and its pooling (numpy, in its own module)::

    open_model(name)            folder.py    registry name / HF id / folder -> files on disk
                                             (HF_HUB_OFFLINE honoured), weights hash
        .identify()             identity.py  ModelId(name, weights_hash): "name@hash16"
    make_runner(backend,        backends.py  the one backend registry: "onnx" | "torch"
                head, options)
        ensure_export(...)      cache.py     <cache>/onnx/<prefix>-<name>-<hash16>/, one
                                             manifest schema, atomic publish, rebuild log
            export_head(...)    export.py    probe inputs, torch export, ORT fusion, int8,
                                             the unpadded flash-attention int8 graph

A :class:`Head` (export.py) names the ``transformers`` auto class and the graphs: forward
functions traced for ONNX and run as-is by the torch backend.

Where the next kinds of model plug in:

* **ONNX-only models** (a folder with ``model.onnx``, ``tokenizer.json`` and a small
  ``config.json``, no weights for torch): :data:`~embedstack.encoders.runtime.heads.ONNX_ONLY`
  is a head whose :attr:`Head.shipped` graph replaces the export (as SPLADE's
  ``splade.onnx`` does); :func:`~embedstack.encoders.runtime.heads.is_onnx_only` tells the
  dense encoder to use it, which pools only when the graph's output still has a sequence
  axis. :class:`OnnxRunner` runs the file as shipped in fp32, and ``ensure_export`` copies it
  into the cache (``export.adopt_shipped``, no torch) to quantize it for int8; the torch
  backend refuses it. ``paraphrase-MiniLM-L3-v2`` is the first such model.
* **Converted weights** (e.g. a checkpoint in another format turned into a Hugging Face
  folder): one function in ``folder.py`` that :func:`open_model` calls when the resolved
  folder has no :data:`~embedstack.encoders.runtime.folder.WEIGHT_FILES`, writing the
  converted folder under ``<cache>/converted/<name>-<hash16>/`` with the same manifest
  conventions as ``cache.py``; every encoder then loads it unchanged.
* **Static token-lookup embeddings** (model2vec style: an embedding table, no transformer):
  a third backend registered with :func:`register_backend` whose runner returns the table
  rows of ``input_ids`` as ``(batch, seq, dim)``; the dense encoder's mean pooling and
  normalization apply as they are, and the registry entry selects the backend.
"""

from __future__ import annotations

from embedstack.encoders.runtime.backends import (
    Runner,
    RuntimeOptions,
    avoid_ort_spinning,
    list_backends,
    make_runner,
    ort_session,
    ort_spinning,
    register_backend,
    resolve_threads,
)
from embedstack.encoders.runtime.cache import MANIFEST_VERSION, cache_folder, ensure_export
from embedstack.encoders.runtime.export import OPSET, Graph, Head
from embedstack.encoders.runtime.folder import (
    ModelFolder,
    load_tokenizer,
    open_model,
    resolve_model_dir,
    weights_hash,
)
from embedstack.encoders.runtime.heads import (
    CLASSIFIER,
    HIDDEN_STATES,
    ONNX_ONLY,
    is_onnx_only,
    pad_batch,
)
from embedstack.encoders.runtime.identity import Identified, ModelId

__all__ = [
    "CLASSIFIER",
    "HIDDEN_STATES",
    "MANIFEST_VERSION",
    "ONNX_ONLY",
    "OPSET",
    "Graph",
    "Head",
    "Identified",
    "ModelFolder",
    "ModelId",
    "Runner",
    "RuntimeOptions",
    "avoid_ort_spinning",
    "cache_folder",
    "ensure_export",
    "is_onnx_only",
    "list_backends",
    "load_tokenizer",
    "make_runner",
    "open_model",
    "ort_session",
    "ort_spinning",
    "pad_batch",
    "register_backend",
    "resolve_model_dir",
    "resolve_threads",
    "weights_hash",
]
