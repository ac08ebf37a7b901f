"""Command-line interface (typer + rich): parses, calls the library, formats.

Errors of the library surface as one line on stderr and a documented exit code, never a
traceback (see :mod:`embedstack.cli.errors`): 2 for a user error, 3 for a missing model or
dependency, 1 for anything else, 130 when interrupted.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

# Importing the command modules registers their commands on `app`.
from embedstack.cli import (  # noqa: F401
    demo,
    distill,
    evaluate,
    index_cmds,
    pick,
    report,
    rotate,
    search,
    serve,
    train,
)
from embedstack.cli.app import app
from embedstack.cli.errors import EXIT_INTERRUPTED, exit_code, message
from embedstack.errors import EmbedstackError

__all__ = ["app", "main", "run"]


def run(argv: Sequence[str] | None = None) -> int:
    """Run the CLI with ``argv`` and return the exit code (what ``main`` exits with)."""
    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stderr)
    try:
        # Standalone mode lets typer report usage errors (exit 2) and --help (exit 0) itself;
        # library errors propagate (pretty exceptions are off) and become one line here.
        app(args=list(argv) if argv is not None else None, standalone_mode=True)
    except SystemExit as done:
        return done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    except (EmbedstackError, OSError) as error:
        print(f"error: {message(error)}", file=sys.stderr)
        return exit_code(error)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0


def main() -> None:
    """Console-script entry point."""
    sys.exit(run())
