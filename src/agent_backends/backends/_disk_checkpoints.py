"""Checkpoints of a disk backend: the tree below ``root_dir`` copied to a snapshot store outside it.

The store is ``snapshot_dir`` (default: ``<temp dir>/agent-backends-snapshots/<hash of root_dir>``), so every
backend object on the same directory sees the same snapshots, across processes, until they are deleted; the last
delete removes the store's directory. In virtual mode a snapshot is the in-memory overlay (and what it hides), and
the disk is never touched. Mechanism and costs: ``_fssnapshot``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from abc import abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Self, TypeVar

import anyio.to_thread

from agent_backends._fsroot import DiskRoot
from agent_backends._fssnapshot import SnapshotStore, TakenSnapshot
from agent_backends.backends._checkpoints import Checkpoints
from agent_backends.backends.state import StateBackend
from agent_backends.exceptions import AgentBackendsError, SnapshotError
from agent_backends.types import Snapshot

__all__ = ("DiskCheckpoints",)

_T = TypeVar("_T")


@dataclass(frozen=True)
class _Overlay:
    """A virtual-mode snapshot: the overlay's own snapshot and the disk paths it hid."""

    snapshot: Snapshot
    overlay_snapshot: Snapshot
    whiteouts: frozenset[str]


class DiskCheckpoints(Checkpoints):
    """Snapshots for ``FilesystemBackend`` and ``LocalBackend``."""

    root_dir: str
    virtual_mode: bool
    max_grep_matches: int | None
    _overlay: StateBackend
    _whiteouts: set[str]
    snapshot_dir: str | None = None  # where snapshots are kept (outside root_dir); ``None``: the default
    _owned_dir: str | None = None  # a fork's directory, removed when the fork is closed
    _overlays: dict[str, _Overlay] | None = None
    _root_path: str

    @abstractmethod
    def _disk(self) -> DiskRoot: ...

    @abstractmethod
    def _respawn(self, root_dir: str) -> Self:
        """A backend like this one on another directory (a fork)."""

    @property
    def _snapshot_owner(self) -> str:
        kind = "virtual" if self.virtual_mode else "disk"
        return f"{kind}:{hashlib.sha256(self.root_dir.encode()).hexdigest()[:16]}"

    def _store(self) -> SnapshotStore:
        """Blocking (the temp dir is looked up on first use)."""
        directory = self.snapshot_dir or os.path.join(
            tempfile.gettempdir(), "agent-backends-snapshots", self._snapshot_owner.split(":")[1]
        )
        return SnapshotStore(directory)

    async def _take(self, snapshot_id: str, label: str | None) -> Snapshot:
        if self.virtual_mode:
            inner = await self._overlay.snapshot(label)
            snap = Snapshot(
                id=snapshot_id,
                backend_id=self._snapshot_owner,
                kind="memory",
                files=inner.files,
                size=inner.size,
                stored=inner.stored,
                label=label,
            )
            if self._overlays is None:
                self._overlays = {}
            self._overlays[snapshot_id] = _Overlay(snap, inner, frozenset(self._whiteouts))
            return snap

        def describe(taken: TakenSnapshot) -> bytes:
            return (
                Snapshot(
                    id=snapshot_id,
                    backend_id=self._snapshot_owner,
                    kind="disk",
                    files=taken.files,
                    size=taken.size,
                    stored=taken.stored,
                    label=label,
                )
                .model_dump_json()
                .encode()
            )

        def take() -> Snapshot:
            store = self._store()
            previous = store.ids()
            store.take(self._disk(), snapshot_id, previous[-1] if previous else None, describe)
            return Snapshot.model_validate_json(store.meta(snapshot_id))

        return await self._in_thread(take)

    async def _put_back(self, snapshot: Snapshot) -> None:
        if self.virtual_mode:
            held = (self._overlays or {})[snapshot.id]
            await self._overlay.restore(held.overlay_snapshot)
            self._whiteouts.clear()
            self._whiteouts.update(held.whiteouts)
            return
        await self._in_thread(lambda: self._store().restore(self._disk(), snapshot.id))

    async def _forget(self, snapshot: Snapshot) -> None:
        if self.virtual_mode:
            held = (self._overlays or {}).pop(snapshot.id)
            await self._overlay.delete_snapshot(held.overlay_snapshot)
            return
        await self._in_thread(lambda: self._store().delete(snapshot.id))

    async def _known(self) -> list[Snapshot]:
        if self.virtual_mode:
            return [held.snapshot for held in (self._overlays or {}).values()]

        def known() -> list[Snapshot]:
            store = self._store()
            return [Snapshot.model_validate_json(store.meta(snapshot_id)) for snapshot_id in store.ids()]

        return await self._in_thread(known)

    async def fork(self) -> Self:
        """A new backend of the same kind on a copy of the current tree, in a new temporary directory that is
        removed when the fork is closed (``aclose``). In virtual mode: the same disk, a copy of the overlay."""
        if self.virtual_mode:
            clone = self._respawn(self.root_dir)
            clone._overlay = await self._overlay.fork()
            clone._whiteouts = set(self._whiteouts)
            return clone
        target = await anyio.to_thread.run_sync(lambda: tempfile.mkdtemp(prefix="agent-backends-fork-"))

        def copy() -> None:
            store = self._store()
            scratch = f"fork-{os.path.basename(target)}"
            store.take(self._disk(), scratch, None, lambda _: b"{}")
            try:
                store.restore(DiskRoot(os.path.realpath(target), self._forked_mount(target)), scratch)
            finally:
                store.delete(scratch)

        try:
            await self._in_thread(copy)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(lambda: shutil.rmtree(target, ignore_errors=True))
            raise
        clone = self._respawn(target)
        clone._owned_dir = target
        return clone

    def _forked_mount(self, target: str) -> str:
        """The namespace path of a fork's root: ``/``, or for host-path backends (``root_path`` is not ``/``)
        the new directory itself."""
        return "/" if self._root_path == "/" else target

    async def _release_owned_dir(self) -> None:
        """Remove a fork's directory (once); nothing else is ever removed by closing."""
        owned, self._owned_dir = self._owned_dir, None
        if owned is not None:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(lambda: shutil.rmtree(owned, ignore_errors=True))

    async def _in_thread(self, work: Callable[[], _T]) -> _T:
        """``work()`` in a worker thread; an ``OSError`` of the snapshot store becomes a ``SnapshotError``."""

        def guarded() -> _T:
            try:
                return work()
            except OSError as exc:
                if isinstance(exc, AgentBackendsError):
                    raise
                raise SnapshotError(f"checkpoint of {self.root_dir} failed: {exc}") from exc

        return await anyio.to_thread.run_sync(guarded)
