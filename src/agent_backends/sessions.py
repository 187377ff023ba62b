"""``SessionManager``: one running sandbox per user, created on demand, paused and then stopped when idle.

Each user's files live in ``workspace_root/<user_id>`` on the host, mounted at the runtime's work dir, so they
outlive the sandbox: a released, reaped or crashed sandbox comes back with the same files.

Sandboxes carry the user's id and the workspace root as labels. A manager started on the same ``workspace_root``
(after a restart or a deploy) finds the sandboxes its predecessor left running (``aclose(keep_sandboxes=True)``)
and hands them out again, with their processes, instead of starting new ones.

Nothing is held in the caller's task: the idle reaper runs under a supervisor of its own, started on first use, so
the manager works without ``async with`` and can be closed from any task.

One workspace, one sandbox, whatever the number of managers: a user's sandbox is looked up, adopted, created and
removed under an exclusive lock on a file under ``workspace_root`` (``flock``, taken without blocking the event
loop), so a second manager, in this process or another, adopts the first one's sandbox instead of starting its own.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import math
import os
import re
import time
from collections.abc import AsyncGenerator, Callable, Mapping
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
LOCK_DIR = ".agent-backends-locks"  # under workspace_root; a user id cannot start with "."
_MANAGERS_LOCK = "managers.lock"  # held shared by every started manager: a predecessor's leftovers are known
# Processes in the container other than its init, the init's sleep and this probe: a command or a background
# process running (docker exec's processes have no parent inside the container). Builtins only: nothing forks.
_BUSY_SCRIPT = (
    'for d in /proc/[0-9]*; do p=${d#/proc/}; [ "$p" = 1 ] || [ "$p" = $$ ] && continue; '
    'read -r s < "$d/stat" 2>/dev/null || continue; s=${s##*) }; set -- $s; '
    '[ "$1" = Z ] || [ "$2" = 1 ] || { echo busy; exit 0; }; done; echo idle'
)


def _open_lock(path: str) -> int:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)


def _try_flock(fd: int, operation: int) -> bool:
    try:
        fcntl.flock(fd, operation | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            return False
        raise
    return True


async def _flock_fd(path: str, operation: int = fcntl.LOCK_EX) -> int:
    """An open descriptor of ``path`` holding ``operation`` (``flock``); waits by polling, so the event loop never
    blocks and a cancellation leaves nothing held."""
    fd = await anyio.to_thread.run_sync(_open_lock, path)
    try:
        delay = 0.002
        while not await anyio.to_thread.run_sync(_try_flock, fd, operation):
            await anyio.sleep(delay)
            delay = min(delay * 2, 0.1)
    except BaseException:
        os.close(fd)
        raise
    return fd


@contextlib.asynccontextmanager
async def _flock(path: str) -> AsyncGenerator[None]:
    """Hold an exclusive lock on ``path`` (created if missing) for the block; other processes wait for it too."""
    fd = await _flock_fd(path)
    try:
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


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
        self._managers_fd: int | None = None  # the shared lock every started manager on this root holds

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
            alone = await self._join()
            try:
                await self._adopt(alone=alone)
            except BaseException:
                self._leave()
                raise
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
            try:
                if supervisor is not None:
                    await supervisor.aclose()
                async with anyio.create_task_group() as tg:
                    for user_id in list(self._sessions):
                        tg.start_soon(self._let_go if keep_sandboxes else self.release, user_id)
            finally:
                self._leave()

    async def _join(self) -> bool:
        """Hold the managers' shared lock on this ``workspace_root``; whether no other manager held it (then what
        is left there belongs to a predecessor that is gone)."""
        path = os.path.join(self.workspace_root, LOCK_DIR, _MANAGERS_LOCK)
        # Checking and joining are one step for every manager: a second one starting now waits for it.
        async with _flock(os.path.join(self.workspace_root, LOCK_DIR, "start.lock")):
            fd = await anyio.to_thread.run_sync(_open_lock, path)
            try:
                alone = await anyio.to_thread.run_sync(_try_flock, fd, fcntl.LOCK_EX)
                if alone:
                    fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # shared now: no other manager can hold it
                else:
                    os.close(fd)
                    fd = await _flock_fd(path, fcntl.LOCK_SH)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.close(fd)
                raise
        self._managers_fd = fd
        return alone

    def _leave(self) -> None:
        fd, self._managers_fd = self._managers_fd, None
        if fd is not None:
            os.close(fd)

    def _workspace_lock(self, user_id: str) -> contextlib.AbstractAsyncContextManager[None]:
        """The lock under which one user's sandbox is looked up, adopted, created or removed, by any manager."""
        return _flock(os.path.join(self.workspace_root, LOCK_DIR, f"{user_id}.lock"))

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
                async with self._workspace_lock(user_id):
                    sandbox = await self._adopt_running(user_id)
                    if sandbox is None:
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
                    async with self._workspace_lock(user_id):  # no other manager adopts it while it goes
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
        sandbox = await self._sandbox(user_id, runtime, image=image).start()
        try:
            await self._give_workspace(sandbox, workspace)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await sandbox.aclose()
            raise
        return sandbox

    @staticmethod
    async def _give_workspace(sandbox: DockerSandbox, workspace: str) -> None:
        """Give the workspace directory (itself, not what it holds) to the sandbox's ``user``, so its commands can
        create files in their own working directory. First inside the container, as root, where the engine maps
        the ids (rootless Podman, user namespaces); where that root has no rights (gVisor drops the capabilities of
        a root exec in a container of another user), from the host, when this process may."""
        container = sandbox._container  # pyright: ignore[reportPrivateUsage]
        if sandbox.user is None or container is None:
            return
        collect = sandbox._collect  # pyright: ignore[reportPrivateUsage]
        ids = (await collect(container, ["/bin/sh", "-c", "id -u; id -g"])).split()
        if len(ids) != 2 or not all(n.isdigit() for n in ids) or ids[0] == "0":
            return
        writable = ["/bin/sh", "-c", '[ -w "$1" ] && echo yes; true', "sh", sandbox.work_dir]
        if await collect(container, writable) == "yes\n":
            return
        await collect(container, ["chown", f"{ids[0]}:{ids[1]}", "--", sandbox.work_dir], user="0")
        if await collect(container, writable) == "yes\n":
            return
        with contextlib.suppress(OSError):
            await anyio.to_thread.run_sync(os.chown, workspace, int(ids[0]), int(ids[1]))
        if await collect(container, writable) != "yes\n":
            _log.warning(
                "the workspace %s could not be given to the sandbox's user %s: its commands cannot write there",
                workspace,
                sandbox.user,
            )

    async def _adopt_running(self, user_id: str) -> DockerSandbox | None:
        """Under the user's lock: attach to the sandbox another manager (or a predecessor) runs for this user on
        this ``workspace_root``, if there is one; remove any that no longer runs."""
        name = await self._claim(user_id)
        if name is None:
            return None
        sandbox = self._sandbox(user_id, self.default_runtime, image=self.default_runtime.image_tag, ref=name)
        try:
            return await sandbox.start()
        except SandboxError as exc:
            _log.warning("could not adopt the sandbox of %s: %s", user_id, exc)
            await sandbox.aclose()
            return None

    async def _claim(self, user_id: str, *, keep: bool = True) -> str | None:
        """The name of the user's running (or paused) sandbox on this root (``keep``); the others are removed."""
        assert self._host is not None
        version = await _engine.api_version(self._host)
        docker: aiodocker.Docker
        async with _aiodocker().Docker(url=self._host, api_version=f"v{version}") as docker:
            with _engine_errors("could not look up the user's sandbox", self._host):
                filters = {"label": [f"{SESSION_LABEL}={user_id}", f"{WORKSPACE_ROOT_LABEL}={self.workspace_root}"]}
                containers = await docker.containers.list(all=True, filters=filters)  # pyright: ignore[reportUnknownMemberType]
                found: str | None = None
                for container in sorted(containers, key=lambda c: str(c["Names"])):  # pyright: ignore[reportUnknownArgumentType, reportUnknownLambdaType]
                    name = str((container["Names"] or [container.id])[0]).lstrip("/")  # pyright: ignore[reportUnknownArgumentType]
                    if keep and found is None and str(container["State"]) in ("running", "paused"):
                        found = name
                    else:
                        with contextlib.suppress(_aiodocker().DockerError):
                            await container.delete(force=True)  # pyright: ignore[reportUnknownMemberType]
        return found

    async def _adopt(self, *, alone: bool) -> None:
        """Take over the sandboxes running for this ``workspace_root``: a predecessor's, or those of a manager
        running now (then shared: one sandbox per workspace). Dead ones are removed, and, when no other manager
        runs (``alone``), any beyond ``max_sessions``."""
        assert self._host is not None
        users: set[str] = set()
        version = await _engine.api_version(self._host)
        docker: aiodocker.Docker
        async with _aiodocker().Docker(url=self._host, api_version=f"v{version}") as docker:
            with _engine_errors("could not list the sessions left running", self._host):
                filters = {"label": [SESSION_LABEL, f"{WORKSPACE_ROOT_LABEL}={self.workspace_root}"]}
                containers = await docker.containers.list(all=True, filters=filters)  # pyright: ignore[reportUnknownMemberType]
                for container in containers:  # pyright: ignore[reportUnknownVariableType]
                    labels: dict[str, str] = dict(container["Labels"] or {})  # pyright: ignore[reportUnknownArgumentType]
                    user_id = labels.get(SESSION_LABEL, "")
                    if _USER_ID.fullmatch(user_id) and ".." not in user_id:
                        users.add(user_id)
                    else:
                        with contextlib.suppress(_aiodocker().DockerError):
                            await container.delete(force=True)  # pyright: ignore[reportUnknownMemberType]
        chosen = [user_id for user_id in sorted(users) if self._take_slot_nowait()]
        extra = sorted(users.difference(chosen))

        async def adopt(user_id: str) -> None:
            async with self._lock(user_id), self._workspace_lock(user_id):
                sandbox = await self._adopt_running(user_id)
            if sandbox is None:
                self._slots.release()
            else:
                self._sessions[user_id] = _Session(sandbox, time.monotonic())

        async def remove(user_id: str) -> None:
            async with self._workspace_lock(user_id):
                await self._claim(user_id, keep=False)

        async with anyio.create_task_group() as tg:
            for user_id in chosen:
                tg.start_soon(adopt, user_id)
            for user_id in extra if alone else ():
                tg.start_soon(remove, user_id)

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
        if not sandbox.paused and (await sandbox.is_busy() or await self._processes_running(sandbox)):
            return
        async with self._lock(user_id):
            if self._sessions.get(user_id) is not session or session.idle_seconds() < idle:
                return  # asked for meanwhile
            if stop:
                await self._drop(user_id)
            else:
                await sandbox.pause()

    @staticmethod
    async def _processes_running(sandbox: DockerSandbox) -> bool:
        """Whether anything runs in the container, through this object or not (another manager's command, an
        object attached by ``ref=``): looked at without counting as use."""
        container = sandbox._container  # pyright: ignore[reportPrivateUsage]
        if container is None:
            return False
        try:
            answer = await sandbox._collect(container, ["/bin/sh", "-c", _BUSY_SCRIPT])  # pyright: ignore[reportPrivateUsage]
        except SandboxError:
            return False
        return answer.strip() == "busy"
