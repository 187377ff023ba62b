"""The engine of the generated sync twins: one event-loop thread per twin, reached through an anyio portal.

The async object is built and entered inside that loop, so loop-bound resources (an aiodocker session) live on
one loop for their whole life. The anyio portal runs the loop and owns lifecycles; calls from any thread are
submitted with ``asyncio.run_coroutine_threadsafe`` (one hop); Ctrl-C cancels the submitted task and waits for its
cleanup before re-raising. A twin that is never closed is closed when garbage
collected or at interpreter exit (``weakref.finalize``), and its thread is a daemon, so exit never hangs. Closing
means closed: a call after ``close()`` (or one cut short by it) raises ``SandboxNotStartedError``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import inspect
import threading
import weakref
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, Generic, Self, TypeVar, cast

import anyio
from anyio.abc import TaskStatus
from anyio.from_thread import BlockingPortal

from agent_backends.exceptions import BlockingCallInEventLoopError, SandboxNotStartedError
from agent_backends.process import OutputChunk, Process

__all__ = ("SyncProcess", "SyncTwin")

_T = TypeVar("_T")
_A = TypeVar("_A")
_CANCEL_GRACE_SECONDS = 30.0


class _LoopThread:
    """A daemon thread running an asyncio loop that serves a ``BlockingPortal`` until stopped."""

    def __init__(self, name: str = "this twin") -> None:
        self.name = name
        self.stopped = False
        self._ready = threading.Event()
        self._portal: BlockingPortal | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="agent-backends-loop", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise self._error

    def _main(self) -> None:
        try:
            anyio.run(self._serve)
        except BaseException as exc:  # surfaced to the constructing thread
            self._error = exc
            self._ready.set()

    async def _serve(self) -> None:
        async with BlockingPortal() as portal:
            self._portal = portal
            self._loop = asyncio.get_running_loop()
            self._ready.set()
            await portal.sleep_until_stopped()

    def closed_error(self) -> SandboxNotStartedError:
        return SandboxNotStartedError(f"{self.name} is closed; make a new one to go on")

    @property
    def portal(self) -> BlockingPortal:
        if self.stopped:
            raise self.closed_error()
        assert self._portal is not None
        return self._portal

    def call(self, fn: Callable[..., Awaitable[_T] | _T], /, *args: Any, **kwargs: Any) -> _T:
        """Run ``fn(*args, **kwargs)`` in the loop and wait for it; Ctrl-C cancels it there."""
        finished = threading.Event()

        async def runner() -> _T:
            try:
                result = fn(*args, **kwargs)
                if inspect.isawaitable(result):
                    return await cast(Awaitable[_T], result)
                return cast(_T, result)
            finally:
                finished.set()

        # One cross-thread hop: anyio's start_task_soon makes two (spawn, then result), which doubles the cost.
        assert self._loop is not None
        if self.stopped:
            raise self.closed_error()
        coroutine = runner()
        try:
            future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        except RuntimeError:  # the loop closed since the check above
            coroutine.close()
            raise self.closed_error() from None
        try:
            return future.result()
        except KeyboardInterrupt:
            future.cancel()
            finished.wait(_CANCEL_GRACE_SECONDS)
            raise
        except concurrent.futures.CancelledError:
            if self.stopped:  # closed while the call ran: the loop cancelled it on its way out
                raise self.closed_error() from None
            raise

    def stop(self) -> None:
        self.stopped = True
        if self._thread.is_alive() and self._portal is not None:
            with contextlib.suppress(RuntimeError):
                self._portal.call(self._portal.stop, True)
            self._thread.join(_CANCEL_GRACE_SECONDS)


def _shutdown(loop: _LoopThread, release: Callable[[], None] | None) -> None:
    """Let the owner task leave the object's ``async with``, then stop the loop; runs once (``weakref.finalize``)."""
    try:
        if release is not None:
            release()
    finally:
        loop.stop()


def _nothing() -> None:
    """What closing a view does: the object belongs to whoever made it."""


def _ensure_no_running_loop(method: str, async_name: str) -> None:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    raise BlockingCallInEventLoopError(
        f"{method}() blocks, and this thread is running an event loop; "
        f"use `await {async_name}(...)` instead of the Sync twin here"
    )


