"""Training data of :func:`~embedstack.train.train_embedder`: what DATA holds, the dev split,
pairs built from a corpus alone (batches: :mod:`embedstack.train.embedder_batches`).

DATA is one of:

* a BEIR folder: groups ``(query, judged positive, mined negatives)`` from
  ``qrels/<split>.tsv``, exactly as the reranker and ColBERT trainers build them
  (:func:`embedstack.train.data.training_data`, :mod:`embedstack.train.negatives`);
* a pairs JSONL: ``{"query", "positive", "negative" | "negatives"}`` per line; when no line
  gives negatives they are mined over the file's own documents with the same miner;
* a scored pairs JSONL: ``{"sentence1", "sentence2", "score"}`` (STS-style, CoSENT);
* with ``unsupervised``, a BEIR folder's corpus alone (:func:`corpus_pairs`).

The dev split is carved from the training data by query (all groups of a dev query leave
training), never from another split.
"""

from __future__ import annotations

import dataclasses
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from embedstack.errors import InvalidInput
from embedstack.train.data import (
    NEGATIVES_FILE,
    Group,
    build_groups,
    load_miner,
    training_data,
    write_negatives,
)
from embedstack.train.embedder_config import EmbedderConfig

__all__ = [
    "DevSet",
    "EmbedderData",
    "corpus_pairs",
    "load_embedder_data",
    "read_pairs",
]


@dataclass(frozen=True)
class DevSet:
    """A held-out check: queries ranked over a pool of documents, or scored pairs."""

    queries: dict[str, str] = field(default_factory=dict)
    docs: dict[str, str] = field(default_factory=dict)
    qrels: dict[str, dict[str, int]] = field(default_factory=dict)
    scored: list[tuple[str, str, float]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.queries) or len(self.scored)


@dataclass(frozen=True)
class EmbedderData:
    """What a run trains on.

    Attributes:
        kind: ``"beir"``, ``"pairs"``, ``"scored"`` or ``"unsupervised"``.
        groups: Training groups (empty for scored pairs).
        scored: Training ``(sentence1, sentence2, score)`` (scored pairs only).
        dev: The held-out dev split (empty when ``dev_fraction`` is 0).
        mined: The :class:`~embedstack.train.negatives.MinedNegatives`, or None.
    """

    kind: str
    groups: list[Group]
    scored: list[tuple[str, str, float]]
    dev: DevSet
    mined: Any = None

    @property
    def size(self) -> int:
        return len(self.groups) or len(self.scored)


def _text(record: dict[str, Any], key: str, path: Path, lineno: int, what: str) -> str:
    value = record.get(key)
    if not isinstance(value, str) or not value.strip():
        state = "missing" if key not in record else f"not a non-empty string ({value!r:.40})"
        raise InvalidInput(f"{path}:{lineno}: field {key!r} is {state}; {what}")
    return value


PAIRS = "pairs files need 'query' and 'positive' (optional 'negative' or 'negatives')"
SCORED = "scored pairs files need 'sentence1', 'sentence2' and a numeric 'score'"


def read_pairs(path: Path) -> tuple[str, list[tuple[Any, ...]]]:
    """``("pairs", [(query, positive, negatives)])`` or ``("scored", [(s1, s2, score)])``.

    The first record decides the format (``sentence1`` → scored); every line is checked.

    Raises:
        InvalidInput: unreadable JSON lines, or a line missing a field (with its number).
    """
    from embedstack.eval.datasets import iter_jsonl

    kind = ""
    rows: list[tuple[Any, ...]] = []
    for lineno, record in iter_jsonl(path):
        kind = kind or ("scored" if "sentence1" in record else "pairs")
        if kind == "scored":
            score = record.get("score")
            if isinstance(score, bool) or not isinstance(score, int | float):
                raise InvalidInput(f"{path}:{lineno}: field 'score' is missing or not a "
                                   f"number; {SCORED}")  # fmt: skip
            left = _text(record, "sentence1", path, lineno, SCORED)
            rows.append((left, _text(record, "sentence2", path, lineno, SCORED), float(score)))
            continue
        query = _text(record, "query", path, lineno, PAIRS)
        positive = _text(record, "positive", path, lineno, PAIRS)
        negatives = record.get("negatives", [record["negative"]] if "negative" in record else [])
        if not isinstance(negatives, list) or not all(
            isinstance(n, str) and n.strip() for n in negatives
        ):
            raise InvalidInput(f"{path}:{lineno}: 'negative(s)' must be a string or a list of "
                               f"non-empty strings; {PAIRS}")  # fmt: skip
        rows.append((query, positive, tuple(negatives)))
    if not rows:
        raise InvalidInput(f"{path}: no pairs in the file; {PAIRS}, or {SCORED}")
    return kind, rows


