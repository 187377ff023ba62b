"""Checkpoints on every backend that keeps files: snapshot, restore, fork, list and delete.

Each test changes the files every way an agent can (write, edit, delete, new directories, and on disk modes and
symlinks) and checks that ``restore`` puts back exactly what the snapshot holds.
"""

from __future__ import annotations

import os
import stat
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from agent_backends import (
    CompositeBackend,
    DockerSandbox,
    FilesystemBackend,
    SnapshotError,
    SnapshotNotFoundError,
    StateBackend,
)
from agent_backends.exceptions import SandboxUnavailableError
from tests.conftest import LABELS, PODMAN_URL, PYTHON_IMAGE, Factory, Threaded, require_docker

pytestmark = pytest.mark.anyio


@pytest.fixture(autouse=True)
def _snapshots_in_tmp_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Disk snapshots (and forks) outlive their backend by design: keep this test's under its own tmp_path."""
    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))


SNAPSHOT_KINDS = [
    "state",
    "filesystem",
    "filesystem-virtual",
    "composite",
    "local",
    "sync-state",
    "sync-local",
    "docker",
    "docker-busybox",
    "docker-readonly",  # read-only root, tmpfs work dir: the work dir's files go into the snapshot's image
    "podman",
    "gvisor",
    "sync-docker",
]
DISK_KINDS = {"filesystem", "local", "sync-local"}


async def contents(backend: Any) -> dict[str, bytes]:
    """Every file under the working directory, path to bytes."""
    found = await backend.glob_info("**/*")
    return {info.path: await backend.read_bytes(info.path) for info in found}


async def fill(backend: Any) -> None:
    for path, text in {"/a.txt": "alpha\n", "/src/app.py": "print('v1')\n", "/src/keep.md": "# keep\n"}.items():
        assert (await backend.write(path.lstrip("/"), text)).ok


async def change_everything(backend: Any) -> None:
    assert (await backend.edit("src/app.py", "v1", "v2")).ok
    assert (await backend.write("a.txt", "rewritten\n")).ok
    await backend.delete("src/keep.md")
    assert (await backend.write("new/dir/file.txt", "created later\n")).ok


@pytest.mark.parametrize("kind", SNAPSHOT_KINDS, indirect=True)
async def test_restore_undoes_writes_edits_deletes_and_new_files(make: Factory) -> None:
    backend = await make()
    await fill(backend)
    before = await contents(backend)
    snap = await backend.snapshot("before")
    assert snap.files >= 3
    assert snap.size >= len(b"alpha\nprint('v1')\n# keep\n")
    assert snap.label == "before"
    await change_everything(backend)
    assert await contents(backend) != before
    await backend.restore(snap)
    assert await contents(backend) == before
    assert not await backend.exists("new/dir/file.txt")


@pytest.mark.parametrize("kind", SNAPSHOT_KINDS, indirect=True)
async def test_restoring_back_and_forth_and_twice(make: Factory) -> None:
    backend = await make()
    await fill(backend)
    first = await backend.snapshot()
    state_one = await contents(backend)
    await change_everything(backend)
    second = await backend.snapshot()
    state_two = await contents(backend)
    assert (await backend.write("third.txt", "3\n")).ok
    for snap, expected in [(first, state_one), (second, state_two), (first, state_one), (first, state_one)]:
        await backend.restore(snap)
        assert await contents(backend) == expected
    await backend.restore(second.id)  # by id too
    assert await contents(backend) == state_two
    assert [s.id for s in await backend.list_snapshots()] == [first.id, second.id]


@pytest.mark.parametrize("kind", SNAPSHOT_KINDS, indirect=True)
async def test_a_fork_is_independent_both_ways(make: Factory) -> None:
    backend = await make()
    await fill(backend)
    fork = await backend.fork()
    if isinstance(backend, Threaded):
        fork = Threaded(fork)  # a twin's fork is a twin: call it from a thread too
    try:
        assert await fork.read_bytes("src/app.py") == b"print('v1')\n"
        assert (await fork.write("only-in-fork.txt", "fork\n")).ok
        assert (await backend.write("only-in-original.txt", "original\n")).ok
        assert not await backend.exists("only-in-fork.txt")
        assert not await fork.exists("only-in-original.txt")
        assert (await fork.edit("a.txt", "alpha", "beta")).ok
        assert await backend.read_bytes("a.txt") == b"alpha\n"
    finally:
        await (fork.close() if isinstance(fork, Threaded) else fork.aclose())


@pytest.mark.parametrize("kind", SNAPSHOT_KINDS, indirect=True)
async def test_unknown_deleted_and_foreign_snapshots_are_refused(make: Factory) -> None:
    one, two = await make(), await make()
    await fill(one)
    snap = await one.snapshot()
    other = await two.snapshot()
    with pytest.raises(SnapshotNotFoundError, match="another backend"):
        await one.restore(other)
    with pytest.raises(SnapshotNotFoundError):
        await one.restore("no-such-snapshot")
    await one.delete_snapshot(snap)
    with pytest.raises(SnapshotNotFoundError):
        await one.restore(snap)
    assert await one.list_snapshots() == []
    assert issubclass(SnapshotNotFoundError, SnapshotError)
    assert issubclass(SnapshotNotFoundError, LookupError)


