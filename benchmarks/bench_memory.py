"""``StateBackend`` ``ls_info``, ``grep_raw`` and ``read`` / ``write`` / ``edit`` through the async API vs the same
work on a plain dict, and the peers' in-memory backends on the same workloads (``_peers.py``).

Many calls run inside one ``anyio.run``; each sample is a batch of calls, reported per call. The raw side is an
``async def`` doing the bare operation on a ``dict[str, bytes]`` (decode and split for read, encode for write,
count and replace for edit; for listing, a scan of the keys under the directory making one dict per entry, sorted;
for grep, decode, split and ``re.search`` per line, sorted), so both pay the coroutine cost and the difference is
the backend's own.
"""

from __future__ import annotations

import itertools
import re
import sys

import anyio

from _common import Result, Target, compare_async, parse_args, print_table, warn
from _peers import peers_for
from _workloads import EDIT_CONTENT, EDIT_PATH, EDITS, MEM_DIR, MEM_FILES, MEM_GREP, memory_files, shared_tree
from agent_backends.backends.state import StateBackend

PATH = EDIT_PATH
CONTENT = EDIT_CONTENT
TARGET = Target.absolute(10e-6)


class RawStore:
    """The bare dict operations a backend call stands for."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {PATH: CONTENT.encode()}

    async def read(self, path: str, limit: int = 2000) -> list[str]:
        return self.files[path].decode().split("\n")[:limit]

    async def write(self, path: str, content: str) -> None:
        self.files[path] = content.encode()

    async def edit(self, path: str, old: str, new: str) -> int:
        text = self.files[path].decode()
        count = text.count(old)
        if count != 1:
            raise ValueError(f"{old!r} occurs {count} times")
        self.files[path] = text.replace(old, new, 1).encode()
        return count


class RawTree:
    """A plain ``dict[str, bytes]`` holding ``memory_files()``: listing and grep the bare way."""

    def __init__(self) -> None:
        self.files = {path: text.encode() for path, text in memory_files().items()}

    async def ls(self, path: str) -> list[dict[str, object]]:
        prefix = path.rstrip("/") + "/"
        entries: dict[str, dict[str, object]] = {}
        for key, data in self.files.items():
            if key.startswith(prefix):
                name, _, rest = key[len(prefix) :].partition("/")
                if name not in entries:
                    size = None if rest else len(data)
                    entries[name] = {"path": prefix + name, "name": name, "is_dir": bool(rest), "size": size}
        return sorted(entries.values(), key=lambda entry: str(entry["path"]))

    async def grep(self, pattern: str, path: str) -> list[tuple[str, int, str]]:
        search, prefix, found = re.compile(pattern).search, path.rstrip("/") + "/", []
        for key, data in self.files.items():
            if key.startswith(prefix):
                for number, line in enumerate(data.decode().split("\n"), 1):
                    if search(line) is not None:
                        found.append((key, number, line))
        found.sort()
        return found


async def _bulk(quick: bool) -> list[Result]:
    backend, raw = StateBackend(memory_files()), RawTree()
    calls, reps = (20, 5) if quick else (50, 15)
    tree = shared_tree()
    listed = await backend.ls_info(MEM_DIR)
    found = await backend.grep_raw(MEM_GREP, MEM_DIR)
    if len(listed) != MEM_FILES or len(found) != MEM_FILES or len(await raw.grep(MEM_GREP, MEM_DIR)) != MEM_FILES:
        warn(f"unexpected counts: ls {len(listed)}, grep {len(found)}")
    results: list[Result] = []
    ours_s, raw_s = await compare_async(
        lambda: backend.ls_info(MEM_DIR), lambda: raw.ls(MEM_DIR), reps=reps, calls=calls
    )
    results.append(
        Result(
            f"in-memory ls_info, {MEM_FILES:,}-file directory",
            ours_s,
            raw_s,
            Target.ratio(1.3),
            peers=peers_for(tree, quick, "mem_ls"),
            beat_peers=True,
        )
    )
    ours_s, raw_s = await compare_async(
        lambda: backend.grep_raw(MEM_GREP, MEM_DIR), lambda: raw.grep(MEM_GREP, MEM_DIR), reps=reps, calls=calls
    )
    results.append(
        Result(
            f"in-memory grep_raw, {MEM_FILES:,} files, {MEM_FILES:,} matches",
            ours_s,
            raw_s,
            Target.ratio(1.5),
            note=f"pattern {MEM_GREP!r}, one matching line in each 10-line file",
            peers=peers_for(tree, quick, "mem_grep"),
            beat_peers=True,
        )
    )
    return results


async def _run(quick: bool) -> list[Result]:
    results = await _bulk(quick)
    backend = StateBackend({PATH: CONTENT})
    raw = RawStore()
    calls, reps = (200, 9) if quick else (1000, 31)
    # Edits go back and forth, so that every call is a successful, unique replacement.
    ours_edits = itertools.cycle(EDITS)
    raw_edits = itertools.cycle(EDITS)

    async def ours_edit() -> None:
        result = await backend.edit(PATH, *next(ours_edits))
        if not result:
            raise RuntimeError(result.error)

    async def raw_edit() -> None:
        await raw.edit(PATH, *next(raw_edits))

    cases = (
        ("read", lambda: backend.read(PATH), lambda: raw.read(PATH)),
        ("write", lambda: backend.write(PATH, CONTENT), lambda: raw.write(PATH, CONTENT)),
        ("edit", ours_edit, raw_edit),
    )
    for name, ours, plain in cases:
        ours_s, raw_s = await compare_async(ours, plain, reps=reps, calls=calls)
        peers = peers_for(shared_tree(), quick, f"mem_{name}")
        results.append(Result(f"StateBackend.{name} (per call)", ours_s, raw_s, TARGET, peers=peers))
    text = await backend.read(PATH)
    if len(text.splitlines()) != CONTENT.count("\n") or "function_3" not in text:
        warn(f"unexpected read result: {text[:200]!r}")
    return results


def run(quick: bool = False) -> list[Result]:
    """Time the in-memory cases; the rows of the table."""
    return anyio.run(_run, quick)


def main() -> None:
    args = parse_args(__doc__.splitlines()[0] if __doc__ else "", sys.argv[1:])
    print(f"file: {CONTENT.count(chr(10))} lines, {len(CONTENT.encode())} bytes")
    print_table(run(args.quick), "StateBackend per call vs plain dict")


if __name__ == "__main__":
    main()
