"""The event loop never waits on the disk: no file syscall runs on the loop's thread while backends work.

The check is deterministic: a ``sys.addaudithook`` hook records every file-opening or directory-reading audit event
raised on the loop thread for paths under the test's directory. The loop's lag under the same load (a 5 ms ticker)
is measured and printed in the summary, not asserted: these machines are shared and noisy.
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path
from typing import Any

import anyio
import pytest

from agent_backends import CompositeBackend, FilesystemBackend, StateBackend

pytestmark = pytest.mark.anyio

_WATCHED = {"open", "os.scandir", "os.listdir", "os.mkdir", "os.rename", "os.remove", "os.rmdir", "shutil.rmtree"}
_watch: dict[str, Any] = {"thread": None, "root": None, "events": []}


def _hook(event: str, args: tuple[Any, ...]) -> None:
    if event in _WATCHED and threading.get_ident() == _watch["thread"] and args:
        target = str(args[0])
        if _watch["root"] is not None and target.startswith(_watch["root"]):
            _watch["events"].append((event, target))


sys.addaudithook(_hook)


@pytest.fixture
def big_tree(tmp_path: Path) -> Path:
    root = tmp_path / "tree"
    for d in range(40):
        package = root / f"pkg{d}"
        package.mkdir(parents=True)
        for f in range(25):
            (package / f"mod{f}.py").write_text("".join(f"def func_{i}(x):\n    return x + {i}\n" for i in range(60)))
    (root / "huge.log").write_text("".join(f"{i:08d} some log line with text\n" for i in range(400_000)))
    return root


async def test_backends_do_no_file_io_on_the_loop_thread(big_tree: Path, request: pytest.FixtureRequest) -> None:
    lags: list[float] = []
    stop = anyio.Event()

    async def ticker() -> None:
        while not stop.is_set():
            before = time.perf_counter()
            await anyio.sleep(0.005)
            lags.append(time.perf_counter() - before - 0.005)

    disk = FilesystemBackend(big_tree)
    composite = CompositeBackend(StateBackend(), routes={"/disk": FilesystemBackend(big_tree)})
    _watch.update(thread=threading.get_ident(), root=str(big_tree), events=[])
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(ticker)
            many = await disk.grep_raw(r"return x \+ \d+", glob="*.py")
            assert not isinstance(many, str)
            assert many.total == 40 * 25 * 60
            assert len(await disk.glob_info("**/*.py")) == 1000
            assert (await disk.read("/huge.log", offset=200_000, limit=2000)).startswith("200001\t00200000")
            assert len(await disk.read_bytes("/huge.log")) > 10_000_000
            assert (await disk.write("/pkg0/new.py", "x = 1\n" * 100_000)).ok
            assert (await disk.edit("/pkg0/new.py", "x = 1", "x = 2", replace_all=True)).occurrences == 100_000
            assert len(await disk.ls_info("/pkg1")) == 25
            assert not isinstance(await composite.grep_raw("func_59", "/disk"), str)
            await disk.delete("/pkg0/new.py")
            stop.set()
    finally:
        _watch.update(thread=None, root=None)
    assert _watch["events"] == [], "blocking file calls ran on the event-loop thread"
    request.node.user_properties.append(("max loop lag (ms)", round(max(lags) * 1000, 2)))
    request.node.user_properties.append(("ticks of a 5 ms ticker", len(lags)))
