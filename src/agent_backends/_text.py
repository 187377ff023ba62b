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
    "render_bytes",
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
_BULK_BYTES = 4 * 1024 * 1024  # a window bigger than this is rendered line by line, with bounded memory
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
    return head.find(b"\x00", 0, SNIFF_BYTES) != -1 and _utf16_codec(head) is None


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

    @property
    def position(self) -> int:
        """Bytes of the stream before the next unread line."""
        return self.consumed - (len(self._buffer) - self._pos)

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

    def take(self, limit: int, budget: int) -> list[bytes] | None:
        """Up to ``limit`` lines at once (one split), or ``None`` if they do not end within ``budget`` bytes."""
        pieces = [self._buffer[self._pos :]]
        newlines, size = pieces[0].count(b"\n"), len(pieces[0])
        while newlines < limit:
            if size > budget:
                self._buffer, self._pos = b"".join(pieces), 0
                return None
            chunk = self._pull()
            if chunk is None:
                rest = b"".join(pieces)
                self._buffer, self._pos = b"", 0
                if not rest:
                    return []
                parts = rest.split(b"\n")
                if not parts[-1]:
                    parts.pop()
                return parts
            pieces.append(chunk)
            newlines += chunk.count(b"\n")
            size += len(chunk)
        parts = b"".join(pieces).split(b"\n", limit)
        self._buffer, self._pos = parts.pop(), 0
        return parts

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
        """Count the lines left if the rest of the stream is at most ``budget`` bytes, else ``None``."""
        rest = len(self._buffer) - self._pos
        newlines = self._buffer.count(b"\n", self._pos)
        tail = self._buffer[-1:] if rest else b""
        while rest <= budget and (chunk := self._pull()) is not None:
            rest += len(chunk)
            newlines += chunk.count(b"\n")
            tail = chunk[-1:]
        if rest > budget:
            return None
        return newlines + (1 if tail and tail != b"\n" else 0)


# "     1\t", "\n     2\t", ...: each prefix carries the newline that ends the line before it.
_PREFIX_CACHE: list[str] = []
_PREFIX_CACHE_LINES = 20_000


def _numbered(first: int, rows: list[str]) -> str:
    """``rows`` joined ``cat -n`` style from line number ``first``, by interleaving cached prefixes (one join)."""
    end = first + len(rows)
    if end > _PREFIX_CACHE_LINES:
        return "\n".join(f"{n:>6}\t{row}" for n, row in enumerate(rows, first))
    if len(_PREFIX_CACHE) < end:
        _PREFIX_CACHE.extend(f"\n{n:>6}\t" for n in range(len(_PREFIX_CACHE) + 1, end + 1))
    parts = [""] * (2 * len(rows))
    parts[0::2] = _PREFIX_CACHE[first - 1 : end - 1]
    parts[1::2] = rows
    if parts:
        parts[0] = parts[0][1:]  # the first line has no line before it to end
    return "".join(parts)


def _clean_rows(text: str) -> list[str]:
    """Decoded lines as shown: no trailing ``\\r``, over-long lines cut."""
    rows = text.split("\n")
    if "\r" in text:
        rows = [row[:-1] if row.endswith("\r") else row for row in rows]
    if len(text) > MAX_LINE_CHARS and max(map(len, rows)) > MAX_LINE_CHARS:
        rows = [clip_line(row) for row in rows]
    return rows


def _bulk_rows(raw: list[bytes]) -> list[str]:
    """Whole lines at once: one decode, one split (a newline byte never occurs inside UTF-8 sequences)."""
    return _clean_rows(b"\n".join(raw).decode(errors="replace")) if raw else []


def _row(raw: bytes, dropped: int) -> str:
    if raw.endswith(b"\r") and not dropped:
        raw = raw[:-1]
    return clip_line(raw.decode(errors="replace"), dropped)


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
        size = None if size is None else size - 3
    lines = _Lines(_chain(head, iterator))
    number = lines.skip(offset)
    first = number + 1
    bulk = lines.take(limit, _BULK_BYTES)
    shown: list[str]
    if bulk is not None:
        shown = _bulk_rows(bulk)
    else:  # a window with over-long lines: line by line, keeping only each line's head
        shown = []
        while len(shown) < limit and (item := lines.next_line()) is not None:
            shown.append(_row(*item))
    number += len(shown)
    if not shown:
        if number == 0:
            return f"(file '{path}' is empty)"
        return f"Error: offset {offset} is past the end of '{path}', which has {number:,} lines"
    rest_bytes = None if size is None else size - lines.position
    # With the size known, a large rest is not read at all; otherwise it is counted up to the budget.
    rest = None if rest_bytes is not None and rest_bytes > _LOOKAHEAD_BYTES else lines.count_rest(_LOOKAHEAD_BYTES)
    return _with_note(_numbered(first, shown), len(shown), offset, rest, rest_bytes)


def _with_note(body: str, shown: int, offset: int, rest_lines: int | None, rest_bytes: int | None) -> str:
    """The window, then what follows: the exact line count when the rest is at most 256 KiB, else its size."""
    next_offset = offset + shown
    if rest_lines == 0:
        return body
    if rest_lines is not None:
        return f"{body}\n... [{rest_lines:,} more lines; continue with offset={next_offset}]"
    unread = f"{rest_bytes:,} more bytes" if rest_bytes is not None else "more lines"
    return f"{body}\n... [the file continues ({unread} unread); continue with offset={next_offset}]"


def render_bytes(data: bytes, *, path: str, offset: int, limit: int) -> str:
    """``render_read`` for a file already in memory: the same output, without streaming's per-call overhead."""
    if offset < 0 or limit < 1 or data.find(b"\x00", 0, SNIFF_BYTES) != -1 or _utf16_codec(data) is not None:
        return render_read((data,), path=path, offset=offset, limit=limit, size=len(data))
    if offset == 0 and data.count(b"\n") < limit and not data.startswith(codecs.BOM_UTF8):
        # The whole file fits the window: decode once, split once, nothing follows it.
        if not data:
            return f"(file '{path}' is empty)"
        text = data.decode(errors="replace")
        return _numbered(1, _clean_rows(text[:-1] if text.endswith("\n") else text))
    bom = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    lines = data[bom:].split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    if not lines:
        return f"(file '{path}' is empty)"
    if offset >= len(lines):
        return f"Error: offset {offset} is past the end of '{path}', which has {len(lines):,} lines"
    end = min(offset + limit, len(lines))
    body = _numbered(offset + 1, _bulk_rows(lines[offset:end]))
    rest_bytes = max(len(data) - bom - sum(map(len, lines[:end])) - end, 0)  # each shown line and its newline
    rest_lines = len(lines) - end if rest_bytes <= _LOOKAHEAD_BYTES else None
    return _with_note(body, end - offset, offset, rest_lines, rest_bytes)


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
