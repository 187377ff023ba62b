"""Hostile arguments get one clear answer from this library on every backend: an ``"Error: ..."`` value where the
method returns error values, an exception from its tree where it raises; never a foreign exception, a hang or a
crash. Real ripgrep, real processes, real containers (when Docker is up)."""

from __future__ import annotations

import math
import os
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest

from agent_backends import (
    DockerSandbox,
    GrepMatch,
    GrepMatches,
    InvalidArgumentError,
    InvalidPathError,
    LocalBackend,
    PathPermissionError,
    SandboxNotStartedError,
    SyncFilesystemBackend,
    SyncLocalBackend,
    SyncStateBackend,
    _ripgrep,
)
from agent_backends._glob import MAX_GLOB_CHARS
from tests.conftest import (
    EXEC_KINDS,
    KINDS,
    LABELS,
    PYTHON_IMAGE,
    Factory,
    ShellSandbox,
    Threaded,
    _base,
    at,
    require_docker,
)

pytestmark = pytest.mark.anyio


class RgShellSandbox(ShellSandbox):
    """The smallest ``BaseSandbox`` with ``rg`` on its shell's PATH: its grep takes the in-sandbox ripgrep route
    (pattern in argv, or in a file when long; output through ``execute``, streams merged)."""

    def __init__(self, work_dir: str, **kwargs: Any) -> None:
        super().__init__(work_dir, **kwargs)
        rg = _ripgrep._locate_rg()  # pyright: ignore[reportPrivateUsage]
        assert rg is not None
        self._host = LocalBackend("/", env={"PATH": f"{os.path.dirname(rg)}:{os.environ.get('PATH', '')}"})


@pytest.fixture(params=[*KINDS, "rg-shell-sandbox"])
def kind(request: pytest.FixtureRequest) -> str:
    """Every backend kind, plus a shell sandbox that greps with ripgrep inside."""
    kind = str(request.param)
    if "docker" in kind:
        require_docker()
    elif kind in ("podman", "gvisor"):
        require_docker(kind)
    return kind


@pytest.fixture
async def make(make: Factory, kind: str, tmp_path: Path) -> AsyncIterator[Factory]:
    if kind != "rg-shell-sandbox":
        yield make
        return
    counter = iter(range(1_000_000))

    async def factory(**kwargs: Any) -> Any:
        root = tmp_path / f"rg{next(counter)}"
        root.mkdir()
        _base[0] = str(root)
        return RgShellSandbox(str(root), **kwargs)

    yield factory


def hits(matches: list[GrepMatch] | str) -> list[tuple[str, int, str]]:
    assert not isinstance(matches, str), matches[:500]
    return [(m.path, m.line_number, m.line) for m in matches]


# --- grep patterns ---------------------------------------------------------------------------------------------

BAD_PATTERNS = {
    "NUL": "ab\x00c",
    "NUL alone": "\x00",
    "newline": "needle\nother",
    "carriage return": "needle\r",
    "600 nested groups": "(" * 600 + "a" + ")" * 600,
    "600 nested classes": "[" * 600 + "a" + "]" * 600,
    "130 nested groups of two": "(a" * 130 + ")" * 130,
    "lone surrogate": "needle\ud800",
    "200 KB, unclosed": "(" + "x" * 200_000,
}


@pytest.mark.parametrize("name", list(BAD_PATTERNS))
async def test_a_bad_pattern_is_one_short_error_value_everywhere(backend: Any, name: str) -> None:
    pattern = BAD_PATTERNS[name]
    await backend.write(at("/p/a.txt"), "needle\nab c\n")
    for path in (at("/p"), at("/p/a.txt")):
        result = await backend.grep_raw(pattern, path)
        assert isinstance(result, str), f"{name}: {result!r}"[:300]
        assert result.startswith("Error: invalid regex "), result[:300]
        assert len(result) < 3000, "a long pattern is not echoed back whole"


async def test_nesting_just_inside_ripgreps_limit_is_searched_everywhere(backend: Any) -> None:
    await backend.write(at("/p/a.txt"), "xx needle yy\n")
    # ripgrep's own wrapping group, 248 groups and the concatenation "needle": exactly 250 levels
    deepest = "(" * 248 + "needle" + ")" * 248
    assert hits(await backend.grep_raw(deepest, at("/p"))) == [(at("/p/a.txt"), 1, "xx needle yy")]
    over = "(" * 249 + "needle" + ")" * 249
    refused = await backend.grep_raw(over, at("/p"))
    assert isinstance(refused, str)
    assert "nested parentheses/brackets (250)" in refused


