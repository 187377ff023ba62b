"""``FilesystemBackend``: a directory on the local disk, seen as the backend's ``/``.

Each operation is one hop to a worker thread that does all of its blocking work (resolve, open, read, close), so
the event loop never waits on the disk and a call costs one hop, not one per syscall. Grep is ripgrep run as an
async subprocess. With ``virtual_mode=True`` every change goes to an in-memory overlay and the disk is only read.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import BinaryIO, TypeVar

import anyio.to_thread

from agent_backends import _paths, _text
from agent_backends._glob import GlobMatcher, split_file_filter
from agent_backends._grep import DEFAULT_MAX_MATCHES, MatchCollector
from agent_backends._ripgrep import run_rg
from agent_backends.backends._base import StorageBackend, is_dir_error, map_os_error, not_a_dir, not_found
from agent_backends.backends.state import StateBackend
from agent_backends.exceptions import PathError, PathEscapeError, PathNotFoundError
from agent_backends.types import FileData, FileInfo, GrepMatches

__all__ = ("FilesystemBackend",)

_CHUNK = 64 * 1024
_T = TypeVar("_T")


def _chunks(handle: BinaryIO) -> Iterator[bytes]:
    while chunk := handle.read(_CHUNK):
        yield chunk


def _info(path: str, st: os.stat_result) -> FileInfo:
    is_dir = stat.S_ISDIR(st.st_mode)
    return FileInfo(
        path=path,
        name=_paths.split_name(path),
        is_dir=is_dir,
        size=None if is_dir else st.st_size,
        modified_at=datetime.fromtimestamp(st.st_mtime, UTC),
    )


class FilesystemBackend(StorageBackend):
    """Real files under ``root_dir`` (created if missing); nothing outside it is ever read or written.

    Args:
        root_dir: the directory that is this backend's ``/``.
        virtual_mode: keep writes, edits and deletes in memory (``virtual_files``); the disk is only read.
        max_grep_matches: cap on the lines ``grep_raw`` returns (``None``: no cap).
    """

    def __init__(
        self,
        root_dir: str | os.PathLike[str] = ".",
        *,
        virtual_mode: bool = False,
        max_grep_matches: int | None = DEFAULT_MAX_MATCHES,
    ) -> None:
        super().__init__(max_grep_matches=max_grep_matches)
        self.root_dir: str = os.path.abspath(os.fspath(root_dir))
        self.virtual_mode = virtual_mode
        self._root_real: str | None = None
        self._overlay = StateBackend(max_grep_matches=None)
        self._whiteouts: set[str] = set()

    @property
    def virtual_files(self) -> dict[str, FileData]:
        """The files written in virtual mode, path to ``FileData`` (a copy; empty when not virtual)."""
        return dict(self._overlay.files)

    # --- blocking helpers, run in a worker thread -----------------------------------------------------------

    def _root(self) -> str:
        if self._root_real is None:
            os.makedirs(self.root_dir, exist_ok=True)
            self._root_real = os.path.realpath(self.root_dir)
        return self._root_real

    def _real(self, path: str) -> str:
        return _paths.resolve_inside(self._root(), path)

    async def _run(self, path: str, fn: Callable[[str], _T]) -> _T:
        """Resolve ``path`` and run ``fn(real_path)`` in a worker thread, mapping ``OSError`` to ``PathError``."""

        def work() -> _T:
            try:
                return fn(self._real(path))
            except OSError as exc:
                if isinstance(exc, PathError):
                    raise
                raise map_os_error(exc, path) from exc

        return await anyio.to_thread.run_sync(work)

    def _stat_sync(self, path: str, real: str) -> FileInfo | None:
        try:
            return _info(path, os.stat(real))
        except (FileNotFoundError, NotADirectoryError):
            return None

    def _list_sync(self, path: str, real: str) -> list[FileInfo]:
        root = self._root()
        entries: list[FileInfo] = []
        with os.scandir(real) as it:
            for entry in it:
                child = _paths.join(path, entry.name)
                try:
                    if entry.is_symlink():
                        _paths.resolve_inside(root, child)
                    entries.append(_info(child, entry.stat()))
                except (PathEscapeError, OSError):
                    continue  # a dangling link or one that leaves the root is not listed
        return entries

    def _read_sync(self, path: str, real: str, offset: int, limit: int) -> str:
        with open(real, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            return _text.render_read(_chunks(handle), path=path, offset=offset, limit=limit, size=size)

    @staticmethod
    def _read_bytes_sync(real: str) -> bytes:
        with open(real, "rb") as handle:
            return handle.read()

    def _write_sync(self, path: str, real: str, data: bytes) -> None:
        if os.path.isdir(real):
            raise is_dir_error(path)
        parent = os.path.dirname(real)
        os.makedirs(parent, exist_ok=True)
        real = self._real(path)  # parents now exist: resolve again, so a link among them cannot lead outside
        fd, tmp = tempfile.mkstemp(dir=parent, prefix=f".{os.path.basename(real)}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            with contextlib.suppress(FileNotFoundError):
                os.chmod(tmp, stat.S_IMODE(os.stat(real).st_mode))
            os.replace(tmp, real)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    @staticmethod
    def _delete_sync(path: str, real: str, recursive: bool) -> None:
        if os.path.isdir(real) and not os.path.islink(real):
            if not recursive:
                raise is_dir_error(path)
            shutil.rmtree(real)
        else:
            os.unlink(real)

    def _glob_sync(self, matcher: GlobMatcher, real_base: str) -> list[FileInfo]:
        root = self._root()
        found: list[FileInfo] = []
        max_depth = None if matcher.recursive else matcher.depth
        name_only = matcher.name_only
        stack: list[tuple[str, str, int]] = [(real_base, "", 1)]
        while stack:
            directory, prefix, depth = stack.pop()
            try:
                with os.scandir(directory) as it:
                    entries = list(it)
            except OSError:
                continue
            for entry in entries:
                try:
                    if entry.is_dir(follow_symlinks=False):
                        if max_depth is None or depth < max_depth:
                            stack.append((entry.path, f"{prefix}{entry.name}/", depth + 1))
                        continue
                    if name_only is not None:
                        if name_only.fullmatch(entry.name) is None:
                            continue
                    elif not matcher.match(prefix + entry.name):
                        continue
                    path = _paths.join(matcher.base, prefix + entry.name)
                    if entry.is_symlink():
                        if not os.path.isfile(_paths.resolve_inside(root, path)):
                            continue
                    elif not entry.is_file():
                        continue
                    found.append(_info(path, entry.stat()))
                except (PathEscapeError, OSError):
                    continue
        return found

    # --- primitives ------------------------------------------------------------------------------------------

    def _hidden(self, path: str) -> bool:
        """In virtual mode, whether a disk path was deleted by the overlay."""
        return bool(self._whiteouts) and any(_paths.is_within(path, gone) for gone in self._whiteouts)

    async def _overlaid(self, path: str) -> bool:
        """In virtual mode, whether the overlay answers for ``path`` (written there, or deleted from disk)."""
        return self._hidden(path) or await self._overlay.exists(path)

    async def _stat(self, path: str) -> FileInfo | None:
        if self.virtual_mode:
            overlaid = await self._overlay._stat(path)  # pyright: ignore[reportPrivateUsage]
            if overlaid is not None or self._hidden(path):
                return overlaid
        return await self._run(path, lambda real: self._stat_sync(path, real))

    async def _list(self, path: str) -> list[FileInfo]:
        if not self.virtual_mode:
            return await self._run(path, lambda real: self._list_sync(path, real))
        info = await self._stat(path)
        if info is None:
            raise not_found(path)
        if not info.is_dir:
            raise not_a_dir(path)
        merged: dict[str, FileInfo] = {}
        if not self._hidden(path):
            with contextlib.suppress(PathNotFoundError):
                listed = await self._run(path, lambda real: self._list_sync(path, real))
                merged = {entry.path: entry for entry in listed if not self._hidden(entry.path)}
        with contextlib.suppress(PathNotFoundError):
            merged.update({entry.path: entry for entry in await self._overlay.ls_info(path)})
        return list(merged.values())

    async def _read(self, path: str, offset: int, limit: int) -> str:
        if self.virtual_mode and await self._overlaid(path):
            return await self._overlay.read(path, offset, limit)
        return await self._run(path, lambda real: self._read_sync(path, real, offset, limit))

    async def _read_bytes(self, path: str) -> bytes:
        if self.virtual_mode and await self._overlaid(path):
            return await self._overlay.read_bytes(path)
        return await self._run(path, self._read_bytes_sync)

    async def _write_bytes(self, path: str, data: bytes) -> None:
        if not self.virtual_mode:
            return await self._run(path, lambda real: self._write_sync(path, real, data))
        await self._run(path, lambda real: None)  # the path must still resolve inside the root
        if (info := await self._stat(path)) is not None and info.is_dir:
            raise is_dir_error(path)
        await self._overlay._write_bytes(path, data)  # pyright: ignore[reportPrivateUsage]
        self._whiteouts.discard(path)
        return None

    async def _delete(self, path: str, recursive: bool) -> None:
        if not self.virtual_mode:
            return await self._run(path, lambda real: self._delete_sync(path, real, recursive))
        info = await self._stat(path)
        if info is None:
            raise not_found(path)
        if info.is_dir and not recursive:
            raise is_dir_error(path)
        with contextlib.suppress(PathError):
            await self._overlay.delete(path, recursive=recursive)
        self._whiteouts.add(path)
        return None

    async def _glob(self, matcher: GlobMatcher) -> list[FileInfo]:
        try:
            found = await self._run(matcher.base, lambda real: self._glob_sync(matcher, real))
        except PathError:
            found = []
        if not self.virtual_mode:
            return found
        overlaid = await self._overlay._glob(matcher)  # pyright: ignore[reportPrivateUsage]
        shadowed = {info.path for info in overlaid}
        return [info for info in found if info.path not in shadowed and not self._hidden(info.path)] + overlaid

    async def _grep(self, pattern: str, path: str, glob: str | None) -> GrepMatches | str:
        collector = MatchCollector(self.max_grep_matches)

        def target(real: str) -> str | None:
            if not os.path.exists(real):
                raise not_found(path)
            if os.path.isfile(real):
                with open(real, "rb") as handle:
                    if _text.is_binary(handle.read(_text.SNIFF_BYTES)):
                        return None
            return os.path.relpath(real, self._root())

        relative: str | None = None
        if not self._hidden(path):
            try:
                relative = await self._run(path, target)
            except PathError:
                if not self.virtual_mode or await self._stat(path) is None:
                    raise
        globs, accept = split_file_filter(glob, path)
        if self.virtual_mode:
            inner, overlay = accept, self._overlay

            def accept_visible(found: str) -> bool:
                return not self._hidden(found) and found not in overlay.files and (inner is None or inner(found))

            accept = accept_visible
        if relative is not None:
            targets = [] if relative == "." else [relative]
            error = await run_rg(
                pattern, cwd=self._root(), targets=targets, globs=globs, collector=collector, accept=accept
            )
            if error is not None:
                return error
        if self.virtual_mode:
            overlaid = await self._overlay.grep_raw(pattern, path, glob)
            if isinstance(overlaid, str):
                return overlaid
            collector.extend((m.path, m.line_number, m.line) for m in overlaid)
        return collector.result()
