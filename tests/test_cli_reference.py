from __future__ import annotations

from pathlib import Path

from embedstack.cli.reference import render

DOC = Path(__file__).resolve().parents[1] / "docs" / "cli.md"


def test_cli_reference_is_current() -> None:
    assert DOC.is_file(), "docs/cli.md is missing: run `make docs`"
    assert DOC.read_text(encoding="utf-8") == render(), "docs/cli.md is stale: run `make docs`"
