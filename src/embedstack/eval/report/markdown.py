"""Render the report's blocks as Markdown (GitHub flavour); images link the PNG files."""

from __future__ import annotations

import html
from collections.abc import Sequence

from embedstack.eval.report import blocks as bk

__all__ = ["render_markdown"]


def _text(value: str) -> str:
    """Plain text made inert: HTML-escaped (``<script>`` stays text in any renderer) and on
    one line."""
    return " ".join(html.escape(value, quote=False).split())


def _cell(value: str) -> str:
    return _text(value).replace("|", "\\|") or " "


def _block(block: bk.Block) -> str:
    if isinstance(block, bk.Heading):
        return f"{'#' * block.level} {_text(block.text)}"
    if isinstance(block, bk.Para):
        return _text(block.text)
    if isinstance(block, bk.Callout):
        return f"> **{_text(block.label)}** {_text(block.text)}"
    if isinstance(block, bk.Bullets):
        return "\n".join(f"- {_text(item)}" for item in block.items)
    if isinstance(block, bk.Table):
        lines = [
            "| " + " | ".join(_cell(h) for h in block.headers) + " |",
            "|" + "|".join("---" for _ in block.headers) + "|",
        ]
        lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in block.rows]
        return "\n".join(lines)
    if isinstance(block, bk.Figure):
        return f"![{_text(block.plot.title)}]({block.plot.file})"
    if isinstance(block, bk.Code):
        fence = "```"
        while fence in block.text:
            fence += "`"
        return f"{fence}bash\n{block.text}\n{fence}"
    raise TypeError(f"unknown block {block!r}")


def render_markdown(blocks: Sequence[bk.Block]) -> str:
    """The whole report as Markdown text, ending with one newline."""
    return "\n\n".join(_block(b) for b in blocks) + "\n"
