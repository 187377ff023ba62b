"""Every exception the library raises, in one tree.

Per-call failures a model can act on (a missing file for ``read``, an ambiguous ``edit``) come back as values
(``"Error: ..."`` strings, ``WriteResult.error``); what is raised is misuse or an infrastructure failure. Each class
also inherits the builtin whose meaning it shares, so ``except FileNotFoundError`` keeps working::

    AgentBackendsError
    ├── PathError
    │   ├── InvalidPathError ............ ValueError       (``..``, ``~``, ``C:\\``, NUL, backslash, ...)
    │   ├── PathEscapeError ............. PermissionError  (resolves outside the root, e.g. through a symlink)
    │   ├── PathNotFoundError ........... FileNotFoundError
    │   ├── PathIsDirectoryError ........ IsADirectoryError
    │   ├── PathPermissionError ......... PermissionError  (the operating system refused access)
    │   ├── PathNotDirectoryError ....... NotADirectoryError
    │   ├── PathExistsError ............. FileExistsError  (a directory to make where a file is)
    │   └── SpecialFileError ............                  (a FIFO, socket or device: never opened)
    ├── InvalidArgumentError ............ ValueError       (a NUL in a command, a NaN timeout, a huge pattern)
    ├── SearchError
    │   └── RipgrepNotFoundError ........ FileNotFoundError (no ``rg``: install the ``ripgrep`` extra)
    ├── ExecutionNotSupportedError ...... NotImplementedError
    ├── ProcessError
    │   └── ProcessNotFoundError ........ LookupError      (no background process with that id)
    ├── SandboxError
    │   ├── SandboxNotStartedError ...... RuntimeError     (used after ``stop()``/``aclose()``: closed is closed)
    │   ├── ImageNotFoundError .......... LookupError      (the image is not present locally)
    │   ├── SandboxUnavailableError ..... ConnectionError  (the sandbox or its engine is gone)
    │   │   ├── EngineUnavailableError                     (the Docker/Podman daemon cannot be reached)
    │   │   └── SandboxGoneError                           (the container was removed or died)
    │   ├── UnknownRuntimeError ......... LookupError      (no runtime of that name; the message lists them)
    │   └── RuntimeBuildError                              (a runtime's image failed to build)
    ├── SessionError
    │   ├── SessionLimitError                              (max_sessions reached)
    │   └── InvalidUserIdError .......... ValueError       (a user id that is not a safe directory name)
    └── SnapshotError                                      (a checkpoint could not be taken or put back)
        └── SnapshotNotFoundError ....... LookupError      (no such snapshot here: deleted, or another backend's)
    BlockingCallInEventLoopError ........ RuntimeError     (a sync twin called from inside a running loop)

Foreign errors (``OSError``, aiodocker's) are mapped where they enter the library, always ``raise ... from exc``.
Through pydantic-ai's workspace API (``ctx.workspace``) a sandbox that is gone, unreachable or closed raises a
subclass of its class here that is also ``pydantic_ai.workspaces.WorkspaceUnavailableError``, and a path failure with
no more specific builtin (a symlink loop, a FIFO) one that is also an ``OSError``.
Cancellation and ``KeyboardInterrupt`` are never wrapped.
"""

from __future__ import annotations

__all__ = (
    "AgentBackendsError",
    "BlockingCallInEventLoopError",
    "ExecutionNotSupportedError",
    "InvalidPathError",
    "PathError",
    "PathEscapeError",
    "PathExistsError",
    "PathIsDirectoryError",
    "PathNotDirectoryError",
    "PathNotFoundError",
    "PathPermissionError",
    "EngineUnavailableError",
    "InvalidArgumentError",
    "SandboxGoneError",
    "SandboxUnavailableError",
    "SpecialFileError",
    "ImageNotFoundError",
    "InvalidUserIdError",
    "RuntimeBuildError",
    "SessionLimitError",
    "UnknownRuntimeError",
    "ProcessError",
    "ProcessNotFoundError",
    "SandboxNotStartedError",
    "RipgrepNotFoundError",
    "SandboxError",
    "SearchError",
    "SessionError",
    "SnapshotError",
    "SnapshotNotFoundError",
)


