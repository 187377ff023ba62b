"""Path rules shared by every backend: one place decides what a path means and what is refused.

A backend path is a POSIX path in the backend's own namespace; ``/`` is its root. The text is checked here, before
anything is touched; disk backends then walk it below their root without following a link out (``_fsroot``).
"""

from __future__ import annotations

import re
import unicodedata
from urllib.parse import unquote

from agent_backends.exceptions import InvalidPathError

__all__ = ("is_within", "join", "normalize", "rebase", "relative_to", "split_name")

_DRIVE = re.compile(r"^[A-Za-z]:")
# Anything that needs a closer look than a plain split; most paths skip the slow checks.
_SUSPICIOUS = re.compile(r"[\x00\\~%:]|\.\.|[^\x00-\x7f]")
# An absolute path that is already normal: plain segments that do not start with a dot. Returned as it is.
_NORMAL = re.compile(r"(?:/[\w\-+@=,][\w\-+@=,.]*)+|/")


def _refuse(path: str, why: str) -> InvalidPathError:
    return InvalidPathError(f"path {path!r} is refused: {why}", path)


def _check_text(path: str) -> None:
    if "\x00" in path:
        raise _refuse(path, "it contains a NUL byte")
    if "\\" in path:
        raise _refuse(path, "backslashes are not path separators here; use '/'")
    if path.startswith("~"):
        raise _refuse(path, "'~' home-directory expansion is not supported")
    if _DRIVE.match(path):
        raise _refuse(path, "Windows drive paths are not supported")


def _check_segment(path: str, segment: str) -> None:
    if segment == "..":
        raise _refuse(path, "'..' segments may not leave the current directory")
    if "%" in segment and unquote(segment) in ("..", "."):
        raise _refuse(path, "a percent-encoded '..' or '.' segment is refused")
    if not segment.isascii() and unicodedata.normalize("NFKC", segment) == "..":
        raise _refuse(path, "a segment that normalizes to '..' is refused")


def normalize(path: str, cwd: str = "/") -> str:
    """Return ``path`` as an absolute, normalized backend path, or raise ``InvalidPathError``.

    A relative path is taken from ``cwd`` (itself already normalized). ``.`` and empty segments are dropped; a
    trailing slash is removed. Nothing is resolved against a filesystem here.
    """
    if not isinstance(path, str):  # pyright: ignore[reportUnnecessaryIsInstance]
        raise InvalidPathError(f"path must be a str, not {type(path).__name__}")
    if _NORMAL.fullmatch(path) and not path.endswith("/."):
        return path
    if not path:
        raise _refuse(path, "it is empty")
    slow = _SUSPICIOUS.search(path) is not None
    if slow:
        _check_text(path)
    full = path if path.startswith("/") else f"{cwd}/{path}"
    parts: list[str] = []
    for segment in full.split("/"):
        if not segment or segment == ".":
            continue
        if slow:
            _check_segment(path, segment)
        parts.append(segment)
    return "/" + "/".join(parts)


def join(base: str, name: str) -> str:
    """Join a normalized directory path and a child name."""
    return f"{base}/{name}" if base != "/" else f"/{name}"


def split_name(path: str) -> str:
    """The last segment of a normalized path (``""`` for the root)."""
    return path.rsplit("/", 1)[-1]


def is_within(path: str, base: str) -> bool:
    """Whether normalized ``path`` is ``base`` or below it, on whole segments."""
    return base == "/" or path == base or path.startswith(base + "/")


def relative_to(path: str, base: str) -> str:
    """``path`` relative to ``base`` (``""`` when equal); both normalized, ``path`` within ``base``."""
    if path == base:
        return ""
    return path[len(base) :].lstrip("/") if base != "/" else path[1:]


def rebase(path: str, old: str, new: str) -> str | None:
    """``path`` moved from below ``old`` to below ``new`` (all normalized), or ``None`` when it is not below ``old``.

    The one rule for namespaces mounted inside others: a composite's routes, a disk backend's host-style paths
    (``/workspace/a.py`` for ``FilesystemBackend("/workspace")``), and ``LocalBackend``'s host paths over its root.
    """
    if old == "/":
        rest = path
    elif path == old:
        rest = "/"
    elif path.startswith(old + "/"):
        rest = path[len(old) :]
    else:
        return None
    if new == "/":
        return rest
    return new if rest == "/" else new + rest
