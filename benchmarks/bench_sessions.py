"""SessionManager: 20 sessions started at once vs 20 raw concurrent create + start, memory per held session, a paused
session resumed vs a fresh one started, and a new manager adopting 20 running sessions after a restart.

Run: ``python benchmarks/bench_sessions.py [--quick]``. Uses the local busybox test image as the runtime's base, so
the runtime image is built once (before timing) and every session starts from it.
"""

from __future__ import annotations

import gc
import math
import sys
import tempfile
import time
import tracemalloc
import uuid
from typing import Any

import aiodocker
import anyio

from _common import Result, Target, compare_async_samples, format_bytes, parse_args, print_table, warn
from agent_backends import DockerSandbox, RuntimeConfig, SandboxError, SessionManager
from agent_backends.backends import _engine
from agent_backends.runtime import ensure_runtime_image

USERS = 20
RUN_LABEL = "agent-backends.bench"
RUN_ID = uuid.uuid4().hex[:12]
LABELS = {RUN_LABEL: RUN_ID}
RUNTIME = RuntimeConfig(name="bench-busybox", base_image="agent-backends-test/busybox:latest")


async def _sessions_once(root: str) -> tuple[float, int]:
    """Wall time of 20 concurrent ``get_or_create`` and the Python memory the held sessions take."""
    async with SessionManager(RUNTIME, root, max_sessions=USERS, sandbox_options={"labels": LABELS}) as manager:
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        t0 = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for index in range(USERS):
                tg.start_soon(manager.get_or_create, f"user{index}")
        elapsed = time.perf_counter() - t0
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - before
        tracemalloc.stop()
    return elapsed, held


async def _raw_once(docker: aiodocker.Docker, config: dict[str, Any]) -> float:
    containers: list[Any] = []

    async def one() -> None:
        containers.append(await docker.containers.run(config))

    t0 = time.perf_counter()
    try:
        async with anyio.create_task_group() as tg:
            for _ in range(USERS):
                tg.start_soon(one)
        return time.perf_counter() - t0
    finally:
        with anyio.CancelScope(shield=True):
            for container in containers:
                await container.delete(force=True)


async def _resume_vs_fresh(root: str, quick: bool) -> Result:
    """``get_or_create`` of a paused session (unpause) vs of a new user (a container started), alternating."""
    async with SessionManager(RUNTIME, root, max_sessions=64, sandbox_options={"labels": LABELS}) as manager:
        counter = iter(range(1_000_000))

        async def resume() -> float:
            sandbox = await manager.get_or_create("paused")
            await sandbox.pause()
            t0 = time.perf_counter()
            await (await manager.get_or_create("paused")).execute("true")
            return time.perf_counter() - t0

        async def fresh() -> float:
            user = f"fresh{next(counter)}"
            t0 = time.perf_counter()
            await (await manager.get_or_create(user)).execute("true")
            elapsed = time.perf_counter() - t0
            await manager.release(user)
            return elapsed

        ours, raw = await compare_async_samples(resume, fresh, reps=3 if quick else 9, warmup=1)
    note = "get_or_create + execute('true'): a paused session (unpause) vs a new user (create + start)"
    return Result("resume a paused session vs start a fresh one", ours, raw, Target.info(), note=note)


async def _adopt(docker: aiodocker.Docker, config: dict[str, Any], root: str) -> Result:
    """A new manager on the same workspace root taking over 20 running sessions vs 20 raw create + start."""
    first = SessionManager(RUNTIME, root, max_sessions=USERS, sandbox_options={"labels": LABELS})
    try:
        async with anyio.create_task_group() as tg:
            for index in range(USERS):
                tg.start_soon(first.get_or_create, f"user{index}")
        await first.aclose(keep_sandboxes=True)
        second = SessionManager(RUNTIME, root, max_sessions=USERS, sandbox_options={"labels": LABELS})
        t0 = time.perf_counter()
        await second.start()
        adopted = time.perf_counter() - t0
        count = len(second.sessions)
        await second.aclose()
    finally:
        await first.aclose()
    raw = await _raw_once(docker, config)
    note = f"{count} sessions adopted (list + attach each, concurrently) vs {USERS} raw concurrent create + start"
    return Result(f"adopt {USERS} running sessions after a restart", adopted, raw, Target.info(), note=note)


async def _run(quick: bool) -> list[Result]:
    try:
        host, version = await _engine.connect(None)
        image = await ensure_runtime_image(RUNTIME, progress=lambda _: None)
    except (SandboxError, OSError) as exc:
        warn(f"bench_sessions skipped: no Docker engine or base image: {exc}")
        return []
    async with aiodocker.Docker(url=host, api_version=f"v{version}") as docker:
        config = DockerSandbox(image, labels=LABELS)._container_config()  # pyright: ignore[reportPrivateUsage]
        ours_times: list[float] = []
        raw_times: list[float] = []
        held: list[int] = []
        for _ in range(2 if quick else 4):  # alternate, so both see the same machine
            with tempfile.TemporaryDirectory() as root:
                elapsed, memory = await _sessions_once(root)
            ours_times.append(elapsed)
            held.append(memory)
            raw_times.append(await _raw_once(docker, config))
        try:
            with tempfile.TemporaryDirectory() as root:
                resumed = await _resume_vs_fresh(root, quick)
            with tempfile.TemporaryDirectory() as root:
                adopted = await _adopt(docker, config, root)
        finally:  # whatever a failure left: every container of this run carries its label
            with anyio.CancelScope(shield=True):
                for container in await docker.containers.list(all=True, filters={"label": [f"{RUN_LABEL}={RUN_ID}"]}):
                    await container.delete(force=True)
    ours, raw = sorted(ours_times)[len(ours_times) // 2], sorted(raw_times)[len(raw_times) // 2]
    per_session = sorted(held)[len(held) // 2] / USERS
    return [
        resumed,
        adopted,
        Result(f"{USERS} sessions started at once, wall", ours, raw, Target.info()),
        Result(
            "Python memory per held session",
            per_session,
            0.0,
            Target.info(),
            note=f"{format_bytes(per_session)} traced per session (tracemalloc), {USERS} held",
            unit="bytes",
        ),
    ]


def run(quick: bool = False) -> list[Result]:
    return anyio.run(_run, quick)


def main() -> None:
    args = parse_args(__doc__.splitlines()[0] if __doc__ else "", sys.argv[1:])
    started = time.perf_counter()
    results = run(args.quick)
    print_table(results, f"SessionManager vs {USERS} raw concurrent create + start (medians)")
    print(f"\n{math.ceil(time.perf_counter() - started)} s")


if __name__ == "__main__":
    main()