async def _own(factory: Callable[[], _A], *, task_status: TaskStatus[tuple[_A, anyio.Event]]) -> None:
    """Build the async object and hold its ``async with`` open in this one task until told to leave.

    Task groups and cancel scopes must be exited by the task that entered them, so one task owns the object's
    whole life; calls reach it from other tasks.
    """
    target = factory()
    leave = anyio.Event()
    async with contextlib.AsyncExitStack() as stack:
        resource: object = target
        aclose = getattr(resource, "aclose", None)
        if not isinstance(resource, Process) and callable(aclose):
            stack.push_async_callback(cast(Callable[[], Awaitable[None]], aclose))  # backends start on first use
        elif isinstance(resource, contextlib.AbstractAsyncContextManager):
            await stack.enter_async_context(cast(contextlib.AbstractAsyncContextManager[object], resource))
        task_status.started((target, leave))
        await leave.wait()


class SyncProcess:
    """The blocking form of ``open_process``: ``with twin.open_process(cmd) as proc: for chunk in proc: ...``.

    Leaving the block kills the command's process tree, as leaving the async block does.
    """

    def __init__(self, loop: _LoopThread, factory: Callable[[], Process]) -> None:
        self._loop, self._factory = loop, factory
        self._process: Process | None = None

    def __enter__(self) -> Self:
        self._owner, (self._process, self._leave) = self._loop.portal.start_task(_own, self._factory)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._loop.stopped:  # the twin was closed meanwhile, which killed the process already
            return
        self._loop.portal.call(self._leave.set)
        self._owner.result()

    def _running(self) -> Process:
        if self._process is None:
            raise RuntimeError("use the process inside `with twin.open_process(...) as process:`")
        return self._process

    def __iter__(self) -> Self:
        return self

    def __next__(self) -> OutputChunk:
        chunk = self._loop.call(self._running().receive)
        if chunk is None:
            raise StopIteration
        return chunk

    @property
    def returncode(self) -> int | None:
        return self._running().returncode

    def write_stdin(self, data: bytes | str) -> None:
        self._loop.call(self._running().write_stdin, data)

    def close_stdin(self) -> None:
        self._loop.call(self._running().close_stdin)

    def kill(self) -> None:
        self._loop.call(self._running().kill)

    def wait(self) -> int | None:
        return self._loop.call(self._running().wait)


class SyncTwin(Generic[_A]):
    """Base of every generated ``Sync<Name>`` class: owns the loop thread and the async object inside it."""

    _async: _A

    def _setup(self, factory: Callable[[], _A]) -> None:
        _ensure_no_running_loop(f"{type(self).__name__}", type(self).__name__.removeprefix("Sync"))
        loop = _LoopThread(type(self).__name__)
        try:
            owner, (target, leave) = loop.portal.start_task(_own, factory)
        except BaseException:
            loop.stop()
            raise

        def release() -> None:
            loop.portal.call(leave.set)
            owner.result()

        self._async = target
        self._loop = loop
        self._finalizer = weakref.finalize(self, _shutdown, loop, release)

    def _call(self, method: Callable[..., Awaitable[_T]], /, *args: Any, **kwargs: Any) -> _T:
        name = getattr(method, "__name__", "call")
        _ensure_no_running_loop(f"{type(self).__name__}.{name}", f"{type(self._async).__name__}.{name}")
        return self._loop.call(functools.partial(method, *args, **kwargs))

    def _stream(self, method: Callable[..., Process], /, *args: Any, **kwargs: Any) -> SyncProcess:
        _ensure_no_running_loop(f"{type(self).__name__}.open_process", f"{type(self._async).__name__}.open_process")
        return SyncProcess(self._loop, functools.partial(method, *args, **kwargs))

    def _forked(self, method: Callable[[], Awaitable[_A]], /) -> Self:
        """Call ``method`` (a ``fork``) here and give the new object a twin of its own, with its own loop thread:
        the fork lives and closes independently of this twin."""
        target = self._call(method)
        twin = object.__new__(type(self))
        twin._setup(lambda: target)
        return twin

    def _view(self, twin: type[_T], method: Callable[..., Awaitable[Any]], /, *args: Any, **kwargs: Any) -> _T:
        """Call ``method`` and wrap the async object it returns in ``twin``, sharing this twin's loop.

        The view does not own the object: its ``close()`` does nothing; the object's owner (a session manager,
        say) decides when it goes.
        """
        target: object = self._call(method, *args, **kwargs)
        view = object.__new__(twin)
        shared = cast(SyncTwin[object], view)
        shared._async, shared._loop = target, self._loop
        shared._finalizer = weakref.finalize(shared, _nothing)
        return view

    def _attr(self, name: str) -> Any:
        return self._loop.call(getattr, self._async, name)

    @property
    def async_backend(self) -> _A:
        """The async object this twin drives (it lives on the twin's loop thread)."""
        return self._async

    def close(self) -> None:
        """Close the async object and stop the loop thread; idempotent."""
        self._finalizer()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
