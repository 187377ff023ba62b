"""Race-free disk access below a root directory, for ``FilesystemBackend`` (blocking: run in a worker thread).

Every path is walked one component at a time from an open descriptor of the root, each component opened relative
to its parent with ``O_NOFOLLOW`` (an ``openat`` walk, as Go's ``os.Root`` and Rust's cap-std confine access). A
symlink is read and its target walked the same way, so a link is followed only while it stays below the root, and
a directory swapped for a link between two calls cannot lead outside: the check and the use are one operation.

Only regular files are opened for reading or writing; FIFOs, sockets and devices are refused on the open
descriptor (opened non-blocking, so a FIFO never blocks). Writes are atomic (a short temporary name, then a rename
in the same directory) except for a file with several hard links, which is rewritten in place so its other names
keep seeing it. Writes and edits of one file serialize on a lock keyed by the file's identity (device, inode), which
follows the file across its atomic replacement, so two names for one file cannot lose an edit.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
import threading
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from typing import BinaryIO
from weakref import WeakValueDictionary

from agent_backends import _paths
from agent_backends.exceptions import (
    PathError,
    PathEscapeError,
    PathIsDirectoryError,
    PathNotDirectoryError,
    PathPermissionError,
    SpecialFileError,
)

__all__ = ("DiskRoot", "Target", "special_kind")

_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_PATH_FLAG = getattr(os, "O_PATH", os.O_RDONLY)
# Looking a name up opens nothing (``O_PATH``); where that flag is missing, a FIFO must still not block the open.
_LOOKUP = _PATH_FLAG | os.O_NOFOLLOW | _CLOEXEC | (0 if hasattr(os, "O_PATH") else os.O_NONBLOCK)
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | _CLOEXEC
_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | _CLOEXEC
_OVERWRITE = os.O_WRONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | _CLOEXEC
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | _CLOEXEC
_MAX_LINKS = 40  # symlinks followed in one walk, the kernel's own bound (MAXSYMLINKS)
_MAX_RETRIES = 256  # looks again at a name that changed under us, before giving up
_CHUNK = 64 * 1024
_SPECIAL = (
    (stat.S_ISFIFO, "fifo"),
    (stat.S_ISSOCK, "socket"),
    (stat.S_ISCHR, "char-device"),
    (stat.S_ISBLK, "block-device"),
)


def special_kind(mode: int) -> str | None:
    """``"fifo"``, ``"socket"``, ``"char-device"`` or ``"block-device"``; ``None`` for files, dirs and links."""
    for test, kind in _SPECIAL:
        if test(mode):
            return kind
    return None


def _refuse_special(path: str, mode: int, *, regular: bool = False) -> None:
    """Refuse a directory, FIFO, socket or device (and with ``regular``, anything but a regular file)."""
    if stat.S_ISDIR(mode):
        raise PathIsDirectoryError(f"'{path}' is a directory", path)
    kind = special_kind(mode)
    if kind is not None:
        raise SpecialFileError(f"'{path}' is a {kind}, not a regular file; it is never opened", path)
    if regular and not stat.S_ISREG(mode):
        raise PathError(f"'{path}' is not a regular file", path)


@dataclass
class Target:
    """Where a walk ended: the entry ``name`` in the open directory ``fd``, or the directory ``fd`` itself when
    ``name`` is ``None``. ``path`` is the canonical backend path (links resolved). Close it (``with``)."""

    fd: int
    name: str | None
    path: str

    def close(self) -> None:
        os.close(self.fd)

    def __enter__(self) -> Target:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def lstat(self) -> os.stat_result | None:
        """The entry's own status (a link is not followed); ``None`` when it does not exist."""
        try:
            return os.stat(self.name or ".", dir_fd=self.fd, follow_symlinks=False)
        except FileNotFoundError:
            return None


class _FileLock:
    __slots__ = ("__weakref__", "lock")

    def __init__(self) -> None:
        self.lock = threading.Lock()


