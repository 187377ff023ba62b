"""``agent-backends mcp``: a tool call's round trip over stdio and over streamable HTTP against the same call made
directly, and 20 MCP clients running ``execute`` at once against ``--docker``.

Run: ``python benchmarks/bench_mcp.py [--quick]``. The server runs as a subprocess, as a client would start it; the
direct side calls the same tool implementation (``_tools.TOOLS``) on the same kind of backend in this process.
"""

from __future__ import annotations

import math
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import anyio
import anyio.to_thread
import httpx2
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

from _common import Result, Target, compare_async, parse_args, print_table, warn
from agent_backends import LocalBackend, RuntimeConfig, SessionManager
from agent_backends._tools import TOOLS, ToolEnv

CLIENTS = 20
TOKEN = "bench-" + "t" * 24
IMAGE = "agent-backends-test/busybox:latest"
LABELS = {"agent-backends.bench": "mcp"}
SERVER = [sys.executable, "-m", "agent_backends.cli", "mcp"]
READ = next(spec for spec in TOOLS if spec.name == "read_file")
EXECUTE = next(spec for spec in TOOLS if spec.name == "execute")


@asynccontextmanager
async def _http_server(*args: str) -> AsyncIterator[str]:
    env = {**os.environ, "AGENT_BACKENDS_MCP_TOKEN": TOKEN}
    proc = subprocess.Popen(  # noqa: ASYNC220  # started once, before any timing
        [*SERVER, *args, "--http", "127.0.0.1:0"], stderr=subprocess.PIPE, text=True, env=env
    )
    try:
        assert proc.stderr is not None
        line = ""
        deadline = time.monotonic() + 300
        while "/mcp" not in line:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"the server did not start: {line}")
            line = await anyio.to_thread.run_sync(proc.stderr.readline)
        found = re.search(r"(http://\S+/mcp)", line)
        assert found is not None
        yield found.group(1)
    finally:
        proc.send_signal(signal.SIGTERM)
        await anyio.to_thread.run_sync(proc.wait, 120)
        if proc.stderr is not None:
            proc.stderr.close()


@asynccontextmanager
async def _http_client(url: str) -> AsyncIterator[Client]:
    async with (
        httpx2.AsyncClient(headers={"Authorization": f"Bearer {TOKEN}"}, timeout=httpx2.Timeout(60, read=300)) as http,
        Client(streamable_http_client(url, http_client=http)) as client,
    ):
        yield client


async def _round_trips(quick: bool) -> list[Result]:
    reps = 5 if quick else 15
    calls = 20 if quick else 100
    results: list[Result] = []
    with tempfile.TemporaryDirectory() as root:
        path = f"{root}/module.py"
        with open(path, "w") as file:  # noqa: ASYNC230  # setup, before any timing
            file.write("def f():\n    return 1\n" * 50)
        env = ToolEnv(LocalBackend(root))
        arguments = {"path": path, "limit": 100}

        async def direct() -> Any:
            return await READ(env, READ.validate(arguments))

        params = StdioServerParameters(command=sys.executable, args=[*SERVER[1:], "--dir", root])
        async with Client(params) as client:

            async def over_stdio() -> Any:
                return await client.call_tool("read_file", arguments)

            ours, raw = await compare_async(over_stdio, direct, reps=reps, calls=calls)
        results.append(_overhead("read_file round trip over stdio (per call)", ours, raw, 0.005))

        async with _http_server("--dir", root, "--shared-dir") as url, _http_client(url) as client:

            async def over_http() -> Any:
                return await client.call_tool("read_file", arguments)

            ours, raw = await compare_async(over_http, direct, reps=reps, calls=calls)
        results.append(_overhead("read_file round trip over HTTP (per call)", ours, raw, 0.010))
    return results


def _overhead(case: str, ours: float, raw: float, limit: float) -> Result:
    return Result(case, ours, raw, Target.overhead(limit), note=f"overhead {1000 * (ours - raw):.2f} ms per call")


async def _docker(quick: bool) -> list[Result]:
    runtime = RuntimeConfig(name="bench-mcp", base_image=IMAGE, work_dir="/workspace")
    rounds = 2 if quick else 5
    command = "echo hello from $(hostname)"
    with tempfile.TemporaryDirectory() as ws_ours, tempfile.TemporaryDirectory() as ws_raw:
        label = ",".join(f"{k}={v}" for k, v in LABELS.items())
        args = ("--docker", IMAGE, "--workspace-root", ws_ours, "--label", label, "--max-sessions", str(CLIENTS))
        async with _http_server(*args) as url, AsyncExitStack() as stack:
            clients = [await stack.enter_async_context(_http_client(url)) for _ in range(CLIENTS)]

            async def all_execute() -> float:
                started = time.perf_counter()
                async with anyio.create_task_group() as tg:
                    for client in clients:
                        tg.start_soon(client.call_tool, "execute", {"command": command})
                return time.perf_counter() - started

            cold = await all_execute()  # each session's sandbox starts on its first call
            async with SessionManager(
                runtime, ws_raw, max_sessions=CLIENTS, idle_timeout=None, sandbox_options={"labels": LABELS}
            ) as manager:
                sandboxes = [await manager.get_or_create(f"user{i}") for i in range(CLIENTS)]

                async def all_direct() -> float:
                    started = time.perf_counter()
                    async with anyio.create_task_group() as tg:
                        for sandbox in sandboxes:
                            tg.start_soon(EXECUTE.__call__, ToolEnv(sandbox), {"command": command})
                    return time.perf_counter() - started

                ours_times: list[float] = []
                raw_times: list[float] = []
                await all_execute()
                await all_direct()
                for _ in range(rounds):
                    ours_times.append(await all_execute())
                    raw_times.append(await all_direct())
    ours, raw = sorted(ours_times)[len(ours_times) // 2], sorted(raw_times)[len(raw_times) // 2]
    return [
        Result(
            f"{CLIENTS} MCP clients' execute at once, --docker (wall)",
            ours,
            raw,
            Target.overhead(0.5),
            note=f"overhead {1000 * (ours - raw) / CLIENTS:.2f} ms per call; first round with sandbox starts: "
            f"{cold:.2f} s",
        )
    ]


async def _run(quick: bool) -> list[Result]:
    results = await _round_trips(quick)
    try:
        results += await _docker(quick)
    except Exception as exc:  # no engine, no image
        warn(f"bench_mcp: the --docker case was skipped: {exc}")
    return results


def run(quick: bool = False) -> list[Result]:
    return anyio.run(_run, quick)


def main() -> None:
    args = parse_args(__doc__.splitlines()[0] if __doc__ else "", sys.argv[1:])
    started = time.perf_counter()
    results = run(args.quick)
    print_table(results, "MCP server vs the same tool call made directly (medians)")
    print(f"\n{math.ceil(time.perf_counter() - started)} s")


if __name__ == "__main__":
    main()
