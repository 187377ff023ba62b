"""pydantic-ai's workspace protocols, implemented once for every backend (``ctx.workspace`` is one of ours).

``WorkspaceFiles`` gives a ``StorageBackend`` ``SupportsFilesystem`` and ``SupportsRealpath`` on its own storage
primitives and path rule (``_path``): the same engine as ``read``/``write``/``ls_info``, with the contract's
exceptions (the builtin file errors, ``ValueError``/``TypeError`` for bad arguments, ``WorkspaceUnavailableError``
for an environment that is gone). ``WorkspaceCommands`` gives ``SupportsCommands.run`` on ``open_process`` (the
engine under ``execute``), or on ``execute`` alone for a ``BaseSandbox`` that only has that.

pydantic-ai stays optional: nothing here imports it until a workspace member is used (``ref``, a failure that must
be a ``WorkspaceUnavailableError``, a command that times out), so ``import agent_backends`` never pays for it.
"""

from __future__ import annotations

import contextlib
import math
import os
import posixpath
import shlex
import stat
import sys
import uuid
import weakref
from collections.abc import Awaitable, Callable, Generator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Self, TypeVar, cast

import anyio
import anyio.to_thread

from agent_backends import _paths
from agent_backends.exceptions import (
    PathError,
    PathEscapeError,
    PathExistsError,
    PathIsDirectoryError,
    PathNotDirectoryError,
    PathNotFoundError,
    PathPermissionError,
    SandboxGoneError,
    SandboxNotStartedError,
    SandboxUnavailableError,
)

if TYPE_CHECKING:
    from pydantic_ai.workspaces import CommandResult, FileEntry, WorkspaceCommand, WorkspaceRef

    from agent_backends._fsroot import DiskRoot
    from agent_backends.process import Process

_T = TypeVar("_T")

__all__ = (
    "DRAIN_SECONDS",
    "RUN_OUTPUT_LIMIT",
    "PROVIDER",
    "WorkspaceCommands",
    "WorkspaceFiles",
    "workspace_error",
)

PROVIDER = "agent-backends"
"""The prefix of every ``WorkspaceRef.provider`` this library writes (``agent-backends.docker``, ...)."""

RUN_OUTPUT_LIMIT = 10 * 1024 * 1024
"""The most bytes of stdout and stderr together that one ``run`` collects before ``WorkspaceOutputLimitError``."""

DRAIN_SECONDS = 1.0
"""How long output is still read after a command's own process exited (a child it left may hold the pipes)."""

_PREVIEW_BYTES = 64 * 1024


def _workspaces() -> Any:
    try:
        import pydantic_ai.workspaces as workspaces
    except ImportError as exc:  # pragma: no cover - the extra is installed wherever this is reached
        raise ImportError(
            "the pydantic-ai workspace API needs pydantic-ai: pip install 'agent-backends[pydantic-ai]'"
        ) from exc
    return workspaces


def make_ref(kind: str, ref_id: str) -> WorkspaceRef:
    """``WorkspaceRef(provider="agent-backends.<kind>", id=ref_id)``."""
    return cast("WorkspaceRef", _workspaces().WorkspaceRef(provider=f"{PROVIDER}.{kind}", id=ref_id))


# --- errors at the boundary ----------------------------------------------------------------------------------------

_DUAL: dict[tuple[type[BaseException], type[BaseException]], type[BaseException]] = {}


def _dual(cls: type[BaseException], extra: type[BaseException]) -> type[BaseException]:
    """A subclass of both: ``except SandboxGoneError`` and ``except WorkspaceUnavailableError`` both catch it."""
    found = _DUAL.get((cls, extra))
    if found is None:
        found = _DUAL[(cls, extra)] = type(cls.__name__, (cls, extra), {"__module__": cls.__module__})
    return found


def workspace_error(exc: BaseException) -> BaseException | None:
    """The exception the workspace contract wants for ``exc`` (a subclass of ``exc``'s class), or ``None``.

    A sandbox that is gone, unreachable or closed is also a ``WorkspaceUnavailableError`` (when pydantic-ai's
    workspaces are in use: nothing is imported for it); a path failure with no more specific builtin (a symlink loop,
    a FIFO) is also an ``OSError``.
    """
    if isinstance(exc, SandboxUnavailableError | SandboxNotStartedError):
        workspaces = sys.modules.get("pydantic_ai.workspaces")
        if workspaces is None or isinstance(exc, workspaces.WorkspaceUnavailableError):
            return None
        extra: type[BaseException] = workspaces.WorkspaceUnavailableError
    elif isinstance(exc, PathError) and not isinstance(exc, OSError | ValueError):
        extra = OSError
    else:
        return None
    mapped = _dual(type(exc), extra)(*exc.args)
    mapped.__dict__.update(exc.__dict__)
    return mapped


