"""The bi-encoder side of :func:`~embedstack.train.train_embedder`: the base as a
sentence-transformers model, its loss, the tensors of a step, the dev evaluation and the
saved folder's Matryoshka record.

Losses are sentence-transformers' own (the field's reference implementations):
``MultipleNegativesRankingLoss`` / ``CachedMultipleNegativesRankingLoss`` (GradCache),
``MarginMSELoss``, ``CoSENTLoss`` and the ``MatryoshkaLoss`` wrapper.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from embedstack.errors import InvalidInput
from embedstack.train.data import Group
from embedstack.train.embedder_config import EmbedderConfig
from embedstack.train.embedder_data import DevSet
from embedstack.vectors import normalize, truncate

__all__ = [
    "MATRYOSHKA_KEY",
    "Prefixes",
    "build_loss",
    "check_bi_encoder",
    "dev_scores",
    "embedding_dim",
    "load_base",
    "pca_base",
    "record_matryoshka",
    "step_inputs",
]

MATRYOSHKA_KEY = "matryoshka_dims"
"""Key of ``config_sentence_transformers.json`` listing the dims a model was trained to be
truncated to; :func:`embedstack.encoders.loading.load_model_config` reads it back."""

_NOT_BI_ENCODER = ("ForSequenceClassification", "ForTokenClassification",
                   "ForQuestionAnswering")  # fmt: skip


def _st_modules() -> tuple[Any, Any]:
    """sentence-transformers' ``losses`` and ``models`` (moved in version 6)."""
    try:
        from sentence_transformers.sentence_transformer import losses, modules
    except ImportError:  # sentence-transformers < 6
        import importlib

        return (importlib.import_module("sentence_transformers.losses"),
                importlib.import_module("sentence_transformers.models"))  # fmt: skip
    return losses, modules


class Prefixes:
    """The base's query, document and symmetric prefixes, applied as the encoder does."""

    def __init__(self, query: str, document: str, symmetric: str) -> None:
        self.query, self.document, self.symmetric = query, document, symmetric

    def queries(self, texts: list[str]) -> list[str]:
        return [self.query + t for t in texts]

    def documents(self, texts: list[str]) -> list[str]:
        return [self.document + t for t in texts]

    def symmetric_texts(self, texts: list[str]) -> list[str]:
        return [self.symmetric + t for t in texts]


def check_bi_encoder(base: str) -> tuple[Path, Any]:
    """The base's folder and :class:`~embedstack.encoders.loading.ModelConfig`.

    Raises:
        InvalidInput: the base is a sparse, ColBERT, static, hashing or cross-encoder model.
        ModelNotFound: no such model.
    """
    from embedstack.encoders.loading import load_model_config, resolve_model_dir
    from embedstack.encoders.registry import find_model

    spec = None if Path(base).expanduser().is_dir() else find_model(base)
    if spec is None or spec.factory is None and spec.kind == "dense":
        path, spec = resolve_model_dir(base)  # a registry entry refused below needs no weights
    if spec is not None and (spec.kind != "dense" or spec.factory is not None):
        what = f"a {spec.kind} model" if spec.kind != "dense" else "not a transformer model"
        raise InvalidInput(f"base {base!r} is {what}; train embedder fine-tunes a dense "
                           "bi-encoder (e.g. all-MiniLM-L6-v2 or a sentence-transformers "
                           "folder)")  # fmt: skip
    if (path / "artifact.metadata").is_file() or (path / "colbert_linear.safetensors").is_file():
        raise InvalidInput(f"base {base!r} is a ColBERT model, not a single-vector bi-encoder")
    modules = path / "modules.json"
    if modules.is_file():
        types = " ".join(str(m.get("type", "")) for m in json.loads(modules.read_text("utf-8")))
        if any(word in types for word in ("Sparse", "Splade", "MLMTransformer", "StaticEmbed")):
            raise InvalidInput(f"base {base!r} is a sparse or static model ({types}), not a "
                               "transformer bi-encoder")  # fmt: skip
    config = load_model_config(path, spec)
    hf = json.loads((config.transformer_path / "config.json").read_text("utf-8"))
    heads = [a for a in hf.get("architectures") or [] if a.endswith(_NOT_BI_ENCODER)]
    if heads:
        raise InvalidInput(f"base {base!r} is a {heads[0]} (a cross-encoder or classifier), "
                           "not a bi-encoder; pass a sentence-transformers model or a bare "
                           "encoder")  # fmt: skip
    return path, config


