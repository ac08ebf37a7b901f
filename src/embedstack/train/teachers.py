"""Teachers for Margin-MSE that are not cross-encoders: an ensemble of bi-encoders.

GPL (Wang et al. 2022) adapts a trained retriever to a corpus without labels by distilling a
teacher's score margins on pseudo-queries. Its teacher is a cross-encoder; where none can be
had, several bi-encoders together are the next best judge: ensembles of independently
trained dense models rank better than any one of them (their errors differ), and they can be
stronger than the student even when no single member is.

Each member's cosine is made comparable by a per-query z-score over the whole corpus
(CombSUM of z-scores; Montague & Aslam 2001): for query vector ``q`` and the corpus'
mean ``mu`` and covariance ``C``, ``z(q, d) = (q·d - q·mu) / sqrt(qᵀ C q)``, which needs no
pass over the corpus per query. The mean z is then put back on the student's own scale,
``mu_s(q) + sigma_s(q) · z``, so its margins are the size the student's cosines can reach
(Margin-MSE copies margins, not ranks).

Example:
    >>> teacher = DenseTeacher(["all-mpnet-base-v2", "multilingual-e5-small"], corpus,
    ...                        student="all-MiniLM-L6-v2")  # doctest: +SKIP
    >>> teacher.score("a claim", ["doc a", "doc b"])  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["DenseTeacher", "load_teacher", "teacher_members"]


@dataclass
class _Member:
    """One bi-encoder with its corpus statistics and its vectors of the texts seen."""

    encoder: Any
    mean: np.ndarray
    cov: np.ndarray
    vectors: dict[str, np.ndarray]
    queries: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)

    @classmethod
    def fit(cls, encoder: Any, texts: Sequence[str], matrix: np.ndarray) -> _Member:
        matrix = np.asarray(matrix, dtype=np.float64)
        if matrix.shape[0] != len(texts) or matrix.shape[0] < 2:
            raise ValueError(f"{len(texts)} texts, {matrix.shape[0]} vectors: need 2+ of each")
        vectors = dict(zip(texts, np.asarray(matrix, dtype=np.float32), strict=True))
        return cls(encoder, matrix.mean(0), np.cov(matrix, rowvar=False), vectors)

    def warm(self, queries: Sequence[str], documents: Sequence[str]) -> None:
        """Encode the texts not seen yet, in batches (one at a time is several times
        slower)."""
        for texts, seen, encode in (
            (queries, self.queries, self.encoder.encode_queries),
            (documents, self.vectors, self.encoder.encode_documents),
        ):
            missing = [t for t in dict.fromkeys(texts) if t not in seen]
            if missing:
                seen.update(zip(missing, np.asarray(encode(missing), dtype=np.float32),
                                strict=True))  # fmt: skip

    def query(self, text: str) -> tuple[np.ndarray, float, float]:
        """The query's vector, mean and spread of its cosines over the corpus."""
        self.warm([text], [])
        q = self.queries[text].astype(np.float64)
        return q, float(q @ self.mean), float(np.sqrt(max(q @ self.cov @ q, 1e-12)))

    def documents(self, texts: Sequence[str]) -> np.ndarray:
        self.warm([], texts)
        return np.stack([self.vectors[t] for t in texts]).astype(np.float64)

    def z(self, query: str, docs: Sequence[str]) -> np.ndarray:
        q, mu, sigma = self.query(query)
        return (self.documents(docs) @ q - mu) / sigma


