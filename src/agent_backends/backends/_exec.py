"""What every executing backend shares, built on its one primitive, ``open_process``.

``execute`` streams the process into a bounded ``OutputBuffer`` under a timeout that kills the whole tree.
Background processes run under a ``Supervisor``: a task group held by a task of its own, started on first use, so
no caller's cancel scope is borrowed and the backend can be closed from any task, in any order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar, TypeVarTuple, Unpack

import anyio
from anyio.abc import TaskGroup, TaskStatus

from agent_backends.exceptions import AgentBackendsError, ProcessNotFoundError, SandboxNotStartedError
from agent_backends.process import BackgroundProcess, OutputBuffer, OutputChunk, Process, collect
from agent_backends.types import ExecuteResponse

__all__ = ("DEFAULT_MAX_OUTPUT_CHARS", "DEFAULT_TIMEOUT", "ExecutionMixin", "Supervisor")

DEFAULT_MAX_OUTPUT_CHARS = 100_000
DEFAULT_TIMEOUT = 600.0
_KILL_GRACE_SECONDS = 10.0
_log = logging.getLogger("agent_backends")
_T = TypeVar("_T")
_Ts = TypeVarTuple("_Ts")


def _spawn(coroutine: Coroutine[Any, Any, None]) -> object:
    """Run ``coroutine`` as a task of the event loop itself, outside every caller's cancel scopes.

    anyio has no detached tasks; the loop's own (asyncio's ``create_task``, trio's system tasks) are what a
    long-lived owner needs. The returned handle must be kept: asyncio holds its tasks weakly.
    """
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        import trio  # the only other loop anyio runs on  # pyright: ignore[reportMissingImports]

        trio.lowlevel.spawn_system_task(lambda: coroutine)  # pyright: ignore[reportUnknownMemberType]
        return coroutine
    return loop.create_task(coroutine)


class Supervisor:
    """A task group held open by an owner task of its own, started on first use.

    Callers in any task start work in it (``start``, ``start_soon``); ``aclose`` (from any task) cancels that work
    and waits for the owner to finish. Nothing here lives in a caller's cancel scope, so whoever starts the
    supervisor may finish long before it, or close it from elsewhere.
    """

    def __init__(self) -> None:
        self._group: TaskGroup | None = None
        self._stop = anyio.Event()
        self._finished = anyio.Event()
        self._handle: object | None = None
        self._closed = False

    @property
    def running(self) -> bool:
        return self._group is not None

    async def _group_or_start(self) -> TaskGroup:
        if self._closed:
            raise SandboxNotStartedError("this backend was closed")
        if self._group is None:
            ready = anyio.Event()

            async def own() -> None:
                try:
                    async with anyio.create_task_group() as group:
                        self._group = group
                        ready.set()
                        await self._stop.wait()
                        group.cancel_scope.cancel()
                except Exception:  # a task crashed the group: its own handler should have caught it
                    _log.exception("a supervised task failed")
                finally:
                    self._group = None
                    self._finished.set()
                    ready.set()

            self._handle = _spawn(own())
            await ready.wait()
            if self._group is None:
                raise SandboxNotStartedError("this backend was closed")
        return self._group

    async def start(self, fn: Callable[..., Coroutine[Any, Any, _T]], *args: object) -> _T:
        """``TaskGroup.start`` in the supervisor's group: waits until ``fn`` calls ``task_status.started(value)``."""
        group = await self._group_or_start()
        return await group.start(fn, *args)

    async def start_soon(self, fn: Callable[[Unpack[_Ts]], Coroutine[Any, Any, object]], *args: *_Ts) -> None:
        """``TaskGroup.start_soon`` in the supervisor's group."""
        group = await self._group_or_start()
        group.start_soon(fn, *args)

    async def aclose(self) -> None:
        """Cancel what runs and wait for the owner task to finish; idempotent, from any task."""
        self._closed = True
        if self._handle is None:
            return
        self._stop.set()
        with anyio.CancelScope(shield=True), anyio.move_on_after(_KILL_GRACE_SECONDS * 3):
            await self._finished.wait()
        self._handle = None

    def reopen(self) -> None:
        """Allow a closed supervisor to start again (a backend used after ``aclose``)."""
        if self._handle is None:
            self._closed = False
            self._stop, self._finished = anyio.Event(), anyio.Event()


@dataclass
class _Background:
    id: str
    command: str
    buffer: OutputBuffer
    process: Process | None = None
    exit_code: int | None = None
    done: anyio.Event = field(default_factory=anyio.Event)

    def snapshot(self) -> BackgroundProcess:
        return BackgroundProcess(
            id=self.id,
            command=self.command,
            running=not self.done.is_set(),
            exit_code=self.exit_code,
            output=self.buffer.text(),
            truncated=self.buffer.truncated,
        )


