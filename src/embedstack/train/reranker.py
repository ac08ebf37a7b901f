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

import contextlib
import json
import logging
import math
import os
import random
import shutil
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from embedstack.encoders.base import TextEncoder
from embedstack.encoders.registry import DEFAULT_MODEL
from embedstack.errors import InvalidInput, require
from embedstack.settings import progress_enabled

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
NEGATIVES_FILE = "hard_negatives.jsonl"
TOKENIZER_FILES = (
    "tokenizer.json",
    "vocab.txt",
    "special_tokens_map.json",
    "tokenizer_config.json",
)


@dataclass(frozen=True)
class Group:
    """One training unit: a query, one judged positive and its mined negatives."""

    query: str
    positive: str
    negatives: tuple[str, ...]
    teacher: tuple[float, ...] | None = None
    """A teacher's scores for ``(positive, *negatives)`` (Margin-MSE distillation)."""

    @property
    def size(self) -> int:
        """Number of (query, document) pairs in the group."""
        return 1 + len(self.negatives)


@dataclass(frozen=True)
class TrainResult:
    """What :func:`train_reranker` did.

    Attributes:
        out: The saved model folder.
        steps: Optimizer steps taken.
        pairs: (query, document) pairs seen, over all epochs.
        seconds: Wall-clock training time (mining and saving excluded).
        pairs_per_second: ``pairs / seconds``.
        first_loss: Mean loss over the first logging window.
        last_loss: Mean loss over the last logging window.
        mining_seconds: Wall-clock time of negative mining.
        groups: Training groups available per epoch (before ``max_pairs``).
        dropped_negatives: Candidates dropped as likely false negatives.
    """

    out: Path
    steps: int
    pairs: int
    seconds: float
    pairs_per_second: float
    first_loss: float
    last_loss: float
    mining_seconds: float
    groups: int
    dropped_negatives: int


def build_groups(
    queries: dict[str, str],
    qrels: dict[str, dict[str, int]],
    corpus: dict[str, str],
    negatives: dict[str, dict[str, list[str]]],
    *,
    random_negatives: int = 0,
    rng: random.Random | None = None,
) -> list[Group]:
    """One :class:`Group` per judged (query, positive) pair whose document is in the corpus.

    ``negatives`` is ``{query_id: {positive_id: [doc_id, ...]}}``. ``random_negatives``
    documents drawn uniformly from the corpus (never a judged positive of the query, nor one
    of the group's hard negatives) are added to each group, seeded by ``rng``. A pair without
    any negative yields no group (nothing to contrast).
    """
    rng = rng or random.Random(0)
    doc_ids = list(corpus) if random_negatives else []
    groups = []
    for qid, judged in qrels.items():
        if qid not in queries:
            continue
        judged_positive = {d for d, r in judged.items() if r > 0}
        for doc, rel in judged.items():
            if rel <= 0 or doc not in corpus:
                continue
            mined = [d for d in negatives.get(qid, {}).get(doc, []) if d in corpus]
            excluded = judged_positive | set(mined)
            drawn: list[str] = []
            # Rejection sampling: the excluded set is tiny next to any real corpus; the
            # attempt cap only guards degenerate corpora made of positives.
            for _ in range(20 * random_negatives):
                if len(drawn) >= random_negatives:
                    break
                cand = doc_ids[rng.randrange(len(doc_ids))]
                if cand not in excluded:
                    excluded.add(cand)
                    drawn.append(cand)
            negs = tuple(corpus[d] for d in (*mined, *drawn))
            if negs:
                groups.append(Group(queries[qid], corpus[doc], negs))
    return groups


def _epoch_groups(groups: list[Group], max_pairs: int | None, rng: random.Random) -> list[Group]:
    order = groups[:]
    rng.shuffle(order)
    if max_pairs is None:
        return order
    chosen: list[Group] = []
    total = 0
    for group in order:
        if total + group.size > max_pairs and chosen:
            break
        chosen.append(group)
        total += group.size
    return chosen


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
    with _progress(show_progress, sum(g.size for g in groups), "teacher scoring") as advance:
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


def _check(**values: Any) -> None:
    for name, value in values.items():
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise InvalidInput(f"{name} must be a positive number, got {value!r}")


def _base_folder(base: str | os.PathLike[str]) -> Path:
    from embedstack.encoders.loading import load_model_config, resolve_model_dir

    path, spec = resolve_model_dir(base)
    if (path / "modules.json").is_file():  # a sentence-transformers folder: use its body
        return load_model_config(path, spec).transformer_path
    return path


