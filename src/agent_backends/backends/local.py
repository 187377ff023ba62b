"""``LocalBackend``: a ``FilesystemBackend`` that also runs shell commands on the host, in its root directory.

Each command runs as ``/bin/sh -c COMMAND`` in a new session. On a timeout, a kill or a cancellation every process of
that session is killed, whatever process group it is in (``set -m`` jobs too); a process that moved into a session
of its own (``setsid``, a daemon) is never killed. When the shell exits by itself, what it left running in the
background is left alone, and its output is read for ``DRAIN_SECONDS`` more at most, so a child holding the pipes
open does not hold up the call. This isolates nothing: the commands run as you, with your environment; use
``DockerSandbox`` for untrusted code.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import subprocess
from collections.abc import Callable, Mapping
from typing import Self

import anyio
import anyio.abc
import anyio.to_thread

from agent_backends._grep import DEFAULT_MAX_MATCHES
from agent_backends.backends._exec import DEFAULT_MAX_OUTPUT_CHARS, DEFAULT_TIMEOUT, ExecutionMixin
from agent_backends.backends._workspace import DRAIN_SECONDS, WorkspaceCommands
from agent_backends.backends.filesystem import FilesystemBackend
from agent_backends.exceptions import ProcessError, SandboxGoneError
from agent_backends.process import ChannelProcess, OutputChunk, Process, StreamName, exit_status

__all__ = ("LocalBackend",)

_CLEANUP_SECONDS = 10.0


_DRAIN_FLOOR = 0.05  # past the drain deadline, output already in the pipe is still read while it comes this fast
_DRAIN_LIMIT = 10.0  # ... but never for longer than this after the deadline


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _session_members(sid: int) -> list[tuple[int, int, int]]:
    """(pid, process group, start time) of every live process in session ``sid``, from ``/proc`` (empty where there
    is none)."""
    found: list[tuple[int, int, int]] = []
    try:
        names = os.listdir("/proc")
    except OSError:
        return found
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as handle:
                fields = handle.read().rpartition(b")")[2].split()
        except OSError:
            continue  # exited meanwhile
        # After the command name: state, ppid, pgrp, session, ..., start time (the 20th).
        if len(fields) > 19 and int(fields[3]) == sid and fields[0] != b"Z":
            found.append((int(name), int(fields[2]), int(fields[19])))
    return found


def _witnesses(sid: int) -> frozenset[tuple[int, int]]:
    """(pid, start time) of what runs in session ``sid`` now: while one of them lives, ``sid`` is still that session
    (an id in use is never given to another process), so killing it later cannot hit a stranger."""
    return frozenset((pid, start) for pid, _, start in _session_members(sid))


def kill_sessions_left(sessions: dict[int, frozenset[tuple[int, int]]]) -> None:
    """Kill what commands left running in their sessions, where a witness shows the session is still theirs."""
    for sid, witnesses in sessions.items():
        alive = {(pid, start) for pid, _, start in _session_members(sid)}
        if alive & witnesses:
            kill_session(sid)


def kill_session(sid: int) -> None:
    """Kill every process of session ``sid`` (blocking: it reads ``/proc``), in every process group of it; a process
    that left for a session of its own is not in it. Without ``/proc``, the session leader's group."""
    _kill_group(sid)
    for _ in range(50):  # what forks while it is killed is met in the next round
        members = _session_members(sid)
        if not members:
            return
        for pid, group, _ in members:
            _kill_group(group)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)