class ExecutionMixin(ABC):
    """``execute`` and background processes for a backend that implements ``open_process``."""

    max_output_chars: int = DEFAULT_MAX_OUTPUT_CHARS
    default_timeout: float | None = DEFAULT_TIMEOUT
    _supervisor: Supervisor | None = None
    _background_jobs: dict[str, _Background] | None = None

    @abstractmethod
    def open_process(
        self,
        command: str,
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        stdin: str | bytes | None = None,
        interactive: bool = False,
    ) -> Process:
        """Start ``command`` through ``sh -c`` when the returned ``Process`` is entered with ``async with``."""

    # --- lifecycle of the background processes -----------------------------------------------------------------

    @property
    def _background(self) -> dict[str, _Background]:
        if self._background_jobs is None:
            self._background_jobs = {}
        return self._background_jobs

    def _tasks(self) -> Supervisor:
        """The supervisor of background processes, made on first use (and again after ``_stop_tasks``)."""
        if self._supervisor is None:
            self._supervisor = Supervisor()
        return self._supervisor

    async def _stop_tasks(self) -> None:
        """Kill every background process and stop their supervisor; idempotent, from any task."""
        supervisor, self._supervisor = self._supervisor, None
        if supervisor is None:
            return
        with anyio.CancelScope(shield=True):
            for job in list(self._background.values()):
                if job.process is not None and not job.done.is_set():
                    with contextlib.suppress(AgentBackendsError):  # the engine is gone, say: close anyway
                        await job.process.kill()
            await supervisor.aclose()

    # --- execute ---------------------------------------------------------------------------------------------

    async def execute(
        self,
        command: str,
        timeout: float | None = None,
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        stdin: str | bytes | None = None,
    ) -> ExecuteResponse:
        """Run ``command`` through ``sh -c``; stdout and stderr interleaved in arrival order.

        ``timeout`` (seconds; default ``default_timeout``, ``math.inf`` for none) kills the whole process tree and
        keeps the output so far (``timed_out=True``, ``exit_code=None``). Output beyond ``max_output_chars`` keeps
        its head and tail (``truncated=True``). Standard input is closed unless ``stdin`` is given.
        """
        Process.check_arguments(command, env=env, cwd=cwd, timeout=timeout)  # InvalidArgumentError before it runs
        limit = self.default_timeout if timeout is None else timeout
        async with self.open_process(command, env=env, cwd=cwd, stdin=stdin) as process:
            return await collect(process, timeout=limit, max_chars=self.max_output_chars)

    # --- background processes ----------------------------------------------------------------------------------

    async def start_background(
        self, command: str, *, env: Mapping[str, str] | None = None, cwd: str | None = None
    ) -> BackgroundProcess:
        """Start a long-running command and return at once; its output is kept (capped) for ``read_background``.

        It runs under the backend's supervisor, not in the calling task: the caller may finish, and the backend
        may be closed from any task (which kills it).
        """
        job = _Background(id=uuid.uuid4().hex[:12], command=command, buffer=OutputBuffer(self.max_output_chars))
        await self._tasks().start(self._run_background, job, env, cwd)
        self._background[job.id] = job
        return job.snapshot()

    async def _run_background(
        self,
        job: _Background,
        env: Mapping[str, str] | None,
        cwd: str | None,
        *,
        task_status: TaskStatus[None],
    ) -> None:
        started = False
        try:
            async with self.open_process(job.command, env=env, cwd=cwd) as process:
                job.process = process
                task_status.started()
                started = True
                async for chunk in process:
                    job.buffer.feed(chunk)
                job.exit_code = await process.wait()
        except Exception as exc:
            if not started:
                raise  # start_background raises it
            # Raised here, it would crash the task group that runs every background process (and the code inside
            # the backend's `async with`): record it in the job's output instead.
            job.buffer.feed(OutputChunk("stderr", f"\n[background process failed: {exc}]\n".encode()))
        finally:
            job.done.set()

    def _job(self, process_id: str) -> _Background:
        job = self._background.get(process_id)
        if job is None:
            raise ProcessNotFoundError(f"no background process with id {process_id!r}")
        return job

    async def read_background(self, process_id: str) -> BackgroundProcess:
        """Whether it still runs, its exit code, and its output so far."""
        return self._job(process_id).snapshot()

    async def list_background(self) -> list[BackgroundProcess]:
        """Every background process started here, running or finished."""
        return [job.snapshot() for job in self._background.values()]

    async def kill_background(self, process_id: str) -> BackgroundProcess:
        """Kill a background process (and its children) and return its final state."""
        job = self._job(process_id)
        if job.process is not None and not job.done.is_set():
            await job.process.kill()
            with anyio.move_on_after(_KILL_GRACE_SECONDS):
                await job.done.wait()
        return job.snapshot()