class AgentBackendsError(Exception):
    """Root of every exception raised by ``agent_backends``."""


class PathError(AgentBackendsError):
    """A path was refused or does not name what the call needs."""

    def __init__(self, message: str, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path


class InvalidPathError(PathError, ValueError):
    """The text of a path is refused before anything is touched."""


class PathEscapeError(PathError, PermissionError):
    """The path resolves outside the backend's root."""


class PathNotFoundError(PathError, FileNotFoundError):
    """Nothing exists at the path."""


class PathIsDirectoryError(PathError, IsADirectoryError):
    """A file was needed but the path is a directory."""


class PathNotDirectoryError(PathError, NotADirectoryError):
    """A directory was needed but the path is a file."""


class PathExistsError(PathError, FileExistsError):
    """Something that is not a directory is where a directory was to be made."""


class PathPermissionError(PathError, PermissionError):
    """The operating system refused access to the path."""


class SpecialFileError(PathError):
    """The path is a FIFO, socket or device; only regular files and directories are read, written or searched."""


class InvalidArgumentError(AgentBackendsError, ValueError):
    """An argument other than a path is refused before anything runs (a NUL in a command, a NaN timeout)."""


class SearchError(AgentBackendsError):
    """A search could not run."""


class RipgrepNotFoundError(SearchError, FileNotFoundError):
    """No ``rg`` binary: neither the ``ripgrep`` extra's wheel nor one on ``PATH``."""


class ExecutionNotSupportedError(AgentBackendsError, NotImplementedError):
    """``execute`` was called on a backend that cannot run commands."""


class ProcessError(AgentBackendsError):
    """A process could not be started or controlled."""


class ProcessNotFoundError(ProcessError, LookupError):
    """No background process has that id."""


class SandboxError(AgentBackendsError):
    """A sandbox could not be created, reached or cleaned up."""


class SandboxNotStartedError(SandboxError, RuntimeError):
    """The sandbox was closed (``stop()``/``aclose()``); sandboxes start on first use, so only a closed one raises
    this. Attach to a running one with ``DockerSandbox(ref=...)`` or make a new one."""


class ImageNotFoundError(SandboxError, LookupError):
    """The container image is not present locally (and no registry is reached to pull it)."""


class SandboxUnavailableError(SandboxError, ConnectionError):
    """The sandbox or its engine is gone: catch this one class for both. Never a missing-file answer."""


class EngineUnavailableError(SandboxUnavailableError):
    """The container engine's API cannot be reached; the message names the address tried (``docker_url=``,
    ``DOCKER_HOST`` or the usual sockets) and how to fix it."""


class SandboxGoneError(SandboxUnavailableError):
    """The sandbox's container was removed or stopped (from outside, or a ``ref=`` to one that is gone), also while
    a command ran in it; it is never silently restarted or replaced. (Also a ``LocalBackend`` or ``FilesystemBackend``
    attached by a workspace ref whose directory is gone.)"""


class UnknownRuntimeError(SandboxError, LookupError):
    """No runtime has that name."""


class RuntimeBuildError(SandboxError):
    """Building a runtime's image failed; the message holds the failing step's output."""


class SessionError(AgentBackendsError):
    """A session could not be created or found."""


class SessionLimitError(SessionError):
    """The manager already holds ``max_sessions`` sessions."""


class InvalidUserIdError(SessionError, ValueError):
    """A user id that is not a safe directory name."""


class BlockingCallInEventLoopError(AgentBackendsError, RuntimeError):
    """A blocking twin was called from a thread that runs an event loop; ``await`` the async method instead."""


class SnapshotError(AgentBackendsError):
    """A snapshot could not be taken, restored, forked from or deleted."""


class SnapshotNotFoundError(SnapshotError, LookupError):
    """No snapshot with that id belongs to this backend (deleted, or taken on another backend)."""
