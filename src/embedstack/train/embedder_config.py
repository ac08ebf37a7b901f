"""The options of :func:`~embedstack.train.train_embedder`: :class:`EmbedderConfig`, the shared
:class:`~embedstack.train.config.TrainConfig` with the bi-encoder's own fields.

Defaults follow sentence-transformers' training examples and documentation (MS MARCO
bi-encoder with MultipleNegativesRankingLoss, Reimers & Gurevych): learning rate 2e-5 with a
10 % linear warm-up, one hard negative per (query, positive) beside the in-batch negatives,
scale 20 (a temperature of 0.05 on cosine similarity). The shared default of 7 negatives suits
cross-encoders, which see one pair at a time; a bi-encoder already contrasts each query with
every document of its batch, and each extra negative column costs a full forward pass.

Example:
    >>> from embedstack.train.embedder_config import EmbedderConfig
    >>> config = EmbedderConfig(dataset_dir="pairs.jsonl", out="/tmp/emb", matryoshka_dims="256,64")
    >>> config.matryoshka_dims, config.lr
    ((256, 64), 2e-05)
    >>> EmbedderConfig(dataset_dir="d", out="/tmp/emb", scale=0)
    Traceback (most recent call last):
    ...
    embedstack.errors.InvalidInput: scale (--scale) must be a positive number, got 0
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from embedstack.errors import InvalidInput
from embedstack.train.config import (
    BOOL,
    COUNT,
    FRACTION,
    POSITIVE,
    POSITIVE_INT,
    RERANKER,
    TrainConfig,
    at_least,
    one_of,
    option,
    override,
)

__all__ = ["DEFAULT_STS", "EMBEDDER_LOSSES", "UNSUPERVISED", "EmbedderConfig", "EmbedderLoss"]

EmbedderLoss = Literal["auto", "mnrl", "margin-mse", "cosent"]
EMBEDDER_LOSSES: tuple[str, ...] = get_args(EmbedderLoss)
Unsupervised = Literal["ict", "crop"]
UNSUPERVISED: tuple[str, ...] = get_args(Unsupervised)
DEFAULT_STS = Path("../shared/datasets/stsb/sts-test.csv")


def _redeclare(name: str, default: Any, help: str, check: Any = None) -> Any:
    """``TrainConfig``'s field ``name`` with another default, help and (optionally) check."""
    spec = TrainConfig.__dataclass_fields__[name]
    metadata = {**spec.metadata, "help": help}
    if check is not None:
        metadata["check"] = check
    return field(default=default, metadata=metadata)


def _dims(value: Any) -> tuple[int, ...] | None:
    """``"256,128"``, ``[256, 128]`` or None as a tuple of ints (None stays None)."""
    if value is None or isinstance(value, tuple) and all(type(v) is int for v in value):
        return value
    parts = value.split(",") if isinstance(value, str) else value
    try:
        dims = tuple(int(str(p).strip()) for p in parts if str(p).strip())
    except (TypeError, ValueError):
        raise InvalidInput(
            f"matryoshka_dims (--matryoshka) must be dimensions like '256,128,64', got {value!r}"
        ) from None
    return dims


def _weights(value: Any) -> tuple[float, ...] | None:
    """``"1,1,2"``, ``[1, 1, 2]`` or None as a tuple of floats (None stays None)."""
    if value is None:
        return None
    parts = value.split(",") if isinstance(value, str) else value
    try:
        weights = tuple(float(str(p).strip()) for p in parts if str(p).strip())
    except (TypeError, ValueError):
        raise InvalidInput(f"matryoshka_weights (--matryoshka-weights) must be numbers like "
                           f"'1,1,2,4', got {value!r}") from None  # fmt: skip
    return weights


