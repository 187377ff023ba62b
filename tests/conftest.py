"""Fixtures: every backend, in both flavours, behind one async interface for the contract suite.

The sync flavour is driven from real worker threads that run no event loop, exactly as a script would call it.
"""

from __future__ import annotations

import functools
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio.to_thread
import pytest
from hypothesis import settings

from agent_backends import (
    CompositeBackend,
    FilesystemBackend,
    StateBackend,
    SyncFilesystemBackend,
    SyncStateBackend,
)

settings.register_profile("default", max_examples=300, deadline=None)
settings.register_profile("fuzz", max_examples=10_000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

ASYNC_KINDS = ["state", "filesystem", "filesystem-virtual", "composite"]
SYNC_KINDS = ["sync-state", "sync-filesystem"]
KINDS = ASYNC_KINDS + SYNC_KINDS


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Threaded:
    """A Sync twin whose methods are called from worker threads and awaited here."""

    def __init__(self, twin: Any) -> None:
        self.twin = twin

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.twin, name)
        if not callable(attribute):
            return attribute

        async def call(*args: Any, **kwargs: Any) -> Any:
            return await anyio.to_thread.run_sync(functools.partial(attribute, *args, **kwargs))

        return call


Factory = Callable[..., Awaitable[Any]]


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def make(kind: str, tmp_path: Path) -> AsyncIterator[Factory]:
    """An async factory for the backend under test: ``await make(max_grep_matches=3)``."""
    opened: list[Any] = []
    counter = iter(range(1_000_000))

    async def factory(**kwargs: Any) -> Any:
        root = tmp_path / f"root{next(counter)}"
        root.mkdir()
        backend: Any
        if kind == "state":
            backend = StateBackend(**kwargs)
        elif kind == "filesystem":
            backend = FilesystemBackend(root, **kwargs)
        elif kind == "filesystem-virtual":
            backend = FilesystemBackend(root, virtual_mode=True, **kwargs)
        elif kind == "composite":
            backend = CompositeBackend(default=FilesystemBackend(root), routes={"/mnt/other": StateBackend()}, **kwargs)
            await backend.__aenter__()
        elif kind == "sync-state":
            backend = Threaded(await anyio.to_thread.run_sync(lambda: SyncStateBackend(**kwargs)))
        else:
            backend = Threaded(await anyio.to_thread.run_sync(lambda: SyncFilesystemBackend(root, **kwargs)))
        opened.append(backend)
        return backend

    yield factory
    for backend in opened:
        if isinstance(backend, Threaded):
            await anyio.to_thread.run_sync(backend.twin.close)
        else:
            await backend.aclose()


@pytest.fixture
async def backend(make: Factory) -> Any:
    return await make()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Print what tests measured (``user_properties``): figures to read, never thresholds."""
    measured = [
        (report.nodeid, name, value)
        for reports in terminalreporter.stats.values()
        for report in reports
        if getattr(report, "when", None) == "call"
        for name, value in getattr(report, "user_properties", [])
    ]
    if measured:
        terminalreporter.section("measured")
        for nodeid, name, value in measured:
            terminalreporter.write_line(f"{nodeid.split('::')[-1]}: {name} = {value}")