@contextlib.contextmanager
def boundary() -> Generator[None]:
    """Raise the contract's exceptions (see ``workspace_error``), ``from`` the library's own."""
    try:
        yield
    except (SandboxUnavailableError, SandboxNotStartedError, PathError) as exc:
        mapped = workspace_error(exc)
        if mapped is None:
            raise
        raise mapped from exc


def _check_path(path: object) -> str:
    if not isinstance(path, str):
        raise TypeError(f"a workspace path is a str, not {type(path).__name__}")
    return path


def _entry(path: str, *, is_dir: bool, size: int | None) -> FileEntry:
    name = posixpath.basename(path.rstrip("/")) if path != "/" else "/"
    return cast("FileEntry", _workspaces().FileEntry(name=name, path=path, is_dir=is_dir, size=size))


# --- the filesystem side -------------------------------------------------------------------------------------------


class WorkspaceFiles:
    """``WorkspaceBackend`` + ``SupportsFilesystem`` + ``SupportsRealpath`` over a ``StorageBackend``'s primitives.

    ``read_bytes`` and ``exists`` are the backend's own (one method for both APIs); the rest are here. Hooks a
    backend overrides: ``_ws_kind`` (the ref's provider), ``_ws_id`` (its id), ``_ws_working_dir``,
    ``_ws_list``, ``_ws_make_dir``, ``_ws_remove``, ``_ws_realpath``, ``_ws_check`` (raise when the environment is
    gone).
    """

    _ws_kind: ClassVar[str] = "storage"
    _ws_ref_id: str | None = None
    # Every backend that has a ref by id, for ``from_ref`` of the kinds that live in this process only.
    _ws_registry: ClassVar[weakref.WeakValueDictionary[str, Any]] = weakref.WeakValueDictionary()

    # For the type checker: the primitives are the StorageBackend's (this mixin is only combined with it).
    if TYPE_CHECKING:
        _cwd: str

        def _path(self, path: str) -> str: ...
        async def _stat(self, path: str) -> Any: ...
        async def _list(self, path: str) -> list[Any]: ...
        async def _read_bytes(self, path: str) -> bytes: ...
        async def _write_bytes(self, path: str, data: bytes) -> None: ...
        async def _delete(self, path: str, recursive: bool) -> None: ...

    # --- identity ------------------------------------------------------------------------------------------------

    def _ws_id(self) -> str | None:
        """The ref's id; ``None`` before the first operation. Default: a random id, made by the first operation."""
        return self._ws_ref_id

    async def _ws_enter(self) -> None:
        """What every workspace operation does first: the ref exists from now on; the environment must be there."""
        if self._ws_ref_id is None:
            self._ws_ref_id = uuid.uuid4().hex
            ref_id = self._ws_id()
            if ref_id is not None:
                WorkspaceFiles._ws_registry[f"{self._ws_kind}:{ref_id}"] = self
        await self._ws_check()

    @property
    def ref(self) -> WorkspaceRef | None:
        """The pydantic-ai ``WorkspaceRef`` of this backend's environment (``None`` until a sandbox exists)."""
        ref_id = self._ws_id()
        return None if ref_id is None else make_ref(self._ws_kind, ref_id)

    @classmethod
    def from_ref(cls, ref: WorkspaceRef) -> Self:
        """The backend a ``WorkspaceRef`` of this kind names, in this process; ``WorkspaceUnavailableError`` when
        it is gone (never a replacement). ``DockerSandbox``, ``LocalBackend`` and ``FilesystemBackend`` attach by
        the ref alone (a container, a directory); the others find the object that made it."""
        workspaces = _workspaces()
        if not isinstance(ref, workspaces.WorkspaceRef):
            raise TypeError(f"expected a WorkspaceRef, not {type(ref).__name__}")
        if ref.provider != f"{PROVIDER}.{cls._ws_kind}":
            raise ValueError(f"{ref.provider!r} is not a ref of {cls.__name__} ({PROVIDER}.{cls._ws_kind})")
        found = WorkspaceFiles._ws_registry.get(f"{cls._ws_kind}:{ref.id}")
        if not isinstance(found, cls):
            raise workspaces.WorkspaceUnavailableError(f"no {cls.__name__} with the ref {ref.id!r} in this process")
        return found

    async def _ws_check(self) -> None:
        """Raise ``SandboxGoneError`` (a ``WorkspaceUnavailableError``) when the environment is gone."""

    async def _ws_working_dir(self) -> str:
        return self._cwd

    async def working_dir(self) -> str:
        """The working directory: absolute, normalized, symlinks resolved (where relative paths and commands start)."""
        with boundary():
            await self._ws_enter()
            return await self._ws_working_dir()

    # --- files ---------------------------------------------------------------------------------------------------

    async def write_bytes(self, path: str, data: bytes) -> None:
        """Create or replace a file (parents made; through a symlink); raises the builtin file errors."""
        if not isinstance(data, bytes | bytearray | memoryview):  # pyright: ignore[reportUnnecessaryIsInstance]
            raise TypeError(f"data must be bytes, not {type(data).__name__}")
        with boundary():
            await self._ws_enter()
            await self._ws_write(self._path(_check_path(path)), bytes(data))

    async def _ws_write(self, path: str, data: bytes) -> None:
        await self._write_bytes(path, data)

    async def stat(self, path: str) -> FileEntry:
        """A file's or directory's ``FileEntry`` (a symlink followed); ``FileNotFoundError`` when missing."""
        with boundary():
            await self._ws_enter()
            normalized = self._path(_check_path(path))
            info = await self._stat(normalized)
            if info is None:
                raise PathNotFoundError(f"'{normalized}' does not exist", normalized)
            return _entry(normalized, is_dir=info.is_dir, size=None if info.is_dir else info.size)

    async def list_dir(self, path: str) -> Sequence[FileEntry]:
        """A directory's entries, sorted by path; a symlink is a directory when its target is one."""
        with boundary():
            await self._ws_enter()
            normalized = self._path(_check_path(path))
            entries = await self._ws_list(normalized)
            return sorted(entries, key=lambda entry: entry.path)

    async def _ws_list(self, path: str) -> list[FileEntry]:
        return [
            _entry(info.path, is_dir=info.is_dir, size=None if info.is_dir else info.size)
            for info in await self._list(path)
        ]

    async def make_dir(self, path: str) -> None:
        """``mkdir -p``: ``FileExistsError`` over a file, ``NotADirectoryError`` below one."""
        with boundary():
            await self._ws_enter()
            await self._ws_make_dir(self._path(_check_path(path)))

    async def _ws_make_dir(self, path: str) -> None:
        raise NotImplementedError

    async def remove(self, path: str) -> None:
        """Remove a file, a symlink itself, or a directory with everything in it; ``ValueError`` for the working
        directory and every directory above it."""
        with boundary():
            await self._ws_enter()
            text = _check_path(path)
            absolute = posixpath.normpath(text if text.startswith("/") else posixpath.join(self._cwd, text))
            working = await self._ws_working_dir()
            if _paths.is_within(working, absolute) or _paths.is_within(self._cwd, absolute):
                raise ValueError(f"refusing to remove {absolute!r}: it is the working directory or holds it")
            await self._ws_remove(self._path(text))

    async def _ws_remove(self, path: str) -> None:
        await self._delete(path, True)

    async def realpath(self, path: str) -> str:
        """``os.path.realpath(path)`` inside the environment: symlinks followed, missing components kept."""
        with boundary():
            await self._ws_enter()
            text = _check_path(path)
            if "\x00" in text:
                raise ValueError("a path cannot hold a NUL byte")
            if not text.startswith("/"):
                text = posixpath.join(await self._ws_working_dir(), text)
            return await self._ws_realpath(text)

    async def _ws_realpath(self, path: str) -> str:
        return posixpath.normpath(path)


