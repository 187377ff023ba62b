"""What only ``DockerSandbox`` does: its container's configuration, users and mounts, file transfer through the
archive API, its lifecycle and the cleanup of sandboxes a crashed process left behind.

Execution behaviour it shares with ``LocalBackend`` is in ``test_local.py``; the file contract in
``test_contract.py``. Containers are inspected with the ``docker`` client, independently of the library.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from agent_backends import DockerSandbox, ImageNotFoundError, SandboxNotStartedError
from agent_backends.backends.docker import SANDBOX_LABEL, remove_leftover_sandboxes
from tests.conftest import BUSYBOX_IMAGE, LABELS, PYTHON_IMAGE, require_docker

pytestmark = [pytest.mark.anyio, pytest.mark.docker]

IMAGES = [pytest.param(PYTHON_IMAGE, id="debian"), pytest.param(BUSYBOX_IMAGE, id="busybox")]


@pytest.fixture(autouse=True)
def _docker() -> None:
    require_docker()


@pytest.fixture
async def sandbox() -> AsyncIterator[DockerSandbox]:
    async with DockerSandbox(BUSYBOX_IMAGE, labels=LABELS) as sandbox:
        yield sandbox


async def inspect(container_id: str) -> dict[str, Any] | None:
    """``docker inspect``: the engine's own view of a container, or ``None`` if there is no such container."""
    done = await anyio.run_process(["docker", "inspect", container_id], check=False)
    if done.returncode != 0:
        return None
    [info] = json.loads(done.stdout)
    return info


async def containers_labelled(label: str) -> list[str]:
    done = await anyio.run_process(["docker", "ps", "-aq", "--no-trunc", "--filter", f"label={label}"])
    return done.stdout.decode().split()


async def sh_out(sandbox: DockerSandbox, command: str) -> str:
    result = await sandbox.execute(command, timeout=60)
    assert result.exit_code == 0, result
    return result.output


# --- creation ------------------------------------------------------------------------------------------------


async def test_a_missing_image_is_a_clear_error_and_leaves_nothing() -> None:
    image = "agent-backends-test/not-present-here:never"
    sandbox = DockerSandbox(image, labels=LABELS)
    with pytest.raises(ImageNotFoundError) as raised:
        async with sandbox:
            pytest.fail("a sandbox started from a missing image")
    message = str(raised.value)
    assert repr(image) in message
    assert "not present locally" in message
    assert "docker load" in message
    assert await containers_labelled(f"{SANDBOX_LABEL}={sandbox.labels[SANDBOX_LABEL]}") == []
    assert sandbox.id.startswith("agent-backends-")  # still readable


async def test_the_container_is_labelled_and_has_no_network_by_default(sandbox: DockerSandbox) -> None:
    info = await inspect(sandbox.id)
    assert info is not None
    labels = info["Config"]["Labels"]
    assert labels[SANDBOX_LABEL] == sandbox.labels[SANDBOX_LABEL]
    assert labels.items() >= LABELS.items()
    assert info["HostConfig"]["NetworkMode"] == "none"
    assert info["Config"].get("NetworkDisabled") is True
    assert (await sh_out(sandbox, "ls /sys/class/net")).split() == ["lo"]


async def test_resource_limits_reach_the_host_config() -> None:
    async with DockerSandbox(BUSYBOX_IMAGE, labels=LABELS, memory="256m", cpus=0.5, pids_limit=64) as sandbox:
        info = await inspect(sandbox.id)
    assert info is not None
    host = info["HostConfig"]
    assert host["Memory"] == 256 * 1024 * 1024
    assert host["NanoCpus"] == 500_000_000
    assert host["PidsLimit"] == 64
    async with DockerSandbox(BUSYBOX_IMAGE, labels=LABELS, memory=64 * 1024 * 1024) as sandbox:
        info = await inspect(sandbox.id)
    assert info is not None
    assert info["HostConfig"]["Memory"] == 64 * 1024 * 1024


