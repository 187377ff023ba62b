"""``agent-backends mcp`` with real clients: the official ``mcp`` client over stdio and streamable HTTP, and a
pydantic-ai ``Agent`` through pydantic-ai's own MCP toolset. The server always runs as a subprocess."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import httpx2
import mcp_types as types
import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from pydantic_ai import Agent, RunContext
from pydantic_ai.mcp import MCPToolset
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart, ToolCallPart, ToolReturnPart
from pydantic_ai.models.function import AgentInfo, FunctionModel
from pydantic_ai.models.test import TestModel
from pydantic_ai.usage import RunUsage

from agent_backends import DeepAgentDeps, LocalBackend, create_console_toolset
from agent_backends._tools import TOOL_NAMES
from agent_backends.cli import TOOL_CHOICES
from tests.conftest import BUSYBOX_IMAGE, LABELS, TEST_LABEL, require_docker
from tests.test_toolset import expected_results

pytestmark = pytest.mark.anyio

TOKEN = "test-token-" + "x" * 20
SERVER = [sys.executable, "-m", "agent_backends.cli", "mcp"]


def stdio(*args: str) -> StdioServerParameters:
    return StdioServerParameters(command=sys.executable, args=[*SERVER[1:], *args])


@contextmanager
def http_server(*args: str, token: str | None = TOKEN) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """The server over HTTP on a free port of 127.0.0.1: its process and its URL; always stopped by its pid."""
    env = {k: v for k, v in os.environ.items() if k != "AGENT_BACKENDS_MCP_TOKEN"}
    if token is not None:
        env["AGENT_BACKENDS_MCP_TOKEN"] = token
    proc = subprocess.Popen([*SERVER, *args, "--http", "127.0.0.1:0"], stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stderr is not None
        lines: list[str] = []
        deadline = time.monotonic() + 120
        while not any("/mcp" in line for line in lines):
            assert time.monotonic() < deadline, lines
            assert proc.poll() is None, lines
            lines.append(proc.stderr.readline())
        url = re.search(r"(http://\S+/mcp)", "".join(lines))
        assert url is not None
        proc.announced = lines  # type: ignore[attr-defined]
        yield proc, url.group(1)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        if proc.stderr is not None:
            proc.stderr.close()


@asynccontextmanager
async def http_client(url: str, token: str = TOKEN, **kwargs: Any) -> AsyncIterator[Client]:
    headers = {"Authorization": f"Bearer {token}"}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30, read=300)) as http,
        Client(streamable_http_client(url, http_client=http), **kwargs) as client,
    ):
        yield client


def text(result: types.CallToolResult) -> str:
    block = result.content[0]
    assert isinstance(block, types.TextContent)
    return block.text


async def console_definitions(backend: Any) -> dict[str, tuple[str | None, dict[str, Any]]]:
    toolset = create_console_toolset()
    ctx = RunContext(deps=DeepAgentDeps(backend=backend), model=TestModel(), usage=RunUsage())
    tools = await toolset.get_tools(ctx)
    return {name: (t.tool_def.description, t.tool_def.parameters_json_schema) for name, t in tools.items()}


async def a_session(client: Client, work: str) -> list[str]:
    """The console test's session (write, edit, read, ls, glob, grep, a missing file) through MCP."""
    path = f"{work}/hello.py"
    calls: list[tuple[str, dict[str, Any]]] = [
        ("write_file", {"path": path, "content": "print('hello')\n"}),
        ("edit_file", {"path": path, "old_string": "hello", "new_string": "hi there"}),
        ("read_file", {"path": path}),
        ("ls", {"path": work}),
        ("glob", {"pattern": "**/*.py", "path": work}),
        ("grep", {"pattern": r"print\(", "path": work}),
        ("read_file", {"path": f"{work}/missing.py"}),
    ]
    results: list[str] = []
    for name, arguments in calls:
        result = await client.call_tool(name, arguments)
        assert not result.is_error, text(result)
        results.append(f"{name}: {text(result)}")
    return results


