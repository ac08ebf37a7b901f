"""Render the CLI reference (docs/cli.md) from the commands' own ``--help``.

``make docs`` writes it; ``tests/test_cli_reference.py`` fails when it is stale, so the
reference can never drift from the code.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import typer

__all__ = ["render", "write"]

WIDTH = 100


def _commands(group: Any, prefix: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    ctx = typer.Context(group, info_name="embedstack")
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        if command is None or command.hidden:
            continue
        yield (*prefix, name), command
        if hasattr(command, "list_commands"):
            yield from _commands(command, (*prefix, name))


def _help(path: tuple[str, ...]) -> str:
    from typer.testing import CliRunner

    from embedstack.cli import app

    env = {
        "COLUMNS": str(WIDTH),
        "NO_COLOR": "1",
        "TERM": "dumb",
        "_TYPER_FORCE_DISABLE_TERMINAL": "1",
    }
    result = CliRunner().invoke(app, [*path, "--help"], env=env, terminal_width=WIDTH)
    lines = [line.rstrip() for line in result.output.splitlines()]
    return "\n".join(lines).strip("\n")


def render() -> str:
    """The Markdown reference of every command."""
    from embedstack.cli import app

    root = typer.main.get_command(app)
    parts = [
        "# CLI reference",
        "",
        "Generated from `--help` by `make docs` (`python -m embedstack.cli.reference`); a test",
        "fails when it is stale.",
        "",
        "## embedstack",
        "",
        "```",
        _help(()),
        "```",
    ]
    for path, _command in _commands(root):
        parts += ["", f"## embedstack {' '.join(path)}", "", "```", _help(path), "```"]
    return "\n".join(parts) + "\n"


def write(path: Path) -> None:
    """Write the reference to ``path``."""
    path.write_text(render(), encoding="utf-8")


if __name__ == "__main__":
    os.environ.setdefault("COLUMNS", str(WIDTH))
    write(Path("docs/cli.md"))