async def test_environment_of_the_container_and_of_one_command() -> None:
    async with DockerSandbox(BUSYBOX_IMAGE, labels=LABELS, env={"BOTH": "container", "ONLY": "kept"}) as sandbox:
        assert await sh_out(sandbox, 'echo "$BOTH $ONLY"') == "container kept\n"
        overridden = await sandbox.execute('echo "$BOTH $ONLY"', timeout=60, env={"BOTH": "command"})
        assert overridden.output == "command kept\n"


# --- users and mounts ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("image", IMAGES)
async def test_a_user_owns_the_files_written_and_runs_the_commands(image: str) -> None:
    async with DockerSandbox(image, labels=LABELS, user="1000:1000") as sandbox:
        assert await sh_out(sandbox, "id -u; id -g") == "1000\n1000\n"
        assert (await sandbox.write("/workspace/top.txt", "top")).ok
        new_dir = await sandbox.write("/workspace/new/dir/deep.txt", "deep")
        assert new_dir.ok, new_dir.error
        # its own working directory is writable by the commands it runs
        await sh_out(sandbox, "echo made > by-command.txt")
        owners = await sh_out(sandbox, "stat -c '%u:%g %n' top.txt new new/dir/deep.txt by-command.txt")
        assert owners.splitlines() == [
            "1000:1000 top.txt",
            "1000:1000 new",
            "1000:1000 new/dir/deep.txt",
            "1000:1000 by-command.txt",
        ]
        assert await sandbox.read_bytes("/workspace/new/dir/deep.txt") == b"deep"


async def test_a_workspace_dir_shows_the_files_on_the_host_and_outlives_the_sandbox(tmp_path: Path) -> None:
    (tmp_path / "from-host.txt").write_text("host side\n")
    async with DockerSandbox(BUSYBOX_IMAGE, labels=LABELS, workspace_dir=tmp_path) as sandbox:
        assert (await sandbox.write("/workspace/notes/today.txt", "written inside\n")).ok
        await sh_out(sandbox, "echo by a command > made.txt")
        assert await sandbox.read_bytes("/workspace/from-host.txt") == b"host side\n"
        assert (tmp_path / "notes" / "today.txt").read_text() == "written inside\n"
        container_id = sandbox.id
    assert await inspect(container_id) is None  # the container is gone, the files are not
    assert (tmp_path / "notes" / "today.txt").read_text() == "written inside\n"
    assert (tmp_path / "made.txt").read_text() == "by a command\n"


# --- files through the archive API ---------------------------------------------------------------------------


@pytest.mark.parametrize("image", IMAGES)
async def test_a_binary_mebibyte_round_trips_exactly(image: str) -> None:
    blob = os.urandom(1024 * 1024)
    async with DockerSandbox(image, labels=LABELS) as sandbox:
        assert (await sandbox.write("/workspace/blob.bin", blob)).ok
        assert await sandbox.read_bytes("/workspace/blob.bin") == blob
        inside = await sh_out(sandbox, "sha256sum blob.bin; wc -c < blob.bin")
    digest, count = inside.split()[0], inside.split()[-1]
    assert digest == hashlib.sha256(blob).hexdigest()
    assert int(count) == len(blob)


@pytest.mark.parametrize("image", IMAGES)
async def test_editing_a_script_keeps_its_executable_bit(image: str) -> None:
    async with DockerSandbox(image, labels=LABELS) as sandbox:
        await sandbox.write("/workspace/run.sh", "#!/bin/sh\necho one\n")
        await sh_out(sandbox, "chmod 755 run.sh")
        edited = await sandbox.edit("/workspace/run.sh", "echo one", "echo two")
        assert edited.ok, edited.error
        assert await sh_out(sandbox, "stat -c %a run.sh; ./run.sh") == "755\ntwo\n"
        assert (await sandbox.write("/workspace/run.sh", "#!/bin/sh\necho three\n")).ok  # a rewrite, too
        assert await sh_out(sandbox, "stat -c %a run.sh; ./run.sh") == "755\nthree\n"


