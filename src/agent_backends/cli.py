"""``agent-backends``: the command line.

``demo`` runs an agent through the console tools (scripted by default: no API key, no Docker); ``tour`` shows the
backends' calls one by one; ``ls``, ``read``, ``grep`` and ``exec`` act once on the host or in a container;
``mcp`` serves the console tools to any MCP client (stdio, or streamable HTTP with a bearer token).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
from collections.abc import AsyncGenerator, Awaitable, Sequence
from pathlib import Path
from typing import Any

import anyio

from agent_backends.backends.composite import CompositeBackend
from agent_backends.backends.docker import DockerSandbox
from agent_backends.backends.filesystem import FilesystemBackend
from agent_backends.backends.local import LocalBackend
from agent_backends.backends.state import StateBackend

__all__ = ("main",)

TOOL_CHOICES = ("ls", "read_file", "write_file", "edit_file", "glob", "grep", "execute")

_SAMPLE = '''"""A tiny module for the tour."""


def greet(name):
    return "Hello, " + name


def farewell(name):
    return "Goodbye, " + name
'''


async def _show(call: str, result: Awaitable[Any]) -> Any:
    value = await result
    shown = value if isinstance(value, str) else repr(value)
    print(f"\n>>> {call}")
    print("\n".join(f"    {line}" for line in str(shown).splitlines()) or "    (nothing)")
    return value


async def _tour(root: Path) -> None:
    print(f"agent-backends tour: a FilesystemBackend rooted at {root}, a StateBackend for /scratch/")
    disk = FilesystemBackend(root)
    await _show('write("/src/greet.py", ...)', disk.write("/src/greet.py", _SAMPLE))
    await _show('read("/src/greet.py", offset=3, limit=3)', disk.read("/src/greet.py", offset=3, limit=3))
    await _show('edit("/src/greet.py", \'"Hello, "\', \'"Hi, "\')', disk.edit("/src/greet.py", '"Hello, "', '"Hi, "'))
    await _show('edit("/src/greet.py", "name", "who")', disk.edit("/src/greet.py", "name", "who"))
    await _show('grep_raw(r"def \\w+", glob="*.py")', disk.grep_raw(r"def \w+", glob="*.py"))
    await _show('read("../etc/passwd")', disk.read("../etc/passwd"))

    backend = CompositeBackend(default=disk, routes={"/scratch/": StateBackend()})
    await _show('composite.write("/scratch/notes.md", ...)', backend.write("/scratch/notes.md", "# notes\n- def x\n"))
    await _show('composite.glob_info("**/*")', backend.glob_info("**/*"))
    await _show('composite.grep_raw("def")', backend.grep_raw("def"))

    virtual = FilesystemBackend(root, virtual_mode=True)
    await _show('virtual.write("/src/greet.py", "overwritten")', virtual.write("/src/greet.py", "overwritten\n"))
    await _show('virtual.read("/src/greet.py")', virtual.read("/src/greet.py"))
    await _show('disk.read("/src/greet.py", limit=2)  # the disk is untouched', disk.read("/src/greet.py", limit=2))
    print("\nDone. Every call above is awaitable; each backend class also has a blocking Sync twin.")


@contextlib.asynccontextmanager
async def _backend(directory: Path | None, image: str | None) -> AsyncGenerator[LocalBackend | DockerSandbox]:
    """The backend commands act on: a container from ``image``, else the host in ``directory`` (or a temp dir)."""
    if image is not None:
        async with DockerSandbox(image, "/workspace") as sandbox:
            yield sandbox
        return
    with contextlib.ExitStack() as stack:
        root = directory or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="agent-backends-demo-")))
        async with LocalBackend(root) as backend:
            print(f"workspace: {root}", flush=True)
            yield backend


async def _one_shot(args: argparse.Namespace) -> int:
    async with _backend(args.dir, args.docker) as backend:
        if args.command == "demo":
            from agent_backends.demo import run_demo

            await run_demo(backend, args.model)
            return 0
        if args.command == "ls":
            for info in await backend.ls_info(args.path):
                print(f"{info.path}/" if info.is_dir else f"{info.path}\t{info.size}")
            return 0
        if args.command == "read":
            print(await backend.read(args.path, args.offset, args.limit))
            return 0
        if args.command == "grep":
            found = await backend.grep_raw(args.pattern, args.path, args.glob)
            if isinstance(found, str):
                print(found, file=sys.stderr)
                return 2
            for match in found:
                print(f"{match.path}:{match.line_number}: {match.line}")
            return 0 if found else 1
        response = await backend.execute(args.shell_command, args.timeout)
        print(response.output, end="")
        return response.exit_code if response.exit_code is not None else 124


def _host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT (e.g. 127.0.0.1:8765), got {text!r}")
    return (host.strip("[]") or "127.0.0.1"), int(port)


def _label(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


async def _serve_mcp(args: argparse.Namespace) -> int:
    from agent_backends.mcp_server import DirPool, DockerPool, MemoryPool, build_server, serve_http, serve_stdio

    with contextlib.ExitStack() as stack:
        pool: Any
        if args.memory:
            pool = MemoryPool()
        elif args.docker is not None:
            from agent_backends.runtime import RuntimeConfig
            from agent_backends.sessions import SessionManager

            root = args.workspace_root or Path(
                stack.enter_context(tempfile.TemporaryDirectory(prefix="agent-backends-mcp-"))
            )
            name = "mcp-" + "".join(c if c.isalnum() or c in "._-" else "-" for c in args.docker.lower())
            runtime = RuntimeConfig(name=name[:100], base_image=args.docker, work_dir="/workspace")
            manager = SessionManager(
                runtime,
                root,
                max_sessions=args.max_sessions,
                idle_timeout=None,  # the server releases idle sessions itself
                wait_for_slot=False,
                sandbox_options={"labels": dict(args.label or [])},
            )
            pool = DockerPool(manager)
        else:
            root = args.dir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="agent-backends-mcp-")))
            pool = DirPool(root, shared=args.shared_dir or args.http is None)
        server = build_server(
            pool,
            approve=args.approve or (),
            max_output_chars=args.max_output_chars,
            command_timeout=args.timeout,
        )
        if args.http is None:
            await serve_stdio(server, pool)
        else:
            host, port = args.http
            await serve_http(server, pool, host=host, port=port, token=args.token, idle_timeout=args.idle_timeout)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``agent-backends`` console script."""
    parser = argparse.ArgumentParser(prog="agent-backends", description="Backends for AI agents: files and code.")
    commands = parser.add_subparsers(dest="command", required=True)
    where = argparse.ArgumentParser(add_help=False)
    where.add_argument("--dir", type=Path, help="work in this directory on the host (default: a temporary one)")
    where.add_argument("--docker", metavar="IMAGE", help="work in a container of this (locally present) image")
    demo = commands.add_parser("demo", parents=[where], help="an agent fixing a bug through the console tools")
    demo.add_argument("--sandbox", choices=["local", "docker"], default="local", help="where the agent works")
    demo.add_argument("--image", default="python:3.12-slim", help="the image for --sandbox docker")
    demo.add_argument("--model", help="a pydantic-ai model name, e.g. openai:gpt-4o (default: scripted, no key)")
    tour = commands.add_parser("tour", help="a tour of the backends' calls on a temporary directory")
    tour.add_argument("--dir", type=Path, help="use this directory instead of a temporary one")
    ls = commands.add_parser("ls", parents=[where], help="list a directory")
    ls.add_argument("path", nargs="?", default=".", help="default: the working directory")
    read = commands.add_parser("read", parents=[where], help="read a file with line numbers")
    read.add_argument("path")
    read.add_argument("--offset", type=int, default=0)
    read.add_argument("--limit", type=int, default=2000)
    grep = commands.add_parser("grep", parents=[where], help="search file contents (ripgrep syntax)")
    grep.add_argument("pattern")
    grep.add_argument("path", nargs="?")
    grep.add_argument("--glob")
    run = commands.add_parser("exec", parents=[where], help="run a shell command")
    run.add_argument("shell_command", metavar="command")
    run.add_argument("--timeout", type=float)
    mcp = commands.add_parser(
        "mcp", parents=[where], help="serve the console tools over MCP (stdio, or streamable HTTP with --http)"
    )
    mcp.add_argument("--memory", action="store_true", help="files in memory (one StateBackend per session)")
    mcp.add_argument(
        "--http", metavar="HOST:PORT", type=_host_port, help="serve streamable HTTP at http://HOST:PORT/mcp"
    )
    mcp.add_argument(
        "--token",
        help="the bearer token HTTP clients must send (default: $AGENT_BACKENDS_MCP_TOKEN, "
        "else one is generated and printed once)",
    )
    mcp.add_argument(
        "--approve",
        action="append",
        metavar="TOOL",
        choices=TOOL_CHOICES,
        help="ask the user (MCP elicitation) before each call of this tool, e.g. execute; repeatable",
    )
    mcp.add_argument(
        "--shared-dir",
        action="store_true",
        help="with --dir over HTTP: every session works in DIR itself (default: DIR/<session id>)",
    )
    mcp.add_argument(
        "--workspace-root",
        type=Path,
        help="with --docker: where each session's workspace directory is kept (default: a temporary one)",
    )
    mcp.add_argument("--max-sessions", type=int, default=50, help="with --docker: sandboxes running at once")
    mcp.add_argument(
        "--label",
        action="append",
        type=_label,
        metavar="KEY=VALUE",
        help="with --docker: a label on every sandbox started; repeatable",
    )
    mcp.add_argument(
        "--idle-timeout",
        type=float,
        default=30 * 60,
        help="over HTTP: seconds without a request after which a session and its sandbox end",
    )
    mcp.add_argument("--timeout", type=float, help="seconds before execute kills a command")
    mcp.add_argument("--max-output-chars", type=int, default=30_000, help="the most text one tool call returns")
    args = parser.parse_args(argv)
    if args.command == "mcp":
        if sum((args.memory, args.dir is not None, args.docker is not None)) > 1:
            parser.error("mcp: choose one of --memory, --dir and --docker")
        return anyio.run(_serve_mcp, args)
    if args.command == "tour":
        if args.dir is not None:
            anyio.run(_tour, args.dir.resolve())
        else:
            with tempfile.TemporaryDirectory(prefix="agent-backends-tour-") as tmp:
                anyio.run(_tour, Path(tmp))
        return 0
    if args.command == "demo" and args.sandbox == "docker" and args.docker is None:
        args.docker = args.image
    return anyio.run(_one_shot, args)


if __name__ == "__main__":
    sys.exit(main())
