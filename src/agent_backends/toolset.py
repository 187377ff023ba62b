"""The console toolset: the backend's operations as pydantic-ai tools, reading the backend from ``ctx.deps``.

Tool results are plain text a model can act on: listings, ``cat -n`` reads, ``path:line: text`` grep hits, command
output with its exit code. A tool never ends the agent's run: any failure but cancellation comes back as
``"Error: ..."`` text, never a traceback, whatever raised it (this library, a custom backend's ``OSError``, a bug),
and every result, error texts included, is bounded (``max_output_chars``; an error text at most
``_MAX_ERROR_CHARS``). ``execute`` is offered only when the deps' backend can execute. Per-tool approval
(``interrupt_on={"execute": True}``) uses pydantic-ai's deferred tool approvals.

The tools themselves are defined once, in ``_tools.py``; the MCP server (``agent-backends mcp``) serves the same
definitions.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from pydantic_ai import FunctionToolset, RunContext, Tool
from pydantic_ai.tools import ToolDefinition

from agent_backends._tools import CHECKPOINT_TOOLS, TOOLS, ToolEnv, ToolSpec
from agent_backends.console import ConsoleDeps, can_execute

__all__ = ("create_console_toolset",)


def _tool(spec: ToolSpec, requires_approval: bool, max_output_chars: int, command_timeout: float | None) -> Tool[Any]:
    """``spec`` as a pydantic-ai tool on ``ctx.deps.backend``, with ``spec``'s own schema and validator."""

    async def call(ctx: RunContext[ConsoleDeps], **arguments: Any) -> str:
        return await spec(ToolEnv(ctx.deps.backend, max_output_chars, command_timeout), arguments)

    async def only_if_executing(ctx: RunContext[ConsoleDeps], definition: ToolDefinition) -> ToolDefinition | None:
        return definition if can_execute(ctx.deps.backend) else None

    schema = dataclasses.replace(spec.schema, function=call, takes_ctx=True, is_async=True)
    return Tool(
        call,
        takes_ctx=True,
        name=spec.name,
        description=spec.description,
        requires_approval=requires_approval,
        prepare=only_if_executing if spec.needs_execute else None,
        function_schema=schema,
    )


def create_console_toolset(
    *,
    interrupt_on: Mapping[str, bool] | None = None,
    include_execute: bool = True,
    max_output_chars: int = 30_000,
    command_timeout: float | None = None,
    checkpoints: bool = False,
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
        checkpoints: also offer ``checkpoint`` (snapshot every file) and ``rollback`` (restore one).
        toolset_id: the toolset's id.
    """
    specs = TOOLS + (CHECKPOINT_TOOLS if checkpoints else ())
    names = [spec.name for spec in specs]
    approvals = dict(interrupt_on or {})
    unknown = set(approvals) - set(names)
    if unknown:
        raise ValueError(f"interrupt_on names unknown tools {sorted(unknown)}; the tools are {', '.join(names)}")
    toolset: FunctionToolset[ConsoleDeps] = FunctionToolset(id=toolset_id)
    for spec in specs:
        if spec.needs_execute and not include_execute:
            continue
        toolset.add_tool(_tool(spec, approvals.get(spec.name, False), max_output_chars, command_timeout))
    return toolset
