"""Grep semantics shared by every backend: what a pattern may be, and how matches are capped and sorted.

Patterns use ripgrep's syntax. Backends without ripgrep run Python's ``re`` on the common subset and refuse what
ripgrep refuses (look-around, back-references, nesting deeper than its limit), so one pattern never means two
things. Matching is per line; a trailing ``\\r`` is not part of the line (ripgrep's ``--crlf``).
"""

from __future__ import annotations

import bisect
import codecs
import functools
import itertools
import operator
import re
import warnings
from collections.abc import Callable, Iterable, Sequence
from functools import lru_cache
from typing import TypeVar, cast

import anyio.to_thread
from pydantic import TypeAdapter

from agent_backends import _text
from agent_backends.exceptions import InvalidArgumentError
from agent_backends.types import GrepMatch, GrepMatches

__all__ = (
    "DEFAULT_MAX_MATCHES",
    "NEST_LIMIT",
    "MatchCollector",
    "clip_echo",
    "compile_pattern",
    "compile_pattern_async",
    "nest_depth",
    "pattern_error",
    "pattern_error_async",
    "search_lines",
)

DEFAULT_MAX_MATCHES = 1000
# ripgrep's (regex-syntax's) default nest limit; ripgrep 14 wraps each pattern in a group, which counts.
NEST_LIMIT = 250
_INLINE_COMPILE_CHARS = 4096  # longer patterns are checked and compiled in a worker thread
_ECHO_CHARS = 120

_LOOKAROUND = re.compile(r"\(\?<?[=!]")
_BACKREF = re.compile(r"\\[1-9]|\(\?P=")


