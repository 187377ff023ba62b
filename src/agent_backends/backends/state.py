"""``StateBackend``: files in a dict, for tests and scratch space. No I/O, no thread hops.

Directories are implied by the files under them, as in an object store: an empty directory does not exist, unless
the workspace API's ``make_dir`` made it (it then stays until removed). A children index keeps listing and directory
checks proportional to what they return, not to the whole store.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Self

from agent_backends import _paths, _text
from agent_backends._glob import GlobMatcher, compile_name_filter
from agent_backends._grep import DEFAULT_MAX_MATCHES, MatchCollector, compile_pattern_async, search_contents
from agent_backends.backends._base import StorageBackend, is_dir_error, not_a_dir, not_found
from agent_backends.backends._memory_checkpoints import MemoryCheckpoints
from agent_backends.exceptions import PathExistsError
from agent_backends.types import FileData, FileInfo, GrepMatches

__all__ = ("StateBackend",)


class StateBackend(MemoryCheckpoints, StorageBackend):
    """In-memory storage: fast, isolated, gone when the process ends.

    Its primitives never yield to the event loop, so an edit is atomic without a lock.

    Args:
        files: initial content, path to ``str`` (UTF-8), ``bytes`` or ``FileData``.
        max_grep_matches: cap on the lines ``grep_raw`` returns (``None``: no cap).
    """

    def __init__(
        self,
        files: Mapping[str, str | bytes | FileData] | None = None,
        *,
        max_grep_matches: int | None = DEFAULT_MAX_MATCHES,
    ) -> None:
        super().__init__(max_grep_matches=max_grep_matches)
        self._files: dict[str, FileData] = {}
        self._children: dict[str, set[str]] = {"/": set()}
        # ``FileInfo`` of listed paths, made on first listing and dropped when the path changes: a listing of an
        # unchanged directory builds no models (they are frozen, so handing out the same one again is safe).
        self._infos: dict[str, FileInfo] = {}
        # Each directory's children in sorted order, made on first use and dropped when its children change: a
        # listing is then already sorted, and grep visits files near path order (its final sort has little to do).
        self._sorted: dict[str, list[str]] = {}
        self._kept: set[str] = set()  # directories ``make_dir`` made: they stay when their last file goes
        for path, content in (files or {}).items():
            data = content if isinstance(content, FileData) else None
            raw = content.encode() if isinstance(content, str) else content if isinstance(content, bytes) else b""
            self._put(self._path(path), data or FileData(content=raw))

    _serialize_edits = False
    _ws_kind = "state"

    @property
    def files(self) -> Mapping[str, FileData]:
        """A read-only live view: backend path to ``FileData``."""
        return MappingProxyType(self._files)

    # --- index -----------------------------------------------------------------------------------------------

    def _put(self, path: str, data: FileData) -> None:
        if path in self._children:
            raise is_dir_error(path)
        if path not in self._files:
            child, parent = path, path.rsplit("/", 1)[0] or "/"
            while True:
                if parent in self._files:
                    raise not_a_dir(parent)
                siblings = self._children.get(parent)
                self._sorted.pop(parent, None)
                if siblings is not None:
                    siblings.add(child)
                    break
                self._children[parent] = {child}
                child, parent = parent, parent.rsplit("/", 1)[0] or "/"
        if self._journal is not None:
            self._journal.record(path, self._files.get(path), data)
        self._files[path] = data
        self._infos.pop(path, None)

    def _remove_file(self, path: str) -> None:
        if self._journal is not None:
            self._journal.record(path, self._files[path], None)
        del self._files[path]
        self._unlink(path)

    async def fork(self) -> Self:
        """A new, independent backend holding the same files (their bytes are shared, nothing is copied)."""
        return type(self)(dict(self._files), max_grep_matches=self.max_grep_matches)

    def _unlink(self, path: str) -> None:
        self._infos.pop(path, None)
        child = path
        while child != "/":
            parent = child.rsplit("/", 1)[0] or "/"
            siblings = self._children[parent]
            siblings.discard(child)
            self._sorted.pop(parent, None)
            if siblings or parent == "/" or parent in self._kept:
                break
            del self._children[parent]
            self._infos.pop(parent, None)
            child = parent

    def _file(self, path: str) -> FileData:
        data = self._files.get(path)
        if data is None:
            raise is_dir_error(path) if path in self._children else not_found(path)
        return data

    def _info(self, path: str) -> FileInfo:
        info = self._infos.get(path)
        if info is None:
            data = self._files.get(path)
            name = path.rsplit("/", 1)[-1]
            if data is None:
                info = FileInfo(path=path, name=name, is_dir=True)
            else:
                info = FileInfo(path=path, name=name, size=len(data.content), modified_at=data.modified_at)
            self._infos[path] = info
        return info

    def _sorted_children(self, directory: str) -> list[str]:
        children = self._sorted.get(directory)
        if children is None:
            children = self._sorted[directory] = sorted(self._children[directory])
        return children

    def _files_under(self, base: str) -> list[str]:
        """The files below ``base`` (or ``base`` itself), sorted by path."""
        if base in self._files:
            return [base]
        if base not in self._children:
            return []
        found: list[str] = []
        stack = [base]
        while stack:
            for child in self._sorted_children(stack.pop()):
                if child in self._files:
                    found.append(child)
                else:
                    stack.append(child)
        found.sort()  # already in order within each directory: little left to do
        return found

    # --- primitives ------------------------------------------------------------------------------------------

    async def _stat(self, path: str) -> FileInfo | None:
        if path in self._files or path in self._children:
            return self._info(path)
        return None

    async def _list(self, path: str) -> list[FileInfo]:
        children = self._children.get(path)
        if children is None:
            raise not_a_dir(path) if path in self._files else not_found(path)
        infos, info = self._infos, self._info
        return [infos.get(child) or info(child) for child in self._sorted_children(path)]

    async def _read(self, path: str, offset: int, limit: int) -> str:
        return _text.render_bytes(self._file(path).content, path=path, offset=offset, limit=limit)

    async def _read_bytes(self, path: str) -> bytes:
        return self._file(path).content

    async def _write_bytes(self, path: str, data: bytes) -> None:
        old = self._files.get(path)
        now = datetime.now(UTC)
        created = old.created_at if old is not None else now
        self._put(path, FileData(content=data, created_at=created, modified_at=now))

    async def _delete(self, path: str, recursive: bool) -> None:
        if path in self._files:
            self._remove_file(path)
            return
        if path not in self._children:
            raise not_found(path)
        if not recursive:
            raise is_dir_error(path)
        for file in self._files_under(path):
            self._remove_file(file)
        if self._kept:
            gone = [kept for kept in self._kept if _paths.is_within(kept, path)]
            self._kept.difference_update(gone)
            for kept in sorted(gone, key=len, reverse=True):  # deepest first: each is empty by its turn
                if kept in self._children and not self._children[kept]:
                    del self._children[kept]
                    self._sorted.pop(kept, None)
                    self._unlink(kept)

    async def _ws_make_dir(self, path: str) -> None:
        """``mkdir -p``: the directory (and its parents) exist from now until removed, even while empty."""
        if path in self._files:
            raise PathExistsError(f"'{path}' exists and is not a directory", path)
        parent = path
        while parent != "/" and parent not in self._children:
            parent = parent.rsplit("/", 1)[0] or "/"
            if parent in self._files:
                raise not_a_dir(parent)
        if path not in self._children:
            self._children[path] = set()
            child, parent = path, path.rsplit("/", 1)[0] or "/"
            while True:
                siblings = self._children.get(parent)
                self._sorted.pop(parent, None)
                self._infos.pop(parent, None)
                if siblings is not None:
                    siblings.add(child)
                    break
                self._children[parent] = {child}
                child, parent = parent, parent.rsplit("/", 1)[0] or "/"
        self._kept.add(path)

    async def _glob(self, matcher: GlobMatcher) -> list[FileInfo]:
        return [
            self._info(path)
            for path in self._files_under(matcher.base)
            if path != matcher.base and matcher.match(_paths.relative_to(path, matcher.base))
        ]

    async def _grep(self, pattern: str, path: str, glob: str | None) -> GrepMatches | str:
        regex = await compile_pattern_async(pattern)
        if isinstance(regex, str):
            return regex
        if await self._stat(path) is None:
            raise not_found(path)
        name_filter = compile_name_filter(glob) if glob is not None else None
        files = self._files
        selected = self._files_under(path)
        if name_filter is not None:
            # Relative to ``path``: "" for a file named explicitly, which the filter always accepts, as ripgrep does.
            selected = [file for file in selected if name_filter.fullmatch(_paths.relative_to(file, path))]
        collector = MatchCollector(self.max_grep_matches)
        collector.extend(search_contents(regex, selected, [files[file].content for file in selected]))
        return collector.result()
