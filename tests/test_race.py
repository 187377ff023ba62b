"""The check and the use are one operation: a directory swapped for a link to outside, in a tight loop, while the
backend reads, writes, edits, lists and deletes through it, never lets one of those reach outside the root.

300 operations of each kind by default; ``nox -s fuzz`` runs 10,000 of each. The figures (how many operations met
each state of the swap) are printed in the ``measured`` section.
"""

from __future__ import annotations

import ctypes
import os
import threading
from collections import Counter
from pathlib import Path

import anyio
import pytest

from agent_backends import FilesystemBackend

pytestmark = pytest.mark.anyio

OPERATIONS = 10_000 if os.environ.get("HYPOTHESIS_PROFILE") == "fuzz" else 300
SECRET = "OUTSIDE-SECRET"
KINDS = ("read", "read_bytes", "write", "edit", "delete", "ls_info", "glob_info")


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _swap(root: Path, outside: Path, stop: threading.Event, swaps: list[int]) -> None:
    """Exchange ``root/d`` (a directory) and ``root/l`` (a link to ``outside``) atomically, in a tight loop.

    ``renameat2(RENAME_EXCHANGE)`` swaps the two names in one step, so ``d`` is always one or the other, and the
    call releases the GIL, so the swaps really interleave with the backend's worker threads.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    d, link = os.fsencode(root / "d"), os.fsencode(root / "l")
    os.symlink(outside, root / "l", target_is_directory=True)
    exchange = libc.renameat2
    while not stop.is_set():
        for _ in range(100):
            if exchange(_AT_FDCWD, d, _AT_FDCWD, link, _RENAME_EXCHANGE) == 0:
                swaps[0] += 1


async def test_a_swap_loop_never_leads_an_operation_outside(tmp_path: Path, record_property: object) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    # The same layout inside and outside, so that every operation finds its path whichever way ``d`` points;
    # only outside holds a file whose name or content is SECRET.
    for top in (root / "d", outside):
        (top / "v").mkdir(parents=True)
        (top / "w").mkdir()
        for i in range(OPERATIONS):
            (top / "v" / f"victim{i}").write_text(SECRET if top == outside else "inside")
    (outside / "secret.txt").write_text(SECRET + "\n")
    (outside / f"{SECRET}.txt").write_text(SECRET + "\n")
    (root / "d" / "secret.txt").write_text("inside\n")
    before = sorted(str(p.relative_to(outside)) for p in outside.rglob("*"))
    backend = FilesystemBackend(root)
    outcomes: Counter[str] = Counter()
    leaks: list[str] = []

    async def one(kind: str, i: int) -> None:
        try:
            if kind == "read":
                text = await backend.read("/d/secret.txt")
            elif kind == "read_bytes":
                text = (await backend.read_bytes("/d/secret.txt")).decode()
            elif kind == "write":
                text = str(await backend.write(f"/d/w/new{i}.txt", "written"))
            elif kind == "edit":
                text = str(await backend.edit("/d/secret.txt", "inside", "inside"))  # refused: identical strings
                text += str(await backend.edit("/d/secret.txt", SECRET, "PWNED"))
            elif kind == "delete":
                await backend.delete(f"/d/v/victim{i}")
                text = ""
            elif kind == "ls_info":
                text = " ".join(info.name for info in await backend.ls_info("/d"))
            else:
                text = " ".join(info.path for info in await backend.glob_info("d/*.txt"))
        except Exception as exc:
            outcomes[f"{kind}: {type(exc).__name__}"] += 1
            return
        outcomes[f"{kind}: ok"] += 1
        if SECRET in text:
            leaks.append(f"{kind}: {text[:80]}")

    stop, swaps = threading.Event(), [0]
    swapper = threading.Thread(target=_swap, args=(root, outside, stop, swaps), daemon=True)
    swapper.start()
    try:
        limiter = anyio.CapacityLimiter(8)

        async def bounded(kind: str, i: int) -> None:
            async with limiter:
                await one(kind, i)

        async with anyio.create_task_group() as tg:
            for i in range(OPERATIONS):
                for kind in KINDS:
                    tg.start_soon(bounded, kind, i)
    finally:
        stop.set()
        swapper.join()
    after = sorted(str(p.relative_to(outside)) for p in outside.rglob("*"))
    for name, count in sorted(outcomes.items()):
        record_property(name, count)  # type: ignore[operator]
    record_property("swaps", swaps[0])  # type: ignore[operator]
    assert leaks == []
    assert after == before  # nothing written or deleted outside
    assert all((outside / name).read_text().startswith(SECRET) for name in after if (outside / name).is_file())
    assert swaps[0] > 0
    assert sum(outcomes.values()) == OPERATIONS * len(KINDS)
