"""Plumbing the trainers share: training groups from qrels and mined negatives, the
negatives file, output folders and ``training_args.json``, AdamW with warm-up, the training
log and the progress bar. :mod:`embedstack.train.reranker` and
:mod:`embedstack.train.colbert` build on it.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import shutil
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from embedstack.encoders.base import TextEncoder
from embedstack.errors import InvalidInput
from embedstack.settings import progress_enabled

__all__ = [
    "NEGATIVES_FILE",
    "PairProgress",
    "Group",
    "TrainResult",
    "TrainingData",
    "TrainingLog",
    "adamw_with_warmup",
    "base_folder",
    "build_groups",
    "check_positive",
    "check_schedule",
    "epoch_groups",
    "load_miner",
    "prepare_out",
    "quiet_transformers",
    "read_negatives",
    "recorded_args",
    "save_tokenizer",
    "training_data",
    "write_args",
    "write_negatives",
]


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
    """What :func:`train_reranker` (or :func:`~embedstack.train.train_colbert`) did.

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


def epoch_groups(groups: list[Group], max_pairs: int | None, rng: random.Random) -> list[Group]:
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


def check_positive(**values: Any) -> None:
    for name, value in values.items():
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise InvalidInput(f"{name} must be a positive number, got {value!r}")


def base_folder(base: str | os.PathLike[str]) -> Path:
    from embedstack.encoders.loading import load_model_config, resolve_model_dir

    path, spec = resolve_model_dir(base)
    if (path / "modules.json").is_file():  # a sentence-transformers folder: use its body
        return load_model_config(path, spec).transformer_path
    return path


