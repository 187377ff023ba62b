"""Every code example in the docs runs in the test suite.

Each fenced ``python`` block of ``docs/*.md`` and ``README.md`` is one test, named ``file:line``, run against the
real library in a temporary working directory. The blocks are written for a reader, so before running:

- a block's namespace already holds everything ``agent_backends`` exports (fragments like
  ``CompositeBackend(default=StateBackend(), ...)`` need no import lines);
- a block with top-level ``await`` or ``async with`` is compiled as the body of a coroutine and run with anyio;
- a block that uses Docker runs only where ``require_docker()`` lets it (a skip locally, a failure in CI), on the
  local test image instead of ``python:3.12-slim`` (which has ``python3`` but no ``python``), and every sandbox it
  makes carries the test session's labels, so the leftover check in ``conftest.py`` sees it.

A block that cannot run here is marked in the markdown by an HTML comment on the line right before its fence,
``<!-- not-run: why -->``; such blocks are not collected at all. ``test_every_not_run_marker_has_a_reason`` checks
that each marker gives a reason and stands before a python block, and lists them (``-ra`` summary and the
``not-run`` user properties).
"""

from __future__ import annotations

import ast
import inspect
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest

import agent_backends
from tests.conftest import LABELS, PYTHON_IMAGE, require_docker

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

FENCE = re.compile(r"^(?P<indent>[ \t]*)```(?P<info>[^`\n]*)$")
MARKER = re.compile(r"^\s*<!--\s*not-run\b:?(?P<reason>.*?)-->\s*$")
DOCKER_NAMES = ("DockerSandbox", "SessionManager", "remove_leftover_sandboxes")

# Textual substitutions for blocks that use Docker: the examples name the public image; the tests have their own.
DOCKER_SUBSTITUTIONS = {
    '"python:3.12-slim"': repr(PYTHON_IMAGE),
    '"python ': '"python3 ',
}
# Substitutions for blocks on the host: no fixed port, and the interpreter running the tests.
HOST_SUBSTITUTIONS = {
    '"python -m http.server 8000"': repr(f"{sys.executable} -m http.server 0 --bind 127.0.0.1"),
}


@dataclass(frozen=True)
class Block:
    page: Path
    line: int  # 1-based line of the opening fence
    code: str
    not_run: str | None  # the marker's reason ("" for a marker without one); None when the block runs

    @property
    def id(self) -> str:
        return f"{self.page.relative_to(ROOT).as_posix()}:{self.line}"

    @property
    def needs_docker(self) -> bool:
        return any(name in self.code for name in DOCKER_NAMES)


def _blocks(page: Path) -> Iterator[Block]:
    lines = page.read_text(encoding="utf-8").splitlines()
    index = 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        if opening is None:
            index += 1
            continue
        end = index + 1
        while end < len(lines) and not FENCE.match(lines[end]):
            end += 1
        if opening["info"].strip().split(" ")[0] == "python":
            previous = next((line for line in reversed(lines[:index]) if line.strip()), "")
            marker = MARKER.match(previous)
            indent = len(opening["indent"])
            body = "\n".join(line[indent:] for line in lines[index + 1 : end])
            yield Block(page, index + 1, body + "\n", marker["reason"].strip() if marker else None)
        index = end + 1


BLOCKS = [block for page in PAGES for block in _blocks(page)]
RUNNABLE = [block for block in BLOCKS if block.not_run is None]
NOT_RUN = [block for block in BLOCKS if block.not_run is not None]


class _LabelledDockerSandbox(agent_backends.DockerSandbox):
    """``DockerSandbox`` with the test session's labels, and the test image when the example names none."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("labels", LABELS)
        if not args and "image" not in kwargs:
            kwargs["image"] = PYTHON_IMAGE
        super().__init__(*args, **kwargs)


def _source(block: Block) -> str:
    code = block.code
    for old, new in (DOCKER_SUBSTITUTIONS if block.needs_docker else HOST_SUBSTITUTIONS).items():
        code = code.replace(old, new)
    return code


@pytest.mark.parametrize("block", RUNNABLE, ids=[block.id for block in RUNNABLE])
def test_example_runs(block: Block, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if block.needs_docker:
        require_docker()
        monkeypatch.setattr(agent_backends, "DockerSandbox", _LabelledDockerSandbox)
        monkeypatch.setattr(agent_backends.sync, "DockerSandbox", _LabelledDockerSandbox)  # what the twin builds
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, Any] = {"__name__": "__docs_example__"}
    for name in agent_backends.__all__:
        try:
            namespace[name] = getattr(agent_backends, name)
        except ImportError:  # an optional extra's export (imported on first use) that is not installed
            continue
    code = compile(_source(block), block.id, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    if code.co_flags & inspect.CO_COROUTINE:

        async def run() -> None:
            await eval(code, namespace)

        anyio.run(run)
    else:
        exec(code, namespace)


def test_examples_are_found() -> None:
    """The extraction itself works: the README's examples and the getting-started page's are among the tests."""
    ids = {block.id for block in RUNNABLE}
    assert any(block_id.startswith("README.md:") for block_id in ids)
    assert any(block_id.startswith("docs/getting-started.md:") for block_id in ids)


def test_every_not_run_marker_has_a_reason(record_property: Any) -> None:
    """Each ``<!-- not-run: ... -->`` gives a reason and stands right before a python block; lists them all."""
    problems = [f"{block.id}: a not-run marker without a reason" for block in NOT_RUN if not block.not_run]
    marked = {(block.page, block.line) for block in NOT_RUN}
    for page in PAGES:
        lines = page.read_text(encoding="utf-8").splitlines()
        for number, line in enumerate(lines, 1):
            if "not-run" in line and line.lstrip().startswith("<!--"):
                following = next((n for n in range(number, len(lines)) if lines[n].strip()), None)
                if following is None or (page, following + 1) not in marked:
                    problems.append(f"{page.relative_to(ROOT).as_posix()}:{number}: not right before a python block")
    assert not problems, "\n".join(problems)
    for block in NOT_RUN:
        record_property(f"not-run {block.id}", block.not_run)


def test_api_reference_covers_every_export() -> None:
    """``docs/api.md`` has a ``:::`` block for each name in ``agent_backends.__all__`` (or for its module)."""
    api = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"^::: agent_backends\.(\w+)", api, flags=re.MULTILINE))
    sync_members = set(re.findall(r"^        - (Sync\w+)$", api, flags=re.MULTILINE))
    exceptions = {name for name, value in vars(agent_backends.exceptions).items() if isinstance(value, type)}
    missing = [
        name
        for name in agent_backends.__all__
        if name not in documented
        and name not in sync_members
        and not ("exceptions" in documented and name in exceptions)
    ]
    assert not missing, f"add these to docs/api.md: {missing}"
