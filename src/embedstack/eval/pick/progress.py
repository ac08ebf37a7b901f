"""Progress of a pick run: rich bars with an ETA on a terminal, a log line per step otherwise.

``show_progress=None`` means "bars when stderr is a terminal"; ``EMBEDSTACK_NO_PROGRESS=1``
turns bars off everywhere (:func:`embedstack.settings.progress_enabled`). Without bars each
finished step is logged at INFO on the ``embedstack`` logger, which the CLI shows.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from embedstack.settings import progress_enabled

__all__ = ["Steps"]

logger = logging.getLogger("embedstack")


class Steps:
    """Counts units of work (documents encoded, queries measured) per task."""

    def __init__(self, show_progress: bool | None) -> None:
        self.enabled = progress_enabled(show_progress)
        self._bar: Any = None

    @contextmanager
    def task(self, label: str, total: int) -> Iterator[Any]:
        """A task of ``total`` units; yields ``advance(n)``."""
        start = time.perf_counter()
        if not self.enabled:
            yield lambda n=1: None
            logger.info("%s: %d done in %.1f s", label, total, time.perf_counter() - start)
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            transient=True,
        ) as bar:
            handle = bar.add_task(label, total=total)
            yield lambda n=1: bar.advance(handle, n)
