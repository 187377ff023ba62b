"""The values backends return: frozen pydantic models shared by every backend.

Field names are part of the public contract (the seeds use ``.output`` and ``.exit_code``). Results that can carry
a per-call failure (``WriteResult``, ``EditResult``) hold it in ``error`` so a tool loop can hand it to the model;
they are truthy when the call succeeded.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = (
    "EditResult",
    "ExecuteResponse",
    "FileData",
    "FileInfo",
    "FileTransfer",
    "GrepMatch",
    "GrepMatches",
    "Snapshot",
    "WriteResult",
)


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _now() -> datetime:
    return datetime.now(UTC)


SpecialKind = Literal["fifo", "socket", "char-device", "block-device"]


class FileInfo(_Frozen):
    """One entry of a listing or glob: ``path`` is absolute in the backend's namespace.

    ``special`` names what a listed entry is when it is neither a regular file nor a directory (a FIFO, a socket,
    a device): such an entry is listed but never opened.
    """

    path: str
    name: str
    is_dir: bool = False
    size: int | None = None
    modified_at: datetime | None = None
    special: SpecialKind | None = None


class FileData(_Frozen):
    """A file held by ``StateBackend``: raw bytes plus timestamps."""

    content: bytes
    created_at: datetime = Field(default_factory=_now)
    modified_at: datetime = Field(default_factory=_now)

    @classmethod
    def from_text(cls, text: str) -> FileData:
        """A new file holding ``text`` encoded as UTF-8."""
        return cls(content=text.encode())

    @property
    def text(self) -> str:
        """The content decoded as UTF-8; undecodable bytes become U+FFFD."""
        return self.content.decode(errors="replace")

    @property
    def size(self) -> int:
        return len(self.content)


class WriteResult(_Frozen):
    """Outcome of ``write``; ``error`` is a message for the model, ``None`` on success."""

    path: str
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def __bool__(self) -> bool:
        return self.error is None


class EditResult(_Frozen):
    """Outcome of ``edit``: how many occurrences were replaced, or why nothing was."""

    path: str
    occurrences: int | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def __bool__(self) -> bool:
        return self.error is None


class GrepMatch(_Frozen):
    """One matching line: absolute ``path``, 1-based ``line_number``, the line without its line ending."""

    path: str
    line_number: int
    line: str


class GrepMatches(list[GrepMatch]):
    """The list ``grep_raw`` returns: sorted by path then line, plus how many matches there were in all.

    When more lines matched than the backend's cap, the list holds the first ``len(self)`` in sorted order and
    ``truncated`` is true; ``note`` is the sentence to show a model.
    """

    total: int
    truncated: bool

    def __init__(self, matches: list[GrepMatch] | tuple[GrepMatch, ...] = (), *, total: int | None = None) -> None:
        super().__init__(matches)
        self.total = len(self) if total is None else total
        self.truncated = self.total > len(self)

    @property
    def note(self) -> str | None:
        if not self.truncated:
            return None
        return (
            f"[showing the first {len(self):,} of {self.total:,} matching lines; "
            "narrow the pattern, path or glob to see the rest]"
        )


class FileTransfer(_Frozen):
    """One file of a batch ``upload_files`` / ``download_files``; ``error`` is set instead of raising."""

    path: str
    content: bytes | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


class ExecuteResponse(_Frozen):
    """Outcome of ``execute``: interleaved output, the exit code (``None`` when killed by a timeout)."""

    output: str
    exit_code: int | None
    truncated: bool = False
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    def __bool__(self) -> bool:
        return self.exit_code == 0


SnapshotKind = Literal["memory", "disk", "container", "composite"]


class Snapshot(_Frozen):
    """A checkpoint of a backend's files, from ``snapshot()``: restore it with ``restore()`` on the same backend.

    ``files`` and ``size`` describe what it holds (regular files, their bytes); ``stored`` is the space it takes
    of its own (disk or image bytes not shared with an earlier snapshot; ``0`` for structural sharing in memory).
    """

    id: str
    backend_id: str
    kind: SnapshotKind
    created_at: datetime = Field(default_factory=_now)
    files: int = 0
    size: int = 0
    stored: int = 0
    label: str | None = None
    parts: tuple[Snapshot, ...] = ()  # a composite's: one per routed backend
