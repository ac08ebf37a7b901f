"""English analysis for BM25: lowercase, word split, stopwords, Snowball stemming.

The pipeline reproduces ``bm25s.tokenize(texts, stopwords="en", stemmer=Stemmer("english"),
token_pattern=TOKEN_PATTERN)`` token for token, so BM25 scores from
:mod:`embedstack.index.lexical` can be compared with bm25s (checked in
``tests/test_lexical.py``):

1. ``text.lower()``;
2. split into runs of word characters, ``(?u)\\b\\w+\\b``. Like Lucene's StandardTokenizer
   (and unlike bm25s's default, scikit-learn's two-character pattern) single characters are
   kept: "p53", "vitamin d", "type 2", "t cells" keep their one-letter/one-digit tokens. With
   k1=1.2, b=0.75 this reproduces the Lucene BM25 references of BEIR SciFact (0.686) and
   NFCorpus (0.322); the two-character pattern loses 0.007 and 0.004 nDCG@10 there
   (docs/benchmarks.md, "BM25 analysis");
3. drop the English stop set of Lucene's ``EnglishAnalyzer`` (33 words, the bm25s default);
4. stem with the Snowball English stemmer (PyStemmer; Porter 2001).

Stems are cached per distinct word, so a corpus pays the stemmer once per vocabulary entry,
not once per token. An :class:`Analyzer` is not thread-safe (PyStemmer objects are not).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from itertools import chain, repeat

import numpy as np
import numpy.typing as npt
import Stemmer

from embedstack._typing import IntArray

__all__ = ["STOPWORDS_EN", "TOKEN_PATTERN", "Analyzer", "Vocabulary"]

TOKEN_PATTERN = r"(?u)\b\w+\b"

STOPWORDS_EN: frozenset[str] = frozenset(
    "a an and are as at be but by for if in into is it no not of on or such that the their "
    "then there these they this to was will with".split()
)

_STOP = -1  # term id of a stopword in the word cache
_OOV = -2  # term id of a word whose stem is not in the vocabulary (queries only)
_MAX_ID = 1 << 31  # term ids are int32-sized: segments map them to rows with int32 arrays


class Vocabulary:
    """An append-only map between stem strings and int ids ``0 .. len - 1``.

    Ids are never reused. A vocabulary rebuilt from persisted ``(ids, terms)`` pairs
    (:meth:`from_ids`) may have holes, ids no stored term uses any more: their
    :attr:`terms` entry is ``""`` (no stem is empty) and they are not in :attr:`ids`.

    Example:
        >>> v = Vocabulary()
        >>> v.add("cat"), v.add("dog"), v.add("cat")
        (0, 1, 0)
        >>> v.terms[1], v.get("cow")
        ('dog', -1)
    """

    def __init__(self) -> None:
        self.ids: dict[str, int] = {}
        self.terms: list[str] = []

    def __len__(self) -> int:
        return len(self.terms)

    @classmethod
    def from_ids(cls, parts: Iterable[tuple[IntArray, list[str]]]) -> Vocabulary:
        """The vocabulary whose id ``parts[i][0][j]`` is the term ``parts[i][1][j]``.

        Args:
            parts: ``(ids, terms)`` pairs of equal length: non-negative int64 ids and
                their non-empty terms; an id may repeat across parts with the same term.

        Raises:
            ValueError: the parts disagree (one id with two terms, one term with two ids),
                an id is negative or a term is empty.
        """
        pairs = []
        for gids, terms in parts:
            if len(gids) != len(terms):
                raise ValueError(f"{len(gids)} ids for {len(terms)} terms")
            column = np.empty(len(terms), dtype=object)  # not "<U": no padding to the longest
            column[:] = terms
            pairs.append((gids, column))
        every = np.unique(np.concatenate([g for g, _ in pairs])) if pairs else np.zeros(0, np.int64)
        if len(every) and (every[0] < 0 or every[-1] >= _MAX_ID):
            raise ValueError(f"a stored term id is out of range [0, {_MAX_ID})")
        by_id = np.full(int(every[-1]) + 1 if len(every) else 0, "", dtype=object)
        for gids, column in pairs:
            by_id[gids] = column
        if not all(bool(np.all(by_id[gids] == column)) for gids, column in pairs):
            raise ValueError("a stored term id stands for two terms")
        vocab = cls()
        vocab.ids = dict(zip(by_id[every].tolist(), every.tolist(), strict=True))
        if len(vocab.ids) != len(every) or "" in vocab.ids:
            raise ValueError("a stored term has two ids, or is empty")
        vocab.terms = by_id.tolist()
        return vocab

    @classmethod
    def from_terms(cls, terms: list[str]) -> Vocabulary:
        """The vocabulary whose id ``i`` is ``terms[i]`` (``""``: a hole), taking ``terms``.

        Raises:
            ValueError: a term appears twice, or there are more than 2**31 ids.
        """
        if len(terms) > _MAX_ID:
            raise ValueError(f"{len(terms)} stored term ids, more than {_MAX_ID}")
        vocab = cls()
        vocab.terms = terms
        vocab.ids = dict(zip(terms, range(len(terms)), strict=True))
        vocab.ids.pop("", None)
        if len(vocab.ids) != len(terms) - terms.count(""):
            raise ValueError("a stored term has two ids")
        return vocab

    def get(self, term: str) -> int:
        """Return the id of ``term``, or -1 when it is not in the vocabulary."""
        return self.ids.get(term, -1)

    def add(self, term: str) -> int:
        """Return the id of ``term``, adding it first when it is new."""
        tid = self.ids.get(term)
        if tid is None:
            tid = self.ids[term] = len(self.terms)
            self.terms.append(term)
        return tid

    def add_many(self, terms: Sequence[str]) -> npt.NDArray[np.int64]:
        """Ids of ``terms`` (adding new ones in order of first appearance, as repeated
        :meth:`add` would), as an int64 array of the same length; dictionary work only."""
        ids = self.ids
        out = np.fromiter(map(ids.get, terms, repeat(-1)), np.int64, count=len(terms))
        missing = np.flatnonzero(out < 0).tolist()
        if missing:
            words = [terms[i] for i in missing]
            new = list(dict.fromkeys(words))  # first appearance order, once each
            start = len(self.terms)
            ids.update(zip(new, range(start, start + len(new)), strict=True))
            self.terms.extend(new)
            out[missing] = np.fromiter(map(ids.__getitem__, words), np.int64, len(words))
        return out

    def terms_of(self, gids: IntArray) -> list[str]:
        """The terms of ids ``gids`` (each must be a term's id)."""
        return list(map(self.terms.__getitem__, gids.tolist()))


class _WordIds(dict[str, int]):
    """word -> term id (or ``_STOP``), filled on first sight by stemming the word and adding
    its stem to the vocabulary: one C-level dict lookup per token once the word is known."""

    def __init__(self, vocab: Vocabulary, stem: Callable[[str], str]) -> None:
        super().__init__(dict.fromkeys(STOPWORDS_EN, _STOP))
        self._vocab_add = vocab.add
        self._stem = stem

    def __missing__(self, word: str) -> int:
        tid = self[word] = self._vocab_add(self._stem(word))
        return tid


class Analyzer:
    """Turns texts into term-id sequences over a :class:`Vocabulary`.

    Args:
        vocab: the vocabulary to look stems up in (and to grow, with ``grow=True``).

    Example:
        >>> a = Analyzer(Vocabulary())
        >>> ids, lengths = a.analyze(["The cats are running", ""], grow=True)
        >>> [a.vocab.terms[i] for i in ids], lengths.tolist()
        (['cat', 'run'], [2, 0])
    """

    def __init__(self, vocab: Vocabulary) -> None:
        self.vocab = vocab
        self._split = re.compile(TOKEN_PATTERN).findall
        self._stemmer = Stemmer.Stemmer("english")
        self._word_ids = _WordIds(vocab, self._stemmer.stemWord)

    def tokens(self, text: str) -> list[str]:
        """The analysed tokens (stems) of one text, in order, stopwords removed."""
        stem = self._stemmer.stemWord
        return [stem(w) for w in self._split(text.lower()) if w not in STOPWORDS_EN]

    def analyze(
        self, texts: Sequence[str], *, grow: bool
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """Analyse a batch of texts into one flat array of term ids.

        Args:
            texts: the texts; each must be a ``str``.
            grow: add unseen stems to the vocabulary (indexing). With ``False`` (queries),
                tokens whose stem is not in the vocabulary are dropped: they match nothing.

        Returns:
            ``(term_ids, lengths)``: ``(n_tokens,)`` int64 term ids of all texts concatenated,
            stopwords (and, without ``grow``, unknown stems) removed; and ``(len(texts),)``
            int64 counts of kept tokens per text, so text ``i`` owns
            ``term_ids[offsets[i]:offsets[i + 1]]`` with ``offsets`` their cumulative sum.
            With ``grow=True`` the counts are the BM25 document lengths.
        """
        words_per_text = list(map(self._split, map(str.lower, texts)))
        counts = np.fromiter(map(len, words_per_text), dtype=np.int64, count=len(texts))
        n_tokens = int(counts.sum())
        words = chain.from_iterable(words_per_text)
        if grow:
            ids = np.fromiter(map(self._word_ids.__getitem__, words), np.int64, count=n_tokens)
        else:
            ids = self._lookup(list(words))
        keep = ids >= 0
        if bool(keep.all()):
            return ids, counts
        owner = np.repeat(np.arange(len(texts)), counts)
        kept_counts = np.bincount(owner[keep], minlength=len(texts)).astype(np.int64)
        return ids[keep], kept_counts

    def _lookup(self, words: list[str]) -> npt.NDArray[np.int64]:
        """Term ids of ``words`` without growing the vocabulary (``_OOV`` when unknown)."""
        word_ids = self._word_ids
        ids = np.fromiter(map(word_ids.get, words, repeat(_OOV)), np.int64, count=len(words))
        known = self.vocab.ids
        for i in np.flatnonzero(ids == _OOV).tolist():
            tid = known.get(self._stemmer.stemWord(words[i]), _OOV)
            if tid != _OOV:
                word_ids[words[i]] = ids[i] = tid
        return ids

    def analyze_queries(self, queries: Sequence[str]) -> list[npt.NDArray[np.int64]]:
        """Known term ids of each query, repeats kept, stopwords and unknown stems dropped."""
        ids, counts = self.analyze(queries, grow=False)
        return np.split(ids, np.cumsum(counts)[:-1]) if len(queries) else []
