"""Run every benchmark and print one combined table (``--quick`` for fewer repetitions).

Each benchmark is also a script of its own: ``python benchmarks/bench_<name>.py [--quick]``.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from types import ModuleType

import anyio

import bench_checkpoints
import bench_disk
import bench_exec
import bench_glob
import bench_grep
import bench_mcp
import bench_memory
import bench_read
import bench_sessions
import bench_sync
from _common import Result, parse_args, print_table
from agent_backends._ripgrep import find_rg

BENCHMARKS: tuple[ModuleType, ...] = (
    bench_grep,
    bench_glob,
    bench_read,
    bench_disk,
    bench_memory,
    bench_checkpoints,
    bench_sync,
    bench_exec,
    bench_sessions,
    bench_mcp,
)


def _environment() -> str:
    rg = anyio.run(find_rg)
    rg_version = subprocess.run([rg, "--version"], capture_output=True, text=True, check=False).stdout.split("\n")[0]
    return (
        f"Python {platform.python_version()} ({sys.executable}), {platform.system()} {platform.machine()}, "
        f"{os.cpu_count()} CPUs, {rg_version}\ntree for grep/glob: {bench_grep.TREE}\n{bench_exec.describe()}"
    )


def main() -> None:
    args = parse_args(__doc__.splitlines()[0] if __doc__ else "", sys.argv[1:])
    print(_environment(), flush=True)
    results: list[Result] = []
    for module in BENCHMARKS:
        run: Callable[[bool], list[Result]] = module.run
        started = time.perf_counter()
        print(f"running {module.__name__} ...", end=" ", flush=True)
        results += run(args.quick)
        print(f"{time.perf_counter() - started:.0f} s", flush=True)
    print_table(results, "all benchmarks (medians; per call where the case says so)")
    checked = [r for r in results if r.met() is not None]
    missed = [r.case for r in checked if not r.met()]
    print(f"\n{len(checked) - len(missed)} of {len(checked)} targets met")
    for case in missed:
        print(f"  missed: {case}")


if __name__ == "__main__":
    main()
