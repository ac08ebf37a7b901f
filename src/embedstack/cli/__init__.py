"""Command-line interface (typer + rich): parses, calls the library, formats.

Errors of the library surface as one line on stderr and a non-zero exit code, never a
traceback: 2 for bad input, 3 for a missing model or dependency, 1 for anything else.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

# Importing the command modules registers their commands on `app`.
from embedstack.cli import demo, evaluate, index_cmds, serve, train  # noqa: F401
from embedstack.cli.app import app
from embedstack.errors import (
    EmbedstackError,
    InvalidInput,
    MissingDependency,
    ModelNotFound,
)

__all__ = ["app", "main", "run"]


def _exit_code(error: EmbedstackError) -> int:
    if isinstance(error, InvalidInput):
        return 2
    if isinstance(error, ModelNotFound | MissingDependency):
        return 3
    return 1


def run(argv: Sequence[str] | None = None) -> int:
    """Run the CLI with ``argv`` and return the exit code (what ``main`` exits with)."""
    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stderr)
    try:
        # Standalone mode lets typer report usage errors (exit 2) and --help (exit 0) itself;
        # library errors propagate (pretty exceptions are off) and become one line here.
        app(args=list(argv) if argv is not None else None, standalone_mode=True)
    except SystemExit as done:
        return done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    except EmbedstackError as error:
        print(f"error: {error}", file=sys.stderr)
        return _exit_code(error)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


def main() -> None:
    """Console-script entry point."""
    sys.exit(run())