class _LocalProcess(ChannelProcess):
    """A host process in its own group; output is pumped into a small bounded channel (back-pressure)."""

    def __init__(
        self,
        command: str,
        *,
        workdir: Callable[[], str],
        env: dict[str, str],
        stdin: bytes | None,
        interactive: bool,
        sessions: dict[int, frozenset[tuple[int, int]]],
    ) -> None:
        super().__init__(stdin=stdin, interactive=interactive)
        self._argv = ["/bin/sh", "-c", command]
        self._workdir, self._env = workdir, env
        self._sessions = sessions  # the backend's: what its commands left running goes when it is closed
        self._process: anyio.abc.Process | None = None
        self._drain_until: float | None = None  # set when the shell exits
        self._receiving: set[anyio.CancelScope] = set()

    @property
    def returncode(self) -> int | None:
        return None if self._process is None else exit_status(self._process.returncode)

    async def __aenter__(self) -> Self:
        try:
            cwd = await anyio.to_thread.run_sync(self._workdir)
            piped = self._interactive or self._stdin is not None
            spawned: anyio.abc.Process | None = None
            # Shielded: cancelled once the shell is spawned, asyncio would kill the shell alone, not its group, and
            # what the shell already started would run on, unseen. Cancellation comes at the next checkpoint instead.
            with anyio.CancelScope(shield=True):
                try:
                    spawned = await anyio.open_process(
                        self._argv,
                        cwd=cwd,
                        env=self._env,
                        stdin=subprocess.PIPE if piped else subprocess.DEVNULL,
                        start_new_session=True,
                    )
                except OSError as exc:
                    raise ProcessError(f"could not start /bin/sh: {exc}") from exc
        except BaseException:  # a refused cwd, say: nothing started, but the channel must not leak
            self._send.close()
            self._receive.close()
            raise
        assert spawned is not None
        self._process = process = spawned
        self._stack.push_async_callback(self._close)  # runs last, once the pumps are gone
        tasks = await self._stack.enter_async_context(anyio.create_task_group())
        self._stack.push_async_callback(self._stop, tasks)  # runs first
        assert process.stdout is not None
        assert process.stderr is not None
        with self._send:
            tasks.start_soon(self._pump, process.stdout, "stdout", self._send.clone())
            tasks.start_soon(self._pump, process.stderr, "stderr", self._send.clone())
        tasks.start_soon(self._reap, process)
        self._start_stdin(tasks)
        return self

    def _receive_deadline(self) -> float:
        """How long the next read of a pipe may wait: for ever while the shell runs, then until the drain ends
        (a read that finds output already waiting still gets it, up to ``_DRAIN_LIMIT`` past that)."""
        if self._drain_until is None:
            return math.inf
        now = anyio.current_time()
        if now > self._drain_until + _DRAIN_LIMIT:
            return now
        return max(self._drain_until, now + _DRAIN_FLOOR)

    async def _pump(
        self, stream: anyio.abc.ByteReceiveStream, name: StreamName, send: anyio.abc.ObjectSendStream[OutputChunk]
    ) -> None:
        async with send:
            while True:
                data = b""
                with anyio.CancelScope(deadline=self._receive_deadline()) as scope:
                    self._receiving.add(scope)
                    try:
                        data = await stream.receive()
                    except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError):
                        return
                    finally:
                        self._receiving.discard(scope)
                if scope.cancelled_caught:
                    return  # drained: what still holds the pipe was left running by the command, not the command
                await send.send(OutputChunk(name, data))

    async def _reap(self, process: anyio.abc.Process) -> None:
        """When the shell exits, read its pipes for ``DRAIN_SECONDS`` at most: a child it left may hold them."""
        await process.wait()
        self._drain_until = anyio.current_time() + DRAIN_SECONDS
        for scope in list(self._receiving):
            scope.deadline = min(scope.deadline, self._receive_deadline())

    async def _stop(self, tasks: anyio.abc.TaskGroup) -> None:
        """Kill the session if the shell still runs, reap the shell, and stop pumping (a reader may have left)."""
        assert self._process is not None
        with anyio.CancelScope(shield=True), anyio.move_on_after(_CLEANUP_SECONDS):
            if self._process.returncode is None:
                await anyio.to_thread.run_sync(kill_session, self._process.pid)
            await self._process.wait()
            # The shell led a new session (its id is the shell's pid): remember what it left running there, so
            # that closing the backend kills it.
            left = await anyio.to_thread.run_sync(_witnesses, self._process.pid)
            if left:
                self._sessions[self._process.pid] = left
        tasks.cancel_scope.cancel()

    async def _close(self) -> None:
        assert self._process is not None
        with anyio.CancelScope(shield=True):
            await self._process.aclose()
        self._receive.close()

    async def _send_stdin(self, data: bytes | str) -> None:
        assert self._process is not None
        if self._process.stdin is None:
            raise ProcessError("standard input is closed; open the process with interactive=True to write to it")
        try:
            await self._process.stdin.send(data.encode() if isinstance(data, str) else data)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError) as exc:
            raise ProcessError("the process no longer reads its standard input") from exc

    async def close_stdin(self) -> None:
        assert self._process is not None
        await self._stdin_written.wait()
        if self._process.stdin is not None:
            with contextlib.suppress(anyio.BrokenResourceError, OSError):
                await self._process.stdin.aclose()

    async def kill(self) -> None:
        assert self._process is not None
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(kill_session, self._process.pid)

    async def wait(self) -> int | None:
        assert self._process is not None
        return exit_status(await self._process.wait())


