"""``BaseSandbox``: every file operation derived from running shell commands, for wrapping any remote sandbox.

A subclass supplies ``execute`` and ``id``; it may also supply faster file transfer (``_download``, ``_upload``,
``_stat``) and uncapped command runs (``_run``), as ``DockerSandbox`` does. What runs inside needs only a POSIX shell
and coreutils or busybox (``stat``, ``find``, ``base64``, ``dd``); grep uses ``rg`` there when present and otherwise
searches downloaded files with the in-memory engine, which has the same regex semantics.
"""

from __future__ import annotations

import base64
import shlex
from abc import abstractmethod
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import NamedTuple

from agent_backends import _paths, _text
from agent_backends._glob import (
    GlobMatcher,
    compile_directory_filter,
    compile_glob,
    compile_name_filter,
    split_file_filter,
)
from agent_backends._grep import (
    DEFAULT_MAX_MATCHES,
    MatchCollector,
    compile_pattern_async,
    pattern_error_async,
    search_lines,
)
from agent_backends._ripgrep import RipgrepJson, pattern_input, rg_arguments, rg_error
from agent_backends.backends._base import StorageBackend, is_dir_error, not_a_dir, not_found
from agent_backends.backends._workspace import SandboxWorkspace, WorkspaceCommands
from agent_backends.exceptions import PathError, PathNotDirectoryError, PathPermissionError
from agent_backends.types import ExecuteResponse, FileInfo, GrepMatches

__all__ = ("BaseSandbox", "CommandResult")

# Pseudo filesystems a search from "/" must not walk into.
_PSEUDO = ("/proc", "/sys", "/dev")
_STAT_FORMAT = "%F|%s|%Y|%n"


class CommandResult(NamedTuple):
    """An internal command's outcome; ``stderr`` is empty when the sandbox merges the streams."""

    exit_code: int | None
    stdout: bytes
    stderr: bytes


_KINDS = {"directory": True, "d": True, "f": False}  # stat's %F words and find's %Y letters


def _parse_stat_line(line: str) -> FileInfo | None:
    """``FileInfo`` from a ``type|size|mtime|path`` line (``stat -c`` or ``find -printf``); ``None`` otherwise."""
    parts = line.split("|", 3)
    if len(parts) != 4 or not parts[1].isdigit():
        return None
    kind, size, mtime, path = parts
    is_dir = _KINDS.get(kind, None if not kind.startswith("regular") else False)
    try:
        modified = datetime.fromtimestamp(float(mtime), UTC)
    except ValueError:
        return None
    if is_dir is None:
        return None
    return FileInfo(
        path=path, name=_paths.split_name(path), is_dir=is_dir, size=None if is_dir else int(size), modified_at=modified
    )


def _find_script(base: str, max_depth: int | None, files_only: bool) -> str:
    """List entries as ``type|size|mtime|path`` lines: GNU ``find -printf`` where there is one (gVisor rejects the
    ``statx`` flag GNU ``stat`` uses), else ``stat`` for each entry (busybox)."""
    prune = "".join(f"-path {p} -prune -o " for p in _PSEUDO) if base == "/" else ""
    depth = f"-maxdepth {max_depth} " if max_depth is not None else ""
    kinds = r"\( -type f -o -type l \) " if files_only else ""
    head = f"find {shlex.quote(base)} -mindepth 1 {depth}{prune}{kinds}"
    return (
        f"if find / -maxdepth 0 -printf '' >/dev/null 2>&1; then {head}-printf '%Y|%s|%T@|%p\\n' 2>/dev/null; "
        f"else {head}-exec stat -L -c '{_STAT_FORMAT}' {{}} + 2>/dev/null; fi; true"
    )


