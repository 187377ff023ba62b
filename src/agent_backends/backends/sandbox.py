"""``BaseSandbox``: every file operation derived from running shell commands, for wrapping any remote sandbox.

A subclass supplies ``execute`` and ``id``; it may also supply faster file transfer (``_download``, ``_upload``,
``_stat``) and uncapped command runs (``_run``), as ``DockerSandbox`` does. What runs inside needs only a POSIX shell
and coreutils or busybox (``stat``, ``find``, ``base64``, ``dd``, ``mktemp``, ``wc``, ``tr``); grep uses ``rg`` there
when present and otherwise searches downloaded files with the in-memory engine, which has the same regex semantics
(unreadable files skipped, bounded by ``fallback_grep_seconds``). Listings are NUL-separated records, and a helper's
output is read back whole however ``execute`` caps it (``_shell.run_complete``).
"""

from __future__ import annotations

import base64
import shlex
from abc import abstractmethod
from collections.abc import Mapping
from typing import NamedTuple

import anyio

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
from agent_backends.backends import _shell
from agent_backends.backends._base import StorageBackend, is_dir_error, not_a_dir, not_found
from agent_backends.backends._workspace import SandboxWorkspace, WorkspaceCommands
from agent_backends.exceptions import (
    PathError,
    PathNotDirectoryError,
    PathPermissionError,
    SandboxError,
    SandboxUnavailableError,
)
from agent_backends.types import ExecuteResponse, FileInfo, GrepMatches

__all__ = ("BaseSandbox", "CommandResult")

# Pseudo filesystems a search from "/" must not walk into.
_PSEUDO = _shell.PSEUDO
_STAT_FORMAT = "%F|%s|%Y|-"  # no name: the caller knows it, and a name may hold a newline
# ripgrep's timings, which differ from run to run ("elapsed", "elapsed_total"), as null.
_UNTIMED = shlex.quote(r's/"elapsed\(_total\)\{0,1\}":{[^}]*}/"elapsed":null/g')


class CommandResult(NamedTuple):
    """An internal command's outcome; ``stderr`` is empty when the sandbox merges the streams."""

    exit_code: int | None
    stdout: bytes
    stderr: bytes


class BaseSandbox(SandboxWorkspace, WorkspaceCommands, StorageBackend):
    """File operations for any sandbox that can run ``sh`` commands; subclass and supply ``execute`` and ``id``.

    Args:
        work_dir: the directory relative paths are taken from.
        max_grep_matches: cap on the lines ``grep_raw`` returns (``None``: no cap).
    """

    _transfer_chunk = 32 * 1024  # raw bytes per base64 round trip: well under the usual output cap
    fallback_grep_seconds: float = 60.0  # grep without ripgrep in the sandbox stops after this long, and says so

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
            info = _shell.parse_record(line)
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

    async def _run_complete(
        self, script: str, *, stdin: bytes | None = None, rerun: str | None = None
    ) -> CommandResult:
        """A helper command's whole output. A subclass's own ``_run`` is uncapped; through ``execute`` (capped) the
        output is read back in pages, errors merged (``rerun``: the command made deterministic, run once per page
        where the sandbox has nowhere to keep the output)."""
        if type(self)._run is not BaseSandbox._run:
            return await self._run(script, stdin=stdin)

        async def execute(command: str, data: bytes | None) -> ExecuteResponse:
            return await self.execute(command, stdin=data)

        code, output = await _shell.run_complete(execute, script, stdin=stdin, rerun=rerun)
        return CommandResult(code, output, b"")

    async def _listing(self, base: str, max_depth: int | None, *, files_only: bool) -> list[FileInfo]:
        """The entries below ``base`` (to ``max_depth``), read as NUL-separated records, all of them."""
        result = await self._run_complete(_shell.listing_script(base, max_depth, files_only=files_only))
        return list(_shell.parse_listing(result.stdout, base, max_depth))

    async def _run_rg(self, arguments: list[str], parser: RipgrepJson, stdin: bytes) -> tuple[int | None, bytes]:
        """Run ``rg`` in the sandbox with ``stdin``, feeding its stdout to ``parser``; (exit code, stderr)."""
        # ripgrep's status rides a last line of its own, so that the run paged again (below) keeps it.
        script = shlex.join(["rg", *arguments]) + '; echo "@rc=$?"'
        # Paged through ``execute`` where nothing is writable, it runs once per page: sorted and without its
        # timings, its output is the same every time.
        rerun = f'{{ {shlex.join(["rg", "--sort", "path", *arguments])} 2>&1; echo "@rc=$?"; }} | sed {_UNTIMED}'
        result = await self._run_complete(script, stdin=stdin, rerun=rerun)
        body, _, status = result.stdout.rstrip(b"\n").rpartition(b"\n@rc=")
        if not status.isdigit():
            body, status = result.stdout, b""
        parser.feed(body + b"\n")
        code = int(status) if status else result.exit_code
        if result.stderr:
            return code, result.stderr
        # Through ``execute`` the streams are merged: ripgrep's error message is in stdout, beside its records.
        return code, b"\n".join(line for line in body.split(b"\n") if not line.startswith(b'{"type":'))

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
        return await self._listing(path, 1, files_only=False)

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
        entries = await self._listing(base, None if matcher.recursive else matcher.depth, files_only=True)
        return [info for info in entries if not info.is_dir and matcher.match(_paths.relative_to(info.path, base))]

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
        """The fallback without ``rg``: the in-memory engine over each file, downloaded one at a time. A file that
        cannot be read is skipped, as ripgrep skips it; past ``fallback_grep_seconds`` the search stops and its
        note says how many files were left out."""
        regex = await compile_pattern_async(pattern)
        if isinstance(regex, str):
            return regex
        name_filter = compile_name_filter(glob) if glob is not None else None
        collector = MatchCollector(self.max_grep_matches)
        info = await self._stat(path)
        files = [info] if info is not None and not info.is_dir else await self._glob(compile_glob("**", path))
        # Relative to ``path``: "" for a file named explicitly, which the filter always accepts, as ripgrep does.
        files = sorted(
            (f for f in files if name_filter is None or name_filter.fullmatch(_paths.relative_to(f.path, path))),
            key=lambda f: f.path,
        )
        searched = 0
        with anyio.move_on_after(self.fallback_grep_seconds) as bound:
            for file in files:
                try:
                    data = await self._download(file.path, file.size or 0)
                except SandboxUnavailableError:
                    raise  # the sandbox is gone, or its engine: not a file to skip
                except (PathError, SandboxError):
                    searched += 1
                    continue  # unreadable, vanished, a pseudo file the engine cannot archive: skipped
                searched += 1
                text = _text.decode_text(data)
                if text is not None:  # None for a binary file (a NUL byte anywhere), as ripgrep skips it
                    collector.extend((file.path, number, line) for number, line in search_lines(regex, text))
        found = collector.result()
        if not bound.cancelled_caught:
            return found
        reason = (
            f"there is no ripgrep in this sandbox and the slower search ran out of time "
            f"({self.fallback_grep_seconds:g} s) after {searched:,} of {len(files):,} files; the other "
            f"{len(files) - searched:,} were not searched (narrow the path or glob, or install ripgrep in the image)"
        )
        return _shell.SearchStopped(list(found), total=found.total, reason=reason)
