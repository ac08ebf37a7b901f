"""Fine-tune a bi-encoder (the first stage of every search) on CPU.

Recipe (Sentence-BERT, Reimers & Gurevych 2019; DPR's hard negatives, Karpukhin et al. 2020):

1. The base is any dense model: a registry name, a sentence-transformers folder or a plain
   Hugging Face encoder (default: the bundled all-MiniLM-L6-v2). Cross-encoders, ColBERT,
   sparse and static models are refused. Its pooling, normalisation, maximum length and
   query/document prefixes are kept (the prefixes are applied to the training texts as
   :class:`~embedstack.encoders.Encoder` applies them, and saved as the model's prompts).
2. Training data (:mod:`embedstack.train.embedder_data`): a BEIR split's judgements, a pairs
   JSONL, scored pairs, or pairs built from a corpus alone (``unsupervised``), with hard
   negatives mined by BM25 and the dense miner through :mod:`embedstack.train.negatives`
   (judged positives and likely false negatives excluded), and a dev split carved from it.
3. Loss: sentence-transformers' losses (:mod:`embedstack.train.embedder_model`): InfoNCE
   over in-batch and hard negatives (MNRL; GradCache with ``mini_batch_size``), Margin-MSE
   from a teacher (a cross-encoder, or an ensemble of bi-encoders:
   :mod:`embedstack.train.teachers`), CoSENT for scored pairs, any of them under Matryoshka.
   Batches never hold the same query or positive twice. The loop is the other trainers'
   (:class:`~embedstack.train.common.TrainingRun`: AdamW with warm-up and linear decay, the
   seeded data order, ``training_log.jsonl``, the progress bar with pairs/s and ETA) rather
   than ``SentenceTransformerTrainer``, which would add ``datasets`` and ``accelerate`` to
   the dependencies for no gain on one CPU.
4. The dev split is evaluated before training and after every epoch (or ``eval_every``
   steps); the best evaluated weights are kept and training stops after ``patience``
   evaluations without improvement; "best" is the full dimension's nDCG@10 (or Spearman),
   and with Matryoshka dims each truncation's is logged too (:func:`dev_scores`).
5. The result is written into a temporary folder beside ``out`` and renamed at the end, so
   a failed run leaves nothing half-written (a run killed outright leaves its work folder,
   ``.OUT.training-PID``, which the next run into the same place removes once that process
   is gone): a standard sentence-transformers folder
   (``SentenceTransformer(out)`` and ``embedstack.Encoder(out)`` load it, ONNX and int8
   included) with ``matryoshka_dims`` in ``config_sentence_transformers.json``,
   ``training_args.json`` (the exact options and the result), ``training_log.jsonl`` and
   ``hard_negatives.jsonl``.
6. Forgetting check: STS-B Spearman of the base and of the result (``sts_file``), since
   fine-tuning on one domain can erase general similarity (catastrophic forgetting).

Example:
    >>> from embedstack.train import train_embedder
    >>> result = train_embedder("../shared/datasets/scifact", out="/tmp/emb",
    ...                         matryoshka_dims="256,128,64")  # doctest: +SKIP
    >>> result.sts_before, result.sts_after  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import os
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from embedstack.errors import InvalidInput, require
from embedstack.train.common import (
    PairProgress,
    TrainingRun,
    TrainResult,
    adamw_with_warmup,
    quiet_transformers,
    write_args,
)
from embedstack.train.data import epoch_groups
from embedstack.train.embedder_batches import (
    contrastive_batches,
    judged_positives,
    per_query_groups,
)
from embedstack.train.embedder_config import EmbedderConfig
from embedstack.train.embedder_data import EmbedderData, load_embedder_data
from embedstack.train.embedder_model import (
    Prefixes,
    build_loss,
    check_bi_encoder,
    dev_scores,
    embedding_dim,
    load_base,
    pca_base,
    record_matryoshka,
    step_inputs,
)
from embedstack.train.staging import check_out, staged

__all__ = ["EmbedderConfig", "EmbedderResult", "train_embedder"]

KIND = "a model folder made by embedstack's training"


@dataclass(frozen=True)
class EmbedderResult(TrainResult):
    """:class:`~embedstack.train.TrainResult` and what only a bi-encoder run reports.

    Attributes:
        loss: The loss trained (``mnrl``, ``margin-mse`` or ``cosent``).
        dev_before: Dev metrics of the base (empty without a dev split).
        dev_best: Dev metrics of the saved model.
        best_step: Step of the saved weights (0: the base was never beaten).
        stopped_early: Training stopped before its last epoch.
        sts_before: STS-B Spearman of the base (None without ``sts_file``).
        sts_after: STS-B Spearman of the saved model.
        matryoshka_dims: Dims the saved model was trained to be truncated to (full first).
    """

    loss: str = "mnrl"
    dev_before: dict[str, float] = dataclasses.field(default_factory=dict)
    dev_best: dict[str, float] = dataclasses.field(default_factory=dict)
    best_step: int = 0
    stopped_early: bool = False
    sts_before: float | None = None
    sts_after: float | None = None
    matryoshka_dims: tuple[int, ...] = ()

    def report(self) -> list[str]:
        """Lines for the CLI: the dev split and the forgetting check."""
        lines = []
        if self.dev_best:
            lines.append(f"dev {self.dev_before} -> {self.dev_best} (step {self.best_step}"
                         f"{', stopped early' if self.stopped_early else ''})")  # fmt: skip
        if self.sts_before is not None:
            lines.append(f"STS-B Spearman {self.sts_before:.4f} -> {self.sts_after:.4f}")
        return lines


def _sts(model: str | os.PathLike[str], cfg: EmbedderConfig) -> float | None:
    """STS-B Spearman of ``model`` through :class:`~embedstack.encoders.Encoder` (the
    fast path users get), or None without an STS file."""
    if cfg.sts_file is None or not cfg.sts_file.is_file():
        return None
    from embedstack.encoders import Encoder
    from embedstack.eval.datasets import load_sts
    from embedstack.eval.runner import evaluate_sts

    encoder = Encoder(model, threads=cfg.threads, show_progress=False)
    return round(float(evaluate_sts(encoder, load_sts(cfg.sts_file))["spearman"]), 6)


def _epochs(data: EmbedderData, cfg: EmbedderConfig, rng: random.Random) -> list[list[Any]]:
    """Each epoch's batches: groups without in-batch false negatives (no repeated query or
    positive, no judged positive of another query of the batch), or scored pairs."""
    plans: list[list[Any]] = []
    judged = judged_positives(data.groups)
    for epoch in range(cfg.epochs):
        if data.scored:
            rows = data.scored[:]
            rng.shuffle(rows)
            rows = rows[: cfg.max_pairs] if cfg.max_pairs else rows
            plans.append([rows[i : i + cfg.batch_size] for i in range(0, len(rows),
                                                                      cfg.batch_size)])  # fmt: skip
        else:
            groups = data.groups
            if cfg.positives_per_query:
                groups = per_query_groups(groups, cfg.positives_per_query, epoch,
                                          random.Random(cfg.seed + 5))  # fmt: skip
            chosen = epoch_groups(groups, cfg.max_pairs, rng)
            plans.append(contrastive_batches(chosen, cfg.batch_size, rng, judged,
                                             min_size=max(2, cfg.batch_size // 2)))  # fmt: skip
    return plans


def _teach(
    plan: list[list[list[Any]]], cfg: EmbedderConfig, data: EmbedderData, run: TrainingRun
) -> list[list[list[Any]]]:
    """``plan`` with a teacher's raw scores of ``(positive, *negatives)`` on each group
    (Margin-MSE); only the groups the epochs train on are scored (``max_pairs`` may leave
    most of them out, and a teacher's scoring can cost as much as the training)."""
    from embedstack.train.reranker import score_with_teacher
    from embedstack.train.teachers import load_teacher

    started = time.perf_counter()
    teacher = cfg.teacher
    if isinstance(teacher, str | os.PathLike):
        teacher = load_teacher(teacher, student=cfg.base, threads=cfg.threads, scale=cfg.scale,
                               corpus=lambda: _documents(cfg, data))  # fmt: skip
    run.args["teacher"] = getattr(teacher, "model_id", run.args["teacher"])
    used = list(dict.fromkeys(g for batches in plan for batch in batches for g in batch))
    if hasattr(teacher, "warm"):  # a bi-encoder teacher encodes in batches up front
        teacher.warm([g.query for g in used], [t for g in used for t in (g.positive, *g.negatives)])
    scored = dict(zip(used, score_with_teacher(used, teacher, cfg.show_progress), strict=True))
    run.args["teacher_seconds"] = round(time.perf_counter() - started, 2)
    run.args["teacher_groups"] = len(used)
    return [[[scored[g] for g in batch] for batch in batches] for batches in plan]


def train_embedder(
    config: EmbedderConfig | str | os.PathLike[str] | None = None, /, **options: Any
) -> EmbedderResult:
    """Fine-tune a bi-encoder on DATA and save it to ``out`` (see the module docstring).

    Args:
        config: An :class:`~embedstack.train.embedder_config.EmbedderConfig`, or DATA (a
            BEIR folder, pairs JSONL or scored pairs JSONL) with the config's fields as
            keywords: ``train_embedder("pairs.jsonl", out="model", epochs=2)``.
        **options: Fields of the config (replacing those of a given config).

    Returns:
        An :class:`EmbedderResult`; ``pairs`` counts (query, document) pairs of the groups
        (positive and hard negatives), not the in-batch ones.

    Raises:
        InvalidInput: bad options (checked before any work), DATA without the split or with
            a malformed line, a base that is not a bi-encoder, a non-empty ``out``, or
            nothing to train on. ``out`` is then left as it was.
        ModelNotFound: ``base``, ``miner`` or ``teacher`` cannot be found.
        MissingDependency: torch/sentence-transformers are not installed (extra ``torch``).
    """
    cfg = EmbedderConfig.build(config, **options)
    torch = require("torch", "torch", "training a bi-encoder")
    transformers = require("transformers", "torch", "training a bi-encoder")
    st = require("sentence_transformers", "torch", "training a bi-encoder")
    check_out(cfg.out, cfg.overwrite, KIND)
    base_dir, base_config = check_bi_encoder(cfg.base)
    if isinstance(cfg.teacher, str | os.PathLike):
        from embedstack.train.teachers import teacher_members

        teacher_members(cfg.teacher)  # a misnamed teacher fails before any mining
    result, args = staged(cfg, KIND, lambda work: _train(cfg, work, base_dir, base_config,
                                                         torch, transformers, st))  # fmt: skip
    sts_after = _sts(cfg.out, cfg) if result.sts_before is not None else None
    final = dataclasses.replace(result, out=cfg.out, sts_after=sts_after)
    write_args(cfg.out, args, final)
    return final


def _train(
    cfg: EmbedderConfig, work: EmbedderConfig, base_dir: Path, base_config: Any,
    torch: Any, transformers: Any, st: Any,
) -> tuple[EmbedderResult, dict[str, Any]]:  # fmt: skip
    """Train into ``work.out``; the result (``out`` still the work folder) and the record."""
    sts_before = _sts(base_dir, cfg)
    run = TrainingRun(work, "embedder", base_config.transformer_path)
    run.args["out"] = os.fspath(cfg.out)
    started = time.perf_counter()
    data = load_embedder_data(work, work.out)
    run.mining_seconds = time.perf_counter() - started
    loss_name = cfg.resolved_loss(bool(data.scored))
    if loss_name == "margin-mse":  # Margin-MSE learns from (positive, negative) margins
        data = dataclasses.replace(data, groups=[g for g in data.groups if g.negatives])
        if not data.groups:
            raise InvalidInput("margin-mse needs negatives, and no group has one")
    mined = data.mined
    run.args.update(data=data.kind, loss=loss_name, groups=data.size, dev=len(data.dev),
                    dropped_negatives=mined.dropped if mined else 0,
                    negative_sources=mined.sources if mined else {},
                    mining_seconds=round(run.mining_seconds, 2), sts_before=sts_before)  # fmt: skip
    if not data.size:
        raise InvalidInput(f"{cfg.dataset_dir}: nothing left to train on after the dev split")
    rotating = cfg.rotates
    if rotating:  # the rotated copy lives in the work folder until the weights are read
        texts = _documents(cfg, data)
        if cfg.pca_init is None and len(set(texts)) < int(base_config.dim or 0):
            rotating = False  # too few texts to fit every axis: only an explicit ask fails
            run.args["pca_init"] = f"skipped: {len(set(texts))} texts < {base_config.dim} dims"
        else:
            base_dir, base_config, run.args["pca_init"] = pca_base(
                cfg.base, texts, work.out / ".pca-base", cfg.seed, cfg.threads
            )
    plan = _epochs(data, cfg, random.Random(cfg.seed))
    if loss_name == "margin-mse":
        plan = _teach(plan, cfg, data, run)
    run.save_args()
    prefixes = Prefixes(base_config.query_prefix, base_config.document_prefix,
                        base_config.symmetric_prefix)  # fmt: skip
    with run.torch(torch):
        model = load_base(st, transformers, base_dir, base_config, cfg)
        if rotating:
            shutil.rmtree(base_dir)
        dim = embedding_dim(model)
        loss = build_loss(model, loss_name, cfg, dim)
        model.train()
        steps_total = sum(len(p) for p in plan)
        if not data.scored:  # groups left out by the batches' false-negative rules
            run.args["batches"] = [{"steps": len(p), "groups": sum(map(len, p))} for p in plan]
        optimizer, scheduler = adamw_with_warmup(torch, model.named_parameters(), cfg,
                                                 steps_total)  # fmt: skip
        state = run.log()
        cuts = tuple(d for d in cfg.matryoshka_dims or () if d < dim)  # logged by dev checks
        dev_before = dev_scores(model, data.dev, prefixes, cuts) if len(data.dev) else {}
        best, best_step, best_state, waited, stopped = dev_before, 0, None, 0, False
        last = dev_before
        main = next(iter(dev_before), "")
        if dev_before:
            state.write({"dev": dev_before})
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}

        def evaluate() -> bool:
            """Evaluate the dev split; True when training should stop."""
            nonlocal best, best_step, best_state, waited, last
            if not main:
                return False
            scores = last = dev_scores(model, data.dev, prefixes, cuts)
            state.write({"dev": scores})
            if scores[main] > best[main]:
                best, best_step, waited = scores, state.step, 0
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                return False
            waited += 1
            return bool(cfg.patience) and waited >= cfg.patience

        total = sum(_pairs(b) for p in plan for b in p)
        with state, PairProgress(cfg.show_progress, total) as advance:
            for epoch, batches in enumerate(plan):
                for batch in batches:
                    features, labels, pairs = step_inputs(torch, model, batch, prefixes, loss_name)
                    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16):
                        value = loss(features, labels)
                    optimizer.zero_grad(set_to_none=True)
                    value.backward()
                    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                    optimizer.step()
                    scheduler.step()
                    state.record(float(value.detach()), pairs, epoch, scheduler.get_last_lr()[0])
                    advance(pairs, state.recent_loss())
                    if cfg.eval_every and state.step % cfg.eval_every == 0 and evaluate():
                        stopped = True
                        break
                if stopped:
                    break
                if not (cfg.eval_every and state.step % cfg.eval_every == 0) and evaluate():
                    stopped = epoch + 1 < len(plan)
                    break
            state.flush(final=True)
        seconds = state.elapsed()
        if main and cfg.patience and best_state is not None:
            model.load_state_dict(best_state)
        else:
            best, best_step = last, state.step
        model.eval()
        with quiet_transformers(transformers):
            model.save(os.fspath(work.out))
    dims = tuple(sorted({dim, *cfg.matryoshka_dims}, reverse=True)) if cfg.matryoshka_dims else ()
    record_matryoshka(work.out, dims, int(model.max_seq_length))
    plain = state.result(
        work.out, seconds, run.mining_seconds, data.size, run.args["dropped_negatives"]
    )
    result = EmbedderResult(**dataclasses.asdict(plain), loss=loss_name, dev_before=dev_before,
                            dev_best=best, best_step=best_step, stopped_early=stopped,
                            sts_before=sts_before, matryoshka_dims=dims)  # fmt: skip
    return result, run.args


def _documents(cfg: EmbedderConfig, data: EmbedderData) -> list[str]:
    """The texts a PCA rotation is fitted on: a BEIR folder's corpus, else the documents of
    the training data (positives, negatives and the dev pool; both sides of scored pairs)."""
    if cfg.dataset_dir.is_dir():
        from embedstack.eval.datasets import load_corpus

        return load_corpus(cfg.dataset_dir)[1]
    texts = [t for g in data.groups for t in (g.positive, *g.negatives)]
    texts += [t for s1, s2, _ in data.scored for t in (s1, s2)]
    return list(dict.fromkeys([*texts, *data.dev.docs.values()]))


def _pairs(batch: list[Any]) -> int:
    """(query, document) pairs a step trains on (see :func:`step_inputs`)."""
    if batch and isinstance(batch[0], tuple):
        return len(batch)
    k = min(len(g.negatives) for g in batch)
    return len(batch) * (1 + k)
