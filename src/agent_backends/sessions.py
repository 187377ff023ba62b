"""``SessionManager``: one running sandbox per user, created on demand, paused and then stopped when idle.

Each user's files live in ``workspace_root/<user_id>`` on the host, mounted at the runtime's work dir, so they
outlive the sandbox: a released, reaped or crashed sandbox comes back with the same files.

Sandboxes carry the user's id and the workspace root as labels. A manager started on the same ``workspace_root``
(after a restart or a deploy) finds the sandboxes its predecessor left running (``aclose(keep_sandboxes=True)``)
and hands them out again, with their processes, instead of starting new ones.

Nothing is held in the caller's task: the idle reaper runs under a supervisor of its own, started on first use, so
the manager works without ``async with`` and can be closed from any task.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

import anyio
import anyio.to_thread

from agent_backends.backends import _engine
from agent_backends.backends._exec import Supervisor
from agent_backends.backends.docker import DockerSandbox, _aiodocker, _engine_errors  # pyright: ignore[reportPrivateUsage]
from agent_backends.exceptions import InvalidUserIdError, SandboxError, SessionLimitError
from agent_backends.runtime import RuntimeConfig, ensure_runtime_image, get_runtime

if TYPE_CHECKING:
    import aiodocker

__all__ = ("SESSION_LABEL", "WORKSPACE_ROOT_LABEL", "SessionManager")

SESSION_LABEL = "agent-backends.session"
WORKSPACE_ROOT_LABEL = "agent-backends.workspace-root"
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
    last_used: float  # time.monotonic() of the last get_or_create

    def idle_seconds(self) -> float:
        """Seconds without a ``get_or_create`` and without a command through the sandbox."""
        return min(time.monotonic() - self.last_used, self.sandbox.idle_seconds)


class SessionManager:
    """Keep one sandbox per user.

    Constructing a manager does no I/O: the first ``get_or_create`` (or ``start()``, or ``async with``) finds the
    engine, adopts the sandboxes a previous manager on the same ``workspace_root`` left running, and starts the idle
    reaper.

    Args:
        default_runtime: a built-in runtime's name or a ``RuntimeConfig``; its image is built once, on first use.
        workspace_root: the host directory holding one workspace directory per user.
        max_sessions: how many sandboxes may run at once.
        idle_timeout: seconds idle after which a sandbox is stopped (``None``: never). Idle means no
            ``get_or_create`` and no command through it for that long, and no command or background process
            running in it now.
        pause_after: seconds idle after which a sandbox is paused (memory and processes kept, no CPU) until the
            next ``get_or_create`` resumes it (``None``: never paused).
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
        pause_after: float | None = None,
        wait_for_slot: bool = False,
        docker_url: str | None = None,
        sandbox_options: Mapping[str, Any] | None = None,
        progress: Callable[[str], None] | None = None,
    ) -> None:
        self.default_runtime = get_runtime(default_runtime)
        self.workspace_root: str = os.path.abspath(os.fspath(workspace_root))
        self.max_sessions = max_sessions
        self.idle_timeout = idle_timeout
        self.pause_after = pause_after
        self.wait_for_slot = wait_for_slot
        self.docker_url = docker_url
        self.sandbox_options = dict(sandbox_options or {})
        self._progress = progress
        self._sessions: dict[str, _Session] = {}
        self._locks: dict[str, anyio.Lock] = {}
        self._slots = anyio.Semaphore(max_sessions)
        self._open_lock = anyio.Lock()
        self._supervisor: Supervisor | None = None
        self._host: str | None = None

    # --- lifecycle -------------------------------------------------------------------------------------------

    async def start(self) -> Self:
        """Find the engine, adopt the sandboxes left running for this ``workspace_root``, start the reaper; the
        first ``get_or_create`` does this by itself."""
        if self._supervisor is not None:
            return self
        async with self._open_lock:
            if self._supervisor is not None:
                return self
            self._host, _ = await _engine.connect(self.docker_url)
            await self._adopt()
            supervisor = Supervisor()
            interval = min(t for t in (self.idle_timeout, self.pause_after, math.inf) if t is not None)
            if interval != math.inf:
                await supervisor.start_soon(self._reap_idle, interval)
            self._supervisor = supervisor
        return self

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self, *, keep_sandboxes: bool = False) -> None:
        """Stop reaping and remove every sandbox this manager holds; idempotent, from any task, survives
        cancellation.

        ``keep_sandboxes=True`` leaves them running (paused ones stay paused) for the next manager on the same
        ``workspace_root``, which adopts them: for a restart or a deploy.
        """
        supervisor, self._supervisor = self._supervisor, None
        with anyio.CancelScope(shield=True):
            if supervisor is not None:
                await supervisor.aclose()
            async with anyio.create_task_group() as tg:
                for user_id in list(self._sessions):
                    tg.start_soon(self._let_go if keep_sandboxes else self.release, user_id)

    async def _let_go(self, user_id: str) -> None:
        async with self._lock(user_id):
            session = self._sessions.pop(user_id, None)
            if session is not None:
                self._slots.release()
                with contextlib.suppress(SandboxError):
                    await session.sandbox.detach()

    # --- sessions --------------------------------------------------------------------------------------------

    @property
    def sessions(self) -> dict[str, DockerSandbox]:
        """The running sessions: user id to sandbox (a copy)."""
        return {user_id: session.sandbox for user_id, session in self._sessions.items()}

    def _lock(self, user_id: str) -> anyio.Lock:
        return self._locks.setdefault(user_id, anyio.Lock())

    async def get_or_create(self, user_id: str, *, runtime: str | RuntimeConfig | None = None) -> DockerSandbox:
        """The user's running sandbox: adopted, resumed, or started (or replaced, if it died) when needed.

        Concurrent calls for one user start one sandbox. Raises ``SessionLimitError`` when ``max_sessions`` run
        (unless ``wait_for_slot``), ``InvalidUserIdError`` for an unsafe id.
        """
        _check_user_id(user_id)
        await self.start()
        async with self._lock(user_id):
            session = self._sessions.get(user_id)
            if session is not None:
                try:
                    await session.sandbox.resume()
                    alive = await session.sandbox.is_running()
                except SandboxError:
                    alive = False
                if alive:
                    session.last_used = time.monotonic()
                    return session.sandbox
                await self._drop(user_id)
            await self._take_slot()
            try:
                sandbox = await self._start(user_id, get_runtime(runtime or self.default_runtime))
            except BaseException:
                self._slots.release()
                raise
            self._sessions[user_id] = _Session(sandbox, time.monotonic())
            return sandbox

    async def release(self, user_id: str) -> None:
        """Stop the user's sandbox (its workspace directory stays); nothing happens if there is none."""
        async with self._lock(user_id):
            await self._drop(user_id)

    async def _drop(self, user_id: str) -> None:
        session = self._sessions.get(user_id)
        if session is not None:
            try:
                with anyio.CancelScope(shield=True):
                    await session.sandbox.aclose()
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

    def _sandbox(self, user_id: str, runtime: RuntimeConfig, *, image: str, ref: str | None = None) -> DockerSandbox:
        workspace = os.path.join(self.workspace_root, user_id)
        options: dict[str, Any] = {
            "memory": runtime.memory,
            "cpus": runtime.cpus,
            "pids_limit": runtime.pids_limit,
            **self.sandbox_options,
        }
        labels = {**options.pop("labels", {}), SESSION_LABEL: user_id, WORKSPACE_ROOT_LABEL: self.workspace_root}
        return DockerSandbox(
            image,
            runtime.work_dir,
            workspace_dir=workspace,
            docker_url=self._host or self.docker_url,
            labels=labels,
            ref=ref,
            **options,
        )

    async def _start(self, user_id: str, runtime: RuntimeConfig) -> DockerSandbox:
        """Start the user's sandbox; it belongs to no task (any task may release it)."""
        image = await ensure_runtime_image(runtime, docker_url=self._host, progress=self._progress)
        workspace = os.path.join(self.workspace_root, user_id)
        await anyio.to_thread.run_sync(lambda: os.makedirs(workspace, exist_ok=True))
        return await self._sandbox(user_id, runtime, image=image).start()

    async def _adopt(self) -> None:
        """Take over the sandboxes a previous manager on this ``workspace_root`` left running; remove dead ones
        (and any beyond ``max_sessions``)."""
        assert self._host is not None
        adopted: dict[str, DockerSandbox] = {}
        version = await _engine.api_version(self._host)
        docker: aiodocker.Docker
        async with _aiodocker().Docker(url=self._host, api_version=f"v{version}") as docker:
            with _engine_errors("could not list the sessions left running", self._host):
                filters = {"label": [SESSION_LABEL, f"{WORKSPACE_ROOT_LABEL}={self.workspace_root}"]}
                containers = await docker.containers.list(all=True, filters=filters)  # pyright: ignore[reportUnknownMemberType]
                for container in sorted(containers, key=lambda c: str(c["Names"])):  # pyright: ignore[reportUnknownArgumentType, reportUnknownLambdaType]
                    labels: dict[str, str] = dict(container["Labels"] or {})  # pyright: ignore[reportUnknownArgumentType]
                    user_id = labels.get(SESSION_LABEL, "")
                    name = str((container["Names"] or [container.id])[0]).lstrip("/")  # pyright: ignore[reportUnknownArgumentType]
                    alive = str(container["State"]) in ("running", "paused")
                    if alive and _USER_ID.fullmatch(user_id) and user_id not in adopted and self._take_slot_nowait():
                        image = self.default_runtime.image_tag
                        adopted[user_id] = self._sandbox(user_id, self.default_runtime, image=image, ref=name)
                    else:
                        with contextlib.suppress(_aiodocker().DockerError):
                            await container.delete(force=True)  # pyright: ignore[reportUnknownMemberType]

        async def attach(user_id: str, sandbox: DockerSandbox) -> None:
            try:
                await sandbox.start()
            except SandboxError as exc:
                _log.warning("could not adopt the sandbox of %s: %s", user_id, exc)
                self._slots.release()
                await sandbox.aclose()
                return
            self._sessions[user_id] = _Session(sandbox, time.monotonic())

        async with anyio.create_task_group() as tg:
            for user_id, sandbox in adopted.items():
                tg.start_soon(attach, user_id, sandbox)

    def _take_slot_nowait(self) -> bool:
        try:
            self._slots.acquire_nowait()
        except anyio.WouldBlock:
            return False
        return True

    async def _reap_idle(self, interval: float) -> None:
        while True:
            await anyio.sleep(max(min(interval / 4, 30.0), 0.05))
            for user_id, session in list(self._sessions.items()):
                try:
                    await self._tend(user_id, session)
                except Exception:
                    _log.exception("tending the idle sandbox of %s failed", user_id)

    async def _tend(self, user_id: str, session: _Session) -> None:
        """Pause a sandbox idle for ``pause_after``, stop one idle for ``idle_timeout``."""
        idle = session.idle_seconds()
        sandbox = session.sandbox
        stop = self.idle_timeout is not None and idle >= self.idle_timeout
        pause = self.pause_after is not None and idle >= self.pause_after and not sandbox.paused
        if not (stop or pause):
            return
        if not sandbox.paused and await sandbox.is_busy():
            return
        async with self._lock(user_id):
            if self._sessions.get(user_id) is not session or session.idle_seconds() < idle:
                return  # asked for meanwhile
            if stop:
                await self._drop(user_id)
            else:
                await sandbox.pause()
