"""Plumbing the trainers share: the base model folder and its depth, output folders and
``training_args.json``, AdamW with warm-up, the training log and the progress bar.
:mod:`embedstack.train.reranker` and :mod:`embedstack.train.colbert` build on it and on
:mod:`embedstack.train.data` (groups and negatives), re-exported here.
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

from embedstack.errors import InvalidInput
from embedstack.settings import progress_enabled
from embedstack.train.config import TrainConfig
from embedstack.train.data import (
    NEGATIVES_FILE,
    Group,
    TrainingData,
    build_groups,
    epoch_groups,
    load_miner,
    read_negatives,
    training_data,
    write_negatives,
)

__all__ = [
    "NEGATIVES_FILE",
    "TrainingRun",
    "PairProgress",
    "Group",
    "TrainResult",
    "TrainingData",
    "TrainingLog",
    "adamw_with_warmup",
    "base_folder",
    "build_groups",
    "check_layers",
    "epoch_groups",
    "load_miner",
    "quiet_transformers",
    "read_negatives",
    "save_tokenizer",
    "training_data",
    "write_args",
    "write_negatives",
]


TOKENIZER_FILES = (
    "tokenizer.json",
    "vocab.txt",
    "special_tokens_map.json",
    "tokenizer_config.json",
)


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


def check_layers(transformers: Any, base_dir: Path, layers: int | None) -> int:
    """The depth of the base at ``base_dir`` (0 when its config does not say).

    Raises:
        InvalidInput: ``layers`` asks for more layers than the base has.
    """
    config = transformers.AutoConfig.from_pretrained(base_dir)
    depth = int(getattr(config, "num_hidden_layers", 0) or 0)
    if layers is not None and depth and layers > depth:
        raise InvalidInput(f"layers={layers}, but {base_dir} has only {depth} layers")
    return depth


def base_folder(base: str | os.PathLike[str]) -> Path:
    from embedstack.encoders.loading import load_model_config, resolve_model_dir

    path, spec = resolve_model_dir(base)
    if (path / "modules.json").is_file():  # a sentence-transformers folder: use its body
        return load_model_config(path, spec, body_only=True).transformer_path
    return path


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


def adamw_with_warmup(
    torch: Any, named_parameters: Iterable[tuple[str, Any]], config: TrainConfig, steps: int
) -> tuple[Any, Any]:
    """AdamW at ``config.lr`` (``config.weight_decay``, none on biases and LayerNorm weights)
    and its schedule: linear warm-up over the first ``config.warmup`` fraction of ``steps``,
    then linear decay to 0."""
    lr, weight_decay, warmup = config.lr, config.weight_decay, config.warmup
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


def write_args(out_dir: Path, args: dict[str, Any], result: Any = None) -> None:
    """Write ``training_args.json`` (with the result's fields once there is one)."""
    if result is not None:
        args["result"] = {k: (str(v) if isinstance(v, Path) else v)
                          for k, v in asdict(result).items()}  # fmt: skip
    (out_dir / "training_args.json").write_text(json.dumps(args, indent=2) + "\n", "utf-8")


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

    def write(self, record: dict[str, Any]) -> None:
        """Write one extra line (a dev evaluation) with the current step and clock."""
        if not self._handle.closed:
            line = {"step": self.step, "epoch": self.epoch, **record,
                    "elapsed_s": round(self.elapsed(), 3)}  # fmt: skip
            self._handle.write(json.dumps(line) + "\n")
            self._handle.flush()

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
                   TextColumn("{task.completed}/{task.total} pairs"),
                   TextColumn("{task.fields[rate]}")]  # fmt: skip
        if self.label == "training":
            columns.append(TextColumn("loss {task.fields[loss]:.4f}"))
        self._progress = Progress(*columns, TimeRemainingColumn(), transient=True)
        self._progress.__enter__()
        task = self._progress.add_task(self.label, total=self.total, loss=float("nan"), rate="")

        def advance(n: int, loss: float) -> None:
            speed = self._progress.tasks[task].speed
            rate = f"{speed:.1f} pairs/s" if speed else ""
            self._progress.update(task, advance=n, loss=loss, rate=rate)

        return advance

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)


class TrainingRun:
    """What every training run does around its model: the record
    (``training_args.json``), the timed data phase, torch's threads and seed, each epoch's
    groups, the log, and the result. A trainer adds its model, its steps and its files.

    Example:
        >>> run = TrainingRun(config, "reranker", base_dir)  # doctest: +SKIP
        >>> data = run.load_data(dataset)  # doctest: +SKIP
        >>> run.save_args()  # doctest: +SKIP
        >>> with run.torch(torch):  # doctest: +SKIP
        ...     plan, rng = run.plan(data.groups)
        ...     with run.log() as state: ...
        >>> result = run.finish(state, data, seconds)  # doctest: +SKIP
    """

    def __init__(self, config: TrainConfig, trainer: str, base_dir: Path) -> None:
        """The run's record; ``config.out`` is the empty work folder of
        :func:`~embedstack.train.staging.staged`, which checked the real ``out``."""
        self.config = config
        self.args: dict[str, Any] = {"trainer": trainer, **config.record(),
                                     "base_folder": str(base_dir)}  # fmt: skip
        self.mining_seconds = 0.0

    def load_data(self, dataset: Any) -> TrainingData:
        """:func:`training_data`, timed and recorded (groups, negatives, mining time)."""
        started = time.perf_counter()
        data = training_data(dataset, self.config)
        self.mining_seconds = time.perf_counter() - started
        self.args.update(groups=len(data.groups), dropped_negatives=data.mined.dropped,
                         negative_sources=data.mined.sources,
                         mining_seconds=round(self.mining_seconds, 2))  # fmt: skip
        return data

    def save_args(self, result: TrainResult | None = None) -> None:
        """Write ``training_args.json`` (with ``result`` once there is one)."""
        write_args(self.config.out, self.args, result)

    @contextlib.contextmanager
    def torch(self, torch: Any) -> Iterator[None]:
        """torch with ``config.threads`` threads and seeded with ``config.seed`` for the
        block; the previous thread count comes back after it."""
        previous = torch.get_num_threads()
        torch.set_num_threads(self.config.threads)
        try:
            torch.manual_seed(self.config.seed)
            yield
        finally:
            torch.set_num_threads(previous)

    def plan(self, groups: list[Group]) -> tuple[list[list[Group]], random.Random]:
        """Each epoch's groups (``config.max_pairs`` at most) and the seeded generator that
        drew them, for whatever else the trainer shuffles."""
        rng = random.Random(self.config.seed)
        plan = [epoch_groups(groups, self.config.max_pairs, rng) for _ in range(self.config.epochs)]
        return plan, rng

    def log(self) -> TrainingLog:
        """The run's ``training_log.jsonl``; its clock starts now."""
        path = self.config.out / "training_log.jsonl"
        return TrainingLog(path, self.config.log_every, started=time.perf_counter())

    def finish(self, state: TrainingLog, data: TrainingData, seconds: float) -> TrainResult:
        """The :class:`TrainResult` of ``seconds`` of training, also written to
        ``training_args.json``."""
        result = state.result(self.config.out, seconds, self.mining_seconds,
                              len(data.groups), data.mined.dropped)  # fmt: skip
        self.save_args(result)
        return result