def _pairs_groups(rows: list[tuple[Any, ...]], cfg: EmbedderConfig, out: Path) -> EmbedderData:
    """Groups of a pairs file; negatives from the file, else mined over its documents."""
    texts: dict[str, str] = {}
    query_ids: dict[str, str] = {}
    qrels: dict[str, dict[str, int]] = {}
    for query, positive, negatives in rows:
        qid = query_ids.setdefault(query, f"q{len(query_ids)}")
        for text in (positive, *negatives):
            texts.setdefault(text, f"d{len(texts)}")
        qrels.setdefault(qid, {})[texts[positive]] = 1
    corpus = {doc: text for text, doc in texts.items()}
    queries = {qid: text for text, qid in query_ids.items()}
    given = any(negatives for _, _, negatives in rows)
    mined = None
    negatives_of: dict[str, dict[str, list[str]]] = {}
    if given:
        for query, positive, negatives in rows:
            judged = qrels[query_ids[query]]
            docs = [texts[n] for n in negatives if texts[n] not in judged]
            negatives_of.setdefault(query_ids[query], {})[texts[positive]] = docs
    elif cfg.negatives_per_query:
        mined = _mine(queries, qrels, corpus, cfg)
        negatives_of = mined.negatives
        write_negatives(out / NEGATIVES_FILE, negatives_of)
    groups = build_groups(queries, qrels, corpus, negatives_of, keep_empty=True)
    return _with_dev("pairs", groups, cfg, corpus, qrels, queries, mined)


def _mine(
    queries: dict[str, str], qrels: dict[str, dict[str, int]], corpus: dict[str, str],
    cfg: EmbedderConfig,
) -> Any:  # fmt: skip
    from embedstack.train.negatives import mine_hard_negatives

    positives = {q: {d for d, r in judged.items() if r > 0} for q, judged in qrels.items()}
    encoder = load_miner(cfg.miner)
    return mine_hard_negatives(queries, positives, list(corpus), list(corpus.values()),
                               encoder=encoder, per_query=cfg.negatives_per_query,
                               depth=cfg.mining_depth, max_ratio=cfg.max_ratio)  # fmt: skip


_SENTENCE = re.compile(r"(?<=[.!?])\s+")


def corpus_pairs(
    texts: Sequence[str], method: str, rng: random.Random, *, keep_query: float = 0.1
) -> list[tuple[int, str, str]]:
    """``(doc index, pseudo query, positive)`` built from documents alone.

    ``ict`` (Lee et al. 2019): a random sentence is the query and the rest of the document
    the positive; with probability ``keep_query`` the sentence stays in the positive too (the
    paper keeps it 10 % of the time, so the model still learns word overlap). Documents with
    fewer than two sentences are skipped. ``crop`` (Izacard et al. 2021): two independent
    random spans, each 10-50 % of the document's words (at least 4); documents under 8
    words are skipped.

    Example:
        >>> corpus_pairs(["One two. Three four five."], "ict", random.Random(0), keep_query=0)
        [(0, 'Three four five.', 'One two.')]
    """
    pairs: list[tuple[int, str, str]] = []
    for i, text in enumerate(texts):
        if method == "ict":
            sentences = [s for s in _SENTENCE.split(text.strip()) if s.strip()]
            if len(sentences) < 2:
                continue
            pick = rng.randrange(len(sentences))
            rest = (
                sentences if rng.random() < keep_query else sentences[:pick] + sentences[pick + 1 :]
            )
            pairs.append((i, sentences[pick], " ".join(rest)))
            continue
        words = text.split()
        if len(words) < 8:
            continue
        spans = []
        for _ in range(2):
            length = max(4, round(len(words) * rng.uniform(0.1, 0.5)))
            start = rng.randrange(len(words) - length + 1)
            spans.append(" ".join(words[start : start + length]))
        pairs.append((i, spans[0], spans[1]))
    return pairs


