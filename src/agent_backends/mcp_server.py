"""``agent-backends mcp``: the console tools over the Model Context Protocol, for any MCP client.

Built on the official ``mcp`` SDK's low-level ``Server``: the tools are ``_tools.TOOLS``, the same definitions the
pydantic-ai console toolset is built from, so names, argument schemas, descriptions, results and error texts are
the same. ``execute`` streams its output as progress notifications while it runs.

Over stdio there is one client and one backend. Over streamable HTTP every MCP session gets its own backend (a
``StateBackend``, a ``LocalBackend`` on ``DIR/<session id>``, or a sandbox from a ``SessionManager``), released when
the session ends (``DELETE``) or stays idle; every request needs the bearer token. Sessions are what isolation is
keyed by, so the server speaks the protocol revisions that have them (the ``initialize`` handshake, 2024-11-05 to
2025-11-25): a client that first tries the sessionless 2026-07-28 revision is told so and falls back.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import os
import secrets
import signal
import sys
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, Awaitable, Callable, Generator, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import anyio
import anyio.to_thread
import mcp_types as types
from mcp.server import Server, ServerRequestContext
from mcp.shared.exceptions import MCPError
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS
from pydantic import ValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from agent_backends._tools import TOOL_NAMES, TOOLS, ToolEnv, ToolSpec, _cut_middle  # pyright: ignore[reportPrivateUsage]
from agent_backends.backends.local import LocalBackend
from agent_backends.backends.state import StateBackend
from agent_backends.console import get_console_system_prompt
from agent_backends.protocol import BackendProtocol

__all__ = (
    "TOKEN_ENV",
    "BackendPool",
    "DirPool",
    "DockerPool",
    "MemoryPool",
    "build_server",
    "serve_http",
    "serve_stdio",
)

TOKEN_ENV = "AGENT_BACKENDS_MCP_TOKEN"
STDIO_SESSION = "stdio"
_SESSION_HEADER = "mcp-session-id"
_VERSION_HEADER = "mcp-protocol-version"
_DISCONNECTED = "agent_backends.disconnected"  # scope key: an event set when the HTTP client goes away
_log = logging.getLogger("agent_backends.mcp")


# --- one backend per session ----------------------------------------------------------------------------------------


class BackendPool(ABC):
    """The backends a server hands out, one per session key; released when the session ends."""

    can_execute: bool = False
    working_dir: str = "/"

    def __init__(self) -> None:
        self._locks: dict[str, anyio.Lock] = {}

    @abstractmethod
    async def _open(self, key: str) -> BackendProtocol: ...

    @abstractmethod
    async def _close(self, key: str) -> None: ...

    @abstractmethod
    def sessions(self) -> list[str]:
        """The sessions holding a backend now."""

    async def get(self, key: str) -> BackendProtocol:
        """The session's backend, made on first use (concurrent first calls make one)."""
        async with self._locks.setdefault(key, anyio.Lock()):
            return await self._open(key)

    async def release(self, key: str) -> None:
        """Close the session's backend (its processes are killed); nothing happens if it has none."""
        async with self._locks.setdefault(key, anyio.Lock()):
            with anyio.CancelScope(shield=True):
                await self._close(key)
        self._locks.pop(key, None)

    async def aclose(self) -> None:
        """Release every session's backend."""
        with anyio.CancelScope(shield=True):
            async with anyio.create_task_group() as tg:
                for key in self.sessions():
                    tg.start_soon(self.release, key)


class MemoryPool(BackendPool):
    """A ``StateBackend`` per session: files in memory, no commands; a released session's files are gone."""

    def __init__(self) -> None:
        super().__init__()
        self._backends: dict[str, StateBackend] = {}

    async def _open(self, key: str) -> BackendProtocol:
        return self._backends.setdefault(key, StateBackend())

    async def _close(self, key: str) -> None:
        self._backends.pop(key, None)

    def sessions(self) -> list[str]:
        return list(self._backends)