def load_base(st: Any, transformers: Any, path: Path, config: Any, cfg: EmbedderConfig) -> Any:
    """The base as a ``SentenceTransformer`` on CPU: its own modules when it is a
    sentence-transformers folder, else Transformer + the registry's pooling (+ Normalize),
    with ``max_seq_length`` and ``layers`` applied.

    Raises:
        InvalidInput: ``max_seq_length`` beyond the base's positions, or too many ``layers``.
    """
    from embedstack.train.common import check_layers, quiet_transformers

    check_layers(transformers, config.transformer_path, cfg.layers)
    hf = transformers.AutoConfig.from_pretrained(config.transformer_path)
    positions = int(getattr(hf, "max_position_embeddings", 512) or 512)
    length = cfg.max_seq_length or config.max_length
    if length > positions:
        raise InvalidInput(f"max_seq_length (--max-seq-length) must be <= {positions}, the "
                           f"base's positions, got {length}")  # fmt: skip
    models = _st_modules()[1]
    with quiet_transformers(transformers):
        if (path / "modules.json").is_file():
            model = st.SentenceTransformer(str(path), device="cpu")
        else:
            body = models.Transformer(str(path), max_seq_length=length)
            modules = [body, models.Pooling(embedding_dim(body), config.pooling)]
            if config.normalize:
                modules.append(models.Normalize())
            model = st.SentenceTransformer(modules=modules, device="cpu")
    model.max_seq_length = length
    if cfg.layers is not None:
        bert = model[0].auto_model
        bert.encoder.layer = bert.encoder.layer[: cfg.layers]
        bert.config.num_hidden_layers = cfg.layers
    prompts = {"query": config.query_prefix, "document": config.document_prefix,
               "symmetric": config.symmetric_prefix}  # fmt: skip
    model.prompts = {k: v for k, v in prompts.items() if v}
    return model


def pca_base(
    base: str, texts: list[str], folder: Path, seed: int, threads: int
) -> tuple[Path, Any, dict[str, Any]]:
    """``base`` with a PCA rotation fitted on ``texts`` (encoded as documents), written to
    ``folder`` (:func:`embedstack.encoders.rotate.rotate_model`): the folder, its
    :class:`~embedstack.encoders.loading.ModelConfig` and what the run records.

    Raises:
        InvalidInput: fewer distinct texts than the base has dimensions.
    """
    from embedstack.encoders.loading import load_model_config
    from embedstack.encoders.rotate import rotate_model

    done = rotate_model(base, folder, texts, seed=seed, threads=threads)
    facts = {"texts": done.n_texts, "read": done.n_read, "module": done.module,
             "variance_top": [round(v, 6) for v in done.variance[:8]]}  # fmt: skip
    return folder, load_model_config(folder), facts


def embedding_dim(module: Any) -> int:
    """The output dimension of a sentence-transformers model or module (renamed in 6)."""
    for name in ("get_embedding_dimension", "get_sentence_embedding_dimension",
                 "get_word_embedding_dimension"):  # fmt: skip
        if hasattr(module, name):
            return int(getattr(module, name)())
    raise InvalidInput(f"cannot tell the embedding dimension of {type(module).__name__}")


