"""Shared helpers for the benchmarks: timing, targets, the result table and the command line.

Every benchmark times our call and the raw tool in the same run, alternating them so that drift in machine load
hits both sides alike, and reports medians after warm-up runs.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Literal

__all__ = (
    "Result",
    "Target",
    "compare_async",
    "compare_async_samples",
    "compare_samples",
    "compare_sync",
    "format_bytes",
    "format_seconds",
    "parse_args",
    "print_table",
    "timed",
    "warn",
)

TargetKind = Literal["ratio", "absolute", "overhead", "info"]
Unit = Literal["s", "bytes"]


@dataclass(frozen=True, slots=True)
class Target:
    """What a case must meet: ``ours / raw``, ``ours`` itself, or ``ours - raw`` at most ``limit``."""

    kind: TargetKind
    limit: float = 0.0

    @classmethod
    def ratio(cls, limit: float) -> Target:
        return cls("ratio", limit)

    @classmethod
    def absolute(cls, seconds: float) -> Target:
        return cls("absolute", seconds)

    @classmethod
    def overhead(cls, seconds: float) -> Target:
        return cls("overhead", seconds)

    @classmethod
    def info(cls) -> Target:
        return cls("info")

    def met(self, ours: float, raw: float) -> bool | None:
        """Whether the target is met; ``None`` for informational rows."""
        if self.kind == "ratio":
            return ours <= self.limit * raw
        if self.kind == "absolute":
            return ours <= self.limit
        if self.kind == "overhead":
            return ours - raw <= self.limit
        return None

    def __str__(self) -> str:
        if self.kind == "ratio":
            return f"<= {self.limit:g}x"
        if self.kind == "absolute":
            return f"<= {format_seconds(self.limit)}"
        if self.kind == "overhead":
            return f"<= +{format_seconds(self.limit)}"
        return "(info)"


@dataclass(frozen=True, slots=True)
class Result:
    """One row of the table: medians in seconds (per call for the per-call benchmarks), or sizes (``unit="bytes"``)."""

    case: str
    ours: float
    raw: float
    target: Target
    note: str = ""
    unit: Unit = "s"
    # The peers' figures for the same workload, measured in the same run (``_peers.py``): name to seconds, or to
    # the error text when the peer could not run it. With ``beat_peers`` the target also needs ours <= the fastest.
    peers: tuple[tuple[str, float | str], ...] = ()
    beat_peers: bool = False

    @property
    def ratio(self) -> float:
        return self.ours / self.raw if self.raw > 0 else float("inf")

    def fastest_peer(self) -> float | None:
        figures = [figure for _, figure in self.peers if isinstance(figure, float)]
        return min(figures) if figures else None

    def met(self) -> bool | None:
        """Whether the target (and, with ``beat_peers``, the fastest peer) is met; ``None`` for info rows."""
        met = self.target.met(self.ours, self.raw)
        fastest = self.fastest_peer()
        if self.beat_peers and fastest is not None:
            return (met is None or met) and self.ours <= fastest
        return met

    def verdict(self) -> str:
        met = self.met()
        if met is None:
            return ""
        if self.beat_peers and self.fastest_peer() is not None and self.ours > (self.fastest_peer() or 0.0):
            return "MISSED (slower than a peer)"
        if self.target.kind == "overhead":
            delta = f"+{format_seconds(self.ours - self.raw)}"
            return f"{delta} ok" if met else f"{delta} MISSED"
        return "ok" if met else "MISSED"


def format_seconds(seconds: float) -> str:
    """A duration with a unit that keeps three significant digits readable."""
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds * 1e6:.1f} µs"


def format_bytes(size: float) -> str:
    """A size in bytes with a binary unit."""
    for unit in ("B", "KiB", "MiB"):
        if abs(size) < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


async def compare_async(
    ours: Callable[[], Awaitable[object]],
    raw: Callable[[], Awaitable[object]],
    *,
    reps: int,
    calls: int = 1,
    warmup: int = 1,
    min_reps: int = 3,
    budget: float | None = None,
) -> tuple[float, float]:
    """Median seconds per call of ``ours()`` and ``raw()``, awaited in alternating rounds after ``warmup`` rounds.

    Each round times ``calls`` back-to-back calls of each side. With ``budget`` (seconds), stops early once that
    much time went by and ``min_reps`` rounds are in.
    """

    async def sample(fn: Callable[[], Awaitable[object]]) -> float:
        t0 = time.perf_counter()
        for _ in range(calls):
            await fn()
        return (time.perf_counter() - t0) / calls

    return await compare_async_samples(
        lambda: sample(ours), lambda: sample(raw), reps=reps, warmup=warmup, min_reps=min_reps, budget=budget
    )


async def compare_async_samples(
    ours: Callable[[], Awaitable[float]],
    raw: Callable[[], Awaitable[float]],
    *,
    reps: int,
    warmup: int = 1,
    min_reps: int = 3,
    budget: float | None = None,
) -> tuple[float, float]:
    """Medians of async samplers awaited in alternating rounds after ``warmup`` rounds; each returns seconds.

    For a call whose setup or teardown must stay out of the timing: the sampler times only its own part. With
    ``budget`` (seconds), stops early once that much time went by and ``min_reps`` rounds are in.
    """
    for _ in range(warmup):
        await ours()
        await raw()
    ours_samples: list[float] = []
    raw_samples: list[float] = []
    started = time.perf_counter()
    for index in range(reps):
        if index % 2 == 0:
            ours_samples.append(await ours())
            raw_samples.append(await raw())
        else:
            raw_samples.append(await raw())
            ours_samples.append(await ours())
        if budget is not None and index + 1 >= min_reps and time.perf_counter() - started > budget:
            break
    return statistics.median(ours_samples), statistics.median(raw_samples)


def compare_samples(
    ours: Callable[[], float], raw: Callable[[], float], *, reps: int, warmup: int = 1
) -> tuple[float, float]:
    """Medians of samplers called in alternating rounds after ``warmup`` rounds; each returns seconds per call."""
    for _ in range(warmup):
        ours()
        raw()
    ours_samples: list[float] = []
    raw_samples: list[float] = []
    for index in range(reps):
        if index % 2 == 0:
            ours_samples.append(ours())
            raw_samples.append(raw())
        else:
            raw_samples.append(raw())
            ours_samples.append(ours())
    return statistics.median(ours_samples), statistics.median(raw_samples)


def timed(fn: Callable[[], object], calls: int) -> Callable[[], float]:
    """A sampler timing ``calls`` back-to-back calls of ``fn``, returning seconds per call."""

    def sample() -> float:
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        return (time.perf_counter() - t0) / calls

    return sample


def compare_sync(
    ours: Callable[[], object], raw: Callable[[], object], *, reps: int, calls: int = 1, warmup: int = 1
) -> tuple[float, float]:
    """Median seconds per call of ``ours()`` and ``raw()``, like ``compare_async`` for blocking calls."""
    return compare_samples(timed(ours, calls), timed(raw, calls), reps=reps, warmup=warmup)


def print_table(results: Sequence[Result], title: str | None = None) -> None:
    """Print the results as an aligned table, then any notes."""
    peer_names = list(dict.fromkeys(name for r in results for name, _ in r.peers))
    header = ("case", "ours (median)", "raw (median)", "ratio", *peer_names, "target", "")

    def value(result: Result, amount: float) -> str:
        return format_bytes(amount) if result.unit == "bytes" else format_seconds(amount)

    def peer(result: Result, name: str) -> str:
        figure = dict(result.peers).get(name)
        if figure is None:
            return "n/a"
        return value(result, figure) if isinstance(figure, float) else "failed"

    def target(result: Result) -> str:
        return f"{result.target}, <= fastest peer" if result.beat_peers else str(result.target)

    rows = [
        (
            r.case,
            value(r, r.ours),
            value(r, r.raw),
            f"{r.ratio:.2f}x",
            *(peer(r, name) for name in peer_names),
            target(r),
            r.verdict(),
        )
        for r in results
    ]
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    aligns = ("<", ">", ">", ">", *(">" for _ in peer_names), "<", "<")

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            f"{cell:{align}{width}}" for cell, align, width in zip(cells, aligns, widths, strict=True)
        ).rstrip()

    if title:
        print(f"\n{title}")
    print(line(header))
    print(line(["-" * w for w in widths]))
    for row in rows:
        print(line(row))
    notes = [f"  {r.case}: {r.note}" for r in results if r.note]
    if notes:
        print("notes:")
        print("\n".join(notes))


def warn(message: str) -> None:
    """Print a problem loudly, on stderr, so it is not lost in the table."""
    print(f"\n!!! {message} !!!\n", file=sys.stderr, flush=True)


def parse_args(description: str, argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The options every benchmark takes: ``--quick`` for fewer repetitions."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (a rough number, fast)")
    return parser.parse_args(argv)