class _IdentityLocks:
    """One lock per file identity (device, inode), kept while someone holds it; a replaced file keeps its lock."""

    def __init__(self) -> None:
        self._locks: WeakValueDictionary[tuple[int, int], _FileLock] = WeakValueDictionary()
        self._guard = threading.Lock()

    def get(self, key: tuple[int, int]) -> _FileLock:
        with self._guard:
            lock = self._locks.get(key)
            if lock is None:
                lock = self._locks[key] = _FileLock()
            return lock

    def peek(self, key: tuple[int, int]) -> _FileLock | None:
        with self._guard:
            return self._locks.get(key)

    def alias(self, key: tuple[int, int], lock: _FileLock) -> None:
        with self._guard:
            self._locks[key] = lock


_LOCKS = _IdentityLocks()  # process-wide: two backends on one directory serialize too


def _identity(st: os.stat_result) -> tuple[int, int]:
    return st.st_dev, st.st_ino


def _chunks(handle: BinaryIO) -> Iterator[bytes]:
    while chunk := handle.read(_CHUNK):
        yield chunk


class DiskRoot:
    """The directory ``real`` (an absolute path without symlinks) seen as ``mount`` in the backend's namespace
    (``/`` unless its paths are host paths); every method takes namespace paths below ``mount`` and is blocking."""

    def __init__(self, real: str, mount: str = "/") -> None:
        self.real = real
        self.mount = mount

    def _open_root(self) -> int:
        return os.open(self.real, _PATH_FLAG | os.O_DIRECTORY | _CLOEXEC)

    def _inside(self, target: str, path: str) -> str:
        """An absolute link target as a path relative to the root, or refuse it."""
        if self.real == "/":
            return target
        if target == self.real or target.startswith(self.real + "/"):
            return target[len(self.real) :]
        raise PathEscapeError(f"path {path!r} resolves outside the backend's root", path)

    def walk(self, path: str, *, follow: bool = True, create: bool = False) -> Target:
        """Resolve the normalized backend ``path`` below the root without ever stepping outside it.

        ``follow``: a link in the last component is followed (else the link itself is the target). ``create``:
        missing parent directories are made. A missing last component is a target with that name.
        """
        inner = path if self.mount == "/" else _paths.rebase(path, self.mount, "/")
        assert inner is not None, "the backend checks that a path is below its root before it reaches the disk"
        fds = [self._open_root()]
        try:
            return self._resolve(inner, path, fds, follow=follow, create=create)
        except BaseException:
            for fd in fds:
                os.close(fd)
            raise

    def _resolve(self, inner: str, path: str, fds: list[int], *, follow: bool, create: bool) -> Target:
        """``walk``'s loop over the root-relative ``inner``: ``fds`` holds the open directories from the root down
        (closed by the caller on error). Messages name ``path``, as the backend's caller wrote it."""
        todo = inner.split("/")[:0:-1] if inner != "/" else []
        names: list[str] = []
        links = 0
        retries = len(todo) + _MAX_RETRIES  # each missing parent is made once, plus races
        while todo:
            name = todo.pop()
            if name in ("", "."):
                continue
            if name == "..":
                if not names:
                    raise PathEscapeError(f"path {path!r} resolves outside the backend's root", path)
                os.close(fds.pop())
                names.pop()
                continue
            final = not todo
            if final and not follow:
                return self._target(fds, names, name)
            try:
                fd = os.open(name, _LOOKUP, dir_fd=fds[-1])
            except FileNotFoundError:
                if final:
                    return self._target(fds, names, name)
                if not create:
                    raise
                retries = self._count(retries, path, "it keeps changing")
                with contextlib.suppress(FileExistsError):
                    os.mkdir(name, dir_fd=fds[-1])
                todo.append(name)
                continue
            mode = os.fstat(fd).st_mode
            if stat.S_ISDIR(mode):
                fds.append(fd)
                names.append(name)
                if final:
                    return self._target(fds, names, None)
                continue
            os.close(fd)
            if stat.S_ISLNK(mode):
                try:
                    link = os.readlink(name, dir_fd=fds[-1])
                except OSError as exc:  # replaced since it was opened: look at the name again
                    if exc.errno not in (errno.EINVAL, errno.ENOENT):
                        raise
                    retries = self._count(retries, path, "it keeps changing")
                    todo.append(name)
                    continue
                links += 1
                if links > _MAX_LINKS:
                    raise PathError(f"'{path}': too many levels of symbolic links", path)
                if link.startswith("/"):
                    link = self._inside(link, path)
                    while len(fds) > 1:
                        os.close(fds.pop())
                    names.clear()
                todo.extend(link.split("/")[::-1])
                continue
            if final:
                return self._target(fds, names, name)
            raise PathNotDirectoryError(f"'{path}' is not a directory, or a parent of it is a file", path)
        return self._target(fds, names, None)

    @staticmethod
    def _count(left: int, path: str, why: str) -> int:
        if left <= 0:
            raise PathError(f"'{path}' could not be resolved: {why}; try again", path)
        return left - 1

    @staticmethod
    def _target(fds: list[int], names: list[str], name: str | None) -> Target:
        for fd in fds[:-1]:
            os.close(fd)
        canonical = "/" + "/".join(names if name is None else [*names, name])
        return Target(fds[-1], name, canonical)

    # --- reading -------------------------------------------------------------------------------------------------

    def stat(self, path: str) -> tuple[str, os.stat_result] | None:
        """The canonical path and status of what ``path`` names (links followed), ``None`` when nothing is there."""
        try:
            with self.walk(path) as target:
                st = os.fstat(target.fd) if target.name is None else target.lstat()
                return None if st is None else (target.path, st)
        except (FileNotFoundError, NotADirectoryError, PathNotDirectoryError):
            return None

    def is_link(self, path: str) -> bool:
        """Whether the last component of ``path`` is a symlink (not followed)."""
        try:
            with self.walk(path, follow=False) as target:
                st = target.lstat()
                return st is not None and stat.S_ISLNK(st.st_mode)
        except (FileNotFoundError, NotADirectoryError, PathNotDirectoryError):
            return False

    def open_file(self, path: str, flags: int = _READ) -> tuple[int, os.stat_result]:
        """An open descriptor of the regular file at ``path``; a directory or special file is refused unopened."""
        with self.walk(path) as target:
            if target.name is None:
                raise PathIsDirectoryError(f"'{path}' is a directory", path)
            return self._open_at(target, path, flags)

    @staticmethod
    def _open_at(target: Target, path: str, flags: int) -> tuple[int, os.stat_result]:
        assert target.name is not None
        before = os.stat(target.name, dir_fd=target.fd, follow_symlinks=False)
        _refuse_special(path, before.st_mode)  # a device is never opened, not even non-blocking
        fd = os.open(target.name, flags, dir_fd=target.fd)
        try:
            st = os.fstat(fd)
            _refuse_special(path, st.st_mode, regular=True)  # swapped between the two looks
        except BaseException:
            os.close(fd)
            raise
        return fd, st

    def read_with(self, path: str, use: Callable[[Iterator[bytes], int], str]) -> str:
        """``use(chunks, size)`` over the regular file at ``path``, read lazily."""
        fd, st = self.open_file(path)
        with os.fdopen(fd, "rb") as handle:
            return use(_chunks(handle), st.st_size)

    def read_bytes(self, path: str) -> bytes:
        fd, _ = self.open_file(path)
        with os.fdopen(fd, "rb") as handle:
            return handle.read()

    def scandir(self, path: str) -> tuple[str, list[os.DirEntry[str]], int]:
        """The canonical path, the entries and an open directory descriptor (the caller closes it)."""
        with self.walk(path) as target:
            if target.name is not None:
                st = target.lstat()
                if st is None:
                    raise FileNotFoundError(errno.ENOENT, "not found", path)
                raise PathNotDirectoryError(f"'{path}' is not a directory", path)
            fd = os.open(".", _DIR, dir_fd=target.fd)
        try:
            with os.scandir(fd) as it:
                return target.path, list(it), fd
        except BaseException:
            os.close(fd)
            raise

    def list_dir(self, path: str) -> list[tuple[str, os.stat_result | None]]:
        """Each entry of the directory ``path``: (its path, its status), a symlink's target followed while it stays
        inside (``None`` for one that dangles, loops or leaves the root); entries gone since the listing are left
        out."""
        _, entries, fd = self.scandir(path)
        try:
            listed: list[tuple[str, os.stat_result | None]] = []
            for entry in entries:
                child = _paths.join(path, entry.name)
                if entry.is_symlink():
                    try:
                        found = self.stat(child)
                    except (PathError, OSError):
                        found = None
                    listed.append((child, None if found is None else found[1]))
                else:
                    with contextlib.suppress(OSError):
                        listed.append((child, entry.stat(follow_symlinks=False)))
            return listed
        finally:
            os.close(fd)

    def walk_files(self, base: str, max_depth: int | None) -> Iterator[tuple[str, list[os.DirEntry[str]]]]:
        """Every directory under ``base`` (``base`` first) as (its path relative to ``base`` with a trailing ``/``,
        ``""`` for ``base`` itself; its entries, directories among them), links not descended. One item per
        directory, not per file, so the caller's loop over a directory's entries is its own tight loop.

        Each directory is opened relative to its parent; a parent's descriptor stays open only while its entries
        are consumed (their ``stat()`` needs it: until the next item is asked for) or children of it wait to be
        opened, so open descriptors grow with depth, not with the size of the tree.
        """
        try:
            _, entries, fd = self.scandir(base)
        except (OSError, PathError):
            return
        stack: list[tuple[_Dir, str, str, int]] = []
        directory: _Dir | None = _Dir(fd)
        prefix, depth = "", 1
        try:
            while True:
                if directory is not None:
                    self._push(stack, directory, entries, prefix, depth, max_depth)
                    try:
                        yield prefix, entries
                    finally:
                        directory.release()
                if not stack:
                    return
                parent, name, prefix, depth = stack.pop()
                prefix, depth, directory = f"{prefix}{name}/", depth + 1, self._open_child(parent, name)
                entries = []
                if directory is not None:
                    try:
                        with os.scandir(directory.fd) as it:
                            entries = list(it)
                    except OSError:
                        entries = []
        finally:
            for parent, *_ in stack:
                parent.release()

    @staticmethod
    def _open_child(parent: _Dir, name: str) -> _Dir | None:
        try:
            return _Dir(os.open(name, _DIR, dir_fd=parent.fd))
        except OSError:
            return None
        finally:
            parent.release()

    @staticmethod
    def _push(
        stack: list[tuple[_Dir, str, str, int]],
        directory: _Dir,
        entries: list[os.DirEntry[str]],
        prefix: str,
        depth: int,
        max_depth: int | None,
    ) -> None:
        if max_depth is None or depth < max_depth:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    directory.refs += 1
                    stack.append((directory, entry.name, prefix, depth))

    # --- changing ------------------------------------------------------------------------------------------------

    def write(self, path: str, data: bytes) -> None:
        """Create or replace the file at ``path`` (parents made), through a link in the last component."""
        with self.walk(path, create=True) as target:
            if target.name is None:
                raise PathIsDirectoryError(f"'{path}' is a directory", path)
            with self._locked(target, path, missing_ok=True) as held:
                if held is None:
                    self._replace(target, data, None, None)
                else:
                    self._store(target, path, data, held[1], held[2])

    def edit(self, path: str, change: Callable[[bytes], bytes | None]) -> None:
        """Read the file, and write back ``change(data)`` unless it is ``None``, holding the file's lock."""
        with self.walk(path) as target:
            if target.name is None:
                raise PathIsDirectoryError(f"'{path}' is a directory", path)
            with self._locked(target, path, missing_ok=False) as held:
                assert held is not None
                fd, st, lock = held
                with os.fdopen(os.dup(fd), "rb") as handle:
                    new = change(handle.read())
                if new is not None:
                    self._store(target, path, new, st, lock)

    @contextlib.contextmanager
    def _locked(
        self, target: Target, path: str, *, missing_ok: bool
    ) -> Generator[tuple[int, os.stat_result, _FileLock] | None]:
        """The file at ``target``, open for reading, under its identity lock (``None``: no file there).

        The lock is taken on what the name showed, then the name is opened: if it now names a file that does not
        share that lock (replaced by someone else meanwhile), look again.
        """
        assert target.name is not None
        for _ in range(_MAX_RETRIES):
            seen = target.lstat()
            if seen is None:
                if not missing_ok:
                    raise FileNotFoundError(errno.ENOENT, "not found", path)
                yield None
                return
            _refuse_special(path, seen.st_mode)
            lock = _LOCKS.get(_identity(seen))
            with lock.lock:
                try:
                    fd, st = self._open_at(target, path, _READ)
                except FileNotFoundError:
                    continue
                try:
                    if _LOCKS.peek(_identity(st)) is lock:
                        yield fd, st, lock
                        return
                finally:
                    os.close(fd)
        raise PathError(f"'{path}' keeps changing; try again", path)

    def _store(self, target: Target, path: str, data: bytes, st: os.stat_result, lock: _FileLock) -> None:
        """Replace the held file atomically, or in place when other hard links name it (they keep seeing it)."""
        if st.st_nlink <= 1:
            self._replace(target, data, st, lock)
            return
        out, now = self._open_at(target, path, _OVERWRITE)
        try:
            if _identity(now) != _identity(st):
                raise PathError(f"'{path}' was replaced while it was being written; try again", path)
            os.ftruncate(out, 0)
            view = memoryview(data)
            written = 0
            while written < len(view):
                written += os.pwrite(out, view[written:], written)
        finally:
            os.close(out)

    @staticmethod
    def _replace(target: Target, data: bytes, old: os.stat_result | None, lock: _FileLock | None) -> None:
        """Write ``data`` to a new file beside the target and rename it over the target (atomic)."""
        assert target.name is not None
        tmp = f".ab-{secrets.token_hex(6)}.tmp"  # short: a 255-byte name still has room for it
        fd = os.open(tmp, _CREATE, 0o666 if old is None else stat.S_IMODE(old.st_mode), dir_fd=target.fd)
        try:
            try:
                with os.fdopen(os.dup(fd), "wb") as handle:
                    handle.write(data)
                if old is not None:
                    os.fchmod(fd, stat.S_IMODE(old.st_mode))
                if lock is not None:
                    _LOCKS.alias(_identity(os.fstat(fd)), lock)
            finally:
                os.close(fd)
            os.replace(tmp, target.name, src_dir_fd=target.fd, dst_dir_fd=target.fd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=target.fd)
            raise

    def delete(self, path: str, *, recursive: bool) -> None:
        """Remove the entry ``path`` names: a link itself (never what it points to), a file, or a directory tree."""
        root = self._open_root()
        try:
            root_id = _identity(os.fstat(root))
        finally:
            os.close(root)
        with self.walk(path, follow=False) as target:
            st = target.lstat()
            if st is None:
                raise FileNotFoundError(errno.ENOENT, "not found", path)
            if target.name is None or _identity(st) == root_id:
                raise PathPermissionError("the root cannot be deleted", path)
            if not stat.S_ISDIR(st.st_mode):
                os.unlink(target.name, dir_fd=target.fd)
                return
            if not recursive:
                raise PathIsDirectoryError(f"'{path}' is a directory", path)
            _remove_tree(target.fd, target.name, path)


