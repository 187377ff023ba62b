"""Streaming processes, the one execution API every sandbox implements.

``async with sandbox.open_process("make test") as proc:`` starts a command; ``async for chunk in proc`` yields its
output as it arrives, each chunk tagged with the stream it came from. Leaving the block, or being cancelled, kills
the command's whole process tree. ``execute`` is built on this.
"""

from __future__ import annotations

import codecs
import contextlib
import math
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Literal, Self

import anyio
from anyio.abc import TaskGroup
from pydantic import BaseModel, ConfigDict

from agent_backends.exceptions import InvalidArgumentError, ProcessError
from agent_backends.types import ExecuteResponse

__all__ = (
    "BackgroundProcess",
    "ChannelProcess",
    "OutputBuffer",
    "OutputChunk",
    "MAX_COMMAND_BYTES",
    "Process",
    "check_command",
    "collect",
    "exit_status",
    "exit_unwrapped",
)

StreamName = Literal["stdout", "stderr"]


@dataclass(frozen=True, slots=True)
class OutputChunk:
    """Bytes a process wrote, and which stream they came from."""

    stream: StreamName
    data: bytes

    @property
    def text(self) -> str:
        return self.data.decode(errors="replace")


def _shown(text: str, limit: int = 60) -> str:
    """``repr(text)``, cut when long: a refusal must not echo a huge argument back."""
    return repr(text) if len(text) <= limit else f"{text[:limit]!r}… ({len(text):,} characters)"


# Linux refuses a single argument of 128 KiB or more (MAX_ARG_STRLEN, with its terminating NUL), on the host and in
# every container; the command is one argument of ``sh -c``.
MAX_COMMAND_BYTES = 128 * 1024 - 1


def _encoded(text: str, what: str) -> bytes:
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        raise InvalidArgumentError(f"{what} is not valid Unicode (it has a lone surrogate)") from None


def check_command(
    command: str,
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    timeout: float | None = None,
) -> None:
    """Refuse with ``InvalidArgumentError``, before anything runs, what no process could be started or timed with.

    A NUL byte in the command or in an environment variable (``execve`` cannot pass one), or a lone surrogate; a
    command over ``MAX_COMMAND_BYTES``; an environment name that is empty or holds ``=``; a timeout that is not a
    number of seconds greater than 0 (``math.inf`` means no limit, ``None`` the backend's default). ``cwd`` follows
    the path rules where the backend resolves it.
    """
    if not isinstance(command, str):  # pyright: ignore[reportUnnecessaryIsInstance]
        raise InvalidArgumentError(f"the command must be a str, not {type(command).__name__}")
    if "\x00" in command:
        at = command.index("\x00")
        raise InvalidArgumentError(f"the command has a NUL byte (character {at:,}); no command can carry one")
    size = len(command) if command.isascii() else len(_encoded(command, "the command"))
    if size > MAX_COMMAND_BYTES:
        raise InvalidArgumentError(
            f"the command is {size:,} bytes; the most is {MAX_COMMAND_BYTES:,} (Linux's limit on one argument, and "
            "sh -c takes the command as one): write a script file and run that"
        )
    for name, value in (env or {}).items():
        if not isinstance(name, str) or not isinstance(value, str):  # pyright: ignore[reportUnnecessaryIsInstance]
            raise InvalidArgumentError(
                f"environment names and values must be str, not {type(name).__name__}: {type(value).__name__}"
            )
        if not name or "=" in name or "\x00" in name:
            raise InvalidArgumentError(
                f"environment variable name {_shown(name)} is refused: a name is not empty and has no '=' or NUL byte"
            )
        if "\x00" in value:
            raise InvalidArgumentError(f"environment variable {_shown(name)} has a NUL byte in its value")
        _encoded(name + value, f"environment variable {_shown(name)}")
    if cwd is not None and not isinstance(cwd, str):  # pyright: ignore[reportUnnecessaryIsInstance]
        raise InvalidArgumentError(f"cwd must be a str, not {type(cwd).__name__}")
    if timeout is not None:
        _check_timeout(timeout)


