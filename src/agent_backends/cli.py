"""``agent-backends``: the command line. ``demo`` tours the backends on a temporary directory (or ``--dir``).

Every step prints the call it makes and what came back, exactly as an agent's tool loop would see it.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Awaitable, Sequence
from pathlib import Path
from typing import Any

import anyio

from agent_backends.backends.composite import CompositeBackend
from agent_backends.backends.filesystem import FilesystemBackend
from agent_backends.backends.state import StateBackend

__all__ = ("main",)

_SAMPLE = '''"""A tiny module for the tour."""


def greet(name):
    return "Hello, " + name


def farewell(name):
    return "Goodbye, " + name
'''


async def _show(call: str, result: Awaitable[Any]) -> Any:
    value = await result
    shown = value if isinstance(value, str) else repr(value)
    print(f"\n>>> {call}")
    print("\n".join(f"    {line}" for line in str(shown).splitlines()) or "    (nothing)")
    return value


async def _tour(root: Path) -> None:
    print(f"agent-backends tour: a FilesystemBackend rooted at {root}, a StateBackend for /scratch/")
    disk = FilesystemBackend(root)
    await _show('write("/src/greet.py", ...)', disk.write("/src/greet.py", _SAMPLE))
    await _show('read("/src/greet.py", offset=3, limit=3)', disk.read("/src/greet.py", offset=3, limit=3))
    await _show('edit("/src/greet.py", \'"Hello, "\', \'"Hi, "\')', disk.edit("/src/greet.py", '"Hello, "', '"Hi, "'))
    await _show('edit("/src/greet.py", "name", "who")', disk.edit("/src/greet.py", "name", "who"))
    await _show('grep_raw(r"def \\w+", glob="*.py")', disk.grep_raw(r"def \w+", glob="*.py"))
    await _show('read("../etc/passwd")', disk.read("../etc/passwd"))

    backend = CompositeBackend(default=disk, routes={"/scratch/": StateBackend()})
    await _show('composite.write("/scratch/notes.md", ...)', backend.write("/scratch/notes.md", "# notes\n- def x\n"))
    await _show('composite.glob_info("**/*")', backend.glob_info("**/*"))
    await _show('composite.grep_raw("def")', backend.grep_raw("def"))

    virtual = FilesystemBackend(root, virtual_mode=True)
    await _show('virtual.write("/src/greet.py", "overwritten")', virtual.write("/src/greet.py", "overwritten\n"))
    await _show('virtual.read("/src/greet.py")', virtual.read("/src/greet.py"))
    await _show('disk.read("/src/greet.py", limit=2)  # the disk is untouched', disk.read("/src/greet.py", limit=2))
    print("\nDone. Every call above is awaitable; each backend class also has a blocking Sync twin.")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``agent-backends`` console script."""
    parser = argparse.ArgumentParser(prog="agent-backends", description="Backends for AI agents: files and code.")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="tour the backends on a temporary directory")
    demo.add_argument("--dir", type=Path, help="use this directory instead of a temporary one")
    args = parser.parse_args(argv)
    if args.command == "demo":
        if args.dir is not None:
            anyio.run(_tour, args.dir.resolve())
        else:
            with tempfile.TemporaryDirectory(prefix="agent-backends-demo-") as tmp:
                anyio.run(_tour, Path(tmp))
    return 0


if __name__ == "__main__":
    sys.exit(main())
