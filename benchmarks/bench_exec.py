"""``DockerSandbox`` execution, file transfer and start vs the raw aiodocker calls they stand for, in the same run.

Ours and raw share one container (started by ours); the raw side talks to the engine through an aiodocker client of
its own. Raw exec = ``container.exec(argv)`` + ``start(detach=False)`` read to EOF + one ``exec.inspect()`` for the
exit code; ours also runs the command under its process-group wrapper (``sh -c`` + ``setsid`` + a leader shell). Raw
files = ``put_archive`` of a tar built in memory + ``get_archive``; ours also stats the path first (``HEAD``). Raw
start = ``docker.containers.run`` (create + start) with the config the sandbox builds, on a client already connected;
ours is a new ``DockerSandbox`` and its first operation's start (``start()``, which every first operation runs: a new
client, create, start). Teardown is left out of the start timings (but done), except in the start + stop row:
``start()`` then ``stop()`` against create + start + ``delete(force=True)``, the whole life on both sides.

A 10 ms ticker runs during the concurrent execs; its worst lateness is split into the part the loop was busy on the
CPU (our code, GC) and the rest (the process waiting for a CPU). Info rows: Python CPU per concurrent round, the peak
Python memory of a 10 MB ``execute`` (tracemalloc, one untimed run), and how long a timed-out ``execute`` takes to
return (the kill path).

Every container carries the label ``agent-backends.bench=1`` and one naming this run, and whatever this run created
is removed at the end even after a failure. The image is busybox by default (fast to start and exec);
``BENCH_DOCKER_IMAGE`` picks another.
"""

from __future__ import annotations

import io
import math
import os
import statistics
import sys
import tarfile
import time
import tracemalloc
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiodocker
import anyio
from aiodocker.containers import DockerContainer

from _common import Result, Target, compare_async, compare_async_samples, format_seconds, parse_args, print_table, warn
from agent_backends import DockerSandbox, EngineUnavailableError
from agent_backends.backends import _engine

IMAGE = os.environ.get("BENCH_DOCKER_IMAGE", "agent-backends-test/busybox:latest")
RUN_LABEL = "agent-backends.bench.run"
RUN_ID = uuid.uuid4().hex
LABELS = {"agent-backends.bench": "1", RUN_LABEL: RUN_ID}

