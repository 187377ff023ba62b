"""Fixtures: every backend, in both flavours, behind one async interface for the contract suite.

The sync flavour is driven from real worker threads that run no event loop, exactly as a script would call it.
"""

from __future__ import annotations

import functools
import os
import subprocess
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import anyio.to_thread
import pytest
from hypothesis import settings

from agent_backends import (
    BaseSandbox,
    CompositeBackend,
    DockerSandbox,
    ExecuteResponse,
    FilesystemBackend,
    LocalBackend,
    StateBackend,
    SyncDockerSandbox,
    SyncFilesystemBackend,
    SyncLocalBackend,
    SyncStateBackend,
)

settings.register_profile("default", max_examples=300, deadline=None)
settings.register_profile("fuzz", max_examples=10_000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

STORAGE_KINDS = ["state", "filesystem", "filesystem-virtual", "composite", "sync-state", "sync-filesystem"]
EXEC_KINDS = [
    "local",
    "shell-sandbox",
    "docker",
    "docker-busybox",
    "docker-readonly",
    "sync-local",
    "sync-docker",
    "podman",
    "gvisor",
]
KINDS = STORAGE_KINDS + EXEC_KINDS

PYTHON_IMAGE = "agent-backends-test/python:bookworm"  # Debian + python3 + ripgrep (.ci/build-images.sh)
BUSYBOX_IMAGE = "agent-backends-test/busybox:latest"  # no ripgrep: grep takes the fallback path
NOTMP_IMAGE = "agent-backends-test/busybox-notmp:latest"  # nothing writable: no /tmp (run with read_only=True)
PODMAN_URL = "unix:///tmp/agent-backends-podman.sock"  # .ci/podman-engine.sh
TEST_LABEL = "agent-backends.test"
SESSION = uuid.uuid4().hex
LABELS = {TEST_LABEL: SESSION}

_base = [""]


def at(path: str) -> str:
    """``path`` inside the backend under test: its working directory for sandboxes, the root otherwise."""
    base = _base[0]
    return (base + path if path != "/" else base) if base else path


@functools.cache
def _docker_problem() -> str | None:
    """Why Docker tests cannot run here (``None`` when they can)."""
    for image in (PYTHON_IMAGE, BUSYBOX_IMAGE, NOTMP_IMAGE):
        try:
            done = subprocess.run(["docker", "image", "inspect", image], capture_output=True, timeout=60, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"the docker client failed: {exc}"
        if done.returncode != 0:
            return f"image {image} is missing or the daemon is down: {done.stderr.decode().strip()}"
    return None


@functools.cache
def _engine_problem(kind: str) -> str | None:
    """Why the Podman or gVisor tests cannot run here (``None`` when they can)."""
    if kind == "podman":
        done = subprocess.run(
            ["docker", "-H", PODMAN_URL, "image", "inspect", PYTHON_IMAGE], capture_output=True, timeout=60, check=False
        )
        return None if done.returncode == 0 else f"no Podman service with {PYTHON_IMAGE} at {PODMAN_URL}"
    done = subprocess.run(
        ["docker", "info", "--format", "{{json .Runtimes}}"], capture_output=True, text=True, timeout=60, check=False
    )
    return None if "runsc" in done.stdout else "runsc is not registered with the Docker daemon (.ci/gvisor.sh)"


def require_docker(engine: str = "docker") -> None:
    """Skip without a daemon, except in CI (``CI`` set), where a missing daemon is a failure."""
    problem = _docker_problem() or (None if engine == "docker" else _engine_problem(engine))
    if problem is not None:
        if os.environ.get("CI"):
            pytest.fail(f"Docker tests must run in CI: {problem}")
        pytest.skip(f"no Docker: {problem}")


class ShellSandbox(BaseSandbox):
    """The smallest real ``BaseSandbox``: it supplies only ``execute`` (host commands) and ``id``."""

    def __init__(self, work_dir: str, **kwargs: Any) -> None:
        super().__init__(work_dir=work_dir, **kwargs)
        self._host = LocalBackend("/")

    async def execute(
        self,
        command: str,
        timeout: float | None = None,
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        stdin: str | bytes | None = None,
    ) -> ExecuteResponse:
        return await self._host.execute(command, timeout, env=env, cwd=cwd, stdin=stdin)

    @property
    def id(self) -> str:
        return "shell"


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
    kind = str(request.param)
    if "docker" in kind:
        require_docker()
    elif kind in ("podman", "gvisor"):
        require_docker(kind)
    return kind


async def _open(kind: str, root: Path, kwargs: dict[str, Any]) -> tuple[Any, str]:
    """The backend of ``kind`` and its base path."""
    if kind == "state":
        return StateBackend(**kwargs), ""
    if kind == "filesystem":
        return FilesystemBackend(root, **kwargs), ""
    if kind == "filesystem-virtual":
        return FilesystemBackend(root, virtual_mode=True, **kwargs), ""
    if kind == "composite":
        composite = CompositeBackend(FilesystemBackend(root), routes={"/mnt/other": StateBackend()}, **kwargs)
        return await composite.__aenter__(), ""
    if kind == "local":  # host paths: the file tools and the shell share them
        return await LocalBackend(root, **kwargs).__aenter__(), str(root)
    if kind == "shell-sandbox":
        return ShellSandbox(str(root), **kwargs), str(root)
    if kind in ("docker", "docker-busybox", "docker-readonly", "podman", "gvisor"):
        image = {"docker-busybox": BUSYBOX_IMAGE, "docker-readonly": NOTMP_IMAGE}.get(kind, PYTHON_IMAGE)
        engine: dict[str, Any] = {
            "podman": {"docker_url": PODMAN_URL},
            "gvisor": {"runtime": "runsc"},
            "docker-readonly": {"read_only": True},
        }.get(kind, {})
        sandbox = DockerSandbox(image, "/workspace", labels=LABELS, **engine, **kwargs)
        return await sandbox.__aenter__(), "/workspace"
    twins: dict[str, tuple[Callable[[], Any], str]] = {
        "sync-state": (lambda: SyncStateBackend(**kwargs), ""),
        "sync-filesystem": (lambda: SyncFilesystemBackend(root, **kwargs), ""),
        "sync-local": (lambda: SyncLocalBackend(root, **kwargs), str(root)),
        "sync-docker": (lambda: SyncDockerSandbox(PYTHON_IMAGE, "/workspace", labels=LABELS, **kwargs), "/workspace"),
    }
    build, base = twins[kind]
    return Threaded(await anyio.to_thread.run_sync(build)), base


@pytest.fixture
async def make(kind: str, tmp_path: Path) -> AsyncIterator[Factory]:
    """An async factory for the backend under test: ``await make(max_grep_matches=3)``. Sets ``at``'s base."""
    opened: list[Any] = []
    counter = iter(range(1_000_000))

    async def factory(**kwargs: Any) -> Any:
        root = tmp_path / f"root{next(counter)}"
        root.mkdir()
        backend, _base[0] = await _open(kind, root, kwargs)
        opened.append(backend)
        return backend

    try:
        yield factory
    finally:
        _base[0] = ""
        for backend in opened:
            if isinstance(backend, Threaded):
                await anyio.to_thread.run_sync(backend.twin.close)
            elif hasattr(backend, "aclose"):
                await backend.aclose()


@pytest.fixture
async def backend(make: Factory) -> Any:
    return await make()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """No test may leave a container, or an image (a snapshot's, a fork's: they carry the sandbox's labels), behind:
    remove any, and fail the run if there were some."""
    if _docker_problem.cache_info().currsize == 0 or _docker_problem() is not None:
        return
    podman_used = _engine_problem.cache_info().currsize and _engine_problem("podman") is None
    for host in ([], ["-H", PODMAN_URL]) if podman_used else ([],):
        for kind, listing, removal in (
            ("container", ["ps", "-aq"], ["rm", "-f"]),
            ("image", ["images", "-q"], ["rmi", "-f"]),
        ):
            found = subprocess.run(
                ["docker", *host, *listing, "--filter", f"label={TEST_LABEL}={SESSION}"],
                capture_output=True,
                text=True,
                check=False,
            ).stdout.split()
            if found:
                subprocess.run(["docker", *host, *removal, *found], capture_output=True, check=False)
                print(f"\nERROR: {len(found)} test {kind}(s) were left behind and have been removed: {found}")
                session.exitstatus = pytest.ExitCode.TESTS_FAILED


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
