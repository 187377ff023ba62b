"""The Engine API calls aiodocker has no public method for, spoken over a connection of our own.

- ``resolve_host``: where the engine is: ``docker_url``, else ``DOCKER_HOST``, else the usual sockets; when none is
  there, ``EngineUnavailableError`` names what was tried and how to fix it (aiodocker raises a bare assertion).
- ``api_version``: the version the engine speaks (``GET /version``), asked once per engine.
- ``archive_stat``: a path's stat in a container (``HEAD /containers/{id}/archive``), one round trip, no exec.
- ``start_exec``: an exec's hijacked stream (``POST /exec/{id}/start`` with ``Upgrade: tcp``): it starts the
  command at once, yields its output frames as they arrive, takes standard input and can half-close it.
- ``build_image``: an image build (``POST /build``), its JSON progress lines as they arrive.

Each call opens one connection (unix socket or plain TCP) and speaks HTTP/1.1 on it; nothing is shared between
tasks, so a call can be made and cancelled from any task.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import struct
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote, urlencode, urlsplit

import anyio
import anyio.abc

from agent_backends.exceptions import EngineUnavailableError, SandboxError

__all__ = (
    "EngineError",
    "ExecStream",
    "Frame",
    "api_version",
    "archive_stat",
    "build_image",
    "connect",
    "describe_host",
    "image_exists",
    "resolve_host",
    "start_exec",
)

# Where Docker's own client looks when DOCKER_HOST is unset (aiodocker's list too).
SOCKET_PATHS = ("/run/docker.sock", "/var/run/docker.sock", "~/.docker/run/docker.sock")
_HEADER = struct.Struct(">BxxxL")
_MAX_HEAD = 64 * 1024
_FIX = (
    "start the engine (`dockerd`, Docker Desktop, or Podman's `podman system service unix:///PATH/podman.sock`), "
    "or point DOCKER_HOST or docker_url= at one that runs"
)


class EngineError(SandboxError):
    """The engine answered with an HTTP error status; ``status`` and ``message`` are the engine's."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{message} (HTTP {status})")
        self.status, self.message = status, message


def resolve_host(url: str | None) -> str:
    """The engine's address: ``url``, else ``DOCKER_HOST``, else the first of the usual sockets that exists."""
    if url:
        return url
    if os.environ.get("DOCKER_HOST"):
        return os.environ["DOCKER_HOST"]
    for candidate in SOCKET_PATHS:
        path = Path(candidate).expanduser()
        with contextlib.suppress(OSError):
            if path.is_socket():
                return f"unix://{path}"
    raise EngineUnavailableError(
        f"no container engine found: docker_url= is not given, DOCKER_HOST is not set, and there is no socket at "
        f"{', '.join(SOCKET_PATHS)}; {_FIX}"
    )


def describe_host(url: str | None, host: str) -> str:
    """Where ``host`` came from, for error messages."""
    if url:
        return f"{host} (docker_url=)"
    if os.environ.get("DOCKER_HOST"):
        return f"{host} (from DOCKER_HOST)"
    return host


def unavailable(host: str, exc: BaseException) -> EngineUnavailableError:
    """The error for an engine that cannot be reached at ``host``."""
    return EngineUnavailableError(f"cannot reach the container engine at {host}: {exc}")


async def _connect(host: str) -> anyio.abc.ByteStream:
    try:
        if host.startswith("unix://"):
            return await anyio.connect_unix(host.removeprefix("unix://"))
        if host.startswith(("tcp://", "http://")):
            parts = urlsplit(host)
            return await anyio.connect_tcp(parts.hostname or "localhost", parts.port or 2375)
    except OSError as exc:
        raise unavailable(host, exc) from exc
    raise EngineUnavailableError(f"cannot speak to the engine at {host}: only unix:// and tcp:// are supported here")


