"""Time the peers on the shared workloads; run by ``_peers.py`` with the peers' own Python, prints JSON.

``python _peer_worker.py TREE [--quick]``: medians in seconds per call, per peer and case; a peer or case that fails
gives its error text instead. Only the standard library and the peers are imported here.
"""

from __future__ import annotations

import contextlib
import json
import statistics
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from typing import Any

import _workloads as w


def median_per_call(fn: Callable[[], object], *, calls: int, reps: int, budget: float = 8.0) -> float:
    fn()  # warm-up
    samples: list[float] = []
    started = time.perf_counter()
    for _ in range(reps):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        samples.append((time.perf_counter() - t0) / calls)
        if len(samples) >= 3 and time.perf_counter() - started > budget:
            break
    return statistics.median(samples)


def expect(value: object, count: int, what: str) -> None:
    if count != value:
        raise RuntimeError(f"{what}: expected {value}, got {count}")


def pydantic_ai_backend(tree: str, quick: bool) -> Iterator[tuple[str, Callable[[], float]]]:
    from pydantic_ai_backends import LocalBackend, StateBackend

    state = StateBackend()
    for path, text in w.memory_files().items():
        state.write(path, text)
    expect(w.MEM_FILES, len(state.ls_info(w.MEM_DIR)), "ls_info entries")
    expect(w.MEM_FILES, len(state.grep_raw(w.MEM_GREP, w.MEM_DIR)), "grep_raw matches")
    calls = 20 if quick else 50
    yield "mem_ls", lambda: median_per_call(lambda: state.ls_info(w.MEM_DIR), calls=calls, reps=5 if quick else 15)
    yield (
        "mem_grep",
        lambda: median_per_call(lambda: state.grep_raw(w.MEM_GREP, w.MEM_DIR), calls=calls, reps=5 if quick else 15),
    )
    yield from _per_call(state.read, state.write, state.edit, quick)
    local = LocalBackend(root_dir=tree, enable_execute=False)
    globbed = local.glob_info(w.GLOB_PATTERN, tree)
    found = local.grep_raw(w.GREP_MANY, tree, ignore_hidden=False)
    yield (
        "glob",
        lambda: median_per_call(lambda: local.glob_info(w.GLOB_PATTERN, tree), calls=1, reps=3 if quick else 9),
    )
    yield (
        "grep_uncapped",
        lambda: median_per_call(
            lambda: local.grep_raw(w.GREP_MANY, tree, ignore_hidden=False), calls=1, reps=3 if quick else 9
        ),
    )
    yield "_counts", lambda: float(len(globbed) * 1_000_000 + (len(found) if isinstance(found, list) else -1))


def _per_call(
    read: Callable[..., Any], write: Callable[..., Any], edit: Callable[..., Any], quick: bool
) -> Iterator[tuple[str, Callable[[], float]]]:
    write(w.EDIT_PATH, w.EDIT_CONTENT)
    edits = iter(w.EDITS * 1_000_000)
    calls, reps = (200, 9) if quick else (1000, 31)

    def one_edit() -> None:
        result = edit(w.EDIT_PATH, *next(edits))
        if getattr(result, "error", None) if not isinstance(result, dict) else result.get("error"):
            raise RuntimeError(f"edit failed: {result}")

    yield "mem_read", lambda: median_per_call(lambda: read(w.EDIT_PATH), calls=calls, reps=reps)
    yield "mem_write", lambda: median_per_call(lambda: write(w.EDIT_PATH, w.EDIT_CONTENT), calls=calls, reps=reps)
    yield "mem_edit", lambda: median_per_call(one_edit, calls=calls, reps=reps)


def deepagents(tree: str, quick: bool) -> Iterator[tuple[str, Callable[[], float]]]:
    from deepagents.backends import FilesystemBackend, StateBackend
    from langchain_core.runnables.config import var_child_runnable_config
    from langgraph._internal._constants import CONFIG_KEY_READ, CONFIG_KEY_SEND

    # deepagents' StateBackend reads and writes LangGraph channel state: give it the two callables a graph node
    # would (a dict as the ``files`` channel, updates merged into it), without the graph or its checkpointer.
    channel: dict[str, Any] = {}

    def read_channel(name: str, fresh: bool = False) -> dict[str, Any]:
        return channel

    def send(updates: list[tuple[str, dict[str, Any]]]) -> None:
        for _, update in updates:
            channel.update(update)

    var_child_runnable_config.set({"configurable": {CONFIG_KEY_READ: read_channel, CONFIG_KEY_SEND: send}})
    state = StateBackend()
    for path, text in w.memory_files().items():
        state.write(path, text)
    expect(w.MEM_FILES, len(state.ls(w.MEM_DIR).entries or []), "ls entries")
    expect(w.MEM_FILES, len(state.grep(w.MEM_GREP, w.MEM_DIR).matches or []), "grep matches")
    calls = 20 if quick else 50
    yield "mem_ls", lambda: median_per_call(lambda: state.ls(w.MEM_DIR), calls=calls, reps=5 if quick else 15)
    yield (
        "mem_grep",
        lambda: median_per_call(lambda: state.grep(w.MEM_GREP, w.MEM_DIR), calls=calls, reps=5 if quick else 15),
    )
    yield from _per_call(state.read, state.write, state.edit, quick)
    disk = FilesystemBackend(root_dir=tree, virtual_mode=False)
    globbed = disk.glob(w.GLOB_PATTERN, tree).matches or []
    found = disk.grep(w.GREP_MANY, tree).matches or []
    yield "glob", lambda: median_per_call(lambda: disk.glob(w.GLOB_PATTERN, tree), calls=1, reps=3 if quick else 9)
    yield (
        "grep_uncapped",
        lambda: median_per_call(lambda: disk.grep(w.GREP_MANY, tree), calls=1, reps=3 if quick else 9),
    )
    yield "_counts", lambda: float(len(globbed) * 1_000_000 + len(found))


def main() -> None:
    tree, quick = sys.argv[1], "--quick" in sys.argv[2:]
    out: dict[str, dict[str, float | str]] = {}
    for name, cases in (("pydantic-ai-backend", pydantic_ai_backend), ("deepagents", deepagents)):
        figures: dict[str, float | str] = {}
        out[name] = figures
        try:
            for case, measure in cases(tree, quick):
                try:
                    figures[case] = measure()
                except Exception as exc:
                    figures[case] = f"{type(exc).__name__}: {exc}"
        except Exception as exc:
            figures["error"] = f"{type(exc).__name__}: {exc}"
            with contextlib.suppress(Exception):
                traceback.print_exc(file=sys.stderr)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
