"""Glob patterns, compiled once to a regex so every backend matches the same names.

Syntax: ``*`` (any run within one segment), ``?`` (one character), ``[abc]`` / ``[!abc]`` / ``[^abc]``, ``**`` as a
whole segment (zero or more directories) and braces ``{a,b}`` (nested allowed). ``*`` matches names that start with a
dot, as ripgrep's globs do. A pattern without ``/`` given as a file filter (``grep_raw(glob=...)``) matches the base
name anywhere, as ``rg --glob`` does, and a negated one (``!name``) also excludes every directory it matches with all
below it, as ripgrep prunes them from its walk. A glob longer than ``MAX_GLOB_CHARS`` is refused.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

from agent_backends import _paths
from agent_backends._grep import clip_echo
from agent_backends.exceptions import InvalidPathError

__all__ = (
    "MAX_GLOB_CHARS",
    "GlobMatcher",
    "compile_directory_filter",
    "compile_glob",
    "compile_name_filter",
    "split_file_filter",
)

# Longer than any real path, short enough that compiling one never stalls the event loop and ``--glob`` always
# fits in ripgrep's argv (which has no file to read globs from).
MAX_GLOB_CHARS = 8192

_META = frozenset("*?[{")


def _is_literal(segment: str) -> bool:
    return not any(ch in _META for ch in segment)


def _translate(pattern: str) -> str:
    """Translate one glob (no leading base) to a regex body matching a relative path."""
    out: list[str] = []
    i, n, depth = 0, len(pattern), 0
    while i < n:
        ch = pattern[i]
        if ch == "*":
            if pattern.startswith("**", i):
                at_start = i == 0 or pattern[i - 1] == "/"
                j = i + 2
                if at_start and (j == n or pattern[j] == "/"):
                    if j == n:
                        out.append(".*")
                    else:
                        out.append("(?:[^/]*/)*")
                        j += 1
                    i = j
                    continue
            out.append("[^/]*")
            while i < n and pattern[i] == "*":
                i += 1
            continue
        if ch == "?":
            out.append("[^/]")
        elif ch == "[":
            end = pattern.find("]", i + 2 if pattern.startswith(("[!", "[^"), i) else i + 1)
            if end == -1:
                out.append(re.escape(ch))
            else:
                body = pattern[i + 1 : end]
                negate = body[:1] in ("!", "^")
                if negate:
                    body = body[1:]
                body = body.replace("\\", "\\\\").replace("^", "\\^")
                out.append(f"[^/{body}]" if negate else f"(?!/)[{body}]")
                i = end + 1
                continue
        elif ch == "{":
            depth += 1
            out.append("(?:")
        elif ch == "}" and depth:
            depth -= 1
            out.append(")")
        elif ch == "," and depth:
            out.append("|")
        else:
            out.append(re.escape(ch))
        i += 1
    if depth:
        raise InvalidPathError(f"glob {clip_echo(pattern)} has an unclosed '{{'", pattern)
    return "".join(out)


def _check_glob_text(pattern: str) -> None:
    """Glob patterns obey the path rules (no ``..``, ``~``, drives, backslashes, NUL), and have a maximum length."""
    if not isinstance(pattern, str):  # pyright: ignore[reportUnnecessaryIsInstance]
        raise InvalidPathError(f"a glob must be a str, not {type(pattern).__name__}")
    if len(pattern) > MAX_GLOB_CHARS:
        raise InvalidPathError(
            f"glob {clip_echo(pattern)} is refused: it is {len(pattern):,} characters long; the most is "
            f"{MAX_GLOB_CHARS:,}",
            pattern,
        )
    probe = pattern.replace("*", "x").replace("?", "x") or "x"
    _paths.normalize(probe)


@dataclass(frozen=True, slots=True)
class GlobMatcher:
    """A compiled glob: ``base`` is the deepest literal directory, ``regex`` matches paths relative to it."""

    base: str
    rest: str
    regex: re.Pattern[str]
    recursive: bool
    depth: int
    name_only: re.Pattern[str] | None = None  # for ``**/<name glob>``: matching the base name is enough
    suffix: str | None = None  # for ``**/*<literal>`` (``**/*.py``): a name matches when it ends with this

    def match(self, relative: str) -> bool:
        return self.regex.fullmatch(relative) is not None

    def pattern_below(self, directory: str) -> str | None:
        """A pattern, taken from ``directory`` (relative to ``base``), matching at least every match of this glob
        under that directory; ``None`` when nothing under it can match. Callers filter with ``match``."""
        segments = self.rest.split("/")
        for index, name in enumerate(directory.split("/")):
            if index >= len(segments) - 1:
                return None
            segment = segments[index]
            if "{" in segment or segment == "**":
                return "/".join(segments[index:]) if segment == "**" else "**"
            if re.fullmatch(_translate(segment), name, re.DOTALL) is None:
                return None
        return "/".join(segments[len(directory.split("/")) :])


@lru_cache(maxsize=256)
def compile_glob(pattern: str, path: str = "/") -> GlobMatcher:
    """Compile ``pattern`` taken from directory ``path`` (normalized); an absolute pattern ignores ``path``."""
    _check_glob_text(pattern)
    full = pattern if pattern.startswith("/") else f"{path.rstrip('/')}/{pattern}"
    segments = [s for s in full.split("/") if s and s != "."]
    literal: list[str] = []
    while segments[:-1] and _is_literal(segments[0]):
        literal.append(segments.pop(0))
    rest = "/".join(segments)
    base = "/" + "/".join(literal)
    recursive = "**" in rest
    tail = rest.removeprefix("**/")
    name_only = re.compile(_translate(tail), re.DOTALL) if tail != rest and "/" not in tail else None
    # ``*`` matches any run of a name (a leading dot too; names hold no ``/``), so ``*<literal>`` is a suffix test.
    suffix = tail[1:] if name_only is not None and tail[:1] == "*" and tail[1:] and _is_literal(tail[1:]) else None
    regex = re.compile(_translate(rest), re.DOTALL)
    return GlobMatcher(base, rest, regex, recursive, len(segments), name_only, suffix)


def _filter_parts(glob: str) -> tuple[bool, bool, str]:
    """A file filter's parts: negated (``!``), directories only (a trailing ``/``), and a regex body that matches
    the relative paths it names."""
    negate = glob.startswith("!")
    glob = glob.removeprefix("!")
    _check_glob_text(glob)
    directories_only = glob.endswith("/") and len(glob) > 1
    glob = glob.removesuffix("/") if directories_only else glob
    body = _translate(glob.lstrip("/"))
    return negate, directories_only, body if "/" in glob else f"(?:.*/)?(?:{body})"


@lru_cache(maxsize=256)
def compile_name_filter(glob: str) -> re.Pattern[str]:
    """A file filter for ``grep_raw``, matched against paths relative to the searched ``path``: without ``/`` it
    matches base names, with ``/`` relative paths.

    A leading ``!`` excludes what the rest matches, and every file below a directory it matches, as ``rg --glob``
    prunes such a directory from its walk; a trailing ``/`` matches directories only. The empty relative path (the
    searched path is itself a file, named explicitly) is always accepted: ripgrep applies no glob to a file it is
    given by name.
    """
    negate, directories_only, body = _filter_parts(glob)
    if not negate:
        return re.compile("" if directories_only else f"(?:{body})?", re.DOTALL)
    below = "/.+" if directories_only else "(?:/.*)?"
    return re.compile(f"(?:(?!(?:{body}){below}$).+)?", re.DOTALL)


@lru_cache(maxsize=256)
def compile_directory_filter(glob: str) -> re.Pattern[str] | None:
    """The directories (paths relative to the searched ``path``) a file filter prunes with all below them: those a
    negated filter matches; ``None`` for a filter that prunes none."""
    negate, _, body = _filter_parts(glob)
    return re.compile(body, re.DOTALL) if negate else None


def split_file_filter(glob: str | None, base: str) -> tuple[list[str], Callable[[str], bool] | None]:
    """How a ``grep_raw`` file filter is applied with ripgrep: a base-name glob is passed as ``--glob`` (it means
    the same there); a glob with ``/`` is checked here, on paths relative to ``base``."""
    if glob is None:
        return [], None
    if "/" not in glob:  # also with a leading "!": ripgrep's exclusion means what compile_name_filter's does
        return [glob], None
    name_filter = compile_name_filter(glob)

    def accept(path: str) -> bool:
        return name_filter.fullmatch(_paths.relative_to(path, base)) is not None

    return [], accept