class _Dir:
    """A directory descriptor, closed once it and the children waiting to be opened from it let go of it."""

    __slots__ = ("fd", "refs")

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.refs = 1

    def release(self) -> None:
        self.refs -= 1
        if self.refs == 0:
            os.close(self.fd)


def _remove_tree(parent: int, name: str, path: str) -> None:
    """Remove the directory ``name`` in ``parent`` and everything below it, iteratively (any depth) and without
    following a link. At most two directories are open: climbing back uses ``..``, checked against the identity
    remembered on the way down."""
    current = os.open(name, _DIR, dir_fd=parent)
    ids = [_identity(os.fstat(current))]
    names = [name]
    try:
        while True:
            child = None
            with os.scandir(current) as it:
                for entry in it:
                    if entry.is_dir(follow_symlinks=False):
                        child = entry.name
                        break
                    os.unlink(entry.name, dir_fd=current)
            if child is not None:
                below = os.open(child, _DIR, dir_fd=current)
                os.close(current)
                current = below
                ids.append(_identity(os.fstat(current)))
                names.append(child)
                continue
            if len(names) == 1:
                break
            above = os.open("..", _DIR, dir_fd=current)
            os.close(current)
            current = above
            ids.pop()
            if _identity(os.fstat(current)) != ids[-1]:
                raise PathError(f"'{path}' was moved while it was being deleted; stopped", path)
            os.rmdir(names.pop(), dir_fd=current)
    finally:
        os.close(current)
    os.rmdir(name, dir_fd=parent)
