"""The contract suite's backends: names, documented differences, and one index target.

See ``conftest.py`` for the fixtures; tests import these names from here (a module of its
own, so that ``conftest`` never names two files).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from embedstack import HashEncoder
from embedstack.index import Index

#: backend name -> fixture returning ``() -> str``, a fresh target for a new index.
BACKENDS: dict[str, str] = {
    "local": "local_target",
    "postgresql": "pg_target",
    "milvus": "milvus_target",
}

#: backend -> {difference name: what differs}. Tests that meet a difference call
#: ``differs(backend, name)`` and assert the documented behaviour instead.
DIFFERENCES: dict[str, dict[str, str]] = {
    "postgresql": {
        "precision": "float32 vectors only (pgvector 'vector'); int8/binary are refused",
        "colbert": "no ColBERT vectors (colbert= refused); SPLADE postings (sparse=) are "
        "stored in a table and scored by SQL (pgvector 0.6 has no sparsevec)",
        "n_deleted": "dead rows are reclaimed by (auto)vacuum: stats().n_deleted is always 0",
        "nul": "a NUL character in a document is InvalidInput (PostgreSQL text cannot hold it)",
    },
    "milvus": {
        "precision": "float32 vectors only (Milvus FLOAT_VECTOR); int8/binary are refused",
        "colbert": "no ColBERT vectors (colbert= refused); SPLADE postings (sparse=) are a "
        "SPARSE_FLOAT_VECTOR field of the chunks",
        "n_deleted": "Milvus compacts deleted rows on its own: stats().n_deleted is always 0",
    },
}

DIM = 64


def encoder() -> HashEncoder:
    """The suite's encoder: 64-d feature hashing (fast, deterministic)."""
    return HashEncoder(DIM)


def differs(backend: str, name: str) -> bool:
    """Whether ``backend`` has the documented difference ``name``."""
    return name in DIFFERENCES.get(backend, {})


@dataclass
class Backend:
    """One backend under test, with one fresh target for its index."""

    name: str
    target: str
    make: Callable[[], str] | None = None
    opened: list[Index] = field(default_factory=list)

    def fresh(self) -> Backend:
        """Another target on the same backend (its indexes closed with this one's)."""
        assert self.make is not None
        other = Backend(self.name, self.make(), self.make, self.opened)
        return other

    def create(self, **kwargs: Any) -> Index:
        kwargs.setdefault("encoder", encoder())
        idx = Index.create(self.target, **kwargs)
        self.opened.append(idx)
        return idx

    def open(self, **kwargs: Any) -> Index:
        kwargs.setdefault("encoder", encoder())
        idx = Index.open(self.target, **kwargs)
        self.opened.append(idx)
        return idx
