"""The demo: a real pydantic-ai agent loop using the console toolset, each tool call printed as it happens.

Without ``--model`` a scripted ``FunctionModel`` drives it (no network, no API key): it writes a small module with
a bug, runs it, reads it, fixes it with an edit and runs it again. With ``--model openai:gpt-4o`` (its key in the
environment) a real model gets the same task and the same tools.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic_ai import Agent, RunContext
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart, ToolCallPart
from pydantic_ai.models.function import AgentInfo, FunctionModel
from pydantic_ai.toolsets import ToolsetTool, WrapperToolset

from agent_backends.console import ConsoleDeps, DeepAgentDeps, can_execute, get_console_system_prompt, working_dir
from agent_backends.protocol import BackendProtocol
from agent_backends.toolset import create_console_toolset

__all__ = ("TASK", "run_demo")

TASK = (
    "In the workspace, create stats.py with a function mean(values) and a check that prints mean([1, 2, 3, 4]); "
    "run it, fix anything wrong, and report the result."
)
_BUGGY = "def mean(values):\n    return sum(values) / (len(values) - 1)\n\n\nprint('mean:', mean([1, 2, 3, 4]))\n"
_STEPS: list[list[ToolCallPart] | str] = [
    [ToolCallPart("write_file", {"path": "stats.py", "content": _BUGGY})],
    [ToolCallPart("execute", {"command": "python3 stats.py"})],
    [ToolCallPart("read_file", {"path": "stats.py"})],
    [ToolCallPart("edit_file", {"path": "stats.py", "old_string": "(len(values) - 1)", "new_string": "len(values)"})],
    [ToolCallPart("execute", {"command": "python3 stats.py"})],
    [ToolCallPart("grep", {"pattern": r"def \w+"})],
    "stats.py now prints 'mean: 2.5'; the divisor was off by one (len(values) - 1), fixed with one edit.",
]
_STEPS_WITHOUT_EXECUTE: list[list[ToolCallPart] | str] = [
    _STEPS[0],
    _STEPS[2],
    _STEPS[3],
    [ToolCallPart("grep", {"pattern": r"def \w+"})],
    "stats.py is fixed (the divisor was off by one); this backend cannot run it.",
]


def _scripted(executes: bool) -> FunctionModel:
    steps = _STEPS if executes else _STEPS_WITHOUT_EXECUTE

    def respond(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        step = steps[min(sum(isinstance(m, ModelResponse) for m in messages), len(steps) - 1)]
        return ModelResponse(parts=[TextPart(step)] if isinstance(step, str) else list(step))

    return FunctionModel(respond, model_name="scripted-demo")


def _indent(text: str, limit: int = 1200) -> str:
    text = text if len(text) <= limit else f"{text[:limit]}… [{len(text) - limit} more characters]"
    return "\n".join(f"    {line}" for line in text.splitlines()) or "    (nothing)"


@dataclass
class _Narrated(WrapperToolset[ConsoleDeps]):
    """Prints each tool call before it runs and its result after: the agent's work as it happens."""

    async def call_tool(
        self, name: str, tool_args: dict[str, Any], ctx: RunContext[ConsoleDeps], tool: ToolsetTool[ConsoleDeps]
    ) -> Any:
        shown = ", ".join(f"{key}={value!r}" for key, value in tool_args.items())
        print(f"\n>>> {name}({shown if len(shown) < 300 else shown[:300] + '…'})", flush=True)
        result = await super().call_tool(name, tool_args, ctx, tool)
        print(_indent(str(result)), flush=True)
        return result


async def run_demo(backend: BackendProtocol, model: str | None = None) -> str:
    """Run the demo task on ``backend`` and return the agent's final answer."""
    executes = can_execute(backend)
    chosen: Any = model if model is not None else _scripted(executes)
    agent = Agent(
        chosen,
        deps_type=ConsoleDeps,
        toolsets=[_Narrated(create_console_toolset(command_timeout=60))],
        instructions=get_console_system_prompt(can_run_commands=executes, working_dir=working_dir(backend)),
    )
    print(f"task: {TASK}\nmodel: {model or 'scripted (FunctionModel, no API key)'}", flush=True)
    result = await agent.run(TASK, deps=DeepAgentDeps(backend=backend))
    print(f"\nagent: {result.output}", flush=True)
    return str(result.output)
