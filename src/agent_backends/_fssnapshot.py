"""Snapshots of a directory tree below a ``DiskRoot``, kept outside it (blocking: run in a worker thread).

A snapshot is a directory ``<store>/<id>/`` holding ``manifest.json`` (every entry: directory, file or symlink,
with its mode, size and identity) and ``blobs/``, one file per regular file. A blob is a reflink of the original
where the filesystem can share blocks (btrfs, XFS), else a copy; a file unchanged since the previous snapshot (same
inode, change time and size) is a hard link to that snapshot's blob, so it costs no space twice. Blobs are never
written after they are made, so the links cannot change a snapshot.

Taking a snapshot never follows a link: links are recorded as links, and the tree is read through descriptors from
the root down, as ``DiskRoot`` does. FIFOs, sockets and devices are not recorded. Restoring makes the tree equal to
the manifest: what is not in it is removed (a link itself, never its target), what changed is put back from its
blob with its mode and modification time, what did not change (same inode, change time and size) is left alone.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import secrets
import shutil
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from agent_backends import _paths
from agent_backends._fsroot import DiskRoot

__all__ = ("SnapshotStore", "TakenSnapshot")

_FICLONE = 0x40049409  # ioctl: share the source's blocks (btrfs, XFS with reflink)
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_MANIFEST = "manifest.json"


@dataclass(frozen=True)
class TakenSnapshot:
    """What a snapshot holds: regular files, their bytes, and the bytes of blobs it did not share."""

    files: int
    size: int
    stored: int


def _identity(st: os.stat_result) -> list[int]:
    return [st.st_dev, st.st_ino, st.st_ctime_ns, st.st_size]


def _walk(top: int) -> Iterator[tuple[str, os.stat_result, int, str]]:
    """Every entry below the directory ``top`` (an ``O_PATH`` descriptor): (relative path, its own status, parent
    descriptor, name). Links are not followed nor descended; the parent is open while its entries are handled."""
    stack: list[tuple[int, str]] = [(os.open(".", _DIR, dir_fd=top), "")]
    try:
        while stack:
            fd, prefix = stack.pop()
            try:
                with os.scandir(fd) as it:
                    entries = sorted(it, key=lambda entry: entry.name)
                for entry in entries:
                    st = entry.stat(follow_symlinks=False)
                    yield prefix + entry.name, st, fd, entry.name
                    if stat.S_ISDIR(st.st_mode):
                        with contextlib.suppress(OSError):  # gone or unreadable since it was listed
                            stack.append((os.open(entry.name, _DIR, dir_fd=fd), f"{prefix}{entry.name}/"))
            finally:
                os.close(fd)
    finally:
        for fd, _ in stack:
            os.close(fd)


def _clone(source: int, target: int) -> bool:
    """Copy ``source`` into ``target`` (both open), sharing blocks where the filesystem can; whether it did."""
    try:
        fcntl.ioctl(target, _FICLONE, source)
        return True
    except OSError:
        pass
    os.lseek(source, 0, os.SEEK_SET)
    while True:
        try:
            if os.copy_file_range(source, target, 1 << 30) == 0:
                return False
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
                raise
            break
    while chunk := os.read(source, 1 << 20):
        os.write(target, chunk)
    return False


class SnapshotStore:
    """The snapshots of one disk root, each a directory under ``directory``."""

    def __init__(self, directory: str) -> None:
        self.directory = directory

    def _path(self, snapshot_id: str) -> str:
        return os.path.join(self.directory, snapshot_id)

    def exists(self, snapshot_id: str) -> bool:
        return os.path.isfile(os.path.join(self._path(snapshot_id), _MANIFEST))

    def ids(self) -> list[str]:
        """The ids of complete snapshots, oldest first."""
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return []
        complete = [name for name in names if self.exists(name)]
        return sorted(complete, key=lambda name: os.stat(os.path.join(self._path(name), _MANIFEST)).st_mtime_ns)

    def _manifest(self, snapshot_id: str) -> dict[str, dict[str, Any]]:
        with open(os.path.join(self._path(snapshot_id), _MANIFEST), "rb") as handle:
            manifest: dict[str, dict[str, Any]] = json.load(handle)
        return manifest

    def meta(self, snapshot_id: str) -> bytes:
        """What ``take`` was given to keep beside the snapshot (its description)."""
        with open(os.path.join(self._path(snapshot_id), "meta.json"), "rb") as handle:
            return handle.read()

    def take(
        self, root: DiskRoot, snapshot_id: str, previous: str | None, describe: Callable[[TakenSnapshot], bytes]
    ) -> TakenSnapshot:
        """Record the tree below ``root`` as ``snapshot_id``, sharing unchanged files with ``previous``; the bytes
        ``describe`` returns are kept beside it (``meta``)."""
        before = self._manifest(previous) if previous is not None and self.exists(previous) else {}
        base = self._path(snapshot_id)
        building = f"{base}.partial"
        os.makedirs(os.path.join(building, "blobs"))
        manifest: dict[str, dict[str, Any]] = {}
        files = size = stored = 0
        try:
            with root.walk(root.mount) as top:
                for relative, st, parent, name in _walk(top.fd):
                    mode = stat.S_IMODE(st.st_mode)
                    if stat.S_ISDIR(st.st_mode):
                        manifest[relative] = {"type": "dir", "mode": mode}
                    elif stat.S_ISLNK(st.st_mode):
                        manifest[relative] = {"type": "link", "target": os.readlink(name, dir_fd=parent)}
                    elif stat.S_ISREG(st.st_mode):
                        blob = str(files)
                        files += 1
                        size += st.st_size
                        if not self._share(before.get(relative), st, previous, building, blob):
                            stored += self._copy_in(parent, name, os.path.join(building, "blobs", blob))
                        manifest[relative] = {
                            "type": "file",
                            "mode": mode,
                            "blob": blob,
                            "mtime": st.st_mtime_ns,
                            "id": _identity(st),
                        }
            taken = TakenSnapshot(files, size, stored)
            with open(os.path.join(building, "meta.json"), "wb") as handle:
                handle.write(describe(taken))
            with open(os.path.join(building, _MANIFEST), "w") as handle:
                json.dump(manifest, handle)
            os.rename(building, base)  # complete or absent: a cut-short snapshot is never listed
        except BaseException:
            shutil.rmtree(building, ignore_errors=True)
            raise
        return taken

    def _share(
        self, old: dict[str, Any] | None, st: os.stat_result, previous: str | None, building: str, blob: str
    ) -> bool:
        """Hard-link the previous snapshot's blob when the file did not change since; whether it did."""
        if old is None or previous is None or old.get("type") != "file" or old.get("id") != _identity(st):
            return False
        try:
            os.link(
                os.path.join(self._path(previous), "blobs", str(old["blob"])), os.path.join(building, "blobs", blob)
            )
        except OSError:
            return False
        return True

    @staticmethod
    def _copy_in(parent: int, name: str, blob: str) -> int:
        """Copy the regular file ``name`` in ``parent`` to ``blob``; the bytes it takes of its own."""
        source = os.open(name, _READ, dir_fd=parent)
        try:
            if not stat.S_ISREG(os.fstat(source).st_mode):
                raise OSError(errno.EINVAL, "changed into something other than a regular file", name)
            target = os.open(blob, _CREATE, 0o600)
            try:
                shared = _clone(source, target)
                return 0 if shared else os.fstat(target).st_size
            finally:
                os.close(target)
        finally:
            os.close(source)

    def restore(self, root: DiskRoot, snapshot_id: str) -> None:
        """Make the tree below ``root`` what ``snapshot_id`` recorded."""
        manifest = self._manifest(snapshot_id)
        blobs = os.path.join(self._path(snapshot_id), "blobs")
        current: dict[str, os.stat_result] = {}
        with root.walk(root.mount) as top:
            for relative, st, _, _ in _walk(top.fd):
                current[relative] = st
        gone: set[str] = set()
        for relative, st in current.items():
            parts = relative.split("/")
            if any("/".join(parts[:depth]) in gone for depth in range(1, len(parts))):
                continue  # inside a directory removed already
            wanted = manifest.get(relative)
            if wanted is None or wanted["type"] != _kind(st.st_mode):
                root.delete(self._outer(root, relative), recursive=True)
                gone.add(relative)
        for relative in sorted(manifest, key=lambda path: path.split("/")):
            self._put_back(root, relative, manifest[relative], current.get(relative), blobs)

    @staticmethod
    def _outer(root: DiskRoot, relative: str) -> str:
        moved = _paths.rebase("/" + relative, "/", root.mount)
        assert moved is not None
        return moved

    def _put_back(
        self, root: DiskRoot, relative: str, wanted: dict[str, Any], now: os.stat_result | None, blobs: str
    ) -> None:
        kind = wanted["type"]
        if now is not None and _kind(now.st_mode) != kind:
            now = None  # removed above
        with root.walk(self._outer(root, relative), follow=False, create=True) as target:
            assert target.name is not None
            if kind == "dir":
                if now is None:
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(target.name, dir_fd=target.fd)
                directory = os.open(target.name, _DIR, dir_fd=target.fd)
                try:
                    os.fchmod(directory, wanted["mode"])
                finally:
                    os.close(directory)
            elif kind == "link":
                link: str = wanted["target"]
                if now is not None and os.readlink(target.name, dir_fd=target.fd) == link:
                    return
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(target.name, dir_fd=target.fd)
                os.symlink(link, target.name, dir_fd=target.fd)
            elif now is None or wanted.get("id") != _identity(now):
                self._write_back(target.fd, target.name, os.path.join(blobs, str(wanted["blob"])), wanted)

    @staticmethod
    def _write_back(parent: int, name: str, blob: str, wanted: dict[str, Any]) -> None:
        """Replace ``name`` with the blob's content, mode and modification time, atomically."""
        tmp = f".ab-{secrets.token_hex(6)}.tmp"
        source = os.open(blob, os.O_RDONLY | os.O_CLOEXEC)
        try:
            target = os.open(
                tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=parent
            )
            try:
                _clone(source, target)
                os.fchmod(target, wanted["mode"])
                os.utime(target, ns=(wanted["mtime"], wanted["mtime"]))
            finally:
                os.close(target)
            os.replace(tmp, name, src_dir_fd=parent, dst_dir_fd=parent)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=parent)
            raise
        finally:
            os.close(source)

    def delete(self, snapshot_id: str) -> None:
        shutil.rmtree(self._path(snapshot_id))
        with contextlib.suppress(OSError):  # the last one: leave nothing behind
            os.rmdir(self.directory)
            os.rmdir(os.path.dirname(self.directory))


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "dir"
    if stat.S_ISLNK(mode):
        return "link"
    return "file" if stat.S_ISREG(mode) else "special"
