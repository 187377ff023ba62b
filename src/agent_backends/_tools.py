"""The console tools, each defined once: its name, its description (the implementation's docstring), its arguments
(the implementation's signature after ``env``) and a plain async implementation returning bounded text.

Both front ends are built from ``TOOLS``: the pydantic-ai ``FunctionToolset`` (``toolset.py``) and the MCP server
(``mcp_server.py``). They share one argument schema and one validator per tool (``ToolSpec.schema``, made by
pydantic-ai's own schema builder), so names, schemas, descriptions, results and error texts cannot drift.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, cast

from pydantic_ai import Tool
from pydantic_ai import exceptions as ai_exceptions

from agent_backends._grep import clip_echo
from agent_backends.backends._checkpoints import Checkpoints
from agent_backends.backends.composite import CompositeBackend
from agent_backends.console import can_execute
from agent_backends.exceptions import AgentBackendsError, SnapshotError
from agent_backends.process import OutputBuffer, OutputChunk, Process, collect
from agent_backends.protocol import BackendProtocol, SandboxProtocol
from agent_backends.types import ExecuteResponse, GrepMatches

__all__ = ("TOOLS", "TOOL_NAMES", "ToolEnv", "ToolSpec")

_MAX_LISTED = 500
_MAX_ERROR_CHARS = 2000  # an error worth reading is short; more is an echoed argument (a 100 KB path, say)
# pydantic-ai's own signals (retry, defer, approval, a run cancelled or over its limits) are not failures: they
# pass through, as cancellation and KeyboardInterrupt do. Later versions add names; use those present.
_SIGNALS = cast(
    tuple[type[Exception], ...],
    tuple(
        getattr(ai_exceptions, name)
        for name in (
            "ModelRetry",
            "CallDeferred",
            "ApprovalRequired",
            "AgentRunError",
            "ToolFailed",
            "ToolRetryError",
            "SkipToolExecution",
        )
        if hasattr(ai_exceptions, name)
    ),
)


@dataclass(frozen=True)
class ToolEnv:
    """What a tool call works with: the backend, the result bound, the command timeout, and where ``execute``
    streams its output while it runs (``None``: nowhere, the output comes back at the end only)."""

    backend: BackendProtocol
    max_output_chars: int = 30_000
    command_timeout: float | None = None
    on_output: Callable[[str], Awaitable[None]] | None = None


def _bounded(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    buffer = OutputBuffer(limit)
    buffer.feed(OutputChunk("stdout", text.encode(errors="surrogatepass")))
    return buffer.text()


def _cut_middle(text: str, limit: int) -> str:
    """An error text at most about ``limit`` characters: its start (what failed) and its end (why) kept."""
    if len(text) <= limit:
        return text
    head, tail = text[: limit * 2 // 3], text[-(limit // 3) :]
    return f"{head}[… {len(text) - len(head) - len(tail):,} characters cut …]{tail}"


def _describe(exc: Exception) -> str:
    """What went wrong, for the model: our messages as they are, anything else with its type's name."""
    if isinstance(exc, AgentBackendsError):
        return str(exc)
    if isinstance(exc, ExceptionGroup):
        return "; ".join(_describe(inner) for inner in cast(ExceptionGroup[Exception], exc).exceptions)
    message = str(exc)
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


async def _as_text(run: Callable[[], Awaitable[str]], limit: int) -> str:
    """``run()``'s text, or its failure as ``"Error: ..."`` text; either way at most ``limit`` characters."""
    try:
        text = await run()
    except _SIGNALS:
        raise
    except Exception as exc:  # anything else the model can be told about; cancellation is a BaseException
        text = f"Error: {_describe(exc)}"
    if not isinstance(text, str):  # pyright: ignore[reportUnnecessaryIsInstance]  # a custom backend's mistake
        text = f"Error: the backend returned {type(text).__name__} where text was expected"
    if text.startswith("Error:"):
        text = _cut_middle(text, min(limit, _MAX_ERROR_CHARS))
    return _bounded(text, limit)


# --- the tools: the docstring is the description the model reads ------------------------------------------------


async def ls(env: ToolEnv, path: str = ".") -> str:
    """List a directory (default: the working directory): one entry per line, directories end with '/', files
    show their size in bytes."""

    async def run() -> str:
        entries = await env.backend.ls_info(path)
        lines = [f"{e.path}/" if e.is_dir else f"{e.path} ({e.size} bytes)" for e in entries[:_MAX_LISTED]]
        if len(entries) > _MAX_LISTED:
            lines.append(f"... [{len(entries) - _MAX_LISTED} more entries not shown]")
        return "\n".join(lines) or f"(directory {clip_echo(path)} is empty)"

    return await _as_text(run, env.max_output_chars)


