"""Train a ColBERT late-interaction model on a BEIR dataset's training judgements, on CPU.

Recipe (ColBERT, Khattab & Zaharia 2020, with ColBERTv2's in-batch negatives, Santhanam et
al. 2022):

1. Start from the base's BERT body (``transformers.AutoModel``; default: the bundled
   all-MiniLM-L6-v2) and add a fresh bias-free linear head ``hidden -> dim``.
2. Tokenise with :class:`~embedstack.encoders.colbert_format.ColbertTokenizer`, the code path
   :class:`~embedstack.encoders.colbert.LateInteractionEncoder` runs at inference: queries
   ``[CLS] [Q] q [SEP]`` padded with ``[MASK]`` to ``query_maxlen`` (the masks attend to
   nothing; their vectors count), documents ``[CLS] [D] d [SEP]`` up to ``doc_maxlen``.
   Token vectors are projected by the head and L2-normalised; a query's score against a
   document is MaxSim, the sum over query vectors of their best cosine over the document's
   vectors, document padding and punctuation excluded.
3. Groups ``(query, positive, [hard negatives])`` come from ``qrels/<split>.tsv`` only, with
   negatives mined as for :func:`~embedstack.train.train_reranker` (or reused from its
   ``hard_negatives.jsonl``).
4. Loss (:func:`late_interaction_loss`): a step takes ``batch_size`` groups; the distinct
   documents of the step (every group's positive and hard negatives) are candidates for
   every query of the step, and the loss is the mean softmax cross-entropy of
   ``MaxSim / temperature`` with the query's own positive as the target. A query thus meets
   its hard negatives and every other document of the batch (in-batch negatives) in one
   softmax, ColBERT's n-way loss and its in-batch loss in a single term. Candidates that are
   judged positives of the query (another group of the same query in the batch) are masked
   out rather than pushed down. AdamW, linear warm-up then linear decay.
5. Save a folder :class:`~embedstack.encoders.colbert.LateInteractionEncoder` and
   :class:`~embedstack.encoders.colbert.ColbertReranker` load with no options: the BERT body
   (``save_pretrained``), the head as ``linear.weight`` in ``colbert_linear.safetensors``,
   the tokenizer, ColBERT's ``artifact.metadata`` (``query_maxlen``, ``doc_maxlen``, ``dim``),
   ``training_args.json``, ``training_log.jsonl`` and ``hard_negatives.jsonl``.

Temperature: 1 by default, i.e. raw MaxSim logits as ColBERT's own trainer (and PyLate's
contrastive loss) use. MaxSim sums ``query_maxlen`` cosines, so its logits already span
``[-query_maxlen, query_maxlen]``; the temperature of single-vector contrastive losses
(about 0.05 on one cosine) is not needed, and dividing further makes the softmax saturate on
the first hard negatives.

The options are a :class:`~embedstack.train.config.ColbertConfig`: the shared
:class:`~embedstack.train.config.TrainConfig` plus the head's ``dim``, the query and
document lengths and the temperature.

Example:
    >>> from embedstack.train import train_colbert
    >>> result = train_colbert("../shared/datasets/scifact", out="/tmp/colbert",
    ...                        max_pairs=2000)  # doctest: +SKIP
    >>> result.last_loss < result.first_loss  # doctest: +SKIP
    True
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from embedstack.encoders.colbert_format import (
    HEAD_FILE,
    METADATA_FILE,
    ColbertInputs,
    ColbertTokenizer,
    check_maxlen,
)
from embedstack.errors import require
from embedstack.train.common import (
    Group,
    PairProgress,
    TrainingRun,
    TrainResult,
    adamw_with_warmup,
    base_folder,
    check_layers,
    quiet_transformers,
    save_tokenizer,
)
from embedstack.train.config import ColbertConfig
from embedstack.train.staging import staged

__all__ = [
    "ColbertConfig",
    "late_interaction_loss",
    "maxsim_scores",
    "step_candidates",
    "token_vectors",
    "train_colbert",
]

KIND = "a model folder made by embedstack's training"


def maxsim_scores(
    torch: Any, queries: Any, query_mask: Any, documents: Any, document_mask: Any
) -> Any:
    """``(n_queries, n_docs)`` MaxSim scores (Khattab & Zaharia 2020, eq. 3), differentiable.

    Args:
        torch: The torch module.
        queries: ``(n_queries, query_len, dim)`` L2-normalised query token vectors.
        query_mask: ``(n_queries, query_len)`` bool: vectors that count (ColBERT: all).
        documents: ``(n_docs, doc_len, dim)`` L2-normalised document token vectors.
        document_mask: ``(n_docs, doc_len)`` bool: False on padding and punctuation.

    Returns:
        ``s_ij = sum_{q in Q_i} max_{d in D_j} <q, d>``, float32; 0 for a document without
        vectors, as :func:`embedstack.encoders.multivector.maxsim` gives.
    """
    sim = torch.einsum("aqk,bdk->abqd", queries, documents)
    sim = sim.masked_fill(~document_mask[None, :, None, :], float("-inf"))
    best = sim.amax(dim=-1)
    best = torch.where(document_mask.any(dim=-1)[None, :, None], best, torch.zeros_like(best))
    return (best * query_mask[:, None, :]).sum(dim=-1)


def late_interaction_loss(
    torch: Any,
    queries: Any,
    query_mask: Any,
    documents: Any,
    document_mask: Any,
    targets: Any,
    excluded: Any | None = None,
    temperature: float = 1.0,
) -> Any:
    """Mean softmax cross-entropy of MaxSim scores over a step's candidates.

    Args:
        torch: The torch module.
        queries, query_mask, documents, document_mask: As for :func:`maxsim_scores`.
        targets: ``(n_queries,)`` int64: each query's positive document.
        excluded: ``(n_queries, n_docs)`` bool: candidates left out of a query's softmax
            (its other judged positives); None excludes nothing.
        temperature: The MaxSim scores are divided by it.

    Returns:
        The scalar loss ``mean_i -log softmax(s_i / temperature)[targets_i]`` with ``s`` the
        :func:`maxsim_scores` and excluded candidates removed from the softmax.
    """
    scores = maxsim_scores(torch, queries, query_mask, documents, document_mask) / temperature
    if excluded is not None:
        scores = scores.masked_fill(excluded, float("-inf"))
    return torch.nn.functional.cross_entropy(scores, targets)


def step_candidates(
    groups: list[Group], judged: dict[str, set[str]]
) -> tuple[list[str], list[int], np.ndarray]:
    """The distinct documents of a step, each group's target among them, and the mask of
    candidates excluded from a group's softmax.

    Args:
        groups: The step's groups.
        judged: Query text to the texts of its judged positive documents.

    Returns:
        ``(documents, targets, excluded)``: the texts in first-seen order (positive, then
        negatives, group by group), ``targets[i]`` the position of ``groups[i].positive``,
        and ``excluded`` ``(len(groups), len(documents))`` bool, True where a document is a
        judged positive of the group's query other than its target.
    """
    position: dict[str, int] = {}
    for group in groups:
        for text in (group.positive, *group.negatives):
            position.setdefault(text, len(position))
    documents = list(position)
    targets = [position[g.positive] for g in groups]
    excluded = np.zeros((len(groups), len(documents)), dtype=bool)
    for i, group in enumerate(groups):
        for text in judged.get(group.query, ()):
            j = position.get(text)
            if j is not None and j != targets[i]:
                excluded[i, j] = True
    return documents, targets, excluded


def token_vectors(torch: Any, bert: Any, linear: Any, inputs: ColbertInputs) -> tuple[Any, Any]:
    """``(n, width, dim)`` L2-normalised token vectors and the ``(n, width)`` bool mask of
    those MaxSim uses, for the same batch the encoder would feed its backend."""
    batch, keep = inputs.pad(range(len(inputs)))
    hidden = bert(
        input_ids=torch.from_numpy(batch["input_ids"]),
        attention_mask=torch.from_numpy(batch["attention_mask"]),
    ).last_hidden_state
    projected = linear(hidden).float()
    return torch.nn.functional.normalize(projected, dim=-1), torch.from_numpy(keep)


def train_colbert(
    config: ColbertConfig | str | os.PathLike[str] | None = None, /, **options: Any
) -> TrainResult:
    """Train a ColBERT model on ``qrels/<split>.tsv`` of a BEIR folder and save it to ``out``.

    Args:
        config: A :class:`~embedstack.train.config.ColbertConfig`, or the BEIR folder
            (``corpus.jsonl``, ``queries.jsonl``, ``qrels/<split>.tsv``) with the config's
            fields as keywords: ``train_colbert(folder, out="colbert", dim=96)``. The base's
            vocabulary needs ``[unused0]``, ``[unused1]`` and ``[MASK]``.
        **options: Fields of the config (replacing those of a given config).

    Returns:
        A :class:`~embedstack.train.TrainResult` (``pairs`` counts each group's own
        (query, document) pairs, not the in-batch ones).

    Raises:
        InvalidInput: bad dataset folder or split, bad options (checked before any work), a
            base vocabulary without ColBERT's marker tokens, a non-empty ``out``, or no
            usable training group.
        ModelNotFound: ``base`` or ``miner`` cannot be found.
        MissingDependency: torch/transformers are not installed (extra ``torch``).
    """
    cfg = ColbertConfig.build(config, **options)
    torch = require("torch", "torch", "training a ColBERT model")
    transformers = require("transformers", "torch", "training a ColBERT model")
    return staged(cfg, KIND, lambda work: _train(work, torch, transformers))


def _train(cfg: ColbertConfig, torch: Any, transformers: Any) -> TrainResult:
    """Train and save into ``cfg.out`` (the work folder of :func:`staged`)."""
    from embedstack.eval.datasets import load_beir

    dataset = load_beir(cfg.dataset_dir, split=cfg.split)
    base_dir = base_folder(cfg.base)
    check_layers(transformers, base_dir, cfg.layers)
    base_config = transformers.AutoConfig.from_pretrained(base_dir)
    limit = int(getattr(base_config, "max_position_embeddings", 512) or 512)
    check_maxlen("query_maxlen", cfg.query_maxlen, limit)
    check_maxlen("doc_maxlen", cfg.doc_maxlen, limit)
    tokenizer = ColbertTokenizer(base_dir, query_maxlen=cfg.query_maxlen,
                                 doc_maxlen=cfg.doc_maxlen, query_augmentation=True)  # fmt: skip
    run = TrainingRun(cfg, "colbert", base_dir)
    run.args["loss"] = "softmax cross-entropy of MaxSim, hard and in-batch negatives"

    # -- data ----------------------------------------------------------------------------
    data = run.load_data(dataset)
    judged: dict[str, set[str]] = {}
    for qid, text in data.queries.items():
        judged.setdefault(text, set()).update(data.corpus[d] for d in data.positives[qid])
    run.save_args()

    # -- model ---------------------------------------------------------------------------
    with run.torch(torch):
        depth = {} if cfg.layers is None else {"num_hidden_layers": cfg.layers}
        with quiet_transformers(transformers):
            bert = transformers.AutoModel.from_pretrained(base_dir, **depth)
        linear = torch.nn.Linear(int(base_config.hidden_size), cfg.dim, bias=False)
        bert.train()
        plan, _ = run.plan(data.groups)
        steps_total = sum(math.ceil(len(p) / cfg.batch_size) for p in plan)
        named = [*bert.named_parameters(), *(("linear." + n, p) for n, p in
                                             linear.named_parameters())]  # fmt: skip
        optimizer, scheduler = adamw_with_warmup(torch, named, cfg, steps_total)
        state = run.log()
        total_pairs = sum(g.size for p in plan for g in p)
        with state, PairProgress(cfg.show_progress, total_pairs) as advance:
            for epoch, chosen in enumerate(plan):
                for start in range(0, len(chosen), cfg.batch_size):
                    chunk = chosen[start : start + cfg.batch_size]
                    docs, targets, excluded = step_candidates(chunk, judged)
                    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16):
                        q, q_mask = token_vectors(
                            torch, bert, linear, tokenizer.queries([g.query for g in chunk])
                        )
                        d, d_mask = token_vectors(torch, bert, linear, tokenizer.documents(docs))
                    value = late_interaction_loss(torch, q, q_mask, d, d_mask,
                                                  torch.tensor(targets),
                                                  torch.from_numpy(excluded),
                                                  cfg.temperature)  # fmt: skip
                    optimizer.zero_grad(set_to_none=True)
                    value.backward()
                    torch.nn.utils.clip_grad_norm_([p for _, p in named], 1.0)
                    optimizer.step()
                    scheduler.step()
                    pairs = sum(g.size for g in chunk)
                    state.record(float(value.detach()), pairs, epoch, scheduler.get_last_lr()[0])
                    advance(pairs, state.recent_loss())
            state.flush(final=True)
        seconds = state.elapsed()
        bert.eval()
        _save_model(transformers, bert, linear, cfg.out)
        save_tokenizer(base_dir, cfg.out, cfg.doc_maxlen)
        metadata = {"query_maxlen": cfg.query_maxlen, "doc_maxlen": cfg.doc_maxlen,
                    "dim": cfg.dim, "similarity": "cosine", "mask_punctuation": True,
                    "attend_to_mask_tokens": False, "query_token_id": "[unused0]",
                    "doc_token_id": "[unused1]", "checkpoint": cfg.base}  # fmt: skip
        (cfg.out / METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n", "utf-8")
    return run.finish(state, data, seconds)


def _save_model(transformers: Any, bert: Any, linear: Any, out_dir: Path) -> None:
    """The BERT body as a standard Hugging Face folder, the head beside it in
    ``colbert_linear.safetensors`` (so loading the body reports no unexpected weight)."""
    from safetensors.torch import save_file

    with quiet_transformers(transformers):
        bert.save_pretrained(out_dir)
    weight = linear.weight.detach().float().contiguous()
    save_file({"linear.weight": weight}, str(out_dir / HEAD_FILE), metadata={"format": "pt"})