class LocalBackend(WorkspaceCommands, ExecutionMixin, FilesystemBackend):
    """Files under ``root_dir`` plus shell execution on the host, with ``root_dir`` as the working directory.

    Its paths are the host's, so the file tools and the shell share one namespace: a path that ``write`` took or
    ``ls_info``/``glob_info``/``grep_raw`` returned works unchanged in ``execute``. Relative paths are taken from
    ``root_dir`` (the shell's working directory); an absolute path outside ``root_dir`` is refused.

    Args:
        root_dir: the directory the file tools are confined to and the commands' working directory.
        env: variables added to (or replacing) the inherited environment for every command.
        default_timeout: seconds before ``execute`` kills a command (``None``: no limit).
        max_output_chars: how much output ``execute`` keeps (head and tail).
        max_grep_matches: cap on the lines ``grep_raw`` returns (``None``: no cap).
    """

    def __init__(
        self,
        root_dir: str | os.PathLike[str] = ".",
        *,
        env: Mapping[str, str] | None = None,
        default_timeout: float | None = DEFAULT_TIMEOUT,
        max_output_chars: int = DEFAULT_MAX_OUTPUT_CHARS,
        max_grep_matches: int | None = DEFAULT_MAX_MATCHES,
    ) -> None:
        super().__init__(root_dir, max_grep_matches=max_grep_matches)
        self._root_path = self._cwd = self.root_dir
        self._aliases = ()
        self.env = dict(env or {})
        self._sessions: dict[int, frozenset[tuple[int, int]]] = {}  # what commands left running, by session
        self.default_timeout = default_timeout
        self.max_output_chars = max_output_chars

    _ws_kind = "local"

    async def _ws_after_run(self) -> None:
        """A command that ends because its directory was removed ends in a workspace that is gone."""
        if not await anyio.to_thread.run_sync(os.path.isdir, self.root_dir):
            raise SandboxGoneError(f"the directory {self.root_dir} of this backend is gone")

    @property
    def id(self) -> str:
        """The real path of the root directory (stable for the life of the backend)."""
        return self.root_dir

    async def __aenter__(self) -> Self:
        return self  # nothing to start: commands run on demand, background processes under their own supervisor

    async def aclose(self) -> None:
        """Kill background processes and what commands left running in their sessions (a process that moved into a
        session of its own is left alone), and remove a fork's own directory; idempotent, from any task. The backend
        stays usable afterwards."""
        await self._stop_tasks()
        sessions, self._sessions = dict(self._sessions), {}
        if sessions:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(kill_sessions_left, sessions)
        await super().aclose()

    def _respawn(self, root_dir: str) -> Self:
        return type(self)(
            root_dir,
            env=self.env,
            default_timeout=self.default_timeout,
            max_output_chars=self.max_output_chars,
            max_grep_matches=self.max_grep_matches,
        )

    def open_process(
        self,
        command: str,
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        stdin: str | bytes | None = None,
        interactive: bool = False,
    ) -> Process:
        """A host process running ``command`` in ``cwd`` (default: ``root_dir``); ``async with`` starts it."""
        Process.check_arguments(command, env={**self.env, **(env or {})}, cwd=cwd)  # InvalidArgumentError, not later
        path = self._path(cwd or self._cwd)
        return _LocalProcess(
            command,
            workdir=lambda: self._host_dir(path),
            # PWD as this backend names the directory, so `pwd` prints a path the file tools take.
            env={**os.environ, **self.env, "PWD": path, **(env or {})},
            stdin=stdin.encode() if isinstance(stdin, str) else stdin,
            interactive=interactive,
            sessions=self._sessions,
        )
