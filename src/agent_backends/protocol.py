"""The protocols every backend satisfies: ``BackendProtocol`` for files, ``SandboxProtocol`` adds execution.

Both are structural (``typing.Protocol``) and runtime-checkable, so a user's own class qualifies by shape alone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol, runtime_checkable

from agent_backends.types import (
    EditResult,
    ExecuteResponse,
    FileInfo,
    FileTransfer,
    GrepMatch,
    WriteResult,
)

__all__ = ("BackendProtocol", "SandboxProtocol")


@runtime_checkable
class BackendProtocol(Protocol):
    """File operations an agent needs; per-call failures come back as values (``"Error: ..."``)."""

    async def ls_info(self, path: str = ".") -> list[FileInfo]:
        """List the direct children of a directory, sorted by path."""
        ...

    async def read(self, path: str, offset: int = 0, limit: int = 2000) -> str:
        """Read a text file with ``cat -n`` style line numbers."""
        ...

    async def write(self, path: str, content: str | bytes) -> WriteResult:
        """Create or replace a file, creating parent directories."""
        ...

    async def edit(self, path: str, old_string: str, new_string: str, replace_all: bool = False) -> EditResult:
        """Replace an exact substring of a file."""
        ...

    async def glob_info(self, pattern: str, path: str = ".") -> list[FileInfo]:
        """Find files whose paths match a glob pattern."""
        ...

    async def grep_raw(self, pattern: str, path: str | None = None, glob: str | None = None) -> list[GrepMatch] | str:
        """Search file contents with a regular expression (ripgrep syntax)."""
        ...

    async def exists(self, path: str) -> bool:
        """Whether a file or directory exists at ``path``."""
        ...

    async def read_bytes(self, path: str) -> bytes:
        """A file's raw content."""
        ...

    async def delete(self, path: str, *, recursive: bool = False) -> None:
        """Remove a file (or a directory tree with ``recursive=True``)."""
        ...

    async def upload_files(self, files: Sequence[tuple[str, bytes]]) -> list[FileTransfer]:
        """Write many files; one result per file, in order, errors reported per file."""
        ...

    async def download_files(self, paths: Sequence[str]) -> list[FileTransfer]:
        """Read many files; one result per file, in order, errors reported per file."""
        ...


@runtime_checkable
class SandboxProtocol(BackendProtocol, Protocol):
    """A backend that can also run shell commands."""

    async def execute(
        self,
        command: str,
        timeout: float | None = None,
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        stdin: str | bytes | None = None,
    ) -> ExecuteResponse:
        """Run ``command`` through ``sh -c`` and return its interleaved output and exit code."""
        ...

    @property
    def id(self) -> str:
        """A stable identifier for this sandbox."""
        ...