def prepare_out(
    out: Path, overwrite: bool, kind: str = "a reranker folder made by train_reranker"
) -> None:
    """Create ``out`` empty; with ``overwrite``, first remove an earlier training's output
    (a folder with ``training_args.json``), never anything else."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        if not overwrite:
            raise InvalidInput(f"{out} exists and is not empty; pass overwrite=True (--overwrite)")
        if not (out / "training_args.json").is_file() and any(out.iterdir()):
            raise InvalidInput(f"{out} is not {kind}; refusing to overwrite it")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)


def save_tokenizer(src: Path, out: Path, max_length: int) -> None:
    for name in TOKENIZER_FILES:
        if (src / name).is_file():
            shutil.copy2(src / name, out / name)
    config_file = out / "tokenizer_config.json"
    config: dict[str, Any] = {}
    if config_file.is_file():
        config = json.loads(config_file.read_text(encoding="utf-8"))
    config["model_max_length"] = max_length
    config_file.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")


@dataclass(frozen=True)
class TrainingData:
    """A run's training data: the corpus, each query's judged positives, the queries with
    one, the negatives (mined or read) and the groups built from them."""

    corpus: dict[str, str]
    positives: dict[str, set[str]]
    queries: dict[str, str]
    mined: Any
    groups: list[Group]


def training_data(
    dataset: Any,
    dataset_dir: str | os.PathLike[str],
    split: str,
    out_dir: Path,
    *,
    miner: str | TextEncoder | None,
    negatives_per_query: int,
    mining_depth: int,
    max_ratio: float,
    negatives_file: str | os.PathLike[str] | None,
    random_negatives: int,
    seed: int,
) -> TrainingData:
    """Groups from ``dataset``'s qrels, with negatives mined (or read from
    ``negatives_file``) and saved to ``out_dir/hard_negatives.jsonl``.

    Raises:
        InvalidInput: no query with a judged positive, or no group could be built.
    """
    from embedstack.eval.datasets import load_corpus

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
        mined = read_negatives(Path(negatives_file), positives, corpus, negatives_per_query)
    else:
        encoder = load_miner(miner)
        mined = mine_hard_negatives(queries, positives, doc_ids, doc_texts, encoder=encoder,
                                    per_query=negatives_per_query, depth=mining_depth,
                                    max_ratio=max_ratio)  # fmt: skip
        del encoder
    write_negatives(out_dir / NEGATIVES_FILE, mined.negatives)
    draw = random.Random(seed + 1)
    groups = build_groups(queries, dataset.qrels, corpus, mined.negatives,
                          random_negatives=random_negatives, rng=draw)  # fmt: skip
    if not groups:
        raise InvalidInput("no training group could be built (no negatives mined)")
    return TrainingData(corpus, positives, queries, mined, groups)


def check_schedule(warmup: float, weight_decay: float) -> None:
    """Refuse a warm-up fraction outside ``[0, 1)`` or a negative weight decay.

    Raises:
        InvalidInput: either is out of range.
    """
    if not 0.0 <= warmup < 1.0 or weight_decay < 0:
        raise InvalidInput(
            f"need 0 <= warmup < 1 and weight_decay >= 0, got {warmup}, {weight_decay}"
        )


def adamw_with_warmup(
    torch: Any, named_parameters: Iterable[tuple[str, Any]], *, lr: float,
    weight_decay: float, warmup: float, steps: int,
) -> tuple[Any, Any]:  # fmt: skip
    """AdamW (no weight decay on biases and LayerNorm weights) and its schedule: linear
    warm-up over the first ``warmup`` fraction of ``steps``, then linear decay to 0."""
    decay: list[Any] = []
    no_decay: list[Any] = []
    for name, param in named_parameters:
        (no_decay if name.endswith("bias") or "LayerNorm" in name else decay).append(param)
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": weight_decay},
         {"params": no_decay, "weight_decay": 0.0}], lr=lr)  # fmt: skip
    warm = max(1, int(warmup * steps))

    def schedule(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return max(0.0, (steps - step) / max(1, steps - warm))

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)


def recorded_args(given: dict[str, Any], names: frozenset[str]) -> dict[str, Any]:
    """The arguments in ``names`` for ``training_args.json`` (paths as strings)."""
    return {k: (str(v) if isinstance(v, Path | os.PathLike) else v) for k, v in given.items()
            if k in names}  # fmt: skip


def write_args(out_dir: Path, args: dict[str, Any], result: Any = None) -> None:
    """Write ``training_args.json`` (with the result's fields once there is one)."""
    if result is not None:
        args["result"] = {k: (str(v) if isinstance(v, Path) else v)
                          for k, v in asdict(result).items()}  # fmt: skip
    (out_dir / "training_args.json").write_text(json.dumps(args, indent=2) + "\n", "utf-8")


def write_negatives(path: Path, negatives: dict[str, dict[str, list[str]]]) -> None:
    with path.open("w", encoding="utf-8") as handle:
        for qid, groups in negatives.items():
            for pid, docs in groups.items():
                record = {"query_id": qid, "positive_id": pid, "negatives": docs}
                handle.write(json.dumps(record) + "\n")


def read_negatives(
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


@contextlib.contextmanager
def quiet_transformers(transformers: Any) -> Iterator[None]:
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


def load_miner(miner: str | TextEncoder | None) -> TextEncoder | None:
    if miner is None or not isinstance(miner, str):
        return miner
    from embedstack.encoders import load_encoder

    return load_encoder(miner, show_progress=False)


class TrainingLog:
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

    def __enter__(self) -> TrainingLog:
        return self

    def __exit__(self, *exc: object) -> None:
        if not self._handle.closed:
            self._handle.close()

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def recent_loss(self) -> float:
        return float(np.mean(self.window)) if self.window else self.last_loss

    def result(
        self, out: Path, seconds: float, mining_seconds: float, groups: int, dropped: int
    ) -> TrainResult:
        """The :class:`TrainResult` of a finished run (``seconds``: its training time)."""
        return TrainResult(
            out=out,
            steps=self.step,
            pairs=self.pairs,
            seconds=round(seconds, 2),
            pairs_per_second=round(self.pairs / max(seconds, 1e-9), 2),
            first_loss=self.first_loss,
            last_loss=self.last_loss,
            mining_seconds=round(mining_seconds, 2),
            groups=groups,
            dropped_negatives=dropped,
        )

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


class PairProgress:
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