# --- lifecycle -----------------------------------------------------------------------------------------------


async def test_construction_does_nothing_and_the_first_operation_starts() -> None:
    sandbox = DockerSandbox(BUSYBOX_IMAGE, labels=LABELS)
    label = f"{SANDBOX_LABEL}={sandbox.labels[SANDBOX_LABEL]}"
    try:
        assert await containers_labelled(label) == []
        assert sandbox.container_id is None
        async with anyio.create_task_group() as tasks:  # concurrent first operations start one container
            for index in range(5):
                tasks.start_soon(sandbox.write, f"/workspace/f{index}.txt", "x")
            tasks.start_soon(sandbox.execute, "true")
        assert await containers_labelled(label) == [sandbox.container_id]
        assert sorted(e.name for e in await sandbox.ls_info("/workspace")) == [f"f{i}.txt" for i in range(5)]
    finally:
        await sandbox.stop()
    assert await containers_labelled(label) == []
    with pytest.raises(SandboxNotStartedError, match="was closed"):
        await sandbox.execute("true")
    await DockerSandbox(BUSYBOX_IMAGE, labels=LABELS).aclose()  # closing what never started is harmless


async def test_a_start_cancelled_at_any_moment_leaves_no_container() -> None:
    labels: list[str] = []
    for step in range(10):
        sandbox = DockerSandbox(BUSYBOX_IMAGE, labels=LABELS)
        labels.append(sandbox.labels[SANDBOX_LABEL])
        with anyio.move_on_after(step * 0.03):
            async with sandbox:
                await anyio.sleep(600)
    for label in labels:
        assert await containers_labelled(f"{SANDBOX_LABEL}={label}") == []


async def test_id_is_stable_and_names_the_container_and_stop_is_an_idempotent_aclose() -> None:
    sandbox = DockerSandbox(BUSYBOX_IMAGE, labels=LABELS)
    sandbox_id = sandbox.id  # readable before anything started
    async with sandbox:
        assert sandbox.id == sandbox_id
        info = await inspect(sandbox.id)  # the engine knows the container by it
        assert info is not None
        assert info["Id"] == sandbox.container_id
        assert info["State"]["Running"]
        await sandbox.stop()
        assert await inspect(sandbox_id) is None
        assert sandbox.id == sandbox_id  # and after it stopped
        with pytest.raises(SandboxNotStartedError):
            await sandbox.execute("true")
        await sandbox.stop()
        await sandbox.aclose()
    await sandbox.aclose()  # and once more after the block closed it


async def test_without_auto_remove_the_container_is_only_stopped() -> None:
    async with DockerSandbox(BUSYBOX_IMAGE, labels=LABELS, auto_remove=False) as sandbox:
        container_id, label = sandbox.container_id, sandbox.labels[SANDBOX_LABEL]
    try:
        info = await inspect(container_id)
        assert info is not None
        assert not info["State"]["Running"]
    finally:
        assert await remove_leftover_sandboxes(label=f"{SANDBOX_LABEL}={label}") == [container_id]
    assert await inspect(container_id) is None


async def test_remove_leftover_sandboxes_removes_one_never_closed_and_only_it() -> None:
    abandoned = DockerSandbox(BUSYBOX_IMAGE, labels=LABELS)
    try:
        await abandoned.start()  # and never closed, as by a process that crashed
        container_id, label = abandoned.container_id, abandoned.labels[SANDBOX_LABEL]
        async with DockerSandbox(BUSYBOX_IMAGE, labels=LABELS) as bystander:
            removed = await remove_leftover_sandboxes(label=f"{SANDBOX_LABEL}={label}")
            assert removed == [container_id]
            assert await inspect(container_id) is None
            assert await sh_out(bystander, "echo still here") == "still here\n"
            assert await remove_leftover_sandboxes(label=f"{SANDBOX_LABEL}={label}") == []
    finally:
        await abandoned.aclose()  # its container is gone already: closing is still clean
