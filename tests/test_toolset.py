"""The console toolset driven by a real pydantic-ai ``Agent``: a scripted ``FunctionModel`` calls the tools."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from pydantic_ai import Agent, DeferredToolRequests, DeferredToolResults, ToolDenied
from pydantic_ai.messages import (
    ModelMessage,
    ModelResponse,
    RetryPromptPart,
    TextPart,
    ToolCallPart,
    ToolReturnPart,
)
from pydantic_ai.models.function import AgentInfo, FunctionModel

from agent_backends import (
    CompositeBackend,
    ConsoleDeps,
    DeepAgentDeps,
    DockerSandbox,
    LocalBackend,
    StateBackend,
    create_console_toolset,
    get_console_system_prompt,
)
from tests.conftest import BUSYBOX_IMAGE, LABELS, require_docker

pytestmark = pytest.mark.anyio

Step = Sequence[ToolCallPart] | str


class Script:
    """A model that plays fixed steps and records what it was shown: the tools offered and every tool result."""

    def __init__(self, steps: Sequence[Step]) -> None:
        self.steps = list(steps)
        self.results: list[str] = []
        self.offered: list[list[str]] = []

    def __call__(self, messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        self.offered.append(sorted(tool.name for tool in info.function_tools))
        for part in messages[-1].parts:
            if isinstance(part, ToolReturnPart):
                self.results.append(f"{part.tool_name}: {part.content}")
            elif isinstance(part, RetryPromptPart):
                self.results.append(f"{part.tool_name}: retry: {part.content}")
        step = self.steps[sum(isinstance(m, ModelResponse) for m in messages)]
        return ModelResponse(parts=[TextPart(step)] if isinstance(step, str) else list(step))


def call(tool: str, **args: Any) -> ToolCallPart:
    return ToolCallPart(tool, args)


SESSION: list[Step] = [
    [call("write_file", path="/work/hello.py", content="print('hello')\n")],
    [call("edit_file", path="/work/hello.py", old_string="hello", new_string="hi there")],
    [call("read_file", path="/work/hello.py"), call("ls", path="/work")],
    [call("glob", pattern="**/*.py", path="/work"), call("grep", pattern=r"print\(", path="/work")],
    [call("read_file", path="/work/missing.py")],
    "done",
]


async def run_session(backend: Any, steps: Sequence[Step]) -> Script:
    script = Script(steps)
    agent = Agent(FunctionModel(script), deps_type=ConsoleDeps, toolsets=[create_console_toolset()])
    result = await agent.run("work on the project", deps=DeepAgentDeps(backend=backend))
    assert result.output == "done"
    return script


def expected_results(base: str) -> list[str]:
    path = f"{base}/work/hello.py"
    return [
        f"write_file: Wrote {path} (15 bytes)",
        f"edit_file: Edited {path}: 1 replacement(s)",
        "read_file:      1\tprint('hi there')",
        f"ls: {path} (18 bytes)",
        f"glob: {path}",
        f"grep: {path}:1: print('hi there')",
        f"read_file: Error: '{base}/work/missing.py' does not exist",
    ]


async def test_state_backend_session_without_execute() -> None:
    backend = StateBackend()
    script = await run_session(backend, SESSION)
    assert script.results == expected_results("")
    assert "execute" not in script.offered[0], "a backend that cannot run commands is not offered execute"
    assert backend.files["/work/hello.py"].content == b"print('hi there')\n"


async def test_local_backend_session_runs_commands(tmp_path: Path) -> None:
    steps = [*SESSION[:-1], [call("execute", command="python3 work/hello.py; exit 3")], "done"]
    async with LocalBackend(tmp_path) as backend:
        script = await run_session(backend, steps)
    assert "execute" in script.offered[0]
    assert script.results[:-1] == expected_results("")
    assert script.results[-1] == "execute: hi there\n[exit code 3]"
    assert (tmp_path / "work" / "hello.py").read_text() == "print('hi there')\n"


async def test_composite_backend_routes_and_executes_on_its_default(tmp_path: Path) -> None:
    scratch = StateBackend()
    async with CompositeBackend(LocalBackend(tmp_path), routes={"/scratch": scratch}) as backend:
        steps: list[Step] = [
            [call("write_file", path="/scratch/note.md", content="todo\n")],
            [call("grep", pattern="todo", path="/")],
            [call("execute", command="ls scratch 2>&1 || echo not-on-disk")],
            "done",
        ]
        script = await run_session(backend, steps)
    assert script.results[:2] == ["write_file: Wrote /scratch/note.md (5 bytes)", "grep: /scratch/note.md:1: todo"]
    assert script.results[2].endswith("not-on-disk\n[exit code 0]"), "commands run on the default (disk) backend"
    assert set(scratch.files) == {"/note.md"}


async def test_docker_sandbox_session() -> None:
    require_docker()
    async with DockerSandbox(BUSYBOX_IMAGE, "/", labels=LABELS) as sandbox:
        steps = [*SESSION[:-1], [call("execute", command="cat /work/hello.py; echo $((6 * 7))")], "done"]
        script = await run_session(sandbox, steps)
    assert script.results[:-1] == expected_results("")
    assert script.results[-1] == "execute: print('hi there')\n42\n[exit code 0]"


async def run_with_approval(tmp_path: Path, decide: Callable[[ToolCallPart], bool | ToolDenied]) -> list[str]:
    script = Script([[call("execute", command="touch approved.txt && echo ran")], "finished"])
    agent = Agent(
        FunctionModel(script),
        deps_type=ConsoleDeps,
        toolsets=[create_console_toolset(interrupt_on={"execute": True})],
        output_type=[str, DeferredToolRequests],
    )
    async with LocalBackend(tmp_path) as backend:
        deps = DeepAgentDeps(backend=backend)
        first = await agent.run("touch a file", deps=deps)
        assert isinstance(first.output, DeferredToolRequests), "execute waits for approval"
        assert [c.tool_name for c in first.output.approvals] == ["execute"]
        assert not (tmp_path / "approved.txt").exists()
        decisions = DeferredToolResults(approvals={c.tool_call_id: decide(c) for c in first.output.approvals})
        second = await agent.run(message_history=first.all_messages(), deferred_tool_results=decisions, deps=deps)
    assert second.output == "finished"
    return script.results


async def test_execute_runs_once_approved(tmp_path: Path) -> None:
    results = await run_with_approval(tmp_path, lambda _: True)
    assert results == ["execute: ran\n[exit code 0]"]
    assert (tmp_path / "approved.txt").exists()


async def test_a_denied_command_never_runs_and_the_model_is_told(tmp_path: Path) -> None:
    results = await run_with_approval(tmp_path, lambda _: ToolDenied("not on this machine"))
    assert results == ["execute: not on this machine"]
    assert not (tmp_path / "approved.txt").exists()


async def test_long_outputs_are_bounded_and_errors_are_text(tmp_path: Path) -> None:
    script = Script(
        [
            [call("execute", command="yes line | head -c 200000")],
            [call("grep", pattern="a(")],
            [call("ls", path="/nowhere")],
            [call("read_file", path="../etc/passwd")],
            "done",
        ]
    )
    agent = Agent(
        FunctionModel(script), deps_type=ConsoleDeps, toolsets=[create_console_toolset(max_output_chars=5000)]
    )
    async with LocalBackend(tmp_path) as backend:
        await agent.run("go", deps=DeepAgentDeps(backend=backend))
    executed, grep, ls, read = script.results
    assert len(executed) < 5300
    assert "characters of output omitted" in executed
    assert executed.endswith("[exit code 0]")
    assert grep.startswith("grep: Error: invalid regex 'a('")
    assert ls == "ls: Error: '/nowhere' does not exist"
    assert read.startswith("read_file: Error: path '../etc/passwd' is refused")


def test_system_prompt_and_approval_names() -> None:
    assert "execute" in get_console_system_prompt()
    assert "execute" not in get_console_system_prompt(can_run_commands=False)
    with pytest.raises(ValueError, match="unknown tools"):
        create_console_toolset(interrupt_on={"rm": True})
