"""Render the report's blocks as one self-contained HTML page.

Everything is inline: the CSS, the figures (PNG as base64 ``data:`` URIs) and a short
script that, once the page has loaded, draws each image on a canvas and writes how many
painted real pixels (text and lines, not a blank or half-decoded file) into
``<body data-images-loaded>`` (what the Chromium test reads). No external URL appears, so the
page renders the same offline, attached to an e-mail or from a CI artifact. Every string
goes through :func:`html.escape`.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence

from embedstack.eval.report import blocks as bk

__all__ = ["render_html"]

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto;
       max-width: 72rem; padding: 0 1rem; color: #1b1b1b; line-height: 1.45; }
h1 { font-size: 1.6rem; border-bottom: 2px solid #444; padding-bottom: .3rem; }
h2 { font-size: 1.25rem; margin-top: 2rem; border-bottom: 1px solid #ccc; }
h3 { font-size: 1.05rem; }
table { border-collapse: collapse; font-size: .82rem; margin: .6rem 0; }
th, td { border: 1px solid #ccc; padding: .2rem .45rem; text-align: right; }
th { background: #f1f1f1; }
td:nth-child(2), th:nth-child(2) { text-align: left; }
tr.recommended td { background: #fff6cc; font-weight: 600; }
.callout { border-left: 6px solid #c0392b; background: #fdecea; padding: .5rem .8rem;
           margin: .8rem 0; }
.callout strong { color: #a93226; letter-spacing: .03em; }
figure { margin: .5rem 0 1.2rem; }
figure img { max-width: 100%; height: auto; border: 1px solid #ddd; }
pre { background: #f6f6f6; padding: .6rem; overflow-x: auto; }
"""

SCRIPT = """
function painted(img) {
  if (!img.complete || img.naturalWidth === 0) { return 0; }
  var canvas = document.createElement("canvas");
  canvas.width = img.naturalWidth;
  canvas.height = img.naturalHeight;
  var ctx = canvas.getContext("2d");
  ctx.drawImage(img, 0, 0);
  var px = ctx.getImageData(0, 0, canvas.width, canvas.height).data, dark = 0;
  for (var i = 0; i < px.length; i += 4) { if (px[i + 3] > 0 && px[i] < 128) { dark++; } }
  return dark > 100 ? 1 : 0;
}
window.addEventListener("load", function () {
  var n = 0;
  for (var i = 0; i < document.images.length; i++) { n += painted(document.images[i]); }
  document.body.setAttribute("data-images-loaded", String(n));
});
"""


def _e(value: str) -> str:
    return html.escape(value, quote=True)


def _table(block: bk.Table) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in block.headers)
    rows = []
    for row in block.rows:
        marked = ' class="recommended"' if row and row[0] == "★" else ""
        rows.append(f"<tr{marked}>" + "".join(f"<td>{_e(v)}</td>" for v in row) + "</tr>")
    return (
        f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n"
        + "\n".join(rows)
        + ("\n</tbody>\n</table>")
    )


def _block(block: bk.Block) -> str:
    if isinstance(block, bk.Heading):
        return f"<h{block.level}>{_e(block.text)}</h{block.level}>"
    if isinstance(block, bk.Para):
        return f"<p>{_e(block.text)}</p>"
    if isinstance(block, bk.Callout):
        return f'<div class="callout"><strong>{_e(block.label)}</strong> {_e(block.text)}</div>'
    if isinstance(block, bk.Bullets):
        return "<ul>\n" + "\n".join(f"<li>{_e(item)}</li>" for item in block.items) + "\n</ul>"
    if isinstance(block, bk.Table):
        return _table(block)
    if isinstance(block, bk.Figure):
        data = base64.b64encode(block.plot.png or b"").decode("ascii")
        title = _e(block.plot.title)
        return (
            f'<figure><img src="data:image/png;base64,{data}" alt="{title}">'
            f"<figcaption>{title} ({_e(block.plot.file)})</figcaption></figure>"
        )
    if isinstance(block, bk.Code):
        return f"<pre><code>{_e(block.text)}</code></pre>"
    raise TypeError(f"unknown block {block!r}")


def render_html(blocks: Sequence[bk.Block], title: str) -> str:
    """The whole report as one HTML document (UTF-8, no external resources)."""
    images = sum(isinstance(b, bk.Figure) for b in blocks)
    body = "\n".join(_block(b) for b in blocks)
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_e(title)}</title>\n<style>{CSS}</style>\n</head>\n"
        f'<body data-images-expected="{images}">\n{body}\n'
        f"<script>{SCRIPT}</script>\n</body>\n</html>\n"
    )