CONCURRENCY = 16
TICK = 0.010
BIG_BYTES = 10_000_000
BIG = f"head -c {BIG_BYTES} /dev/zero | tr '\\0' x"
KILL_AFTER = 0.3
FILE_BYTES = 1024 * 1024
FILE_DATA = bytes(range(256)) * (FILE_BYTES // 256)


async def raw_exec(container: DockerContainer, argv: list[str]) -> tuple[int | None, int]:
    """One exec the plain aiodocker way: create, start attached, read every frame to EOF, inspect once.

    Returns the exit code and the number of output bytes (the frames themselves are dropped).
    """
    run = await container.exec(argv, stdout=True, stderr=True)
    size = 0
    async with run.start(detach=False) as stream:
        while (message := await stream.read_out()) is not None:
            size += len(message.data)
    state = await run.inspect()
    return state.get("ExitCode"), size


def tar_of(name: str, data: bytes) -> bytes:
    """A one-file tar archive, in memory."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        entry = tarfile.TarInfo(name)
        entry.size, entry.mode, entry.mtime = len(data), 0o644, int(time.time())
        tar.addfile(entry, io.BytesIO(data))
    return buffer.getvalue()


async def raw_write_read(container: DockerContainer, directory: str, name: str, data: bytes) -> bytes:
    """``put_archive`` of a tar built here, then ``get_archive`` of the same file; its bytes."""
    await container.put_archive(directory, tar_of(name, data))  # pyright: ignore[reportUnknownMemberType]
    with await container.get_archive(f"{directory}/{name}") as archive:
        member = archive.next()
        handle = archive.extractfile(member) if member is not None else None
        return handle.read() if handle is not None else b""


@dataclass(frozen=True, slots=True)
class Lag:
    """A ticker's worst lateness, and how much of it this thread spent on the CPU (the loop busy, GC included)."""

    late: float
    busy: float


async def with_ticker(work: Callable[[], Awaitable[object]]) -> Lag:
    """Run ``work`` while a ``TICK`` ticker runs on the same loop; the ticker's worst lateness.

    ``busy`` bounds the part of a late tick the event loop itself was busy (thread CPU time in that interval): the
    rest of the lateness is the process waiting for a CPU, not our code blocking the loop.
    """
    late = busy = 0.0

    async def tick() -> None:
        nonlocal late, busy
        while True:
            t0, cpu0 = time.perf_counter(), time.thread_time()
            await anyio.sleep(TICK)
            lateness = time.perf_counter() - t0 - TICK
            late = max(late, lateness)
            busy = max(busy, min(lateness, time.thread_time() - cpu0))

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(tick)
        await work()
        tasks.cancel_scope.cancel()
    return Lag(late, busy)


async def concurrently(count: int, work: Callable[[], Awaitable[object]]) -> None:
    async with anyio.create_task_group() as tasks:
        for _ in range(count):
            tasks.start_soon(work)


async def _exec_true(sandbox: DockerSandbox, container: DockerContainer, quick: bool) -> Result:
    codes: list[int | None] = []

    async def ours() -> None:
        codes.append((await sandbox.execute("true")).exit_code)

    async def raw() -> None:
        codes.append((await raw_exec(container, ["true"]))[0])

    reps, budget = (10, 3.0) if quick else (41, 8.0)
    ours_s, raw_s = await compare_async(ours, raw, reps=reps, warmup=3, min_reps=5, budget=budget)
    if set(codes) != {0}:
        warn(f"execute('true') exit codes: {sorted(set(codes), key=str)}")
    note = "3 API calls on each side (exec create, start, inspect); ours runs sh -c wrapper + setsid + sh -c true"
    return Result("execute('true') round trip", ours_s, raw_s, Target.ratio(1.15), note=note)


async def _exec_concurrent(sandbox: DockerSandbox, container: DockerContainer, quick: bool) -> list[Result]:
    lags: dict[str, list[Lag]] = {"ours": [], "raw": []}
    cpu: dict[str, list[float]] = {"ours": [], "raw": []}
    codes: list[int | None] = []

    async def ours_one() -> None:
        codes.append((await sandbox.execute("sleep 1")).exit_code)

    async def raw_one() -> None:
        codes.append((await raw_exec(container, ["sleep", "1"]))[0])

    def round_of(side: str, one: Callable[[], Awaitable[None]]) -> Callable[[], Awaitable[None]]:
        async def run_round() -> None:
            cpu0 = time.process_time()
            lags[side].append(await with_ticker(lambda: concurrently(CONCURRENCY, one)))
            cpu[side].append(time.process_time() - cpu0)

        return run_round

    reps = 2 if quick else 5
    ours_s, raw_s = await compare_async(round_of("ours", ours_one), round_of("raw", raw_one), reps=reps, warmup=1)
    if set(codes) != {0}:
        warn(f"execute('sleep 1') exit codes: {sorted(set(codes), key=str)}")
    measured = {side: found[1:] for side, found in lags.items()}  # the first of each was the warm-up round
    worst = {side: max(found, key=lambda lag: lag.late) for side, found in measured.items()}
    busiest = {side: max(lag.busy for lag in found) for side, found in measured.items()}
    rounds = len(measured["ours"])
    lag_note = (
        f"worst tick over {rounds} rounds; raw column: the same ticker during the raw execs. Of that worst tick, "
        f"at most {worst['ours'].busy * 1e3:.1f} ms (raw {worst['raw'].busy * 1e3:.1f} ms) was the loop busy on "
        f"the CPU; the rest is the process waiting for one of the {os.cpu_count()} CPUs the engine and its runc "
        "execs also use"
    )
    return [
        Result(f"{CONCURRENCY}x execute('sleep 1') concurrent, wall", ours_s, raw_s, Target.ratio(1.1)),
        Result(
            f"event-loop lag, {TICK * 1e3:g} ms ticker during {CONCURRENCY}x",
            worst["ours"].late,
            worst["raw"].late,
            Target.absolute(0.020),
            note=lag_note,
        ),
        Result(
            f"loop busy on CPU, worst tick during {CONCURRENCY}x",
            busiest["ours"],
            busiest["raw"],
            Target.info(),
            note="max over ticks of min(lateness, thread CPU time in that tick): our code or GC blocking the loop",
        ),
        Result(
            f"Python CPU time per {CONCURRENCY}x round",
            statistics.median(cpu["ours"][1:]),
            statistics.median(cpu["raw"][1:]),
            Target.info(),
        ),
    ]


async def _big_output(sandbox: DockerSandbox, container: DockerContainer, quick: bool) -> list[Result]:
    ours_out: list[tuple[int | None, int, bool]] = []
    raw_out: list[tuple[int | None, int]] = []

    async def ours() -> None:
        response = await sandbox.execute(BIG)
        ours_out.append((response.exit_code, len(response.output), response.truncated))

    async def raw() -> None:
        raw_out.append(await raw_exec(container, ["/bin/sh", "-c", BIG]))

    reps, budget = (5, 3.0) if quick else (15, 10.0)
    ours_s, raw_s = await compare_async(ours, raw, reps=reps, warmup=2, min_reps=5, budget=budget)
    if {code for code, _, _ in ours_out} != {0} or not all(truncated for _, _, truncated in ours_out):
        warn(f"execute(10 MB) did not exit 0 truncated: {ours_out[:3]}")
    if set(raw_out) != {(0, BIG_BYTES)}:
        warn(f"raw 10 MB exec: (exit code, bytes) {sorted(set(raw_out), key=str)}")

    # One more run of ours under tracemalloc (which slows it down, so it is not timed): the peak growth.
    tracemalloc.start()
    try:
        start, _ = tracemalloc.get_traced_memory()
        response = await sandbox.execute(BIG)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    cap = sandbox.max_output_chars
    return [
        Result(
            f"execute({BIG_BYTES / 1e6:g} MB output), default cap",
            ours_s,
            raw_s,
            Target.ratio(1.3),
            note=f"ours kept {len(response.output):,} chars (max_output_chars={cap:,}); raw read and dropped it all",
        ),
        Result(
            f"peak Python memory growth during {BIG_BYTES / 1e6:g} MB execute",
            peak - start,
            BIG_BYTES,
            Target.info(),
            note="tracemalloc peak over one execute; raw column = the bytes printed",
            unit="bytes",
        ),
    ]


async def _files(sandbox: DockerSandbox, container: DockerContainer, quick: bool) -> Result:
    mismatches = 0

    async def ours() -> None:
        nonlocal mismatches
        written = await sandbox.write("/tmp/bench-ours.bin", FILE_DATA)
        if written.error:
            raise RuntimeError(written.error)
        mismatches += await sandbox.read_bytes("/tmp/bench-ours.bin") != FILE_DATA

    async def raw() -> None:
        nonlocal mismatches
        mismatches += await raw_write_read(container, "/tmp", "bench-raw.bin", FILE_DATA) != FILE_DATA

    reps, budget = (5, 3.0) if quick else (21, 10.0)
    ours_s, raw_s = await compare_async(ours, raw, reps=reps, warmup=2, min_reps=5, budget=budget)
    if mismatches:
        warn(f"{mismatches} write + read round trips came back different")
    note = "ours: HEAD stat + put_archive, HEAD stat + get_archive; raw: put_archive + get_archive"
    return Result(f"write + read_bytes {FILE_BYTES // 1024} KiB", ours_s, raw_s, Target.ratio(1.3), note=note)


async def _timeout_kill(sandbox: DockerSandbox, exec_round_trip: float, quick: bool) -> Result:
    samples: list[float] = []
    for _ in range(2 if quick else 3):
        t0 = time.perf_counter()
        response = await sandbox.execute("sleep 5", timeout=KILL_AFTER)
        samples.append(time.perf_counter() - t0)
        if not response.timed_out:
            warn(f"execute('sleep 5', timeout={KILL_AFTER:g}) did not time out: {response}")
    ideal = KILL_AFTER + exec_round_trip
    note = (
        f"raw column: the timeout itself; the least a kill costs is one more exec, about {format_seconds(ideal)} "
        f"in all (timeout + the raw exec round trip above); {len(samples)} runs"
    )
    return Result(
        f"execute('sleep 5', timeout={KILL_AFTER:g}) returns after",
        statistics.median(samples),
        KILL_AFTER,
        Target.info(),
        note=note,
    )


async def _start(docker: aiodocker.Docker, quick: bool) -> Result:
    config: dict[str, Any] = DockerSandbox(IMAGE, labels=LABELS)._container_config()  # pyright: ignore[reportPrivateUsage]

    async def ours() -> float:
        t0 = time.perf_counter()
        sandbox = DockerSandbox(IMAGE, labels=LABELS)  # no I/O: the first operation starts it
        try:
            await sandbox.start()
            return time.perf_counter() - t0
        finally:
            await sandbox.aclose()

    async def raw() -> float:
        t0 = time.perf_counter()
        container = await docker.containers.run(config)
        elapsed = time.perf_counter() - t0
        with anyio.CancelScope(shield=True):
            await container.delete(force=True)
        return elapsed

    reps, budget = (3, 3.0) if quick else (11, 8.0)
    ours_s, raw_s = await compare_async_samples(ours, raw, reps=reps, warmup=1, min_reps=3, budget=budget)
    note = "ours: new client + create + start (the first operation's start); raw: create + start; no teardown"
    return Result("first-operation start vs containers.run", ours_s, raw_s, Target.ratio(1.2), note=note)


async def _start_stop(docker: aiodocker.Docker, quick: bool) -> Result:
    """The whole life of a sandbox (issue 12): ``DockerSandbox(...).start()`` then ``stop()`` vs raw create + start
    + delete (``containers.run`` then ``delete(force=True)``) with the same config, teardown included on both."""
    config: dict[str, Any] = DockerSandbox(IMAGE, labels=LABELS)._container_config()  # pyright: ignore[reportPrivateUsage]

    async def ours() -> float:
        t0 = time.perf_counter()
        sandbox = DockerSandbox(IMAGE, labels=LABELS)
        try:
            await sandbox.start()
        finally:
            await sandbox.stop()
        return time.perf_counter() - t0

    async def raw() -> float:
        t0 = time.perf_counter()
        container = await docker.containers.run(config)
        with anyio.CancelScope(shield=True):
            await container.delete(force=True)
        return time.perf_counter() - t0

    reps, budget = (3, 4.0) if quick else (11, 10.0)
    ours_s, raw_s = await compare_async_samples(ours, raw, reps=reps, warmup=1, min_reps=3, budget=budget)
    note = "ours: new client + create + start + remove; raw: create + start + delete(force) on a connected client"
    return Result("start() + stop() vs create + start + delete", ours_s, raw_s, Target.ratio(1.2), note=note)


async def remove_run_containers(docker: aiodocker.Docker) -> int:
    """Force-remove every container labelled with this run; how many there were.

    A container already gone (404) or already being removed (409, e.g. a delete cut short by Ctrl-C) is no error.
    """
    containers = await docker.containers.list(all=True, filters={"label": [f"{RUN_LABEL}={RUN_ID}"]})
    for container in containers:
        try:
            await container.delete(force=True)
        except aiodocker.DockerError as exc:
            if exc.status not in (404, 409):
                raise
    return len(containers)


async def _run(quick: bool) -> list[Result]:
    try:
        docker = aiodocker.Docker(url=_engine.resolve_host(None))
    except EngineUnavailableError as exc:  # no socket to talk to
        warn(f"bench_exec skipped: {exc}")
        return []
    failed = True
    try:
        try:
            await docker.images.inspect(IMAGE)
        except (aiodocker.DockerError, OSError) as exc:
            warn(f"bench_exec skipped: image {IMAGE!r} or the Docker engine is not available: {exc}")
            failed = False
            return []
        results: list[Result] = []
        async with DockerSandbox(IMAGE, labels=LABELS) as sandbox:
            container = docker.containers.container(sandbox.container_id or sandbox.id)
            round_trip = await _exec_true(sandbox, container, quick)
            results.append(round_trip)
            results += await _exec_concurrent(sandbox, container, quick)
            results += await _big_output(sandbox, container, quick)
            results.append(await _files(sandbox, container, quick))
            results.append(await _timeout_kill(sandbox, round_trip.raw, quick))
        results.append(await _start(docker, quick))
        results.append(await _start_stop(docker, quick))
        failed = False
        return results
    finally:
        with anyio.CancelScope(shield=True):
            try:
                left = await remove_run_containers(docker)
                if failed:  # a create cut short may still land on the engine: look once more
                    await anyio.sleep(1.0)
                    left += await remove_run_containers(docker)
                if left:
                    warn(f"removed {left} container(s) this run left behind")
            finally:
                await docker.close()


def run(quick: bool = False) -> list[Result]:
    """Time every Docker case; the rows of the table (none, with a warning, when Docker is not available)."""
    return anyio.run(_run, quick)


def describe() -> str:
    """The image and what runs where, for the header of the output."""
    return f"docker image for exec: {IMAGE} (busybox by default: fast; BENCH_DOCKER_IMAGE picks another)"


def main() -> None:
    args = parse_args(__doc__.splitlines()[0] if __doc__ else "", sys.argv[1:])
    print(describe(), flush=True)
    started = time.perf_counter()
    results = run(args.quick)
    print_table(results, "DockerSandbox vs raw aiodocker (medians; same container, alternating rounds)")
    print(f"\n{math.ceil(time.perf_counter() - started)} s")


if __name__ == "__main__":
    main()