async def test_a_200_kb_pattern_is_searched_everywhere(backend: Any) -> None:
    await backend.write(at("/p/a.txt"), "alpha\nthe needle here\nomega w000017\n")
    words = "|".join(f"w{i:06d}" for i in range(28_000))
    assert len(words) > 200_000
    found = hits(await backend.grep_raw(f"{words}|needle", at("/p")))
    assert found == [(at("/p/a.txt"), 2, "the needle here"), (at("/p/a.txt"), 3, "omega w000017")]
    assert hits(await backend.grep_raw("z" * 200_000, at("/p"))) == []
    assert hits(await backend.grep_raw("y" * 199_990 + "|alpha", at("/p/a.txt"))) == [(at("/p/a.txt"), 1, "alpha")]


async def test_a_huge_glob_is_refused_with_a_clear_error(backend: Any) -> None:
    await backend.write(at("/p/a.txt"), "needle\n")
    for huge in ("*" + "x" * 200_000, "!" + "y" * 200_000, "src/" + "z" * 200_000):
        result = await backend.grep_raw("needle", at("/p"), huge)
        assert isinstance(result, str)
        assert result.startswith("Error: glob ")
        assert f"the most is {MAX_GLOB_CHARS:,}" in result
        assert len(result) < 1000
        with pytest.raises(InvalidPathError, match="the most is"):
            await backend.glob_info(huge, at("/p"))
    longest = "{" + ",".join(["q" * 60] * 130) + ",a.txt}"
    assert len(longest) <= MAX_GLOB_CHARS
    assert hits(await backend.grep_raw("needle", at("/p"), longest)) == [(at("/p/a.txt"), 1, "needle")]
    assert [info.path for info in await backend.glob_info(longest, at("/p"))] == [at("/p/a.txt")]


# --- binary files ------------------------------------------------------------------------------------------------

NUL_AT = {"byte 10": 10, "8 KiB + 1": 8 * 1024 + 1, "1 MB": 1_000_000}