class DirPool(BackendPool):
    """A ``LocalBackend`` per session on ``root/<session key>`` (or one on ``root`` for all, ``shared=True``).

    Releasing a session kills its commands; its directory stays.
    """

    can_execute = True

    def __init__(self, root: str | os.PathLike[str], *, shared: bool = False) -> None:
        super().__init__()
        self.root = Path(root).resolve()
        self.shared = shared
        self.working_dir = str(self.root) if shared else f"{self.root}/<your session>"
        self._backends: dict[str, LocalBackend] = {}

    async def _open(self, key: str) -> BackendProtocol:
        backend = self._backends.get(key)
        if backend is None:
            directory = self.root if self.shared else self.root / key
            await anyio.to_thread.run_sync(lambda: directory.mkdir(parents=True, exist_ok=True))
            backend = self._backends[key] = LocalBackend(directory)
        return backend

    async def _close(self, key: str) -> None:
        backend = self._backends.pop(key, None)
        if backend is not None:
            await backend.aclose()

    def sessions(self) -> list[str]:
        return list(self._backends)


class DockerPool(BackendPool):
    """A sandbox per session from a ``SessionManager`` (its workspace is ``workspace_root/<session key>``)."""

    can_execute = True

    def __init__(self, manager: Any) -> None:
        super().__init__()
        from agent_backends.sessions import SessionManager

        self.manager = cast(SessionManager, manager)
        self.working_dir = self.manager.default_runtime.work_dir

    async def _open(self, key: str) -> BackendProtocol:
        return await self.manager.get_or_create(key)

    async def _close(self, key: str) -> None:
        await self.manager.release(key)

    def sessions(self) -> list[str]:
        return list(self.manager.sessions)

    async def aclose(self) -> None:
        await self.manager.aclose()


# --- the MCP server -------------------------------------------------------------------------------------------------


def _text(text: str, *, error: bool = False) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(type="text", text=text)], is_error=error)


def _session_key(ctx: ServerRequestContext[Any, Any]) -> str:
    request = ctx.request
    headers = getattr(request, "headers", None)
    if headers is None:
        return STDIO_SESSION
    session = cast(Mapping[str, str], headers).get(_SESSION_HEADER)
    if not session:
        raise MCPError(types.INVALID_REQUEST, "this server keeps one sandbox per MCP session: send Mcp-Session-Id")
    return session


def _disconnected(ctx: ServerRequestContext[Any, Any]) -> anyio.Event | None:
    scope = getattr(ctx.request, "scope", None)
    if not isinstance(scope, dict):
        return None
    return cast(anyio.Event | None, cast(dict[str, Any], scope).get(_DISCONNECTED))


async def _until(event: anyio.Event | None, run: Awaitable[str]) -> str:
    """``run``'s text, cancelled (its commands killed) if ``event`` fires first: the HTTP client went away."""
    if event is None:
        return await run
    result = "Error: the client went away"
    async with anyio.create_task_group() as tg:

        async def watch() -> None:
            await event.wait()
            tg.cancel_scope.cancel()

        tg.start_soon(watch)
        result = await run
        tg.cancel_scope.cancel()
    return result


async def _approved(ctx: ServerRequestContext[Any, Any], spec: ToolSpec, arguments: Mapping[str, Any]) -> str | None:
    """``None`` when the user approves the call through MCP elicitation, else the text the model gets instead."""
    capabilities = ctx.session.client_capabilities
    if capabilities is None or capabilities.elicitation is None:
        return (
            f"Error: {spec.name} needs the user's approval on this server, and this MCP client cannot ask for it "
            "(it does not support elicitation); the call did not run."
        )
    shown = json.dumps(dict(arguments), ensure_ascii=False, indent=1)
    message = f"Allow {spec.name}?\n{_cut_middle(shown, 4000)}"
    schema: dict[str, Any] = {
        "type": "object",
        "properties": {
            "approve": {"type": "boolean", "title": "Approve", "description": f"run this {spec.name} call"},
            "reason": {"type": "string", "title": "Reason", "description": "told to the model when denied"},
        },
        "required": ["approve"],
    }
    try:
        answer = await ctx.session.elicit_form(message, cast(Any, schema), related_request_id=ctx.request_id)
    except MCPError as exc:
        return f"Error: asking the user to approve {spec.name} failed ({exc}); the call did not run."
    content = answer.content or {}
    if answer.action == "accept" and content.get("approve") is True:
        return None
    reason = content.get("reason")
    why = f": {reason}" if isinstance(reason, str) and reason.strip() else ""
    return f"The user denied this {spec.name} call{why}. It did not run."