def build_loss(model: Any, loss: str, cfg: EmbedderConfig, dim: int) -> Any:
    """sentence-transformers' loss for ``loss``, wrapped in ``MatryoshkaLoss`` when
    ``cfg.matryoshka_dims`` is set (the full ``dim`` first; ``cfg.matryoshka_weights`` or
    equal weights).

    Margin-MSE compares the teacher's raw margins with ``scale x`` the student's cosine
    margins: a normalised student's margins lie in [-2, 2] while a cross-encoder's logits
    span about ten units, and ``scale`` (20, MNRL's) puts the two on the same footing.

    Raises:
        InvalidInput: a Matryoshka dimension larger than the model's, or a weight count
            that does not match the dims trained.
    """
    losses = _st_modules()[0]
    if loss == "cosent":
        fn = losses.CoSENTLoss(model, scale=cfg.scale)
    elif loss == "margin-mse":
        from sentence_transformers.util import pairwise_cos_sim

        scale = cfg.scale
        fn = losses.MarginMSELoss(model, similarity_fct=lambda a, b: scale * pairwise_cos_sim(a, b))
    elif cfg.mini_batch_size is not None:
        cached = losses.CachedMultipleNegativesRankingLoss
        fn = cached(model, scale=cfg.scale, mini_batch_size=cfg.mini_batch_size)
    else:
        fn = losses.MultipleNegativesRankingLoss(model, scale=cfg.scale)
    if not cfg.matryoshka_dims:
        return fn
    too_big = [d for d in cfg.matryoshka_dims if d > dim]
    if too_big:
        raise InvalidInput(f"matryoshka_dims (--matryoshka) {too_big} exceed the model's "
                           f"dimension {dim}")  # fmt: skip
    dims = sorted({dim, *cfg.matryoshka_dims}, reverse=True)
    weights = cfg.matryoshka_weights
    if weights is not None and len(weights) != len(dims):
        raise InvalidInput(f"matryoshka_weights (--matryoshka-weights) has {len(weights)} "
                           f"weights for the {len(dims)} dims trained {dims} "
                           "(full first)")  # fmt: skip
    return losses.MatryoshkaLoss(model, fn, dims, matryoshka_weights=list(weights or ()) or None)


def step_inputs(
    torch: Any, model: Any, batch: list[Any], prefixes: Prefixes, loss: str
) -> tuple[list[dict[str, Any]], Any, int]:
    """The features, labels and (query, document) pair count of one step.

    Groups give columns ``[queries, positives, negatives_1..k]`` with ``k`` the fewest
    negatives of the step (MNRL needs equal columns); scored pairs give
    ``[sentences1, sentences2]`` and the scores.
    """
    if loss == "cosent":
        columns = [prefixes.symmetric_texts([r[0] for r in batch]),
                   prefixes.symmetric_texts([r[1] for r in batch])]  # fmt: skip
        labels = torch.tensor([r[2] for r in batch], dtype=torch.float32)
        return [model.preprocess(c) for c in columns], labels, len(batch)
    groups: list[Group] = batch
    k = min(len(g.negatives) for g in groups)
    columns = [prefixes.queries([g.query for g in groups]),
               prefixes.documents([g.positive for g in groups])]  # fmt: skip
    columns += [prefixes.documents([g.negatives[j] for g in groups]) for j in range(k)]
    if loss == "margin-mse":
        labels = torch.tensor([list((g.teacher or ())[: k + 1]) for g in groups],
                              dtype=torch.float32)  # fmt: skip
    else:
        labels = torch.tensor([])
    return [model.preprocess(c) for c in columns], labels, len(groups) * (1 + k)


def _encode(model: Any, texts: list[str]) -> np.ndarray:
    vecs = model.encode(texts, batch_size=32, convert_to_numpy=True, show_progress_bar=False)
    return normalize(np.asarray(vecs, dtype=np.float32))