def _prepare_out(out: Path, overwrite: bool) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        if not overwrite:
            raise InvalidInput(f"{out} exists and is not empty; pass overwrite=True (--overwrite)")
        if not (out / "training_args.json").is_file() and any(out.iterdir()):
            raise InvalidInput(f"{out} is not a reranker folder made by train_reranker; refusing "
                               "to overwrite it")  # fmt: skip
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)


def _save_tokenizer(src: Path, out: Path, max_length: int) -> None:
    for name in TOKENIZER_FILES:
        if (src / name).is_file():
            shutil.copy2(src / name, out / name)
    config_file = out / "tokenizer_config.json"
    config: dict[str, Any] = {}
    if config_file.is_file():
        config = json.loads(config_file.read_text(encoding="utf-8"))
    config["model_max_length"] = max_length
    config_file.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")


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
    from embedstack.eval.datasets import load_beir, load_corpus

    if loss not in LOSSES:
        raise InvalidInput(f"unknown loss {loss!r}; choose one of {', '.join(LOSSES)}")
    if (loss == "margin-mse") != (teacher is not None):
        raise InvalidInput("loss='margin-mse' distils a teacher: pass teacher= (--teacher) with "
                           "it, and only with it")  # fmt: skip
    _check(epochs=epochs, max_pairs=max_pairs, negatives_per_query=negatives_per_query,
           mining_depth=mining_depth, batch_size=batch_size, lr=lr, max_length=max_length,
           threads=threads, log_every=log_every, layers=layers)  # fmt: skip
    if type(random_negatives) is not int or random_negatives < 0:
        raise InvalidInput(f"random_negatives must be an int >= 0, got {random_negatives!r}")
    if not 0.0 <= warmup < 1.0 or weight_decay < 0:
        raise InvalidInput(
            f"need 0 <= warmup < 1 and weight_decay >= 0, got {warmup}, {weight_decay}"
        )
    if max_length < 16:
        raise InvalidInput(f"max_length must be >= 16, got {max_length}")
    torch = require("torch", "torch", "training a reranker")
    transformers = require("transformers", "torch", "training a reranker")
    dataset = load_beir(dataset_dir, split=split)
    base_dir = _base_folder(base)
    if layers is not None:  # checked before the (slow) mining
        depth = int(getattr(transformers.AutoConfig.from_pretrained(base_dir),
                            "num_hidden_layers", 0) or 0)  # fmt: skip
        if depth and layers > depth:
            raise InvalidInput(f"layers={layers}, but {base_dir} has only {depth} layers")
    out_dir = Path(out)
    _prepare_out(out_dir, overwrite)
    given = dict(locals())
    args = {k: (str(v) if isinstance(v, Path | os.PathLike) else v) for k, v in given.items()
            if k in _ARG_NAMES}  # fmt: skip
    args["miner"] = getattr(miner, "model_id", miner)
    args["teacher"] = getattr(teacher, "model_id", None if teacher is None else str(teacher))
    args["base_folder"] = str(base_dir)

    # -- data ----------------------------------------------------------------------------
    started = time.perf_counter()
    doc_ids, doc_texts = load_corpus(dataset)
    corpus = dict(zip(doc_ids, doc_texts, strict=True))
    positives = {q: {d for d, r in judged.items() if r > 0 and d in corpus}
                 for q, judged in dataset.qrels.items()}  # fmt: skip
    queries = {q: t for q, t in dataset.queries.items() if positives.get(q) and t.strip()}
    if not queries:
        raise InvalidInput(f"{dataset_dir}: split {split!r} has no query with a judged positive "
                           "document in the corpus; nothing to train on")  # fmt: skip
    from embedstack.train.negatives import mine_hard_negatives

    if negatives_file is not None:
        mined = _read_negatives(Path(negatives_file), positives, corpus, negatives_per_query)
    else:
        encoder = _miner(miner)
        mined = mine_hard_negatives(queries, positives, doc_ids, doc_texts, encoder=encoder,
                                    per_query=negatives_per_query, depth=mining_depth,
                                    max_ratio=max_ratio)  # fmt: skip
        del encoder
    _write_negatives(out_dir / NEGATIVES_FILE, mined.negatives)
    draw = random.Random(seed + 1)
    groups = build_groups(queries, dataset.qrels, corpus, mined.negatives,
                          random_negatives=random_negatives, rng=draw)  # fmt: skip
    if not groups:
        raise InvalidInput("no training group could be built (no negatives mined)")
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
    (out_dir / "training_args.json").write_text(json.dumps(args, indent=2) + "\n", "utf-8")

    # -- model ---------------------------------------------------------------------------
    from embedstack.rerank.pairs import PairTokenizer, pad

    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        torch.manual_seed(seed)
        model = _fresh_classifier(transformers, base_dir, layers)
        model.train()
        tokenizer = PairTokenizer(base_dir, max_length)
        rng = random.Random(seed)
        plan = [_epoch_groups(groups, max_pairs, rng) for _ in range(epochs)]
        steps_total = sum(
            sum(1 for _ in _batches(p, loss, batch_size, random.Random(0))) for p in plan
        )
        decay: list[Any] = []
        no_decay: list[Any] = []
        for name, param in model.named_parameters():
            (no_decay if name.endswith("bias") or "LayerNorm" in name else decay).append(param)
        optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": weight_decay},
             {"params": no_decay, "weight_decay": 0.0}], lr=lr)  # fmt: skip
        warm = max(1, int(warmup * steps_total))

        def schedule(step: int) -> float:
            if step < warm:
                return (step + 1) / warm
            return max(0.0, (steps_total - step) / max(1, steps_total - warm))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        log_path = out_dir / "training_log.jsonl"
        state = _Loop(log_path, log_every, started=time.perf_counter())
        total_pairs = sum(g.size for p in plan for g in p)
        with state, _progress(show_progress, total_pairs) as advance:
            for epoch, epoch_groups in enumerate(plan):
                for pairs, labels, sizes in _batches(epoch_groups, loss, batch_size, rng):
                    batch = pad(tokenizer.encode_pairs(pairs), np.arange(len(pairs)))
                    feed = {k: torch.from_numpy(v) for k, v in batch.items()}
                    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                        logits = model(**feed).logits[:, 0].float()
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
        with _quiet(transformers):
            model.save_pretrained(out_dir)
        _save_tokenizer(base_dir, out_dir, max_length)
    finally:
        torch.set_num_threads(previous_threads)
    result = TrainResult(
        out=out_dir,
        steps=state.step,
        pairs=state.pairs,
        seconds=round(seconds, 2),
        pairs_per_second=round(state.pairs / max(seconds, 1e-9), 2),
        first_loss=state.first_loss,
        last_loss=state.last_loss,
        mining_seconds=round(mining_seconds, 2),
        groups=len(groups),
        dropped_negatives=mined.dropped,
    )
    args["result"] = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(result).items()}
    (out_dir / "training_args.json").write_text(json.dumps(args, indent=2) + "\n", "utf-8")
    return result