async def read_file(env: ToolEnv, path: str, offset: int = 0, limit: int = 2000) -> str:
    """Read a text file with line numbers. offset is the 0-based first line, limit how many lines."""
    return await _as_text(lambda: env.backend.read(path, offset, limit), env.max_output_chars)


async def write_file(env: ToolEnv, path: str, content: str) -> str:
    """Create or overwrite a file with content (parent directories are created)."""

    async def run() -> str:
        result = await env.backend.write(path, content)
        return result.error or f"Wrote {result.path} ({len(content.encode(errors='surrogatepass')):,} bytes)"

    return await _as_text(run, env.max_output_chars)


async def edit_file(env: ToolEnv, path: str, old_string: str, new_string: str, replace_all: bool = False) -> str:
    """Replace old_string (exact text, unique unless replace_all) with new_string in a file."""

    async def run() -> str:
        result = await env.backend.edit(path, old_string, new_string, replace_all)
        return result.error or f"Edited {result.path}: {result.occurrences} replacement(s)"

    return await _as_text(run, env.max_output_chars)


async def glob(env: ToolEnv, pattern: str, path: str = ".") -> str:
    """Find files by glob pattern (*, ?, [abc], ** for any depth, {a,b}) under path (default: the working
    directory)."""

    async def run() -> str:
        found = await env.backend.glob_info(pattern, path)
        lines = [info.path for info in found[:_MAX_LISTED]]
        if len(found) > _MAX_LISTED:
            lines.append(f"... [{len(found) - _MAX_LISTED} more files not shown; narrow the pattern]")
        return "\n".join(lines) or f"No files match {clip_echo(pattern)} under {clip_echo(path)}"

    return await _as_text(run, env.max_output_chars)


async def grep(env: ToolEnv, pattern: str, path: str | None = None, glob: str | None = None) -> str:
    """Search file contents for a regular expression (ripgrep syntax); glob filters file names (*.py)."""

    async def run() -> str:
        found = await env.backend.grep_raw(pattern, path, glob)
        if isinstance(found, str):
            return found
        lines = [f"{m.path}:{m.line_number}: {m.line}" for m in found]
        if isinstance(found, GrepMatches) and found.note:
            lines.append(found.note)
        return "\n".join(lines) or f"No matches for {clip_echo(pattern)}"

    return await _as_text(run, env.max_output_chars)


async def execute(env: ToolEnv, command: str, timeout: float | None = None) -> str:
    """Run a shell command (sh -c) and return its output and exit code. timeout is in seconds."""

    async def run() -> str:
        backend = env.backend
        assert isinstance(backend, SandboxProtocol | CompositeBackend)
        limit = timeout if timeout is not None else env.command_timeout
        if env.on_output is not None:
            response = await _execute_streaming(backend, command, limit, env.on_output)
        else:
            response = await backend.execute(command, limit)
        status = "timed out" if response.timed_out else f"exit code {response.exit_code}"
        return f"{response.output.rstrip()}\n[{status}]".lstrip()

    return await _as_text(run, env.max_output_chars)


async def _execute_streaming(
    backend: SandboxProtocol | CompositeBackend,
    command: str,
    timeout: float | None,
    on_output: Callable[[str], Awaitable[None]],
) -> ExecuteResponse:
    """``backend.execute(command, timeout)``, passing each piece of output to ``on_output`` as it arrives.

    A backend that runs commands through ``open_process`` (``LocalBackend``, ``DockerSandbox``, a composite whose
    default is one) is read chunk by chunk with exactly ``execute``'s rules (timeout, head-and-tail cap, the kill
    of the whole tree on timeout or cancellation); any other backend runs ``execute`` and streams its output once,
    at the end.
    """
    target: object = backend.default if isinstance(backend, CompositeBackend) else backend
    open_process = getattr(target, "open_process", None)
    if not callable(open_process) or not isinstance(getattr(target, "max_output_chars", None), int):
        response = await backend.execute(command, timeout)
        if response.output:
            await on_output(response.output)
        return response
    Process.check_arguments(command, timeout=timeout)  # InvalidArgumentError before anything runs
    default_timeout = cast(float | None, getattr(target, "default_timeout", None))
    limit = default_timeout if timeout is None else timeout
    max_chars = cast(int, getattr(target, "max_output_chars"))  # noqa: B009
    async with cast(Process, open_process(command)) as process:
        return await collect(process, timeout=limit, max_chars=max_chars, on_text=on_output)


