"""The console toolset driven by a real pydantic-ai ``Agent``: a scripted ``FunctionModel`` calls the tools."""

from __future__ import annotations

import errno
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

import anyio
import pytest
from pydantic import ValidationError
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
    FileInfo,
    LocalBackend,
    SearchError,
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


def session_at(base: str) -> list[Step]:
    """A session on ``{base}/work``: ``base`` is where the backend's paths start (a ``LocalBackend``'s root_dir)."""
    work = f"{base}/work"
    return [
        [call("write_file", path=f"{work}/hello.py", content="print('hello')\n")],
        [call("edit_file", path=f"{work}/hello.py", old_string="hello", new_string="hi there")],
        [call("read_file", path=f"{work}/hello.py"), call("ls", path=work)],
        [call("glob", pattern="**/*.py", path=work), call("grep", pattern=r"print\(", path=work)],
        [call("read_file", path=f"{work}/missing.py")],
        "done",
    ]


SESSION = session_at("")


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
    steps = [*session_at(str(tmp_path))[:-1], [call("execute", command="python3 work/hello.py; exit 3")], "done"]
    async with LocalBackend(tmp_path) as backend:
        script = await run_session(backend, steps)
    assert "execute" in script.offered[0]
    assert script.results[:-1] == expected_results(str(tmp_path))  # host paths: the shell's paths too
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
            [call("ls", path="nowhere")],
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
    assert ls == f"ls: Error: '{tmp_path}/nowhere' does not exist"
    assert read.startswith("read_file: Error: path '../etc/passwd' is refused")


def test_system_prompt_and_approval_names() -> None:
    assert "execute" in get_console_system_prompt()
    assert "execute" not in get_console_system_prompt(can_run_commands=False)
    with pytest.raises(ValueError, match="unknown tools"):
        create_console_toolset(interrupt_on={"rm": True})


# --- hostile arguments and failing backends: the run goes on, every result is bounded "Error: ..." text ----------

LIMIT = 5000
HUGE_PATH = "/" + "p" * 100_000 + "\x00.txt"


def raw(tool: str, arguments: dict[str, Any] | str) -> ToolCallPart:
    """A tool call whose arguments arrive as the JSON text a model sends (NaN and 1e400 included)."""
    return ToolCallPart(tool, arguments if isinstance(arguments, str) else json.dumps(arguments))


HOSTILE_FILES: list[ToolCallPart] = [
    raw("grep", {"pattern": "a\x00b"}),
    raw("grep", {"pattern": "(" * 600 + "a" + ")" * 600}),
    raw("grep", {"pattern": "(" + "x" * 200_000}),
    raw("grep", {"pattern": "needle", "glob": "*" + "g" * 200_000}),
    raw("grep", {"pattern": "needle", "path": HUGE_PATH}),
    raw("glob", {"pattern": "*" + "g" * 200_000}),
    raw("glob", {"pattern": "**/*", "path": HUGE_PATH}),
    raw("read_file", {"path": HUGE_PATH}),
    raw("read_file", {"path": "/notes.txt", "offset": -5}),
    raw("write_file", {"path": HUGE_PATH, "content": "x"}),
    raw("edit_file", {"path": HUGE_PATH, "old_string": "a", "new_string": "b"}),
    raw("ls", {"path": HUGE_PATH}),
]
HOSTILE_COMMANDS: list[ToolCallPart] = [
    raw("execute", {"command": "echo a\x00b"}),
    raw("execute", {"command": "echo " + "c" * 200_000}),
    raw("execute", '{"command": "echo nan", "timeout": NaN}'),
    raw("execute", {"command": "echo nan", "timeout": "NaN"}),
    raw("execute", {"command": "echo negative", "timeout": -1}),
    raw("execute", {"command": "echo minus infinity", "timeout": "-Infinity"}),
]


def assert_bounded_errors(script: Script, calls: Sequence[ToolCallPart]) -> None:
    assert len(script.results) == len(calls), script.results
    for call, result in zip(calls, script.results, strict=True):
        assert result.startswith(f"{call.tool_name}: Error: "), (call.args_as_dict(), result[:300])
        assert len(result) < 2200, "an error text echoes no 100 KB argument back"


@pytest.mark.parametrize("kind", ["state", "local", "composite", "docker"])
async def test_hostile_arguments_come_back_as_short_errors_and_the_run_goes_on(kind: str, tmp_path: Path) -> None:
    calls = HOSTILE_FILES + ([] if kind == "state" else HOSTILE_COMMANDS)
    script = Script([*([c] for c in calls), [raw("execute", '{"command": "echo fine", "timeout": 1e400}')], "done"])
    agent = Agent(
        FunctionModel(script), deps_type=ConsoleDeps, toolsets=[create_console_toolset(max_output_chars=LIMIT)]
    )
    backends: dict[str, Callable[[], Any]] = {
        "state": StateBackend,
        "local": lambda: LocalBackend(tmp_path),
        "composite": lambda: CompositeBackend(LocalBackend(tmp_path), routes={"/mem": StateBackend()}),
        "docker": lambda: DockerSandbox(BUSYBOX_IMAGE, "/", labels=LABELS),
    }
    if kind == "docker":
        require_docker()
    async with backends[kind]() as backend:
        await backend.write("/notes.txt", "needle\n" * 50_000)
        result = await agent.run("be hostile", deps=DeepAgentDeps(backend=backend))
    assert result.output == "done"
    last = script.results.pop()
    assert_bounded_errors(script, calls)
    if kind == "state":
        assert "Unknown tool name" in last, "a StateBackend agent is not offered execute"
    else:
        assert last == "execute: fine\n[exit code 0]", "a timeout of 1e400 is infinity: no limit"