def expected(work: str) -> list[str]:
    """What the console toolset's own session test expects, for a session in ``work`` (``<base>/work``)."""
    return expected_results(work.removesuffix("/work"))


# --- stdio -----------------------------------------------------------------------------------------------------------


async def test_stdio_serves_the_console_tools_with_their_schemas_results_and_errors(tmp_path: Path) -> None:
    assert TOOL_CHOICES == TOOL_NAMES
    async with Client(stdio("--dir", str(tmp_path))) as client:
        listed = {tool.name: (tool.description, tool.input_schema) for tool in (await client.list_tools()).tools}
        assert listed == await console_definitions(LocalBackend(tmp_path)), "one definition, one schema"
        assert await a_session(client, f"{tmp_path}/work") == expected(f"{tmp_path}/work")

        progress: list[str | None] = []

        async def on_progress(done: float, total: float | None, message: str | None) -> None:
            progress.append(message)

        command = "for i in 1 2 3; do echo line $i; sleep 0.2; done; echo oops >&2; exit 3"
        result = await client.call_tool("execute", {"command": command}, progress_callback=on_progress)
        assert text(result) == "line 1\nline 2\nline 3\noops\n[exit code 3]"
        assert "".join(m or "" for m in progress) == "line 1\nline 2\nline 3\noops\n"
        assert len(progress) >= 3, "streamed while it ran, not at the end"

        timed_out = await client.call_tool("execute", {"command": "echo start; sleep 30", "timeout": 0.5})
        assert text(timed_out).startswith("start\n\n[timed out after 0.5 s")
        assert text(timed_out).endswith("[timed out]")

        bad = await client.call_tool("read_file", {"offset": "x"})
        assert bad.is_error
        assert text(bad).startswith("Error: invalid arguments for read_file")
        unknown = await client.call_tool("rm", {})
        assert unknown.is_error
        assert "unknown tool 'rm'" in text(unknown)
        hostile = await client.call_tool("grep", {"pattern": "a\x00b"})
        assert text(hostile).startswith("Error: ")
        assert not hostile.is_error
        huge = await client.call_tool("read_file", {"path": "/" + "p" * 100_000})
        assert text(huge).startswith("Error: ")
        assert len(text(huge)) < 2200


async def test_memory_offers_no_execute() -> None:
    async with Client(stdio("--memory")) as client:
        names = [tool.name for tool in (await client.list_tools()).tools]
        assert names == ["ls", "read_file", "write_file", "edit_file", "glob", "grep"]
        assert await a_session(client, "/work") == expected("/work")


# --- approvals through elicitation -------------------------------------------------------------------------------


