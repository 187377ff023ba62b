"""``FilesystemBackend.grep_raw`` on the Python standard library tree vs raw ``rg --json`` on the same tree.

The raw side runs ripgrep with the flags the backend uses (``RG_FLAGS``) as an async subprocess and only reads its
stdout to EOF; ours also parses every match record, sorts and builds the result. Match counts are checked against
the ``"type":"match"`` lines of the raw output.
"""

from __future__ import annotations

import subprocess
import sys

import anyio

from _common import Result, Target, compare_async, parse_args, print_table, warn
from _peers import peers_for
from _workloads import GREP_MANY, shared_tree
from agent_backends._grep import DEFAULT_MAX_MATCHES
from agent_backends._ripgrep import RG_FLAGS, find_rg
from agent_backends.backends.filesystem import FilesystemBackend
from agent_backends.types import GrepMatches

TREE = "a copy of the standard library (no site-packages, no __pycache__)"
MANY = GREP_MANY
FEW = r"frozenset\(\{"
_MATCH = b'{"type":"match"'


async def raw_rg(rg: str, pattern: str, cwd: str) -> list[bytes]:
    """Run ``rg --json`` like the backend does and read its stdout to EOF; the raw chunks."""
    chunks: list[bytes] = []
    argv = [rg, *RG_FLAGS, "-e", pattern, "--"]
    async with await anyio.open_process(argv, cwd=cwd, stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as process:
        assert process.stdout is not None
        async for chunk in process.stdout:
            chunks.append(chunk)
    return chunks


def count_matches(chunks: list[bytes]) -> int:
    """The number of match records (lines starting with ``{"type":"match"``) in ripgrep's JSON output."""
    data = b"".join(chunks)
    return data.count(b"\n" + _MATCH) + data.startswith(_MATCH)


async def _case(
    name: str,
    backend: FilesystemBackend,
    pattern: str,
    target: Target,
    *,
    quick: bool,
    cap: int | None,
    peers: tuple[tuple[str, float | str], ...] = (),
) -> Result:
    rg = await find_rg()
    result: GrepMatches | str = ""
    chunks: list[bytes] = []

    async def ours() -> None:
        nonlocal result
        result = await backend.grep_raw(pattern)

    async def raw() -> None:
        nonlocal chunks
        chunks = await raw_rg(rg, pattern, backend.root_dir)

    # Rounds stop after ``budget`` seconds (at least ``min_reps``): a many-match round takes seconds here.
    reps, min_reps, budget = (3, 1, 5.0) if quick else (9, 3, 12.0)
    ours_s, raw_s = await compare_async(ours, raw, reps=reps, min_reps=min_reps, budget=budget)
    expected = count_matches(chunks)
    if not isinstance(result, GrepMatches):
        warn(f"grep {pattern!r} failed: {result}")
        return Result(name, ours_s, raw_s, target, note=f"ERROR: {result}")
    shown = expected if cap is None else min(cap, expected)
    note = f"pattern {pattern!r}: {result.total:,} matches, {len(result):,} returned; raw rg: {expected:,}"
    if result.total != expected or len(result) != shown:
        warn(f"MATCH COUNT MISMATCH for {pattern!r}: ours total={result.total:,} len={len(result):,}, raw={expected:,}")
        note += "  <-- MISMATCH"
    return Result(name, ours_s, raw_s, target, note=note, peers=peers)


async def _run(quick: bool) -> list[Result]:
    tree = shared_tree()
    uncapped = FilesystemBackend(tree, max_grep_matches=None)
    capped = FilesystemBackend(tree)
    peers = peers_for(tree, quick, "grep_uncapped")
    return [
        await _case(
            "grep many matches, uncapped", uncapped, MANY, Target.ratio(1.5), quick=quick, cap=None, peers=peers
        ),
        await _case("grep few matches, uncapped", uncapped, FEW, Target.ratio(1.25), quick=quick, cap=None),
        # What a model waits for: the default cap (1,000 lines and the true total) against raw rg's whole output.
        await _case(
            f"grep many matches, capped {DEFAULT_MAX_MATCHES} (raw: all)",
            capped,
            MANY,
            Target.ratio(1.0),
            quick=quick,
            cap=DEFAULT_MAX_MATCHES,
        ),
    ]


def run(quick: bool = False) -> list[Result]:
    """Time every grep case; the rows of the table."""
    return anyio.run(_run, quick)


def main() -> None:
    args = parse_args(__doc__.splitlines()[0] if __doc__ else "", sys.argv[1:])
    print(f"tree: {TREE}")
    print_table(run(args.quick), "grep_raw vs raw rg --json")


if __name__ == "__main__":
    main()
