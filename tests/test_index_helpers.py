"""Shared helpers of the index tests (no tests here): small corpora, a counting encoder."""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from embedstack import HashEncoder
from embedstack.index import ChunkingParams, Index

SMALL_CHUNKS = ChunkingParams(max_tokens=16, overlap=4, allow_any=True)

WORDS = (
    "protein cell gene cancer tumour therapy patient study mouse rna dna virus vaccine "
    "immune response brain neuron heart blood insulin diabetes obesity diet exercise sleep "
    "stress memory learning signal pathway receptor enzyme kinase mutation genome trial"
).split()


def corpus(n: int, seed: int = 0, prefix: str = "d") -> list[dict[str, Any]]:
    """Synthetic documents with titles, multi-sentence texts and metadata."""
    rng = np.random.default_rng(seed)
    docs = []
    for i in range(n):
        sentences = []
        for _ in range(int(rng.integers(1, 6))):
            words = rng.choice(WORDS, size=int(rng.integers(3, 12)))
            sentences.append(" ".join(words).capitalize() + ".")
        docs.append(
            {
                "id": f"{prefix}{i}",
                "title": " ".join(rng.choice(WORDS, size=2)) if i % 3 else "",
                "text": " ".join(sentences) + f" uniq{prefix}{i}",
                "metadata": {
                    "year": 2000 + i % 25,
                    "lang": ["en", "de", "fr"][i % 3],
                    "tags": [f"t{i % 4}", f"t{i % 5}"],
                },
            }
        )
    return docs


class CountingEncoder:
    """A HashEncoder that counts the documents it embeds."""

    def __init__(self, dim: int = 64, name: str = "counting") -> None:
        self.inner = HashEncoder(dim, name=name)
        self.embedded: list[str] = []

    name = property(lambda self: self.inner.name)
    model_id = property(lambda self: self.inner.model_id)
    dim = property(lambda self: self.inner.dim)

    def encode(self, texts: Iterable[str]) -> np.ndarray:
        return self.inner.encode(texts)

    def encode_queries(self, texts: Iterable[str]) -> np.ndarray:
        return self.inner.encode_queries(texts)

    def encode_documents(self, texts: Iterable[str]) -> np.ndarray:
        items = list(texts)
        self.embedded += items
        return self.inner.encode_documents(items)


def snapshot(path: Path) -> dict[str, str]:
    """Hashes of every file, SQLite by its logical content (checkpoints move its bytes)."""
    out = {
        str(f.relative_to(path)): hashlib.sha256(f.read_bytes()).hexdigest()
        for f in sorted(path.rglob("*"))
        if f.is_file() and not f.name.startswith("docs.sqlite")
    }
    conn = sqlite3.connect(path / "docs.sqlite")
    try:
        dump = "\n".join(line for line in conn.iterdump() if "schema_migrations" not in line)
    finally:
        conn.close()
    out["docs.sqlite"] = hashlib.sha256(dump.encode()).hexdigest()
    return out


def results(
    idx: Index, queries: list[str], mode: str, k: int = 10
) -> list[list[tuple[str, float]]]:
    return [
        [(h.doc_id, h.score) for h in hits] for hits in idx.search_many(queries, mode=mode, k=k)
    ]
