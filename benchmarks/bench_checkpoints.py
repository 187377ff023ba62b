"""Checkpoints: snapshot and restore of a 10,000-file, 100 MB tree on disk and in Docker, and fork in Docker.

The raw side for disk is what a checkpoint saves you from writing yourself: ``shutil.copytree`` of the tree (a
snapshot) and ``rmtree`` plus ``copytree`` back (a restore). Ours records every file once (a reflink where the
filesystem shares blocks, else a copy), then hard-links unchanged files to the previous snapshot, and a restore
rewrites only what changed. The space each snapshot takes of its own is printed beside the time.

In Docker the same tree is made in the container's work dir; a snapshot commits the container to an image, a
restore replaces the container by one from it, and ``fork()`` starts a new sandbox from a copy: the raw side of a
fork is what you would do without it, a fresh sandbox and the files copied in (one tar through the archive API).
A 10,000-file ``StateBackend`` shows the O(1) in-memory snapshot.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time

import anyio

from _common import Result, Target, format_bytes, parse_args, print_table, warn
from agent_backends import AgentBackendsError, DockerSandbox, FilesystemBackend, StateBackend

IMAGE = os.environ.get("BENCH_DOCKER_IMAGE", "agent-backends-test/python:bookworm")
LABELS = {"agent-backends.bench": "1"}
_MAKE_TREE = (
    'python3 -c "import os\n'
    "for i in range({files}):\n"
    " d = 'd%02d' % (i % 100); os.makedirs(d, exist_ok=True)\n"
    " open(os.path.join(d, 'f%d.bin' % i), 'wb').write(os.urandom({size}))\""
)

FILES = 10_000
FILE_BYTES = 10_000  # 10,000 files of 10 kB: 100 MB


def _make_tree(root: str, files: int) -> None:
    for i in range(files):
        directory = os.path.join(root, f"d{i % 100:02d}")
        os.makedirs(directory, exist_ok=True)
        with open(os.path.join(directory, f"f{i}.bin"), "wb") as handle:
            handle.write(os.urandom(FILE_BYTES))


def _change_one_percent(root: str, files: int) -> None:
    for i in range(0, files, 100):
        with open(os.path.join(root, f"d{i % 100:02d}", f"f{i}.bin"), "wb") as handle:
            handle.write(b"changed")


def _timed(fn: object) -> float:
    start = time.perf_counter()
    fn()  # type: ignore[operator]
    return time.perf_counter() - start


async def _disk(quick: bool) -> list[Result]:
    files = FILES // 10 if quick else FILES
    with tempfile.TemporaryDirectory(prefix="bench_ckpt_") as scratch:
        root = os.path.join(scratch, "root")
        await anyio.to_thread.run_sync(_make_tree, root, files)
        backend = FilesystemBackend(root)
        backend.snapshot_dir = os.path.join(scratch, "snapshots")
        start = time.perf_counter()
        first = await backend.snapshot()
        first_s = time.perf_counter() - start
        await anyio.to_thread.run_sync(_change_one_percent, root, files)
        start = time.perf_counter()
        second = await backend.snapshot()
        second_s = time.perf_counter() - start
        start = time.perf_counter()
        await backend.restore(first)
        restore_s = time.perf_counter() - start
        copy_s = await anyio.to_thread.run_sync(_timed, lambda: shutil.copytree(root, os.path.join(scratch, "copy")))

        def raw_restore() -> None:
            shutil.rmtree(root)
            shutil.copytree(os.path.join(scratch, "copy"), root)

        raw_restore_s = await anyio.to_thread.run_sync(_timed, raw_restore)
        size = f"{files:,} files, {format_bytes(files * FILE_BYTES)}"
        rows = [
            Result(f"disk snapshot, first ({size})", first_s, copy_s, Target.info(), note=_space(first.stored)),
            Result("disk snapshot, 1 % changed since", second_s, copy_s, Target.ratio(0.5), note=_space(second.stored)),
            Result("disk restore (1 % to put back)", restore_s, raw_restore_s, Target.ratio(0.5)),
        ]
        for snap in (first, second):
            await backend.delete_snapshot(snap)
        return rows


def _space(stored: int) -> str:
    return f"takes {format_bytes(stored)} of its own"


async def _memory(quick: bool) -> list[Result]:
    files = {f"/d{i % 100:02d}/f{i}.txt": f"content {i}\n" * 10 for i in range(FILES)}
    backend = StateBackend(files)
    count = 200 if quick else 2000
    start = time.perf_counter()
    for i in range(count):
        await backend.write(f"/d00/f{i % 100 * 100}.txt", f"edit {i}\n")
        await backend.snapshot()
    per_snapshot = (time.perf_counter() - start) / count
    start = time.perf_counter()
    for _ in range(count):
        dict(files)  # what a naive copy-per-snapshot costs, for comparison
    copy = (time.perf_counter() - start) / count
    note = f"{count:,} snapshots (write + snapshot each), each takes 0 bytes of its own"
    return [Result(f"memory write + snapshot, {FILES:,} files", per_snapshot, copy, Target.ratio(1.0), note=note)]


async def _docker(quick: bool) -> list[Result]:
    files = FILES // 10 if quick else FILES
    sandbox = DockerSandbox(IMAGE, labels=LABELS)
    try:
        made = await sandbox.execute(_MAKE_TREE.format(files=files, size=FILE_BYTES), timeout=600)
        if made.exit_code != 0:
            warn(f"could not make the tree in {IMAGE}: {made.output[-500:]}")
            return []
        start = time.perf_counter()
        snap = await sandbox.snapshot()
        snap_s = time.perf_counter() - start
        await sandbox.execute("rm -rf d0* && echo changed > d50/f50.bin", timeout=600)
        start = time.perf_counter()
        await sandbox.restore(snap)
        restore_s = time.perf_counter() - start
        tar = (await sandbox.execute("tar -cf /tmp/tree.tar d* && wc -c < /tmp/tree.tar", timeout=600)).output
        archive = await sandbox.read_bytes("/tmp/tree.tar")
        start = time.perf_counter()
        fork = await sandbox.fork()
        await fork.exists("d00")  # attached and usable
        fork_s = time.perf_counter() - start
        await fork.aclose()

        async def fresh_and_copy() -> None:
            other = DockerSandbox(IMAGE, labels=LABELS)
            try:
                await other.write("tree.tar", archive)
                unpacked = await other.execute("tar -xf tree.tar && rm tree.tar", timeout=600)
                if unpacked.exit_code != 0:
                    warn(f"could not unpack the copy: {unpacked.output[-300:]}")
            finally:
                await other.aclose()

        start = time.perf_counter()
        await fresh_and_copy()
        raw_fork_s = time.perf_counter() - start
        size = f"{files:,} files, {format_bytes(files * FILE_BYTES)} (tar {tar.strip()} B)"
        await sandbox.delete_snapshot(snap)
        return [
            Result(f"docker snapshot ({size})", snap_s, raw_fork_s, Target.info(), note=_space(snap.stored)),
            Result("docker restore", restore_s, raw_fork_s, Target.info()),
            Result("docker fork vs a fresh sandbox + the files copied in", fork_s, raw_fork_s, Target.ratio(1.0)),
        ]
    except AgentBackendsError as exc:
        warn(f"Docker checkpoints not measured: {exc}")
        return []
    finally:
        await sandbox.aclose()


def run(quick: bool = False) -> list[Result]:
    """Time the checkpoint cases; the rows of the table."""

    async def main() -> list[Result]:
        return [*await _disk(quick), *await _memory(quick), *await _docker(quick)]

    return anyio.run(main)


def main() -> None:
    args = parse_args(__doc__.splitlines()[0] if __doc__ else "", sys.argv[1:])
    print_table(run(args.quick), "checkpoints vs a plain copy of the tree")


if __name__ == "__main__":
    main()
