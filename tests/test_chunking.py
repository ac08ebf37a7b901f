"""Chunking: token windows, overlap, sentence boundaries, spans, effective window."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from embedstack.chunking import ChunkingParams, chunk_spans, effective_window, whitespace_offsets
from embedstack.errors import InvalidInput


def test_single_window_when_short() -> None:
    text = "  a short text  "
    assert chunk_spans(text, whitespace_offsets(text), max_tokens=10) == [(2, 14)]
    assert chunk_spans("", [], max_tokens=4) == [(0, 0)]


def test_windows_overlap_and_cover() -> None:
    text = " ".join(f"w{i}" for i in range(20))
    offs = whitespace_offsets(text)
    spans = chunk_spans(text, offs, max_tokens=6, overlap=2)
    words = [text[s:e].split() for s, e in spans]
    assert all(len(w) <= 6 for w in words)
    assert words[0][-2:] == words[1][:2]  # overlap of 2 tokens
    assert words[-1][-1] == "w19" and words[0][0] == "w0"


def test_prefers_sentence_end_in_last_quarter() -> None:
    text = "a b c d e f. g h i j k l m n o p"
    spans = chunk_spans(text, whitespace_offsets(text), max_tokens=8, overlap=0)
    assert text[spans[0][0] : spans[0][1]] == "a b c d e f."
    text2 = "a. b c d e f g h i j k"  # the only boundary is too early: cut at the window
    spans2 = chunk_spans(text2, whitespace_offsets(text2), max_tokens=8, overlap=0)
    assert text2[spans2[0][0] : spans2[0][1]] == "a. b c d e f g h"
    text3 = "a b c d e f\ng h i j k l"
    spans3 = chunk_spans(text3, whitespace_offsets(text3), max_tokens=8, overlap=0)
    assert text3[spans3[0][0] : spans3[0][1]] == "a b c d e f"


def test_params_validation() -> None:
    assert ChunkingParams() == ChunkingParams(384, 48)
    with pytest.raises(InvalidInput, match="256"):
        ChunkingParams(max_tokens=100)
    with pytest.raises(InvalidInput, match="overlap"):
        ChunkingParams(max_tokens=300, overlap=200)
    with pytest.raises(InvalidInput):
        ChunkingParams(max_tokens=True)  # type: ignore[arg-type]
    assert ChunkingParams(max_tokens=10, overlap=2, allow_any=True).max_tokens == 10
    with pytest.raises(InvalidInput):
        chunk_spans("a b", [(0, 1), (2, 3)], max_tokens=2, overlap=2)


def test_effective_window_caps_at_encoder_limit() -> None:
    assert effective_window(ChunkingParams(), 254) == (254, 48)  # MiniLM: 256 - 2 specials
    assert effective_window(ChunkingParams(), None) == (384, 48)
    assert effective_window(ChunkingParams(512, 256), 254) == (254, 127)


@settings(max_examples=80, deadline=None)
@given(
    st.lists(st.sampled_from(["x", "yy", "z.", "end!", "q?", "w\n"]), min_size=0, max_size=60),
    st.integers(1, 12),
    st.integers(0, 11),
)
def test_chunk_properties(words: list[str], window: int, overlap: int) -> None:
    overlap = min(overlap, window - 1)
    text = " ".join(words)
    offs = whitespace_offsets(text)
    spans = chunk_spans(text, offs, window, overlap)
    if not offs:
        assert spans == [(0, len(text))]
        return
    starts = {s for s, _ in offs}
    ends = {e for _, e in offs}
    covered = set()
    for s, e in spans:
        assert s in starts and e in ends and s < e  # spans align with tokens
        inside = [i for i, (ts, te) in enumerate(offs) if ts >= s and te <= e]
        assert 1 <= len(inside) <= window
        covered |= set(inside)
    assert covered == set(range(len(offs)))  # every token is in some chunk
    assert [s for s, _ in spans] == sorted({s for s, _ in spans})  # strictly advancing
