"""Training settings: one frozen, validated :class:`TrainConfig` for what every trainer shares,
and a small subclass per trainer for its own options.

Each option is declared once, as a dataclass field made by :func:`option`: its default, its
check, its help text and its CLI flag. The config checks every field when it is built and
raises one :class:`~embedstack.errors.InvalidInput` naming the option (``epochs (--epochs)
must be a positive int, got 0``); the trainers take the config and check only what needs the
base model (its depth, its positions); ``training_args.json`` records it (:meth:`record`);
and ``embedstack train ...`` builds its typer options from the same fields
(:func:`cli_fields`), so a new option is one field, not four edits.

Adding a trainer (the bi-encoder ``train embedder`` of the next issue) is: a subclass
``EmbedderConfig(TrainConfig)`` with its own fields (loss, temperature, query and document
lengths...), redeclaring shared defaults with :func:`override` where they differ; a
``train_embedder(config)`` over :mod:`embedstack.train.common`; one line in
:mod:`embedstack.cli.train`.

Example:
    >>> from embedstack.train.config import RerankerConfig
    >>> config = RerankerConfig(dataset_dir="data/scifact", out="/tmp/rr", epochs=2)
    >>> config.epochs, config.loss
    (2, 'bce')
    >>> RerankerConfig(dataset_dir="data", out="/tmp/rr", epochs=0)
    Traceback (most recent call last):
    ...
    embedstack.errors.InvalidInput: epochs (--epochs) must be a positive int, got 0
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args

from embedstack.encoders.base import TextEncoder
from embedstack.encoders.registry import DEFAULT_MODEL
from embedstack.errors import InvalidInput

__all__ = [
    "LOSSES",
    "ColbertConfig",
    "Loss",
    "RerankerConfig",
    "TrainConfig",
    "cli_fields",
    "flag",
    "option",
    "override",
]

Loss = Literal["bce", "listwise", "margin-mse"]
LOSSES: tuple[str, ...] = get_args(Loss)

Check = Callable[[Any], bool]
C = TypeVar("C", bound="TrainConfig")


# -- checks: (test, what the value must be) ------------------------------------------------


def _int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


POSITIVE_INT = (lambda v: _int(v) and v >= 1, "a positive int")
COUNT = (lambda v: _int(v) and v >= 0, "an int >= 0")
POSITIVE = (lambda v: _number(v) and v > 0, "a positive number")
NON_NEGATIVE = (lambda v: _number(v) and v >= 0, "a number >= 0")
FRACTION = (lambda v: _number(v) and 0 <= v < 1, "a number in [0, 1)")
BOOL = (lambda v: isinstance(v, bool), "true or false")
TEXT = (lambda v: isinstance(v, str) and v.strip() != "", "a non-empty string")
ENCODER = (lambda v: isinstance(v, str) or hasattr(v, "encode_documents"),
           "a model name or an encoder")  # fmt: skip
RERANKER = (lambda v: isinstance(v, str | os.PathLike) or hasattr(v, "score"),
            "a model folder, HF id or reranker")  # fmt: skip


def at_least(low: int) -> tuple[Check, str]:
    """The check of an int ``>= low``."""
    return (lambda v: _int(v) and v >= low, f"an int >= {low}")


def one_of(choices: tuple[str, ...]) -> tuple[Check, str]:
    """The check of a value among ``choices``."""
    return (lambda v: v in choices, f"one of {', '.join(choices)}")


def option(
    default: Any = dataclasses.MISSING,
    *,
    help: str,
    check: tuple[Check, str] | None = None,
    optional: bool = False,
    cli: str | None = "",
    cli_type: Any = None,
    argument: bool = False,
    record: bool = True,
) -> Any:
    """A config field and everything said about it once.

    Args:
        default: The default; none makes the field required.
        help: One line, shown by ``--help`` and in the CLI reference.
        check: ``(test, what)``: the value must pass ``test``; ``what`` completes
            "must be ...". None checks nothing.
        optional: None is accepted besides values passing ``check``.
        cli: The CLI flag; ``""`` derives ``--name-with-dashes``; None keeps the option out
            of the CLI.
        cli_type: The CLI's type when it differs from the field's (a model given by name).
        argument: A positional CLI argument instead of an option.
        record: Written to ``training_args.json``.
    """
    metadata = {"help": help, "check": check, "optional": optional, "cli": cli,
                "cli_type": cli_type, "argument": argument, "record": record}  # fmt: skip
    return field(default=default, metadata=metadata)


def override(base: type[TrainConfig], name: str, default: Any, help: str | None = None) -> Any:
    """``base``'s field ``name`` with another default (and help), for a trainer's subclass."""
    spec = base.__dataclass_fields__[name]
    return field(default=default, metadata={**spec.metadata, "help": help or spec.metadata["help"]})


def flag(spec: dataclasses.Field[Any]) -> str:
    """The CLI flag of a config field (``--negatives`` for ``negatives_per_query``)."""
    return str(spec.metadata.get("cli") or "--" + spec.name.replace("_", "-"))


def cli_fields(config: type[TrainConfig]) -> list[dataclasses.Field[Any]]:
    """The fields of ``config`` the CLI offers, in declaration order."""
    return [f for f in fields(config) if f.metadata.get("cli") is not None]


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """What every trainer shares: the data, the base model, negative mining, the optimiser
    schedule and the run's bookkeeping.

    Each field's ``help`` documents it (``embedstack train reranker --help`` shows them);
    notes that need more room:

    Attributes:
        random_negatives: Where judgements are dense but shallow, as on NFCorpus, mined
            "hard" negatives are often unjudged relevant documents; random ones are clean,
            as in DPR's mix of BM25 and in-batch negatives (Karpukhin et al. 2020).
        layers: A shallower model costs proportionally less per text at inference, the lever
            for tight latency budgets (cf. the 2- and 4-layer MS MARCO MiniLM cross-encoders).
        negatives_file: Mining is the slow part on CPU (the miner encodes the whole corpus);
            the ``hard_negatives.jsonl`` of an earlier training on the same dataset and split
            (any trainer's) can be reused, at most ``negatives_per_query`` per group.
        seed: Seeds the data order and torch's global RNG (head initialisation, dropout): the
            same inputs and thread count give the same model.
    """

    dataset_dir: Path = option(help="BEIR folder (corpus/queries/qrels).", argument=True,
                               cli_type=Path)  # fmt: skip
    out: Path = option(help="Folder to save the model to.", cli_type=Path)
    split: str = option("train", help="qrels split to train on.", check=TEXT)
    base: str = option(DEFAULT_MODEL, check=TEXT,
                       help="BERT-family model (name, folder or HF id) whose body starts the "
                       "training.")  # fmt: skip
    miner: str | TextEncoder | None = option(DEFAULT_MODEL, cli_type=str, check=ENCODER,
                                             optional=True,
                                             help="Dense model mining hard negatives ('none': "
                                             "BM25 only).")  # fmt: skip
    epochs: int = option(1, help="Passes over the training groups.", check=POSITIVE_INT)
    max_pairs: int | None = option(None, check=POSITIVE_INT, optional=True,
                                   help="Cap on (query, document) pairs per epoch (whole "
                                   "groups, a fresh random subset each epoch).")  # fmt: skip
    negatives_per_query: int = option(7, help="Hard negatives per judged pair.",
                                      check=POSITIVE_INT, cli="--negatives")  # fmt: skip
    random_negatives: int = option(0, check=COUNT,
                                   help="Extra negatives per pair drawn at random from the "
                                   "corpus (never a judged positive).")  # fmt: skip
    mining_depth: int = option(30, help="Candidates per query the miners retrieve.",
                               check=POSITIVE_INT)  # fmt: skip
    max_ratio: float = option(
        0.95, check=POSITIVE, help="Drop negatives the miner scores above this x positive."
    )
    negatives_file: Path | None = option(None, cli_type=Path | None,
                                         help="Reuse the hard_negatives.jsonl of an earlier "
                                         "training.")  # fmt: skip
    layers: int | None = option(
        None,
        check=POSITIVE_INT,
        optional=True,
        help="Keep the base's first N layers (a faster model).",
    )
    batch_size: int = option(16, help="Pairs per optimizer step.", check=POSITIVE_INT)
    lr: float = option(5e-5, help="Peak learning rate (AdamW).", check=POSITIVE)
    warmup: float = option(
        0.1, check=FRACTION, help="Fraction of the steps warming the learning rate up."
    )
    weight_decay: float = option(0.01, help="AdamW weight decay.", check=NON_NEGATIVE)
    seed: int = option(0, help="Random seed.", check=COUNT)
    threads: int = option(2, help="torch threads.", check=POSITIVE_INT)
    bf16: bool = option(False, help="bfloat16 autocast (CPUs with bf16 units).", check=BOOL)
    log_every: int = option(10, help="Steps per line of training_log.jsonl.", check=POSITIVE_INT)
    overwrite: bool = option(False, help="Replace an earlier training's --out.", check=BOOL,
                             record=False)  # fmt: skip
    show_progress: bool | None = option(None, check=BOOL, optional=True, cli=None,
                                        record=False,
                                        help="rich progress bar; None: when stderr is a "
                                        "terminal.")  # fmt: skip

    def __post_init__(self) -> None:
        for name in ("dataset_dir", "out"):
            value = getattr(self, name)
            if not isinstance(value, str | os.PathLike):
                raise InvalidInput(f"{name} must be a path, got {value!r}")
            object.__setattr__(self, name, Path(value))
        if self.negatives_file is not None:
            if not isinstance(self.negatives_file, str | os.PathLike):
                raise InvalidInput(f"negatives_file must be a path, got {self.negatives_file!r}")
            object.__setattr__(self, "negatives_file", Path(self.negatives_file))
        if isinstance(self.base, os.PathLike):
            object.__setattr__(self, "base", os.fspath(self.base))
        for spec in fields(self):
            value = getattr(self, spec.name)
            check = spec.metadata.get("check")
            if check is None or (value is None and spec.metadata.get("optional")):
                continue
            test, what = check
            if not test(value):
                raise InvalidInput(f"{self.label(spec.name)} must be {what}, got {value!r}")
        self.check()

    def check(self) -> None:
        """Checks across fields, for subclasses (the per-field checks have passed)."""

    @classmethod
    def label(cls, name: str) -> str:
        """How errors name option ``name``: ``"epochs (--epochs)"``."""
        spec = cls.__dataclass_fields__[name]
        if spec.metadata.get("cli") is None or spec.metadata.get("argument"):
            return name
        return f"{name} ({flag(spec)})"

    @classmethod
    def build(
        cls: type[C], config: C | str | os.PathLike[str] | None = None, /, **options: Any
    ) -> C:
        """``config`` itself, ``config`` with ``options`` replaced, or, given a dataset folder
        (or None and ``dataset_dir=`` among the options), the config of it and ``options``
        (the trainers' keyword-argument form).

        Raises:
            InvalidInput: an option this config does not have, a missing one (``out``), or
                a bad value.
        """
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise InvalidInput(f"unknown option {unknown[0]!r} for {cls.__name__}; options: "
                               f"{', '.join(sorted(known))}")  # fmt: skip
        if isinstance(config, TrainConfig):
            if not isinstance(config, cls):
                raise InvalidInput(f"expected a {cls.__name__}, got a {type(config).__name__}")
            return dataclasses.replace(config, **options) if options else config
        if config is not None:
            if "dataset_dir" in options:
                raise InvalidInput("the dataset folder is given twice (and dataset_dir=)")
            options["dataset_dir"] = config
        missing = [f.name for f in fields(cls) if f.default is dataclasses.MISSING
                   and f.name not in options]  # fmt: skip
        if missing:
            raise InvalidInput(f"{cls.__name__} needs {' and '.join(missing)}")
        return cls(**options)

    def record(self) -> dict[str, Any]:
        """The options for ``training_args.json``: paths as strings, a miner or teacher
        object by its model id."""
        args: dict[str, Any] = {}
        for spec in fields(self):
            if not spec.metadata.get("record", True):
                continue
            value = getattr(self, spec.name)
            if isinstance(value, os.PathLike):
                value = os.fspath(value)
            elif value is not None and not isinstance(value, str | int | float | bool):
                value = getattr(value, "model_id", str(value))
            args[spec.name] = value
        return args


@dataclass(frozen=True, kw_only=True)
class RerankerConfig(TrainConfig):
    """:func:`~embedstack.train.train_reranker`'s options: :class:`TrainConfig` and these.

    Attributes:
        loss: ``"bce"`` (pointwise), ``"listwise"`` (softmax over each group) or
            ``"margin-mse"`` (distil ``teacher``'s margins, Hofstätter et al. 2020).
        teacher: A cross-encoder (folder, HF id, or a loaded reranker) whose raw scores on
            every training pair are the targets of ``margin-mse``; required by that loss and
            refused by the others. Scored once, before training (ONNX).
        split_layer: Train a split cross-encoder (PreTTR, :mod:`embedstack.rerank.split`):
            the first ``split_layer`` layers read query and document apart, so an index can
            store each document's states at that layer and a rerank runs only the layers
            above. None: a plain cross-encoder.
    """

    loss: Loss = option("bce", help="bce, listwise, or margin-mse (distil --teacher).",
                        check=one_of(LOSSES), cli_type=str)  # fmt: skip
    teacher: Any = option(None, cli_type=str | None, check=RERANKER, optional=True,
                          help="Cross-encoder whose scores margin-mse distils (folder or HF "
                          "id).")  # fmt: skip
    max_length: int = option(256, help="Tokens per (query, document) pair.", check=at_least(16))
    split_layer: int | None = option(None, check=POSITIVE_INT, optional=True,
                                     help="Read query and document apart below layer N "
                                     "(PreTTR: an index stores documents' states there, "
                                     "reranks run the layers above).")  # fmt: skip
    query_length: int = option(32, help="With --split-layer: tokens of the query segment.",
                               check=POSITIVE_INT)  # fmt: skip

    def check(self) -> None:
        if (self.loss == "margin-mse") != (self.teacher is not None):
            raise InvalidInput("loss='margin-mse' distils a teacher: pass teacher= (--teacher) "
                               "with it, and only with it")  # fmt: skip
        self.split_spec()

    def split_spec(self) -> Any:
        """The :class:`~embedstack.rerank.split.SplitSpec` of ``split_layer``, or None.

        Raises:
            InvalidInput: ``query_length`` leaves no room for documents.
        """
        if self.split_layer is None:
            return None
        from embedstack.rerank.split import SplitSpec

        return SplitSpec(self.split_layer, self.query_length, self.max_length)


@dataclass(frozen=True, kw_only=True)
class ColbertConfig(TrainConfig):
    """:func:`~embedstack.train.train_colbert`'s options: :class:`TrainConfig` and these.

    ``batch_size`` counts groups (queries): every document of a step is a candidate for
    every query of the step, so larger batches bring more in-batch negatives. ``lr`` 5e-5
    suits a short run from a pre-trained body with a fresh head; ColBERT's long MS MARCO runs
    use 3e-6 to 1e-5. The temperature is discussed in :mod:`embedstack.train.colbert`.
    """

    negatives_per_query: int = override(TrainConfig, "negatives_per_query", 1)
    batch_size: int = override(TrainConfig, "batch_size", 16,
                               "Queries per optimizer step (in-batch negatives).")  # fmt: skip
    dim: int = option(128, help="Token vector dimension (the linear head's).",
                      check=POSITIVE_INT)  # fmt: skip
    query_maxlen: int = option(32, help="Query tokens ([MASK]-padded to this length).",
                               check=at_least(4))  # fmt: skip
    doc_maxlen: int = option(180, help="Document tokens.", check=at_least(4))
    temperature: float = option(1.0, help="MaxSim scores are divided by it in the softmax.",
                                check=POSITIVE)  # fmt: skip