# --- disk backends -------------------------------------------------------------------------------------------------


def disk_list(disk: DiskRoot, path: str) -> list[FileEntry]:
    """A directory's entries on disk (blocking), links that loop, dangle or leave the root included (not dirs)."""
    listed: list[FileEntry] = []
    for child, st in disk.list_dir(path):
        is_dir = st is not None and stat.S_ISDIR(st.st_mode)
        listed.append(_entry(child, is_dir=is_dir, size=st.st_size if st is not None and not is_dir else None))
    return listed


def disk_make_dir(disk: DiskRoot, path: str) -> None:
    """``mkdir -p`` below the root, every component walked from the root's descriptor (blocking)."""
    with disk.walk(path, create=True) as target:
        if target.name is None:
            return
        try:
            os.mkdir(target.name, dir_fd=target.fd)
        except FileExistsError:
            try:
                st = os.stat(target.name, dir_fd=target.fd)  # a link to a directory is a directory
            except OSError:
                st = None
            if st is None or not stat.S_ISDIR(st.st_mode):
                raise PathExistsError(f"'{path}' exists and is not a directory", path) from None


def disk_realpath(real_root: str, root_path: str, path: str) -> str:
    """The real path of ``path`` in a disk backend's namespace (blocking); ``PathEscapeError`` if it leads outside
    a backend whose namespace starts at its root (a ``LocalBackend``'s is the host's: any real path is an answer)."""
    if root_path != "/":
        return os.path.realpath(path)
    resolved = os.path.realpath(real_root + path if real_root != "/" else path)
    if real_root == "/":
        return resolved
    if resolved == real_root:
        return "/"
    if resolved.startswith(real_root + "/"):
        return resolved[len(real_root) :]
    raise PathEscapeError(f"path {path!r} resolves outside the backend's root", path)


