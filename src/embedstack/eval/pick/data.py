"""What ``embedstack pick`` evaluates on: a judged BEIR split, or a proxy built from a corpus.

* **judged** — a BEIR folder with ``corpus.jsonl``, ``queries.jsonl`` and
  ``qrels/<split>.tsv``: its queries and relevance judgements, as ``embedstack eval`` uses.
* **proxy** — any other corpus (a ``.jsonl`` file, a folder of ``.txt``/``.md``/``.html``
  files, a BEIR folder without qrels), read with :mod:`embedstack.index.sources`. With no
  judgements, queries are built from the corpus itself: for each of up to
  ``max_queries`` documents (a seeded sample) one sentence of at least
  :data:`MIN_QUERY_WORDS` words is taken out of a document of two or more sentences (its
  title when it has a single sentence) and becomes a query whose single relevant answer is
  that document. The sentence is **removed** from the text the document is indexed and
  encoded with, so the query is not an exact match of its answer: what is measured is how
  well each candidate finds a document from a passage *about* it, not a copy of it. Proxy
  numbers are labelled ``"proxy"`` everywhere and are never comparable with judged ones.

Proxy query ids are ``"proxy:<doc id>"`` so that BEIR's rule of dropping a retrieved
document whose id equals the query id never fires.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from embedstack.errors import InvalidInput

__all__ = ["MIN_QUERY_WORDS", "PickData", "load_pick_data", "token_counts"]

MIN_QUERY_WORDS = 4
_SENTENCE = re.compile(r"(?<=[.!?])\s+")
_WORD = re.compile(r"\w+", re.UNICODE)


@dataclass(frozen=True)
class PickData:
    """Documents, queries and judgements for one pick run.

    Attributes:
        path: what the user passed.
        name: a short name (the folder or file name).
        evaluation: ``"judged"`` (qrels) or ``"proxy"`` (queries built from the corpus).
        proxy_note: how the proxy was built, or None when judged.
        doc_ids: ``(n_docs,)`` document ids.
        doc_texts: the text each document is encoded and indexed with (title + text; for a
            proxy, without the sentence taken out as its query).
        queries: ``{query_id: text}``.
        qrels: ``{query_id: {doc_id: relevance}}``.
        split: the qrels split (judged), else None.
        skipped: what reading a plain corpus skipped, and why.
        beir: the :class:`~embedstack.eval.datasets.BeirDataset` (judged), else None.
    """

    path: Path
    name: str
    evaluation: Literal["judged", "proxy"]
    proxy_note: str | None
    doc_ids: list[str]
    doc_texts: list[str]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    split: str | None = None
    skipped: list[str] = field(default_factory=list)
    beir: Any = None


def _is_judged(root: Path) -> bool:
    """A BEIR folder with judgements (a missing split then fails with the ones available)."""
    return (
        root.is_dir()
        and (root / "corpus.jsonl").is_file()
        and (root / "queries.jsonl").is_file()
        and (root / "qrels").is_dir()
    )


def _empty(path: Path) -> InvalidInput:
    return InvalidInput(
        f"{path}: the corpus is empty (no document with text); pass a BEIR folder, a .jsonl "
        'file of {"id", "text"} lines, or a folder of .txt/.md files'
    )


def _judged(root: Path, split: str) -> PickData:
    from embedstack.eval.datasets import iter_corpus, load_beir

    dataset = load_beir(root, split=split)
    ids: list[str] = []
    texts: list[str] = []
    for doc in iter_corpus(dataset):
        ids.append(doc.id)
        texts.append(doc.full_text or doc.id)
    if not ids:
        raise _empty(root / "corpus.jsonl")
    return PickData(
        root,
        dataset.name,
        "judged",
        None,
        ids,
        texts,
        dict(dataset.queries),
        {q: dict(d) for q, d in dataset.qrels.items()},
        split,
        beir=dataset,
    )


def _read_corpus(path: Path) -> tuple[list[dict[str, str]], list[str]]:
    from embedstack.index.sources import describe_skipped, iter_documents, scan_documents

    scan = scan_documents([path])
    if scan.problems:
        shown = "; ".join(str(p) for p in scan.problems[:3])
        more = f" (and {len(scan.problems) - 3} more)" if len(scan.problems) > 3 else ""
        raise InvalidInput(f"{path}: {len(scan.problems)} invalid inputs: {shown}{more}")
    docs = [
        {"id": str(d["id"]), "title": str(d.get("title") or ""), "text": str(d["text"])}
        for d in iter_documents([path])
    ]
    skipped = describe_skipped(scan)
    return docs, [skipped] if skipped else []


def _proxy_query(title: str, text: str, rng: np.random.Generator) -> tuple[str, str] | None:
    """``(query, text left to index)`` for one document, or None when it offers none."""
    sentences = [s.strip() for s in _SENTENCE.split(text.strip()) if s.strip()]
    if len(sentences) >= 2:
        eligible = [i for i, s in enumerate(sentences) if len(_WORD.findall(s)) >= MIN_QUERY_WORDS]
        if eligible:
            pick = eligible[int(rng.integers(len(eligible)))]
            rest = " ".join(s for i, s in enumerate(sentences) if i != pick)
            return sentences[pick], (title + " " + rest).strip()
    if len(_WORD.findall(title)) >= 2 and text.strip():
        return title.strip(), text.strip()
    return None


def _proxy(path: Path, seed: int, max_queries: int) -> PickData:
    docs, skipped = _read_corpus(path)
    if not docs:
        raise _empty(path)
    ids = [d["id"] for d in docs]
    texts = [
        (d["title"] + " " + d["text"]).strip() if d["title"] != d["text"] else d["text"]
        for d in docs
    ]
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(docs))
    queries: dict[str, str] = {}
    qrels: dict[str, dict[str, int]] = {}
    for position in order:
        if len(queries) >= max_queries:
            break
        doc = docs[int(position)]
        title = doc["title"] if doc["title"] != doc["text"] else ""
        made = _proxy_query(title, doc["text"], rng)
        if made is None:
            continue
        qid = f"proxy:{doc['id']}"
        queries[qid] = made[0]
        qrels[qid] = {doc["id"]: 1}
        texts[int(position)] = made[1]
    if not queries:
        raise InvalidInput(
            f"{path}: cannot build a proxy evaluation: no document has a sentence of "
            f"{MIN_QUERY_WORDS}+ words next to another sentence, or a title; pass a BEIR "
            "folder with qrels instead"
        )
    note = (
        f"proxy evaluation (no relevance judgements): {len(queries)} queries built from the "
        f"corpus itself (seed {seed}); each is one sentence of {MIN_QUERY_WORDS}+ words taken "
        "out of a sampled document (its title when it has one sentence), with that document "
        "as the single relevant answer; the sentence is removed from the document's indexed "
        "text so it is not an exact match. These numbers rank candidates on this corpus; "
        "they are not comparable with judged (qrels) numbers."
    )
    name = path.stem if path.is_file() else path.resolve().name
    return PickData(path, name, "proxy", note, ids, texts, queries, qrels, None, skipped)


def load_pick_data(
    path: str | Path, *, split: str = "test", seed: int = 0, max_proxy_queries: int = 500
) -> PickData:
    """Load ``path`` as judged data (a BEIR folder with qrels) or build a proxy evaluation.

    Args:
        path: a BEIR folder, a ``.jsonl`` corpus, or a folder of text files.
        split: the qrels split of a BEIR folder.
        seed: seeds the proxy's document sample and sentence choice.
        max_proxy_queries: at most this many proxy queries.

    Raises:
        InvalidInput: no such path, an empty corpus, malformed input, or a corpus from which
            no proxy query can be built.

    Example:
        >>> data = load_pick_data("../shared/datasets/scifact")  # doctest: +SKIP
        >>> data.evaluation, len(data.queries)  # doctest: +SKIP
        ('judged', 300)
    """
    root = Path(path)
    if not root.exists():
        raise InvalidInput(f"{root}: no such file or folder")
    if max_proxy_queries < 1:
        raise InvalidInput(f"max_proxy_queries must be >= 1, got {max_proxy_queries}")
    if _is_judged(root):
        return _judged(root, split)
    return _proxy(root, seed, max_proxy_queries)


def token_counts(texts: list[str], *, limit: int = 2000, seed: int = 0) -> tuple[np.ndarray, str]:
    """Tokens per document for the long-document checks, on a seeded sample of ``limit``.

    Counted with the BERT-uncased WordPiece tokenizer of the bundled all-MiniLM-L6-v2,
    untruncated; when it is absent, approximated as words x 1.3.

    Returns:
        ``((m,) int64 counts, a note saying how they were counted)``.
    """
    rng = np.random.default_rng(seed)
    sample = (
        texts
        if len(texts) <= limit
        else [texts[i] for i in rng.choice(len(texts), limit, replace=False)]
    )
    tokenizer = _wordpiece()
    if tokenizer is not None:
        counts = [len(e.ids) for e in tokenizer.encode_batch(sample)]
        how = "BERT-uncased WordPiece tokens (the all-MiniLM-L6-v2 tokenizer), untruncated"
    else:
        counts = [int(round(len(_WORD.findall(t)) * 1.3)) for t in sample]
        how = "approximate tokens: words x 1.3 (no WordPiece tokenizer on this machine)"
    if len(texts) > limit:
        how += f", on a seeded sample of {limit} of {len(texts)} documents"
    return np.asarray(counts, dtype=np.int64), how


def _wordpiece() -> Any:
    try:
        from embedstack.encoders.registry import DEFAULT_MODEL, get_model
        from embedstack.encoders.runtime.folder import load_tokenizer

        folder = get_model(DEFAULT_MODEL).bundled_path()
        if folder is None:
            return None
        found = sorted(folder.rglob("tokenizer.json"))
        return load_tokenizer(found[0].parent, None) if found else None
    except Exception:  # noqa: BLE001 - only a better estimate is lost
        return None
