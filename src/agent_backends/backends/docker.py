"""``DockerSandbox``: a container per sandbox on aiodocker; exec output streamed frame by frame.

Lifecycle: constructing a sandbox does no I/O; the first operation creates and starts its container (concurrent
first operations start one), or, with ``ref=``, attaches to a running one this library created. Nothing is held in
the caller's task, so a sandbox can be started, used and closed from any task, in any order.

Files move with the archive API (``put_archive``/``get_archive``, one round trip each, no shell), listings and
deletes run ``find``/``stat``/``rm`` inside, grep runs ``rg --json`` inside when the image has it (else the shared
fallback of ``BaseSandbox``). With ``read_only=True`` the root filesystem is read-only, the work dir a tmpfs, and
files move through commands (the archive API cannot see a tmpfs).

The Engine API cannot kill an exec'd process, so every command runs under a small wrapper: ``setsid`` puts it in a
session whose leader carries a random token in its command line, and a kill is a second exec that finds the token
under ``/proc`` and kills every process of that session (each of its process groups; a process that moved into a
session of its own is spared). Nothing is written in the container, so kills work in scratch images and on read-only
root filesystems. When the command's shell exits by itself, what it left running is left alone, as on the host; the
engine ends the exec's output a moment later even if such a process holds it (Docker and gVisor after about 2 s,
Podman at once).

Background processes live in the container: a detached exec runs each one with its output appended to a file in a
small tmpfs (``/run/agent-backends``), trimmed to head and tail when it grows, with its exit status beside it. Any
``DockerSandbox`` object attached to the container (``ref=``, after a restart) lists, reads and kills them.

Any engine speaking the Docker API works (Podman's socket included); ``runtime="runsc"`` selects gVisor. A container
removed or stopped from outside raises ``SandboxGoneError`` from every operation; an engine that cannot be reached,
``EngineUnavailableError``; both are ``SandboxUnavailableError``.
"""

from __future__ import annotations

import base64
import contextlib
import io
import os
import shlex
import tarfile
import time
import uuid
from collections.abc import Generator, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Self

import anyio
import anyio.abc
import anyio.to_thread

from agent_backends import _paths
from agent_backends._grep import DEFAULT_MAX_MATCHES
from agent_backends._ripgrep import RipgrepJson
from agent_backends.backends import _engine
from agent_backends.backends._base import is_dir_error, not_found
from agent_backends.backends._container_checkpoints import ContainerCheckpoints
from agent_backends.backends._exec import DEFAULT_MAX_OUTPUT_CHARS, DEFAULT_TIMEOUT, ExecutionMixin
from agent_backends.backends.sandbox import BaseSandbox, CommandResult
from agent_backends.exceptions import (
    EngineUnavailableError,
    ImageNotFoundError,
    PathError,
    ProcessError,
    ProcessNotFoundError,
    SandboxError,
    SandboxGoneError,
    SandboxNotStartedError,
    SandboxUnavailableError,
)
from agent_backends.process import BackgroundProcess, ChannelProcess, OutputBuffer, OutputChunk, Process, exit_status
from agent_backends.runtime import BUILTIN_RUNTIMES, RuntimeConfig, ensure_runtime_image
from agent_backends.types import FileInfo

if TYPE_CHECKING:
    import aiodocker
    from aiodocker.containers import DockerContainer
    from aiodocker.execs import Exec
    from pydantic_ai.workspaces import WorkspaceRef

__all__ = ("SANDBOX_LABEL", "STATE_DIR", "DockerSandbox", "remove_leftover_sandboxes")

SANDBOX_LABEL = "agent-backends.sandbox"
STATE_DIR = "/run/agent-backends"  # a tmpfs of ours in every sandbox: background processes' state and output
_JOBS = f"{STATE_DIR}/jobs"
_API_SECONDS = 60.0
_KILL_SECONDS = 10.0
_STDERR_LIMIT = 64 * 1024
_INLINE_PACK_BYTES = 256 * 1024
_DIR_BIT = 1 << 31
_LINK_BIT = 1 << 27
_TRIM_BYTES = 4 * 1024 * 1024  # a background process's output file is trimmed to head and tail past this
_WATCH_SECONDS = 5.0  # a command silent this long: check that its container is still there

# The process-group leader: its command line carries the token ($0) the killer looks for; it runs the command in a
# child shell (never ``exec``), so a command that ``exec``s something else cannot take the token away.
_LEADER = '/bin/sh -c "$1"; exit "$?"'
# $1: the command, $2$3: the token (in two pieces, so only the leader's command line holds it whole), $4: non-empty
# when ``stdin=`` bytes are fed, $5: the leader's script. The command gets its own session and this exec's stdin;
# after it exits, what it left running is left alone, and input it left unread is read to its end (while input is
# pending, the engine keeps the exec attached long after the command is gone). Once the command has its stderr,
# the wrapper's own goes: dash reports a killed job ("Killed"), which is no output of the command's.
_WRAPPER = (
    'exec 3<&0; setsid /bin/sh -c "$5" "$2$3" "$1" <&3 3<&- & pid=$!; exec 3<&- 2>/dev/null; '
    'wait "$pid"; rc=$?; [ -z "$4" ] || cat >/dev/null; exit "$rc"'
)
# $1: a regular expression matching the token but not itself. Waits a moment for the leader to appear (a kill can
# race the start), then kills every process of the session of each process whose command line holds the token (the
# leader's), in rounds until none is left: ``/proc/PID/stat`` names each process's session after its command name.
_KILLER = (
    "for i in 1 2 3 4 5 6 7 8 9 10; do "
    'found=$(grep -l -- "$1" /proc/[0-9]*/cmdline 2>/dev/null); [ -n "$found" ] && break; sleep 0.05; done; '
    "sids=; for f in $found; do p=${f#/proc/}; p=${p%/cmdline}; "
    'read -r s < "/proc/$p/stat" 2>/dev/null && { set -- ${s##*) }; sids="$sids $4"; }; kill -9 "-$p" 2>/dev/null; '
    'done; [ -n "$sids" ] || exit 0; r=0; while [ $r -lt 20 ]; do r=$((r + 1)); left=; '
    'for f in /proc/[0-9]*/stat; do read -r s < "$f" 2>/dev/null || continue; set -- ${s##*) }; '
    '[ "$1" = Z ] && continue; for sid in $sids; do [ "$4" = "$sid" ] || continue; q=${f#/proc/}; q=${q%/stat}; '
    'kill -9 "-$3" "$q" 2>/dev/null; left=1; done; done; [ -n "$left" ] || break; done; true'
)
# A background process: $1 the command, $2 its directory, $3$4 the token, $5 the leader, $6 the trim threshold, $7
# how much head and tail a trim keeps. Output goes to ``out`` (appended, so truncating it is safe); once past the
# threshold, the first bytes go to ``head`` (once), the last to ``tail``, and ``written`` counts what was trimmed.
_BACKGROUND = (
    'd=$2; mkdir -p "$d" && printf %s "$1" > "$d/command" && : > "$d/out" || exit 1; '
    'trim() { s=$(wc -c < "$d/out"); [ "$s" -gt "$6" ] || return 0; '
    '[ -f "$d/head" ] || head -c "$7" "$d/out" > "$d/head"; tail -c "$7" "$d/out" > "$d/tail"; : > "$d/out"; '
    'echo $(( $(cat "$d/written" 2>/dev/null || echo 0) + s )) > "$d/written"; }; '
    'setsid /bin/sh -c "$5" "$3$4" "$1" </dev/null >>"$d/out" 2>&1 & pid=$!; '
    "( while :; do sleep 1; trim; done ) >/dev/null 2>&1 & trimmer=$!; "
    'wait "$pid"; rc=$?; kill -9 "$trimmer" "-$pid" 2>/dev/null; trim; echo "$rc" > "$d/rc.new"; mv "$d/rc.new" "$d/rc"'
)
# $1: the jobs directory, $2: one job's id (else all), $3: non-empty for the command and status only. Each file is
# a section: a ``=name`` line, then its bytes in base64.
_JOBS_SCRIPT = (
    'cd "$1" 2>/dev/null || exit 0; for j in ${2:-*}; do [ -d "$j" ] || continue; printf "=job %s\\n" "$j"; '
    'for f in command rc written head tail out; do [ -n "$3" ] && [ "$f" != command ] && [ "$f" != rc ] && continue; '
    '[ -f "$j/$f" ] && { printf "=%s\\n" "$f"; base64 < "$j/$f"; }; done; done; true'
)