async def checkpoint(env: ToolEnv, label: str | None = None) -> str:
    """Save a checkpoint of every file, to go back to later with rollback. label is a short note to recognize it."""

    async def run() -> str:
        snap = await _checkpoints(env.backend).snapshot(label[:200] if label else None)
        note = f" ({snap.label})" if snap.label else ""
        return f"Checkpoint {snap.id}{note} saved: {snap.files:,} files, {snap.size:,} bytes"

    return await _as_text(run, env.max_output_chars)


async def rollback(env: ToolEnv, checkpoint_id: str | None = None) -> str:
    """Put every file back as it was at a checkpoint (default: the latest). Changes made since are undone and
    files created since are removed; running processes are not affected."""

    async def run() -> str:
        backend = _checkpoints(env.backend)
        saved = await backend.list_snapshots()
        if not saved:
            return "Error: there is no checkpoint to roll back to; save one with checkpoint first"
        target = saved[-1] if checkpoint_id is None else next((s for s in saved if s.id == checkpoint_id), None)
        if target is None:
            known = ", ".join(f"{s.id} ({s.label})" if s.label else s.id for s in saved[-10:])
            return f"Error: no checkpoint {clip_echo(checkpoint_id or '')}; the latest are: {known}"
        await backend.restore(target)
        note = f" ({target.label})" if target.label else ""
        return f"Rolled back to checkpoint {target.id}{note}, saved at {target.created_at:%Y-%m-%d %H:%M:%S} UTC"

    return await _as_text(run, env.max_output_chars)


def _checkpoints(backend: BackendProtocol) -> Checkpoints:
    if not isinstance(backend, Checkpoints):
        raise SnapshotError(f"{type(backend).__name__} cannot take checkpoints")
    return backend


# --- the list both front ends are built from ----------------------------------------------------------------------


@dataclass(frozen=True)
class ToolSpec:
    """One console tool: ``function(env, **arguments) -> str``; ``schema`` is its argument schema and validator
    (pydantic-ai's, built from the signature after ``env``), ``description`` its docstring."""

    name: str
    function: Callable[..., Awaitable[str]]
    needs_execute: bool = False

    @functools.cached_property
    def schema(self) -> Any:
        """The pydantic-ai ``FunctionSchema`` of the arguments (``json_schema``, ``validator``, ``description``)."""
        arguments = functools.partial(self.function, None)  # the signature after ``env``; its docstring
        arguments.__name__ = arguments.__qualname__ = self.name  # pyright: ignore[reportAttributeAccessIssue]
        arguments.__module__ = __name__
        return Tool(arguments, takes_ctx=False, name=self.name).function_schema

    @property
    def description(self) -> str:
        return cast(str, self.schema.description)

    @property
    def json_schema(self) -> dict[str, Any]:
        return cast(dict[str, Any], self.schema.json_schema)

    def validate(self, arguments: dict[str, Any] | str) -> dict[str, Any]:
        """The arguments as the implementation takes them; raises pydantic's ``ValidationError``."""
        validator = self.schema.validator
        if isinstance(arguments, str):
            return cast(dict[str, Any], validator.validate_json(arguments or "{}"))
        return cast(dict[str, Any], validator.validate_python(arguments))

    def offered(self, backend: BackendProtocol) -> bool:
        """Whether this tool is offered for ``backend`` (``execute`` only where commands run)."""
        return not self.needs_execute or can_execute(backend)

    async def __call__(self, env: ToolEnv, arguments: dict[str, Any]) -> str:
        return await self.function(env, **arguments)


TOOLS: tuple[ToolSpec, ...] = (
    ToolSpec("ls", ls),
    ToolSpec("read_file", read_file),
    ToolSpec("write_file", write_file),
    ToolSpec("edit_file", edit_file),
    ToolSpec("glob", glob),
    ToolSpec("grep", grep),
    ToolSpec("execute", execute, needs_execute=True),
)
TOOL_NAMES = tuple(spec.name for spec in TOOLS)
# Offered with ``create_console_toolset(checkpoints=True)``.
CHECKPOINT_TOOLS: tuple[ToolSpec, ...] = (ToolSpec("checkpoint", checkpoint), ToolSpec("rollback", rollback))