class BaseSandbox(SandboxWorkspace, WorkspaceCommands, StorageBackend):
    """File operations for any sandbox that can run ``sh`` commands; subclass and supply ``execute`` and ``id``.

    Args:
        work_dir: the directory relative paths are taken from.
        max_grep_matches: cap on the lines ``grep_raw`` returns (``None``: no cap).
    """

    _transfer_chunk = 32 * 1024  # raw bytes per base64 round trip: well under the usual output cap

    def __init__(self, *, work_dir: str = "/", max_grep_matches: int | None = DEFAULT_MAX_MATCHES) -> None:
        super().__init__(max_grep_matches=max_grep_matches)
        self.work_dir = _paths.normalize(work_dir)
        self._cwd = self.work_dir
        self._has_rg: bool | None = None

    @abstractmethod
    async def execute(
        self,
        command: str,
        timeout: float | None = None,
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        stdin: str | bytes | None = None,
    ) -> ExecuteResponse:
        """Run ``command`` through ``sh -c`` in the sandbox."""

    @property
    @abstractmethod
    def id(self) -> str:
        """A stable identifier for this sandbox."""

    # --- overridable transport ---------------------------------------------------------------------------------

    async def _run(self, script: str, *, stdin: bytes | None = None) -> CommandResult:
        """Run an internal command. The default goes through ``execute`` (merged, capped output)."""
        response = await self.execute(script, stdin=stdin)
        return CommandResult(response.exit_code, response.output.encode(errors="surrogateescape"), b"")

    async def _stat(self, path: str) -> FileInfo | None:
        result = await self._run(f"stat -L -c '{_STAT_FORMAT}' -- {shlex.quote(path)} 2>/dev/null")
        for line in result.stdout.decode(errors="surrogateescape").splitlines():
            info = _parse_stat_line(line)
            if info is not None:
                return info.model_copy(update={"path": path, "name": _paths.split_name(path)})
        return None

    async def _download(self, path: str, size: int) -> bytes:
        """A file's bytes (``path`` is a regular file of ``size`` bytes); default: base64 in chunks."""
        parts: list[bytes] = []
        for index in range(max(1, -(-size // self._transfer_chunk))):
            result = await self._run(
                f"dd if={shlex.quote(path)} bs={self._transfer_chunk} skip={index} count=1 2>/dev/null | base64"
            )
            parts.append(base64.b64decode(b"".join(result.stdout.split())))
        return b"".join(parts)

    async def _upload(self, path: str, data: bytes) -> None:
        """Write ``path`` (parents created); default: one command with the bytes on standard input."""
        parent = path.rsplit("/", 1)[0] or "/"
        quoted = shlex.quote(path)
        result = await self._run(f"mkdir -p -- {shlex.quote(parent)} && cat > {quoted}", stdin=data)
        if result.exit_code != 0:
            message = (result.stderr or result.stdout).decode(errors="replace").strip()
            if "ot a directory" in message or "File exists" in message:
                raise PathNotDirectoryError(f"'{path}' is not a directory, or a parent of it is a file", path)
            raise PathPermissionError(f"could not write '{path}': {message}", path)

    async def _run_rg(self, arguments: list[str], parser: RipgrepJson, stdin: bytes) -> tuple[int | None, bytes]:
        """Run ``rg`` in the sandbox with ``stdin``, feeding its stdout to ``parser``; (exit code, stderr)."""
        result = await self._run(shlex.join(["rg", *arguments]), stdin=stdin)
        parser.feed(result.stdout + b"\n")
        # Through ``execute`` the streams are merged: ripgrep's error message is then in stdout.
        return result.exit_code, result.stderr or result.stdout

    # --- storage primitives --------------------------------------------------------------------------------------

    async def _file(self, path: str) -> FileInfo:
        info = await self._stat(path)
        if info is None:
            raise not_found(path)
        if info.is_dir:
            raise is_dir_error(path)
        return info

    async def _list(self, path: str) -> list[FileInfo]:
        info = await self._stat(path)
        if info is None:
            raise not_found(path)
        if not info.is_dir:
            raise not_a_dir(path)
        result = await self._run(_find_script(path, 1, files_only=False))
        lines = result.stdout.decode(errors="surrogateescape").splitlines()
        return [info for line in lines if (info := _parse_stat_line(line)) is not None]

    async def _read(self, path: str, offset: int, limit: int) -> str:
        return _text.render_bytes(await self._read_bytes(path), path=path, offset=offset, limit=limit)

    async def _read_bytes(self, path: str) -> bytes:
        info = await self._file(path)
        return await self._download(path, info.size or 0)

    async def _write_bytes(self, path: str, data: bytes) -> None:
        info = await self._stat(path)
        if info is not None and info.is_dir:
            raise is_dir_error(path)
        await self._upload(path, data)

    async def _delete(self, path: str, recursive: bool) -> None:
        info = await self._stat(path)
        if info is None:
            raise not_found(path)
        if info.is_dir and not recursive:
            raise is_dir_error(path)
        result = await self._run(f"rm -rf -- {shlex.quote(path)}")
        if result.exit_code != 0:
            raise PathPermissionError(f"could not delete '{path}': {result.stderr.decode(errors='replace')}", path)

    async def _glob(self, matcher: GlobMatcher) -> list[FileInfo]:
        base = matcher.base
        result = await self._run(_find_script(base, None if matcher.recursive else matcher.depth, files_only=True))
        found: list[FileInfo] = []
        for line in result.stdout.decode(errors="surrogateescape").splitlines():
            info = _parse_stat_line(line)
            if info is not None and not info.is_dir and matcher.match(_paths.relative_to(info.path, base)):
                found.append(info)
        return found

    async def _grep(self, pattern: str, path: str, glob: str | None) -> GrepMatches | str:
        info = await self._stat(path)
        if info is None:
            raise not_found(path)
        if self._has_rg is None:
            self._has_rg = (await self._run("command -v rg >/dev/null 2>&1")).exit_code == 0
        if not self._has_rg:
            return await self._grep_downloaded(pattern, path, glob)
        problem = await pattern_error_async(pattern)  # one answer whichever ripgrep version the sandbox has
        if problem is not None:
            return problem
        collector = MatchCollector(self.max_grep_matches)
        globs, accept = split_file_filter(glob, path)
        if info.is_dir:
            targets = [path] if path != "/" else await self._root_targets(glob)
            if not targets:
                return collector.result()
        else:
            targets = [path]  # a binary file is dropped by its end record, as in a walk
        # The pattern goes on ripgrep's standard input (``-f -``), whatever its size: nothing is written in the
        # sandbox (a read-only root, gVisor's private /tmp) and no command line grows with it.
        arguments = rg_arguments(targets, globs)
        code, stderr = await self._run_rg(arguments, RipgrepJson(collector, "", accept), pattern_input(pattern))
        error = rg_error(pattern, code, stderr)
        return error if error is not None else collector.result()

    async def _root_targets(self, glob: str | None) -> list[str]:
        """What a search from ``/`` names to ripgrep: the root's entries but the pseudo filesystems. ripgrep applies
        no glob to a path it is given, so the filter is applied to these here, as to what it walks below them."""
        entries = [entry for entry in await self._list("/") if entry.path not in _PSEUDO]
        if glob is None:
            return [entry.path for entry in entries]
        files, pruned = compile_name_filter(glob), compile_directory_filter(glob)
        kept: list[str] = []
        for entry in entries:
            relative = entry.path[1:]
            if entry.is_dir:
                keep = pruned is None or pruned.fullmatch(relative) is None
            else:
                keep = files.fullmatch(relative) is not None
            if keep:
                kept.append(entry.path)
        return kept

    async def _grep_downloaded(self, pattern: str, path: str, glob: str | None) -> GrepMatches | str:
        """The fallback without ``rg``: the in-memory engine over each file, downloaded one at a time."""
        regex = await compile_pattern_async(pattern)
        if isinstance(regex, str):
            return regex
        name_filter = compile_name_filter(glob) if glob is not None else None
        collector = MatchCollector(self.max_grep_matches)
        info = await self._stat(path)
        files = [info] if info is not None and not info.is_dir else await self._glob(compile_glob("**", path))
        for file in sorted(files, key=lambda f: f.path):
            # Relative to ``path``: "" for a file named explicitly, which the filter always accepts, as ripgrep does.
            if name_filter is not None and not name_filter.fullmatch(_paths.relative_to(file.path, path)):
                continue
            try:
                text = _text.decode_text(await self._download(file.path, file.size or 0))
            except PathError:
                continue
            if text is not None:  # None for a binary file (a NUL byte anywhere), as ripgrep skips it
                collector.extend((file.path, number, line) for number, line in search_lines(regex, text))
        return collector.result()
