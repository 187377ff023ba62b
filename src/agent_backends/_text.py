"""Text semantics shared by every backend: how ``read`` renders a file and how ``edit`` changes one.

Both work on bytes so that a backend only supplies storage. ``render_read`` consumes an iterable of chunks and stops
early, so reading the head of a large file never reads all of it; ``apply_edit`` either round-trips every byte it
does not replace or refuses.
"""

from __future__ import annotations

import codecs
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

__all__ = (
    "MAX_LINE_CHARS",
    "SNIFF_BYTES",
    "EditOutcome",
    "apply_edit",
    "clip_line",
    "decode_text",
    "is_binary",
    "render_read",
)

MAX_LINE_CHARS = 2000
SNIFF_BYTES = 8192
_LOOKAHEAD_BYTES = 256 * 1024
# A line's raw bytes kept before the rest is dropped: enough for MAX_LINE_CHARS of any UTF-8 text.
_LINE_KEEP_BYTES = 4 * MAX_LINE_CHARS + 4
_UTF16_BOMS = ((codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be"))


def _utf16_codec(head: bytes) -> str | None:
    for bom, codec in _UTF16_BOMS:
        if head.startswith(bom):
            return codec
    return None


def is_binary(head: bytes) -> bool:
    """A file is binary when its first 8 KiB hold a NUL byte and it is not UTF-16 with a byte-order mark."""
    return b"\x00" in head[:SNIFF_BYTES] and _utf16_codec(head) is None


def decode_text(data: bytes) -> str | None:
    """A whole file as text for searching, ``None`` when binary (a NUL byte anywhere, as ripgrep skips it).

    UTF-16 with a byte-order mark is decoded (ripgrep transcodes it too); a UTF-8 byte-order mark is dropped.
    """
    codec = _utf16_codec(data)
    if codec is not None:
        return data[2:].decode(codec, errors="replace")
    if b"\x00" in data:
        return None
    return data.removeprefix(codecs.BOM_UTF8).decode(errors="replace")


def clip_line(line: str, dropped_bytes: int = 0) -> str:
    """Cut a line longer than ``MAX_LINE_CHARS`` characters and say how many bytes were cut."""
    if len(line) <= MAX_LINE_CHARS and not dropped_bytes:
        return line
    cut = len(line[MAX_LINE_CHARS:].encode(errors="surrogateescape")) + dropped_bytes
    return f"{line[:MAX_LINE_CHARS]}… [line cut: {cut:,} more bytes]"


class _Lines:
    """Split a chunk stream into lines, keeping at most ``_LINE_KEEP_BYTES`` of any one line.

    A read position moves through the current buffer instead of slicing it per line, so splitting is linear.
    """

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._buffer = b""
        self._pos = 0
        self.consumed = 0

    def _pull(self) -> bytes | None:
        for chunk in self._chunks:
            if chunk:
                self.consumed += len(chunk)
                return chunk
        return None

    def skip(self, count: int) -> int:
        """Skip up to ``count`` lines without decoding them; return how many there were."""
        skipped = 0
        while skipped < count:
            buffer, pos = self._buffer, self._pos
            available = buffer.count(b"\n", pos)
            if available >= count - skipped:
                for _ in range(count - skipped):
                    pos = buffer.index(b"\n", pos) + 1
                self._pos = pos
                return count
            skipped += available
            partial = len(buffer) > (buffer.rfind(b"\n", pos) + 1 if available else pos)
            chunk = self._pull()
            if chunk is None:
                self._buffer, self._pos = b"", 0
                return skipped + partial
            # Only whether the unfinished line has content matters here, not the content itself.
            self._buffer, self._pos = (b"." if partial else b"") + chunk, 0
        return skipped

    def next_line(self) -> tuple[bytes, int] | None:
        """The next line without its ``\\n`` (its head, if over-long) and how many bytes of it were dropped."""
        dropped = 0
        while True:
            cut = self._buffer.find(b"\n", self._pos)
            if cut != -1:
                line, self._pos = self._buffer[self._pos : cut], cut + 1
                break
            pending = self._buffer[self._pos :]
            if len(pending) > _LINE_KEEP_BYTES:
                dropped += len(pending) - _LINE_KEEP_BYTES
                pending = pending[:_LINE_KEEP_BYTES]
            chunk = self._pull()
            if chunk is None:
                if not pending and not dropped:
                    return None
                line, self._buffer, self._pos = pending, b"", 0
                break
            self._buffer, self._pos = pending + chunk, 0
        if len(line) > _LINE_KEEP_BYTES:
            dropped += len(line) - _LINE_KEEP_BYTES
            line = line[:_LINE_KEEP_BYTES]
        return line, dropped

    def count_rest(self, budget: int) -> int | None:
        """Count the lines left if they end within ``budget`` more bytes; ``None`` if more than that follows."""
        newlines = self._buffer.count(b"\n", self._pos)
        tail = self._buffer[self._pos :][-1:]
        spent = 0
        while (chunk := self._pull()) is not None:
            if spent >= budget:
                return None
            spent += len(chunk)
            newlines += chunk.count(b"\n")
            tail = chunk[-1:]
        return newlines + (1 if tail and tail != b"\n" else 0)


def _render_line(number: int, raw: bytes, dropped: int) -> str:
    if raw.endswith(b"\r") and not dropped:
        raw = raw[:-1]
    return f"{number:>6}\t{clip_line(raw.decode(errors='replace'), dropped)}"


def render_read(chunks: Iterable[bytes], *, path: str, offset: int, limit: int, size: int | None = None) -> str:
    """Render a file ``cat -n`` style: a 6-column line number, a tab, the line.

    Stops reading once the window is full and the note about what follows is known. The note gives the exact
    number of remaining lines when they end within 256 KiB, else the number of unread bytes (``size`` given).
    """
    if offset < 0:
        return f"Error: offset must be 0 or more, not {offset}"
    if limit < 1:
        return f"Error: limit must be 1 or more, not {limit}"
    iterator = iter(chunks)
    head = b""
    for chunk in iterator:
        head += chunk
        if len(head) >= SNIFF_BYTES:
            break
    if is_binary(head):
        return f"Error: '{path}' is a binary file (it has a NUL byte); read_bytes() returns its raw content"
    codec = _utf16_codec(head)
    if codec is not None:
        head = (head + b"".join(iterator))[2:].decode(codec, errors="replace").encode()
        size = None
    elif head.startswith(codecs.BOM_UTF8):
        head = head[3:]
    lines = _Lines(_chain(head, iterator))
    number = lines.skip(offset)
    shown: list[str] = []
    while len(shown) < limit and (item := lines.next_line()) is not None:
        number += 1
        shown.append(_render_line(number, *item))
    if not shown:
        if number == 0:
            return f"(file '{path}' is empty)"
        return f"Error: offset {offset} is past the end of '{path}', which has {number:,} lines"
    body = "\n".join(shown)
    rest = lines.count_rest(_LOOKAHEAD_BYTES)
    next_offset = offset + len(shown)
    if rest == 0:
        return body
    if rest is not None:
        return f"{body}\n... [{rest:,} more lines; continue with offset={next_offset}]"
    unread = f"{size - lines.consumed:,} more bytes" if size is not None else "more lines"
    return f"{body}\n... [the file continues ({unread} unread); continue with offset={next_offset}]"


def _chain(first: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    yield first
    yield from rest


@dataclass(frozen=True, slots=True)
class EditOutcome:
    """What ``apply_edit`` decided: the new bytes and how many replacements, or an error for the model."""

    content: bytes = b""
    occurrences: int = 0
    error: str | None = None


def _to_crlf(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\n", "\r\n")


def _decode_for_edit(data: bytes, path: str) -> tuple[str, str, bytes] | str:
    """(text, codec, prefix) such that ``prefix + text.encode(codec, 'surrogateescape') == data``, or an error."""
    codec = _utf16_codec(data)
    if codec is not None:
        try:
            return data[2:].decode(codec), codec, data[:2]
        except UnicodeDecodeError as exc:
            return f"Error: '{path}' has a UTF-16 byte-order mark but is not valid UTF-16 ({exc.reason})"
    if is_binary(data):
        return f"Error: '{path}' is a binary file (it has a NUL byte); edit only changes text files"
    return data.decode("utf-8", errors="surrogateescape"), "utf-8", b""


def _has_surrogates(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return True
    return False


def apply_edit(data: bytes, old: str, new: str, *, replace_all: bool, path: str) -> EditOutcome:
    """Replace exact occurrences of ``old`` with ``new`` in ``data``, keeping line endings and undecodable bytes.

    An ``old`` written with ``\\n`` matches a CRLF file (and ``new`` is written with CRLF). Bytes that are not
    valid UTF-8 are carried through unchanged; text around them can still be edited, but never re-encoded.
    """
    if not old:
        return EditOutcome(error="Error: old_string is empty; to create or replace a whole file use write")
    if old == new:
        return EditOutcome(error="Error: old_string and new_string are identical; nothing to change")
    if _has_surrogates(old) or _has_surrogates(new):
        return EditOutcome(error="Error: old_string and new_string must be valid Unicode text")
    decoded = _decode_for_edit(data, path)
    if isinstance(decoded, str):
        return EditOutcome(error=decoded)
    text, codec, prefix = decoded
    count = text.count(old)
    if count == 0 and "\n" in old and "\r\n" in text:
        crlf_old = _to_crlf(old)
        count = text.count(crlf_old)
        if count:
            old, new = crlf_old, _to_crlf(new)
    if count == 0:
        hint = ""
        if codec == "utf-8" and _has_surrogates(text):
            hint = " (the file is not valid UTF-8; text touching its undecodable bytes cannot be matched)"
        return EditOutcome(error=f"Error: old_string was not found in '{path}'{hint}")
    if count > 1 and not replace_all:
        return EditOutcome(
            error=f"Error: old_string occurs {count} times in '{path}'; include more surrounding text to make it "
            "unique, or pass replace_all=True to replace every occurrence"
        )
    replaced = text.replace(old, new) if replace_all else text.replace(old, new, 1)
    return EditOutcome(prefix + replaced.encode(codec, errors="surrogateescape"), count)
