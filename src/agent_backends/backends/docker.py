"""``DockerSandbox``: a container per sandbox on aiodocker; exec output streamed frame by frame.

Files move with the archive API (``put_archive``/``get_archive``, one round trip each, no shell), listings and
deletes run ``find``/``stat``/``rm`` inside, grep runs ``rg --json`` inside when the image has it (else the shared
fallback of ``BaseSandbox``). The Engine API cannot kill an exec'd process, so every command runs under a small
wrapper: ``setsid`` puts it in its own process group, whose id goes to a pid file, and a kill is a second exec that
kills that group. When the command's shell exits, the wrapper kills what it left behind, as ``LocalBackend`` does.
Any engine speaking the Docker API works (Podman's socket included); ``runtime="runsc"`` selects gVisor.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
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
from agent_backends.backends._base import is_dir_error, not_found
from agent_backends.backends._exec import DEFAULT_MAX_OUTPUT_CHARS, DEFAULT_TIMEOUT, ExecutionMixin
from agent_backends.backends.sandbox import BaseSandbox, CommandResult
from agent_backends.exceptions import (
    EngineUnavailableError,
    ImageNotFoundError,
    PathError,
    ProcessError,
    SandboxError,
    SandboxNotStartedError,
)
from agent_backends.process import ChannelProcess, OutputChunk, Process, exit_status
from agent_backends.runtime import BUILTIN_RUNTIMES, RuntimeConfig, ensure_runtime_image
from agent_backends.types import FileInfo

if TYPE_CHECKING:
    import aiodocker
    from aiodocker.containers import DockerContainer
    from aiodocker.execs import Exec
    from aiodocker.stream import Stream

__all__ = ("SANDBOX_LABEL", "DockerSandbox", "remove_leftover_sandboxes")

SANDBOX_LABEL = "agent-backends.sandbox"
_API_SECONDS = 60.0
_KILL_SECONDS = 10.0
_STDERR_LIMIT = 64 * 1024
_INLINE_PACK_BYTES = 256 * 1024
_DIR_BIT = 1 << 31
_LINK_BIT = 1 << 27
# $1: the command, $2: the pid file, $3: non-empty when ``stdin=`` bytes are fed. The command gets its own session
# (process group id == its pid) and the stdin this exec was given; after it exits, whatever it left in its group is
# killed, and input it left unread is read to its end: while input is pending, the engine keeps the exec attached
# long after the command is gone. Once the command has its stderr, the wrapper's own goes: dash reports a killed job
# ("Killed"), which is no output of the command's.
_WRAPPER = (
    'exec 3<&0; setsid /bin/sh -c "$1" <&3 3<&- & pid=$!; exec 3<&- 2>/dev/null; echo "$pid" > "$2"; '
    'wait "$pid"; rc=$?; kill -9 "-$pid" 2>/dev/null; rm -f "$2"; [ -z "$3" ] || cat >/dev/null; exit "$rc"'
)
_KILLER = (
    'for i in 1 2 3 4 5 6 7 8 9 10; do [ -s "$1" ] && break; sleep 0.05; done; '
    '[ -s "$1" ] && kill -9 "-$(cat "$1")" 2>/dev/null; true'
)


def _aiodocker() -> Any:
    try:
        import aiodocker
    except ImportError as exc:
        raise SandboxError("DockerSandbox needs aiodocker: pip install 'agent-backends[docker]'") from exc
    return aiodocker


@contextlib.contextmanager
def _engine_errors(what: str, url: str | None) -> Generator[None]:
    """Map aiodocker's errors (and a silent engine) to the library's, with ``from exc``."""
    aiodocker = _aiodocker()
    try:
        with anyio.fail_after(_API_SECONDS):
            yield
    except TimeoutError as exc:
        raise EngineUnavailableError(f"{what}: the engine did not answer within {_API_SECONDS:g} s") from exc
    except aiodocker.DockerError as exc:
        if exc.status == 900:
            raise EngineUnavailableError(f"{what}: {exc.message}") from exc
        raise SandboxError(f"{what}: {exc.message} (HTTP {exc.status})") from exc
    except OSError as exc:
        raise EngineUnavailableError(
            f"{what}: cannot reach the engine at {url or 'the default socket'}: {exc}"
        ) from exc


# The API version each engine negotiated, so later clients skip the ``/version`` round trip (0.5 s on Podman).
_api_versions: dict[str | None, str] = {}


def _client(url: str | None) -> aiodocker.Docker:
    """An aiodocker client for ``url``, reusing the API version an earlier client negotiated with that engine."""
    return _aiodocker().Docker(url=url, api_version=_api_versions.get(url, "auto"))


def _remember_api_version(url: str | None, docker: aiodocker.Docker) -> None:
    if docker.api_version != "auto":
        _api_versions[url] = docker.api_version


def _parse_mtime(text: str) -> datetime | None:
    with contextlib.suppress(ValueError):
        head, _, fraction = text.rstrip("Z").partition(".")
        return datetime.fromisoformat(f"{head}.{(fraction + '000000')[:6]}").replace(tzinfo=UTC)
    return None


class _DockerProcess(ChannelProcess):
    """One exec: a reader task moves frames into a small bounded channel; a kill is a second exec."""

    def __init__(
        self, sandbox: DockerSandbox, argv: list[str], *, stdin: bytes | None, interactive: bool, **exec_options: Any
    ) -> None:
        super().__init__(stdin=stdin, interactive=interactive)
        self._sandbox = sandbox
        self._pidfile = f"/tmp/.agent-backends-{uuid.uuid4().hex}.pid"
        drain = "drain" if stdin is not None and not interactive else ""
        self._argv = ["/bin/sh", "-c", _WRAPPER, "sh", *argv, self._pidfile, drain]
        self._options = exec_options
        self._exec: Exec | None = None
        self._stream: Stream | None = None
        self._ended = anyio.Event()  # the output reached its end: the command is gone
        self._kill_sent = False
        self._pump_scope = anyio.CancelScope(shield=True)  # only _stop ends the pump, so it sees that end
        self._returncode: int | None = None

    @property
    def returncode(self) -> int | None:
        return self._returncode

    async def __aenter__(self) -> Self:
        try:
            container = self._sandbox._running()  # pyright: ignore[reportPrivateUsage]
            piped = self._interactive or self._stdin is not None
            with _engine_errors("could not start a command", self._sandbox.docker_url):
                self._exec = await container.exec(self._argv, stdin=piped, **self._options)
                stream = self._exec.start(detach=False)
                self._stack.push_async_callback(stream.close)
                await stream._init()  # starts the exec; aiodocker otherwise starts it lazily on first read or write  # pyright: ignore[reportPrivateUsage]
        except BaseException:
            # Cancelled (or failed) while the engine starts the exec: the command may run already, so kill it by
            # its pid file, and close what was opened.
            with anyio.CancelScope(shield=True):
                if self._exec is not None:
                    with contextlib.suppress(SandboxError):
                        await self.kill()
                await self._stack.aclose()
            self._send.close()
            self._receive.close()
            raise
        self._stream = stream
        tasks = await self._stack.enter_async_context(anyio.create_task_group())
        self._stack.push_async_callback(self._stop, tasks)
        tasks.start_soon(self._pump, stream)
        self._start_stdin(tasks)
        return self

    async def _pump(self, stream: Stream) -> None:
        """Move frames into the channel until the output ends; once the reader is gone, drain them unread.

        Shielded: a cancelled pump could not tell ``_stop`` whether the command ended, and it would not be killed.
        """
        try:
            with self._pump_scope:
                async with self._send:
                    while (message := await stream.read_out()) is not None:
                        with contextlib.suppress(anyio.BrokenResourceError):
                            chunk = OutputChunk("stdout" if message.stream == 1 else "stderr", message.data)
                            await self._send.send(chunk)
        finally:
            self._ended.set()

    async def _stop(self, tasks: anyio.abc.TaskGroup) -> None:
        self._receive.close()  # nobody reads any more: the pump drains what is left
        with anyio.CancelScope(shield=True):
            if not self._ended.is_set():
                await self.kill()
                with anyio.move_on_after(_KILL_SECONDS):
                    if self._interactive or self._stdin is not None:
                        await self.close_stdin()  # the end of input ends a wrapper still reading it
                    await self._ended.wait()
        self._pump_scope.cancel()
        tasks.cancel_scope.cancel()

    async def _send_stdin(self, data: bytes | str) -> None:
        if self._stream is None or not (self._interactive or self._stdin is not None):
            raise ProcessError("standard input is closed; open the process with interactive=True to write to it")
        if self._ended.is_set():  # the engine has closed the connection
            raise ProcessError("the process no longer reads its standard input")
        try:
            with _engine_errors("could not write to the command's stdin", self._sandbox.docker_url):
                await self._stream.write_in(data.encode() if isinstance(data, str) else data)
        except (ConnectionError, RuntimeError) as exc:
            raise ProcessError("the process no longer reads its standard input") from exc

    async def close_stdin(self) -> None:
        """Half-close the exec's connection: the engine closes the process's stdin, output keeps flowing."""
        await self._stdin_written.wait()
        response = self._stream._resp if self._stream is not None else None  # pyright: ignore[reportPrivateUsage]
        transport = response.connection.transport if response is not None and response.connection else None
        if transport is not None and transport.can_write_eof():
            transport.write_eof()

    async def kill(self) -> None:
        # Once is enough: the group is gone and the wrapper has removed the pid file, so a second kill would only
        # wait for a pid file that never comes back.
        if self._ended.is_set() or self._kill_sent:
            return
        self._kill_sent = True
        await self._sandbox._exec_and_wait(["/bin/sh", "-c", _KILLER, "sh", self._pidfile])  # pyright: ignore[reportPrivateUsage]

    async def wait(self) -> int | None:
        await self._ended.wait()
        if self._returncode is None and self._exec is not None:
            with _engine_errors("could not read the command's exit code", self._sandbox.docker_url):
                deadline = time.monotonic() + _KILL_SECONDS
                while True:
                    state = await self._exec.inspect()
                    if state.get("ExitCode") is not None or time.monotonic() > deadline:
                        break
                    await anyio.sleep(0.01)  # the engine records the exit code just after the stream ends
            self._returncode = exit_status(state.get("ExitCode"))
        return self._returncode


class DockerSandbox(ExecutionMixin, BaseSandbox):
    """A Docker (or Podman) container as a sandbox: files, streamed execution, background processes.

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
        docker_url: the engine's API, e.g. ``unix:///run/podman/podman.sock``; default: Docker's usual socket.
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
        self.name = f"agent-backends-{self.labels[SANDBOX_LABEL][:16]}"  # known before the engine answers
        self.auto_remove = auto_remove
        self.docker_url = docker_url
        self.default_timeout = default_timeout
        self.max_output_chars = max_output_chars
        self._docker: aiodocker.Docker | None = None
        self._container: DockerContainer | None = None
        self._owner = (0, 0)

    # --- lifecycle ---------------------------------------------------------------------------------------------

    @property
    def id(self) -> str:
        """The container id."""
        return self._running().id

    async def is_running(self) -> bool:
        """Whether the container still runs (it may have been killed or removed from outside)."""
        if self._container is None:
            return False
        try:
            with _engine_errors("could not inspect the container", self.docker_url):
                state = await self._container.show()  # pyright: ignore[reportUnknownMemberType]
        except SandboxError:
            return False
        return bool(state.get("State", {}).get("Running"))

    def _running(self) -> DockerContainer:
        if self._container is None:
            raise SandboxNotStartedError("the sandbox is not running: use `async with DockerSandbox(...) as sandbox:`")
        return self._container

    def _container_config(self) -> dict[str, Any]:
        host: dict[str, Any] = {
            "NetworkMode": "default" if self.network else "none",
            "Binds": [f"{host}:{inside}" for host, inside in self.volumes.items()],
        }
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
        """Create and start the container (``async with`` does this); fails clearly if the image is missing."""
        if self._container is not None:
            return self
        docker = _client(self.docker_url)
        self._docker = docker
        try:
            if self.runtime_config is not None:
                with _engine_errors(f"could not build runtime {self.runtime_config.name!r}", self.docker_url):
                    await ensure_runtime_image(docker, self.runtime_config)
            with _engine_errors("could not reach the engine", self.docker_url):
                try:
                    await docker.images.inspect(self.image)
                    _remember_api_version(self.docker_url, docker)
                except _aiodocker().DockerError as exc:
                    if exc.status != 404:
                        raise
                    raise ImageNotFoundError(
                        f"image {self.image!r} is not present locally, and no registry is reached to pull it; "
                        "build it or load it (`docker load`) first"
                    ) from exc
            with (
                _engine_errors(f"could not start a container from {self.image!r}", self.docker_url),
                # A create cut short still lands on the engine, after we stopped listening: let it finish, so a
                # cancellation arrives just after it, with the container known to the cleanup below.
                anyio.CancelScope(shield=True),
            ):
                self._container = await docker.containers.run(self._container_config(), name=self.name)  # pyright: ignore[reportUnknownMemberType]
            await self._start_tasks()
            if self.user is not None:
                ids = await self._run("id -u; id -g")
                numbers = ids.stdout.split()
                if len(numbers) == 2 and all(n.isdigit() for n in numbers):
                    self._owner = (int(numbers[0]), int(numbers[1]))
                    await self._give_work_dir()
        except BaseException:
            await self.aclose()
            raise
        return self

    async def stop(self) -> None:
        """Remove the container (the seeds' name for ``aclose``)."""
        await self.aclose()

    async def __aenter__(self) -> Self:
        return await self.start()

    async def aclose(self) -> None:
        """Kill background processes, remove (or stop) the container, close the engine connection; idempotent."""
        await self._stop_tasks()
        container, self._container = self._container, None
        docker, self._docker = self._docker, None
        with anyio.CancelScope(shield=True):
            try:
                if container is None and docker is not None:
                    # A start cut short may have created the container without our learning its id: find it by name.
                    with contextlib.suppress(SandboxError), _engine_errors("could not find the container", None):
                        container = await docker.containers.get(self.name)  # pyright: ignore[reportUnknownMemberType]
                if container is not None:
                    with contextlib.suppress(SandboxError), _engine_errors("could not remove the container", None):
                        if self.auto_remove:
                            await container.delete(force=True)
                        else:
                            await container.kill()
            finally:
                if docker is not None:
                    await docker.close()

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
        return _DockerProcess(self, [command], stdin=data, interactive=interactive, **options)

    async def _give_work_dir(self) -> None:
        """Give ``user`` the work dir when it is the empty, root-owned one the engine made: else no command could
        create a file in its own working directory. A mounted directory keeps its owner."""
        uid, gid = self._owner
        if uid == 0 or any(inside.split(":")[0] == self.work_dir for inside in self.volumes.values()):
            return
        script = '[ -z "$(ls -A "$1")" ] && [ "$(stat -c %u "$1")" = 0 ] && chown "$2" "$1"; true'
        await self._exec_and_wait(["/bin/sh", "-c", script, "sh", self.work_dir, f"{uid}:{gid}"], user="0")

    async def _exec_and_wait(self, argv: list[str], *, user: str | None = None) -> None:
        """Run a helper command (no wrapper) to completion, as the container's user unless ``user`` is given."""
        container = self._running()
        options: dict[str, Any] = {} if user is None else {"user": user}
        with _engine_errors("could not run a helper command", self.docker_url):
            run = await container.exec(argv, stdout=True, stderr=True, **options)
            async with run.start(detach=False) as stream:
                while await stream.read_out() is not None:
                    pass

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

    async def _run_rg(self, arguments: list[str], parser: RipgrepJson) -> tuple[int | None, bytes]:
        stderr = bytearray()
        async with self.open_process(shlex.join(["rg", *arguments]), cwd="/") as process:
            async for chunk in process:
                if chunk.stream == "stdout":
                    parser.feed(chunk.data)
                elif len(stderr) < _STDERR_LIMIT:
                    stderr.extend(chunk.data)
            return await process.wait(), bytes(stderr)

    # --- files through the archive API ---------------------------------------------------------------------------

    async def _archive_stat(self, path: str) -> dict[str, Any] | None:
        """The engine's stat of ``path`` (``HEAD .../archive``): one round trip, no exec; ``None`` if missing.

        Made through aiodocker's session because its error handling expects a body, which ``HEAD`` never has.
        """
        container, docker = self._running(), self._docker
        assert docker is not None
        with _engine_errors(f"could not stat '{path}'", self.docker_url):
            await docker._check_version()  # pyright: ignore[reportPrivateUsage]
            url = docker._canonicalize_url(f"containers/{container.id}/archive", versioned_api=True)  # pyright: ignore[reportPrivateUsage]
            async with docker.session.head(url, params={"path": path}) as response:
                if response.status in (404, 500):  # missing, or a parent is a file (the engine answers 500)
                    return None
                if response.status >= 400:
                    raise SandboxError(f"could not stat '{path}': HTTP {response.status}")
                header = response.headers.get("X-Docker-Container-Path-Stat", "")
        return json.loads(base64.b64decode(header)) if header else None

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

    async def _stat(self, path: str) -> FileInfo | None:
        found = await self._stat_with_mode(path)
        if found is None:
            return None
        return found[0].model_copy(update={"path": path, "name": _paths.split_name(path)})

    async def _download(self, path: str, size: int) -> bytes:
        with _engine_errors(f"could not read '{path}'", self.docker_url):
            archive = await self._running().get_archive(path)
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
        for attempt in range(2):
            try:
                with _engine_errors(f"could not write '{path}'", self.docker_url):
                    payload.seek(0)
                    await self._running().put_archive(parent, payload)  # pyright: ignore[reportUnknownMemberType]
                return
            except SandboxError as exc:
                if attempt or ("404" not in str(exc) and "no such file" not in str(exc).lower()):
                    raise PathError(f"could not write '{path}': {exc}", path) from exc
                made = await self._run(f"mkdir -p -- {shlex.quote(parent)}")
                if made.exit_code != 0:
                    reason = made.stderr.decode(errors="replace").strip()
                    raise PathError(f"could not create the parent of '{path}': {reason}", path) from exc


def _parse_size(text: str) -> int:
    units = {"k": 1024, "m": 1024**2, "g": 1024**3}
    text = text.strip().lower().removesuffix("b")
    return int(float(text[:-1]) * units[text[-1]]) if text[-1:] in units else int(text)


async def remove_leftover_sandboxes(docker_url: str | None = None, *, label: str = SANDBOX_LABEL) -> list[str]:
    """Force-remove every container carrying the sandbox label (left by a crashed process); returns their ids."""
    aiodocker = _aiodocker()
    async with aiodocker.Docker(url=docker_url) as docker:
        with _engine_errors("could not list leftover sandboxes", docker_url):
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
