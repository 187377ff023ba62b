"""The one implementation of the file protocol; a backend subclasses it and supplies storage primitives.

Path checks, the split between error values and exceptions, edit locking and batch transfers live here, so every
backend behaves the same. Primitives receive normalized backend paths and raise ``PathError`` subclasses.
"""

from __future__ import annotations

import errno
import functools
from abc import ABC, abstractmethod
from collections.abc import Sequence
from types import TracebackType
from typing import Self
from weakref import WeakValueDictionary

import anyio
import anyio.to_thread

from agent_backends import _paths, _text
from agent_backends._glob import GlobMatcher, compile_glob
from agent_backends._grep import DEFAULT_MAX_MATCHES
from agent_backends.backends._checkpoints import Checkpoints
from agent_backends.backends._workspace import WorkspaceFiles, boundary
from agent_backends.exceptions import (
    InvalidPathError,
    PathError,
    PathEscapeError,
    PathIsDirectoryError,
    PathNotDirectoryError,
    PathNotFoundError,
    PathPermissionError,
)
from agent_backends.types import EditResult, FileInfo, FileTransfer, GrepMatches, WriteResult

_INLINE_EDIT_BYTES = 256 * 1024

__all__ = ("BatchTransfers", "StorageBackend", "is_dir_error", "map_os_error", "not_a_dir", "not_found")


def not_found(path: str) -> PathNotFoundError:
    return PathNotFoundError(f"'{path}' does not exist", path)


def is_dir_error(path: str) -> PathIsDirectoryError:
    return PathIsDirectoryError(f"'{path}' is a directory", path)


def not_a_dir(path: str) -> PathNotDirectoryError:
    return PathNotDirectoryError(f"'{path}' is not a directory", path)


def map_os_error(exc: OSError, path: str) -> PathError:
    """The library's exception for an ``OSError`` met at ``path``."""
    if exc.errno == errno.ENOENT:
        return not_found(path)
    if exc.errno == errno.EISDIR:
        return is_dir_error(path)
    if exc.errno == errno.ENOTDIR:
        return PathNotDirectoryError(f"'{path}' is not a directory, or a parent of it is a file", path)
    if exc.errno in (errno.EACCES, errno.EPERM):
        return PathPermissionError(f"permission denied: '{path}'", path)
    if exc.errno == errno.ENAMETOOLONG:
        return InvalidPathError(f"path '{path}' has a name longer than the filesystem allows (255 bytes)", path)
    if exc.errno == errno.ELOOP:
        return PathError(f"'{path}': too many levels of symbolic links", path)
    return PathError(f"'{path}': {exc.strerror or exc}", path)


class BatchTransfers(ABC):
    """``upload_files`` / ``download_files`` in terms of ``write`` and ``read_bytes``, for any backend."""

    _cwd: str = "/"

    @abstractmethod
    async def write(self, path: str, content: str | bytes) -> WriteResult: ...

    @abstractmethod
    async def read_bytes(self, path: str) -> bytes: ...

    async def upload_files(self, files: Sequence[tuple[str, bytes]]) -> list[FileTransfer]:
        """Write each ``(path, content)``; results in the same order, a failed file does not stop the rest."""
        results: list[FileTransfer] = []
        for path, content in files:
            written = await self.write(path, content)
            results.append(FileTransfer(path=written.path, error=written.error))
        return results

    async def download_files(self, paths: Sequence[str]) -> list[FileTransfer]:
        """Read each path's bytes; results in the same order, each with its content or its error."""
        results: list[FileTransfer] = []
        for path in paths:
            try:
                content = await self.read_bytes(path)
                results.append(FileTransfer(path=_paths.normalize(path, self._cwd), content=content))
            except PathError as exc:
                results.append(FileTransfer(path=path, error=f"Error: {exc}"))
        return results


