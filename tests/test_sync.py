"""The generated blocking twins: same API as the async classes, safe from threads, refuse to block a loop."""

from __future__ import annotations

import inspect
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import anyio
import pytest
from tools.gen_sync import WORKSPACE_METHODS

import agent_backends
from agent_backends import (
    BlockingCallInEventLoopError,
    CompositeBackend,
    DockerSandbox,
    FilesystemBackend,
    LocalBackend,
    SessionManager,
    StateBackend,
    SyncCompositeBackend,
    SyncDockerSandbox,
    SyncFilesystemBackend,
    SyncLocalBackend,
    SyncSessionManager,
    SyncStateBackend,
)
from agent_backends._portal import SyncTwin

ROOT = Path(__file__).resolve().parent.parent
PAIRS = [
    (StateBackend, SyncStateBackend),
    (FilesystemBackend, SyncFilesystemBackend),
    (CompositeBackend, SyncCompositeBackend),
    (LocalBackend, SyncLocalBackend),
    (DockerSandbox, SyncDockerSandbox),
    (SessionManager, SyncSessionManager),
]


def test_generated_file_is_fresh() -> None:
    done = subprocess.run(
        [sys.executable, "tools/gen_sync.py", "--check"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize(("async_cls", "sync_cls"), PAIRS)
def test_twin_has_every_public_method_with_the_same_signature(async_cls: type, sync_cls: type) -> None:
    public = (
        {
            name
            for name, member in inspect.getmembers(async_cls)
            if not name.startswith("_") and (inspect.iscoroutinefunction(member) or isinstance(member, property))
        }
        - {"aclose", "start"}
        - WORKSPACE_METHODS
    )  # the workspace API is pydantic-ai's, async by contract
    assert public
    for name in public:
        twin_member = getattr(sync_cls, name)
        if isinstance(twin_member, property):
            continue
        twin_signature, async_signature = inspect.signature(twin_member), inspect.signature(getattr(async_cls, name))
        assert twin_signature.parameters == async_signature.parameters, name
        assert not inspect.iscoroutinefunction(twin_member), name
    assert inspect.signature(sync_cls.__init__) == inspect.signature(async_cls.__init__)


def test_seed_example_works_blocking() -> None:
    with SyncStateBackend() as backend:
        backend.write("/src/app.py", "print('hello')")
        assert backend.read("/src/app.py") == "     1\tprint('hello')"
        assert list(backend.files.keys()) == ["/src/app.py"]


def test_calling_a_twin_inside_a_running_loop_names_the_await_alternative() -> None:
    backend = SyncStateBackend()

    async def inside() -> None:
        with pytest.raises(BlockingCallInEventLoopError, match=r"await StateBackend\.read\(\.\.\.\)"):
            backend.read("/x")
        with pytest.raises(BlockingCallInEventLoopError):
            SyncStateBackend()

    anyio.run(inside)
    backend.close()


def test_many_threads_share_one_twin(tmp_path: Path) -> None:
    backend = SyncFilesystemBackend(tmp_path)
    errors: list[BaseException] = []

    def worker(index: int) -> None:
        try:
            for round_ in range(10):
                assert backend.write(f"/t{index}/{round_}.txt", f"{index}-{round_}").ok
                assert backend.read_bytes(f"/t{index}/{round_}.txt") == f"{index}-{round_}".encode()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(backend.glob_info("**/*.txt")) == 80
    backend.close()


def test_close_is_idempotent_and_stops_the_loop_thread() -> None:
    backend = SyncStateBackend()
    thread = backend._loop._thread  # pyright: ignore[reportPrivateUsage]
    assert thread.is_alive()
    assert thread.daemon, "a forgotten twin must never block interpreter exit"
    backend.close()
    backend.close()
    assert not thread.is_alive()


def test_ctrl_c_cancels_the_work_in_the_loop() -> None:
    """A KeyboardInterrupt while blocked cancels the coroutine (its cleanup runs) before it propagates."""
    backend = SyncStateBackend()
    loop = backend._loop  # pyright: ignore[reportPrivateUsage]
    events: list[str] = []

    async def slow() -> None:
        try:
            events.append("started")
            await anyio.sleep(60)
        except anyio.get_cancelled_exc_class():
            events.append("cancelled")
            raise

    timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT))  # a real Ctrl-C
    timer.start()
    with pytest.raises(KeyboardInterrupt):
        loop.call(slow)
    timer.join()
    assert events == ["started", "cancelled"]
    assert backend.exists("/") is True, "the twin still works after an interrupt"
    backend.close()


def test_every_sync_twin_is_exported() -> None:
    twins = {name for name in agent_backends.__all__ if name.startswith("Sync") and name != "SyncProcess"}
    assert twins == {cls.__name__ for _, cls in PAIRS}
    assert all(issubclass(getattr(agent_backends, name), SyncTwin) for name in twins)
