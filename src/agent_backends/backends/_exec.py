"""What every executing backend shares, built on its one primitive, ``open_process``.

``execute`` streams the process into a bounded ``OutputBuffer`` under a timeout that kills the whole tree;
background processes run in a task group the backend holds open while it is entered (``async with``).
"""

from __future__ import annotations

import contextlib
import math
import uuid
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field

import anyio
from anyio.abc import TaskGroup, TaskStatus

from agent_backends.exceptions import AgentBackendsError, ProcessNotFoundError, SandboxNotStartedError
from agent_backends.process import BackgroundProcess, OutputBuffer, OutputChunk, Process
from agent_backends.types import ExecuteResponse

__all__ = ("DEFAULT_MAX_OUTPUT_CHARS", "DEFAULT_TIMEOUT", "ExecutionMixin")

DEFAULT_MAX_OUTPUT_CHARS = 100_000
DEFAULT_TIMEOUT = 600.0
_KILL_GRACE_SECONDS = 10.0


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
    _tasks: TaskGroup | None = None
    _task_stack: contextlib.AsyncExitStack | None = None

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

    # --- lifecycle of the background task group ---------------------------------------------------------------

    async def _start_tasks(self) -> None:
        if self._tasks is None:
            stack = contextlib.AsyncExitStack()
            self._tasks = await stack.enter_async_context(anyio.create_task_group())
            self._task_stack = stack
            self._background: dict[str, _Background] = {}

    async def _stop_tasks(self) -> None:
        """Kill every background process and close the task group; idempotent."""
        stack, self._task_stack = self._task_stack, None
        if stack is None:
            return
        with anyio.CancelScope(shield=True):
            for job in list(self._background.values()):
                if job.process is not None and not job.done.is_set():
                    with contextlib.suppress(AgentBackendsError):  # the engine is gone, say: close anyway
                        await job.process.kill()
        assert self._tasks is not None
        self._tasks.cancel_scope.cancel()
        self._tasks = None
        await stack.aclose()  # the task group's own scope: exited here, outside any scope opened above

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
        buffer = OutputBuffer(self.max_output_chars)
        exit_code: int | None = None
        async with self.open_process(command, env=env, cwd=cwd, stdin=stdin) as process:
            with anyio.move_on_after(math.inf if limit is None else limit) as scope:
                async for chunk in process:
                    buffer.feed(chunk)
                exit_code = await process.wait()
            if scope.cancelled_caught:
                await process.kill()
        timed_out = scope.cancelled_caught
        output = buffer.text()
        if timed_out:
            output += f"\n[timed out after {limit:g} s; the command and everything it started were killed]"
        return ExecuteResponse(
            output=output, exit_code=None if timed_out else exit_code, truncated=buffer.truncated, timed_out=timed_out
        )

    # --- background processes ----------------------------------------------------------------------------------

    def _tasks_or_raise(self) -> TaskGroup:
        if self._tasks is None:
            raise SandboxNotStartedError(
                f"background processes need the {type(self).__name__} to be entered: `async with backend: ...`"
            )
        return self._tasks

    async def start_background(
        self, command: str, *, env: Mapping[str, str] | None = None, cwd: str | None = None
    ) -> BackgroundProcess:
        """Start a long-running command and return at once; its output is kept (capped) for ``read_background``."""
        tasks = self._tasks_or_raise()
        job = _Background(id=uuid.uuid4().hex[:12], command=command, buffer=OutputBuffer(self.max_output_chars))
        await tasks.start(self._run_background, job, env, cwd)
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
        self._tasks_or_raise()
        job = self._background.get(process_id)
        if job is None:
            raise ProcessNotFoundError(f"no background process with id {process_id!r}")
        return job

    async def read_background(self, process_id: str) -> BackgroundProcess:
        """Whether it still runs, its exit code, and its output so far."""
        return self._job(process_id).snapshot()

    async def list_background(self) -> list[BackgroundProcess]:
        """Every background process started here, running or finished."""
        self._tasks_or_raise()
        return [job.snapshot() for job in self._background.values()]

    async def kill_background(self, process_id: str) -> BackgroundProcess:
        """Kill a background process (and its children) and return its final state."""
        job = self._job(process_id)
        if job.process is not None and not job.done.is_set():
            await job.process.kill()
            with anyio.move_on_after(_KILL_GRACE_SECONDS):
                await job.done.wait()
        return job.snapshot()