def build_server(
    pool: BackendPool,
    *,
    approve: Iterable[str] = (),
    max_output_chars: int = 30_000,
    command_timeout: float | None = None,
    include_execute: bool = True,
) -> Server[Any]:
    """An MCP ``Server`` serving the console tools on ``pool``'s backend for each session.

    Args:
        pool: where each session's backend comes from.
        approve: tool names that need the user's approval (MCP elicitation) before each call.
        max_output_chars: the most text any one tool returns.
        command_timeout: seconds before ``execute`` kills a command (``None``: the backend's default).
        include_execute: offer ``execute`` (only when the pool's backends can execute).
    """
    needs_approval = frozenset(approve)
    unknown = needs_approval - set(TOOL_NAMES)
    if unknown:
        raise ValueError(f"approve names unknown tools {sorted(unknown)}; the tools are {', '.join(TOOL_NAMES)}")
    offered = {spec.name: spec for spec in TOOLS if not spec.needs_execute or (include_execute and pool.can_execute)}
    listing = types.ListToolsResult(
        tools=[
            types.Tool(name=spec.name, description=spec.description, input_schema=spec.json_schema)
            for spec in offered.values()
        ]
    )

    async def list_tools(
        ctx: ServerRequestContext[Any, Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        return listing

    async def call_tool(
        ctx: ServerRequestContext[Any, Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        spec = offered.get(params.name)
        if spec is None:
            return _text(f"Error: unknown tool {params.name[:200]!r}; the tools are {', '.join(offered)}", error=True)
        try:
            arguments = spec.validate(dict(params.arguments or {}))
        except ValidationError as exc:
            return _text(_cut_middle(f"Error: invalid arguments for {spec.name}: {exc}", 2000), error=True)
        if spec.name in needs_approval:
            refusal = await _approved(ctx, spec, arguments)
            if refusal is not None:
                return _text(refusal)
        backend = await pool.get(_session_key(ctx))
        sent = 0

        async def progress(text: str) -> None:
            nonlocal sent
            sent += len(text)
            for start in range(0, len(text), 8192):
                await ctx.session.report_progress(sent, None, text[start : start + 8192])

        env = ToolEnv(backend, max_output_chars, command_timeout, progress if spec.needs_execute else None)
        return _text(await _until(_disconnected(ctx), spec(env, arguments)))

    server: Server[Any] = Server(
        "agent-backends",
        instructions=get_console_system_prompt(can_run_commands="execute" in offered, working_dir=pool.working_dir),
        on_list_tools=list_tools,
        on_call_tool=call_tool,
    )
    return server


# --- stdio ---------------------------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def _stopped_by_signals() -> AsyncGenerator[anyio.CancelScope]:
    """A scope that SIGTERM and SIGINT cancel (so ``finally`` blocks run and sandboxes are removed)."""
    async with anyio.create_task_group() as tg:

        async def watch() -> None:
            with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for signum in signals:
                    _log.info("stopping on %s", signal.Signals(signum).name)
                    tg.cancel_scope.cancel()
                    return

        tg.start_soon(watch)
        try:
            yield tg.cancel_scope
        finally:
            tg.cancel_scope.cancel()


async def serve_stdio(server: Server[Any], pool: BackendPool) -> None:
    """Serve one client on standard input and output until it leaves or a signal stops the server; then every
    backend is released."""
    from mcp.server.runner import serve_loop
    from mcp.server.stdio import stdio_server

    try:
        async with _stopped_by_signals(), stdio_server() as (read, write), server.lifespan(server) as state:
            # The handshake era only, as over HTTP: approvals ask through elicitation requests.
            await serve_loop(server, read, write, lifespan_state=state, session_id=STDIO_SESSION)
    finally:
        await pool.aclose()


# --- streamable HTTP -------------------------------------------------------------------------------------------------


@dataclass
class _Gate:
    """The ASGI layer in front of the SDK's app: the bearer token, the protocol era, and each session's life.

    A request without the token, or with another, gets 401 before anything else sees it. A session's backend is
    released when the client ends the session (``DELETE``) or when no request of it has been in flight for
    ``idle_timeout`` seconds (the SDK forgets the session then too). A POST whose client goes away cancels the
    tool call it carries, so a command it started is killed.
    """

    app: ASGIApp
    token: str
    pool: BackendPool
    idle_timeout: float | None
    _in_flight: dict[str, int] = field(default_factory=dict[str, int])
    _last_seen: dict[str, float] = field(default_factory=dict[str, float])

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if not self._authorized(headers.get("authorization", "")):
            await _respond(send, 401, {"error": "unauthorized", "detail": "a valid bearer token is required"})
            return
        version = headers.get(_VERSION_HEADER)
        if version is not None and version not in HANDSHAKE_PROTOCOL_VERSIONS:
            await _respond(
                send,
                400,
                {
                    "jsonrpc": "2.0",
                    "id": None,
                    "error": {
                        "code": types.UNSUPPORTED_PROTOCOL_VERSION,
                        "message": "this server keeps one sandbox per MCP session: use the initialize handshake",
                        "data": {"supported": list(HANDSHAKE_PROTOCOL_VERSIONS), "requested": version},
                    },
                },
            )
            return
        session = headers.get(_SESSION_HEADER)
        disconnected = anyio.Event()
        scope = {**scope, _DISCONNECTED: disconnected}

        async def watched_receive() -> Message:
            message = await receive()
            if message["type"] == "http.disconnect":
                disconnected.set()
            return message

        if session is not None:
            self._in_flight[session] = self._in_flight.get(session, 0) + 1
        try:
            await self.app(scope, watched_receive, send)
        finally:
            if session is not None:
                self._in_flight[session] -= 1
                if not self._in_flight[session]:
                    del self._in_flight[session]
                self._last_seen[session] = time.monotonic()
                if scope["method"] == "DELETE":
                    await self._end(session)

    def _authorized(self, header: str) -> bool:
        scheme, _, credentials = header.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(credentials.strip().encode(), self.token.encode())

    async def _end(self, session: str) -> None:
        self._last_seen.pop(session, None)
        await self.pool.release(session)

    async def reap_idle(self) -> None:
        """Release the backends of sessions idle for ``idle_timeout``; runs until cancelled."""
        if self.idle_timeout is None:
            await anyio.sleep_forever()
            return
        while True:
            await anyio.sleep(max(min(self.idle_timeout / 4, 30.0), 0.05))
            now = time.monotonic()
            for session in self.pool.sessions():
                idle = now - self._last_seen.get(session, now)
                if session not in self._in_flight and idle >= self.idle_timeout:
                    _log.info("releasing the backend of idle session %s", session)
                    await self._end(session)


async def _respond(send: Send, status: int, body: Mapping[str, Any]) -> None:
    data = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    if status == 401:
        headers.append((b"www-authenticate", b'Bearer realm="agent-backends"'))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})


def _token(given: str | None) -> tuple[str, bool]:
    """The bearer token: ``given``, else ``$AGENT_BACKENDS_MCP_TOKEN``, else a new one (``True``: generated)."""
    token = given or os.environ.get(TOKEN_ENV)
    if token:
        return token, False
    return secrets.token_urlsafe(32), True


async def serve_http(
    server: Server[Any],
    pool: BackendPool,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    token: str | None = None,
    idle_timeout: float | None = 30 * 60,
    announce: Callable[[str], None] | None = None,
) -> None:
    """Serve streamable HTTP at ``http://host:port/mcp`` until a signal stops the server; then every backend is
    released. ``announce`` gets the lines to show once at start (the URL, and the token if it was generated)."""
    import uvicorn

    secret, generated = _token(token)

    def to_stderr(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    say = announce or to_stderr
    app = server.streamable_http_app(host=host, session_idle_timeout=idle_timeout)
    gate = _Gate(app, secret, pool, idle_timeout)
    config = uvicorn.Config(gate, host=host, port=port, log_level="warning", lifespan="on", timeout_graceful_shutdown=3)

    class _Web(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Generator[None]:  # ours stop it gracefully, and the process exits cleanly
            yield

    web = _Web(config)

    async def stop_on_signals() -> None:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for signum in signals:
                _log.info("stopping on %s", signal.Signals(signum).name)
                web.should_exit = True

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(gate.reap_idle)
            tg.start_soon(stop_on_signals)

            async def run() -> None:
                try:
                    await web.serve()
                finally:
                    tg.cancel_scope.cancel()

            tg.start_soon(run)
            while not web.started:
                if web.should_exit:
                    return
                await anyio.sleep(0.02)
            bound_host, bound_port = web.servers[0].sockets[0].getsockname()[:2]
            shown = f"[{bound_host}]" if ":" in str(bound_host) else bound_host
            if generated:
                say(f"bearer token (shown once): {secret}")
            say(f"agent-backends MCP server on http://{shown}:{bound_port}/mcp")
    finally:
        await pool.aclose()


def default_workspace_root() -> tempfile.TemporaryDirectory[str]:
    """A temporary directory for the sandboxes' workspaces, removed when the server stops."""
    return tempfile.TemporaryDirectory(prefix="agent-backends-mcp-")
