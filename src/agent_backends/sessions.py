"""``SessionManager``: one running sandbox per user, created on demand, reaped when idle, removed on close.

Each user's files live in ``workspace_root/<user_id>`` on the host, mounted at the runtime's work dir, so they
outlive the sandbox: a released, reaped or crashed sandbox comes back with the same files.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

import anyio
import anyio.to_thread
from anyio.abc import TaskGroup, TaskStatus

from agent_backends.backends.docker import DockerSandbox, _aiodocker  # pyright: ignore[reportPrivateUsage]
from agent_backends.exceptions import InvalidUserIdError, SandboxNotStartedError, SessionLimitError
from agent_backends.runtime import RuntimeConfig, ensure_runtime_image, get_runtime

if TYPE_CHECKING:
    import aiodocker

__all__ = ("SESSION_LABEL", "SessionManager")

SESSION_LABEL = "agent-backends.session"
_log = logging.getLogger("agent_backends.sessions")
_USER_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,127}")


def _check_user_id(user_id: str) -> str:
    if not isinstance(user_id, str) or not _USER_ID.fullmatch(user_id) or ".." in user_id:  # pyright: ignore[reportUnnecessaryIsInstance]
        raise InvalidUserIdError(
            f"user id {user_id!r} is refused: use 1-128 letters, digits, '.', '_', '@' or '-', starting with a "
            "letter or digit (it names the user's workspace directory)"
        )
    return user_id


@dataclass
class _Session:
    sandbox: DockerSandbox
    last_used: float
    leave: anyio.Event = field(default_factory=anyio.Event)  # tells the owner task to close the sandbox
    gone: anyio.Event = field(default_factory=anyio.Event)  # set by the owner task once it has


class SessionManager:
    """Keep one sandbox per user.

    Args:
        default_runtime: a built-in runtime's name or a ``RuntimeConfig``; its image is built once, on first use.
        workspace_root: the host directory holding one workspace directory per user.
        max_sessions: how many sandboxes may run at once.
        idle_timeout: seconds without ``get_or_create`` after which a sandbox is stopped (``None``: never).
        wait_for_slot: when full, wait for a session to be released instead of raising ``SessionLimitError``.
        docker_url: the engine's API (a Podman socket works too).
        sandbox_options: extra ``DockerSandbox`` arguments for every sandbox (``network=True``, ``user=...``).
        progress: where image build progress goes (default: a terminal line, or the log).
    """

    def __init__(
        self,
        default_runtime: str | RuntimeConfig = "python-minimal",
        workspace_root: str | os.PathLike[str] = "./workspaces",
        *,
        max_sessions: int = 50,
        idle_timeout: float | None = 30 * 60,
        wait_for_slot: bool = False,
        docker_url: str | None = None,
        sandbox_options: Mapping[str, Any] | None = None,
        progress: Callable[[str], None] | None = None,
    ) -> None:
        self.default_runtime = get_runtime(default_runtime)
        self.workspace_root: str = os.path.abspath(os.fspath(workspace_root))
        self.max_sessions = max_sessions
        self.idle_timeout = idle_timeout
        self.wait_for_slot = wait_for_slot
        self.docker_url = docker_url
        self.sandbox_options = dict(sandbox_options or {})
        self._progress = progress
        self._sessions: dict[str, _Session] = {}
        self._locks: dict[str, anyio.Lock] = {}
        self._slots = anyio.Semaphore(max_sessions)
        self._docker: aiodocker.Docker | None = None
        self._tasks: TaskGroup | None = None
        self._stack: contextlib.AsyncExitStack | None = None

    # --- lifecycle -------------------------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        async with contextlib.AsyncExitStack() as stack:
            self._docker = _aiodocker().Docker(url=self.docker_url)
            stack.push_async_callback(self._close_docker)
            self._tasks = await stack.enter_async_context(anyio.create_task_group())
            if self.idle_timeout is not None:
                self._tasks.start_soon(self._reap_idle, self.idle_timeout)
            self._stack = stack.pop_all()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Remove every sandbox this manager started and stop reaping; idempotent, survives cancellation."""
        stack, self._stack = self._stack, None
        with anyio.CancelScope(shield=True):
            users = list(self._sessions)
            async with anyio.create_task_group() as tg:
                for user_id in users:
                    tg.start_soon(self.release, user_id)
        if stack is not None:
            assert self._tasks is not None
            self._tasks.cancel_scope.cancel()
            await stack.aclose()

    async def _close_docker(self) -> None:
        docker, self._docker = self._docker, None
        if docker is not None:
            await docker.close()

    # --- sessions --------------------------------------------------------------------------------------------

    @property
    def sessions(self) -> dict[str, DockerSandbox]:
        """The running sessions: user id to sandbox (a copy)."""
        return {user_id: session.sandbox for user_id, session in self._sessions.items()}

    async def get_or_create(self, user_id: str, *, runtime: str | RuntimeConfig | None = None) -> DockerSandbox:
        """The user's running sandbox, started (or replaced, if it died) when needed.

        Concurrent calls for one user start one sandbox. Raises ``SessionLimitError`` when ``max_sessions`` run
        (unless ``wait_for_slot``), ``InvalidUserIdError`` for an unsafe id.
        """
        _check_user_id(user_id)
        if self._stack is None:
            raise SandboxNotStartedError("enter the manager first: `async with SessionManager(...) as manager:`")
        lock = self._locks.setdefault(user_id, anyio.Lock())
        async with lock:
            session = self._sessions.get(user_id)
            if session is not None:
                if await session.sandbox.is_running():
                    session.last_used = anyio.current_time()
                    return session.sandbox
                await self._drop(user_id)
            await self._take_slot()
            try:
                session = await self._start(user_id, get_runtime(runtime or self.default_runtime))
            except BaseException:
                self._slots.release()
                raise
            self._sessions[user_id] = session
            return session.sandbox

    async def release(self, user_id: str) -> None:
        """Stop the user's sandbox (its workspace directory stays); nothing happens if there is none."""
        lock = self._locks.setdefault(user_id, anyio.Lock())
        async with lock:
            await self._drop(user_id)

    async def _drop(self, user_id: str) -> None:
        session = self._sessions.get(user_id)
        if session is not None:
            try:
                with anyio.CancelScope(shield=True):
                    session.leave.set()
                    await session.gone.wait()
            finally:
                del self._sessions[user_id]  # only once the container is gone
                self._slots.release()

    async def _take_slot(self) -> None:
        if self.wait_for_slot:
            await self._slots.acquire()
            return
        try:
            self._slots.acquire_nowait()
        except anyio.WouldBlock:
            raise SessionLimitError(
                f"all {self.max_sessions} sessions are in use; release one, or create the manager with "
                "wait_for_slot=True to wait"
            ) from None

    async def _start(self, user_id: str, runtime: RuntimeConfig) -> _Session:
        """Start the user's sandbox in an owner task of the manager's task group.

        A sandbox's own task group (for background processes) must be left by the task that entered it, while
        sessions are released from any task: the owner task holds ``async with sandbox`` until told to leave.
        """
        assert self._docker is not None
        assert self._tasks is not None
        image = await ensure_runtime_image(self._docker, runtime, progress=self._progress)
        workspace = os.path.join(self.workspace_root, user_id)
        await anyio.to_thread.run_sync(lambda: os.makedirs(workspace, exist_ok=True))
        options: dict[str, Any] = {
            "memory": runtime.memory,
            "cpus": runtime.cpus,
            "pids_limit": runtime.pids_limit,
            **self.sandbox_options,
        }
        labels = {**options.pop("labels", {}), SESSION_LABEL: user_id}
        sandbox = DockerSandbox(
            image, runtime.work_dir, workspace_dir=workspace, docker_url=self.docker_url, labels=labels, **options
        )
        session = _Session(sandbox, anyio.current_time())
        await self._tasks.start(self._own, session)
        return session

    @staticmethod
    async def _own(session: _Session, *, task_status: TaskStatus[None]) -> None:
        try:
            async with session.sandbox:
                task_status.started()
                await session.leave.wait()
        except Exception:
            _log.exception("closing the sandbox of a session failed")
        finally:
            session.gone.set()

    async def _reap_idle(self, idle_timeout: float) -> None:
        while True:
            await anyio.sleep(max(min(idle_timeout / 4, 30.0), 0.05))
            now = anyio.current_time()
            for user_id, session in list(self._sessions.items()):
                if now - session.last_used > idle_timeout:
                    await self.release(user_id)