def clip_echo(text: str, limit: int = _ECHO_CHARS) -> str:
    """``repr(text)``, its middle cut when long: an error message must not echo a 200 KB argument back whole."""
    if len(text) <= limit:
        return repr(text)
    head, tail = text[: limit * 2 // 3], text[-(limit // 3) :]
    return f"{head!r}[… {len(text) - len(head) - len(tail):,} more characters …]{tail!r}"


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


# --- ripgrep's nest limit ---------------------------------------------------------------------------------------
# regex-syntax counts the depth of its syntax tree: a group, a repetition, a concatenation of two or more items, an
# alternation, a bracketed class, a class union of two or more items and a class set operation each add a level.
# Computed here without recursion (the pattern may nest thousands deep) and without parsing more than depth needs.

_HEX_WIDTH = {"x": 2, "u": 4, "U": 8}
_HEX = frozenset("0123456789abcdefABCDEF")
_COUNTED = re.compile(r"\{\s*\d+\s*(?:,\s*\d*\s*)?\}")
_ASCII_CLASS = re.compile(r"\[:\^?[a-z]+:\]")
_CLASS_OPS = ("&&", "--", "~~")


def _escape_end(pattern: str, i: int) -> int:
    """The index just past the escape that starts at ``pattern[i]`` (a backslash)."""
    n, j = len(pattern), i + 2
    kind = pattern[i + 1] if i + 1 < n else ""
    if kind and kind in "xuUpP":
        if j < n and pattern[j] == "{":
            close = pattern.find("}", j)
            return n if close == -1 else close + 1
        if kind in "pP":
            return min(j + 1, n)
        end = min(j + _HEX_WIDTH[kind], n)
        while j < end and pattern[j] in _HEX:
            j += 1
    return min(j, n)


class _Concat:
    """One open group: the deepest finished branch, and the items of the branch being read."""

    __slots__ = ("before", "best", "branches", "items", "last")

    def __init__(self) -> None:
        self.best = self.branches = self.items = self.before = self.last = 0

    def add(self, depth: int) -> None:
        if self.items:
            self.before = max(self.before, self.last)
        self.items += 1
        self.last = depth

    def end_branch(self) -> None:
        concat = 1 + max(self.before, self.last) if self.items > 1 else self.last
        self.best = max(self.best, concat)
        self.branches += 1
        self.items = self.before = self.last = 0

    def depth(self) -> int:
        self.end_branch()
        return self.best + (self.branches > 1)


class _Class:
    """One open bracketed class: its set-operation chain so far and the union being read."""

    __slots__ = ("chain", "deepest", "items")

    def __init__(self) -> None:
        self.chain: int | None = None
        self.items = self.deepest = 0

    def add(self, depth: int) -> None:
        self.items += 1
        self.deepest = max(self.deepest, depth)

    def union(self) -> int:
        depth = 1 + self.deepest if self.items > 1 else self.deepest
        self.items = self.deepest = 0
        return depth

    def operator(self) -> None:
        union = self.union()
        self.chain = union if self.chain is None else 1 + max(self.chain, union)

    def depth(self) -> int:
        union = self.union()
        return 1 + (union if self.chain is None else 1 + max(self.chain, union))


def _open_class(pattern: str, i: int) -> int:
    """Skip a class's opening (``[``, ``^``, a leading ``]`` that is literal); the index of its first item."""
    i += 1
    if pattern.startswith("^", i):
        i += 1
    return i


def _class_depth(pattern: str, i: int) -> tuple[int, int]:
    """The depth of the bracketed class starting at ``pattern[i]`` and the index just past it."""
    n = len(pattern)
    stack = [_Class()]
    i = _open_class(pattern, i)
    if pattern.startswith("]", i):
        stack[-1].add(0)
        i += 1
    while i < n:
        ch = pattern[i]
        if ch == "]":
            depth = stack.pop().depth()
            i += 1
            if not stack:
                return depth, i
            stack[-1].add(depth)
            continue
        if ch == "[":
            ascii_class = _ASCII_CLASS.match(pattern, i)
            if ascii_class is not None:
                stack[-1].add(0)
                i = ascii_class.end()
                continue
            stack.append(_Class())
            i = _open_class(pattern, i)
            if pattern.startswith("]", i):
                stack[-1].add(0)
                i += 1
            continue
        if pattern.startswith(_CLASS_OPS, i):
            stack[-1].operator()
            i += 2
            continue
        i = _escape_end(pattern, i) if ch == "\\" else i + 1
        # A range (``a-z``) is one item; a '-' before ']' or another '-' is a literal of its own.
        if i + 1 < n and pattern[i] == "-" and pattern[i + 1] not in "]-":
            i = _escape_end(pattern, i + 1) if pattern[i + 1] == "\\" else i + 2
        stack[-1].add(0)
    depth = 0
    while stack:  # unclosed: ripgrep refuses it anyway
        depth = stack.pop().depth()
        if stack:
            stack[-1].add(depth)
    return depth, n


def nest_depth(pattern: str) -> int:
    """The depth regex-syntax (ripgrep's parser) gives ``pattern``'s syntax tree; ripgrep 14 adds one level."""
    stack = [_Concat()]
    i, n = 0, len(pattern)
    while i < n:
        ch, top = pattern[i], stack[-1]
        if ch == "\\":
            top.add(0)
            i = _escape_end(pattern, i)
        elif ch == "(":
            j = i + 1
            if pattern.startswith("?", j):
                j += 1
                while j < n and (pattern[j].isalpha() or pattern[j] == "-"):
                    j += 1
                if pattern.startswith(")", j):  # flags alone, "(?i)": an item, not a group
                    top.add(0)
                    i = j + 1
                    continue
                if pattern.startswith(":", j):
                    j += 1
                elif pattern.startswith("<", j):
                    close = pattern.find(">", j)
                    j = n if close == -1 else close + 1
            stack.append(_Concat())
            i = j
        elif ch == ")":
            if len(stack) > 1:
                depth = stack.pop().depth()
                stack[-1].add(1 + depth)
            i += 1
        elif ch == "|":
            top.end_branch()
            i += 1
        elif ch in "*+?" or (ch == "{" and _COUNTED.match(pattern, i)):
            counted = _COUNTED.match(pattern, i) if ch == "{" else None
            if top.items:
                top.last += 1
            i = counted.end() if counted is not None else i + 1
            if pattern.startswith("?", i):  # lazy: part of the same repetition
                i += 1
        elif ch == "[":
            depth, i = _class_depth(pattern, i)
            top.add(depth)
        else:
            top.add(0)
            i += 1
    while len(stack) > 1:  # unclosed: ripgrep refuses it anyway
        depth = stack.pop().depth()
        stack[-1].add(1 + depth)
    return stack[0].depth()


def _invalid(pattern: str, why: str) -> str:
    return f"Error: invalid regex {clip_echo(pattern)}: {why}"


def pattern_error(pattern: str) -> str | None:
    """Why ``pattern`` is refused before any engine sees it (an ``"Error: ..."``), or ``None``.

    Checked on every backend, so these get one answer whatever ripgrep (or none) a sandbox has: a NUL byte, a line
    break (matching is per line; ripgrep refuses one, and its ``-f`` would split the pattern there), and nesting
    deeper than ripgrep's limit.
    """
    if not isinstance(pattern, str):  # pyright: ignore[reportUnnecessaryIsInstance]
        raise InvalidArgumentError(f"the pattern must be a str, not {type(pattern).__name__}")
    if "\x00" in pattern:
        return _invalid(pattern, "a NUL byte is not allowed in a pattern (binary files are not searched)")
    if not pattern.isascii():
        try:
            pattern.encode()
        except UnicodeEncodeError:
            return _invalid(pattern, "the pattern is not valid Unicode (it has a lone surrogate)")
    for char, shown in (("\n", "\\n"), ("\r", "\\r")):
        if char in pattern:
            return _invalid(pattern, f'the literal "{shown}" is not allowed in a regex (matching is per line)')
    # Each character adds at most one level, so short patterns cannot reach the limit.
    if len(pattern) >= NEST_LIMIT - 1 and 1 + nest_depth(pattern) > NEST_LIMIT:
        return _invalid(pattern, f"exceed the maximum number of nested parentheses/brackets ({NEST_LIMIT})")
    return None


def _off_loop(pattern: str) -> bool:
    """Whether checking and compiling ``pattern`` is long work (or deep recursion), for a worker thread."""
    return len(pattern) > _INLINE_COMPILE_CHARS or pattern.count("(") > 64


async def pattern_error_async(pattern: str) -> str | None:
    """``pattern_error``, in a worker thread when the pattern is long: the event loop never waits on it."""
    if not _off_loop(pattern):
        return pattern_error(pattern)
    return await anyio.to_thread.run_sync(pattern_error, pattern)


def compile_pattern(pattern: str) -> re.Pattern[str] | str:
    """Compile a ripgrep-syntax pattern with Python's ``re``, or return an ``"Error: ..."`` for the model."""
    problem = pattern_error(pattern)
    if problem is not None:
        return problem
    structure = _strip_classes(pattern)
    if _LOOKAROUND.search(structure):
        return _invalid(pattern, "look-around is not supported (ripgrep syntax)")
    if _BACKREF.search(structure):
        return _invalid(pattern, "back-references are not supported (ripgrep syntax)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return re.compile(pattern)
    except re.error as exc:
        return _invalid(pattern, str(exc))
    except (RecursionError, OverflowError, MemoryError) as exc:
        return _invalid(pattern, f"too large or too deeply nested for the in-memory engine ({exc})")


async def compile_pattern_async(pattern: str) -> re.Pattern[str] | str:
    """``compile_pattern``, in a worker thread when the pattern is long (a 200 KB pattern compiles for ~0.5 s)."""
    if not _off_loop(pattern):
        return compile_pattern(pattern)
    return await anyio.to_thread.run_sync(compile_pattern, pattern)


# Constructs whose meaning changes when the pattern runs over a whole text instead of one line: the text anchors, a
# scoped flag that can turn multi-line mode off again, atomic groups and possessive quantifiers (which cannot give
# back what they took past a line end). Seen in the pattern's structure (``_strip_classes``); a false alarm only
# costs the per-line path.
_LINE_BOUND = re.compile(r"\\[AZz]|\(\?[a-zA-Z]*-|\(\?>|[*+?}]\+")
_BATCH_BYTES = 1 << 20  # files searched as one text at a time: bounded extra memory, Python work per match only
_BOMS = (codecs.BOM_UTF8, codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)
_T = TypeVar("_T")
_decode = functools.partial(bytes.decode, encoding="utf-8", errors="replace")


@lru_cache(maxsize=64)
def _text_regex(regex: re.Pattern[str]) -> tuple[re.Pattern[str] | None, bool]:
    """``regex`` in multi-line mode, for searching a whole text at once (``None`` when that could miss a line),
    and whether it has a ``$`` (which does not match before the ``\\r`` of a CRLF line ending)."""
    structure = _strip_classes(regex.pattern)
    if _LINE_BOUND.search(structure):
        return None, True
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return re.compile(regex.pattern, regex.flags | re.MULTILINE), "$" in structure
    except (re.error, RecursionError, OverflowError, MemoryError):
        return None, True


def _search_text(
    whole: re.Pattern[str],
    regex: re.Pattern[str],
    text: str,
    starts: list[int],
    ends: list[int],
    names: Sequence[_T],
) -> list[tuple[_T, int, str]]:
    """``(names[i], line_number, line)`` of every matching line of the texts at ``text[starts[i]:ends[i]]``.

    ``whole`` runs over all of ``text`` in multi-line mode and the loop jumps from match to match, so lines without
    a match cost no Python work. Every per-line match is a whole-text match at the same place (``^``, ``$`` and
    ``\\b`` see a line break where the line sees its start or end), so no line is missed; a match that runs past
    its line's end (across a line break, or into a ``\\r`` that is not part of the line) is only a candidate, its
    line checked alone with ``regex``, and the search starts again at the next line (a match may start there).
    """
    found: list[tuple[_T, int, str]] = []
    append, check, rfind, find, count = found.append, regex.search, text.rfind, text.find, text.count
    size, bisect_left, crlf = len(text), bisect.bisect_left, "\r" in text
    index, start, end, name = 0, starts[0], ends[0], names[0]
    number, counted = 1, start  # the line starting at ``counted`` in text ``index`` has this ``number``
    position = 0  # where the search goes on: a line start
    while position <= size:
        for match in whole.finditer(text, position):
            at, stop = match.span()
            if at < position:
                continue  # another match on a line already taken
            if at >= end:
                if at > end:
                    index = bisect_left(ends, at, index + 1)
                    start, end, name = starts[index], ends[index], names[index]
                    number, counted = 1, start
                if at == end and (at == start or text[at - 1] == "\n"):
                    position = end + 1  # past the text's last line: a final newline does not start another
                    continue
            line_start = rfind("\n", start, at) + 1 or start
            number += count("\n", counted, line_start)
            counted = line_start
            line_end = find("\n", at, end)
            if line_end == -1:
                line_end = end
            position = line_end + 1
            if crlf and text[line_end - 1 : line_end] == "\r" and line_end > line_start:
                line_end -= 1  # the \r before the line break is not part of the line
            line = text[line_start:line_end]
            if stop <= line_end:
                append((name, number, line))
            else:
                if check(line) is not None:
                    append((name, number, line))
                break  # the match ran past its line: search again from the next line
        else:
            break
    return found


def search_lines(regex: re.Pattern[str], text: str) -> list[tuple[int, str]]:
    """``(line_number, line)`` for each line of ``text`` that ``regex`` matches (see ``_search_text``)."""
    whole, dollar = _text_regex(regex)
    if whole is None or (dollar and "\r" in text):
        return _search_each_line(regex, text)
    return [(number, line) for _, number, line in _search_text(whole, regex, text, [0], [len(text)], (0,))]


def search_contents(regex: re.Pattern[str], paths: list[str], contents: list[bytes]) -> list[tuple[str, int, str]]:
    """``(path, line_number, line)`` for each matching line of each file, ``contents[i]`` holding ``paths[i]``;
    binary files skipped (``_text.decode_text``). Files are searched a batch at a time as one text."""
    whole, dollar = _text_regex(regex)
    if sum(map(len, contents)) < _BATCH_BYTES:
        return _search_batch(regex, whole, dollar, paths, contents)
    found: list[tuple[str, int, str]] = []
    batch_start, size = 0, 0
    for i, content in enumerate(contents):
        size += len(content)
        if size >= _BATCH_BYTES or i + 1 == len(contents):
            found += _search_batch(regex, whole, dollar, paths[batch_start : i + 1], contents[batch_start : i + 1])
            batch_start, size = i + 1, 0
    return found


def _search_batch(
    regex: re.Pattern[str], whole: re.Pattern[str] | None, dollar: bool, paths: list[str], contents: list[bytes]
) -> list[tuple[str, int, str]]:
    blob = b"\n".join(contents)
    texts: list[str | None]
    ascii_only = blob.isascii()  # then no byte-order mark either
    if b"\x00" in blob or (not ascii_only and any(map(operator.methodcaller("startswith", _BOMS), contents))):
        texts = [_text.decode_text(content) for content in contents]  # binary files become None
        kept = [i for i, text in enumerate(texts) if text is not None]
        if len(kept) < len(texts):
            paths, texts = [paths[i] for i in kept], [texts[i] for i in kept]
        text = "\n".join(cast(list[str], texts))
        lengths = map(len, cast(list[str], texts))
    elif ascii_only:
        text, lengths = blob.decode("ascii"), map(len, contents)
    else:
        texts = list(map(_decode, contents))
        text, lengths = "\n".join(cast(list[str], texts)), map(len, cast(list[str], texts))
    # Text i spans text[starts[i]:ends[i]]; one newline separates it from the next.
    ends = list(map(operator.add, itertools.accumulate(lengths), itertools.count()))
    if not ends:
        return []
    starts = [0, *map((1).__add__, ends[:-1])]
    if whole is None or (dollar and "\r" in text):
        return [
            (path, number, line)
            for path, start, end in zip(paths, starts, ends, strict=True)
            for number, line in _search_each_line(regex, text[start:end])
        ]
    return _search_text(whole, regex, text, starts, ends, paths)


def _search_each_line(regex: re.Pattern[str], text: str) -> list[tuple[int, str]]:
    search = regex.search
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()  # a final newline ends the last line; it does not start another
    found: list[tuple[int, str]] = []
    for number, line in enumerate(lines, 1):
        if line.endswith("\r"):
            line = line[:-1]
        if search(line) is not None:
            found.append((number, line))
    return found


# A match whose line is not decoded yet: (path, line number, "", what ``decode`` turns into the line). Its sort key
# is the same as a decoded match's, and it never compares its raw part with a decoded line's text (a 3-tuple ends
# first), so both kinds sort together.
Lazy = tuple[str, int, str, bytes]


class MatchCollector:
    """Keeps the first ``cap`` matches in (path, line) order while counting all, in O(cap) memory."""

    def __init__(self, cap: int | None = DEFAULT_MAX_MATCHES) -> None:
        self._cap = cap
        self._items: list[tuple[str, int, str] | Lazy] = []
        self._decode: Callable[[list[bytes]], list[str | None]] | None = None
        self._cutoff: str | None = None  # no kept match has a path after this one (stale-high between compactions)
        self.total = 0

    @property
    def cap(self) -> int | None:
        """How many matches are kept (``None``: all)."""
        return self._cap

    def add(self, path: str, line_number: int, line: str) -> None:
        self.total += 1
        self._items.append((path, line_number, line))
        if self._cap is not None and len(self._items) >= 2 * self._cap + 64:
            self._compact()

    def add_lines(self, path: str, found: list[tuple[int, str]]) -> None:
        """Add one file's matches at once: ``(line_number, line)`` pairs from ``search_lines``."""
        self.total += len(found)
        self._items += [(path, number, line) for number, line in found]
        if self._cap is not None and len(self._items) >= 2 * self._cap + 64:
            self._compact()

    def _compact(self) -> None:
        assert self._cap is not None
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
        items = list(items)
        self.total += len(items)
        self._items += items
        if self._cap is not None and len(self._items) >= 2 * self._cap + 64:
            self._compact()

    def extend_lazy(self, items: list[Lazy], decode: Callable[[list[bytes]], list[str | None]]) -> None:
        """Add matches whose lines are decoded only if they are kept: ``(path, line_number, "", raw)``; ``decode``
        turns a list of raws into their lines (``None``: not a match after all, dropped and not counted), called
        once, in ``result``, on the kept ones."""
        self._decode = decode
        self.total += len(items)
        self._items += items
        if self._cap is not None and len(self._items) >= 2 * self._cap + 64:
            self._compact()

    def _decoded(self) -> list[tuple[str, int, str]]:
        items = self._items
        if self._decode is None:
            return cast(list[tuple[str, int, str]], items)
        lazy = [index for index, item in enumerate(items) if len(item) == 4]
        lines = self._decode([cast(Lazy, items[index])[3] for index in lazy])
        decoded = cast(list[tuple[str, int, str] | None], items.copy())
        for index, line in zip(lazy, lines, strict=True):
            path, number, *_ = items[index]
            decoded[index] = None if line is None else (path, number, line)
            self.total -= line is None
        return [item for item in decoded if item is not None]

    def result(self) -> GrepMatches:
        self._items.sort()
        if self._cap is not None:
            del self._items[self._cap :]
        limit, clip = _text.MAX_LINE_CHARS, _text.clip_line
        # One validation call for the whole list: a model per match, built in pydantic-core (the cheapest way to a
        # validated model: about 0.7 µs each against 1.2 µs for ``GrepMatch(...)`` and 2.4 µs for model_construct).
        items = self._decoded()
        if max(map(len, map(operator.itemgetter(2), items)), default=0) > limit:
            items = [(p, n, s if len(s) <= limit else clip(s)) for p, n, s in items]
        matches = _MATCH_LIST.validate_python([{"path": p, "line_number": n, "line": s} for p, n, s in items])
        return GrepMatches(matches, total=self.total)


_MATCH_LIST = TypeAdapter(list[GrepMatch])