def _aiodocker() -> Any:
    try:
        import aiodocker
    except ImportError as exc:
        raise SandboxError("DockerSandbox needs aiodocker: pip install 'agent-backends[docker]'") from exc
    return aiodocker


def _token_pattern(token: str) -> str:
    """A regular expression matching ``token`` but not its own text: the killer's command line holds it too."""
    return f"[{token[0]}]{token[1:]}"


def _is_gone(status: int, message: str) -> bool:
    """Whether the engine's answer means the container is missing or stopped (Docker's and Podman's words)."""
    text = message.lower()
    return "no such container" in text or (
        status in (409, 500) and ("not running" in text or "state improper" in text or "is restarting" in text)
    )


@contextlib.contextmanager
def _engine_errors(what: str, host: str | None, sandbox: str | None = None) -> Generator[None]:
    """Map aiodocker's errors (and a silent engine) to the library's, with ``from exc``.

    With ``sandbox``, an engine saying the container is missing or stopped raises ``SandboxGoneError``.
    """
    aiodocker = _aiodocker()
    import aiohttp

    try:
        with anyio.fail_after(_API_SECONDS):
            yield
    except TimeoutError as exc:
        raise EngineUnavailableError(f"{what}: the engine did not answer within {_API_SECONDS:g} s") from exc
    except (aiodocker.DockerError, _engine.EngineError) as exc:
        status, message = int(exc.status), str(exc.message)
        if status == 900:
            raise EngineUnavailableError(f"{what}: cannot reach the engine at {host}: {message}") from exc
        if sandbox is not None and _is_gone(status, message):
            raise SandboxGoneError(
                f"{what}: sandbox {sandbox} is gone (its container was removed or stopped: {message})"
            ) from exc
        raise SandboxError(f"{what}: {message} (HTTP {status})") from exc
    except (OSError, aiohttp.ClientError) as exc:
        if isinstance(exc, SandboxError):  # an OSError subclass of ours (ConnectionError)
            raise
        where = host or "the default socket"
        raise EngineUnavailableError(f"{what}: cannot reach the engine at {where}: {exc}") from exc


def _parse_mtime(text: str) -> datetime | None:
    with contextlib.suppress(ValueError):
        head, _, fraction = text.rstrip("Z").partition(".")
        return datetime.fromisoformat(f"{head}.{(fraction + '000000')[:6]}").replace(tzinfo=UTC)
    return None


