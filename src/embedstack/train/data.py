"""Training data the trainers share: groups ``(query, positive, [negatives])`` from a BEIR
split's qrels, hard negatives mined (:mod:`embedstack.train.negatives`) or read back from an
earlier training's ``hard_negatives.jsonl``, and each epoch's draw of groups.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from embedstack.encoders.base import TextEncoder
from embedstack.errors import InvalidInput
from embedstack.train.config import TrainConfig

__all__ = [
    "NEGATIVES_FILE",
    "Group",
    "TrainingData",
    "build_groups",
    "epoch_groups",
    "load_miner",
    "read_negatives",
    "training_data",
    "write_negatives",
]


NEGATIVES_FILE = "hard_negatives.jsonl"


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


def build_groups(
    queries: dict[str, str],
    qrels: dict[str, dict[str, int]],
    corpus: dict[str, str],
    negatives: dict[str, dict[str, list[str]]],
    *,
    random_negatives: int = 0,
    rng: random.Random | None = None,
    keep_empty: bool = False,
) -> list[Group]:
    """One :class:`Group` per judged (query, positive) pair whose document is in the corpus.

    ``negatives`` is ``{query_id: {positive_id: [doc_id, ...]}}``. ``random_negatives``
    documents drawn uniformly from the corpus (never a judged positive of the query, nor one
    of the group's hard negatives) are added to each group, seeded by ``rng``. A pair without
    any negative yields no group (nothing to contrast), unless ``keep_empty``: a bi-encoder
    contrasts it with the other documents of its batch.
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
            if negs or keep_empty:
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


@dataclass(frozen=True)
class TrainingData:
    """A run's training data: the corpus, each query's judged positives, the queries with
    one, the negatives (mined or read) and the groups built from them."""

    corpus: dict[str, str]
    positives: dict[str, set[str]]
    queries: dict[str, str]
    mined: Any
    groups: list[Group]


def training_data(dataset: Any, config: TrainConfig) -> TrainingData:
    """Groups from ``dataset``'s qrels, with negatives mined (or read from
    ``config.negatives_file``) and saved to ``config.out/hard_negatives.jsonl``.

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
        raise InvalidInput(f"{config.dataset_dir}: split {config.split!r} has no query with a "
                           "judged positive "
                           "document in the corpus; nothing to train on")  # fmt: skip
    from embedstack.train.negatives import mine_hard_negatives

    per_query = config.negatives_per_query
    if config.negatives_file is not None:
        mined = read_negatives(config.negatives_file, positives, corpus, per_query)
    else:
        encoder = load_miner(config.miner)
        mined = mine_hard_negatives(queries, positives, doc_ids, doc_texts, encoder=encoder,
                                    per_query=per_query, depth=config.mining_depth,
                                    max_ratio=config.max_ratio)  # fmt: skip
        del encoder
    write_negatives(config.out / NEGATIVES_FILE, mined.negatives)
    draw = random.Random(config.seed + 1)
    groups = build_groups(queries, dataset.qrels, corpus, mined.negatives,
                          random_negatives=config.random_negatives, rng=draw)  # fmt: skip
    if not groups:
        raise InvalidInput("no training group could be built (no negatives mined)")
    return TrainingData(corpus, positives, queries, mined, groups)


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


def load_miner(miner: str | TextEncoder | None) -> TextEncoder | None:
    if miner is None or not isinstance(miner, str):
        return miner
    from embedstack.encoders import load_encoder

    return load_encoder(miner, show_progress=False)
