"""Checkpoints of a ``StateBackend`` in O(1): a snapshot is an epoch number, changes are journaled per path.

Files are immutable ``FileData`` values, so nothing is ever copied. Once a first snapshot exists, every change of a
path records the path's value per epoch (several changes between two snapshots keep one entry). A snapshot only
advances the epoch, so thousands cost nothing; restoring puts back, for each path changed since the first snapshot,
its value at that snapshot's epoch (and journals that too, so every other snapshot stays restorable). The journal
grows by one entry per path changed per snapshot interval and is dropped when the last snapshot is deleted.
"""

from __future__ import annotations

import bisect
import uuid
from abc import abstractmethod
from collections.abc import Mapping
from datetime import UTC, datetime

from agent_backends.backends._checkpoints import Checkpoints
from agent_backends.types import FileData, Snapshot

__all__ = ("Journal", "MemoryCheckpoints")


class Journal:
    """Each changed path's values by epoch; ``epoch`` is the one being written now."""

    def __init__(self, files: Mapping[str, FileData]) -> None:
        self.epoch = 0
        self.size = sum(len(data.content) for data in files.values())
        self._epochs: dict[str, list[int]] = {}
        self._values: dict[str, list[FileData | None]] = {}

    def record(self, path: str, old: FileData | None, new: FileData | None) -> None:
        """``path`` changes from ``old`` to ``new`` in the current epoch."""
        self.size += (0 if new is None else len(new.content)) - (0 if old is None else len(old.content))
        epochs = self._epochs.get(path)
        if epochs is None:
            # Before its first change the path held ``old`` at every earlier epoch.
            self._epochs[path], self._values[path] = [-1, self.epoch], [old, new]
        elif epochs[-1] == self.epoch:
            self._values[path][-1] = new
        else:
            epochs.append(self.epoch)
            self._values[path].append(new)

    def at(self, epoch: int) -> dict[str, FileData | None]:
        """The value, at ``epoch``, of every path that changed since the journal began."""
        state: dict[str, FileData | None] = {}
        for path, epochs in self._epochs.items():
            index = bisect.bisect_right(epochs, epoch) - 1
            state[path] = self._values[path][max(index, 0)]
        return state


class MemoryCheckpoints(Checkpoints):
    """Snapshots for ``StateBackend``: O(1) each, structural sharing of every file's bytes."""

    _files: dict[str, FileData]
    _journal: Journal | None = None
    _snapshots: dict[str, tuple[int, Snapshot]] | None = None
    _owner: str | None = None
    max_grep_matches: int | None

    @abstractmethod
    def _put(self, path: str, data: FileData) -> None: ...

    @abstractmethod
    def _remove_file(self, path: str) -> None: ...

    @property
    def _snapshot_owner(self) -> str:
        if self._owner is None:
            self._owner = f"memory:{uuid.uuid4().hex[:16]}"
        return self._owner

    async def _take(self, snapshot_id: str, label: str | None) -> Snapshot:
        if self._journal is None:
            self._journal = Journal(self._files)
        journal = self._journal
        snap = Snapshot(
            id=snapshot_id,
            backend_id=self._snapshot_owner,
            kind="memory",
            created_at=datetime.now(UTC),
            files=len(self._files),
            size=journal.size,
            stored=0,
            label=label,
        )
        if self._snapshots is None:
            self._snapshots = {}
        self._snapshots[snapshot_id] = (journal.epoch, snap)
        journal.epoch += 1
        return snap

    async def _put_back(self, snapshot: Snapshot) -> None:
        assert self._journal is not None
        assert self._snapshots is not None
        epoch = self._snapshots[snapshot.id][0]
        wanted = self._journal.at(epoch)
        for path, data in wanted.items():  # deletions first: a file may come back where a directory is now
            if data is None and path in self._files:
                self._remove_file(path)
        for path, data in wanted.items():
            if data is not None and self._files.get(path) is not data:
                self._put(path, data)

    async def _forget(self, snapshot: Snapshot) -> None:
        assert self._snapshots is not None
        del self._snapshots[snapshot.id]
        if not self._snapshots:
            self._journal = None  # nothing left to go back to

    async def _known(self) -> list[Snapshot]:
        return [snap for _, snap in (self._snapshots or {}).values()]
