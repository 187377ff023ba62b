"""``FilesystemBackend.glob_info("**/*.py")`` on the standard library tree vs a hand-written ``os.scandir`` walk.

Both sides run in one worker thread hop (``anyio.to_thread.run_sync``) and return a sorted list: the raw walk keeps
``(path, size)`` of every ``.py`` file (not following directory links, stat-ing each match), ours builds a
``FileInfo`` per match (path, name, size, mtime) after matching the glob's regex.
"""

from __future__ import annotations

import os
import sys

import anyio
import anyio.to_thread

from _common import Result, Target, compare_async, parse_args, print_table, warn
from _peers import peers_for
from _workloads import GLOB_PATTERN, shared_tree
from agent_backends.backends.filesystem import FilesystemBackend
from agent_backends.types import FileInfo

PATTERN = GLOB_PATTERN


def walk_py(root: str) -> list[tuple[str, int]]:
    """Every ``*.py`` file under ``root`` with its size, sorted by path: the raw equivalent of the glob."""
    found: list[tuple[str, int]] = []
    stack = [root]
    while stack:
        try:
            with os.scandir(stack.pop()) as it:
                entries = list(it)
        except OSError:
            continue
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                stack.append(entry.path)
            elif entry.name.endswith(".py") and entry.is_file():
                found.append((entry.path, entry.stat().st_size))
    found.sort()
    return found


async def _run(quick: bool) -> list[Result]:
    tree = shared_tree()
    backend = FilesystemBackend(tree)
    ours_found: list[FileInfo] = []
    raw_found: list[tuple[str, int]] = []

    async def ours() -> None:
        nonlocal ours_found
        ours_found = await backend.glob_info(PATTERN)

    async def raw() -> None:
        nonlocal raw_found
        raw_found = await anyio.to_thread.run_sync(walk_py, tree)

    reps, budget = (5, 5.0) if quick else (15, 8.0)
    ours_s, raw_s = await compare_async(ours, raw, reps=reps, budget=budget)
    note = f"{len(ours_found):,} files matched; raw walk: {len(raw_found):,} (both in one worker-thread hop)"
    if len(ours_found) != len(raw_found):
        warn(f"GLOB COUNT MISMATCH: ours {len(ours_found):,}, raw {len(raw_found):,}")
        note += "  <-- MISMATCH"
    peers = peers_for(tree, quick, "glob")
    return [Result(f"glob_info({PATTERN!r})", ours_s, raw_s, Target.ratio(1.5), note=note, peers=peers)]


def run(quick: bool = False) -> list[Result]:
    """Time the glob case; the rows of the table."""
    return anyio.run(_run, quick)


def main() -> None:
    args = parse_args(__doc__.splitlines()[0] if __doc__ else "", sys.argv[1:])
    print(f"tree: {shared_tree()}")
    print_table(run(args.quick), "glob_info vs raw os.scandir walk")


if __name__ == "__main__":
    main()
