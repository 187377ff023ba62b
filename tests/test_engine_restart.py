"""The engine going away mid-session, for real: a second Docker daemon that this test starts, stops and restarts.

It runs in a network namespace of its own (``unshare --net``): a second daemon with ``--bridge=none`` in the host's
namespace would delete the first daemon's bridge. It gets its own data root, exec root, pid file and socket, and
only it is ever stopped (by the pid in its own pid file).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import anyio.abc
import pytest

from agent_backends import DockerSandbox, EngineUnavailableError, SandboxUnavailableError
from agent_backends.backends.docker import SANDBOX_LABEL, remove_leftover_sandboxes
from agent_backends.process import Process
from tests.conftest import BUSYBOX_IMAGE, LABELS, require_docker

pytestmark = [pytest.mark.anyio, pytest.mark.docker]

_ENGINE_SECONDS = 60.0  # hang guards: to start, to answer, to stop; never timing assertions


class SecondEngine:
    """A private ``dockerd`` under ``root``, in its own network namespace."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.socket = root / "docker.sock"
        self.url = f"unix://{self.socket}"
        self.pidfile = root / "docker.pid"
        self.log = root / "dockerd.log"
        self.process: anyio.abc.Process | None = None

    def _daemon_pid(self) -> int | None:
        """The daemon's pid from its pid file, if that process is alive and really is a dockerd."""
        try:
            pid = int(self.pidfile.read_text().strip())
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
        except (OSError, ValueError):
            return None
        return pid if comm == "dockerd" else None

    async def client(self, *args: str, check: bool = True) -> bytes:
        done = await anyio.run_process(["docker", "-H", self.url, *args], check=check)
        return done.stdout

    async def answers(self) -> bool:
        done = await anyio.run_process(["docker", "-H", self.url, "info"], check=False)
        return done.returncode == 0

    async def start(self) -> None:
        data, state = self.root / "data", self.root / "exec"
        daemon = (
            f"dockerd --data-root {data} --exec-root {state} --pidfile {self.pidfile} -H {self.url} "
            "--bridge=none --iptables=false"
        )
        with self.log.open("ab") as log:
            self.process = await anyio.open_process(
                ["unshare", "--net", "--fork", "sh", "-c", f"ip link set lo up; exec {daemon}"],
                stdin=None,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        with anyio.fail_after(_ENGINE_SECONDS):
            while True:
                if await self.answers():
                    return
                if self.process.returncode is not None:
                    pytest.fail(f"the second dockerd exited at start:\n{self.log.read_text()[-3000:]}")
                await anyio.sleep(0.2)

    async def stop(self) -> None:
        """SIGTERM the daemon (by its own pid file), wait for it to exit; SIGKILL only if it will not."""
        process, self.process = self.process, None
        if process is None:
            return
        pid = self._daemon_pid()
        if pid is not None:
            os.kill(pid, signal.SIGTERM)
        with anyio.move_on_after(_ENGINE_SECONDS):
            await process.wait()
        if process.returncode is None:
            pid = self._daemon_pid()
            if pid is not None:
                os.kill(pid, signal.SIGKILL)
            with anyio.CancelScope(shield=True):
                await process.wait()
        await process.aclose()

    def leftover_pids(self) -> list[int]:
        """Processes still naming this engine's directory (a containerd or shim outliving its daemon)."""
        found: list[int] = []
        for entry in os.listdir("/proc"):
            if entry.isdigit() and int(entry) != os.getpid():
                with contextlib.suppress(OSError):
                    if str(self.root).encode() in Path(f"/proc/{entry}/cmdline").read_bytes():
                        found.append(int(entry))
        return found


def _require_tools() -> None:
    missing = [tool for tool in ("unshare", "ip", "dockerd", "docker") if shutil.which(tool) is None]
    problem = f"missing {', '.join(missing)}" if missing else None
    if problem is None and os.geteuid() != 0:
        problem = "a second dockerd needs root"
    if problem is not None:
        if os.environ.get("CI"):
            pytest.fail(f"the engine restart test must run in CI: {problem}")
        pytest.skip(problem)


@pytest.fixture
async def engine() -> AsyncIterator[SecondEngine]:
    require_docker()
    _require_tools()
    root = Path(tempfile.mkdtemp(prefix="ab-engine-", dir="/tmp"))  # short: unix socket paths are limited
    second = SecondEngine(root)
    try:
        await second.start()
        save = await anyio.run_process(["docker", "save", BUSYBOX_IMAGE])
        await anyio.run_process(["docker", "-H", second.url, "load"], input=save.stdout)
        yield second
    finally:
        with anyio.CancelScope(shield=True):
            await second.stop()
            stray = second.leftover_pids()
            for pid in stray:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        shutil.rmtree(root)
        assert stray == [], f"processes outlived the second dockerd: {stray}"


async def _read_to_the_end(process: Process) -> int | None:
    async for _ in process:
        pass
    return await process.wait()


async def test_the_engine_going_away_fails_calls_promptly_and_a_restarted_engine_serves_again(
    engine: SecondEngine,
) -> None:
    sandbox = DockerSandbox(BUSYBOX_IMAGE, docker_url=engine.url, labels=LABELS)
    async with sandbox:
        first_id, first_label = sandbox.container_id, sandbox.labels[SANDBOX_LABEL]
        assert (await sandbox.execute("echo up", timeout=60)).output == "up\n"
        assert (await sandbox.write("/workspace/kept.txt", "kept")).ok
        background = await sandbox.start_background("echo in the background; sleep 100000")

        in_flight: list[BaseException] = []

        async def execute_in_flight() -> None:
            try:
                await sandbox.execute("touch /tmp/started; sleep 100000", timeout=600)
            except Exception as exc:  # recorded to be checked below; a stray ExceptionGroup is a failure too
                in_flight.append(exc)

        with anyio.fail_after(_ENGINE_SECONDS):
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(execute_in_flight)
                while True:
                    if await sandbox.exists("/tmp/started"):
                        break
                    await anyio.sleep(0.05)
                async with sandbox.open_process("echo streaming; sleep 100000") as streaming:
                    first = await streaming.receive()
                    assert first is not None
                    assert first.text == "streaming\n"

                    await engine.stop()

                    # its output ends, and then its exit code cannot be read
                    with pytest.raises(EngineUnavailableError, match="engine"):
                        await _read_to_the_end(streaming)
        # killed as the engine went down: its container died (gone) or the engine no longer answers, never an exit
        assert [isinstance(exc, SandboxUnavailableError) for exc in in_flight] == [True], in_flight

        with anyio.fail_after(_ENGINE_SECONDS), pytest.raises(EngineUnavailableError, match="engine"):
            await sandbox.execute("echo down", timeout=60)
        with anyio.fail_after(_ENGINE_SECONDS), pytest.raises(EngineUnavailableError, match="engine"):
            await sandbox.read("/workspace/kept.txt")
        with anyio.fail_after(_ENGINE_SECONDS), pytest.raises(EngineUnavailableError, match="engine"):
            await sandbox.write("/workspace/new.txt", "x")
        with anyio.fail_after(_ENGINE_SECONDS), pytest.raises(EngineUnavailableError, match="engine"):
            await sandbox.read_bytes("/workspace/kept.txt")
        with anyio.fail_after(_ENGINE_SECONDS), pytest.raises(EngineUnavailableError, match="engine"):
            await sandbox.start_background("true")

        # the background process lives in the container: with the engine gone, it cannot be read either
        with anyio.fail_after(_ENGINE_SECONDS), pytest.raises(EngineUnavailableError, match="engine"):
            await sandbox.read_background(background.id)
    # closing a sandbox whose engine is gone is clean too (a ResourceWarning would fail the test)

    await engine.start()
    async with DockerSandbox(BUSYBOX_IMAGE, docker_url=engine.url, labels=LABELS) as again:
        assert (await again.execute("echo back", timeout=60)).output == "back\n"
        assert again.container_id != first_id
    # the first sandbox's container could not be removed while the engine was down: the cleanup finds it
    leftover = await remove_leftover_sandboxes(engine.url, label=f"{SANDBOX_LABEL}={first_label}")
    assert leftover == [first_id]