class _Reader:
    """Buffered reads from a byte stream: lines of the HTTP head, exact counts, whatever comes next."""

    def __init__(self, stream: anyio.abc.ByteStream) -> None:
        self.stream = stream
        self.buffer = bytearray()

    async def _fill(self) -> bool:
        try:
            self.buffer += await self.stream.receive()
        except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
            return False
        return True

    async def line(self) -> bytes:
        while (end := self.buffer.find(b"\r\n")) < 0:
            if len(self.buffer) > _MAX_HEAD or not await self._fill():
                raise EngineUnavailableError("the engine closed the connection in the middle of a response")
        data = bytes(self.buffer[:end])
        del self.buffer[: end + 2]
        return data

    async def ensure(self, size: int) -> bool:
        """Whether ``size`` bytes are buffered (read until they are, or the end); consumes nothing, so a
        cancelled call loses nothing."""
        while len(self.buffer) < size:
            if not await self._fill():
                return False
        return True

    async def exactly(self, size: int) -> bytes | None:
        if not await self.ensure(size):
            return None
        data = bytes(self.buffer[:size])
        del self.buffer[:size]
        return data

    async def some(self) -> bytes | None:
        if not self.buffer and not await self._fill():
            return None
        data = bytes(self.buffer)
        self.buffer.clear()
        return data


@dataclass
class _Response:
    status: int
    headers: dict[str, str]
    reader: _Reader

    async def body(self) -> bytes:
        """The whole body (by length, chunks, or to the end of the connection)."""
        return b"".join([chunk async for chunk in self.chunks()])

    async def chunks(self) -> AsyncIterator[bytes]:
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            while True:
                size = int((await self.reader.line()).split(b";")[0], 16)
                if size == 0:
                    return
                data = await self.reader.exactly(size + 2)
                if data is None:
                    return
                yield data[:-2]
        elif "content-length" in self.headers:
            data = await self.reader.exactly(int(self.headers["content-length"]))
            if data:
                yield data
        else:
            while (data := await self.reader.some()) is not None:
                yield data

    async def error(self) -> EngineError:
        body = await self.body()
        try:
            message = str(json.loads(body).get("message", "")) or body.decode(errors="replace")
        except (ValueError, AttributeError):
            message = body.decode(errors="replace").strip()
        return EngineError(self.status, message or f"HTTP {self.status}")


