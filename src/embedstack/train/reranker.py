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

Example:
    >>> from embedstack.train import train_reranker
    >>> result = train_reranker("../shared/datasets/scifact", out="/tmp/rr",
    ...                         max_pairs=4000)  # doctest: +SKIP
    >>> result.pairs_per_second  # doctest: +SKIP
    11.2
"""

from __future__ import annotations

import logging
import math
import os
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np

from embedstack.encoders.base import TextEncoder
from embedstack.encoders.registry import DEFAULT_MODEL
from embedstack.errors import InvalidInput, require
from embedstack.train.common import (
    Group,
    PairProgress,
    TrainingLog,
    TrainResult,
    adamw_with_warmup,
    base_folder,
    build_groups,
    check_positive,
    check_schedule,
    epoch_groups,
    prepare_out,
    quiet_transformers,
    recorded_args,
    save_tokenizer,
    training_data,
    write_args,
)

__all__ = [
    "Group",
    "TrainResult",
    "build_groups",
    "group_loss",
    "score_with_teacher",
    "train_reranker",
]

logger = logging.getLogger("embedstack")

Loss = Literal["bce", "listwise", "margin-mse"]
LOSSES = ("bce", "listwise", "margin-mse")


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
    dataset_dir: str | os.PathLike[str],
    *,
    out: str | os.PathLike[str],
    split: str = "train",
    base: str | os.PathLike[str] = DEFAULT_MODEL,
    miner: str | TextEncoder | None = DEFAULT_MODEL,
    teacher: str | os.PathLike[str] | Any | None = None,
    epochs: int = 1,
    max_pairs: int | None = None,
    negatives_per_query: int = 7,
    random_negatives: int = 0,
    mining_depth: int = 30,
    max_ratio: float = 0.95,
    loss: Loss = "bce",
    batch_size: int = 16,
    lr: float = 5e-5,
    warmup: float = 0.1,
    weight_decay: float = 0.01,
    max_length: int = 256,
    layers: int | None = None,
    split_layer: int | None = None,
    query_length: int = 32,
    seed: int = 0,
    threads: int = 2,
    bf16: bool = False,
    log_every: int = 10,
    negatives_file: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    show_progress: bool | None = None,
) -> TrainResult:
    """Train a cross-encoder on ``qrels/<split>.tsv`` of a BEIR folder and save it to ``out``.

    Args:
        dataset_dir: BEIR folder (``corpus.jsonl``, ``queries.jsonl``, ``qrels/<split>.tsv``).
        out: Output folder (created; must be empty unless ``overwrite``).
        split: The qrels split to train on; only this split is read.
        base: BERT-family model (registry name, folder or HF id) whose body initialises the
            cross-encoder; a sentence-transformers folder contributes its transformer.
        miner: Dense model for hard negatives and the false-negative rule (name or encoder);
            None mines with BM25 only.
        teacher: Cross-encoder (folder, HF id, or a loaded reranker) whose raw scores on
            every training pair are the targets of ``loss="margin-mse"``; required by that
            loss and refused by the others. Scored once, before training (ONNX).
        epochs: Passes over the training groups.
        max_pairs: Cap on (query, document) pairs per epoch (whole groups are kept,
            a fresh random subset each epoch); None uses every group.
        negatives_per_query: Hard negatives per (query, positive) group.
        random_negatives: Extra negatives per group drawn uniformly from the corpus
            (never a judged positive). Where judgements are dense but shallow, as on
            NFCorpus, the mined "hard" negatives are often unjudged relevant documents;
            random negatives are clean, as in DPR's mix of BM25 and in-batch negatives
            (Karpukhin et al. 2020). 0 (default): hard negatives only.
        mining_depth: Candidates taken from each retriever when mining.
        max_ratio: False-negative rule of :mod:`embedstack.train.negatives`.
        loss: ``"bce"`` (pointwise), ``"listwise"`` (softmax over each group) or
            ``"margin-mse"`` (distil ``teacher``'s margins; see the module docstring).
        batch_size: Pairs per optimizer step (listwise: whole groups fitting in it, >= 1).
        lr: Peak learning rate of AdamW.
        warmup: Fraction of the steps spent warming the learning rate up linearly.
        weight_decay: AdamW weight decay.
        max_length: Tokens per pair (documents truncated, the query kept).
        layers: Keep only the base's first ``layers`` transformer layers (None: all). A
            shallower cross-encoder costs proportionally less per pair at inference, the
            lever for tight latency budgets (cf. the 2- and 4-layer MS MARCO MiniLM
            cross-encoders next to the 6- and 12-layer ones).
        split_layer: Train a split cross-encoder (PreTTR, :mod:`embedstack.rerank.split`):
            the first ``split_layer`` layers read query and document apart, so an index can
            store each document's states at that layer and a rerank runs only the layers
            above. None (default): a plain cross-encoder.
        query_length: With ``split_layer``: tokens of the query segment (special tokens
            included); documents get ``max_length - query_length``.
        seed: Seeds the data order and torch's global RNG (head initialisation, dropout):
            the same inputs and thread count give the same model.
        threads: torch intra-op threads.
        bf16: Run forward/backward under bfloat16 autocast (faster on CPUs with bf16 units).
        log_every: Steps per line of ``training_log.jsonl``.
        negatives_file: Reuse the ``hard_negatives.jsonl`` an earlier training saved (same
            dataset and split) instead of mining again; at most ``negatives_per_query`` of
            each query's negatives are used. Mining is the slow part on CPU (the miner
            encodes the whole corpus).
        overwrite: Replace ``out`` if it holds an earlier training's output.
        show_progress: rich progress bar; None means "when stderr is a terminal".

    Returns:
        A :class:`TrainResult`.

    Raises:
        InvalidInput: bad dataset folder or split, bad parameters, a non-empty ``out``, or
            no usable training pair.
        ModelNotFound: ``base`` or ``miner`` cannot be found.
        MissingDependency: torch/transformers are not installed (extra ``torch``).
    """
    from embedstack.eval.datasets import load_beir

    if loss not in LOSSES:
        raise InvalidInput(f"unknown loss {loss!r}; choose one of {', '.join(LOSSES)}")
    if (loss == "margin-mse") != (teacher is not None):
        raise InvalidInput("loss='margin-mse' distils a teacher: pass teacher= (--teacher) with "
                           "it, and only with it")  # fmt: skip
    check_positive(epochs=epochs, max_pairs=max_pairs, negatives_per_query=negatives_per_query,
           mining_depth=mining_depth, batch_size=batch_size, lr=lr, max_length=max_length,
           threads=threads, log_every=log_every, layers=layers)  # fmt: skip
    if type(random_negatives) is not int or random_negatives < 0:
        raise InvalidInput(f"random_negatives must be an int >= 0, got {random_negatives!r}")
    check_schedule(warmup, weight_decay)
    if max_length < 16:
        raise InvalidInput(f"max_length must be >= 16, got {max_length}")
    spec = None
    if split_layer is not None:
        from embedstack.rerank.split import SplitSpec

        check_positive(split_layer=split_layer, query_length=query_length)
        spec = SplitSpec(split_layer, query_length, max_length)
    torch = require("torch", "torch", "training a reranker")
    transformers = require("transformers", "torch", "training a reranker")
    dataset = load_beir(dataset_dir, split=split)
    base_dir = base_folder(base)
    if layers is not None:  # checked before the (slow) mining
        depth = int(getattr(transformers.AutoConfig.from_pretrained(base_dir),
                            "num_hidden_layers", 0) or 0)  # fmt: skip
        if depth and layers > depth:
            raise InvalidInput(f"layers={layers}, but {base_dir} has only {depth} layers")
    if spec is not None:
        depth = layers or int(
            getattr(transformers.AutoConfig.from_pretrained(base_dir), "num_hidden_layers", 0) or 0
        )
        if depth and spec.layer >= depth:
            raise InvalidInput(
                f"split_layer={spec.layer} must leave at least one of the {depth} layers joint"
            )
    out_dir = Path(out)
    prepare_out(out_dir, overwrite)
    args = recorded_args(dict(locals()), _ARG_NAMES)
    args["miner"] = getattr(miner, "model_id", miner)
    args["teacher"] = getattr(teacher, "model_id", None if teacher is None else str(teacher))
    args["base_folder"] = str(base_dir)

    # -- data ----------------------------------------------------------------------------
    started = time.perf_counter()
    data = training_data(dataset, dataset_dir, split, out_dir, miner=miner,
                          negatives_per_query=negatives_per_query, mining_depth=mining_depth,
                          max_ratio=max_ratio, negatives_file=negatives_file,
                          random_negatives=random_negatives, seed=seed)  # fmt: skip
    groups, mined = data.groups, data.mined
    mining_seconds = time.perf_counter() - started
    if teacher is not None:
        teaching = time.perf_counter()
        teacher_model = _teacher(teacher, threads)
        args["teacher"] = getattr(teacher_model, "model_id", args["teacher"])
        groups = score_with_teacher(groups, teacher_model, show_progress)
        del teacher_model
        args["teacher_seconds"] = round(time.perf_counter() - teaching, 2)
    args.update(
        groups=len(groups),
        dropped_negatives=mined.dropped,
        negative_sources=mined.sources,
        mining_seconds=round(mining_seconds, 2),
    )
    write_args(out_dir, args)

    # -- model ---------------------------------------------------------------------------
    from embedstack.rerank.pairs import PairTokenizer, pad
    from embedstack.rerank.split import SplitTokenizer, joined_batch, split_logits

    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        torch.manual_seed(seed)
        model = _fresh_classifier(transformers, base_dir, layers)
        model.train()
        tokenizer = PairTokenizer(base_dir, max_length)
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

        rng = random.Random(seed)
        plan = [epoch_groups(groups, max_pairs, rng) for _ in range(epochs)]
        steps_total = sum(
            sum(1 for _ in _batches(p, loss, batch_size, random.Random(0))) for p in plan
        )
        optimizer, scheduler = adamw_with_warmup(torch, model.named_parameters(), lr=lr,
                                          weight_decay=weight_decay, warmup=warmup,
                                          steps=steps_total)  # fmt: skip
        log_path = out_dir / "training_log.jsonl"
        state = TrainingLog(log_path, log_every, started=time.perf_counter())
        total_pairs = sum(g.size for p in plan for g in p)
        with state, PairProgress(show_progress, total_pairs) as advance:
            for epoch, chosen in enumerate(plan):
                for pairs, labels, sizes in _batches(chosen, loss, batch_size, rng):
                    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                        logits = step_logits(pairs)[:, 0].float()
                    value = group_loss(torch, loss, logits, labels, sizes)
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
            model.save_pretrained(out_dir)
        save_tokenizer(base_dir, out_dir, max_length)
    finally:
        torch.set_num_threads(previous_threads)
    result = state.result(out_dir, seconds, mining_seconds, len(groups), mined.dropped)
    write_args(out_dir, args, result)
    return result


_ARG_NAMES = frozenset(
    "dataset_dir out split base epochs max_pairs negatives_per_query random_negatives "
    "mining_depth max_ratio loss batch_size lr warmup weight_decay max_length layers split_layer "
    "query_length seed "
    "threads bf16 log_every negatives_file".split()
)


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
