"""Train a cross-encoder reranker on a BEIR dataset's training judgements, on CPU.

Recipe (monoBERT, Nogueira & Cho 2019, with mined hard negatives):

1. Start from a BERT-family encoder (default: the bundled all-MiniLM-L6-v2 body) with a fresh
   one-logit classification head (``AutoModelForSequenceClassification(num_labels=1)``).
2. Build groups ``(query, positive, [negatives])`` from ``qrels/<split>.tsv``: every judged
   pair with score > 0 is a positive; negatives are mined from BM25 and dense retrieval for
   each (query, positive) group, judged positives and likely false negatives of that
   positive removed (:mod:`embedstack.train.negatives`). Only the given split's qrels are
   read.
3. Optimise either **BCE**, binary cross-entropy with logits on every pair (positive 1,
   negative 0), **listwise** softmax cross-entropy over each group ``[pos, neg1..negk]``
   with the positive as the target class, or **Margin-MSE** distillation from a teacher
   cross-encoder (Hofstätter et al. 2020): the student's margins ``s(pos) - s(neg_i)`` are
   regressed onto the teacher's, which hands a small student a graded signal on every
   negative instead of one bit per group. AdamW, linear warm-up then linear decay.
4. Save a standard Hugging Face folder that :class:`~embedstack.rerank.CrossEncoder` loads:
   ``config.json`` (``num_labels = 1``), ``model.safetensors``, the tokenizer files (with
   ``model_max_length`` set to the training ``max_length``, so inference reads pairs the way
   training did), ``training_args.json``, ``training_log.jsonl`` and the mined
   ``hard_negatives.jsonl`` (reusable with ``negatives_file=``).

The options are a :class:`~embedstack.train.config.RerankerConfig`, the shared
:class:`~embedstack.train.config.TrainConfig` plus the loss, teacher, pair length and split.

Example:
    >>> from embedstack.train import RerankerConfig, train_reranker
    >>> result = train_reranker("../shared/datasets/scifact", out="/tmp/rr",
    ...                         max_pairs=4000)  # doctest: +SKIP
    >>> result.pairs_per_second  # doctest: +SKIP
    11.2
    >>> config = RerankerConfig(dataset_dir="../shared/datasets/scifact", out="/tmp/rr",
    ...                         loss="listwise", epochs=2)
    >>> train_reranker(config)  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import math
import os
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from embedstack.errors import InvalidInput, require
from embedstack.train.common import (
    Group,
    PairProgress,
    TrainingRun,
    TrainResult,
    adamw_with_warmup,
    base_folder,
    build_groups,
    check_layers,
    quiet_transformers,
    save_tokenizer,
)
from embedstack.train.config import LOSSES, Loss, RerankerConfig
from embedstack.train.staging import staged

__all__ = [
    "LOSSES",
    "Group",
    "RerankerConfig",
    "TrainResult",
    "build_groups",
    "group_loss",
    "score_with_teacher",
    "train_reranker",
]

KIND = "a reranker folder made by train_reranker"

logger = logging.getLogger("embedstack")


def _batches(
    groups: list[Group], loss: Loss, batch_size: int, rng: random.Random
) -> Iterator[tuple[list[tuple[str, str]], list[float], list[int]]]:
    """``(pairs, labels, group sizes)`` per step; BCE shuffles pairs, the group losses keep
    groups whole (Margin-MSE's labels are the teacher's scores, group by group)."""
    if loss != "bce":
        per_step = max(1, batch_size // max(g.size for g in groups))
        for start in range(0, len(groups), per_step):
            chunk = groups[start : start + per_step]
            pairs = [(g.query, d) for g in chunk for d in (g.positive, *g.negatives)]
            labels = [t for g in chunk for t in (g.teacher or ())]
            yield pairs, labels, [g.size for g in chunk]
        return
    flat = [(g.query, g.positive, 1.0) for g in groups]
    flat += [(g.query, n, 0.0) for g in groups for n in g.negatives]
    rng.shuffle(flat)
    for start in range(0, len(flat), batch_size):
        rows = flat[start : start + batch_size]
        yield [(q, d) for q, d, _ in rows], [y for _, _, y in rows], []


def group_loss(torch: Any, loss: Loss, logits: Any, labels: list[float], sizes: list[int]) -> Any:
    """The training loss of one step's logits (see :func:`_batches` for the layout).

    ``bce``: mean binary cross-entropy with logits. ``listwise``: mean over groups of
    ``-log softmax(group)[0]`` (the positive comes first). ``margin-mse``: mean over every
    (group, negative) of ``((s_pos - s_neg) - (t_pos - t_neg))**2``, with ``t`` the teacher's
    scores in ``labels``.
    """
    if loss == "bce":
        target = torch.tensor(labels, dtype=torch.float32)
        return torch.nn.functional.binary_cross_entropy_with_logits(logits, target)
    parts = torch.split(logits, sizes)
    if loss == "listwise":
        return torch.stack([-torch.log_softmax(p, 0)[0] for p in parts]).mean()
    teacher = torch.split(torch.tensor(labels, dtype=torch.float32), sizes)
    student_margins = torch.cat([p[0] - p[1:] for p in parts])
    teacher_margins = torch.cat([t[0] - t[1:] for t in teacher])
    return torch.nn.functional.mse_loss(student_margins, teacher_margins)


def score_with_teacher(
    groups: list[Group], teacher: Any, show_progress: bool | None = None
) -> list[Group]:
    """``groups`` with ``teacher`` (a :class:`~embedstack.rerank.Reranker` giving raw
    scores) scores attached; one ``score`` call per group."""
    import dataclasses

    scored = []
    with PairProgress(show_progress, sum(g.size for g in groups), "teacher scoring") as advance:
        for group in groups:
            values = teacher.score(group.query, [group.positive, *group.negatives])
            scored.append(dataclasses.replace(group, teacher=tuple(float(v) for v in values)))
            advance(group.size, math.nan)
    return scored


def _teacher(teacher: Any, threads: int) -> Any:
    """A reranker returning raw scores (logits): margins of probabilities would saturate."""
    if not isinstance(teacher, str | os.PathLike):
        return teacher
    from embedstack.rerank import load_reranker

    return load_reranker(teacher, activation="none", threads=threads, show_progress=False)


def train_reranker(
    config: RerankerConfig | str | os.PathLike[str] | None = None, /, **options: Any
) -> TrainResult:
    """Train a cross-encoder on ``qrels/<split>.tsv`` of a BEIR folder and save it to ``out``.

    Args:
        config: A :class:`~embedstack.train.config.RerankerConfig`, or the BEIR folder
            (``corpus.jsonl``, ``queries.jsonl``, ``qrels/<split>.tsv``) with the config's
            fields as keywords: ``train_reranker(folder, out="rr", epochs=2)``.
        **options: Fields of the config (replacing those of a given config).

    Returns:
        A :class:`TrainResult`.

    Raises:
        InvalidInput: bad dataset folder or split, bad options (checked before any work), a
            non-empty ``out``, or no usable training pair.
        ModelNotFound: ``base`` or ``miner`` cannot be found.
        MissingDependency: torch/transformers are not installed (extra ``torch``).
    """
    cfg = RerankerConfig.build(config, **options)
    torch = require("torch", "torch", "training a reranker")
    transformers = require("transformers", "torch", "training a reranker")
    return staged(cfg, KIND, lambda work: _train(work, torch, transformers))


def _train(cfg: RerankerConfig, torch: Any, transformers: Any) -> TrainResult:
    """Train and save into ``cfg.out`` (the work folder of :func:`staged`)."""
    from embedstack.eval.datasets import load_beir

    spec = cfg.split_spec()
    dataset = load_beir(cfg.dataset_dir, split=cfg.split)
    base_dir = base_folder(cfg.base)
    depth = check_layers(transformers, base_dir, cfg.layers)  # before the (slow) mining
    depth = cfg.layers or depth
    if spec is not None and depth and spec.layer >= depth:
        raise InvalidInput(
            f"split_layer={spec.layer} must leave at least one of the {depth} layers joint"
        )
    run = TrainingRun(cfg, "reranker", base_dir)

    # -- data ----------------------------------------------------------------------------
    data = run.load_data(dataset)
    groups = data.groups
    if cfg.teacher is not None:
        teaching = time.perf_counter()
        teacher_model = _teacher(cfg.teacher, cfg.threads)
        run.args["teacher"] = getattr(teacher_model, "model_id", run.args["teacher"])
        groups = score_with_teacher(groups, teacher_model, cfg.show_progress)
        del teacher_model
        run.args["teacher_seconds"] = round(time.perf_counter() - teaching, 2)
    run.save_args()

    # -- model ---------------------------------------------------------------------------
    from embedstack.rerank.pairs import PairTokenizer, pad
    from embedstack.rerank.split import SplitTokenizer, joined_batch, split_logits

    with run.torch(torch):
        model = _fresh_classifier(transformers, base_dir, cfg.layers)
        model.train()
        tokenizer = PairTokenizer(base_dir, cfg.max_length)
        split_tokenizer = None if spec is None else SplitTokenizer(base_dir, spec)

        def step_logits(pairs: list[tuple[str, str]]) -> Any:
            if split_tokenizer is None or spec is None:
                batch = pad(tokenizer.encode_pairs(pairs), np.arange(len(pairs)))
                return model(**{k: torch.from_numpy(v) for k, v in batch.items()}).logits
            joined = joined_batch(
                split_tokenizer.queries([q for q, _ in pairs]),
                split_tokenizer.documents([d for _, d in pairs]),
                spec,
            )
            return split_logits(
                model, spec.layer, {k: torch.from_numpy(v) for k, v in joined.items()}
            )

        plan, rng = run.plan(groups)
        steps_total = sum(
            sum(1 for _ in _batches(p, cfg.loss, cfg.batch_size, random.Random(0))) for p in plan
        )
        optimizer, scheduler = adamw_with_warmup(torch, model.named_parameters(), cfg,
                                                 steps_total)  # fmt: skip
        state = run.log()
        total_pairs = sum(g.size for p in plan for g in p)
        with state, PairProgress(cfg.show_progress, total_pairs) as advance:
            for epoch, chosen in enumerate(plan):
                for pairs, labels, sizes in _batches(chosen, cfg.loss, cfg.batch_size, rng):
                    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16):
                        logits = step_logits(pairs)[:, 0].float()
                    value = group_loss(torch, cfg.loss, logits, labels, sizes)
                    optimizer.zero_grad(set_to_none=True)
                    value.backward()
                    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                    optimizer.step()
                    scheduler.step()
                    state.record(
                        float(value.detach()), len(pairs), epoch, scheduler.get_last_lr()[0]
                    )
                    advance(len(pairs), state.recent_loss())
            state.flush(final=True)
        seconds = state.elapsed()
        model.eval()
        if spec is not None:
            from embedstack.rerank.split import CONFIG_KEY

            setattr(model.config, CONFIG_KEY, spec.record())
        with quiet_transformers(transformers):
            model.save_pretrained(cfg.out)
        save_tokenizer(base_dir, cfg.out, cfg.max_length)
    return run.finish(state, data, seconds)


def _fresh_classifier(transformers: Any, base_dir: Path, layers: int | None = None) -> Any:
    """``AutoModelForSequenceClassification(num_labels=1)`` over ``base_dir``'s encoder,
    keeping its first ``layers`` transformer layers when given.

    transformers reports the (expected) newly initialised head as a warning; it is
    silenced for the duration of the load and logged at INFO level instead.
    """
    extra: dict[str, Any] = {} if layers is None else {"num_hidden_layers": layers}
    with quiet_transformers(transformers):
        model = transformers.AutoModelForSequenceClassification.from_pretrained(
            base_dir, num_labels=1, **extra
        )
    logger.info("initialised a fresh classification head over %s", base_dir)
    return model