class DiskWorkspace(WorkspaceFiles):
    """The workspace hooks of ``FilesystemBackend`` and ``LocalBackend``: the ref names the directory."""

    _ws_kind: ClassVar[str] = "filesystem"
    _ws_attached: bool = False

    if TYPE_CHECKING:
        root_dir: str
        virtual_mode: bool
        _overlay: Any

        @property
        def root_path(self) -> str: ...
        def _disk(self) -> DiskRoot: ...
        async def _run(self, path: str, fn: Callable[[DiskRoot], _T]) -> _T: ...

    def _ws_id(self) -> str | None:
        ref_id = super()._ws_id()
        return ref_id if self.virtual_mode or ref_id is None else self.root_dir

    @classmethod
    def from_ref(cls, ref: WorkspaceRef) -> Self:
        """A backend on the directory ``ref`` names; when the directory is gone, every operation raises
        ``WorkspaceUnavailableError`` (the directory is not made again)."""
        if not isinstance(ref, _workspaces().WorkspaceRef) or not ref.id.startswith("/"):
            return super().from_ref(ref)
        if ref.provider != f"{PROVIDER}.{cls._ws_kind}":
            raise ValueError(f"{ref.provider!r} is not a ref of {cls.__name__} ({PROVIDER}.{cls._ws_kind})")
        backend = cls(ref.id)  # pyright: ignore[reportCallIssue]
        backend._ws_attached = True
        backend._ws_ref_id = ref.id
        return backend

    async def _ws_check(self) -> None:
        if self._ws_attached and not await anyio.to_thread.run_sync(os.path.isdir, self.root_dir):
            raise SandboxGoneError(f"the directory {self.root_dir} of this workspace is gone")

    async def _ws_working_dir(self) -> str:
        if self.root_path == "/":
            return "/"
        return await anyio.to_thread.run_sync(os.path.realpath, self.root_path)

    async def _ws_list(self, path: str) -> list[FileEntry]:
        if self.virtual_mode:
            return await super()._ws_list(path)
        return await self._run(path, lambda disk: disk_list(disk, path))

    async def _ws_make_dir(self, path: str) -> None:
        if not self.virtual_mode:
            return await self._run(path, lambda disk: disk_make_dir(disk, path))
        info = await self._stat(path)
        if info is not None:
            if not info.is_dir:
                raise PathExistsError(f"'{path}' exists and is not a directory", path)
            return None
        await self._overlay._ws_make_dir(path)  # pyright: ignore[reportPrivateUsage]
        return None

    async def _ws_realpath(self, path: str) -> str:
        root_path = self.root_path

        def resolve() -> str:
            return disk_realpath(self._disk().real, root_path, path)

        return await anyio.to_thread.run_sync(resolve)


# --- commands ------------------------------------------------------------------------------------------------------


def _command_script(command: WorkspaceCommand, shell: bool) -> str:
    """The ``sh -c`` script for a command in either form; ``TypeError`` when the form and ``shell`` disagree."""
    if isinstance(command, str):
        if not shell:
            raise TypeError("a string command needs shell=True; pass an argv sequence otherwise")
        return command
    if shell:
        raise TypeError("an argv sequence cannot be combined with shell=True; pass one command string")
    if isinstance(command, bytes | bytearray):
        raise TypeError("a command is a str (with shell=True) or a sequence of str")
    argv = list(command)
    if not argv:
        raise ValueError("command must not be empty")
    for item in argv:
        if not isinstance(item, str):  # pyright: ignore[reportUnnecessaryIsInstance]
            raise TypeError(f"argv items are str, not {type(item).__name__}")
    return "exec " + shlex.join(argv)


def _check_timeout(timeout: float | None) -> None:
    if timeout is None:
        return
    if isinstance(timeout, bool) or not isinstance(timeout, int | float):  # pyright: ignore[reportUnnecessaryIsInstance]
        raise ValueError("timeout must be a positive finite number of seconds or None")  # noqa: TRY004 (the contract)
    if not math.isfinite(timeout) or timeout <= 0:
        raise ValueError("timeout must be a positive finite number of seconds or None")


