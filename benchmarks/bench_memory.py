"""``StateBackend`` ``read`` / ``write`` / ``edit`` per call through the async API vs the same work on a plain dict.

Many calls run inside one ``anyio.run``; each sample is a batch of calls, reported per call. The raw side is an
``async def`` doing the bare operation on a ``dict[str, bytes]`` (decode and split for read, encode for write,
count and replace for edit), so both pay the coroutine cost and the difference is the backend's own.
"""

from __future__ import annotations

import itertools
import sys

import anyio

from _common import Result, Target, compare_async, parse_args, print_table, warn
from agent_backends.backends.state import StateBackend

PATH = "/src/module.py"
CONTENT = "".join(f"def function_{n}(alpha, beta):\n    return alpha + beta * {n}\n" for n in range(10))
EDITS = (("function_3", "renamed_3"), ("renamed_3", "function_3"))
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


async def _run(quick: bool) -> list[Result]:
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
    results: list[Result] = []
    for name, ours, plain in cases:
        ours_s, raw_s = await compare_async(ours, plain, reps=reps, calls=calls)
        results.append(Result(f"StateBackend.{name} (per call)", ours_s, raw_s, TARGET))
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