async def test_large_results_are_bounded_too(tmp_path: Path) -> None:
    long_name = "n" * 200 + ".txt"
    calls = [
        raw("write_file", {"path": "big.txt", "content": "needle and more\n" * 50_000}),
        raw("read_file", {"path": "big.txt"}),
        raw("grep", {"pattern": "needle"}),
        raw("grep", {"pattern": "z" * 200_000}),
        raw("write_file", {"path": long_name, "content": "x"}),
        raw("glob", {"pattern": "z" * 8000}),
    ]
    script = Script([*([c] for c in calls), "done"])
    agent = Agent(
        FunctionModel(script), deps_type=ConsoleDeps, toolsets=[create_console_toolset(max_output_chars=LIMIT)]
    )
    async with LocalBackend(tmp_path) as backend:
        assert (await agent.run("go", deps=DeepAgentDeps(backend=backend))).output == "done"
    wrote, read, grep, no_match, named, no_file = script.results
    assert wrote == f"write_file: Wrote {tmp_path}/big.txt (800,000 bytes)"
    assert len(read) < LIMIT + 100
    assert "characters of output omitted" in read
    assert len(grep) < LIMIT + 100
    assert no_match.startswith("grep: No matches for 'zzz")
    assert len(no_match) < 400, "the pattern is not echoed back whole"
    assert named == f"write_file: Wrote {tmp_path}/{long_name} (1 bytes)"
    assert no_file.startswith("glob: No files match 'zzz")
    assert len(no_file) < 400


class Failing:
    """A custom backend (one by shape alone) whose every method raises ``error``, as a network store might."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    @property
    def id(self) -> str:
        return "failing"

    async def ls_info(self, path: str = "/") -> Any:
        raise self.error

    async def read(self, path: str, offset: int = 0, limit: int = 2000) -> Any:
        raise self.error

    async def write(self, path: str, content: str | bytes) -> Any:
        raise self.error

    async def edit(self, path: str, old_string: str, new_string: str, replace_all: bool = False) -> Any:
        raise self.error

    async def glob_info(self, pattern: str, path: str = "/") -> Any:
        raise self.error

    async def grep_raw(self, pattern: str, path: str | None = None, glob: str | None = None) -> Any:
        raise self.error

    async def exists(self, path: str) -> Any:
        raise self.error

    async def read_bytes(self, path: str) -> Any:
        raise self.error

    async def delete(self, path: str, *, recursive: bool = False) -> Any:
        raise self.error

    async def upload_files(self, files: Any) -> Any:
        raise self.error

    async def download_files(self, paths: Any) -> Any:
        raise self.error

    async def execute(self, command: str, timeout: float | None = None, **options: Any) -> Any:
        raise self.error


def _validation_error() -> Exception:
    try:
        FileInfo.model_validate({"path": 3})
    except ValidationError as exc:
        return exc
    raise AssertionError("unreachable")


FAILURES: dict[str, tuple[Exception, str]] = {
    "OSError": (OSError(errno.EIO, "Input/output error"), "Error: OSError: [Errno 5] Input/output error"),
    "RuntimeError, 250 KB": (RuntimeError("boom " * 50_000), "Error: RuntimeError: boom boom"),
    "ValueError, no message": (ValueError(), "Error: ValueError"),
    "KeyError": (KeyError("gone"), "Error: KeyError: 'gone'"),
    "ExceptionGroup": (
        ExceptionGroup("two", [OSError("disk"), TimeoutError("net")]),
        "Error: OSError: disk; TimeoutError: net",
    ),
    "pydantic ValidationError": (_validation_error(), "Error: ValidationError: "),
    "ours": (SearchError("the index is down"), "Error: the index is down"),
}
EVERY_TOOL = [
    raw("ls", {}),
    raw("read_file", {"path": "/a"}),
    raw("write_file", {"path": "/a", "content": "x"}),
    raw("edit_file", {"path": "/a", "old_string": "x", "new_string": "y"}),
    raw("glob", {"pattern": "*"}),
    raw("grep", {"pattern": "x"}),
    raw("execute", {"command": "true"}),
]


@pytest.mark.parametrize("name", list(FAILURES))
async def test_any_exception_from_a_backend_is_error_text_and_the_run_goes_on(name: str) -> None:
    error, start = FAILURES[name]
    script = Script([*([c] for c in EVERY_TOOL), "done"])
    agent = Agent(
        FunctionModel(script), deps_type=ConsoleDeps, toolsets=[create_console_toolset(max_output_chars=LIMIT)]
    )
    result = await agent.run("go", deps=DeepAgentDeps(backend=cast(Any, Failing(error))))
    assert result.output == "done"
    assert "execute" in script.offered[0], "a backend with execute and id is a sandbox by shape"
    assert_bounded_errors(script, EVERY_TOOL)
    for call, text in zip(EVERY_TOOL, script.results, strict=True):
        assert text.startswith(f"{call.tool_name}: {start}"), text[:200]


async def test_cancellation_is_never_turned_into_text() -> None:
    script = Script([[raw("read_file", {"path": "/a"})], "done"])
    agent = Agent(FunctionModel(script), deps_type=ConsoleDeps, toolsets=[create_console_toolset()])
    backend = Failing(cast(Exception, anyio.get_cancelled_exc_class()()))
    with pytest.raises(anyio.get_cancelled_exc_class()):
        await agent.run("go", deps=DeepAgentDeps(backend=cast(Any, backend)))
    assert script.results == [], "the model never saw the cancellation as a tool result"