class _DockerProcess(ChannelProcess):
    """One exec: a reader task moves frames into a small bounded channel; a kill is a second exec."""

    def __init__(
        self, sandbox: DockerSandbox, command: str, *, stdin: bytes | None, interactive: bool, **exec_options: Any
    ) -> None:
        super().__init__(stdin=stdin, interactive=interactive)
        self._sandbox = sandbox
        token = uuid.uuid4().hex
        self._pattern = _token_pattern(f"abcmd{token}")
        drain = "drain" if stdin is not None and not interactive else ""
        self._argv = ["/bin/sh", "-c", _WRAPPER, "sh", command, "abcmd", token, drain, _LEADER]
        self._options = exec_options
        self._exec: Exec | None = None
        self._stream: _engine.ExecStream | None = None
        self._ended = anyio.Event()  # the output reached its end: the command is gone
        self._kill_sent = False
        self._pump_scope = anyio.CancelScope(shield=True)  # only _stop ends the pump, so it sees that end
        self._returncode: int | None = None
        self._counted = False
        self._gone = False  # the pump saw the container vanish while the output was silent

    @property
    def returncode(self) -> int | None:
        return self._returncode

    async def __aenter__(self) -> Self:
        sandbox = self._sandbox
        try:
            piped = self._interactive or self._stdin is not None
            stream: _engine.ExecStream | None = None
            for attempt in range(3):
                container = await sandbox._ready()  # pyright: ignore[reportPrivateUsage]
                try:
                    with sandbox._errors("could not start a command"):  # pyright: ignore[reportPrivateUsage]
                        self._exec = await container.exec(
                            self._argv, stdin=piped, stdout=True, stderr=True, **self._options
                        )
                        stream = await _engine.start_exec(sandbox._host, self._exec.id)  # pyright: ignore[reportPrivateUsage]
                        self._stack.push_async_callback(stream.aclose)
                    break
                except SandboxError as exc:
                    # A snapshot's commit paused the container between our look and the exec: wait for it. (An
                    # exec made but refused its start never ran.)
                    if "paused" not in str(exc).lower() or attempt == 2:
                        raise
                    self._exec = None
                    await sandbox._commit_done()  # pyright: ignore[reportPrivateUsage]
                    await anyio.sleep(0.1)
        except BaseException:
            # Cancelled (or failed) while the engine starts the exec: the command may run already, so kill it by
            # its token, and close what was opened.
            with anyio.CancelScope(shield=True):
                if self._exec is not None:
                    with contextlib.suppress(SandboxError):
                        await self.kill()
                await self._stack.aclose()
            self._send.close()
            self._receive.close()
            raise
        assert stream is not None
        self._stream = stream
        sandbox._active += 1  # pyright: ignore[reportPrivateUsage]
        self._counted = True
        tasks = await self._stack.enter_async_context(anyio.create_task_group())
        self._stack.push_async_callback(self._stop, tasks)
        tasks.start_soon(self._pump, stream)
        self._start_stdin(tasks)
        return self

    async def _pump(self, stream: _engine.ExecStream) -> None:
        """Move frames into the channel until the output ends; once the reader is gone, drain them unread.

        Shielded: a cancelled pump could not tell ``_stop`` whether the command ended, and it would not be killed.
        """
        try:
            with self._pump_scope:
                async with self._send:
                    while True:
                        frame: _engine.Frame | None = None
                        with anyio.move_on_after(_WATCH_SECONDS) as quiet:
                            frame = await stream.receive()
                        if quiet.cancelled_caught:  # silence: is the container still there? (gVisor keeps the
                            if await self._sandbox._still_there():  # stream of a removed one open)  # pyright: ignore[reportPrivateUsage]
                                continue
                            self._gone = True
                            break
                        if frame is None:
                            break
                        with contextlib.suppress(anyio.BrokenResourceError):
                            await self._send.send(OutputChunk("stdout" if frame.stream == 1 else "stderr", frame.data))
        finally:
            self._ended.set()

    async def _stop(self, tasks: anyio.abc.TaskGroup) -> None:
        self._receive.close()  # nobody reads any more: the pump drains what is left
        try:
            with anyio.CancelScope(shield=True):
                if not self._ended.is_set():
                    with contextlib.suppress(SandboxUnavailableError):  # gone: nothing left to kill
                        await self.kill()
                    with anyio.move_on_after(_KILL_SECONDS):
                        if self._interactive or self._stdin is not None:
                            await self.close_stdin()  # the end of input ends a wrapper still reading it
                        await self._ended.wait()
        finally:
            if self._counted:
                self._counted = False
                self._sandbox._active -= 1  # pyright: ignore[reportPrivateUsage]
                self._sandbox._touch()  # pyright: ignore[reportPrivateUsage]
            self._pump_scope.cancel()
            tasks.cancel_scope.cancel()

    async def _send_stdin(self, data: bytes | str) -> None:
        if self._stream is None or not (self._interactive or self._stdin is not None):
            raise ProcessError("standard input is closed; open the process with interactive=True to write to it")
        if self._ended.is_set():  # the engine has closed the connection
            raise ProcessError("the process no longer reads its standard input")
        try:
            await self._stream.send(data.encode() if isinstance(data, str) else data)
        except (OSError, anyio.BrokenResourceError, anyio.ClosedResourceError) as exc:
            raise ProcessError("the process no longer reads its standard input") from exc

    async def close_stdin(self) -> None:
        """Half-close the exec's connection: the engine closes the process's stdin, output keeps flowing."""
        await self._stdin_written.wait()
        if self._stream is not None:
            with contextlib.suppress(OSError, anyio.BrokenResourceError, anyio.ClosedResourceError):
                await self._stream.send_eof()

    async def kill(self) -> None:
        # Once is enough: after it, the group is gone, and a second kill would only wait for a leader that never
        # comes back.
        if self._ended.is_set() or self._kill_sent:
            return
        self._kill_sent = True
        await self._sandbox._kill_token(self._pattern)  # pyright: ignore[reportPrivateUsage]

    async def wait(self) -> int | None:
        await self._ended.wait()
        if self._gone:
            raise SandboxGoneError(f"sandbox {self._sandbox.id} is gone: its container vanished while the command ran")
        if self._returncode is None and self._exec is not None:
            sandbox = self._sandbox
            with sandbox._errors("could not read the command's exit code"):  # pyright: ignore[reportPrivateUsage]
                deadline = time.monotonic() + _KILL_SECONDS
                state: dict[str, Any] = {}
                while True:
                    try:
                        state = await self._exec.inspect()
                    except _aiodocker().DockerError as exc:
                        if exc.status != 404:
                            raise
                        break  # the exec is gone with its container
                    if state.get("ExitCode") is not None or time.monotonic() > deadline:
                        break
                    await anyio.sleep(0.01)  # the engine records the exit code just after the stream ends
            code = exit_status(state.get("ExitCode"))
            if code is None or (code >= 128 and not self._kill_sent):  # killed: did the container go away?
                await sandbox._check_alive(probe=True)  # pyright: ignore[reportPrivateUsage]
            self._returncode = code
        return self._returncode