async def test_execute_approval_uses_elicitation_and_refuses_clearly_without_it(tmp_path: Path) -> None:
    asked: list[str] = []
    answers = iter(
        [
            types.ElicitResult(action="accept", content={"approve": True}),
            types.ElicitResult(action="accept", content={"approve": False, "reason": "not that one"}),
            types.ElicitResult(action="decline"),
        ]
    )

    async def elicit(context: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
        asked.append(params.message)
        return next(answers)

    async with Client(stdio("--dir", str(tmp_path), "--approve", "execute"), elicitation_callback=elicit) as client:
        ran = await client.call_tool("execute", {"command": "touch ran-1"})
        assert text(ran) == "[exit code 0]"
        denied = await client.call_tool("execute", {"command": "touch ran-2"})
        assert text(denied) == "The user denied this execute call: not that one. It did not run."
        declined = await client.call_tool("execute", {"command": "touch ran-3"})
        assert text(declined) == "The user denied this execute call. It did not run."
        assert (await client.call_tool("write_file", {"path": "free.txt", "content": "x"})).content, "not asked"
    assert len(asked) == 3
    assert "touch ran-1" in asked[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["free.txt", "ran-1"]

    async with Client(stdio("--dir", str(tmp_path), "--approve", "execute")) as client:  # no elicitation support
        refused = await client.call_tool("execute", {"command": "touch ran-4"})
        assert "cannot ask for it (it does not support elicitation); the call did not run" in text(refused)
    assert not (tmp_path / "ran-4").exists()


# --- pydantic-ai's own MCP client ----------------------------------------------------------------------------------


class Script:
    def __init__(self, steps: Sequence[Sequence[ToolCallPart] | str]) -> None:
        self.steps = list(steps)
        self.results: list[str] = []
        self.offered: list[str] = []

    def __call__(self, messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        self.offered = sorted(tool.name for tool in info.function_tools)
        for part in messages[-1].parts:
            if isinstance(part, ToolReturnPart):
                self.results.append(f"{part.tool_name}: {part.content}")
        step = self.steps[sum(isinstance(m, ModelResponse) for m in messages)]
        return ModelResponse(parts=[TextPart(step)] if isinstance(step, str) else list(step))


def agent_steps(work: str) -> list[Sequence[ToolCallPart] | str]:
    path = f"{work}/hello.py"
    return [
        [ToolCallPart("write_file", {"path": path, "content": "print('hello')\n"})],
        [ToolCallPart("edit_file", {"path": path, "old_string": "hello", "new_string": "hi there"})],
        [ToolCallPart("read_file", {"path": path}), ToolCallPart("ls", {"path": work})],
        [ToolCallPart("glob", {"pattern": "**/*.py", "path": work}), ToolCallPart("grep", {"pattern": r"print\("})],
        [ToolCallPart("read_file", {"path": f"{work}/missing.py"})],
        [ToolCallPart("execute", {"command": f"python3 {path}"})],
        "done",
    ]


@pytest.mark.parametrize("transport", ["stdio", "http"])
async def test_a_pydantic_ai_agent_works_through_pydantic_ais_mcp_client(transport: str, tmp_path: Path) -> None:
    from fastmcp.client.transports import StdioTransport

    async def run(toolset: MCPToolset[Any], work: str) -> Script:
        script = Script(agent_steps(work))
        agent = Agent(FunctionModel(script), toolsets=[toolset])
        assert (await agent.run("fix it")).output == "done"
        return script

    if transport == "stdio":
        work = f"{tmp_path}/work"
        script = await run(MCPToolset(StdioTransport(sys.executable, [*SERVER[1:], "--dir", str(tmp_path)])), work)
    else:
        with http_server("--dir", str(tmp_path)) as (_, url):
            toolset: MCPToolset[Any] = MCPToolset(url, headers={"Authorization": f"Bearer {TOKEN}"})
            script = await run(toolset, "work")
        (session,) = list(tmp_path.iterdir())
        work = f"{session}/work"
    assert script.offered == sorted(TOOL_NAMES)
    want = expected(work)
    if transport == "http":
        want = [line.replace(f"'{work}/missing", f"'{session}/work/missing") for line in want]
    assert script.results == [*want, "execute: hi there\n[exit code 0]"]


# --- HTTP: tokens, isolation, sessions ------------------------------------------------------------------------


async def test_http_refuses_missing_and_wrong_tokens_and_touches_nothing(tmp_path: Path) -> None:
    initialize = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
    }
    headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
    with http_server("--dir", str(tmp_path)) as (_, url):
        async with httpx2.AsyncClient(timeout=30) as http:
            for auth in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}, {"Authorization": "Basic x"}):
                response = await http.post(url, json=initialize, headers={**headers, **auth})
                assert response.status_code == 401, auth
                assert "mcp-session-id" not in response.headers
                assert response.headers["www-authenticate"].startswith("Bearer")
            response = await http.post(url, json=initialize, headers={**headers, "Authorization": f"Bearer {TOKEN}"})
            assert response.status_code == 200
            assert response.headers["mcp-session-id"]
        with pytest.raises(Exception):  # noqa: B017  # the official client's way of saying 401
            async with http_client(url, token="wrong") as client:
                await client.list_tools()
    assert list(tmp_path.iterdir()) == [], "no session directory was made"


async def test_a_generated_token_is_printed_once_and_required(tmp_path: Path) -> None:
    with http_server("--memory", token=None) as (proc, url):
        announced = "".join(proc.announced)  # type: ignore[attr-defined]
        found = re.search(r"bearer token \(shown once\): (\S+)", announced)
        assert found is not None
        async with http_client(url, token=found.group(1)) as client:
            assert len((await client.list_tools()).tools) == 6


