"""The public surface is pinned: adding or removing a name is a deliberate change to this list."""

from __future__ import annotations

import agent_backends

EXPECTED = {
    "AgentBackendsError", "BUILTIN_RUNTIMES", "BackendProtocol", "BackgroundProcess", "BaseSandbox",
    "BlockingCallInEventLoopError", "CompositeBackend", "ConsoleDeps", "DeepAgentDeps", "DockerSandbox", "EditResult",
    "EngineUnavailableError", "ExecuteResponse", "ExecutionNotSupportedError", "FileData", "FileInfo", "FileTransfer",
    "FilesystemBackend", "GrepMatch", "GrepMatches", "ImageNotFoundError", "InvalidPathError", "InvalidUserIdError",
    "LocalBackend", "OutputChunk", "PathError", "PathEscapeError", "PathIsDirectoryError", "PathNotDirectoryError",
    "PathNotFoundError", "PathPermissionError", "Process", "ProcessError", "ProcessNotFoundError",
    "RipgrepNotFoundError", "RuntimeBuildError", "RuntimeConfig", "SandboxError", "SandboxNotStartedError",
    "SandboxProtocol", "SearchError", "SessionError", "SessionLimitError", "SessionManager", "StateBackend",
    "SyncCompositeBackend", "SyncDockerSandbox", "SyncFilesystemBackend", "SyncLocalBackend", "SyncProcess",
    "SyncSessionManager", "SyncStateBackend", "UnknownRuntimeError", "WriteResult", "create_console_toolset",
    "get_console_system_prompt", "get_runtime", "remove_leftover_sandboxes", "InvalidArgumentError",
    "SandboxGoneError", "SandboxUnavailableError", "SpecialFileError", "PathExistsError", "Snapshot", "SnapshotError",
    "SnapshotNotFoundError",
}  # fmt: skip


def test_all_is_pinned_and_importable() -> None:
    assert set(agent_backends.__all__) == EXPECTED
    assert len(agent_backends.__all__) == len(EXPECTED)
    for name in EXPECTED:
        obj = getattr(agent_backends, name)
        if callable(obj):  # classes and functions; BUILTIN_RUNTIMES is data
            assert obj.__module__.startswith("agent_backends"), name


def test_errors_inherit_the_builtin_they_mean() -> None:
    assert issubclass(agent_backends.PathNotFoundError, FileNotFoundError)
    assert issubclass(agent_backends.InvalidPathError, ValueError)
    assert issubclass(agent_backends.PathEscapeError, PermissionError)
    assert issubclass(agent_backends.BlockingCallInEventLoopError, RuntimeError)
    assert issubclass(agent_backends.ExecutionNotSupportedError, NotImplementedError)
    for name in EXPECTED:
        obj = getattr(agent_backends, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, agent_backends.AgentBackendsError), name