class DenseTeacher:
    """Scores ``(query, documents)`` like a reranker: the members' mean corpus z-score, on
    the student's scale. ``score`` has :class:`~embedstack.rerank.Reranker`'s signature, so
    ``train_embedder(teacher=DenseTeacher(...))`` distils it with Margin-MSE.

    Args:
        members: Bi-encoders (registry names, folders or :class:`~embedstack.Encoder`\\ s).
        corpus: The documents the pseudo-queries were made from; their statistics normalise
            each member's cosines. Texts outside it (an ICT positive) are encoded as met.
        student: The model being trained (its scale is the scores' scale).
        scale: What the loss multiplies the student's cosines by (Margin-MSE here compares
            the teacher's margins with ``scale`` x the student's; ``EmbedderConfig.scale``).
        encode: ``encode(encoder, corpus) -> (n, dim) array`` (default: encode every
            document; a caller may read cached vectors instead).
        threads: Threads of each encoder loaded by name.
    """

    def __init__(
        self,
        members: Sequence[Any],
        corpus: Sequence[str],
        *,
        student: Any,
        encode: Callable[[Any, Sequence[str]], np.ndarray] | None = None,
        threads: int | None = None,
        scale: float = 1.0,
    ) -> None:
        from embedstack.encoders import Encoder
        from embedstack.errors import InvalidInput

        if not members:
            raise InvalidInput("a dense teacher needs at least one member model")
        corpus = list(corpus)

        def load(model: Any) -> _Member:
            encoder = model if hasattr(model, "encode_queries") else Encoder(
                model, threads=threads, show_progress=False)  # fmt: skip
            matrix = encode(encoder, corpus) if encode else encoder.encode_documents(corpus)
            return _Member.fit(encoder, corpus, matrix)

        self.scale = float(scale)
        self.members = [load(m) for m in members]
        self.student = load(student)
        self.model_id = "dense-ensemble:" + "+".join(
            str(getattr(m.encoder, "model_id", m.encoder)) for m in self.members
        )

    def warm(self, queries: Sequence[str], documents: Sequence[str]) -> None:
        """Encode every text that :meth:`score` will meet, in batches, before it is called."""
        for member in (*self.members, self.student):
            member.warm(queries, documents if member is not self.student else ())

    def score(self, query: str, documents: Sequence[str]) -> np.ndarray:
        """Teacher scores of ``documents`` for ``query`` (higher is more relevant)."""
        z = np.mean([m.z(query, documents) for m in self.members], axis=0)
        _, mu, sigma = self.student.query(query)
        return (self.scale * (mu + sigma * z)).astype(np.float32)


def _bi_encoder(name: str) -> bool:
    """Whether ``name`` is a dense bi-encoder (else a reranker is tried)."""
    from embedstack.errors import InvalidInput
    from embedstack.train.embedder_model import check_bi_encoder

    try:
        check_bi_encoder(name)
    except InvalidInput:
        return False
    return True


def teacher_members(spec: str | os.PathLike[str]) -> list[str] | None:
    """The bi-encoders a teacher ``spec`` names (comma-separated), or None when it names one
    cross-encoder; cheap (configs only), so a run checks it before any work.

    Raises:
        InvalidInput: ``spec`` names nothing, or a list names a model that is not a
            bi-encoder.
        ModelNotFound: a named model cannot be found.
    """
    from embedstack.errors import InvalidInput

    text = os.fspath(spec)
    names = [text] if os.path.isdir(text) else [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise InvalidInput(f"teacher {text!r} names no model")
    if len(names) == 1 and not _bi_encoder(names[0]):
        return None
    for name in names:
        if not _bi_encoder(name):
            raise InvalidInput(f"teacher {name!r} is not a bi-encoder: a comma-separated "
                               "teacher is an ensemble of bi-encoders (one cross-encoder "
                               "is named alone)")  # fmt: skip
    return names


def load_teacher(
    spec: str | os.PathLike[str], *, student: str, corpus: Callable[[], list[str]],
    threads: int | None = None, scale: float = 1.0,
) -> Any:  # fmt: skip
    """The teacher ``spec`` names (:func:`teacher_members`): one cross-encoder (a
    :class:`~embedstack.rerank.Reranker` giving raw scores), or one or more bi-encoders (a
    :class:`DenseTeacher` over ``corpus()``, whose vectors are cached where ``embedstack
    pick`` caches them, its scores ``scale`` x the student's cosine scale).

    Raises:
        InvalidInput, ModelNotFound: as :func:`teacher_members`.
    """
    names = teacher_members(spec)
    if names is None:
        from embedstack.rerank import load_reranker

        return load_reranker(os.fspath(spec).strip(), activation="none", threads=threads,
                             show_progress=False)  # fmt: skip
    from embedstack.eval.pick.measure import corpus_vectors
    from embedstack.settings import cache_dir

    cache = cache_dir() / "eval-embeddings"
    return DenseTeacher(
        names,
        corpus(),
        student=student,
        threads=threads,
        scale=scale,
        encode=lambda encoder, texts: corpus_vectors(encoder, list(texts), cache),
    )