async def test_two_http_clients_never_see_each_others_files(tmp_path: Path) -> None:
    with http_server("--memory") as (_, url):
        async with http_client(url) as alice, http_client(url) as bob:
            async with anyio.create_task_group() as tg:
                tg.start_soon(alice.call_tool, "write_file", {"path": "/alice.txt", "content": "a secret"})
                tg.start_soon(bob.call_tool, "write_file", {"path": "/bob.txt", "content": "b secret"})
            assert text(await alice.call_tool("ls", {"path": "/"})) == "/alice.txt (8 bytes)"
            assert text(await bob.call_tool("ls", {"path": "/"})) == "/bob.txt (8 bytes)"
            assert text(await alice.call_tool("read_file", {"path": "/bob.txt"})) == "Error: '/bob.txt' does not exist"
            assert text(await bob.call_tool("grep", {"pattern": "secret"})) == "/bob.txt:1: b secret"
        async with http_client(url) as carol:  # a new session: a new, empty backend
            assert text(await carol.call_tool("ls", {"path": "/"})) == "(directory '/' is empty)"


async def test_dir_sessions_get_their_own_directory_and_shared_dir_shares(tmp_path: Path) -> None:
    with http_server("--dir", str(tmp_path / "own")) as (_, url):
        async with http_client(url) as alice, http_client(url) as bob:
            await alice.call_tool("write_file", {"path": "a.txt", "content": "a"})
            await bob.call_tool("write_file", {"path": "b.txt", "content": "b"})
            (a_dir, b_dir) = sorted(p for p in (tmp_path / "own").iterdir())
            assert {f.name for d in (a_dir, b_dir) for f in d.iterdir()} == {"a.txt", "b.txt"}
            other = b_dir if (a_dir / "a.txt").exists() else a_dir
            leaked = await alice.call_tool("read_file", {"path": f"{other}/b.txt"})
            assert text(leaked).startswith("Error: "), "the file tools stay under the session's directory"
    with http_server("--dir", str(tmp_path / "shared"), "--shared-dir") as (_, url):
        async with http_client(url) as alice, http_client(url) as bob:
            await alice.call_tool("write_file", {"path": "a.txt", "content": "a"})
            assert text(await bob.call_tool("read_file", {"path": "a.txt"})) == "     1\ta"


# --- a client that goes away mid-execute -----------------------------------------------------------------------

CLIENT = """
import anyio, httpx2, sys
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

async def main(target, command):
    if target.startswith("http"):
        http = httpx2.AsyncClient(headers={{"Authorization": "Bearer {token}"}}, timeout=httpx2.Timeout(30, read=300))
        client = Client(streamable_http_client(target, http_client=http))
    else:
        client = Client(StdioServerParameters(command=sys.executable, args={server!r} + ["--dir", target]))
    async with client:
        print("calling", flush=True)
        await client.call_tool("execute", {{"command": command}})

anyio.run(main, sys.argv[1], sys.argv[2])
"""


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(")")[-1].split()[0] == "Z")


async def wait_for(condition: Any, what: str, seconds: float = 60) -> None:
    with anyio.fail_after(seconds):
        while not condition():
            await anyio.sleep(0.05)