def _check_timeout(timeout: float) -> None:
    if isinstance(timeout, bool) or not isinstance(timeout, int | float):  # pyright: ignore[reportUnnecessaryIsInstance]
        raise InvalidArgumentError(f"timeout must be a number of seconds, not {type(timeout).__name__}")
    try:
        seconds = float(timeout)
    except OverflowError:  # an int beyond any float: no clock can count to it
        raise InvalidArgumentError("timeout is too large; pass math.inf for no limit") from None
    if math.isnan(seconds) or seconds <= 0:
        raise InvalidArgumentError(
            f"timeout must be a number of seconds greater than 0 (math.inf for no limit), not {timeout!r}"
        )


def exit_status(returncode: int | None) -> int | None:
    """A shell-style exit status: a death by signal N is ``128 + N`` on every backend (Docker's convention)."""
    if returncode is not None and returncode < 0:
        return 128 - returncode
    return returncode


async def exit_unwrapped(
    stack: contextlib.AsyncExitStack[bool | None],
    exc_type: type[BaseException] | None,
    exc: BaseException | None,
    tb: TracebackType | None,
) -> None:
    """Exit ``stack`` (which holds a task group), taking anyio's exception group off a lone exception.

    A task group wraps whatever reaches it in an ``ExceptionGroup``, even the ``async with`` block's own exception
    or a failed cleanup step; callers of ``open_process`` and ``execute`` expect ``except ValueError`` or
    ``except EngineUnavailableError`` to keep working.
    """
    try:
        await stack.__aexit__(exc_type, exc, tb)
    except BaseExceptionGroup as group:
        if len(group.exceptions) != 1:
            raise
        inner = group.exceptions[0]
        if inner is exc:
            return  # the block's own exception propagates unchanged
        context = inner.__context__
        try:
            raise inner  # with the context it had, not the group that only wrapped it
        finally:
            inner.__context__ = context


class Process(ABC):
    """A running command. Iterate it for ``OutputChunk`` s; the iteration ends when its output ends."""

    @property
    @abstractmethod
    def returncode(self) -> int | None:
        """The exit status once it has exited (``128 + N`` after signal N), else ``None``."""

    @abstractmethod
    async def receive(self) -> OutputChunk | None:
        """The next chunk of output, or ``None`` when the output has ended."""

    @abstractmethod
    async def write_stdin(self, data: bytes | str) -> None:
        """Send bytes to the process's standard input (open it with ``interactive=True``)."""

    @abstractmethod
    async def close_stdin(self) -> None:
        """Close standard input, so a process reading it sees end of file."""

    @abstractmethod
    async def kill(self) -> None:
        """Kill the process and everything it started; safe to call more than once."""

    @abstractmethod
    async def wait(self) -> int | None:
        """Wait for the process to exit and return its exit status."""

    @abstractmethod
    async def __aenter__(self) -> Self: ...

    @staticmethod
    def check_arguments(
        command: str, *, env: Mapping[str, str] | None = None, cwd: str | None = None, timeout: float | None = None
    ) -> None:
        """``check_command``, where every backend that makes processes already looks: at ``Process``."""
        check_command(command, env=env, cwd=cwd, timeout=timeout)

    @abstractmethod
    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> OutputChunk:
        chunk = await self.receive()
        if chunk is None:
            raise StopAsyncIteration
        return chunk


class ChannelProcess(Process):
    """What the engines' processes share: output arrives through a small bounded channel (back-pressure), an exit
    stack holds the process's resources, and ``write_stdin`` waits until the initial ``stdin=`` bytes are out."""

    def __init__(self, *, stdin: bytes | None, interactive: bool) -> None:
        self._stdin, self._interactive = stdin, interactive
        self._send, self._receive = anyio.create_memory_object_stream[OutputChunk](16)
        self._stdin_written = anyio.Event()  # set once the ``stdin=`` bytes are written (at once when none)
        self._stack = contextlib.AsyncExitStack()

    @abstractmethod
    async def _send_stdin(self, data: bytes | str) -> None:
        """Write to the process's standard input, now."""

    def _start_stdin(self, tasks: TaskGroup) -> None:
        """Feed the ``stdin=`` bytes in a task of ``tasks``, so the output is read meanwhile."""
        if self._stdin is None:
            self._stdin_written.set()
        else:
            tasks.start_soon(self._feed_stdin, self._stdin)

    async def _feed_stdin(self, data: bytes) -> None:
        """Write the ``stdin=`` bytes while the output is read: a command may fill its output pipe first."""
        try:
            with contextlib.suppress(ProcessError):  # a command may exit without reading its input
                await self._send_stdin(data)
        finally:
            self._stdin_written.set()
        if not self._interactive:
            await self.close_stdin()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await exit_unwrapped(self._stack, exc_type, exc, tb)

    async def receive(self) -> OutputChunk | None:
        try:
            return await self._receive.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            return None

    async def write_stdin(self, data: bytes | str) -> None:
        await self._stdin_written.wait()
        await self._send_stdin(data)


