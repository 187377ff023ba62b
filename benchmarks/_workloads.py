"""The workloads every side of the comparison runs: ours, the raw tool and the peers (standard library only, so the
peers' separate environment can import it too).
"""

from __future__ import annotations

import os
import shutil
import sysconfig
import tempfile

__all__ = (
    "GREP_CAPPED_LIMIT",
    "GREP_MANY",
    "GLOB_PATTERN",
    "MEM_DIR",
    "MEM_FILES",
    "MEM_GREP",
    "EDIT_PATH",
    "EDIT_CONTENT",
    "EDITS",
    "memory_files",
    "shared_tree",
    "stdlib_copy",
)

MEM_DIR = "/dir"
MEM_FILES = 1000
MEM_GREP = "TODO"  # one matching line per file: 1,000 matches
GLOB_PATTERN = "**/*.py"
GREP_MANY = "return "  # 22,881 matching lines in the CPython 3.11 standard library
GREP_CAPPED_LIMIT = 1000

EDIT_PATH = "/src/module.py"
EDIT_CONTENT = "".join(f"def function_{n}(alpha, beta):\n    return alpha + beta * {n}\n" for n in range(10))
EDITS = (("function_3", "renamed_3"), ("renamed_3", "function_3"))


def memory_files() -> dict[str, str]:
    """``MEM_FILES`` files of 10 lines in ``MEM_DIR``, one of them holding ``MEM_GREP``."""
    body = "".join(f"def function_{n}(alpha, beta):\n    return alpha + beta * {n}\n" for n in range(4))
    return {f"{MEM_DIR}/file_{i:04d}.py": f"{body}# TODO: item {i}\nx = {i}\n" for i in range(MEM_FILES)}


def stdlib_copy() -> str:
    """A copy of this interpreter's standard library in a new temporary directory, without ``site-packages`` and
    ``__pycache__`` (so what is searched does not depend on what is installed or was imported); the caller removes
    it."""
    target = os.path.join(tempfile.mkdtemp(prefix="bench-stdlib-"), "lib")
    ignore = shutil.ignore_patterns("site-packages", "__pycache__")
    shutil.copytree(sysconfig.get_paths()["stdlib"], target, ignore=ignore, symlinks=True)
    return target


_tree: list[str] = []


def shared_tree() -> str:
    """One ``stdlib_copy`` per process, removed at exit: the tree every grep and glob case (and the peers) search."""
    if not _tree:
        import atexit

        _tree.append(stdlib_copy())
        atexit.register(shutil.rmtree, os.path.dirname(_tree[0]), True)
    return _tree[0]
