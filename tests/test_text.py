"""``render_read`` streams chunks and stops early; it must agree with the obvious whole-file rendering."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from agent_backends._text import render_bytes, render_read

PIECES = [b"a", b"bc", b"\n", b"\r\n", b"\r", b"\xc3\xa9", b"\xff", b" "]


def reference(data: bytes, offset: int, limit: int) -> str:
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    if not lines:
        return "(file '/f' is empty)"
    if offset >= len(lines):
        return f"Error: offset {offset} is past the end of '/f', which has {len(lines):,} lines"
    window = lines[offset : offset + limit]
    texts = [line.removesuffix(b"\r").decode(errors="replace") for line in window]
    body = "\n".join(f"{offset + i + 1:>6}\t{text}" for i, text in enumerate(texts))
    rest = len(lines) - offset - len(window)
    return body if rest == 0 else f"{body}\n... [{rest:,} more lines; continue with offset={offset + len(window)}]"


@st.composite
def chunked(draw: st.DrawFn) -> tuple[bytes, list[bytes]]:
    data = b"".join(draw(st.lists(st.sampled_from(PIECES), max_size=300)))
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=12)))
    bounds = [0, *cuts, len(data)]
    return data, [data[a:b] for a, b in itertools.pairwise(bounds)]


@given(chunked(), st.integers(0, 120), st.integers(1, 50))
def test_streamed_rendering_matches_the_reference(sample: tuple[bytes, list[bytes]], offset: int, limit: int) -> None:
    data, chunks = sample
    assert render_read(chunks, path="/f", offset=offset, limit=limit, size=len(data)) == reference(data, offset, limit)


@given(st.binary(max_size=2000) | chunked().map(lambda sample: sample[0]), st.integers(0, 60), st.integers(1, 40))
def test_whole_bytes_rendering_matches_streaming(data: bytes, offset: int, limit: int) -> None:
    streamed = render_read([data[i : i + 7] for i in range(0, len(data), 7)], path="/f", offset=offset, limit=limit,
                           size=len(data))  # fmt: skip
    assert render_bytes(data, path="/f", offset=offset, limit=limit) == streamed


def test_large_remainder_reports_the_bytes_after_the_window_the_same_way() -> None:
    data = b"\xef\xbb\xbf" + b"first\n" + b"y" * 300_000 + b"\n"
    expected = "     1\tfirst\n... [the file continues (300,001 more bytes unread); continue with offset=1]"
    assert render_bytes(data, path="/f", offset=0, limit=1) == expected
    chunks = [data[i : i + 65536] for i in range(0, len(data), 65536)]
    assert render_read(chunks, path="/f", offset=0, limit=1, size=len(data)) == expected
