"""Shell helpers for ``BaseSandbox``: listings as NUL-separated records, and whole outputs through a capped
``execute``.

A file name may hold any byte but NUL and ``/``, newlines and ``|`` included, so listings are read as records
ending in NUL, never as lines: a name cannot pose as another entry.

A sandbox that supplies only ``execute`` caps what a command prints (head and tail kept). A helper command's output
must be had whole, or a listing loses entries and a search its matches. ``run_complete`` has it in pages small
enough for any cap: the output goes to a temporary file in the sandbox and comes back a base64 page per call;
where nothing can be written, the command is run again for each page, made deterministic (``rerun``).
"""

from __future__ import annotations

import base64
import binascii
import shlex
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime

import anyio

from agent_backends import _paths
from agent_backends.exceptions import SandboxError
from agent_backends.types import ExecuteResponse, FileInfo, GrepMatch, GrepMatches

__all__ = ("Execute", "SearchStopped", "listing_script", "parse_listing", "run_complete")

Execute = Callable[[str, bytes | None], Awaitable[ExecuteResponse]]

# Pseudo filesystems a listing or a search from "/" must not walk into.
PSEUDO = ("/proc", "/sys", "/dev")
_KINDS = {"directory": True, "d": True, "f": False}  # stat's %F words and find's %Y letters
_PAGE = 48 * 1024  # raw bytes per page: 65,536 base64 characters, well under the usual 100,000-character cap
_MIN_PAGE = 512
_TRAILER = b"\0rc="  # after the output: the command's exit status (no helper prints a NUL followed by "rc=")


# --- listings -----------------------------------------------------------------------------------------------------


def listing_script(base: str, max_depth: int | None, *, files_only: bool) -> str:
    """Entries under ``base`` as ``type|size|mtime|path`` records, each ending in NUL: GNU ``find -printf`` where
    there is one (gVisor rejects the ``statx`` flag GNU ``stat`` uses), else ``stat`` (busybox), which prints
    lines: names holding a newline are then stated one by one, each record closed by ``printf``."""
    prune = "".join(f"-path {p} -prune -o " for p in PSEUDO) if base == "/" else ""
    depth = f"-maxdepth {max_depth} " if max_depth is not None else ""
    kinds = r"\( -type f -o -type l \) " if files_only else ""
    head = f"find {shlex.quote(base)} -mindepth 1 {depth}{prune}{kinds}"
    one_by_one = 'for f; do s=$(stat -L -c "%F|%s|%Y|" -- "$f") && printf "%s%s\\0" "$s" "$f"; done'
    return (
        "nl=$(printf '\\nx'); nl=${nl%x}; "
        f"if find / -maxdepth 0 -printf '' >/dev/null 2>&1; then {head}-printf '%Y|%s|%T@|%p\\0' 2>/dev/null; "
        f"else {head}! -path \"*$nl*\" -exec stat -L -c '%F|%s|%Y|%n' {{}} + 2>/dev/null | tr '\\n' '\\0'; "
        f'{head}-path "*$nl*" -exec sh -c {shlex.quote(one_by_one)} sh {{}} + 2>/dev/null; fi; true'
    )


def parse_record(record: str) -> FileInfo | None:
    """``FileInfo`` from a ``type|size|mtime|path`` record; ``None`` for anything else (a pipe, a broken link)."""
    parts = record.split("|", 3)
    if len(parts) != 4 or not parts[1].isdigit():
        return None
    kind, size, mtime, path = parts
    is_dir = _KINDS.get(kind, None if not kind.startswith("regular") else False)
    if is_dir is None:
        return None
    try:
        modified = datetime.fromtimestamp(float(mtime), UTC)
    except (ValueError, OverflowError, OSError):
        return None
    return FileInfo(
        path=path, name=_paths.split_name(path), is_dir=is_dir, size=None if is_dir else int(size), modified_at=modified
    )


def parse_listing(output: bytes, base: str, max_depth: int | None) -> Iterator[FileInfo]:
    """The entries of a ``listing_script`` output: only paths below ``base`` (and within ``max_depth``), so no
    record, whatever a name holds, can report an entry elsewhere."""
    prefix = base.rstrip("/") + "/"
    for raw in output.split(b"\0"):
        info = parse_record(raw.decode(errors="surrogateescape"))
        if info is None or not info.path.startswith(prefix) or "\0" in info.path:
            continue
        rest = info.path[len(prefix) :]
        if not rest or (max_depth is not None and rest.count("/") >= max_depth):
            continue
        yield info


# --- whole outputs through a capped execute ------------------------------------------------------------------------


