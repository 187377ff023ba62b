"""The console toolset: the backend's operations as pydantic-ai tools, reading the backend from ``ctx.deps``.

Tool results are plain text a model can act on: listings, ``cat -n`` reads, ``path:line: text`` grep hits, command
output with its exit code. A tool never ends the agent's run: any failure but cancellation comes back as
``"Error: ..."`` text, never a traceback, whatever raised it (this library, a custom backend's ``OSError``, a bug),
and every result, error texts included, is bounded (``max_output_chars``; an error text at most
``_MAX_ERROR_CHARS``). ``execute`` is offered only when the deps' backend can execute. Per-tool approval
(``interrupt_on={"execute": True}``) uses pydantic-ai's deferred tool approvals.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import cast

from pydantic_ai import FunctionToolset, RunContext
from pydantic_ai import exceptions as ai_exceptions
from pydantic_ai.tools import ToolDefinition

from agent_backends._grep import clip_echo
from agent_backends.backends.composite import CompositeBackend
from agent_backends.console import ConsoleDeps, can_execute
from agent_backends.exceptions import AgentBackendsError
from agent_backends.process import OutputBuffer, OutputChunk
from agent_backends.protocol import SandboxProtocol
from agent_backends.types import GrepMatches

__all__ = ("create_console_toolset",)

TOOL_NAMES = ("ls", "read_file", "write_file", "edit_file", "glob", "grep", "execute")
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


def create_console_toolset(
    *,
    interrupt_on: Mapping[str, bool] | None = None,
    include_execute: bool = True,
    max_output_chars: int = 30_000,
    command_timeout: float | None = None,
    toolset_id: str = "console",
) -> FunctionToolset[ConsoleDeps]:
    """A pydantic-ai toolset with ``ls``, ``read_file``, ``write_file``, ``edit_file``, ``glob``, ``grep`` and
    ``execute``, working on ``ctx.deps.backend``.

    Args:
        interrupt_on: tool name to whether it needs approval first, e.g. ``{"execute": True}``; the run then
            ends with ``DeferredToolRequests`` (see pydantic-ai's deferred tools) until approved or denied.
        include_execute: offer ``execute`` (still only when the backend can execute).
        max_output_chars: the most text any one tool returns (head and tail kept).
        command_timeout: seconds before ``execute`` kills a command (``None``: the backend's default).
        toolset_id: the toolset's id.
    """
    approvals = dict(interrupt_on or {})
    unknown = set(approvals) - set(TOOL_NAMES)
    if unknown:
        raise ValueError(f"interrupt_on names unknown tools {sorted(unknown)}; the tools are {', '.join(TOOL_NAMES)}")
    toolset: FunctionToolset[ConsoleDeps] = FunctionToolset(id=toolset_id)

    def needs(name: str) -> bool:
        return approvals.get(name, False)

    @toolset.tool(requires_approval=needs("ls"))
    async def ls(ctx: RunContext[ConsoleDeps], path: str = ".") -> str:
        """List a directory (default: the working directory): one entry per line, directories end with '/', files
        show their size in bytes."""

        async def run() -> str:
            entries = await ctx.deps.backend.ls_info(path)
            lines = [f"{e.path}/" if e.is_dir else f"{e.path} ({e.size} bytes)" for e in entries[:_MAX_LISTED]]
            if len(entries) > _MAX_LISTED:
                lines.append(f"... [{len(entries) - _MAX_LISTED} more entries not shown]")
            return "\n".join(lines) or f"(directory {clip_echo(path)} is empty)"

        return await _as_text(run, max_output_chars)

    @toolset.tool(requires_approval=needs("read_file"))
    async def read_file(ctx: RunContext[ConsoleDeps], path: str, offset: int = 0, limit: int = 2000) -> str:
        """Read a text file with line numbers. offset is the 0-based first line, limit how many lines."""
        return await _as_text(lambda: ctx.deps.backend.read(path, offset, limit), max_output_chars)

    @toolset.tool(requires_approval=needs("write_file"))
    async def write_file(ctx: RunContext[ConsoleDeps], path: str, content: str) -> str:
        """Create or overwrite a file with content (parent directories are created)."""

        async def run() -> str:
            result = await ctx.deps.backend.write(path, content)
            return result.error or f"Wrote {result.path} ({len(content.encode(errors='surrogatepass')):,} bytes)"

        return await _as_text(run, max_output_chars)

    @toolset.tool(requires_approval=needs("edit_file"))
    async def edit_file(
        ctx: RunContext[ConsoleDeps], path: str, old_string: str, new_string: str, replace_all: bool = False
    ) -> str:
        """Replace old_string (exact text, unique unless replace_all) with new_string in a file."""

        async def run() -> str:
            result = await ctx.deps.backend.edit(path, old_string, new_string, replace_all)
            return result.error or f"Edited {result.path}: {result.occurrences} replacement(s)"

        return await _as_text(run, max_output_chars)

    @toolset.tool(requires_approval=needs("glob"))
    async def glob(ctx: RunContext[ConsoleDeps], pattern: str, path: str = ".") -> str:
        """Find files by glob pattern (*, ?, [abc], ** for any depth, {a,b}) under path (default: the working
        directory)."""

        async def run() -> str:
            found = await ctx.deps.backend.glob_info(pattern, path)
            lines = [info.path for info in found[:_MAX_LISTED]]
            if len(found) > _MAX_LISTED:
                lines.append(f"... [{len(found) - _MAX_LISTED} more files not shown; narrow the pattern]")
            return "\n".join(lines) or f"No files match {clip_echo(pattern)} under {clip_echo(path)}"

        return await _as_text(run, max_output_chars)

    @toolset.tool(requires_approval=needs("grep"))
    async def grep(ctx: RunContext[ConsoleDeps], pattern: str, path: str | None = None, glob: str | None = None) -> str:
        """Search file contents for a regular expression (ripgrep syntax); glob filters file names (*.py)."""

        async def run() -> str:
            found = await ctx.deps.backend.grep_raw(pattern, path, glob)
            if isinstance(found, str):
                return found
            lines = [f"{m.path}:{m.line_number}: {m.line}" for m in found]
            if isinstance(found, GrepMatches) and found.note:
                lines.append(found.note)
            return "\n".join(lines) or f"No matches for {clip_echo(pattern)}"

        return await _as_text(run, max_output_chars)

    async def only_if_executing(ctx: RunContext[ConsoleDeps], definition: ToolDefinition) -> ToolDefinition | None:
        return definition if can_execute(ctx.deps.backend) else None

    if include_execute:

        @toolset.tool(requires_approval=needs("execute"), prepare=only_if_executing)
        async def execute(ctx: RunContext[ConsoleDeps], command: str, timeout: float | None = None) -> str:
            """Run a shell command (sh -c) and return its output and exit code. timeout is in seconds."""

            async def run() -> str:
                backend = ctx.deps.backend
                assert isinstance(backend, SandboxProtocol | CompositeBackend)
                response = await backend.execute(command, timeout if timeout is not None else command_timeout)
                status = "timed out" if response.timed_out else f"exit code {response.exit_code}"
                return f"{response.output.rstrip()}\n[{status}]".lstrip()

            return await _as_text(run, max_output_chars)

    return toolset
