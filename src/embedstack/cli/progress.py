"""Progress of long CLI work: a rich bar on a terminal, plain periodic lines otherwise.

When stderr is not a terminal (a log file, CI, a pipe) a bar would be noise, but silence for
minutes looks like a hang: a line such as ``indexing: 12/424 documents (1.2/5.0 MB), 30s
elapsed`` goes to stderr when the work starts, every ``EMBEDSTACK_PROGRESS_INTERVAL`` seconds
(default 10) while it runs, even in the middle of one long batch, and when it ends.
``EMBEDSTACK_NO_PROGRESS=1`` turns both off.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import Any

__all__ = ["Progress", "progress_interval"]

DEFAULT_INTERVAL = 10.0


def progress_interval() -> float:
    """Seconds between plain progress lines (``EMBEDSTACK_PROGRESS_INTERVAL``, default 10)."""
    raw = os.environ.get("EMBEDSTACK_PROGRESS_INTERVAL", "")
    try:
        value = float(raw)
    except ValueError:
        return DEFAULT_INTERVAL
    return value if value > 0 else DEFAULT_INTERVAL


def _mb(chars: int) -> str:
    return f"{chars / 1e6:.1f}"


class Progress:
    """Context manager counting documents (and characters) through a long write.

    Args:
        total: documents expected.
        chars: characters expected (the plain lines show megabytes too).
        label: what is being done, e.g. ``"indexing"``.
        console: the rich console for the bar (stderr).
    """

    def __init__(self, total: int, chars: int = 0, *, label: str = "indexing",
                 console: Any = None) -> None:  # fmt: skip
        from embedstack.settings import progress_enabled

        off = os.environ.get("EMBEDSTACK_NO_PROGRESS", "").strip() in {"1", "true", "yes"}
        self.mode = "off" if off else ("bar" if progress_enabled(None) else "plain")
        self.total, self.chars, self.label, self.console = total, chars, label, console
        self.done = 0
        self.done_chars = 0
        self._start = time.perf_counter()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._bar: Any = None
        self._task: Any = None

    def line(self) -> str:
        """The plain progress line as of now."""
        elapsed = time.perf_counter() - self._start
        size = f" ({_mb(self.done_chars)}/{_mb(self.chars)} MB)" if self.chars else ""
        text = f"{self.label}: {self.done}/{self.total} documents{size}, {elapsed:.0f}s elapsed"
        if 0 < self.done < self.total:
            left = elapsed * (self.total - self.done) / self.done
            text += f", ~{left:.0f}s left"
        return text

    def _say(self, text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    def _beat(self) -> None:
        interval = progress_interval()
        while not self._stop.wait(interval):
            self._say(self.line())

    def __enter__(self) -> Progress:
        self._start = time.perf_counter()
        if self.mode == "plain":
            self._say(self.line())
            self._thread = threading.Thread(target=self._beat, name="progress", daemon=True)
            self._thread.start()
        elif self.mode == "bar":
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                TextColumn,
                TimeRemainingColumn,
            )
            from rich.progress import Progress as Bar

            self._bar = Bar(
                TextColumn(self.label),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]} docs/s"),
                TimeRemainingColumn(),
                console=self.console,
            )
            self._bar.__enter__()
            self._task = self._bar.add_task(self.label, total=self.total, rate="-")
        return self

    def advance(self, docs: int, chars: int = 0) -> None:
        """Count ``docs`` more documents (of ``chars`` characters) as done."""
        self.done += docs
        self.done_chars += chars
        if self._bar is not None:
            rate = self.done / max(time.perf_counter() - self._start, 1e-9)
            self._bar.update(self._task, advance=docs, rate=f"{rate:.0f}")

    def __exit__(self, *exc: object) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._say(self.line())
        if self._bar is not None:
            self._bar.__exit__(*exc)
