"""The :class:`Reranker` protocol served by ``/v1/rerank``, and a registry of reranker names.

Anything with a ``name`` and a ``score(query, documents)`` method can be served: register a
factory under a name (:func:`register_reranker`) and list that name in
``ServerSettings.rerankers``. Names that are not registered are handed to the library's
``embedstack.rerank.load_reranker`` (cross-encoders by name or folder);
:func:`resolve_reranker` does both, in that order.

Example:
    >>> import numpy as np
    >>> class Overlap:
    ...     name = "overlap"
    ...     def score(self, query, documents):
    ...         q = set(query.lower().split())
    ...         return np.array([len(q & set(d.lower().split())) for d in documents], "float32")
    >>> register_reranker("overlap", Overlap)
    >>> get_reranker_factory("overlap")().score("a cat", ["the cat", "a dog"]).tolist()
    [1.0, 1.0]
    >>> unregister_reranker("overlap")
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from embedstack.errors import ModelNotFound

__all__ = [
    "Reranker",
    "get_reranker_factory",
    "register_reranker",
    "registered_rerankers",
    "resolve_reranker",
    "unregister_reranker",
]


@runtime_checkable
class Reranker(Protocol):
    """Scores documents against a query; higher means more relevant.

    Implementations must be safe to call from one worker thread at a time (the server
    never calls one reranker concurrently).
    """

    @property
    def name(self) -> str:
        """Name reported in responses."""
        ...

    def score(self, query: str, documents: Sequence[str]) -> np.ndarray:
        """Relevance of each document to ``query``.

        Args:
            query: A non-blank query.
            documents: Non-blank documents, in request order.

        Returns:
            ``(len(documents),) float32`` scores, any scale, higher is better.
        """
        ...


_LOCK = threading.Lock()
_FACTORIES: dict[str, Callable[[], Reranker]] = {}


def register_reranker(name: str, factory: Callable[[], Reranker]) -> None:
    """Make ``name`` loadable by the server; ``factory`` is called once, on first use.

    Registering a name again replaces its factory.
    """
    with _LOCK:
        _FACTORIES[name] = factory


def unregister_reranker(name: str) -> None:
    """Forget ``name`` (no error when it was not registered)."""
    with _LOCK:
        _FACTORIES.pop(name, None)


def registered_rerankers() -> list[str]:
    """Names of registered rerankers, sorted."""
    with _LOCK:
        return sorted(_FACTORIES)


def get_reranker_factory(name: str) -> Callable[[], Reranker]:
    """The factory registered under ``name``.

    Raises:
        ModelNotFound: ``name`` is not registered (the message lists what is).
    """
    with _LOCK:
        factory = _FACTORIES.get(name)
    if factory is None:
        known = ", ".join(registered_rerankers()) or "none"
        raise ModelNotFound(f"unknown reranker {name!r}; registered rerankers: {known}")
    return factory


def resolve_reranker(source: str) -> Callable[[], Reranker]:
    """The factory for ``source``: the registered one, else the library's loader.

    Nothing is loaded here; the server calls the factory once, on a worker thread.

    Args:
        source: A name registered with :func:`register_reranker`, or anything
            ``embedstack.rerank.load_reranker`` accepts (a model name or a folder).

    The factory raises ``ModelNotFound`` when ``source`` is neither registered nor a
    model ``load_reranker`` can find.
    """
    with _LOCK:
        factory = _FACTORIES.get(source)
    if factory is not None:
        return factory

    def load() -> Reranker:
        from embedstack.rerank import load_reranker  # looked up now: tests may wrap it

        reranker: Reranker = load_reranker(source, show_progress=False)
        return reranker

    return load