def _unsupervised(cfg: EmbedderConfig, out: Path) -> EmbedderData:
    from embedstack.eval.datasets import load_corpus

    doc_ids, doc_texts = load_corpus(cfg.dataset_dir)
    corpus = dict(zip(doc_ids, doc_texts, strict=True))
    made = corpus_pairs(doc_texts, str(cfg.unsupervised), random.Random(cfg.seed + 2))
    if not made:
        raise InvalidInput(f"{cfg.dataset_dir}: no document is long enough to build "
                           f"{cfg.unsupervised} pairs from")  # fmt: skip
    queries = {f"u{j}": query for j, (_, query, _) in enumerate(made)}
    qrels = {f"u{j}": {doc_ids[i]: 1} for j, (i, _, _) in enumerate(made)}
    positive = {f"u{j}": text for j, (_, _, text) in enumerate(made)}
    mined = None
    negatives: dict[str, dict[str, list[str]]] = {}
    if cfg.negatives_per_query:
        mined = _mine(queries, qrels, corpus, cfg)
        negatives = mined.negatives
        write_negatives(out / NEGATIVES_FILE, negatives)
    groups = []
    for qid, query in queries.items():
        ((doc, _),) = qrels[qid].items()
        negs = tuple(corpus[d] for d in negatives.get(qid, {}).get(doc, []))
        groups.append(Group(query, positive[qid], negs))
    pool = {f"p{j}": text for j, text in enumerate(positive.values())}
    pool_qrels = {qid: {f"p{j}": 1} for j, qid in enumerate(queries)}
    return _with_dev("unsupervised", groups, cfg, pool, pool_qrels, queries, mined)


def _with_dev(
    kind: str, groups: list[Group], cfg: EmbedderConfig, corpus: dict[str, str],
    qrels: dict[str, dict[str, int]], queries: dict[str, str], mined: Any,
) -> EmbedderData:  # fmt: skip
    """Hold ``cfg.dev_fraction`` of the queries out of ``groups`` as the dev split."""
    rng = random.Random(cfg.seed + 3)
    texts = sorted({g.query for g in groups})
    n_dev = int(len(texts) * cfg.dev_fraction)
    if n_dev == 0 or n_dev == len(texts):
        return EmbedderData(kind, groups, [], DevSet(), mined)
    dev_texts = set(rng.sample(texts, n_dev))
    train = [g for g in groups if g.query not in dev_texts]
    by_text = {text: qid for qid, text in queries.items()}
    dev_queries = {by_text[t]: t for t in sorted(dev_texts)}
    judged = {q: {d: r for d, r in qrels[q].items() if r > 0} for q in dev_queries}
    row = {text: doc for doc, text in corpus.items()}
    negatives = sorted({row[n] for g in groups if g.query in dev_texts for n in g.negatives
                        if n in row})  # fmt: skip
    rng.shuffle(negatives)
    rest = sorted(set(corpus) - set(negatives) - {d for j in judged.values() for d in j})
    rng.shuffle(rest)
    pool = dev_pool(judged, negatives, rest, cfg.dev_pool)
    dev_qrels = {q: {d: r for d, r in j.items() if d in pool} for q, j in judged.items()}
    dev_qrels = {q: j for q, j in dev_qrels.items() if j}
    dev = DevSet({q: dev_queries[q] for q in dev_qrels}, {d: corpus[d] for d in sorted(pool)},
                 dev_qrels)  # fmt: skip
    return EmbedderData(kind, train, [], dev, mined)


