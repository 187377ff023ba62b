"""``FilesystemBackend.read`` of the head window (2,000 lines) of a large file vs a raw read of those lines.

The raw side opens the file as UTF-8 text and takes the first 2,000 lines with ``itertools.islice`` in one worker
thread hop, formatting nothing. Ours also numbers each line and looks ahead (up to 256 KiB) to say how much
follows. The same window of a 50 MiB file shows that the cost does not grow with the file: ours at 50 MiB should be
about ours at 5 MiB.
"""

from __future__ import annotations

import itertools
import os
import sys
import tempfile

import anyio
import anyio.to_thread

from _common import Result, Target, compare_async, parse_args, print_table, warn
from agent_backends.backends.filesystem import FilesystemBackend

MIB = 1024 * 1024
WINDOW = 2000


def make_file(path: str, size: int) -> None:
    """Write ``size`` bytes (rounded up to a line) of 80-character lines plus ``\\n``."""
    line_count = -(-size // 81)
    with open(path, "w", encoding="utf-8") as handle:
        for start in range(0, line_count, 10_000):
            handle.writelines(
                f"{n:08d} {'lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod':<71}\n"
                for n in range(start, min(start + 10_000, line_count))
            )


def raw_head(path: str) -> list[str]:
    """The first ``WINDOW`` lines of ``path``, as text, unformatted."""
    with open(path, encoding="utf-8", errors="replace") as handle:
        return list(itertools.islice(handle, WINDOW))


async def _case(backend: FilesystemBackend, directory: str, size: int, quick: bool) -> Result:
    name = f"{size // MIB}mib.txt"
    real = os.path.join(directory, name)
    await anyio.to_thread.run_sync(make_file, real, size)
    ours_text = ""
    raw_lines: list[str] = []

    async def ours() -> None:
        nonlocal ours_text
        ours_text = await backend.read(f"/{name}")

    async def raw() -> None:
        nonlocal raw_lines
        raw_lines = await anyio.to_thread.run_sync(raw_head, real)

    reps = 50 if quick else 400
    ours_s, raw_s = await compare_async(ours, raw, reps=reps, warmup=5, budget=10.0)
    shown = ours_text.count("\n")  # WINDOW lines plus the note about what follows
    if shown != WINDOW or len(raw_lines) != WINDOW:
        warn(f"READ WINDOW MISMATCH for {name}: ours {shown} lines, raw {len(raw_lines)}")
    tail = ours_text.rsplit("\n", 1)[-1]
    return Result(f"read head, {size // MIB} MiB file", ours_s, raw_s, Target.ratio(1.5), note=tail)


async def _run(quick: bool) -> list[Result]:
    with tempfile.TemporaryDirectory(prefix="bench_read_") as directory:
        backend = FilesystemBackend(directory)
        small, large = [await _case(backend, directory, size, quick) for size in (5 * MIB, 50 * MIB)]
    growth = large.ours / small.ours
    verdict = "flat: the whole file is not read" if growth < 1.5 else "GROWS with the file size"
    if growth >= 1.5:
        warn(f"reading the head of a 50 MiB file takes {growth:.1f}x the 5 MiB one")
    note = f"{large.note}; ours 50 MiB / ours 5 MiB = {growth:.2f}x ({verdict})"
    return [small, Result(large.case, large.ours, large.raw, large.target, note=note)]


def run(quick: bool = False) -> list[Result]:
    """Time the read cases; the rows of the table."""
    return anyio.run(_run, quick)


def main() -> None:
    args = parse_args(__doc__.splitlines()[0] if __doc__ else "", sys.argv[1:])
    print_table(run(args.quick), "read vs raw islice")


if __name__ == "__main__":
    main()
