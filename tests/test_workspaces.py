"""pydantic-ai's workspace conformance suite (``WorkspaceBackendSuite``) on every backend, every optional fixture given.

Each backend is passed as is: it *is* the workspace backend. Rules skipped, and why (nothing else is skipped):

- ``StateBackend``, ``FilesystemBackend`` and the storage composite have no commands: every rule that runs a command
  (``test_command_form_must_match_shell`` ... ``test_destroying_environment_during_command_raises_unavailable``,
  the symlink, FIFO and permission rules, which make their fixtures with ``ln``/``mkfifo``/``chmod``) skips with the
  suite's own reason, "backend does not implement SupportsCommands".
- ``test_permission_denied_uses_builtin_error`` skips where commands run as root (the host in CI, the containers):
  root bypasses file permissions, as the suite says.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import anyio.to_thread
import pytest

pytest.importorskip("pydantic_ai.workspaces.conformance")

from pydantic_ai import Agent, RunContext
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart, ToolCallPart
from pydantic_ai.models.function import AgentInfo, FunctionModel
from pydantic_ai.workspaces import WorkspaceBackend, WorkspaceRef
from pydantic_ai.workspaces.conformance import WorkspaceBackendSuite

from agent_backends import (
    CompositeBackend,
    DockerSandbox,
    ExecuteResponse,
    FilesystemBackend,
    LocalBackend,
    SandboxGoneError,
    StateBackend,
)
from agent_backends.backends._workspace import WorkspaceFiles
from tests.conftest import LABELS, PODMAN_URL, PYTHON_IMAGE, ShellSandbox, require_docker

Factory = Callable[[], WorkspaceBackend]


@pytest.fixture
def dirs() -> Iterator[Callable[[], str]]:
    """Fresh directories, removed after the test."""
    made: list[str] = []

    def make() -> str:
        made.append(os.path.realpath(tempfile.mkdtemp(prefix="ab-ws-")))
        return made[-1]

    yield make
    for path in made:
        shutil.rmtree(path, ignore_errors=True)


def _forget(backend: Any) -> None:
    """Destroy an in-process environment: no ref names it any more."""
    registry = WorkspaceFiles._ws_registry  # pyright: ignore[reportPrivateUsage]
    for key, value in list(registry.items()):
        if value is backend:
            del registry[key]


async def _forget_async(backend: WorkspaceBackend) -> None:
    _forget(backend)


class _StorageSuite(WorkspaceBackendSuite):
    async def test_background_child_does_not_hold_up_completed_command(self) -> None:  # pyright: ignore[reportIncompatibleMethodOverride]
        """Skipped up front: the suite's own skip comes inside a ``finally`` that then waits 30 s for a child that
        no command started."""
        pytest.skip("backend does not implement SupportsCommands")


class TestStateBackend(_StorageSuite):
    @pytest.fixture
    def backend(self) -> WorkspaceBackend:
        return StateBackend()

    @pytest.fixture
    def fresh_backend(self) -> Factory:
        return StateBackend

    @pytest.fixture
    def attach_backend(self) -> Callable[[WorkspaceRef], WorkspaceBackend]:
        return StateBackend.from_ref

    @pytest.fixture
    def destroy_environment(self) -> Callable[[WorkspaceBackend], Awaitable[None]]:
        return _forget_async


class TestFilesystemBackend(_StorageSuite):
    @pytest.fixture
    def backend(self, dirs: Callable[[], str]) -> WorkspaceBackend:
        return FilesystemBackend(dirs())

    @pytest.fixture
    def fresh_backend(self, dirs: Callable[[], str]) -> Factory:
        return lambda: FilesystemBackend(dirs())

    @pytest.fixture
    def attach_backend(self) -> Callable[[WorkspaceRef], WorkspaceBackend]:
        return FilesystemBackend.from_ref

    @pytest.fixture
    def destroy_environment(self) -> Callable[[WorkspaceBackend], Awaitable[None]]:
        async def destroy(backend: WorkspaceBackend) -> None:
            assert isinstance(backend, FilesystemBackend)
            await anyio.to_thread.run_sync(shutil.rmtree, backend.root_dir)

        return destroy


class TestFilesystemBackendVirtual(TestFilesystemBackend):
    @pytest.fixture
    def backend(self, dirs: Callable[[], str]) -> WorkspaceBackend:
        return FilesystemBackend(dirs(), virtual_mode=True)

    @pytest.fixture
    def fresh_backend(self, dirs: Callable[[], str]) -> Factory:
        return lambda: FilesystemBackend(dirs(), virtual_mode=True)

    @pytest.fixture
    def destroy_environment(self) -> Callable[[WorkspaceBackend], Awaitable[None]]:
        return _forget_async  # its files are in memory: the object is the environment


class TestLocalBackend(WorkspaceBackendSuite):
    @pytest.fixture
    async def backend(self, dirs: Callable[[], str]) -> AsyncIterator[WorkspaceBackend]:
        async with LocalBackend(dirs()) as backend:
            yield backend

    @pytest.fixture
    def fresh_backend(self, dirs: Callable[[], str]) -> Factory:
        return lambda: LocalBackend(dirs())

    @pytest.fixture
    def attach_backend(self) -> Callable[[WorkspaceRef], WorkspaceBackend]:
        return LocalBackend.from_ref

    @pytest.fixture
    def destroy_environment(self) -> Callable[[WorkspaceBackend], Awaitable[None]]:
        async def destroy(backend: WorkspaceBackend) -> None:
            assert isinstance(backend, LocalBackend)
            await anyio.to_thread.run_sync(shutil.rmtree, backend.root_dir)

        return destroy


class _GoneAwareShellSandbox(ShellSandbox):
    """The smallest ``BaseSandbox`` (``execute`` and ``id`` only), whose environment is its work dir: a subclass
    reports a gone environment through ``_ws_check``."""

    def __init__(self, work_dir: str) -> None:
        super().__init__(work_dir)
        self._id = f"shell-{uuid.uuid4().hex}"

    @property
    def id(self) -> str:
        return self._id

    async def _ws_check(self) -> None:
        if not await anyio.to_thread.run_sync(os.path.isdir, self.work_dir):
            raise SandboxGoneError(f"{self.work_dir} is gone")

    async def execute(
        self,
        command: str,
        timeout: float | None = None,
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        stdin: str | bytes | None = None,
    ) -> ExecuteResponse:
        return await super().execute(command, timeout, env=env, cwd=cwd or self.work_dir, stdin=stdin)


class TestBaseSandbox(WorkspaceBackendSuite):
    @pytest.fixture
    def backend(self, dirs: Callable[[], str]) -> WorkspaceBackend:
        return _GoneAwareShellSandbox(dirs())

    @pytest.fixture
    def fresh_backend(self, dirs: Callable[[], str]) -> Factory:
        return lambda: _GoneAwareShellSandbox(dirs())

    @pytest.fixture
    def attach_backend(self) -> Callable[[WorkspaceRef], WorkspaceBackend]:
        return _GoneAwareShellSandbox.from_ref

    @pytest.fixture
    def destroy_environment(self) -> Callable[[WorkspaceBackend], Awaitable[None]]:
        async def destroy(backend: WorkspaceBackend) -> None:
            assert isinstance(backend, _GoneAwareShellSandbox)
            await anyio.to_thread.run_sync(shutil.rmtree, backend.work_dir)
            _forget(backend)

        return destroy


def _composite(root: str) -> CompositeBackend:
    return CompositeBackend(FilesystemBackend(root), routes={"/mnt/other/": StateBackend()})


class TestCompositeBackend(_StorageSuite):
    @pytest.fixture
    def backend(self, dirs: Callable[[], str]) -> WorkspaceBackend:
        return _composite(dirs())

    @pytest.fixture
    def fresh_backend(self, dirs: Callable[[], str]) -> Factory:
        return lambda: _composite(dirs())

    @pytest.fixture
    def attach_backend(self) -> Callable[[WorkspaceRef], WorkspaceBackend]:
        return CompositeBackend.from_ref

    @pytest.fixture
    def destroy_environment(self) -> Callable[[WorkspaceBackend], Awaitable[None]]:
        return _forget_async


class TestCompositeBackendWithCommands(TestCompositeBackend):
    """Its default runs commands, so it does too (``run`` is its default's)."""

    test_background_child_does_not_hold_up_completed_command = (
        WorkspaceBackendSuite.test_background_child_does_not_hold_up_completed_command
    )

    @pytest.fixture
    def backend(self, dirs: Callable[[], str]) -> WorkspaceBackend:
        return CompositeBackend(_GoneAwareShellSandbox(dirs()), routes={"/mnt/other/": StateBackend()})

    @pytest.fixture
    def fresh_backend(self, dirs: Callable[[], str]) -> Factory:
        return lambda: CompositeBackend(_GoneAwareShellSandbox(dirs()), routes={"/mnt/other/": StateBackend()})

    @pytest.fixture
    def destroy_environment(self) -> Callable[[WorkspaceBackend], Awaitable[None]]:
        async def destroy(backend: WorkspaceBackend) -> None:
            assert isinstance(backend, CompositeBackend)
            default = backend.default
            assert isinstance(default, _GoneAwareShellSandbox)
            await anyio.to_thread.run_sync(shutil.rmtree, default.work_dir)
            _forget(backend)

        return destroy


# --- containers ------------------------------------------------------------------------------------------------------


class _DockerSuite(WorkspaceBackendSuite):
    engine: str = "docker"
    options: Mapping[str, Any] = {}

    @pytest.fixture
    async def sandboxes(self) -> AsyncIterator[list[DockerSandbox]]:
        """Every sandbox a test made, stopped after it (attached ones only let go: the creator removes it)."""
        require_docker(self.engine)
        made: list[DockerSandbox] = []
        yield made
        with anyio.CancelScope(shield=True):
            for sandbox in made:
                if (
                    sandbox.ref is not None
                    and sandbox.container_id is not None
                    and sandbox.name in {other.name for other in made if other is not sandbox and other.closed}
                ):
                    await sandbox.detach()
                await sandbox.stop()

    def _new(self, sandboxes: list[DockerSandbox]) -> DockerSandbox:
        sandbox = DockerSandbox(PYTHON_IMAGE, "/workspace", labels=LABELS, **self.options)
        sandboxes.append(sandbox)
        return sandbox

    @pytest.fixture
    def backend(self, sandboxes: list[DockerSandbox]) -> WorkspaceBackend:
        return self._new(sandboxes)

    @pytest.fixture
    def fresh_backend(self, sandboxes: list[DockerSandbox]) -> Factory:
        return lambda: self._new(sandboxes)

    @pytest.fixture
    def attach_backend(self, sandboxes: list[DockerSandbox]) -> Callable[[WorkspaceRef], WorkspaceBackend]:
        def attach(ref: WorkspaceRef) -> WorkspaceBackend:
            options = {"docker_url": self.options["docker_url"]} if "docker_url" in self.options else {}
            attached = DockerSandbox.from_ref(ref, **options)
            sandboxes.insert(0, attached)  # stopped first: removing the container it shares is the creator's job
            return attached

        return attach

    @pytest.fixture
    def destroy_environment(self) -> Callable[[WorkspaceBackend], Awaitable[None]]:
        async def destroy(backend: WorkspaceBackend) -> None:
            assert isinstance(backend, DockerSandbox)
            await backend.stop()  # removes the container, from any task: whoever holds the ref may

        return destroy


class TestDockerSandbox(_DockerSuite):
    pass


class TestDockerSandboxPodman(_DockerSuite):
    engine = "podman"
    options: Mapping[str, Any] = {"docker_url": PODMAN_URL}


class TestDockerSandboxGVisor(_DockerSuite):
    engine = "gvisor"
    options: Mapping[str, Any] = {"runtime": "runsc"}


# --- what the suite does not say -------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_every_backend_passed_as_the_run_workspace(tmp_path: Path) -> None:
    """``Agent.run(..., workspace=backend)`` takes each of them as it is; a tool reaches it as ``ctx.workspace``."""

    def model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        if len(messages) == 1:
            return ModelResponse(parts=[ToolCallPart("touch", {})])
        return ModelResponse(parts=[TextPart("done")])

    agent = Agent(FunctionModel(model))

    @agent.tool
    async def touch(ctx: RunContext[None]) -> str:
        await ctx.workspace.write_text("hello.txt", "hi")
        return await ctx.workspace.read_text("hello.txt")

    for backend in (
        StateBackend(),
        FilesystemBackend(tmp_path / "fs"),
        LocalBackend(tmp_path / "local"),
        _composite(str(tmp_path / "composite")),
    ):
        result = await agent.run("go", workspace=backend)
        assert result.output == "done"
        assert await backend.read_bytes("hello.txt") == b"hi"
        assert result.all_messages()[-1].workspace_ref == backend.ref  # pyright: ignore[reportAttributeAccessIssue]