class StorageBackend(WorkspaceFiles, BatchTransfers, Checkpoints):
    """Implements ``BackendProtocol`` on top of a few storage primitives (and checkpoints, where supplied)."""

    _cwd: str = "/"
    # Whether concurrent edits of one path must be serialized: true when the primitives can yield mid-edit.
    _serialize_edits: bool = True
    # The namespace (see ``_paths.rebase``): the path naming the backend's root, and (prefix, replacement) pairs
    # accepted on input for paths written another way (a disk backend's host-style paths).
    _root_path: str = "/"
    _aliases: tuple[tuple[str, str], ...] = ()

    def __init__(self, *, max_grep_matches: int | None = DEFAULT_MAX_MATCHES) -> None:
        self.max_grep_matches = max_grep_matches
        self._edit_locks: WeakValueDictionary[str, anyio.Lock] = WeakValueDictionary()

    # --- lifecycle -------------------------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Release resources; idempotent. Storage backends hold none."""

    # --- primitives ------------------------------------------------------------------------------------------

    @abstractmethod
    async def _stat(self, path: str) -> FileInfo | None: ...

    @abstractmethod
    async def _list(self, path: str) -> list[FileInfo]: ...

    @abstractmethod
    async def _read(self, path: str, offset: int, limit: int) -> str: ...

    @abstractmethod
    async def _read_bytes(self, path: str) -> bytes: ...

    @abstractmethod
    async def _write_bytes(self, path: str, data: bytes) -> None: ...

    @abstractmethod
    async def _delete(self, path: str, recursive: bool) -> None: ...

    @abstractmethod
    async def _glob(self, matcher: GlobMatcher) -> list[FileInfo]: ...

    @abstractmethod
    async def _grep(self, pattern: str, path: str, glob: str | None) -> GrepMatches | str: ...

    # --- the protocol ----------------------------------------------------------------------------------------

    @property
    def root_path(self) -> str:
        """The path that names this backend's root in its own namespace: ``/``, except for ``LocalBackend``,
        whose paths are the host's paths under its ``root_dir`` (the same paths its shell sees)."""
        return self._root_path

    def _path(self, path: str) -> str:
        """The normalized path in this backend's namespace, or ``InvalidPathError`` / ``PathEscapeError``."""
        normalized = _paths.normalize(path, self._cwd)
        for old, new in self._aliases:
            moved = _paths.rebase(normalized, old, new)
            if moved is not None:
                return moved
        if self._root_path != "/" and not _paths.is_within(normalized, self._root_path):
            raise PathEscapeError(
                f"path {path!r} is outside this backend's directory {self._root_path}: "
                "use a path under it, or a relative path",
                path,
            )
        return normalized

    async def ls_info(self, path: str = ".") -> list[FileInfo]:
        """List the direct children of a directory (default: the working directory), directories flagged, sorted."""
        entries = await self._list(self._path(path))
        return sorted(entries, key=lambda info: info.path)

    async def read(self, path: str, offset: int = 0, limit: int = 2000) -> str:
        """Read a text file ``cat -n`` style from line ``offset`` (0-based), at most ``limit`` lines."""
        try:
            return await self._read(self._path(path), offset, limit)
        except PathError as exc:
            return f"Error: {exc}"

    async def read_bytes(self, path: str) -> bytes:
        """A file's raw content; raises ``PathNotFoundError`` and friends."""
        with boundary():
            await self._ws_enter()
            return await self._read_bytes(self._path(path))

    async def write(self, path: str, content: str | bytes) -> WriteResult:
        """Create or replace a file (parents created; atomic on disk). ``str`` is written as UTF-8."""
        try:
            normalized = self._path(path)
            data = content.encode() if isinstance(content, str) else content  # a lone surrogate: not encodable
            await self._write_bytes(normalized, data)
        except PathError as exc:
            return WriteResult(path=path, error=f"Error: {exc}")
        except UnicodeEncodeError as exc:
            return WriteResult(path=path, error=f"Error: the content is not valid Unicode text ({exc.reason})")
        return WriteResult(path=normalized)

    async def edit(self, path: str, old_string: str, new_string: str, replace_all: bool = False) -> EditResult:
        """Replace ``old_string`` (exact; unique unless ``replace_all``) with ``new_string``."""
        try:
            normalized = self._path(path)
            if not self._serialize_edits:
                return await self._edit(normalized, old_string, new_string, replace_all)
            lock = self._edit_locks.get(normalized)
            if lock is None:
                lock = self._edit_locks[normalized] = anyio.Lock()
            async with lock:
                return await self._edit(normalized, old_string, new_string, replace_all)
        except PathError as exc:
            return EditResult(path=path, error=f"Error: {exc}")

    async def _edit(self, path: str, old_string: str, new_string: str, replace_all: bool) -> EditResult:
        data = await self._read_bytes(path)
        edit = functools.partial(_text.apply_edit, data, old_string, new_string, replace_all=replace_all, path=path)
        # Large texts are edited off the loop: a replace over megabytes would stall every other task.
        outcome = edit() if len(data) < _INLINE_EDIT_BYTES else await anyio.to_thread.run_sync(edit)
        if outcome.error is not None:
            return EditResult(path=path, error=outcome.error)
        await self._write_bytes(path, outcome.content)
        return EditResult(path=path, occurrences=outcome.occurrences)

    async def glob_info(self, pattern: str, path: str = ".") -> list[FileInfo]:
        """Files (not directories) matching ``pattern`` taken from ``path``, sorted by path."""
        matcher = compile_glob(pattern, self._path(path))
        base = self._path(matcher.base)  # an absolute pattern names its own directory: the same rules apply
        if base != matcher.base:
            matcher = compile_glob(matcher.rest, base)
        return sorted(await self._glob(matcher), key=lambda info: info.path)

    async def grep_raw(self, pattern: str, path: str | None = None, glob: str | None = None) -> GrepMatches | str:
        """Lines matching ``pattern`` (ripgrep syntax) under ``path``, in files whose names match ``glob``."""
        try:
            base = self._path(path if path is not None else self._cwd)
            if glob is not None:
                compile_glob(glob)
            return await self._grep(pattern, base, glob)
        except PathError as exc:
            return f"Error: {exc}"

    async def exists(self, path: str) -> bool:
        """Whether a file or directory exists at ``path``."""
        with boundary():
            await self._ws_enter()
            return await self._stat(self._path(path)) is not None

    async def delete(self, path: str, *, recursive: bool = False) -> None:
        """Remove a file, a symlink itself (never its target), or a directory and everything under it when
        ``recursive``; never the root."""
        normalized = self._path(path)
        if normalized == self._root_path:
            raise PathPermissionError("the root cannot be deleted", path)
        await self._delete(normalized, recursive)