def dev_pool(
    judged: dict[str, dict[str, int]], negatives: list[str], rest: list[str], size: int
) -> dict[str, None]:
    """The documents the dev queries are ranked among, at most ``size`` of them, in
    insertion order (while the judged documents fit, a smaller pool is a prefix of a larger
    one).

    Judged documents come first, in rounds (each query's most relevant one, then each
    one's next …): all of them when they fit, else half the pool, so that every query keeps
    its best ones when they outnumber it (NFCorpus judges ~40 documents per query); then the mined
    negatives, then random documents (``negatives`` and ``rest`` come shuffled). Documents
    left out are dropped from the dev qrels, so nDCG's ideal ranking is over the pool.

    Example:
        >>> judged = {"q1": {"a": 2, "b": 1}, "q2": {"c": 1}}
        >>> list(dev_pool(judged, ["n"], ["r", "s"], 5))
        ['a', 'c', 'b', 'n', 'r']
        >>> list(dev_pool(judged, ["n"], ["r", "s"], 2))  # 3 judged do not fit: 2 // 2 kept
        ['a', 'n']
    """
    ranked = [sorted(j, key=lambda d: (-j[d], d)) for _, j in sorted(judged.items())]
    total = len({d for docs in ranked for d in docs})  # a document judged twice counts once
    cap = total if total <= size else max(1, size // 2)
    pool: dict[str, None] = {}
    for depth in range(max(map(len, ranked), default=0)):
        for docs in ranked:
            if depth < len(docs) and len(pool) < cap:
                pool.setdefault(docs[depth])
    for doc in (*negatives, *rest):
        if len(pool) >= size:
            break
        pool.setdefault(doc)
    return pool


def load_embedder_data(cfg: EmbedderConfig, out: Path) -> EmbedderData:
    """The training data and dev split of ``cfg.dataset_dir`` (hard negatives saved in ``out``).

    Raises:
        InvalidInput: DATA is neither a BEIR folder nor a JSON-lines file, the split is
            missing, a line lacks a field (its number is given), or nothing can be trained.
    """
    path = cfg.dataset_dir
    if cfg.unsupervised is not None:
        if not path.is_dir():
            raise InvalidInput(f"{path}: --unsupervised needs a BEIR folder (its corpus.jsonl)")
        return _unsupervised(cfg, out)
    if path.is_dir():
        from embedstack.eval.datasets import load_beir

        dataset = load_beir(path, split=cfg.split)
        if cfg.negatives_per_query == 0:
            from embedstack.eval.datasets import load_corpus

            ids, texts = load_corpus(dataset)
            corpus = dict(zip(ids, texts, strict=True))
            queries = {q: t for q, t in dataset.queries.items() if t.strip()}
            groups = build_groups(queries, dataset.qrels, corpus, {}, keep_empty=True)
            mined = None
        else:
            data = training_data(dataset, dataclasses.replace(cfg, out=out))
            corpus, queries, groups, mined = data.corpus, data.queries, data.groups, data.mined
        if not groups:
            raise InvalidInput(f"{path}: split {cfg.split!r} has no judged pair in the corpus")
        return _with_dev("beir", groups, cfg, corpus, dataset.qrels, queries, mined)
    if not path.is_file():
        raise InvalidInput(f"{path}: no such file or folder; pass a BEIR folder or a JSONL file")
    kind, rows = read_pairs(path)
    if kind == "pairs":
        return _pairs_groups(rows, cfg, out)
    scored: list[tuple[str, str, float]] = list(rows)
    rng = random.Random(cfg.seed + 3)
    n_dev = int(len(scored) * cfg.dev_fraction)
    dev_rows = set(rng.sample(range(len(scored)), n_dev)) if 2 <= n_dev < len(scored) else set()
    train = [r for i, r in enumerate(scored) if i not in dev_rows]
    dev = DevSet(scored=[scored[i] for i in sorted(dev_rows)])
    return EmbedderData("scored", [], train, dev)