def _text(data: bytes | bytearray) -> str:
    return bytes(data).decode("utf-8", errors="replace")


class WorkspaceCommands:
    """``SupportsCommands.run`` for an executing backend: on ``open_process`` when it streams, else on ``execute``.

    One set of rules with ``execute``: the command's own exit code (127 for a missing program), a timeout or a
    cancellation kills every process of the command's session (a process that moved into a session of its own is
    never killed), and the call returns once the command's own process has exited, its output drained for a moment
    (``DRAIN_SECONDS`` on the host; the engine's own grace in a container), whatever it left running.
    """

    run_output_limit: int = RUN_OUTPUT_LIMIT

    if TYPE_CHECKING:

        async def _ws_enter(self) -> None: ...
        async def _ws_check(self) -> None: ...
        async def execute(
            self,
            command: str,
            timeout: float | None = None,
            *,
            env: Mapping[str, str] | None = None,
            cwd: str | None = None,
            stdin: str | bytes | None = None,
        ) -> Any: ...

    async def run(
        self,
        command: WorkspaceCommand,
        *,
        shell: bool = False,
        env: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> CommandResult:
        """Run ``command`` (argv, or a shell string with ``shell=True``) in the working directory, stdin at EOF.

        Returns stdout and stderr apart and the real exit code; raises ``WorkspaceTimeoutError`` (with the output
        so far) after ``timeout`` seconds, ``WorkspaceOutputLimitError`` past ``run_output_limit`` bytes,
        ``WorkspaceUnavailableError`` when the environment is gone (also mid-command).
        """
        script = _command_script(command, shell)
        _check_timeout(timeout)
        from agent_backends.process import check_command

        check_command(script, env=env)  # InvalidArgumentError (a ValueError) before anything runs
        with boundary():
            await self._ws_enter()
            open_process = getattr(self, "open_process", None)
            try:
                if open_process is None:
                    result = await self._run_through_execute(script, env, timeout)
                else:
                    result = await self._run_streamed(cast("Process", open_process(script, env=env)), timeout)
            except _workspaces().WorkspaceError:
                await self._ws_after_run()  # a timeout because the environment went away is that
                raise
            await self._ws_after_run()  # a command can end because its environment went away
            return result

    async def _ws_after_run(self) -> None:
        await self._ws_check()

    async def _run_streamed(self, process: Process, timeout: float | None) -> CommandResult:
        workspaces = _workspaces()
        limit = self.run_output_limit
        stdout, stderr = bytearray(), bytearray()
        overflow = False
        code: int | None = None
        async with process:
            with anyio.move_on_after(math.inf if timeout is None else timeout) as scope:
                async for chunk in process:
                    buffer = stdout if chunk.stream == "stdout" else stderr
                    buffer.extend(chunk.data)
                    if len(stdout) + len(stderr) > limit:
                        overflow = True
                        break
                if not overflow:
                    code = await process.wait()
            if scope.cancelled_caught or overflow:
                await process.kill()
        if overflow:
            raise workspaces.WorkspaceOutputLimitError(
                f"the command printed more than {limit:,} bytes; redirect its output to a file and read part of it",
                limit=limit,
                stdout=_text(stdout[:_PREVIEW_BYTES]),
                stderr=_text(stderr[:_PREVIEW_BYTES]),
            )
        if scope.cancelled_caught:
            raise workspaces.WorkspaceTimeoutError(
                f"the command timed out after {timeout:g} s; it and every process of its session were killed",
                stdout=_text(stdout),
                stderr=_text(stderr),
            )
        if code is None:
            raise SandboxGoneError("the command ended without an exit status: its environment went away")
        return cast(
            "CommandResult", workspaces.CommandResult(exit_code=code, stdout=_text(stdout), stderr=_text(stderr))
        )

    async def _run_through_execute(
        self, script: str, env: Mapping[str, str] | None, timeout: float | None
    ) -> CommandResult:
        """For a sandbox with ``execute`` alone (merged, capped output): the command's streams go to two files in
        the sandbox, printed back in base64 after it, so they come apart whatever the sandbox does to its output."""
        import base64

        workspaces = _workspaces()
        wrapped = (
            'd=$(mktemp -d 2>/dev/null || { d=/tmp/.agent-backends-$$; mkdir -p "$d"; echo "$d"; }) || exit 125; '
            f'( {script}\n) >"$d/o" 2>"$d/e" </dev/null; rc=$?; '
            'printf "\\n=rc %s\\n" "$rc"; base64 < "$d/o"; printf "=e\\n"; base64 < "$d/e"; printf "=end\\n"; '
            'rm -rf "$d"'
        )
        response = await self.execute(wrapped, math.inf if timeout is None else timeout, env=env)
        if response.timed_out:
            raise workspaces.WorkspaceTimeoutError(f"the command timed out after {timeout:g} s")
        output: str = response.output
        head, marker, rest = output.rpartition("\n=rc ")
        del head
        if not marker or "=end" not in rest:
            if response.truncated:
                raise workspaces.WorkspaceOutputLimitError(
                    "the command's output is larger than this sandbox's execute returns",
                    limit=self.run_output_limit,
                )
            raise workspaces.WorkspaceError(f"the sandbox did not run the command: {output[-500:]}")
        code_text, _, rest = rest.partition("\n")
        out64, _, rest = rest.partition("=e\n")
        err64, _, _ = rest.partition("=end")
        return cast(
            "CommandResult",
            workspaces.CommandResult(
                exit_code=int(code_text.strip()),
                stdout=_text(base64.b64decode("".join(out64.split()))),
                stderr=_text(base64.b64decode("".join(err64.split()))),
            ),
        )


# --- sandboxes: the filesystem side through commands -----------------------------------------------------------------

# $1: the path. 17: a file is there; 20: a parent is a file; 13: mkdir failed otherwise.
SANDBOX_MAKE_DIR = (
    'p=$1; if [ -e "$p" ] || [ -L "$p" ]; then [ -d "$p" ] && exit 0; exit 17; fi; q=$p; '
    'while [ "$q" != / ]; do q=${q%/*}; [ -n "$q" ] || q=/; '
    'if [ -e "$q" ] || [ -L "$q" ]; then [ -d "$q" ] || exit 20; break; fi; done; '
    'mkdir -p -- "$p" 2>&1 || exit 13'
)
# $1: the path. 2: nothing there (not even a dangling link); 13: rm failed.
SANDBOX_REMOVE = '[ -e "$1" ] || [ -L "$1" ] || exit 2; rm -rf -- "$1" 2>&1 || exit 13'
# $1: the directory. Each entry: "d" or "-", then its path, NUL-terminated. 2: missing; 20: not a directory.
SANDBOX_LIST = (
    'if [ ! -d "$1" ]; then [ -e "$1" ] && exit 20; exit 2; fi; d=${1%/}; '
    'for f in "$d"/* "$d"/.*; do case ${f##*/} in .|..) continue;; esac; '
    '[ -e "$f" ] || [ -L "$f" ] || continue; if [ -d "$f" ]; then t=d; else t=-; fi; printf "%s%s\\0" "$t" "$f"; done'
)
# $1: an absolute path. Walks it component by component like os.path.realpath(strict=False): a link is read with
# readlink and its target walked in its place, ``..`` climbs what is resolved so far, a missing component is kept as
# written, and past 40 links the rest is kept as written (a loop ends). Prints the result and a "/" (a name may end
# with a newline, which command substitution would drop).
SANDBOX_REALPATH = (
    'rest=${1#/}; out=; n=0; while [ -n "$rest" ]; do '
    "case $rest in */*) part=${rest%%/*}; rest=${rest#*/};; *) part=$rest; rest=;; esac; "
    'case $part in ""|.) ;; ..) out=${out%/*};; *) '
    'if [ "$n" -lt 40 ] && [ -L "$out/$part" ]; then n=$((n + 1)); '
    't=$(readlink -- "$out/$part"; printf x) || exit 1; t=${t%?x}; t=${t%x}; '
    'case $t in /*) out=;; esac; rest="$t/$rest"; else out="$out/$part"; fi;; esac; done; printf "%s/" "${out:-/}"'
)


def sandbox_failure(code: int | None, path: str, output: bytes) -> PathError:
    """The path error a sandbox script's exit code names."""
    if code == 2:
        return PathNotFoundError(f"'{path}' does not exist", path)
    if code == 17:
        return PathExistsError(f"'{path}' exists and is not a directory", path)
    if code == 20:
        return PathNotDirectoryError(f"'{path}' is not a directory, or a parent of it is a file", path)
    if code == 21:
        return PathIsDirectoryError(f"'{path}' is a directory", path)
    message = output.decode(errors="replace").strip()
    return PathPermissionError(f"'{path}': {message or f'failed (exit code {code})'}", path)


async def run_in_thread(fn: Any, *args: Any) -> Any:
    return await anyio.to_thread.run_sync(fn, *args)


class SandboxWorkspace(WorkspaceFiles):
    """The workspace hooks of ``BaseSandbox`` (and so ``DockerSandbox``): what has no primitive runs as one short
    script through the sandbox's internal command runner (``_run``)."""

    _ws_kind: ClassVar[str] = "sandbox"
    _ws_real_work_dir: str | None = None

    if TYPE_CHECKING:
        work_dir: str

        @property
        def id(self) -> str: ...
        async def _run(self, script: str, *, stdin: bytes | None = None) -> Any: ...

    def _ws_id(self) -> str | None:
        return None if super()._ws_id() is None else self.id

    async def _script(self, script: str, *args: str) -> Any:
        return await self._run(shlex.join(["/bin/sh", "-c", script, "sh", *args]))

    async def _ws_working_dir(self) -> str:
        if self._ws_real_work_dir is None:
            result = await self._script('cd -- "$1" && pwd -P', self.work_dir)
            text = result.stdout.decode(errors="surrogateescape").rstrip("\n")
            if result.exit_code != 0 or not text.startswith("/"):
                raise sandbox_failure(result.exit_code or 2, self.work_dir, result.stderr or result.stdout)
            self._ws_real_work_dir = posixpath.normpath(text)
        return self._ws_real_work_dir

    async def _ws_list(self, path: str) -> list[FileEntry]:
        result = await self._script(SANDBOX_LIST, path)
        if result.exit_code != 0:
            raise sandbox_failure(result.exit_code, path, result.stderr or result.stdout)
        entries: list[FileEntry] = []
        for item in result.stdout.decode(errors="surrogateescape").split("\0"):
            if len(item) > 1 and item[1] == "/":
                entries.append(_entry(item[1:], is_dir=item[0] == "d", size=None))
        return entries

    async def _ws_make_dir(self, path: str) -> None:
        result = await self._script(SANDBOX_MAKE_DIR, path)
        if result.exit_code != 0:
            raise sandbox_failure(result.exit_code, path, result.stderr or result.stdout)

    async def _ws_remove(self, path: str) -> None:
        result = await self._script(SANDBOX_REMOVE, path)
        if result.exit_code != 0:
            raise sandbox_failure(result.exit_code, path, result.stderr or result.stdout)

    async def _ws_realpath(self, path: str) -> str:
        result = await self._script(SANDBOX_REALPATH, path)
        text = result.stdout.decode(errors="surrogateescape")
        if result.exit_code != 0 or not text.endswith("/"):
            raise OSError(f"could not resolve {path!r} in the sandbox: {(result.stderr or result.stdout)[-300:]!r}")
        return posixpath.normpath(text[:-1] or "/")

    async def _ws_write(self, path: str, data: bytes) -> None:
        try:
            await self._write_bytes(path, data)
        except PathError as exc:
            if type(exc) is not PathError and not isinstance(exc, PathPermissionError):
                raise
            # Which builtin: a parent that is a file is a NotADirectoryError (the engines word it differently).
            parent = path.rsplit("/", 1)[0] or "/"
            result = await self._script(SANDBOX_MAKE_DIR, parent)
            if result.exit_code in (17, 20):
                raise PathNotDirectoryError(f"'{path}' cannot be written: a parent of it is a file", path) from exc
            raise


class CompositeWorkspace:
    """The workspace API of ``CompositeBackend``: each path goes to the backend its route names.

    Its workspace paths are its default backend's (a ``LocalBackend`` default: host paths under its root), so files
    and the default's shell agree; a route appears below the default's root (``/project/`` at ``<root>/project``).
    ``run`` exists only when the default backend runs commands.
    """

    _ws_kind: ClassVar[str] = "composite"
    _ws_ref_id: str | None = None

    if TYPE_CHECKING:
        default: Any

        def _route(self, path: str) -> tuple[str, Any, str]: ...
        @staticmethod
        def _outer(prefix: str, backend: Any, inner: str) -> str: ...

    def _ws_enable_commands(self) -> None:
        """Give this object ``run`` when its default backend has it (called by the constructor)."""
        run = getattr(self.default, "run", None)
        if run is not None:
            self.run = run  # pyright: ignore[reportAttributeAccessIssue]

    @property
    def ref(self) -> WorkspaceRef | None:
        """This composite's ``WorkspaceRef`` (a random id made by its first operation, fixed from then on)."""
        return None if self._ws_ref_id is None else make_ref(self._ws_kind, self._ws_ref_id)

    def _ws_touch(self) -> None:
        if self._ws_ref_id is None:
            self._ws_ref_id = uuid.uuid4().hex
            WorkspaceFiles._ws_registry[f"{self._ws_kind}:{self._ws_ref_id}"] = self  # pyright: ignore[reportPrivateUsage]

    @classmethod
    def from_ref(cls, ref: WorkspaceRef) -> Self:
        """The composite a ref names, in this process (``WorkspaceUnavailableError`` when it is gone)."""
        found = WorkspaceFiles._ws_registry.get(f"{cls._ws_kind}:{ref.id}")  # pyright: ignore[reportPrivateUsage]
        if not isinstance(found, cls) or ref.provider != f"{PROVIDER}.{cls._ws_kind}":
            raise _workspaces().WorkspaceUnavailableError(f"no {cls.__name__} with the ref {ref.id!r} in this process")
        return found

    def _ws_root(self) -> str:
        root = getattr(self.default, "root_path", "/")
        return root if isinstance(root, str) else "/"

    def _ws_routed(self, path: str) -> tuple[str, Any, str]:
        self._ws_touch()
        text = _check_path(path)
        root = self._ws_root()
        normalized = _paths.normalize(text, root)
        composite = _paths.rebase(normalized, root, "/") if root != "/" else normalized
        if composite is None:
            raise PathEscapeError(f"path {path!r} is outside this backend's directory {root}", path)
        return self._route(composite)

    def _ws_lift(self, prefix: str, backend: Any, inner: str) -> str:
        composite = self._outer(prefix, backend, inner)
        root = self._ws_root()
        moved = _paths.rebase(composite, "/", root) if root != "/" else composite
        return composite if moved is None else moved

    async def working_dir(self) -> str:
        """The default backend's working directory."""
        self._ws_touch()
        with boundary():
            default_dir = getattr(self.default, "working_dir", None)
            if callable(default_dir):
                return await cast("Callable[[], Awaitable[str]]", default_dir)()
            return self._ws_root()

    async def write_bytes(self, path: str, data: bytes) -> None:
        """Write a file on the backend its route names."""
        _, backend, inner = self._ws_routed(path)
        await backend.write_bytes(inner, data)

    async def stat(self, path: str) -> FileEntry:
        """A ``FileEntry`` from the backend the route names."""
        prefix, backend, inner = self._ws_routed(path)
        entry = await backend.stat(inner)
        return _entry(self._ws_lift(prefix, backend, entry.path), is_dir=entry.is_dir, size=entry.size)

    async def list_dir(self, path: str) -> Sequence[FileEntry]:
        """A directory's entries, from the backend the route names (a route's mount point is listed too)."""
        prefix, backend, inner = self._ws_routed(path)
        entries = [
            _entry(self._ws_lift(prefix, backend, entry.path), is_dir=entry.is_dir, size=entry.size)
            for entry in await backend.list_dir(inner)
        ]
        here = self._ws_lift(prefix, backend, inner)
        for route in getattr(self, "routes", {}):
            lifted = self._ws_lift("", self.default, _paths.rebase(route, "/", self._ws_root()) or route)
            if posixpath.dirname(lifted) == here and all(entry.path != lifted for entry in entries):
                entries.append(_entry(lifted, is_dir=True, size=None))
        return sorted(entries, key=lambda entry: entry.path)

    async def make_dir(self, path: str) -> None:
        """``mkdir -p`` on the backend the route names."""
        _, backend, inner = self._ws_routed(path)
        await backend.make_dir(inner)

    async def remove(self, path: str) -> None:
        """Remove on the backend the route names; never the working directory or a directory above it."""
        text = _check_path(path)
        working = await self.working_dir()
        absolute = posixpath.normpath(text if text.startswith("/") else posixpath.join(working, text))
        if _paths.is_within(working, absolute):
            raise ValueError(f"refusing to remove {absolute!r}: it is the working directory or holds it")
        _, backend, inner = self._ws_routed(path)
        await backend.remove(inner)

    async def realpath(self, path: str) -> str:
        """Symlinks resolved by the backend the route names."""
        text = _check_path(path)
        if not text.startswith("/"):
            text = posixpath.join(await self.working_dir(), text)
        prefix, backend, _ = self._ws_routed(posixpath.normpath(text))
        # The child resolves the path as written: ``link/..`` climbs from the link's target, not from ``link``.
        root = self._ws_root()
        raw = text[len(root) :] or "/" if root != "/" and text.startswith(root + "/") else text
        raw = raw[len(prefix) :] or "/" if prefix and raw.startswith(prefix) else raw
        child_root = getattr(backend, "root_path", "/")
        if isinstance(child_root, str) and child_root != "/":
            raw = child_root + raw
        return self._ws_lift(prefix, backend, await backend.realpath(raw))