def _stream(script: str) -> str:
    """``script``'s output (its errors merged) followed by its exit status after a NUL."""
    return f"{{ ( {script}\n) 2>&1; printf '\\000rc=%s' \"$?\"; }}"


def _decode(output: str) -> bytes:
    try:
        return base64.b64decode("".join(output.split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SandboxError(f"a helper command's output could not be read back: {output[:200]!r}") from exc


def _split(data: bytes) -> tuple[int | None, bytes]:
    output, found, status = data.rpartition(_TRAILER)
    if not found:
        return None, data
    text = status.decode(errors="replace").strip()
    return (int(text) if text.isdigit() else None), output


async def run_complete(
    execute: Execute, script: str, *, stdin: bytes | None = None, rerun: str | None = None
) -> tuple[int | None, bytes]:
    """Run ``script`` in the sandbox and return (its exit status, its whole output, errors merged), however small
    ``execute``'s output cap. ``rerun``: the same command made deterministic, for sandboxes with nowhere to write
    (default: ``script`` itself)."""
    page = _PAGE
    stream = _stream(script)
    first = await execute(
        't=$(mktemp 2>/dev/null) || t=; if [ -n "$t" ]; then '
        f'{stream} > "$t"; n=$(wc -c < "$t"); echo "@file $n $t"; '
        f'dd if="$t" bs={page} count=1 2>/dev/null | base64; [ "$n" -gt {page} ] || rm -f -- "$t"; '
        "else echo @none; fi",
        stdin,
    )
    header, _, body = first.output.partition("\n")
    fields = header.split(" ", 2)
    if fields[0] != "@file" or len(fields) != 3 or not fields[1].isdigit():
        if header.strip() != "@none":
            raise SandboxError(f"a helper command failed in the sandbox: {first.output[:300]!r}")
        return _split(await _rerun_pages(execute, _stream(rerun or script), stdin))
    size, path = int(fields[1]), fields[2]
    try:
        if not first.truncated:
            data = _decode(body)
            if size <= page:
                return _split(data)
            return _split(await _file_pages(execute, path, size, data, page))
        if size <= page:  # a cap under one page, and the file already removed: page by running it again
            return _split(await _rerun_pages(execute, _stream(rerun or script), stdin))
        return _split(await _file_pages(execute, path, size, b"", page // 2))
    finally:
        if size > _PAGE:
            with anyio.move_on_after(30, shield=True):
                await execute(f"rm -f -- {shlex.quote(path)}", None)


async def _file_pages(execute: Execute, path: str, size: int, data: bytes, page: int) -> bytes:
    """The rest of the output file from ``len(data)`` on, a page per call (halved while a page comes back cut)."""
    parts = [data]
    offset = len(data)
    quoted = shlex.quote(path)
    while offset < size:
        if page < _MIN_PAGE:
            raise SandboxError("the sandbox's output cap is too small to read a helper command's output back")
        response = await execute(
            f"[ -f {quoted} ] || exit 97; dd if={quoted} bs={page} skip={offset // page} count=1 2>/dev/null | base64",
            None,
        )
        if response.exit_code == 97:
            raise SandboxError(f"a helper command's output file {path} vanished from the sandbox while being read")
        if response.truncated:
            page //= 2  # offsets stay multiples of the page
            continue
        chunk = _decode(response.output)
        if not chunk:
            break
        parts.append(chunk)
        offset += len(chunk)
    return b"".join(parts)


async def _rerun_pages(execute: Execute, stream: str, stdin: bytes | None) -> bytes:
    """Nothing writable: run the (deterministic) command once per page, keeping only that page of its output."""
    parts: list[bytes] = []
    offset, page = 0, _PAGE
    while True:
        if page < _MIN_PAGE:
            raise SandboxError("the sandbox's output cap is too small to read a helper command's output back")
        response = await execute(f"{stream} | tail -c +{offset + 1} | head -c {page} | base64", stdin)
        if response.truncated:
            page //= 2
            continue
        chunk = _decode(response.output)
        parts.append(chunk)
        offset += len(chunk)
        if len(chunk) < page:
            return b"".join(parts)


# --- a search cut short --------------------------------------------------------------------------------------------


class SearchStopped(GrepMatches):
    """Matches from a search that stopped before the end (the fallback without ripgrep, past its time bound):
    ``total`` counts what was searched, ``truncated`` is true and ``note`` says what was left out."""

    def __init__(self, matches: list[GrepMatch], *, total: int, reason: str) -> None:
        super().__init__(matches, total=total)
        self.truncated = True
        self.reason = reason

    @property
    def note(self) -> str | None:
        shown = f"showing the first {len(self):,} of {self.total:,}" if self.total > len(self) else "showing all"
        return f"[the search stopped early: {self.reason}; {shown} matching lines found so far]"
