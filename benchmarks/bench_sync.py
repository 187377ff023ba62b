"""Per-call overhead of a sync twin: ``SyncStateBackend.exists`` vs ``await StateBackend.exists``.

Rounds alternate: a batch of blocking twin calls, then a batch of awaits inside a fresh ``anyio.run`` (only the
awaits are timed). The difference is what the twin adds: submitting to its loop thread through the portal and
waiting. A second, informational row compares the twin with a bare anyio ``BlockingPortal.call`` of the same
coroutine method, the floor of any portal-based twin, so the part that is ours shows up on its own.
"""

from __future__ import annotations

import sys
import time

import anyio
from anyio.from_thread import start_blocking_portal

from _common import Result, Target, compare_samples, compare_sync, parse_args, print_table, timed
from agent_backends.backends.state import StateBackend
from agent_backends.sync import SyncStateBackend

FILES = {"/a": "x\n"}


def awaited(backend: StateBackend, calls: int) -> float:
    """Seconds per ``await backend.exists("/a")``, timed inside one event loop."""

    async def batch() -> float:
        t0 = time.perf_counter()
        for _ in range(calls):
            await backend.exists("/a")
        return (time.perf_counter() - t0) / calls

    return anyio.run(batch)


def run(quick: bool = False) -> list[Result]:
    """Time the sync twin cases; the rows of the table."""
    calls, reps = (200, 9) if quick else (500, 21)
    backend = StateBackend(FILES)
    with SyncStateBackend(FILES) as twin, start_blocking_portal() as portal:
        twin_exists = timed(lambda: twin.exists("/a"), calls)
        twin_s, await_s = compare_samples(twin_exists, lambda: awaited(backend, calls), reps=reps)
        twin_s2, portal_s = compare_sync(
            lambda: twin.exists("/a"), lambda: portal.call(backend.exists, "/a"), reps=reps, calls=calls
        )
    return [
        Result("SyncStateBackend.exists vs await (per call)", twin_s, await_s, Target.overhead(250e-6)),
        Result("SyncStateBackend.exists vs BlockingPortal.call", twin_s2, portal_s, Target.info()),
    ]


def main() -> None:
    args = parse_args(__doc__.splitlines()[0] if __doc__ else "", sys.argv[1:])
    print_table(run(args.quick), "sync twin per-call overhead")


if __name__ == "__main__":
    main()