class BackgroundProcess(BaseModel):
    """A snapshot of a background process: its id, whether it still runs, and its output so far (capped)."""

    model_config = ConfigDict(frozen=True)

    id: str
    command: str
    running: bool
    exit_code: int | None
    output: str
    truncated: bool


class OutputBuffer:
    """Output kept in bounded memory: the first half of ``max_chars`` and the latest half, decoded per stream.

    Chunks are decoded with one incremental decoder per stream, so a character split across two chunks survives.
    """

    def __init__(self, max_chars: int) -> None:
        self.max_chars = max(max_chars, 2)
        self._head: list[str] = []
        self._head_size = 0
        self._tail: deque[str] = deque()
        self._tail_size = 0
        self.omitted = 0
        self._decoders = {
            name: codecs.getincrementaldecoder("utf-8")(errors="replace") for name in ("stdout", "stderr")
        }

    @property
    def truncated(self) -> bool:
        return self.omitted > 0

    def feed(self, chunk: OutputChunk) -> str:
        """Keep ``chunk``'s text (bounded) and return it, decoded."""
        text = self._decoders[chunk.stream].decode(chunk.data)
        self._add(text)
        return text

    def _add(self, text: str) -> None:
        room = self.max_chars // 2 - self._head_size
        if room > 0:
            self._head.append(text[:room])
            self._head_size += len(text[:room])
            text = text[room:]
        if not text:
            return
        self._tail.append(text)
        self._tail_size += len(text)
        limit = self.max_chars - self.max_chars // 2
        while self._tail_size > limit:
            extra = self._tail_size - limit
            first = self._tail[0]
            if len(first) <= extra:
                self._tail.popleft()
                self._tail_size -= len(first)
                self.omitted += len(first)
            else:
                self._tail[0] = first[extra:]
                self._tail_size -= extra
                self.omitted += extra

    def text(self) -> str:
        for decoder in self._decoders.values():
            self._add(decoder.decode(b"", final=True))
        head, tail = "".join(self._head), "".join(self._tail)
        if not self.omitted:
            return head + tail
        return f"{head}\n... [{self.omitted:,} characters of output omitted] ...\n{tail}"


async def collect(
    process: Process,
    *,
    timeout: float | None,
    max_chars: int,
    on_text: Callable[[str], Awaitable[None]] | None = None,
) -> ExecuteResponse:
    """Read the entered ``process`` to its end into an ``ExecuteResponse``: ``execute``'s one set of rules.

    Output is kept head and tail within ``max_chars``; ``on_text`` (if given) sees each piece as it arrives. When
    ``timeout`` seconds pass first, the whole tree is killed and the output so far kept (``timed_out=True``).
    """
    buffer = OutputBuffer(max_chars)
    exit_code: int | None = None
    with anyio.move_on_after(math.inf if timeout is None else timeout) as scope:
        async for chunk in process:
            text = buffer.feed(chunk)
            if on_text is not None and text:
                await on_text(text)
        exit_code = await process.wait()
    if scope.cancelled_caught:
        await process.kill()
    timed_out = scope.cancelled_caught
    output = buffer.text()
    if timed_out:
        output += f"\n[timed out after {timeout:g} s; the command and everything it started were killed]"
    return ExecuteResponse(
        output=output, exit_code=None if timed_out else exit_code, truncated=buffer.truncated, timed_out=timed_out
    )
