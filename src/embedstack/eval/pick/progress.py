"""Progress of a pick run: rich bars with an ETA on a terminal, log lines otherwise.

``show_progress``: True draws bars, False shows nothing, None (the default) draws bars when
stderr is a terminal and otherwise logs a line at INFO on the ``embedstack.pick`` logger when a
task starts, every :data:`INTERVAL` seconds while it runs (with the estimated time left) and
when it ends, so a long run in a log file never looks like a hang. ``EMBEDSTACK_NO_PROGRESS=1``
turns both off.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from embedstack.settings import progress_enabled

__all__ = ["INTERVAL", "Steps"]

logger = logging.getLogger("embedstack.pick")

INTERVAL = 10.0


class Steps:
    """Counts units of work (documents encoded, queries measured) per task."""

    def __init__(self, show_progress: bool | None) -> None:
        off = os.environ.get("EMBEDSTACK_NO_PROGRESS", "").strip() in {"1", "true", "yes"}
        if off or show_progress is False:
            self.mode = "off"
        else:
            self.mode = "bar" if progress_enabled(show_progress) else "plain"

    @contextmanager
    def task(self, label: str, total: int) -> Iterator[Any]:
        """A task of ``total`` units; yields ``advance(n=1)``."""
        if self.mode == "bar":
            with self._bar(label, total) as bar_advance:
                yield bar_advance
            return
        if self.mode == "off":
            yield lambda n=1: None
            return
        start = time.perf_counter()
        state = {"done": 0, "said": start}
        logger.info("%s: 0/%d", label, total)

        def advance(n: int = 1) -> None:
            state["done"] += n
            now = time.perf_counter()
            if now - state["said"] >= INTERVAL:
                state["said"] = now
                done = state["done"]
                left = (now - start) * (total - done) / max(done, 1)
                logger.info("%s: %d/%d, %.0f s elapsed, ~%.0f s left", label, done, total,
                            now - start, left)  # fmt: skip

        yield advance
        logger.info("%s: %d/%d done in %.1f s", label, total, total, time.perf_counter() - start)

    @contextmanager
    def _bar(self, label: str, total: int) -> Iterator[Any]:
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
