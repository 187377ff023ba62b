"""Sandboxes that live like real applications need them to, on Docker, Podman and gVisor: started by the first
operation, stopped from any task in any order, known by a stable id and reattached by it, saying so when they are
gone, and sessions that survive a restart of the application and pause before they stop.

Containers are counted with the ``docker`` client, independently of the library.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest

from agent_backends import (
    DockerSandbox,
    EngineUnavailableError,
    RuntimeConfig,
    SandboxGoneError,
    SandboxNotStartedError,
    SandboxUnavailableError,
    SessionManager,
    SyncDockerSandbox,
)
from agent_backends.backends import _engine
from agent_backends.backends.docker import SANDBOX_LABEL
from agent_backends.process import Process
from agent_backends.sessions import SESSION_LABEL
from tests.conftest import BUSYBOX_IMAGE, LABELS, NOTMP_IMAGE, PODMAN_URL, require_docker

pytestmark = [pytest.mark.anyio]

ENGINES = [
    pytest.param("docker", marks=pytest.mark.docker),
    pytest.param("podman", marks=pytest.mark.docker),
    pytest.param("gvisor", marks=pytest.mark.docker),
]
_WAIT = 60.0  # hang guard, never a timing assertion


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> dict[str, Any]:
    """``DockerSandbox`` arguments selecting the engine under test."""
    name = str(request.param)
    require_docker(name)
    return {"podman": {"docker_url": PODMAN_URL}, "gvisor": {"runtime": "runsc"}}.get(name, {})


def client(options: dict[str, Any]) -> list[str]:
    return ["docker", "-H", options["docker_url"]] if "docker_url" in options else ["docker"]


def labelled(options: dict[str, Any], label: str) -> list[str]:
    """Ids of the containers carrying ``label`` (``key=value``), running or not."""
    done = subprocess.run(
        [*client(options), "ps", "-aq", "--no-trunc", "--filter", f"label={label}"],
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout.split()


def of(sandbox: DockerSandbox) -> str:
    return f"{SANDBOX_LABEL}={sandbox.labels[SANDBOX_LABEL]}"


async def remove_from_outside(options: dict[str, Any], sandbox: DockerSandbox) -> None:
    await anyio.run_process([*client(options), "rm", "-f", sandbox.id])


# --- 1. construction does nothing; the first operation starts --------------------------------------------------


async def test_the_seed_example_runs_as_written(engine: dict[str, Any]) -> None:
    sandbox = DockerSandbox(image=BUSYBOX_IMAGE, work_dir="/workspace", labels=LABELS, **engine)
    assert labelled(engine, of(sandbox)) == []  # constructing did nothing
    try:
        response = await sandbox.execute("echo hello from $(pwd)", timeout=30)
        assert (response.output, response.exit_code) == ("hello from /workspace\n", 0)
    finally:
        await sandbox.stop()
    assert labelled(engine, of(sandbox)) == []


async def test_concurrent_first_operations_start_one_container(engine: dict[str, Any]) -> None:
    sandbox = DockerSandbox(BUSYBOX_IMAGE, labels=LABELS, **engine)
    try:
        async with anyio.create_task_group() as tasks:
            for index in range(8):
                tasks.start_soon(sandbox.execute, f"echo {index} > /workspace/{index}.txt")
            tasks.start_soon(sandbox.start)
            tasks.start_soon(sandbox.exists, "/workspace")
        assert len(labelled(engine, of(sandbox))) == 1
        assert len(await sandbox.ls_info("/workspace")) == 8
    finally:
        await sandbox.aclose()


def test_the_blocking_twin_needs_no_with() -> None:
    require_docker()
    sandbox = SyncDockerSandbox(BUSYBOX_IMAGE, labels=LABELS)
    label = f"{SANDBOX_LABEL}={sandbox.async_backend.labels[SANDBOX_LABEL]}"
    try:
        assert labelled({}, label) == []  # the twin's constructor started nothing either
        assert sandbox.execute("echo blocking").output == "blocking\n"
        assert len(labelled({}, label)) == 1
    finally:
        sandbox.stop()
        sandbox.close()
    assert labelled({}, label) == []


# --- 2. stop anywhere ------------------------------------------------------------------------------------------


async def test_sandboxes_stop_from_any_task_in_any_order_with_background_processes(engine: dict[str, Any]) -> None:
    sandboxes = [await DockerSandbox(BUSYBOX_IMAGE, labels=LABELS, **engine).start() for _ in range(3)]
    try:
        for sandbox in sandboxes:
            await sandbox.start_background("echo started; sleep 600")
        for sandbox in sandboxes:  # first to last: the order that broke a task's cancel-scope stack
            await sandbox.stop()
        started_elsewhere: list[DockerSandbox] = []

        async def start_one() -> None:
            sandbox = DockerSandbox(BUSYBOX_IMAGE, labels=LABELS, **engine)
            await sandbox.start_background("sleep 600")
            started_elsewhere.append(sandbox)

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(start_one)
            tasks.start_soon(start_one)
        sandboxes += started_elsewhere
        async with anyio.create_task_group() as tasks:  # stopped by other tasks than the ones that started them
            for sandbox in reversed(started_elsewhere):
                tasks.start_soon(sandbox.stop)
    finally:
        with anyio.CancelScope(shield=True):
            for sandbox in sandboxes:
                await sandbox.aclose()
    for sandbox in sandboxes:
        assert labelled(engine, of(sandbox)) == []


# --- 3. stable identity and reattach ---------------------------------------------------------------------------


async def test_a_second_object_attaches_by_id_with_the_background_processes(engine: dict[str, Any]) -> None:
    first = DockerSandbox(BUSYBOX_IMAGE, labels=LABELS, **engine)
    sandbox_id = first.id
    try:
        await first.write("/workspace/note.txt", "kept\n")
        job = await first.start_background("echo one; sleep 600")
        await first.detach()  # as an application does on its way out; the container runs on
        second = DockerSandbox(ref=sandbox_id, docker_url=engine.get("docker_url"))
        assert second.id == sandbox_id
        assert await second.read("note.txt") == "     1\tkept"
        with anyio.fail_after(_WAIT):
            while (state := await second.read_background(job.id)).output != "one\n":
                await anyio.sleep(0.05)
        assert state.running
        assert [p.id for p in await second.list_background()] == [job.id]
        killed = await second.kill_background(job.id)
        assert not killed.running
        assert killed.exit_code == 137
        await second.stop()
        assert labelled(engine, of(first)) == []
        assert second.id == sandbox_id  # readable after it stopped
        with pytest.raises(SandboxGoneError, match="never creates a replacement"):
            await DockerSandbox(ref=sandbox_id, docker_url=engine.get("docker_url")).execute("true")
        assert labelled(engine, of(first)) == []
    finally:
        await first.aclose()


async def test_ref_refuses_a_container_this_library_did_not_create(engine: dict[str, Any]) -> None:
    name = f"not-a-sandbox-{os.getpid()}"
    label = f"{next(iter(LABELS))}={LABELS[next(iter(LABELS))]}"
    options = ["--runtime", "runsc"] if engine.get("runtime") else []
    await anyio.run_process(
        [*client(engine), "run", "-d", "--name", name, "--label", label, *options, BUSYBOX_IMAGE, "sleep", "600"]
    )
    try:
        with pytest.raises(Exception, match="not created by agent_backends"):
            await DockerSandbox(ref=name, docker_url=engine.get("docker_url")).start()
    finally:
        await anyio.run_process([*client(engine), "rm", "-f", name])


# --- 6. a sandbox that is gone says so -------------------------------------------------------------------------


async def test_every_operation_on_a_removed_sandbox_raises_gone(engine: dict[str, Any]) -> None:
    sandbox = await DockerSandbox(BUSYBOX_IMAGE, labels=LABELS, **engine).start()
    try:
        await sandbox.write("/workspace/a.txt", "a")
        await remove_from_outside(engine, sandbox)
        for call in (
            lambda: sandbox.exists("/workspace/a.txt"),
            lambda: sandbox.exists("/workspace/missing.txt"),
            lambda: sandbox.read("/workspace/a.txt"),
            lambda: sandbox.read_bytes("/workspace/a.txt"),
            lambda: sandbox.write("/workspace/b.txt", "b"),
            lambda: sandbox.ls_info("/workspace"),
            lambda: sandbox.execute("true"),
            lambda: sandbox.start_background("true"),
            lambda: sandbox.list_background(),
        ):
            with anyio.fail_after(_WAIT), pytest.raises(SandboxGoneError, match="gone"):
                await call()
    finally:
        await sandbox.aclose()


async def test_a_command_running_while_its_container_is_removed_raises_gone(engine: dict[str, Any]) -> None:
    sandbox = await DockerSandbox(BUSYBOX_IMAGE, labels=LABELS, **engine).start()
    try:
        failed: list[BaseException] = []

        async def run() -> None:
            try:
                await sandbox.execute("echo running; sleep 600", timeout=600)
            except Exception as exc:  # checked below
                failed.append(exc)

        async def read_to_the_end(process: Process) -> int | None:
            async for _ in process:
                pass
            return await process.wait()

        with anyio.fail_after(_WAIT):
            async with (
                anyio.create_task_group() as tasks,
                sandbox.open_process("echo streaming; sleep 600") as streaming,
            ):
                tasks.start_soon(run)
                assert (await streaming.receive()) is not None
                await anyio.sleep(0.5)  # the execute above is running too (no assertion rests on it)
                await remove_from_outside(engine, sandbox)
                with pytest.raises(SandboxUnavailableError):
                    await read_to_the_end(streaming)
        assert [type(exc) for exc in failed] == [SandboxGoneError], failed
    finally:
        await sandbox.aclose()


async def test_a_stopped_container_is_gone_too(engine: dict[str, Any]) -> None:
    sandbox = await DockerSandbox(BUSYBOX_IMAGE, labels=LABELS, **engine).start()
    try:
        await anyio.run_process([*client(engine), "kill", sandbox.id])
        with anyio.fail_after(_WAIT), pytest.raises(SandboxGoneError):
            await sandbox.execute("true")
        with anyio.fail_after(_WAIT), pytest.raises(SandboxGoneError):
            await sandbox.read("/etc/passwd")
    finally:
        await sandbox.aclose()


# --- 7. no engine, a clear error -------------------------------------------------------------------------------


@pytest.fixture
def no_engine(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    """No DOCKER_HOST and none of the usual sockets: as on a machine without Docker."""
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    missing = tuple(str(tmp_path / name) for name in ("docker.sock", "run-docker.sock"))
    monkeypatch.setattr(_engine, "SOCKET_PATHS", missing)
    return missing[0]


async def test_without_an_engine_the_error_says_what_was_tried(no_engine: str, tmp_path: Path) -> None:
    with pytest.raises(EngineUnavailableError) as raised:
        await DockerSandbox(BUSYBOX_IMAGE).execute("true")
    message = str(raised.value)
    assert "DOCKER_HOST is not set" in message
    assert no_engine in message
    assert "podman system service" in message
    with pytest.raises(EngineUnavailableError, match="DOCKER_HOST is not set"):
        await SessionManager(RuntimeConfig(name="x", base_image=BUSYBOX_IMAGE), tmp_path).get_or_create("alice")


async def test_an_engine_address_that_answers_nothing_is_named_with_its_source(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    nowhere = f"unix://{tmp_path}/nothing.sock"
    monkeypatch.setenv("DOCKER_HOST", nowhere)
    with pytest.raises(EngineUnavailableError, match=rf"{nowhere} \(from DOCKER_HOST\)"):
        await DockerSandbox(BUSYBOX_IMAGE).start()
    with pytest.raises(EngineUnavailableError, match=r"\(docker_url=\)"):
        await DockerSandbox(BUSYBOX_IMAGE, docker_url=nowhere).read("/x")
    with pytest.raises(EngineUnavailableError, match="DOCKER_HOST"):
        await SessionManager(RuntimeConfig(name="x", base_image=BUSYBOX_IMAGE), tmp_path).get_or_create("bob")


# --- 8. nothing writable needed --------------------------------------------------------------------------------


async def test_a_read_only_sandbox_without_tmp_works_and_kills(engine: dict[str, Any]) -> None:
    sandbox = DockerSandbox(NOTMP_IMAGE, labels=LABELS, read_only=True, **engine)
    try:
        assert (await sandbox.write("notes.txt", "on a tmpfs\n")).ok
        assert await sandbox.read("notes.txt") == "     1\ton a tmpfs"
        refused = await sandbox.execute("touch /etc/x", timeout=30)
        assert refused.exit_code != 0
        assert "Read-only" in refused.output
        timed_out = await sandbox.execute("sleep 600 & sleep 600", timeout=0.5)
        assert timed_out.timed_out
        with anyio.move_on_after(0.5):
            await sandbox.execute("sleep 700")
        job = await sandbox.start_background("echo bg; sleep 800")
        with anyio.fail_after(_WAIT):
            while not (await sandbox.read_background(job.id)).output:
                await anyio.sleep(0.05)
        assert not (await sandbox.kill_background(job.id)).running
        with anyio.fail_after(_WAIT):  # every process tree killed (the wrappers' command lines name them too)
            while True:
                left = (await sandbox.execute("ps -o args")).output
                if not any(f"sleep {n}" in left for n in (600, 700, 800)):
                    break
                await anyio.sleep(0.1)
    finally:
        await sandbox.aclose()


# --- 4, 5. sessions survive a restart; idle ones pause first ------------------------------------------------------

RUNTIME = RuntimeConfig(name="test-lifecycle", base_image=BUSYBOX_IMAGE)


def sessions(root: Path, engine: dict[str, Any], **kwargs: Any) -> SessionManager:
    options = {"labels": LABELS, **({"runtime": engine["runtime"]} if "runtime" in engine else {})}
    return SessionManager(
        RUNTIME, root, docker_url=engine.get("docker_url"), sandbox_options={**options, **kwargs.pop("opts", {})},
        **kwargs,
    )  # fmt: skip


async def test_the_seed_session_example_needs_no_async_with(engine: dict[str, Any], tmp_path: Path) -> None:
    manager = sessions(tmp_path, engine)
    try:
        sandbox = await manager.get_or_create(user_id="alice")
        assert (await sandbox.execute("echo hi")).output == "hi\n"
    finally:
        await manager.aclose()
    assert labelled(engine, f"{SESSION_LABEL}=alice") == []


async def test_a_new_manager_adopts_the_sandboxes_its_predecessor_kept(engine: dict[str, Any], tmp_path: Path) -> None:
    first = sessions(tmp_path, engine)
    second = sessions(tmp_path, engine)
    try:
        alice = await first.get_or_create("alice")
        await first.get_or_create("bob")
        job = await alice.start_background("echo still here; sleep 600")
        await first.aclose(keep_sandboxes=True)  # a deploy: the sandboxes stay
        kept = sorted(labelled(engine, f"{SESSION_LABEL}=alice") + labelled(engine, f"{SESSION_LABEL}=bob"))
        assert len(kept) == 2
        again = await second.get_or_create("alice")  # the new process hands out the same sandbox
        assert again.id == alice.id
        assert sorted(second.sessions) == ["alice", "bob"]
        assert (await again.read_background(job.id)).running
        assert sorted(labelled(engine, f"{SESSION_LABEL}=alice") + labelled(engine, f"{SESSION_LABEL}=bob")) == kept
    finally:
        await first.aclose()
        await second.aclose()
    assert labelled(engine, f"{SESSION_LABEL}=alice") == []
    assert labelled(engine, f"{SESSION_LABEL}=bob") == []


async def test_an_idle_session_is_paused_then_resumed_then_stopped(engine: dict[str, Any], tmp_path: Path) -> None:
    manager = sessions(tmp_path, engine, pause_after=0.3, idle_timeout=None)
    try:
        sandbox = await manager.get_or_create("carol")
        await sandbox.execute("echo 1 > /tmp/count")
        with anyio.fail_after(_WAIT):
            while not sandbox.paused:
                await anyio.sleep(0.05)
        state = subprocess.run(
            [*client(engine), "inspect", "-f", "{{.State.Paused}}", sandbox.id], capture_output=True, text=True
        )
        assert state.stdout.strip() == "true"
        again = await manager.get_or_create("carol")
        assert again is sandbox
        assert not sandbox.paused
        assert (await sandbox.execute("cat /tmp/count")).output == "1\n"  # memory and files kept
    finally:
        await manager.aclose()
    manager = sessions(tmp_path, engine, pause_after=0.2, idle_timeout=0.6)
    try:
        await manager.get_or_create("dave")
        with anyio.fail_after(_WAIT):
            while manager.sessions:
                await anyio.sleep(0.05)
        assert labelled(engine, f"{SESSION_LABEL}=dave") == []
    finally:
        await manager.aclose()


async def test_a_busy_session_is_not_idle(engine: dict[str, Any], tmp_path: Path) -> None:
    manager = sessions(tmp_path, engine, pause_after=0.2, idle_timeout=0.4)
    try:
        sandbox = await manager.get_or_create("erin")
        job = await sandbox.start_background("sleep 600")
        await anyio.sleep(1.5)  # several reaper rounds: none may pause or stop it (nothing rests on the duration)
        assert manager.sessions == {"erin": sandbox}
        assert not sandbox.paused
        await sandbox.kill_background(job.id)
        with anyio.fail_after(_WAIT):
            while manager.sessions:
                await anyio.sleep(0.05)
    finally:
        await manager.aclose()


def test_sync_session_manager_without_with(tmp_path: Path) -> None:
    require_docker()
    from agent_backends import SyncSessionManager

    manager = SyncSessionManager(RUNTIME, tmp_path, sandbox_options={"labels": LABELS})
    try:
        assert manager.get_or_create("gina").execute("echo synced").output == "synced\n"
    finally:
        manager.close()
    assert labelled({}, f"{SESSION_LABEL}=gina") == []


async def test_a_sandbox_closed_is_closed(engine: dict[str, Any]) -> None:
    sandbox = DockerSandbox(BUSYBOX_IMAGE, labels=LABELS, **engine)
    await sandbox.aclose()
    with pytest.raises(SandboxNotStartedError, match="closed"):
        await sandbox.execute("true")
    assert labelled(engine, of(sandbox)) == []
    await anyio.to_thread.run_sync(lambda: None)