@pytest.mark.parametrize("transport", ["stdio", "http"])
async def test_a_client_that_disconnects_mid_execute_gets_its_command_killed(transport: str, tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    script = CLIENT.format(token=TOKEN, server=SERVER[1:])
    command = f"sh -c 'echo $$ > {pid_file}; exec sleep 300' & wait"
    with (
        http_server("--dir", str(tmp_path), "--shared-dir") if transport == "http" else _no_server(tmp_path) as (
            _,
            target,
        )
    ):
        client = subprocess.Popen([sys.executable, "-c", script, target, command])  # noqa: ASYNC220
        try:
            await wait_for(lambda: pid_file.exists() and pid_file.read_text().strip(), "the command started")
            pid = int(pid_file.read_text())
            assert alive(pid)
            client.kill()  # no goodbye: the connection just drops
            client.wait(30)
            await wait_for(lambda: not alive(pid), "the command was killed")
        finally:
            if client.poll() is None:
                client.kill()
                client.wait(30)


@contextmanager
def _no_server(tmp_path: Path) -> Iterator[tuple[None, str]]:
    yield None, str(tmp_path)


# --- Docker: a sandbox per session, and none left after SIGTERM --------------------------------------------------


def sandboxes() -> list[str]:
    done = subprocess.run(
        ["docker", "ps", "-aq", "--filter", f"label={TEST_LABEL}={LABELS[TEST_LABEL]}"],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.split()


async def test_docker_sessions_are_isolated_and_sigterm_removes_every_sandbox(tmp_path: Path) -> None:
    require_docker()
    label = f"{TEST_LABEL}={LABELS[TEST_LABEL]}"
    args = ("--docker", BUSYBOX_IMAGE, "--workspace-root", str(tmp_path), "--label", label)
    with http_server(*args) as (proc, url):
        async with http_client(url) as alice, http_client(url) as bob:
            async with anyio.create_task_group() as tg:
                tg.start_soon(alice.call_tool, "execute", {"command": "echo a > a.txt; sleep 300 >/dev/null &"})
                tg.start_soon(bob.call_tool, "write_file", {"path": "/workspace/b.txt", "content": "b"})
            assert len(sandboxes()) == 2
            assert text(await bob.call_tool("ls", {"path": "/workspace"})) == "/workspace/b.txt (1 bytes)"
            assert "sleep 300" not in text(await bob.call_tool("execute", {"command": "ps"}))
            assert text(await alice.call_tool("read_file", {"path": "/workspace/b.txt"})).startswith("Error: ")
            proc.send_signal(signal.SIGTERM)
            assert await anyio.to_thread.run_sync(proc.wait, 120) == 0
    assert sandboxes() == []


async def test_docker_sandboxes_go_when_the_session_ends_or_idles(tmp_path: Path) -> None:
    require_docker()
    label = f"{TEST_LABEL}={LABELS[TEST_LABEL]}"
    args = ("--docker", BUSYBOX_IMAGE, "--workspace-root", str(tmp_path), "--label", label, "--idle-timeout", "2")
    with http_server(*args) as (_, url):
        async with http_client(url) as client:  # leaving sends DELETE: the session ends
            await client.call_tool("execute", {"command": "true"})
            assert len(sandboxes()) == 1
        await wait_for(lambda: sandboxes() == [], "the ended session's sandbox is removed")
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with (
            httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30, read=300)) as http,
            Client(streamable_http_client(url, http_client=http, terminate_on_close=False)) as client,
        ):  # leaves without ending its session: the session idles
            await client.call_tool("write_file", {"path": "kept.txt", "content": "files outlive the sandbox"})
            assert len(sandboxes()) == 1
        await wait_for(lambda: sandboxes() == [], "the idle session's sandbox is removed")
    kept = [path.read_text() for path in tmp_path.glob("*/kept.txt")]
    assert kept == ["files outlive the sandbox"], "a session's workspace stays"


async def test_streamed_execute_gives_the_same_result_as_execute(tmp_path: Path) -> None:
    from agent_backends._tools import TOOLS, ToolEnv

    execute = next(spec for spec in TOOLS if spec.name == "execute")
    seen: list[str] = []

    async def on_output(text: str) -> None:
        seen.append(text)

    async with LocalBackend(tmp_path, max_output_chars=200) as backend:
        for arguments in (
            {"command": "printf 'a%.0s' $(seq 1 500); echo; echo err >&2; exit 4"},
            {"command": "echo before; sleep 30", "timeout": 0.3},
            {"command": "echo a\x00b"},
        ):
            plain = await execute(ToolEnv(backend), dict(arguments))
            streamed = await execute(ToolEnv(backend, on_output=on_output), dict(arguments))
            assert streamed == plain, arguments
    assert "".join(seen).startswith("a" * 500)
