"""Checkpoints: snapshot and restore of a 10,000-file, 100 MB tree on disk, and a 10,000-file ``StateBackend``.

The raw side for disk is what a checkpoint saves you from writing yourself: ``shutil.copytree`` of the tree (a
snapshot) and ``rmtree`` plus ``copytree`` back (a restore). Ours records every file once (a reflink where the
filesystem shares blocks, else a copy), then hard-links unchanged files to the previous snapshot, and a restore
rewrites only what changed. The space each snapshot takes of its own is printed beside the time.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time

import anyio

from _common import Result, Target, format_bytes, parse_args, print_table
from agent_backends import FilesystemBackend, StateBackend

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


def run(quick: bool = False) -> list[Result]:
    """Time the checkpoint cases; the rows of the table."""

    async def main() -> list[Result]:
        return [*await _disk(quick), *await _memory(quick)]

    return anyio.run(main)


def main() -> None:
    args = parse_args(__doc__.splitlines()[0] if __doc__ else "", sys.argv[1:])
    print_table(run(args.quick), "checkpoints vs a plain copy of the tree")


if __name__ == "__main__":
    main()