async def _request(
    stream: anyio.abc.ByteStream,
    method: str,
    path: str,
    *,
    params: Mapping[str, str] | None = None,
    body: bytes = b"",
    headers: Mapping[str, str] | None = None,
) -> _Response:
    target = path + (f"?{urlencode(params)}" if params else "")
    lines = [f"{method} {target} HTTP/1.1", "Host: docker", f"Content-Length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    head = ("\r\n".join(lines) + "\r\n\r\n").encode()
    await stream.send(head + body if len(body) < 64 * 1024 else head)
    if len(body) >= 64 * 1024:
        await stream.send(body)
    reader = _Reader(stream)
    status_line = await reader.line()
    try:
        status = int(status_line.split()[1])
    except (IndexError, ValueError):
        raise EngineUnavailableError(f"the engine answered {status_line[:80]!r}, not HTTP") from None
    response_headers: dict[str, str] = {}
    while line := await reader.line():
        name, _, value = line.decode("latin-1").partition(":")
        response_headers[name.strip().lower()] = value.strip()
    return _Response(status, response_headers, reader)


@contextlib.asynccontextmanager
async def _call(
    host: str,
    method: str,
    path: str,
    *,
    params: Mapping[str, str] | None = None,
    body: bytes = b"",
    headers: Mapping[str, str] | None = None,
) -> AsyncGenerator[_Response]:
    stream = await _connect(host)
    try:
        try:
            response = await _request(
                stream, method, path, params=params, body=body, headers={"Connection": "close", **(headers or {})}
            )
        except OSError as exc:
            raise unavailable(host, exc) from exc
        yield response
    finally:
        with anyio.CancelScope(shield=True):
            await stream.aclose()


_versions: dict[str, str] = {}


async def connect(url: str | None) -> tuple[str, str]:
    """Find the engine (``resolve_host``) and ask its API version: ``(host, version)``, or
    ``EngineUnavailableError`` saying where it looked, where that came from, and how to fix it."""
    host = resolve_host(url)
    try:
        with anyio.fail_after(60):
            return host, await api_version(host)
    except TimeoutError as exc:
        raise EngineUnavailableError(
            f"the container engine at {describe_host(url, host)} did not answer within 60 s; {_FIX}"
        ) from exc
    except EngineUnavailableError as exc:
        reason = exc.__cause__ if exc.__cause__ is not None else exc
        raise EngineUnavailableError(
            f"cannot reach the container engine at {describe_host(url, host)}: {reason}; {_FIX}"
        ) from exc


async def image_exists(host: str, image: str) -> bool:
    """Whether the engine has ``image`` locally."""
    version = await api_version(host)
    async with _call(host, "GET", f"/v{version}/images/{quote(image, safe='/:@')}/json") as response:
        if response.status == 404:
            return False
        if response.status >= 400:
            raise await response.error()
        await response.body()
    return True


async def api_version(host: str) -> str:
    """The API version the engine speaks (``"1.41"``), asked once per engine."""
    if host not in _versions:
        async with _call(host, "GET", "/version") as response:
            if response.status != 200:
                raise await response.error()
            info: dict[str, Any] = json.loads(await response.body())
        _versions[host] = str(info.get("ApiVersion", "1.41"))
    return _versions[host]


async def archive_stat(host: str, container: str, path: str) -> dict[str, Any] | None:
    """The engine's stat of ``path`` in ``container`` (name, size, mode, mtime, linkTarget); ``None`` when the
    engine answers 404 or 500 (missing, or a parent is a file). A 404 also means a missing container: the caller
    tells the two apart."""
    version = await api_version(host)
    async with _call(host, "HEAD", f"/v{version}/containers/{quote(container)}/archive", params={"path": path}) as r:
        if r.status in (404, 500):
            return None
        if r.status >= 400:
            raise EngineError(r.status, f"could not stat '{path}'")
        header = r.headers.get("x-docker-container-path-stat", "")
    return json.loads(base64.b64decode(header)) if header else None


@dataclass(frozen=True, slots=True)
class Frame:
    """One frame of an exec's output: ``stream`` 1 is stdout, 2 stderr."""

    stream: int
    data: bytes


class ExecStream:
    """An exec's hijacked connection: output frames out, standard input in; ``async with`` closes it."""

    def __init__(self, stream: anyio.abc.ByteStream, reader: _Reader) -> None:
        self._stream, self._reader = stream, reader
        self._eof_sent = False

    async def receive(self) -> Frame | None:
        """The next output frame, or ``None`` at the end of the output. Safe to cancel: a frame is taken from the
        buffer only once it is whole."""
        reader = self._reader
        while True:
            if not await reader.ensure(_HEADER.size):
                return None
            kind, size = _HEADER.unpack(reader.buffer[: _HEADER.size])
            if not await reader.ensure(_HEADER.size + size):
                return None
            data = bytes(reader.buffer[_HEADER.size : _HEADER.size + size])
            del reader.buffer[: _HEADER.size + size]
            if data:
                return Frame(kind, data)

    async def send(self, data: bytes) -> None:
        """Write to the command's standard input."""
        await self._stream.send(data)

    async def send_eof(self) -> None:
        """Half-close: the command sees the end of its input; its output keeps coming."""
        if not self._eof_sent:
            self._eof_sent = True
            if isinstance(self._stream, anyio.abc.SocketStream):
                await self._stream.send_eof()

    async def aclose(self) -> None:
        with anyio.CancelScope(shield=True):
            await self._stream.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


async def start_exec(host: str, exec_id: str) -> ExecStream:
    """Start an exec created with ``AttachStdout``/``AttachStderr`` (and ``AttachStdin``) and return its stream.

    The command runs once this returns; cancelled before, the exec may have started (the caller kills it).
    """
    version = await api_version(host)
    stream = await _connect(host)
    try:
        try:
            response = await _request(
                stream,
                "POST",
                f"/v{version}/exec/{quote(exec_id)}/start",
                body=json.dumps({"Detach": False, "Tty": False}).encode(),
                headers={"Content-Type": "application/json", "Connection": "Upgrade", "Upgrade": "tcp"},
            )
        except OSError as exc:
            raise unavailable(host, exc) from exc
        if response.status >= 400:
            raise await response.error()  # noqa: TRY301 (the stream must be closed on every failure)
    except BaseException:
        with anyio.CancelScope(shield=True):
            await stream.aclose()
        raise
    return ExecStream(stream, response.reader)


async def build_image(
    host: str, context: bytes, params: Mapping[str, str], on_message: Callable[[dict[str, Any]], None]
) -> None:
    """Build an image from a tar ``context``, passing each JSON progress message to ``on_message`` as it arrives."""
    version = await api_version(host)
    headers = {"Content-Type": "application/x-tar"}
    async with _call(host, "POST", f"/v{version}/build", params=params, body=context, headers=headers) as response:
        if response.status >= 400:
            raise await response.error()
        pending = b""
        async for chunk in response.chunks():
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for raw in lines:
                if raw.strip():
                    on_message(json.loads(raw))
        if pending.strip():
            on_message(json.loads(pending))