class DockerSandbox(ContainerCheckpoints, ExecutionMixin, BaseSandbox):
    """A Docker (or Podman) container as a sandbox: files, streamed execution, background processes.

    Constructing one does no I/O: the first operation starts the container (``start()`` or ``async with`` start it
    at once, to fail early); ``stop()``/``aclose()`` remove it, from any task, and are idempotent.

    Args:
        image: a locally present image (nothing is pulled).
        work_dir: the container directory relative paths and commands start from (created if missing).
        env: environment variables for the container.
        volumes: host-to-container bind mounts, ``{"/host/dir": "/container/dir"}`` (``:ro`` suffix allowed).
        workspace_dir: a host directory mounted at ``work_dir``, so files outlive the container.
        memory: memory limit in bytes, or a string like ``"512m"``.
        cpus: CPU limit (``1.5`` = one and a half CPUs).
        pids_limit: the most processes the container may hold.
        network: give the container a network (off by default: ``NetworkMode=none``).
        user: the user commands and files belong to (``"1000:1000"``, a name, ...).
        runtime: a ``RuntimeConfig`` or a built-in runtime's name (its image is built once, on first use, and
            replaces ``image``); any other string names the OCI runtime, e.g. ``"runsc"`` for gVisor.
        oci_runtime: the OCI runtime, when ``runtime`` names a runtime configuration.
        labels: extra labels; every sandbox also carries ``agent-backends.sandbox``.
        auto_remove: remove the container when the sandbox closes (default); else only stop it.
        docker_url: the engine's API, e.g. ``unix:///run/podman/podman.sock``; default: ``DOCKER_HOST``, else
            Docker's usual sockets.
        ref: the ``id`` of a running sandbox to attach to instead of creating one (after a restart, from another
            process); a sandbox that is gone raises ``SandboxGoneError``, it is never replaced.
        read_only: a read-only root filesystem with a tmpfs at ``work_dir`` (unless a volume is mounted there).
        default_timeout, max_output_chars, max_grep_matches: as for ``LocalBackend``.
    """

    def __init__(
        self,
        image: str = "python:3.12-slim",
        work_dir: str = "/workspace",
        *,
        env: Mapping[str, str] | None = None,
        volumes: Mapping[str, str] | None = None,
        workspace_dir: str | os.PathLike[str] | None = None,
        memory: int | str | None = None,
        cpus: float | None = None,
        pids_limit: int | None = None,
        network: bool = False,
        user: str | None = None,
        runtime: str | RuntimeConfig | None = None,
        oci_runtime: str | None = None,
        labels: Mapping[str, str] | None = None,
        auto_remove: bool = True,
        docker_url: str | None = None,
        ref: str | None = None,
        read_only: bool = False,
        default_timeout: float | None = DEFAULT_TIMEOUT,
        max_output_chars: int = DEFAULT_MAX_OUTPUT_CHARS,
        max_grep_matches: int | None = DEFAULT_MAX_MATCHES,
    ) -> None:
        super().__init__(work_dir=work_dir, max_grep_matches=max_grep_matches)
        self.image = image
        self.env = dict(env or {})
        self.volumes = dict(volumes or {})
        if workspace_dir is not None:
            self.volumes[os.path.abspath(os.fspath(workspace_dir))] = self.work_dir
        self.memory, self.cpus, self.pids_limit = memory, cpus, pids_limit
        self.network, self.user = network, user
        self.runtime_config = runtime if isinstance(runtime, RuntimeConfig) else BUILTIN_RUNTIMES.get(runtime or "")
        self.runtime = oci_runtime if self.runtime_config is not None or runtime is None else str(runtime)
        if self.runtime_config is not None:
            self.image, self.env = self.runtime_config.image_tag, {**self.runtime_config.env_vars, **self.env}
            self.memory = self.memory if self.memory is not None else self.runtime_config.memory
            self.cpus = self.cpus if self.cpus is not None else self.runtime_config.cpus
            self.pids_limit = self.pids_limit if self.pids_limit is not None else self.runtime_config.pids_limit
        self.labels = {**(labels or {}), SANDBOX_LABEL: uuid.uuid4().hex}
        self.name = ref or f"agent-backends-{self.labels[SANDBOX_LABEL][:16]}"  # known before the engine answers
        self._attach_ref = ref
        self.read_only = read_only
        self.auto_remove = auto_remove
        self.docker_url = docker_url
        self.default_timeout = default_timeout
        self.max_output_chars = max_output_chars
        self._host = docker_url or ""
        self._docker: aiodocker.Docker | None = None
        self._container: DockerContainer | None = None
        self._container_id: str | None = None
        self._start_lock = anyio.Lock()
        self._closed = False
        self._paused = False
        self._active = 0  # commands running through this object
        self._last_active = time.monotonic()
        self._owner = (0, 0)
        self._jobs_started: set[str] = set()

    # --- identity and state --------------------------------------------------------------------------------------

    @property
    def id(self) -> str:
        """This sandbox's stable identifier: its container's name (``agent-backends-<hex>``), or the ``ref=`` given.

        Readable from construction on, also after ``stop()``; ``DockerSandbox(ref=sandbox.id)`` attaches to it.
        """
        return self.name

    _ws_kind = "docker"
    _ws_created = False

    def _ws_id(self) -> str | None:
        """The workspace ref's id: the container's name, once it exists (or from construction with ``ref=``)."""
        return self.name if self._ws_created or self._attach_ref is not None else None

    async def _ws_check(self) -> None:
        """A sandbox stopped (by anyone holding it), also while a command ran, is a workspace that is gone."""
        if self._closed:
            raise SandboxNotStartedError(f"sandbox {self.id} was stopped")

    @classmethod
    def from_ref(cls, ref: WorkspaceRef, **options: Any) -> Self:
        """A sandbox attached to the container a workspace ref names (``DockerSandbox(ref=ref.id, **options)``; give
        ``docker_url=`` for Podman); it raises ``WorkspaceUnavailableError`` on first use if the container is gone."""
        from agent_backends.backends._workspace import PROVIDER

        if ref.provider != f"{PROVIDER}.{cls._ws_kind}":
            raise ValueError(f"{ref.provider!r} is not a ref of {cls.__name__} ({PROVIDER}.{cls._ws_kind})")
        return cls(ref=ref.id, **options)

    @property
    def container_id(self) -> str | None:
        """The engine's id of the container, once started or attached (``None`` before)."""
        return self._container_id

    @property
    def closed(self) -> bool:
        """Whether ``stop()``/``aclose()`` was called."""
        return self._closed

    @property
    def paused(self) -> bool:
        """Whether this object paused the container (``pause()``); the next operation resumes it."""
        return self._paused

    @property
    def idle_seconds(self) -> float:
        """Seconds since the last command through this object ended (0 while one runs)."""
        return 0.0 if self._active else time.monotonic() - self._last_active

    def _touch(self) -> None:
        self._last_active = time.monotonic()

    def _errors(self, what: str) -> contextlib.AbstractContextManager[None]:
        return _engine_errors(what, self._host or self.docker_url, self.id)

    async def is_running(self) -> bool:
        """Whether the container still runs (it may have been killed or removed from outside); paused counts."""
        if self._container is None:
            return False
        try:
            with self._errors("could not inspect the container"):
                state = await self._container.show()  # pyright: ignore[reportUnknownMemberType]
        except SandboxError:
            return False
        return bool(state.get("State", {}).get("Running"))

    async def is_busy(self) -> bool:
        """Whether a command runs through this object or a background process runs in the container."""
        if self._active:
            return True
        if self._container is None or self._paused:
            return False
        return any(rc is None for rc in (await self._job_states()).values())

    async def _still_there(self) -> bool:
        """Whether the container still runs; errors (an engine gone) count as yes, to be met by the next call."""
        if self._closed:
            return False  # stopped by someone holding it: its container is being removed
        try:
            await self._check_alive()
        except SandboxGoneError:
            return False
        except SandboxError:
            return True
        return True

    async def _check_alive(self, *, probe: bool = False) -> None:
        """Raise ``SandboxGoneError`` when the container is missing or no longer runs.

        With ``probe``, also run a no-op in it: the engine learns that a container died a moment after its
        processes did, and a command killed by its container's death is reported before that.
        """
        container = self._container
        if container is None:
            return
        with self._errors("could not inspect the container"):
            state = await container.show()  # pyright: ignore[reportUnknownMemberType]
        status = state.get("State", {})
        if status.get("Running") and probe:
            try:
                answer = await self._collect(container, ["/bin/sh", "-c", "echo alive"])
            except SandboxUnavailableError:
                raise
            except SandboxError as exc:
                raise SandboxGoneError(f"sandbox {self.id} is gone: {exc}") from exc
            if answer == "alive\n":
                return
            raise SandboxGoneError(f"sandbox {self.id} is gone: its container no longer runs commands")
        if not status.get("Running"):
            raise SandboxGoneError(
                f"sandbox {self.id} is gone: its container is {status.get('Status', 'stopped')} (exit code "
                f"{status.get('ExitCode')}); it is never restarted or replaced behind your back"
            )

    # --- lifecycle -----------------------------------------------------------------------------------------------

    async def _ready(self) -> DockerContainer:
        """The running container, started (or attached, or resumed) on first use; one start for concurrent calls."""
        await self._commit_done()
        container = self._container
        if container is not None and not self._paused:
            return container
        if self._closed:
            raise SandboxNotStartedError(
                f"sandbox {self.id} was closed (stop()/aclose()); create a new DockerSandbox, or attach to a running "
                "one with DockerSandbox(ref=...)"
            )
        async with self._start_lock:
            if self._closed:
                raise SandboxNotStartedError(f"sandbox {self.id} was closed while it started")
            if self._container is None:
                await self._open()
            if self._paused:
                await self.resume()
            assert self._container is not None
            return self._container

    async def _client(self) -> aiodocker.Docker:
        if self._docker is None:
            self._host, version = await _engine.connect(self.docker_url)
            docker: aiodocker.Docker = _aiodocker().Docker(url=self._host, api_version=f"v{version}")
            self._docker = docker
            return docker
        return self._docker

    async def _open(self) -> None:
        """Create and start the container, or attach to ``ref``; on any failure (or cancellation), leave nothing."""
        container: DockerContainer | None = None
        try:
            docker = await self._client()
            if self._attach_ref is not None:
                container = await self._attach(docker, self._attach_ref)
            else:
                container = await self._create(docker)
            if self.user is not None:
                ids = (await self._collect(container, ["/bin/sh", "-c", "id -u; id -g"])).split()
                if len(ids) == 2 and all(n.isdigit() for n in ids):
                    self._owner = (int(ids[0]), int(ids[1]))
                    if self._attach_ref is None:
                        await self._give_work_dir(container)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self._discard()
            raise
        assert container is not None
        self._container, self._container_id = container, container.id
        self._touch()

    async def _create(self, docker: aiodocker.Docker) -> DockerContainer:
        if self.runtime_config is not None:
            await ensure_runtime_image(self.runtime_config, docker_url=self._host)
        config = self._container_config()
        container: DockerContainer | None = None
        with (
            self._errors(f"could not start a container from {self.image!r}"),
            # A create cut short still lands on the engine, after we stopped listening: let it finish, so a
            # cancellation arrives just after it, with the container known to the cleanup.
            anyio.CancelScope(shield=True),
        ):
            try:
                container = await docker.containers.create(config, name=self.name)  # pyright: ignore[reportUnknownMemberType]
            except _aiodocker().DockerError as exc:
                if exc.status == 404 and "image" in str(exc.message).lower():
                    raise ImageNotFoundError(
                        f"image {self.image!r} is not present locally, and no registry is reached to pull it; "
                        "build it or load it (`docker load`) first"
                    ) from exc
                raise
            self._container_id = container.id
            self._ws_created = True  # the workspace ref exists from here on, whatever happens next
            await container.start()  # pyright: ignore[reportUnknownMemberType]
        assert container is not None
        return container

    async def _attach(self, docker: aiodocker.Docker, ref: str) -> DockerContainer:
        aiodocker = _aiodocker()
        with self._errors(f"could not attach to sandbox {ref!r}"):
            try:
                container = await docker.containers.get(ref)  # pyright: ignore[reportUnknownMemberType]
            except aiodocker.DockerError as exc:
                if exc.status != 404:
                    raise
                raise SandboxGoneError(
                    f"sandbox {ref!r} is gone: the engine has no such container. ref= attaches to a running sandbox "
                    "and never creates a replacement; create a new DockerSandbox instead"
                ) from exc
            info: dict[str, Any] = await container.show()  # pyright: ignore[reportUnknownMemberType]
        config, host, state = info.get("Config", {}), info.get("HostConfig", {}), info.get("State", {})
        labels: dict[str, str] = dict(config.get("Labels") or {})
        if SANDBOX_LABEL not in labels:
            raise SandboxError(
                f"container {ref!r} was not created by agent_backends (it has no {SANDBOX_LABEL} label): not attaching"
            )
        if not state.get("Running"):
            raise SandboxGoneError(
                f"sandbox {ref!r} is gone: its container is {state.get('Status', 'stopped')}; ref= attaches to a "
                "running sandbox and never restarts or replaces it"
            )
        self._paused = bool(state.get("Paused"))
        self.labels = labels
        self.image = str(config.get("Image", self.image))
        self.work_dir = self._cwd = _paths.normalize(config.get("WorkingDir") or self.work_dir)
        self.user = config.get("User") or None
        self.read_only = bool(host.get("ReadonlyRootfs"))
        self.runtime = host.get("Runtime") or self.runtime
        return container

    async def _discard(self) -> None:
        """Remove what a start cut short left (found by name if its id never came back); close the client."""
        docker, self._docker = self._docker, None
        if docker is None:
            return
        try:
            if self._attach_ref is None:
                with (
                    contextlib.suppress(SandboxError),
                    self._errors("could not remove a half-made container"),
                    contextlib.suppress(_aiodocker().DockerError),  # none was made
                ):
                    found = await docker.containers.get(self._container_id or self.name)  # pyright: ignore[reportUnknownMemberType]
                    await found.delete(force=True)  # pyright: ignore[reportUnknownMemberType]
                self._container_id = None
        finally:
            await docker.close()

    def _container_config(self) -> dict[str, Any]:
        host: dict[str, Any] = {
            "NetworkMode": "default" if self.network else "none",
            "Binds": [f"{host}:{inside}" for host, inside in self.volumes.items()],
            "Tmpfs": {STATE_DIR: "mode=1777"},
        }
        if self.read_only:
            host["ReadonlyRootfs"] = True
            if not any(inside.split(":")[0] == self.work_dir for inside in self.volumes.values()):
                host["Tmpfs"][self.work_dir] = "mode=1777"
        if self.memory is not None:
            host["Memory"] = self.memory if isinstance(self.memory, int) else _parse_size(self.memory)
        if self.cpus is not None:
            host["NanoCpus"] = int(self.cpus * 1e9)
        if self.pids_limit is not None:
            host["PidsLimit"] = self.pids_limit
        if self.runtime is not None:
            host["Runtime"] = self.runtime
        config: dict[str, Any] = {
            "Image": self.image,
            "Cmd": ["/bin/sh", "-c", "trap 'exit 0' TERM; while :; do sleep 86400 & wait $!; done"],
            "WorkingDir": self.work_dir,
            "Env": [f"{key}={value}" for key, value in self.env.items()],
            "Labels": self.labels,
            "NetworkDisabled": not self.network,
            "HostConfig": host,
        }
        if self.user is not None:
            config["User"] = self.user
        return config

    async def start(self) -> Self:
        """Start the container now (or attach to ``ref``) instead of on first use; fails clearly if the image is
        missing (``ImageNotFoundError``), the engine is down (``EngineUnavailableError``) or ``ref`` is gone."""
        await self._ready()
        return self

    async def stop(self) -> None:
        """Remove the container (the seeds' name for ``aclose``)."""
        await self.aclose()

    async def __aenter__(self) -> Self:
        return await self.start()

    async def aclose(self) -> None:
        """Remove (or, without ``auto_remove``, stop) the container and close the engine connection.

        Idempotent and safe from any task, also while other tasks use the sandbox (their calls then fail); the
        background processes go with the container. ``id`` stays readable.
        """
        was_closed, self._closed = self._closed, True
        with anyio.CancelScope(shield=True):
            with anyio.move_on_after(_API_SECONDS):
                await self._start_lock.acquire()  # a start in progress finishes (or fails) first
            try:
                container, self._container = self._container, None
                if container is None and self._attach_ref is not None and not was_closed:
                    container = await self._find_ref(self._attach_ref)  # detached, or never attached: it is still ours
                docker, self._docker = self._docker, None
                try:
                    if container is not None:
                        with (
                            contextlib.suppress(SandboxError),
                            self._errors("could not remove the container"),
                            contextlib.suppress(_aiodocker().DockerError),  # already gone
                        ):
                            if self._paused:  # gVisor cannot remove (nor kill) a frozen container
                                with contextlib.suppress(_aiodocker().DockerError):
                                    await container.unpause()  # pyright: ignore[reportUnknownMemberType]
                                self._paused = False
                            if self.auto_remove:
                                await container.delete(force=True)  # pyright: ignore[reportUnknownMemberType]
                            else:
                                await container.kill()  # pyright: ignore[reportUnknownMemberType]
                finally:
                    if docker is not None:
                        await self._release_owned_image(docker)
                        await docker.close()
            finally:
                with contextlib.suppress(RuntimeError):  # not held: the wait above ran out
                    self._start_lock.release()

    async def _swap_container(self, image: str) -> None:
        """Replace the container by one started from ``image`` under the same name (a restore)."""
        async with self._start_lock:
            container = await self._ready_locked()
            docker = await self._client()
            config = {**self._container_config(), "Image": image}
            with self._errors("could not replace the container"):
                await container.delete(force=True)  # pyright: ignore[reportUnknownMemberType]
                self._container = None
                replacement = await docker.containers.create(config, name=self.name)  # pyright: ignore[reportUnknownMemberType]
                self._container, self._container_id = replacement, replacement.id
                await replacement.start()  # pyright: ignore[reportUnknownMemberType]
            await self._drop_forgotten(docker, everything=False)
            self._jobs_started.clear()
            self._touch()

    async def _ready_locked(self) -> DockerContainer:
        if self._container is None:
            raise SandboxNotStartedError(f"sandbox {self.id} is not running")
        return self._container

    def _forked(self, image: str) -> Self:
        work_mount = {host: inside for host, inside in self.volumes.items() if inside.split(":")[0] == self.work_dir}
        return type(self)(
            image,
            self.work_dir,
            env=self.env,
            volumes={host: inside for host, inside in self.volumes.items() if host not in work_mount},
            memory=self.memory,
            cpus=self.cpus,
            pids_limit=self.pids_limit,
            network=self.network,
            user=self.user,
            runtime=self.runtime,
            labels={k: v for k, v in self.labels.items() if k != SANDBOX_LABEL},
            auto_remove=True,
            docker_url=self.docker_url,
            read_only=self.read_only,
            default_timeout=self.default_timeout,
            max_output_chars=self.max_output_chars,
            max_grep_matches=self.max_grep_matches,
        )

    async def _find_ref(self, ref: str) -> DockerContainer | None:
        """The running sandbox ``ref`` names, if there is one (for ``aclose`` of an object not attached to it)."""
        with contextlib.suppress(SandboxError, _aiodocker().DockerError):
            docker = await self._client()
            with self._errors("could not find the container"):
                found = await docker.containers.get(ref)  # pyright: ignore[reportUnknownMemberType]
            labels = (found["Config"] or {}).get("Labels") or {}  # pyright: ignore[reportUnknownMemberType, reportUnknownVariableType]
            if SANDBOX_LABEL in labels:
                return found
        return None

    async def detach(self) -> None:
        """Let go of the container without stopping it: close the engine connection; the next operation (of this
        object, or of ``DockerSandbox(ref=sandbox.id)`` anywhere) attaches again. Its background processes run on."""
        async with self._start_lock:
            self._container = None
            docker, self._docker = self._docker, None
            self._attach_ref = self.name
            if docker is not None:
                await docker.close()

    async def pause(self) -> None:
        """Freeze every process in the container (memory kept, no CPU); the next operation resumes it."""
        container = await self._ready()
        with self._errors("could not pause the container"):
            await container.pause()  # pyright: ignore[reportUnknownMemberType]
        self._paused = True

    async def resume(self) -> None:
        """Unfreeze a paused container (``pause()``); nothing happens if it is not paused."""
        container = self._container
        if container is None or not self._paused:
            return
        with self._errors("could not resume the container"):
            try:
                await container.unpause()  # pyright: ignore[reportUnknownMemberType]
            except _aiodocker().DockerError as exc:
                if exc.status != 409 or "not paused" not in str(exc.message).lower():
                    raise
        self._paused = False
        self._touch()

    # --- execution ---------------------------------------------------------------------------------------------

    def open_process(
        self,
        command: str,
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        stdin: str | bytes | None = None,
        interactive: bool = False,
    ) -> Process:
        """A command in the container; ``async with`` starts it, and leaving kills its whole process group."""
        Process.check_arguments(command, env=env, cwd=cwd)  # InvalidArgumentError before the engine sees it
        options: dict[str, Any] = {"workdir": _paths.normalize(cwd or self.work_dir, self.work_dir)}
        if env:
            options["environment"] = dict(env)
        if self.user is not None:
            options["user"] = self.user
        data = stdin.encode() if isinstance(stdin, str) else stdin
        return _DockerProcess(self, command, stdin=data, interactive=interactive, **options)

    async def _give_work_dir(self, container: DockerContainer) -> None:
        """Give ``user`` the work dir when it is the empty, root-owned one the engine made: else no command could
        create a file in its own working directory. A mounted directory keeps its owner."""
        uid, gid = self._owner
        if uid == 0 or any(inside.split(":")[0] == self.work_dir for inside in self.volumes.values()):
            return
        script = '[ -z "$(ls -A "$1")" ] && [ "$(stat -c %u "$1")" = 0 ] && chown "$2" "$1"; true'
        await self._collect(container, ["/bin/sh", "-c", script, "sh", self.work_dir, f"{uid}:{gid}"], user="0")

    async def _collect(self, container: DockerContainer, argv: list[str], *, user: str | None = None) -> str:
        """Run a helper command (no wrapper) to completion, as the container's user unless ``user`` is given; its
        standard output."""
        options: dict[str, Any] = {} if user is None else {"user": user}
        output = bytearray()
        with self._errors("could not run a helper command"):
            run = await container.exec(argv, stdout=True, stderr=True, **options)
            async with await _engine.start_exec(self._host, run.id) as stream:
                while (frame := await stream.receive()) is not None:
                    if frame.stream == 1:
                        output += frame.data
        return output.decode(errors="replace")

    async def _kill_token(self, pattern: str) -> None:
        """Kill the process group whose leader's command line matches ``pattern`` (nothing written anywhere)."""
        container = self._container
        if container is not None:
            await self._collect(container, ["/bin/sh", "-c", _KILLER, "sh", pattern])

    async def _run(self, script: str, *, stdin: bytes | None = None) -> CommandResult:
        """Internal commands: streamed and uncapped, stdout and stderr apart."""
        stdout, stderr = bytearray(), bytearray()
        async with self.open_process(script, stdin=stdin, cwd="/") as process:
            async for chunk in process:
                if chunk.stream == "stdout":
                    stdout.extend(chunk.data)
                elif len(stderr) < _STDERR_LIMIT:
                    stderr.extend(chunk.data)
            code = await process.wait()
        return CommandResult(code, bytes(stdout), bytes(stderr))

    async def _run_rg(self, arguments: list[str], parser: RipgrepJson, stdin: bytes) -> tuple[int | None, bytes]:
        stderr = bytearray()
        async with self.open_process(shlex.join(["rg", *arguments]), cwd="/", stdin=stdin) as process:
            async for chunk in process:
                if chunk.stream == "stdout":
                    parser.feed(chunk.data)
                elif len(stderr) < _STDERR_LIMIT:
                    stderr.extend(chunk.data)
            return await process.wait(), bytes(stderr)

    # --- background processes: in the container, visible to every object attached to it -------------------------

    async def start_background(
        self, command: str, *, env: Mapping[str, str] | None = None, cwd: str | None = None
    ) -> BackgroundProcess:
        """Start a long-running command in the container and return at once.

        It runs detached from this object (a reattached sandbox sees it too); its output goes to a file in the
        container, trimmed to head and tail as it grows, which ``read_background`` reads.
        """
        container = await self._ready()
        job_id = uuid.uuid4().hex[:12]
        options: dict[str, Any] = {"workdir": _paths.normalize(cwd or self.work_dir, self.work_dir)}
        if env:
            options["environment"] = dict(env)
        if self.user is not None:
            options["user"] = self.user
        half = max(self.max_output_chars // 2, 1)
        argv = ["/bin/sh", "-c", _BACKGROUND, "sh", command, f"{_JOBS}/{job_id}", "abjob", job_id, _LEADER]
        argv += [str(max(_TRIM_BYTES, 4 * half)), str(half)]
        with self._errors("could not start a background process"):
            run = await container.exec(argv, stdout=False, stderr=False, **options)
            await run.start(detach=True)
        self._jobs_started.add(job_id)
        return BackgroundProcess(id=job_id, command=command, running=True, exit_code=None, output="", truncated=False)

    async def _jobs(self, job_id: str | None = None, *, brief: bool = False) -> dict[str, dict[str, bytes]]:
        """The files of each job (``command``, ``rc``, ``out``, ...), read through one exec."""
        container = await self._ready()
        argv = ["/bin/sh", "-c", _JOBS_SCRIPT, "sh", _JOBS, job_id or "", "brief" if brief else ""]
        text = await self._collect(container, argv)
        jobs: dict[str, dict[str, bytes]] = {}
        files: dict[str, bytes] = {}
        name, lines = "", list[str]()

        def flush() -> None:
            if name:
                files[name] = base64.b64decode("".join(lines))

        for line in text.splitlines():
            if line.startswith("=job "):
                flush()
                name, lines = "", []
                files = jobs.setdefault(line[5:].strip(), {})
            elif line.startswith("="):
                flush()
                name, lines = line[1:].strip(), []
            else:
                lines.append(line.strip())
        flush()
        return jobs

    async def _job_states(self) -> dict[str, int | None]:
        return {job: _exit_code(files) for job, files in (await self._jobs(brief=True)).items()}

    def _snapshot(self, job_id: str, files: Mapping[str, bytes]) -> BackgroundProcess:
        buffer = OutputBuffer(self.max_output_chars)
        if "head" in files:
            kept = len(files["head"]) + len(files.get("tail", b""))
            written = int(files.get("written", b"0").decode().strip() or 0)
            buffer.feed(OutputChunk("stdout", files["head"]))
            buffer.omitted += max(written - kept, 0)
            buffer.feed(OutputChunk("stdout", files.get("tail", b"")))
        buffer.feed(OutputChunk("stdout", files.get("out", b"")))
        code = _exit_code(files)
        return BackgroundProcess(
            id=job_id,
            command=files.get("command", b"").decode(errors="replace"),
            running=code is None,
            exit_code=code,
            output=buffer.text(),
            truncated=buffer.truncated,
        )

    async def read_background(self, process_id: str) -> BackgroundProcess:
        """Whether it still runs, its exit code, and its output so far (head and tail)."""
        if not process_id.isalnum():
            raise ProcessNotFoundError(f"no background process with id {process_id!r}")
        files = (await self._jobs(process_id)).get(process_id)
        if files is None:
            if process_id in self._jobs_started:  # started a moment ago: its directory is being made
                return BackgroundProcess(
                    id=process_id, command="", running=True, exit_code=None, output="", truncated=False
                )
            raise ProcessNotFoundError(f"no background process with id {process_id!r} in sandbox {self.id}")
        return self._snapshot(process_id, files)

    async def list_background(self) -> list[BackgroundProcess]:
        """Every background process started in this container (by any object attached to it), running or not."""
        return [self._snapshot(job, files) for job, files in sorted((await self._jobs()).items())]

    async def kill_background(self, process_id: str) -> BackgroundProcess:
        """Kill a background process (and its children) and return its final state."""
        state = await self.read_background(process_id)
        if state.running:
            await self._kill_token(_token_pattern(f"abjob{process_id}"))
            with anyio.move_on_after(_KILL_SECONDS):
                while (state := await self.read_background(process_id)).running:  # noqa: ASYNC110 (state in the container)
                    await anyio.sleep(0.05)
        return state

    # --- files through the archive API ---------------------------------------------------------------------------

    async def _archive_stat(self, path: str) -> dict[str, Any] | None:
        """The engine's stat of ``path`` (``HEAD .../archive``): one round trip, no exec; ``None`` if missing."""
        container = await self._ready()
        with self._errors(f"could not stat '{path}'"):
            raw = await _engine.archive_stat(self._host, container.id, path)
        if raw is None:
            await self._check_alive()  # the engine answers 404 for a missing container too
        return raw

    async def _stat(self, path: str) -> FileInfo | None:
        if self.read_only:
            await self._ready()
            return await super()._stat(path)
        found = await self._stat_with_mode(path)
        if found is None:
            return None
        return found[0].model_copy(update={"path": path, "name": _paths.split_name(path)})

    async def _stat_with_mode(self, path: str) -> tuple[FileInfo, int] | None:
        for _ in range(8):  # follow symbolic links, as stat -L does
            raw = await self._archive_stat(path)
            if raw is None:
                return None
            mode = int(raw.get("mode", 0))
            target = raw.get("linkTarget") or ""
            if mode & _LINK_BIT and target:
                path = target if target.startswith("/") else _paths.join(path.rsplit("/", 1)[0] or "/", target)
                continue
            is_dir = bool(mode & _DIR_BIT)
            info = FileInfo(
                path=path,
                name=_paths.split_name(path),
                is_dir=is_dir,
                size=None if is_dir else int(raw.get("size", 0)),
                modified_at=_parse_mtime(str(raw.get("mtime", ""))),
            )
            return info, mode & 0o7777
        return None

    async def _download(self, path: str, size: int) -> bytes:
        if self.read_only:
            return await super()._download(path, size)
        container = await self._ready()
        with self._errors(f"could not read '{path}'"):
            archive = await container.get_archive(path)
        with archive:
            for member in archive:
                if member.isfile():
                    handle = archive.extractfile(member)
                    assert handle is not None
                    return handle.read()
                if member.issym():
                    target = member.linkname
                    resolved = target if target.startswith("/") else _paths.join(path.rsplit("/", 1)[0] or "/", target)
                    return await self._download(_paths.normalize(resolved), size)
                break
        raise not_found(path)

    async def _write_bytes(self, path: str, data: bytes) -> None:
        if self.read_only:
            await self._ready()
            return await super()._write_bytes(path, data)
        found = await self._stat_with_mode(path)
        if found is not None and found[0].is_dir:
            raise is_dir_error(path)
        mode = found[1] if found is not None else 0o644
        target = found[0].path if found is not None else path
        parent, name = target.rsplit("/", 1)[0] or "/", _paths.split_name(target)
        owner = self._owner

        def pack() -> io.BytesIO:
            buffer = io.BytesIO()
            with tarfile.open(fileobj=buffer, mode="w") as tar:
                entry = tarfile.TarInfo(name)
                entry.size, entry.mode, entry.mtime = len(data), mode, int(time.time())
                entry.uid, entry.gid = owner
                tar.addfile(entry, io.BytesIO(data))
            buffer.seek(0)
            return buffer

        # A large archive is packed off the loop; aiohttp streams the file object instead of copying bytes.
        payload = pack() if len(data) < _INLINE_PACK_BYTES else await anyio.to_thread.run_sync(pack)
        container = await self._ready()
        for attempt in range(2):
            try:
                with self._errors(f"could not write '{path}'"):
                    payload.seek(0)
                    await container.put_archive(parent, payload)  # pyright: ignore[reportUnknownMemberType]
                return None
            except SandboxUnavailableError:
                raise
            except SandboxError as exc:
                if attempt or ("404" not in str(exc) and "no such file" not in str(exc).lower()):
                    raise PathError(f"could not write '{path}': {exc}", path) from exc
                made = await self._run(f"mkdir -p -- {shlex.quote(parent)}")
                if made.exit_code != 0:
                    reason = made.stderr.decode(errors="replace").strip()
                    raise PathError(f"could not create the parent of '{path}': {reason}", path) from exc
        return None


def _exit_code(files: Mapping[str, bytes]) -> int | None:
    text = files.get("rc", b"").decode(errors="replace").strip()
    return int(text) if text.lstrip("-").isdigit() else None


def _parse_size(text: str) -> int:
    units = {"k": 1024, "m": 1024**2, "g": 1024**3}
    text = text.strip().lower().removesuffix("b")
    return int(float(text[:-1]) * units[text[-1]]) if text[-1:] in units else int(text)


async def remove_leftover_sandboxes(docker_url: str | None = None, *, label: str = SANDBOX_LABEL) -> list[str]:
    """Force-remove every container carrying the sandbox label (left by a crashed process); returns their ids."""
    aiodocker = _aiodocker()
    host, version = await _engine.connect(docker_url)
    async with aiodocker.Docker(url=host, api_version=f"v{version}") as docker:
        with _engine_errors("could not list leftover sandboxes", host):
            containers = await docker.containers.list(all=True, filters={"label": [label]})
            removed: list[str] = []
            for container in containers:
                try:
                    await container.delete(force=True)
                except aiodocker.DockerError as exc:
                    if exc.status not in (404, 409):  # already gone, or being removed by someone else
                        raise
                removed.append(container.id)
    return removed
