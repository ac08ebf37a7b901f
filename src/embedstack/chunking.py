"""Token-aware chunking of documents into overlapping windows with character spans.

Pure Python, no I/O and no model: the caller supplies each text's token offsets (from the
encoder's tokenizer, or :func:`whitespace_offsets` when there is none) and gets back
character spans ``(start, end)`` into the text, so every chunk can be shown, highlighted and
re-embedded exactly.

Windows hold at most ``max_tokens`` tokens and consecutive windows share ``overlap`` tokens,
the sliding-window scheme of passage retrieval (Callan 1994, "Passage-level evidence in
document retrieval"; the 100-word passages of Karpukhin et al. 2020, DPR). A window that
does not reach the end of the text prefers to stop at a sentence end (``.``, ``!``, ``?`` or
a newline) found in its last quarter, so chunks rarely cut a sentence in two.

Example:
    >>> text = "One two three. Four five six. Seven eight."
    >>> spans = chunk_spans(text, whitespace_offsets(text), max_tokens=4, overlap=1)
    >>> [text[s:e] for s, e in spans]
    ['One two three.', 'three. Four five six.', 'six. Seven eight.']
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from embedstack.errors import InvalidInput

__all__ = ["ChunkingParams", "chunk_spans", "effective_window", "whitespace_offsets"]

MIN_TOKENS, MAX_TOKENS = 256, 512
_SENTENCE_END = frozenset(".!?")
_WS = re.compile(r"\S+")


@dataclass(frozen=True)
class ChunkingParams:
    """How documents are split into chunks before dense embedding.

    Attributes:
        max_tokens: tokens per window, 256–512 (unless ``allow_any``). 384 by default: long
            enough that most abstracts and paragraphs are a single chunk, short enough to fit
            the 512-token BERT family. The window actually used is capped by the encoder's
            limit, see :func:`effective_window`.
        overlap: tokens shared by consecutive windows, ``0 <= overlap <= max_tokens // 2``;
            48 (1/8 of the default window) keeps a sentence cut at a window edge whole in
            one of the two chunks.
        allow_any: accept any ``max_tokens >= 1`` (tests, experiments).

    Raises:
        InvalidInput: values out of range.
    """

    max_tokens: int = 384
    overlap: int = 48
    allow_any: bool = False

    def __post_init__(self) -> None:
        for name in ("max_tokens", "overlap"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise InvalidInput(f"chunking {name} must be an int, got {value!r}")
        lo = 1 if self.allow_any else MIN_TOKENS
        hi = None if self.allow_any else MAX_TOKENS
        if self.max_tokens < lo or (hi is not None and self.max_tokens > hi):
            raise InvalidInput(
                f"chunking max_tokens must be in [{MIN_TOKENS}, {MAX_TOKENS}], got "
                f"{self.max_tokens} (pass allow_any=True for other sizes)"
            )
        if not 0 <= self.overlap <= self.max_tokens // 2:
            raise InvalidInput(
                f"chunking overlap must be in [0, max_tokens // 2 = {self.max_tokens // 2}], "
                f"got {self.overlap}"
            )


def effective_window(params: ChunkingParams, encoder_limit: int | None) -> tuple[int, int]:
    """The ``(max_tokens, overlap)`` actually used with an encoder reading ``encoder_limit``
    content tokens (its ``max_length`` minus special and prefix tokens), or None if unbounded.

    The window is ``min(max_tokens, encoder_limit)`` so the encoder never silently truncates a
    chunk; all-MiniLM-L6-v2 reads 256 tokens, 254 without ``[CLS]``/``[SEP]``, so its windows
    hold 254 tokens even with the default 384. The overlap shrinks with it to stay at most
    half the window.
    """
    window = params.max_tokens if encoder_limit is None else min(params.max_tokens, encoder_limit)
    if window < 1:
        raise InvalidInput(f"the encoder leaves no room for content tokens ({encoder_limit})")
    return window, min(params.overlap, window // 2)


def whitespace_offsets(text: str) -> list[tuple[int, int]]:
    """Character spans of the whitespace-separated tokens of ``text`` (fallback tokenizer)."""
    return [m.span() for m in _WS.finditer(text)]


def _ends_sentence(text: str, offsets: Sequence[tuple[int, int]], t: int) -> bool:
    """Whether token ``t`` ends a sentence: it ends with . ! ? or a newline follows it."""
    s, e = offsets[t]
    if e > s and text[e - 1] in _SENTENCE_END:
        return True
    nxt = offsets[t + 1][0] if t + 1 < len(offsets) else len(text)
    return "\n" in text[e:nxt]


def chunk_spans(
    text: str, offsets: Sequence[tuple[int, int]], max_tokens: int, overlap: int = 0
) -> list[tuple[int, int]]:
    """Split ``text`` into overlapping token windows.

    Args:
        text: the text.
        offsets: ``(start, end)`` character span of each token in ``text``, in order
            (special tokens excluded).
        max_tokens: tokens per window, ``>= 1``.
        overlap: tokens repeated at the start of the next window, ``0 <= overlap <
            max_tokens``; windows always advance by at least one token.

    Returns:
        ``[(start, end)]`` character spans, from the first token's start to the last
        token's end of each window; ``[(0, len(text))]`` when there are no tokens.

    Raises:
        InvalidInput: ``max_tokens < 1`` or ``overlap`` out of range.
    """
    if max_tokens < 1 or not 0 <= overlap < max(max_tokens, 1):
        raise InvalidInput(f"need max_tokens >= 1 and 0 <= overlap < max_tokens, got "
                           f"{max_tokens}, {overlap}")  # fmt: skip
    n = len(offsets)
    if n == 0:
        return [(0, len(text))]
    spans: list[tuple[int, int]] = []
    i = 0
    while True:
        j = min(i + max_tokens, n)
        if j < n:  # prefer a sentence end in the last quarter of the window
            earliest = i + max(1, (3 * max_tokens) // 4)
            for t in range(j - 1, earliest - 2, -1):
                if _ends_sentence(text, offsets, t):
                    j = t + 1
                    break
        spans.append((offsets[i][0], offsets[j - 1][1]))
        if j >= n:
            return spans
        i = max(j - overlap, i + 1)