_ARG_NAMES = frozenset(
    "dataset_dir out split base epochs max_pairs negatives_per_query random_negatives "
    "mining_depth max_ratio loss batch_size lr warmup weight_decay max_length layers seed "
    "threads bf16 log_every negatives_file".split()
)


def _write_negatives(path: Path, negatives: dict[str, dict[str, list[str]]]) -> None:
    with path.open("w", encoding="utf-8") as handle:
        for qid, groups in negatives.items():
            for pid, docs in groups.items():
                record = {"query_id": qid, "positive_id": pid, "negatives": docs}
                handle.write(json.dumps(record) + "\n")


def _read_negatives(
    path: Path, positives: dict[str, set[str]], corpus: dict[str, str], per_query: int
) -> Any:
    """Negatives saved by an earlier training, checked against this dataset.

    A line without ``positive_id`` (files of versions that mined per query) serves every
    positive of its query.
    """
    from embedstack.train.negatives import MinedNegatives

    negatives: dict[str, dict[str, list[str]]] = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise InvalidInput(f"cannot read negatives file {path}: {exc.strerror}") from None
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            qid, docs = str(record["query_id"]), [str(d) for d in record["negatives"]]
            pid = record.get("positive_id")
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError):
            raise InvalidInput(f'{path}:{lineno}: expected {{"query_id": ..., "positive_id": '
                               '..., "negatives": [...]}}') from None  # fmt: skip
        unknown = [d for d in docs if d not in corpus]
        if unknown:
            raise InvalidInput(f"{path}:{lineno}: documents {unknown[:3]} are not in the corpus; "
                               "the file belongs to another dataset")  # fmt: skip
        judged = positives.get(qid, set())
        targets = sorted(judged) if pid is None else [str(pid)] if str(pid) in judged else []
        for target in targets:
            negatives.setdefault(qid, {})[target] = docs[:per_query]
    if not negatives:
        raise InvalidInput(f"{path} holds no negatives for the queries of this split")
    total = sum(len(docs) for groups in negatives.values() for docs in groups.values())
    return MinedNegatives(negatives=negatives, dropped=0, sources={"file": total})


