"""Checkpoints for every backend: ``snapshot``, ``restore``, ``fork``, ``list_snapshots``, ``delete_snapshot``.

The public API and its rules live here once: a snapshot belongs to the backend that took it (``backend_id``) and
restores only there; an unknown or foreign id is a ``SnapshotNotFoundError``; snapshots and restores of one
backend are serialized. Each backend supplies the mechanism (``_take``, ``_put_back``, ``_forget``, ``_known``,
``fork``): structural sharing in memory, reflinks or hard-linked blobs on disk, images for containers.
"""

from __future__ import annotations

import uuid
from typing import Self

import anyio

from agent_backends.exceptions import SnapshotError, SnapshotNotFoundError
from agent_backends.types import Snapshot

__all__ = ("Checkpoints",)


class Checkpoints:
    """Snapshot, restore and fork, for a backend that supplies the mechanism."""

    _checkpoint_lock: anyio.Lock | None = None

    @property
    def _snapshot_owner(self) -> str:
        """Who a snapshot belongs to: the same for every object on the same storage (a disk root, a sandbox)."""
        return f"{type(self).__name__}:{id(self):x}"

    def _unsupported(self) -> SnapshotError:
        return SnapshotError(f"{type(self).__name__} cannot take snapshots")

    async def _take(self, snapshot_id: str, label: str | None) -> Snapshot:
        raise self._unsupported()

    async def _put_back(self, snapshot: Snapshot) -> None:
        raise self._unsupported()

    async def _forget(self, snapshot: Snapshot) -> None:
        raise self._unsupported()

    async def _known(self) -> list[Snapshot]:
        return []

    async def fork(self) -> Self:
        """A new, independent backend starting from the current state (a new directory, dict or container)."""
        raise self._unsupported()

    def _lock(self) -> anyio.Lock:
        if self._checkpoint_lock is None:
            self._checkpoint_lock = anyio.Lock()
        return self._checkpoint_lock

    async def snapshot(self, label: str | None = None) -> Snapshot:
        """Checkpoint every file (contents, modes, symlinks, directories) and return what was taken."""
        async with self._lock():
            return await self._take(uuid.uuid4().hex[:16], label)

    async def restore(self, snapshot: Snapshot | str) -> None:
        """Put the files back exactly as ``snapshot`` holds them: changes undone, deletions undone, files created
        since removed. Running processes are not part of a snapshot."""
        async with self._lock():
            await self._put_back(await self._find(snapshot))

    async def list_snapshots(self) -> list[Snapshot]:
        """This backend's snapshots, oldest first."""
        return sorted(await self._known(), key=lambda snap: snap.created_at)

    async def delete_snapshot(self, snapshot: Snapshot | str) -> None:
        """Forget a snapshot and free what only it held."""
        async with self._lock():
            await self._forget(await self._find(snapshot))

    async def _find(self, snapshot: Snapshot | str) -> Snapshot:
        wanted = snapshot if isinstance(snapshot, str) else snapshot.id
        if isinstance(snapshot, Snapshot) and snapshot.backend_id != self._snapshot_owner:
            raise SnapshotNotFoundError(
                f"snapshot {wanted} was taken on another backend ({snapshot.backend_id}); it restores only there"
            )
        for known in await self._known():
            if known.id == wanted:
                return known
        raise SnapshotNotFoundError(f"no snapshot {wanted!r} on this backend (deleted, or taken elsewhere)")
