"""Grep semantics shared by every backend: what a pattern may be, and how matches are capped and sorted.

Patterns use ripgrep's syntax. Backends without ripgrep run Python's ``re`` on the common subset and refuse what
ripgrep refuses (look-around, back-references), so one pattern never means two things. Matching is per line; a
trailing ``\\r`` is not part of the line (ripgrep's ``--crlf``).
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterable

from agent_backends import _text
from agent_backends.types import GrepMatch, GrepMatches

__all__ = ("DEFAULT_MAX_MATCHES", "MatchCollector", "compile_pattern", "search_lines")

DEFAULT_MAX_MATCHES = 1000

_LOOKAROUND = re.compile(r"\(\?<?[=!]")
_BACKREF = re.compile(r"\\[1-9]|\(\?P=")


def _strip_classes(pattern: str) -> str:
    """The pattern with escapes and ``[...]`` bodies blanked, so structure checks do not see their contents."""
    out: list[str] = []
    i, n, in_class = 0, len(pattern), False
    while i < n:
        ch = pattern[i]
        if ch == "\\" and i + 1 < n:
            out.append(pattern[i : i + 2] if not in_class else "__")
            i += 2
            continue
        if in_class:
            if ch == "]":
                in_class = False
                out.append(ch)
            else:
                out.append("_")
        else:
            if ch == "[":
                in_class = True
            out.append(ch)
        i += 1
    return "".join(out)


def compile_pattern(pattern: str) -> re.Pattern[str] | str:
    """Compile a ripgrep-syntax pattern with Python's ``re``, or return an ``"Error: ..."`` for the model."""
    structure = _strip_classes(pattern)
    if _LOOKAROUND.search(structure):
        return f"Error: invalid regex {pattern!r}: look-around is not supported (ripgrep syntax)"
    if _BACKREF.search(structure):
        return f"Error: invalid regex {pattern!r}: back-references are not supported (ripgrep syntax)"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return re.compile(pattern)
    except re.error as exc:
        return f"Error: invalid regex {pattern!r}: {exc}"


def search_lines(regex: re.Pattern[str], text: str) -> Iterable[tuple[int, str]]:
    """Yield ``(line_number, line)`` for each line of ``text`` that ``regex`` matches."""
    search = regex.search
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()  # a final newline ends the last line; it does not start another
    for number, line in enumerate(lines, 1):
        if line.endswith("\r"):
            line = line[:-1]
        if search(line) is not None:
            yield number, line


class MatchCollector:
    """Keeps the first ``cap`` matches in (path, line) order while counting all, in O(cap) memory."""

    def __init__(self, cap: int | None = DEFAULT_MAX_MATCHES) -> None:
        self._cap = cap
        self._items: list[tuple[str, int, str]] = []
        self._cutoff: str | None = None  # no kept match has a path after this one (stale-high between compactions)
        self.total = 0

    def add(self, path: str, line_number: int, line: str) -> None:
        self.total += 1
        self._items.append((path, line_number, line))
        if self._cap is not None and len(self._items) >= 2 * self._cap + 64:
            self._items.sort()
            del self._items[self._cap :]
            self._cutoff = self._items[-1][0]

    def wants(self, path: str) -> bool:
        """Whether matches in ``path`` can still be among the kept ones; if not, only ``count`` them."""
        return self._cutoff is None or path <= self._cutoff

    def count(self, matches: int) -> None:
        """Count matches that cannot be kept."""
        self.total += matches

    def extend(self, items: Iterable[tuple[str, int, str]]) -> None:
        for item in items:
            self.add(*item)

    def result(self) -> GrepMatches:
        self._items.sort()
        if self._cap is not None:
            del self._items[self._cap :]
        limit, clip = _text.MAX_LINE_CHARS, _text.clip_line
        matches = [GrepMatch(path=p, line_number=n, line=s if len(s) <= limit else clip(s)) for p, n, s in self._items]
        return GrepMatches(matches, total=self.total)