@pytest.mark.parametrize("kind", SNAPSHOT_KINDS, indirect=True)
async def test_snapshots_taken_while_files_change_are_whole(make: Factory) -> None:
    """Every snapshot holds, for each file, one whole written version, never a torn one."""
    backend = await make()
    versions = [f"version {i}\n".encode() * 2000 for i in range(30)]
    assert (await backend.write("f.txt", versions[0])).ok
    snaps: list[Any] = []

    async def writer() -> None:
        for data in versions[1:]:
            assert (await backend.write("f.txt", data)).ok

    async def snapshotter() -> None:
        for _ in range(5):
            snaps.append(await backend.snapshot())
            await anyio.lowlevel.checkpoint()

    async with anyio.create_task_group() as tg:
        tg.start_soon(writer)
        tg.start_soon(snapshotter)
    for snap in snaps:
        await backend.restore(snap)
        assert await backend.read_bytes("f.txt") in versions


async def test_disk_restore_puts_back_modes_and_symlinks_and_leaves_nothing(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "bin").mkdir(parents=True)
    (root / "bin" / "tool").write_text("#!/bin/sh\necho tool\n")
    os.chmod(root / "bin" / "tool", 0o755)
    (root / "link").symlink_to("bin/tool")
    (root / "outside-link").symlink_to(tmp_path)
    store = tmp_path / "snapshots"
    backend = FilesystemBackend(root)
    backend.snapshot_dir = str(store)
    snap = await backend.snapshot()
    os.chmod(root / "bin" / "tool", 0o600)
    (root / "link").unlink()
    (root / "link").symlink_to("elsewhere")
    (root / "outside-link").unlink()
    os.mkfifo(root / "fifo")
    (root / "bin" / "extra").write_text("extra")
    await backend.restore(snap)
    assert stat.S_IMODE(os.stat(root / "bin" / "tool").st_mode) == 0o755
    assert os.readlink(root / "link") == "bin/tool"
    assert os.readlink(root / "outside-link") == str(tmp_path)  # a link is kept as a link, never followed
    assert not (root / "fifo").exists()
    assert sorted(os.listdir(root / "bin")) == ["tool"]
    assert (tmp_path / "snapshots").is_dir()
    await backend.delete_snapshot(snap)
    assert not store.exists()  # the last delete leaves nothing behind