@dataclass(frozen=True, kw_only=True)
class EmbedderConfig(TrainConfig):
    """:func:`~embedstack.train.train_embedder`'s options.

    Attributes:
        dataset_dir: A BEIR folder (its ``qrels/<split>.tsv`` are the positives), a pairs
            JSONL (``query``, ``positive``, optional ``negative`` or ``negatives``), or a scored
            pairs JSONL (``sentence1``, ``sentence2``, ``score``; trained with CoSENT).
        loss: ``auto``: CoSENT for scored pairs, Margin-MSE when a ``teacher`` is given,
            else MultipleNegativesRankingLoss (InfoNCE over the batch's documents and the
            hard negatives; van den Oord et al. 2018, Henderson et al. 2017).
        mini_batch_size: GradCache (Gao et al. 2021, sentence-transformers'
            ``CachedMultipleNegativesRankingLoss``): the batch is embedded without gradients,
            the loss's gradients with respect to the embeddings are cached, then the model
            runs again ``mini_batch_size`` texts at a time, so ``batch_size`` (the number of
            in-batch negatives) is no longer bounded by memory; costs one extra forward pass.
        matryoshka_dims: Also train truncations to these dimensions (Kusupati et al. 2022,
            sentence-transformers' ``MatryoshkaLoss``); the full dimension is always
            trained, and the saved model records them so the registry and ``pick`` know it
            truncates safely.
        matryoshka_weights: The loss weight of each trained dimension, largest first with
            the full one included (``1,1,2,4`` for full, 256, 128, 64); default equal, as in
            Kusupati et al. Heavier small dims trade full-dimension quality for truncation.
        unsupervised: Build pairs from the corpus alone: ``ict`` (inverse cloze task, Lee et
            al. 2019: a sentence is the query, the rest of its document the positive) or
            ``crop`` (independent cropping, Contriever, Izacard et al. 2021: two random spans
            of a document). Hard negatives are mined the same way; with a ``teacher`` the
            pairs are pseudo-labelled and trained with Margin-MSE (GPL, Wang et al. 2022,
            without its query generator).
        teacher: What Margin-MSE distils: a cross-encoder (folder, HF id or
            :class:`~embedstack.rerank.Reranker`), or one or more bi-encoders,
            comma-separated (``all-mpnet-base-v2,multilingual-e5-small``): their cosines
            z-scored over the corpus and averaged, on the student's scale
            (:class:`~embedstack.train.teachers.DenseTeacher`). Only the groups the epochs
            train on are scored.
        pca_init: Before training, bake a PCA rotation of the base's document vectors on
            this data into the model (:func:`embedstack.encoders.rotate.rotate_model`: an
            orthogonal square ``Dense`` layer, trained with the rest). Full-dimension cosines
            are unchanged, and the first dimensions start out carrying the most variance, so
            a Matryoshka loss refines good prefixes instead of building them. None (the
            default): on when ``matryoshka_dims`` are trained, off otherwise.
        positives_per_query: Train each query on at most this many of its judged positives
            per epoch, the next ones (in a fixed shuffled order) each epoch, so every query
            weighs the same whatever it judges (NFCorpus has one query with 1,363 judged
            documents and a median of 18). 0: one group per judged pair, every epoch.
        dev_fraction: Queries (or scored pairs) held out from the training data, never from
            test: evaluated before training and after each epoch (nDCG@10 over a pool of
            documents, or Spearman for scored pairs), for the log and early stopping.
        dev_pool: Documents each dev query is ranked among (BEIR and pairs data): the dev
            queries' judged documents and mined negatives, then random ones of the corpus up
            to this size. Each dev evaluation encodes the pool, so it sets the cost of a
            check; it does not change which documents are trained on.
        patience: Evaluations without a better dev score before training stops; the best
            evaluated model is the one saved. 0: no early stopping (the last model is saved).
        sts_file: STS Benchmark file for the forgetting check (Spearman before and after);
            skipped when absent.
    """

    dataset_dir: Path = override(TrainConfig, "dataset_dir", dataclasses.MISSING,
                                 "BEIR folder, pairs JSONL (query, positive, negative[s]) or "
                                 "scored pairs JSONL (sentence1, sentence2, score).")  # fmt: skip
    base: str = override(TrainConfig, "base", TrainConfig.__dataclass_fields__["base"].default,
                         "Bi-encoder (registry name, sentence-transformers folder or HF id) "
                         "to fine-tune.")  # fmt: skip
    negatives_per_query: int = _redeclare("negatives_per_query", 1,
                                          "Mined hard negatives per (query, positive); 0: "
                                          "in-batch negatives only.", COUNT)  # fmt: skip
    batch_size: int = _redeclare("batch_size", 32, "(query, positive) pairs per optimizer "
                                 "step; each query meets every document of the step.",
                                 at_least(2))  # fmt: skip
    lr: float = override(TrainConfig, "lr", 2e-5)
    loss: EmbedderLoss = option("auto", cli_type=str, check=one_of(EMBEDDER_LOSSES),
                                help="auto, mnrl, margin-mse (distil --teacher) or cosent "
                                "(scored pairs).")  # fmt: skip
    mini_batch_size: int | None = option(None, check=POSITIVE_INT, optional=True,
                                         help="GradCache: texts per forward pass "
                                         "(CachedMNRL), so --batch-size is not bounded by "
                                         "memory.")  # fmt: skip
    scale: float = option(20.0, check=POSITIVE,
                          help="Similarity scale of MNRL/CoSENT (1 / temperature).")  # fmt: skip
    matryoshka_dims: Any = option(None, cli="--matryoshka", cli_type=str | None,
                                  help="Matryoshka dims to train besides the full one, "
                                  "e.g. 256,128,64.")  # fmt: skip
    matryoshka_weights: Any = option(None, cli_type=str | None,
                                     help="Loss weight per Matryoshka dim, full first, e.g. "
                                     "1,1,2,4 (default equal).")  # fmt: skip
    pca_init: bool | None = option(None, check=BOOL, optional=True,
                                   cli="--pca-init/--no-pca-init", cli_type=bool | None,
                                   help="Rotate the base by PCA before training (default: "
                                   "with --matryoshka).")  # fmt: skip
    max_seq_length: int | None = option(None, check=at_least(8), optional=True,
                                        help="Tokens per text (default: the base's).")  # fmt: skip
    unsupervised: Unsupervised | None = option(None, cli_type=str | None, optional=True,
                                               check=one_of(UNSUPERVISED),
                                               help="Pairs from the corpus alone: ict or "
                                               "crop.")  # fmt: skip
    teacher: Any = option(None, cli_type=str | None, check=RERANKER, optional=True,
                          help="Teacher whose scores margin-mse distils: a cross-encoder, "
                          "or bi-encoders, comma-separated (their corpus z-scores, "
                          "averaged).")  # fmt: skip
    positives_per_query: int = option(0, check=COUNT,
                                      help="Judged positives per query in each epoch, the "
                                      "next ones each epoch (0: every judged pair).")  # fmt: skip
    dev_fraction: float = option(0.1, check=FRACTION,
                                 help="Share of training queries held out as the dev split "
                                 "(0: none).")  # fmt: skip
    dev_pool: int = option(300, check=at_least(1),
                           help="Documents the dev queries are ranked among (judged, mined, "
                           "then random ones).")  # fmt: skip
    patience: int = option(1, check=COUNT,
                           help="Dev evaluations without improvement before stopping (0: "
                           "never stop early).")  # fmt: skip
    eval_every: int | None = option(None, check=POSITIVE_INT, optional=True,
                                    help="Steps between dev evaluations (default: each "
                                    "epoch).")  # fmt: skip
    sts_file: Path | None = option(DEFAULT_STS, cli="--sts", cli_type=Path | None,
                                   help="STS-B file for the forgetting check (skipped when "
                                   "absent).")  # fmt: skip

    def __post_init__(self) -> None:
        object.__setattr__(self, "matryoshka_dims", _dims(self.matryoshka_dims))
        object.__setattr__(self, "matryoshka_weights", _weights(self.matryoshka_weights))
        if self.sts_file is not None:
            if not isinstance(self.sts_file, str | os.PathLike):
                raise InvalidInput(f"sts_file must be a path, got {self.sts_file!r}")
            object.__setattr__(self, "sts_file", Path(self.sts_file))
        super().__post_init__()

    def check(self) -> None:
        dims = self.matryoshka_dims or ()
        if any(d < 1 for d in dims) or len(set(dims)) != len(dims):
            raise InvalidInput(f"matryoshka_dims (--matryoshka) must be distinct positive "
                               f"dimensions, got {list(dims)}")  # fmt: skip
        weights = self.matryoshka_weights
        if weights is not None:
            if not dims:
                raise InvalidInput("matryoshka_weights (--matryoshka-weights) needs "
                                   "matryoshka_dims (--matryoshka)")  # fmt: skip
            if any(not w > 0 or w == float("inf") for w in weights):
                raise InvalidInput(f"matryoshka_weights (--matryoshka-weights) must be "
                                   f"positive finite numbers, got {list(weights)}")  # fmt: skip
            if len(weights) not in (len(dims), len(dims) + 1):
                raise InvalidInput(f"matryoshka_weights (--matryoshka-weights) takes one weight "
                                   f"per trained dim, the full one first: {len(dims) + 1} for "
                                   f"--matryoshka {','.join(map(str, dims))}, got "
                                   f"{len(weights)}")  # fmt: skip
        if self.loss == "margin-mse" and self.teacher is None:
            raise InvalidInput("loss='margin-mse' distils a teacher: pass teacher= (--teacher)")
        if self.teacher is not None and self.loss not in ("auto", "margin-mse"):
            raise InvalidInput(f"teacher= (--teacher) is distilled with margin-mse, not "
                               f"loss={self.loss!r}")  # fmt: skip
        if self.teacher is not None and self.negatives_per_query < 1:
            raise InvalidInput("margin-mse needs negatives: --negatives must be >= 1")
        if self.unsupervised is not None and self.loss == "cosent":
            raise InvalidInput("--unsupervised builds (query, positive) pairs; cosent needs "
                               "scored pairs")  # fmt: skip

    @property
    def rotates(self) -> bool:
        """Whether the run bakes a PCA rotation into the base first (:attr:`pca_init`)."""
        return bool(self.matryoshka_dims) if self.pca_init is None else self.pca_init

    def resolved_loss(self, scored: bool) -> str:
        """The loss a run uses on data that is (or is not) scored pairs.

        Raises:
            InvalidInput: the loss does not fit the data.
        """
        loss = self.loss
        if loss == "auto":
            loss = "cosent" if scored else "margin-mse" if self.teacher is not None else "mnrl"
        if scored != (loss == "cosent"):
            raise InvalidInput(
                f"loss={loss!r} does not fit {'scored pairs' if scored else 'query/positive pairs'}"
                f"; scored pairs (sentence1, sentence2, score) train with cosent, pairs and "
                "BEIR folders with mnrl or margin-mse"
            )
        return loss