def with_nul_at(offset: int) -> bytes:
    """Text with matching lines before and after a single NUL byte at ``offset``."""
    lines = b"".join(b"needle %d\n" % i for i in range(offset // 8 + 2))
    return lines[:offset] + b"\x00" + b"\nneedle after the NUL\n"


@pytest.mark.parametrize("where", list(NUL_AT))
async def test_a_binary_file_is_skipped_however_it_is_reached(backend: Any, where: str) -> None:
    content = with_nul_at(NUL_AT[where])
    assert content.index(b"\x00") == NUL_AT[where]
    await backend.write(at("/b/blob.dat"), content)
    await backend.write(at("/b/text.txt"), b"needle in text\n")
    walked = await backend.grep_raw("needle", at("/b"))
    assert hits(walked) == [(at("/b/text.txt"), 1, "needle in text")]
    assert isinstance(walked, GrepMatches)
    assert walked.total == 1, "a binary file's matches are not counted either"
    named = await backend.grep_raw("needle", at("/b/blob.dat"))
    assert hits(named) == []
    assert await backend.read_bytes(at("/b/blob.dat")) == content


# --- negated globs -------------------------------------------------------------------------------------------------

TREE = ["top.txt", "sub/s.txt", "sub/deep/d.txt", "a/sub/as.txt", "a/sub/sub", "a/sub2.txt", "sub.txt", "x.py/in/f.txt"]
GLOBS = {
    "!sub": ["a/sub2.txt", "sub.txt", "top.txt", "x.py/in/f.txt"],
    "!sub/": ["a/sub2.txt", "sub.txt", "top.txt", "x.py/in/f.txt"],
    "!*.py": ["a/sub/as.txt", "a/sub/sub", "a/sub2.txt", "sub.txt", "sub/deep/d.txt", "sub/s.txt", "top.txt"],
    "!s*": ["top.txt", "x.py/in/f.txt"],
    "!deep": ["a/sub/as.txt", "a/sub/sub", "a/sub2.txt", "sub.txt", "sub/s.txt", "top.txt", "x.py/in/f.txt"],
    "!a/sub": ["a/sub2.txt", "sub.txt", "sub/deep/d.txt", "sub/s.txt", "top.txt", "x.py/in/f.txt"],
    "!sub/*": ["a/sub/as.txt", "a/sub/sub", "a/sub2.txt", "sub.txt", "top.txt", "x.py/in/f.txt"],
    "sub": ["a/sub/sub"],
    "sub/": [],
}


async def test_a_negated_glob_prunes_the_directories_it_names_everywhere(backend: Any) -> None:
    for name in TREE:
        await backend.write(at(f"/g/{name}"), "hit\n")
    for glob, expected in GLOBS.items():
        found = [path for path, _, _ in hits(await backend.grep_raw("hit", at("/g"), glob))]
        assert found == [at(f"/g/{name}") for name in expected], glob
    below = [path for path, _, _ in hits(await backend.grep_raw("hit", at("/g/sub"), "!sub"))]
    assert below == [at("/g/sub/deep/d.txt"), at("/g/sub/s.txt")], "the searched directory itself is not pruned"


@pytest.mark.parametrize("glob", ["!sub", "*.md", "!a/*", "other/*"])
async def test_a_file_named_explicitly_is_searched_whatever_the_glob(backend: Any, glob: str) -> None:
    await backend.write(at("/g/a/sub"), "hit\n")
    assert hits(await backend.grep_raw("hit", at("/g/a/sub"), glob)) == [(at("/g/a/sub"), 1, "hit")]


# --- execute and open_process ------------------------------------------------------------------------------------

BAD_EXECUTE: dict[str, tuple[dict[str, Any], str]] = {
    "NUL in the command": ({"command": "touch ran\x00"}, "NUL byte"),
    "lone surrogate in the command": ({"command": "touch ran; echo \ud800"}, "lone surrogate"),
    "a command over 128 KiB": ({"command": "touch ran; echo " + "x" * 200_000}, "the most is 131,071"),
    "lone surrogate in an env value": ({"command": "touch ran", "env": {"A": "\udfff"}}, "lone surrogate"),
    "NUL in an env value": ({"command": "touch ran", "env": {"A": "x\x00y"}}, "NUL byte"),
    "NUL in an env name": ({"command": "touch ran", "env": {"A\x00": "x"}}, "is refused"),
    "'=' in an env name": ({"command": "touch ran", "env": {"A=B": "x"}}, "is refused"),
    "empty env name": ({"command": "touch ran", "env": {"": "x"}}, "is refused"),
    "NaN timeout": ({"command": "touch ran", "timeout": math.nan}, "greater than 0"),
    "negative timeout": ({"command": "touch ran", "timeout": -1.0}, "greater than 0"),
    "zero timeout": ({"command": "touch ran", "timeout": 0}, "greater than 0"),
    "-inf timeout": ({"command": "touch ran", "timeout": -math.inf}, "greater than 0"),
    "huge int timeout": ({"command": "touch ran", "timeout": 10**400}, "too large"),
    "str timeout": ({"command": "touch ran", "timeout": "5"}, "must be a number"),
}


@pytest.mark.parametrize("kind", EXEC_KINDS, indirect=True)
async def test_bad_execute_arguments_are_refused_before_anything_runs(make: Factory) -> None:
    backend = await make()
    for name, (kwargs, message) in BAD_EXECUTE.items():
        with pytest.raises(InvalidArgumentError, match=message):
            await backend.execute(**kwargs, cwd=at("/"))
        assert not await backend.exists(at("/ran")), f"{name}: the command ran"
    response = await backend.execute("echo $A; touch ran", math.inf, env={"A": "fine=yes"}, cwd=at("/"))
    assert (response.output, response.exit_code) == ("fine=yes\n", 0), "math.inf is no limit"
    longest = "echo " + "y" * (131_071 - len("echo ") - len(" | wc -c")) + " | wc -c"
    response = await backend.execute(longest, cwd=at("/"))
    assert (response.output.strip(), response.exit_code) == (str(len(longest) - 13 + 1), 0), "the limit is exact"
    assert await backend.exists(at("/ran"))


@pytest.mark.parametrize("kind", EXEC_KINDS, indirect=True)
async def test_open_process_is_guarded_too(make: Factory) -> None:
    backend = await make()
    twin = backend.twin if isinstance(backend, Threaded) else None
    if twin is None and not hasattr(backend, "open_process"):
        pytest.skip("this sandbox supplies execute only")
    for kwargs in ({"command": "touch ran\x00"}, {"command": "touch ran", "env": {"A=B": "x"}}):
        if twin is None:
            with pytest.raises(InvalidArgumentError):
                backend.open_process(**kwargs, cwd=at("/"))  # at the call, before anything starts
        else:

            def enter(kwargs: dict[str, Any] = kwargs) -> None:
                with twin.open_process(**kwargs, cwd=at("/")):
                    pass

            with pytest.raises(InvalidArgumentError):
                await anyio.to_thread.run_sync(enter)
    assert not await backend.exists(at("/ran"))


# --- a sync twin after close -------------------------------------------------------------------------------------


def _twins(tmp_path: Path) -> list[Any]:
    return [SyncStateBackend({"/a.txt": "a\n"}), SyncFilesystemBackend(tmp_path), SyncLocalBackend(tmp_path)]


def test_a_closed_twin_says_it_is_closed(tmp_path: Path) -> None:
    for twin in _twins(tmp_path):
        assert twin.write("a.txt", "a\n").ok
        twin.close()
        calls = [
            lambda twin=twin: twin.read("a.txt"),
            lambda twin=twin: twin.write("b.txt", "b"),
            lambda twin=twin: twin.grep_raw("a"),
            lambda twin=twin: twin.glob_info("*"),
            lambda twin=twin: twin.ls_info("."),
            lambda twin=twin: twin.exists("a.txt"),
        ]
        if isinstance(twin, SyncLocalBackend):
            calls.append(lambda twin=twin: twin.execute("echo hi"))
            calls.append(lambda twin=twin: twin.open_process("echo hi").__enter__())
        if isinstance(twin, SyncStateBackend):
            calls.append(lambda twin=twin: twin.files)
        for call in calls:
            with pytest.raises(SandboxNotStartedError, match=f"{type(twin).__name__} is closed"):
                call()
        twin.close()  # still idempotent


def test_a_call_cut_short_by_close_says_so(tmp_path: Path) -> None:
    twin = SyncLocalBackend(tmp_path)
    outcome: list[BaseException | None] = []

    def long_call() -> None:
        try:
            twin.execute("touch started; sleep 600", math.inf)
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    worker = threading.Thread(target=long_call)
    worker.start()
    for _ in range(6000):  # wait for the command to start, polling (no threshold: the loop ends when it has)
        if (tmp_path / "started").exists():
            break
        threading.Event().wait(0.01)
    twin.close()
    worker.join(60)
    assert not worker.is_alive()
    assert len(outcome) == 1
    assert isinstance(outcome[0], SandboxNotStartedError), outcome


class NoTmpRgShellSandbox(RgShellSandbox):
    """A sandbox with ripgrep but nowhere to write a pattern file."""

    async def _write_bytes(self, path: str, data: bytes) -> None:
        if path.startswith("/tmp/.agent-backends-pattern-"):
            raise PathPermissionError(f"could not write '{path}': read-only file system", path)
        await super()._write_bytes(path, data)


async def test_a_long_pattern_in_a_sandbox_with_nowhere_to_write_is_still_searched(tmp_path: Path) -> None:
    sandbox = NoTmpRgShellSandbox(str(tmp_path))
    await sandbox.write(f"{tmp_path}/p/a.txt", "alpha\nthe needle here\n")
    words = "|".join(f"w{i:06d}" for i in range(28_000))
    found = hits(await sandbox.grep_raw(f"{words}|needle", f"{tmp_path}/p"))
    assert found == [(f"{tmp_path}/p/a.txt", 2, "the needle here")]
    assert hits(await sandbox.grep_raw("needle", f"{tmp_path}/p")) == found, "short patterns still use ripgrep"


@pytest.mark.docker
async def test_a_sandbox_search_from_the_root_applies_the_glob_to_what_it_names() -> None:
    """From ``/`` a sandbox names the root's entries to ripgrep, which applies no glob to a path it is given."""
    require_docker()
    files = ["/aa-top.txt", "/aa-top.py", "/zz-tree/sub/a.txt", "/zz-tree/keep.txt", "/sub/b.txt"]
    expected = {
        "*.py": ["/aa-top.py"],
        "!*.txt": ["/aa-top.py"],
        "!zz-tree": ["/aa-top.py", "/aa-top.txt", "/sub/b.txt"],
        "!sub": ["/aa-top.py", "/aa-top.txt", "/zz-tree/keep.txt"],
        "!sub/": ["/aa-top.py", "/aa-top.txt", "/zz-tree/keep.txt"],
        "zz-tree/*": ["/zz-tree/keep.txt"],
    }
    async with DockerSandbox(PYTHON_IMAGE, "/", labels=LABELS) as sandbox:
        for path in files:
            assert (await sandbox.write(path, "needle-4242-xyzzy\n")).ok
        for glob, paths in expected.items():
            found = hits(await sandbox.grep_raw("needle-4242-xyzzy", "/", glob))
            assert [path for path, _, _ in found] == paths, glob
