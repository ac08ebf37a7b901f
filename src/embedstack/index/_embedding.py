"""Glue between the pure chunker and an encoder: token offsets, window sizes, chunk texts.

The chunker needs each text's token character offsets. An encoder may offer them through a
``token_offsets(texts) -> list[list[tuple[int, int]]]`` method; otherwise, for an
:class:`~embedstack.encoders.Encoder`, the tokenizer is read from the model folder
(``config.transformer_path / "tokenizer.json"``) without truncation; encoders with no
tokenizer (the hashing encoder) fall back to whitespace tokens.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from embedstack.chunking import ChunkingParams, chunk_spans, effective_window, whitespace_offsets
from embedstack.encoders import TextEncoder

__all__ = ["Chunk", "Chunker"]

_SPECIAL_TOKENS = 2  # [CLS] and [SEP] (or <s> and </s>)
_TITLE_SHARE = 4  # a title takes at most 1/4 of a window
Offsets = list[tuple[int, int]]


@dataclass(frozen=True)
class Chunk:
    """One chunk to embed: ``text[start:end]`` of document ``doc``, embedded as ``embed``."""

    doc: int
    chunk_no: int
    start: int
    end: int
    embed: str


def _tokenizer_offsets(encoder: TextEncoder) -> tuple[Callable[[list[str]], list[Offsets]], str]:
    own = getattr(encoder, "token_offsets", None)
    if callable(own):
        return own, "encoder"
    config = getattr(encoder, "config", None)
    folder = getattr(config, "transformer_path", None)
    if isinstance(folder, Path) and (folder / "tokenizer.json").is_file():
        from tokenizers import Tokenizer

        tok: Any = Tokenizer.from_file(str(folder / "tokenizer.json"))
        tok.no_truncation()
        tok.no_padding()

        def offsets(texts: list[str]) -> list[Offsets]:
            encs = tok.encode_batch(texts, add_special_tokens=False)
            return [[(int(s), int(e)) for s, e in enc.offsets if e > s] for enc in encs]

        return offsets, "tokenizer.json"
    return (lambda texts: [whitespace_offsets(t) for t in texts]), "whitespace"


class Chunker:
    """Splits documents into chunks sized for ``encoder``.

    The window is :func:`~embedstack.chunking.effective_window` of ``params`` and the
    encoder's content limit: ``max_length`` minus 2 special tokens minus the tokens of the
    encoder's document prefix. Each chunk is embedded as ``title + " " + chunk`` — the title
    on *every* chunk, not only the first, because chunks are scored independently (max over
    chunks) and a later chunk without its title loses the document's topic; a single-chunk
    document is then embedded exactly as BEIR's ``title + " " + text``. The title's tokens
    (at most a quarter of the window; a longer title is cut at a token boundary) are taken
    off the window, so nothing is truncated by the encoder.

    Attributes:
        window: effective tokens per window, before subtracting a title.
        overlap: effective overlap.
        tokenizer: ``"encoder"``, ``"tokenizer.json"`` or ``"whitespace"``.
    """

    def __init__(self, encoder: TextEncoder, params: ChunkingParams) -> None:
        self._offsets, self.tokenizer = _tokenizer_offsets(encoder)
        max_length = getattr(encoder, "max_length", None)
        limit = None
        if isinstance(max_length, int) and self.tokenizer != "whitespace":
            prefix = str(getattr(encoder, "document_prefix", "") or "")
            n_prefix = len(self._offsets([prefix])[0]) if prefix.strip() else 0
            limit = max_length - _SPECIAL_TOKENS - n_prefix
        self.window, self.overlap = effective_window(params, limit)

    def chunks(self, titles: Sequence[str], texts: Sequence[str]) -> list[Chunk]:
        """Chunks of every document, in document order."""
        text_offsets = self._offsets(list(texts))
        with_title = [i for i, t in enumerate(titles) if t.strip()]
        title_offsets = dict(zip(with_title, self._offsets([titles[i] for i in with_title]),
                                 strict=True))  # fmt: skip
        out: list[Chunk] = []
        for i, (text, offs) in enumerate(zip(texts, text_offsets, strict=True)):
            prefix, window = "", self.window
            if i in title_offsets:
                t_offs = title_offsets[i][: max(self.window // _TITLE_SHARE, 1)]
                title = titles[i][: t_offs[-1][1]] if t_offs else titles[i].strip()
                prefix = title.strip() + " "
                window = max(self.window - len(t_offs), 1)
            overlap = min(self.overlap, window // 2)
            for no, (s, e) in enumerate(chunk_spans(text, offs, window, overlap)):
                out.append(Chunk(i, no, s, e, prefix + text[s:e]))
        return out
