"""``FilesystemBackend`` ``read`` / ``write`` / ``edit`` of a small file, per call, vs the raw work in one thread hop.

What the race-free walk costs: ours opens every path component relative to its parent (``O_NOFOLLOW``), checks the
file type on the open descriptor and locks edits by the file's identity; the raw side does the bare ``open``/
``read``, a temporary file plus ``os.replace`` for a write, and read + replace + atomic write for an edit, each in
one ``anyio.to_thread`` hop, with no path checks at all. The file sits three directories deep.
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

PATH = "/src/pkg/sub/module.py"
CONTENT = "".join(f"def function_{n}(alpha, beta):\n    return alpha + beta * {n}\n" for n in range(10))
EDITS = (("function_3", "renamed_3"), ("renamed_3", "function_3"))


def _raw_write(real: str, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(real), prefix=".raw.")
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.replace(tmp, real)


def _raw_read(real: str) -> bytes:
    with open(real, "rb") as handle:
        return handle.read()


def _raw_edit(real: str, old: str, new: str) -> None:
    text = _raw_read(real).decode()
    if text.count(old) != 1:
        raise ValueError(old)
    _raw_write(real, text.replace(old, new, 1).encode())


async def _run(quick: bool) -> list[Result]:
    with tempfile.TemporaryDirectory(prefix="bench_disk_") as directory:
        backend = FilesystemBackend(directory)
        await backend.write(PATH, CONTENT)
        real = os.path.join(directory, PATH.lstrip("/"))
        calls, reps = (50, 7) if quick else (200, 21)
        ours_edits, raw_edits = itertools.cycle(EDITS), itertools.cycle(EDITS)

        async def ours_edit() -> None:
            result = await backend.edit(PATH, *next(ours_edits))
            if not result:
                raise RuntimeError(result.error)

        async def raw_edit() -> None:
            await anyio.to_thread.run_sync(_raw_edit, real, *next(raw_edits))

        async def raw_write() -> None:
            await anyio.to_thread.run_sync(_raw_write, real, CONTENT.encode())

        cases = (
            ("read_bytes", lambda: backend.read_bytes(PATH), lambda: anyio.to_thread.run_sync(_raw_read, real)),
            ("write", lambda: backend.write(PATH, CONTENT), raw_write),
            ("edit", ours_edit, raw_edit),
        )
        results: list[Result] = []
        for name, ours, raw in cases:
            ours_s, raw_s = await compare_async(ours, raw, reps=reps, calls=calls, warmup=2)
            results.append(Result(f"FilesystemBackend.{name} (per call)", ours_s, raw_s, Target.ratio(1.5)))
        if "function_3" not in await backend.read(PATH):
            warn("unexpected content after the edits")
        return results


def run(quick: bool = False) -> list[Result]:
    """Time the disk cases; the rows of the table."""
    return anyio.run(_run, quick)


def main() -> None:
    args = parse_args(__doc__.splitlines()[0] if __doc__ else "", sys.argv[1:])
    print_table(run(args.quick), "FilesystemBackend per call vs raw calls in one thread hop")


if __name__ == "__main__":
    main()
