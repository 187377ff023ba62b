"""Runtimes built into images once, and SessionManager: one sandbox per user, against the real daemon."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest

from agent_backends import (
    BUILTIN_RUNTIMES,
    DockerSandbox,
    InvalidUserIdError,
    RuntimeBuildError,
    RuntimeConfig,
    SessionLimitError,
    SessionManager,
    SyncSessionManager,
    UnknownRuntimeError,
    get_runtime,
)
from agent_backends.runtime import ensure_runtime_image
from agent_backends.sessions import SESSION_LABEL
from tests.conftest import BUSYBOX_IMAGE, LABELS, require_docker

pytestmark = pytest.mark.anyio

RUNTIME = RuntimeConfig(
    name="test-busybox",
    base_image=BUSYBOX_IMAGE,
    setup_commands=("mkdir -p /opt/runtime && echo ready > /opt/runtime/flag",),
    env_vars={"RUNTIME_FLAG": "on"},
)


def containers(label: str) -> list[str]:
    done = subprocess.run(["docker", "ps", "-aq", "--filter", f"label={label}"], capture_output=True, text=True)
    return done.stdout.split()


def manager(tmp_path: Path, **kwargs: Any) -> SessionManager:
    return SessionManager(RUNTIME, tmp_path / "workspaces", sandbox_options={"labels": LABELS}, **kwargs)


# --- runtimes ----------------------------------------------------------------------------------------------------


def test_builtin_runtimes_and_lookup() -> None:
    assert {"python-minimal", "python-datascience", "python-web", "node-minimal", "coding"} <= set(BUILTIN_RUNTIMES)
    assert get_runtime("python-web") is BUILTIN_RUNTIMES["python-web"]
    assert get_runtime(RUNTIME) is RUNTIME
    with pytest.raises(UnknownRuntimeError, match="coding, node-minimal, python-datascience"):
        get_runtime("cobol")


def test_image_tag_is_a_hash_of_what_goes_into_the_image() -> None:
    same = RuntimeConfig(**RUNTIME.model_dump())
    changed = RuntimeConfig(**{**RUNTIME.model_dump(), "env_vars": {"RUNTIME_FLAG": "off"}})
    assert same.image_tag == RUNTIME.image_tag
    assert changed.image_tag != RUNTIME.image_tag
    assert RUNTIME.image_tag.startswith("agent-backends-runtime/test-busybox:")
    assert "RUN mkdir -p /opt/runtime" in RUNTIME.dockerfile()
    assert 'ENV RUNTIME_FLAG="on"' in RUNTIME.dockerfile()


async def test_a_runtime_is_built_once_and_reused() -> None:
    require_docker()
    runtime = RuntimeConfig(name="test-build-once", base_image=BUSYBOX_IMAGE, setup_commands=("echo built-$RANDOM",))
    subprocess.run(["docker", "rmi", "-f", runtime.image_tag], capture_output=True)
    messages: list[str] = []
    tags: list[str] = []

    async def build() -> None:
        tags.append(await ensure_runtime_image(runtime, progress=messages.append))

    async with anyio.create_task_group() as tg:
        for _ in range(3):
            tg.start_soon(build)
    assert tags == [runtime.image_tag] * 3
    assert sum(m.startswith("building runtime") for m in messages) == 1, messages
    assert any(m.startswith("Step ") for m in messages), "build progress is reported step by step"
    messages.clear()
    await ensure_runtime_image(runtime, progress=messages.append)
    assert messages == [], "a built runtime is not built again"


async def test_a_failing_build_shows_the_failing_step() -> None:
    require_docker()
    broken = RuntimeConfig(
        name="test-broken", base_image=BUSYBOX_IMAGE, setup_commands=("echo about to fail >&2; exit 3",)
    )
    with pytest.raises(RuntimeBuildError, match=r"(?s)test-broken.*Step 2/.*exit 3.*about to fail"):
        await ensure_runtime_image(broken, progress=lambda _: None)


async def test_docker_sandbox_accepts_a_runtime() -> None:
    require_docker()
    async with DockerSandbox(runtime=RUNTIME, labels=LABELS) as sandbox:
        result = await sandbox.execute("cat /opt/runtime/flag; echo $RUNTIME_FLAG; pwd")
        assert result.output.split() == ["ready", "on", "/workspace"]


# --- sessions ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("user_id", ["../x", "a/b", "", ".", "..", "x" * 200, "a b", "~root", "a\x00b", "-rf"])
async def test_unsafe_user_ids_are_refused(tmp_path: Path, user_id: str) -> None:
    sessions = manager(tmp_path)  # no engine is needed to refuse an id: this runs without Docker too
    with pytest.raises(InvalidUserIdError):
        await sessions.get_or_create(user_id)
    await sessions.aclose()
    assert not (tmp_path / "workspaces").exists() or list((tmp_path / "workspaces").iterdir()) == []


async def test_one_user_asking_50_times_at_once_gets_one_sandbox(tmp_path: Path) -> None:
    require_docker()
    async with manager(tmp_path) as sessions:
        got: list[DockerSandbox] = []

        async def ask() -> None:
            got.append(await sessions.get_or_create("alice"))

        async with anyio.create_task_group() as tg:
            for _ in range(50):
                tg.start_soon(ask)
        assert len({id(sandbox) for sandbox in got}) == 1
        assert containers(f"{SESSION_LABEL}=alice") == [(got[0].container_id or "")[:12]]


async def test_twenty_users_at_once_and_everything_removed_on_close(tmp_path: Path) -> None:
    require_docker()
    users = [f"user{i:02d}" for i in range(20)]
    async with manager(tmp_path) as sessions:
        async with anyio.create_task_group() as tg:
            for user in users:
                tg.start_soon(sessions.get_or_create, user)
        assert sorted(sessions.sessions) == users
        assert len({sandbox.id for sandbox in sessions.sessions.values()}) == 20
        results = [await sandbox.execute("cat /opt/runtime/flag") for sandbox in sessions.sessions.values()]
        assert {r.output for r in results} == {"ready\n"}
    for user in users:
        assert containers(f"{SESSION_LABEL}={user}") == []
    workspaces = (tmp_path / "workspaces").iterdir()  # and the managers' lock files, in a hidden directory
    assert sorted(p.name for p in workspaces if not p.name.startswith(".")) == users


async def test_workspace_outlives_the_sandbox(tmp_path: Path) -> None:
    require_docker()
    async with manager(tmp_path) as sessions:
        first = await sessions.get_or_create("bob")
        first_id = first.id
        await first.write("notes.md", "remember me\n")
        await first.execute("echo from-a-command > made.txt")
        await sessions.release("bob")
        assert containers(f"{SESSION_LABEL}=bob") == []
        second = await sessions.get_or_create("bob")
        assert second.id != first_id
        assert await second.read("notes.md") == "     1\tremember me"
        assert (await second.execute("cat made.txt")).output == "from-a-command\n"
    assert (tmp_path / "workspaces" / "bob" / "notes.md").read_text() == "remember me\n"


async def test_a_dead_sandbox_is_replaced(tmp_path: Path) -> None:
    require_docker()
    async with manager(tmp_path) as sessions:
        first = await sessions.get_or_create("carol")
        await anyio.to_thread.run_sync(lambda: subprocess.run(["docker", "kill", first.id], capture_output=True))
        second = await sessions.get_or_create("carol")
        assert second is not first
        assert (await second.execute("echo alive")).output == "alive\n"


async def test_max_sessions_refuses_or_waits(tmp_path: Path) -> None:
    require_docker()
    async with manager(tmp_path, max_sessions=2) as sessions:
        await sessions.get_or_create("u1")
        await sessions.get_or_create("u2")
        with pytest.raises(SessionLimitError, match="all 2 sessions are in use"):
            await sessions.get_or_create("u3")
        assert await sessions.get_or_create("u1") is sessions.sessions["u1"], "an existing session needs no slot"
    async with manager(tmp_path, max_sessions=1, wait_for_slot=True) as sessions:
        await sessions.get_or_create("u1")
        waiter_done = anyio.Event()

        async def wait_for_u2() -> None:
            await sessions.get_or_create("u2")
            waiter_done.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(wait_for_u2)
            await anyio.sleep(0.5)
            assert not waiter_done.is_set(), "u2 waits while u1 holds the only slot"
            await sessions.release("u1")
        assert sorted(sessions.sessions) == ["u2"]


async def test_idle_sessions_are_reaped(tmp_path: Path) -> None:
    require_docker()
    async with manager(tmp_path, idle_timeout=0.5) as sessions:
        sandbox = await sessions.get_or_create("dave")
        with anyio.fail_after(30):
            while sessions.sessions:
                await anyio.sleep(0.1)
        assert containers(f"{SESSION_LABEL}=dave") == []
        assert (await sessions.get_or_create("dave")) is not sandbox


async def test_close_after_a_failure_or_cancellation_leaves_nothing(tmp_path: Path) -> None:
    require_docker()

    async def fail_midway() -> None:
        async with manager(tmp_path) as sessions:
            await sessions.get_or_create("erin")
            raise RuntimeError("the test fails midway")

    with pytest.raises(RuntimeError, match="midway"):
        await fail_midway()
    assert containers(f"{SESSION_LABEL}=erin") == []
    async with manager(tmp_path) as sessions:
        with anyio.move_on_after(0.05):
            await sessions.get_or_create("frank")
    with anyio.fail_after(30):  # a create cut short cleans up after itself
        while containers(f"{SESSION_LABEL}=frank"):
            await anyio.sleep(0.1)


def test_sync_session_manager(tmp_path: Path) -> None:
    require_docker()
    with SyncSessionManager(RUNTIME, tmp_path / "ws", sandbox_options={"labels": LABELS}) as sessions:
        sandbox = sessions.get_or_create("gina")
        assert sandbox.execute("cat /opt/runtime/flag").output == "ready\n"
        sandbox.write("x.txt", "synced\n")
        assert sessions.get_or_create("gina").read("x.txt") == "     1\tsynced"
    assert containers(f"{SESSION_LABEL}=gina") == []