async def test_disk_snapshots_share_unchanged_files(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    for i in range(20):
        (root / f"f{i}.txt").write_bytes(os.urandom(4096))
    backend = FilesystemBackend(root)
    backend.snapshot_dir = str(tmp_path / "snapshots")
    first = await backend.snapshot()
    (root / "f0.txt").write_bytes(b"changed")
    second = await backend.snapshot()
    assert first.files == second.files == 20
    assert second.stored <= len(b"changed")  # only the changed file took space of its own (or none, with reflinks)
    for snap in (first, second):
        await backend.delete_snapshot(snap)


async def test_a_disk_fork_lives_in_its_own_directory_removed_on_close(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "a.txt").write_text("a")
    backend = FilesystemBackend(root)
    fork = await backend.fork()
    assert fork.root_dir != backend.root_dir
    assert Path(fork.root_dir, "a.txt").read_text() == "a"
    await fork.aclose()
    assert not Path(fork.root_dir).exists()
    assert (root / "a.txt").exists()


async def test_thousands_of_memory_snapshots_share_everything() -> None:
    backend = StateBackend({f"/f{i}.txt": f"{i}\n" for i in range(1000)})
    snaps = []
    for i in range(2000):
        assert (await backend.write(f"/f{i % 1000}.txt", f"{i} changed\n")).ok
        snaps.append(await backend.snapshot())
    assert all(snap.stored == 0 and snap.files == 1000 for snap in snaps)
    await backend.restore(snaps[10])
    assert backend.files["/f10.txt"].content == b"10 changed\n"
    assert backend.files["/f11.txt"].content == b"11\n"
    await backend.restore(snaps[-1])
    assert backend.files["/f999.txt"].content == b"1999 changed\n"


async def test_a_composite_snapshots_every_route_together(tmp_path: Path) -> None:
    backend = CompositeBackend(FilesystemBackend(tmp_path / "disk"), routes={"/mem/": StateBackend()})
    assert (await backend.write("/disk.txt", "disk\n")).ok
    assert (await backend.write("/mem/note.txt", "memory\n")).ok
    snap = await backend.snapshot()
    assert snap.kind == "composite"
    assert [part.kind for part in snap.parts] == ["disk", "memory"]
    await backend.delete("/disk.txt")
    assert (await backend.write("/mem/note.txt", "changed\n")).ok
    await backend.restore(snap)
    assert await backend.read_bytes("/disk.txt") == b"disk\n"
    assert await backend.read_bytes("/mem/note.txt") == b"memory\n"
    await backend.delete_snapshot(snap)


def test_sync_twins_fork_into_twins_of_their_own(tmp_path: Path) -> None:
    from agent_backends import SyncStateBackend

    with SyncStateBackend({"/a.txt": "a"}) as backend:
        snap = backend.snapshot()
        fork = backend.fork()
        assert type(fork) is SyncStateBackend
        backend.write("/a.txt", "changed")
        assert fork.read_bytes("/a.txt") == b"a"
        backend.restore(snap)
        assert backend.read_bytes("/a.txt") == b"a"
    assert fork.read_bytes("/a.txt") == b"a"  # the fork outlives the original's twin
    fork.close()


async def test_a_model_checkpoints_and_rolls_back_through_the_toolset(tmp_path: Path) -> None:
    from pydantic_ai import Agent
    from pydantic_ai.models.function import FunctionModel

    from agent_backends import ConsoleDeps, DeepAgentDeps, LocalBackend, create_console_toolset
    from tests.test_toolset import Script, call

    script = Script(
        [
            [call("rollback")],
            [call("write_file", path="app.py", content="good\n")],
            [call("checkpoint", label="works")],
            [call("write_file", path="app.py", content="broken\n"), call("write_file", path="junk.txt", content="x")],
            [call("rollback")],
            [call("rollback", checkpoint_id="nope" * 100)],
            [call("read_file", path="app.py"), call("ls")],
            "done",
        ]
    )
    agent = Agent(FunctionModel(script), deps_type=ConsoleDeps, toolsets=[create_console_toolset(checkpoints=True)])
    async with LocalBackend(tmp_path / "work") as backend:
        backend.snapshot_dir = str(tmp_path / "snapshots")
        assert (await agent.run("go", deps=DeepAgentDeps(backend=backend))).output == "done"
        assert {"checkpoint", "rollback"} <= set(script.offered[0])
        nothing, _, saved, _, _, rolled, unknown, read, listed = script.results
        assert nothing == "rollback: Error: there is no checkpoint to roll back to; save one with checkpoint first"
        assert saved.startswith("checkpoint: Checkpoint ")
        assert "(works) saved: 1 files" in saved
        assert rolled.startswith("rollback: Rolled back to checkpoint ")
        assert "(works)" in rolled
        assert unknown.startswith("rollback: Error: no checkpoint")
        assert len(unknown) < 1000
        assert read == "read_file:      1\tgood"
        assert "junk.txt" not in listed
        for snap in await backend.list_snapshots():
            await backend.delete_snapshot(snap)
    assert "checkpoint" not in [t.name for t in create_console_toolset().tools.values()]


@pytest.mark.parametrize("engine", ["docker", "podman", "gvisor"])
async def test_a_container_snapshot_holds_the_mounted_work_dir_and_a_gone_sandbox_says_so(
    engine: str, tmp_path: Path
) -> None:
    require_docker(engine)
    options: dict[str, Any] = {"podman": {"docker_url": PODMAN_URL}, "gvisor": {"runtime": "runsc"}}.get(engine, {})
    workspace = tmp_path / "workspace"
    workspace.mkdir(mode=0o777)
    sandbox = DockerSandbox(PYTHON_IMAGE, "/workspace", workspace_dir=workspace, labels=LABELS, **options)
    try:
        assert (await sandbox.write("kept.txt", "kept\n")).ok
        result = await sandbox.execute("mkdir -p /opt/tool && echo system > /opt/tool/state && ln -s kept.txt link")
        assert result.exit_code == 0, result
        snap = await sandbox.snapshot("base")
        assert snap.kind == "container"
        assert snap.files >= 1
        assert (await sandbox.write("kept.txt", "changed\n")).ok
        assert (await sandbox.write("later.txt", "later\n")).ok
        assert (await sandbox.execute("rm -rf /opt/tool link")).exit_code == 0
        await sandbox.restore(snap)
        assert (workspace / "kept.txt").read_text() == "kept\n"  # the host directory is put back too
        assert not (workspace / "later.txt").exists()
        assert (await sandbox.execute("cat /opt/tool/state; readlink link")).output == "system\nkept.txt\n"
        fork = await sandbox.fork()
        try:
            assert await fork.read_bytes("kept.txt") == b"kept\n"  # the fork has the files, not the mount
            assert (await fork.write("fork.txt", "fork\n")).ok
            assert not (workspace / "fork.txt").exists()
            assert fork.id != sandbox.id
        finally:
            await fork.aclose()
        subprocess.run([*_docker_cli(engine), "rm", "-f", sandbox.id], capture_output=True, check=False)
        with pytest.raises(SandboxUnavailableError):
            await sandbox.snapshot()
    finally:
        await sandbox.aclose()
    leftovers = subprocess.run(
        [*_docker_cli(engine), "images", "-q", "--filter", f"label=agent-backends.snapshot-of={sandbox.id}"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.split()
    assert leftovers == []  # the sandbox's snapshots went with it


def _docker_cli(engine: str) -> list[str]:
    return ["docker", "-H", PODMAN_URL] if engine == "podman" else ["docker"]