def dev_scores(
    model: Any, dev: DevSet, prefixes: Prefixes, dims: Sequence[int] = ()
) -> dict[str, float]:
    """The model on the dev split: ``ndcg@10`` and ``mrr@10`` of its queries over the dev
    pool (exact cosine search), or ``spearman`` of scored pairs. The model is left in
    training mode.

    With ``dims`` (the Matryoshka truncations, smaller than the model's dimension), the
    main metric is also measured on each truncation, re-normalized (``ndcg@10@64``…), with
    their mean over the full dimension and the truncations (``matryoshka_ndcg@10`` or
    ``matryoshka_spearman``). They are logged only: the best checkpoint is still kept by the
    full dimension's metric, which comes first. Selecting by the mean (as
    sentence-transformers' Matryoshka examples do) was measured on SciFact and kept a
    checkpoint that was worse on test at every size (docs/benchmarks.md, issue 17).
    """
    from embedstack.eval.metrics import evaluate, spearman

    model.eval()
    try:
        if dev.scored:
            left = _encode(model, prefixes.symmetric_texts([r[0] for r in dev.scored]))
            right = _encode(model, prefixes.symmetric_texts([r[1] for r in dev.scored]))
            gold = [r[2] for r in dev.scored]

            def score(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
                return {"spearman": spearman(np.sum(a * b, axis=1), gold)}

            views = {d: (truncate(left, d), truncate(right, d)) for d in dims}
            return _with_truncations(score(left, right), {d: score(*v) for d, v in views.items()})
        qids, doc_ids = list(dev.queries), list(dev.docs)
        q = _encode(model, prefixes.queries([dev.queries[i] for i in qids]))
        d = _encode(model, prefixes.documents([dev.docs[i] for i in doc_ids]))

        def rank(qv: np.ndarray, dv: np.ndarray) -> dict[str, float]:
            scores = qv @ dv.T
            top = np.argsort(-scores, axis=1, kind="stable")[:, :100]
            run = {qid: {doc_ids[j]: float(scores[i, j]) for j in top[i]}
                   for i, qid in enumerate(qids)}  # fmt: skip
            metrics = evaluate(dev.qrels, run, k_values=(10,))
            return {k: metrics[k] for k in ("ndcg@10", "mrr@10")}

        cut = {k: rank(truncate(q, k), truncate(d, k)) for k in dims}
        return _with_truncations(rank(q, d), cut)
    finally:
        model.train()


def _with_truncations(full: dict[str, float], cut: dict[int, dict[str, float]]) -> dict[str, float]:
    """``full`` rounded (its main metric first), then, when there are truncations, the
    Matryoshka mean and each truncation's main metric."""
    main = next(iter(full))
    out = {k: round(v, 6) for k, v in full.items()}
    if not cut:
        return out
    mean = (full[main] + sum(c[main] for c in cut.values())) / (1 + len(cut))
    per_dim = {f"{main}@{k}": round(c[main], 6) for k, c in sorted(cut.items(), reverse=True)}
    return {**out, f"matryoshka_{main}": round(mean, 6), **per_dim}


def _update_json(file: Path, values: dict[str, Any]) -> None:
    data = json.loads(file.read_text("utf-8")) if file.is_file() else {}
    data.update(values)
    tmp = file.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n", "utf-8")
    os.replace(tmp, file)


def record_matryoshka(out: Path, dims: tuple[int, ...], max_seq_length: int) -> None:
    """Complete the saved folder's records: ``matryoshka_dims`` in
    ``config_sentence_transformers.json`` (sentence-transformers ignores keys it does not
    know; :func:`~embedstack.encoders.loading.load_model_config` reads it), and
    ``max_seq_length`` in ``sentence_bert_config.json``, where sentence-transformers before
    6 and other readers look for it (6 keeps it in the tokenizer config only)."""
    if dims:
        _update_json(out / "config_sentence_transformers.json", {MATRYOSHKA_KEY: list(dims)})
    if (out / "sentence_bert_config.json").is_file():
        _update_json(out / "sentence_bert_config.json", {"max_seq_length": max_seq_length})