def _fresh_classifier(transformers: Any, base_dir: Path, layers: int | None = None) -> Any:
    """``AutoModelForSequenceClassification(num_labels=1)`` over ``base_dir``'s encoder,
    keeping its first ``layers`` transformer layers when given.

    transformers reports the (expected) newly initialised head as a warning; it is
    silenced for the duration of the load and logged at INFO level instead.
    """
    extra: dict[str, Any] = {} if layers is None else {"num_hidden_layers": layers}
    with _quiet(transformers):
        model = transformers.AutoModelForSequenceClassification.from_pretrained(
            base_dir, num_labels=1, **extra
        )
    logger.info("initialised a fresh classification head over %s", base_dir)
    return model


@contextlib.contextmanager
def _quiet(transformers: Any) -> Iterator[None]:
    """Silence transformers' warnings and progress bars (loading, saving) for a block."""
    tf_logging = transformers.utils.logging
    verbosity = tf_logging.get_verbosity()
    bars = tf_logging.is_progress_bar_enabled()
    tf_logging.set_verbosity_error()
    tf_logging.disable_progress_bar()
    try:
        yield
    finally:
        tf_logging.set_verbosity(verbosity)
        if bars:
            tf_logging.enable_progress_bar()


def _miner(miner: str | TextEncoder | None) -> TextEncoder | None:
    if miner is None or not isinstance(miner, str):
        return miner
    from embedstack.encoders import load_encoder

    return load_encoder(miner, show_progress=False)


class _Loop:
    """Step counter and ``training_log.jsonl`` writer."""

    def __init__(self, path: Path, every: int, started: float) -> None:
        self.path = path
        self.every = every
        self.started = started
        self.step = 0
        self.pairs = 0
        self.window: list[float] = []
        self.window_pairs = 0
        self.window_start = started
        self.first_loss = math.nan
        self.last_loss = math.nan
        self.epoch = 0
        self.lr = 0.0
        self._handle = path.open("w", encoding="utf-8")

    def __enter__(self) -> _Loop:
        return self

    def __exit__(self, *exc: object) -> None:
        if not self._handle.closed:
            self._handle.close()

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def recent_loss(self) -> float:
        return float(np.mean(self.window)) if self.window else self.last_loss

    def record(self, loss: float, pairs: int, epoch: int, lr: float) -> None:
        if not math.isfinite(loss):
            raise InvalidInput(f"training diverged at step {self.step + 1} (loss {loss}); "
                               "lower lr")  # fmt: skip
        self.step += 1
        self.pairs += pairs
        self.window.append(loss)
        self.window_pairs += pairs
        self.epoch, self.lr = epoch, lr
        if self.step % self.every == 0:
            self.flush()

    def flush(self, final: bool = False) -> None:
        if self.window and not self._handle.closed:
            now = time.perf_counter()
            mean = float(np.mean(self.window))
            if math.isnan(self.first_loss):
                self.first_loss = mean
            self.last_loss = mean
            line = {
                "step": self.step,
                "epoch": self.epoch,
                "loss": round(mean, 6),
                "lr": self.lr,
                "pairs": self.pairs,
                "pairs_per_s": round(self.window_pairs / max(now - self.window_start, 1e-9), 3),
                "elapsed_s": round(now - self.started, 3),
            }
            self._handle.write(json.dumps(line) + "\n")
            self._handle.flush()
            self.window, self.window_pairs, self.window_start = [], 0, now
        if final:
            self._handle.close()


class _progress:
    """A rich progress bar over training pairs (a no-op when disabled)."""

    def __init__(self, show: bool | None, total: int, label: str = "training") -> None:
        self.show = progress_enabled(show)
        self.total = total
        self.label = label
        self._progress: Any = None

    def __enter__(self) -> Any:
        if not self.show:
            return lambda n, loss: None
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        columns = [TextColumn(self.label), BarColumn(),
                   TextColumn("{task.completed}/{task.total} pairs")]  # fmt: skip
        if self.label == "training":
            columns.append(TextColumn("loss {task.fields[loss]:.4f}"))
        self._progress = Progress(*columns, TimeRemainingColumn(), transient=True)
        self._progress.__enter__()
        task = self._progress.add_task(self.label, total=self.total, loss=float("nan"))

        def advance(n: int, loss: float) -> None:
            self._progress.update(task, advance=n, loss=loss)

        return advance

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)
