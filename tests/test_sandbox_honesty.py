"""Sandboxes that answer honestly (issue 11): listings no file name can spoof, results complete or capped with the
true total and a note, a grep without ripgrep that skips what it cannot read and stops in bounded time, and
sessions that give the workspace to the sandbox's user, never reap a busy sandbox, and keep one sandbox per
workspace however many managers share the root.

Every case runs on the ``shell-sandbox`` kind (a ``BaseSandbox`` over host commands, capped ``execute`` only) and on
Docker, Podman and gVisor; ``docker-busybox`` has no ripgrep (the fallback search).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import anyio
import pytest

from agent_backends import DockerSandbox, ExecuteResponse, GrepMatches, LocalBackend, RuntimeConfig, SessionManager
from agent_backends.exceptions import PathPermissionError
from agent_backends.sessions import SESSION_LABEL
from tests.conftest import BUSYBOX_IMAGE, LABELS, PODMAN_URL, Factory, ShellSandbox, at, require_docker

pytestmark = pytest.mark.anyio

SANDBOXES = ["shell-sandbox", "docker", "docker-busybox", "podman", "gvisor"]
_WAIT = 120.0  # hang guard, never a timing assertion
ODD_DIR = "x\nf|1|0|"  # with "secret/key" inside: its find line used to read as a file "/secret/key"
ODD_FILES = ("a\nb", "c|9|9|etc", "f|1|0|\nd|0|0|", "trailing\n", "\nleading", "plain")


async def sh(backend: Any, command: str) -> ExecuteResponse:
    response = await backend.execute(command)
    assert response.exit_code == 0, response.output
    return response


def q(name: str) -> str:
    """``name`` as a shell word (printf keeps its newlines; no command substitution strips them)."""
    return "'" + name.replace("'", "'\\''") + "'"


async def make_odd_tree(backend: Any, base: str) -> list[str]:
    """Files whose names hold newlines and ``|``; their paths, sorted."""
    await sh(backend, f"mkdir -p {q(base + '/' + ODD_DIR + '/secret')}")
    await sh(backend, f"echo needle > {q(base + '/' + ODD_DIR + '/secret/key')}")
    for name in ODD_FILES:
        await sh(backend, f"echo needle > {q(base + '/' + name)}")
    return sorted([f"{base}/{ODD_DIR}/secret/key", *(f"{base}/{name}" for name in ODD_FILES)])


# --- names cannot spoof listings (item 11) --------------------------------------------------------------------------


@pytest.mark.parametrize("kind", SANDBOXES, indirect=True)
async def test_glob_lists_exactly_the_files_whatever_their_names(make: Factory) -> None:
    backend = await make()
    base = at("/odd")
    expected = await make_odd_tree(backend, base)
    found = [info.path for info in await backend.glob_info("**", base)]
    assert found == expected
    assert "/secret/key" not in found
    assert "/etc/passwd" not in found
    assert all(path.startswith(base + "/") for path in found)
    for path in found:  # each path works as given
        assert (await backend.read(path)).endswith("needle")


@pytest.mark.parametrize("kind", SANDBOXES, indirect=True)
async def test_ls_lists_exactly_the_entries_whatever_their_names(make: Factory) -> None:
    backend = await make()
    base = at("/odd")
    await make_odd_tree(backend, base)
    entries = await backend.ls_info(base)
    assert [(e.name, e.is_dir) for e in entries] == sorted([(ODD_DIR, True), *((n, False) for n in ODD_FILES)])
    assert [e.path for e in await backend.ls_info(f"{base}/{ODD_DIR}")] == [f"{base}/{ODD_DIR}/secret"]
    assert [e.path for e in await backend.glob_info("*", base)] == sorted(f"{base}/{n}" for n in ODD_FILES)


@pytest.mark.parametrize("kind", SANDBOXES, indirect=True)
async def test_grep_names_odd_files_by_their_true_paths(make: Factory) -> None:
    backend = await make()
    base = at("/odd")
    expected = await make_odd_tree(backend, base)
    found = await backend.grep_raw("needle", base)
    assert isinstance(found, GrepMatches), found
    assert [m.path for m in found] == expected
    assert [m.path for m in await backend.grep_raw("needle", base, glob="a*")] == [f"{base}/a\nb"]


# --- complete, or capped with the true total (item 12) --------------------------------------------------------------


@pytest.mark.parametrize("kind", SANDBOXES, indirect=True)
async def test_listings_of_thousands_of_files_are_complete(make: Factory) -> None:
    backend = await make()
    base = at("/many")
    await sh(
        backend, f"mkdir -p {base}/sub && cd {base} && i=0; while [ $i -lt 3000 ]; do : > f$i.txt; i=$((i+1)); done"
    )
    await sh(backend, f"cd {base}/sub && i=0; while [ $i -lt 500 ]; do : > g$i.txt; i=$((i+1)); done")
    names = sorted(f"{base}/f{i}.txt" for i in range(3000))
    assert [e.path for e in await backend.ls_info(base)] == sorted([*names, f"{base}/sub"])
    assert [e.path for e in await backend.glob_info("*.txt", base)] == names
    assert len(await backend.glob_info("**/*.txt", base)) == 3500


@pytest.mark.parametrize("kind", SANDBOXES, indirect=True)
async def test_grep_over_thousands_of_lines_is_capped_with_the_true_total(make: Factory) -> None:
    backend = await make()
    base = at("/lines")
    lines = "seq 1 1000 | sed 's/^/match /'"
    script = f"mkdir -p {base} && i=0; while [ $i -lt 5 ]; do {lines} > {base}/f$i.txt; i=$((i+1)); done"
    await sh(backend, script)
    found = await backend.grep_raw("match", base)
    assert isinstance(found, GrepMatches), found
    assert (len(found), found.total, found.truncated) == (1000, 5000, True)
    assert found.note is not None
    assert "5,000" in found.note
    expected = sorted((f"{base}/f{i}.txt", n) for i in range(5) for n in range(1, 1001))[:1000]
    assert [(m.path, m.line_number) for m in found] == expected
    backend.max_grep_matches = None
    uncapped = await backend.grep_raw("match", base)
    assert isinstance(uncapped, GrepMatches)
    assert (len(uncapped), uncapped.total, uncapped.truncated) == (5000, 5000, False)


class CappedShellSandbox(ShellSandbox):
    """A ``BaseSandbox`` whose ``execute`` keeps little output; ``writable=False``: ``mktemp`` always fails."""

    def __init__(self, work_dir: str, *, cap: int, writable: bool = True, **kwargs: Any) -> None:
        super().__init__(work_dir, **kwargs)
        self._host = LocalBackend("/", max_output_chars=cap)
        self._prefix = "" if writable else "mktemp() { return 1; }; "
        self.calls = 0

    async def execute(self, command: str, timeout: float | None = None, **kwargs: Any) -> ExecuteResponse:
        self.calls += 1
        # ripgrep from this environment (the ``ripgrep`` wheel beside this Python) is on the sandbox's PATH
        path = f"PATH={os.path.dirname(sys.executable)}:$PATH; "
        return await self._host.execute(path + self._prefix + command, timeout, **kwargs)


@pytest.mark.parametrize(
    ("cap", "writable", "count"),
    [(100_000, True, 3000), (8_000, True, 1500), (100_000, False, 3000), (8_000, False, 1100)],
)
async def test_a_small_output_cap_loses_nothing(tmp_path: Path, cap: int, writable: bool, count: int) -> None:
    sandbox = CappedShellSandbox(str(tmp_path), cap=cap, writable=writable)
    base = f"{tmp_path}/many"
    await sh(
        sandbox,
        f"mkdir -p {base} && cd {base} && i=0; while [ $i -lt {count} ]; do echo 'match x' > f$i.txt; i=$((i+1)); done",
    )
    assert len(await sandbox.ls_info(base)) == count
    assert len(await sandbox.glob_info("**", base)) == count
    found = await sandbox.grep_raw("match", base)
    assert isinstance(found, GrepMatches), found
    assert (len(found), found.total) == (1000, count)
    assert [m.path for m in found] == sorted(f"{base}/f{i}.txt" for i in range(count))[:1000]
    assert (await sandbox.grep_raw("(", base)).startswith("Error: invalid regex")  # type: ignore[union-attr]
    assert sandbox._has_rg  # pyright: ignore[reportPrivateUsage]


# --- the fallback without ripgrep (item 13) -------------------------------------------------------------------------


class NoRgShellSandbox(ShellSandbox):
    """The fallback search on the host: ripgrep is taken as missing; reading ``*.locked`` fails."""

    def __init__(self, work_dir: str, **kwargs: Any) -> None:
        super().__init__(work_dir, **kwargs)
        self._has_rg = False

    async def _download(self, path: str, size: int) -> bytes:
        if path.endswith(".locked"):
            raise PathPermissionError(f"permission denied: '{path}'", path)
        return await super()._download(path, size)


async def fallback_sandbox(kind: str, tmp_path: Path, **kwargs: Any) -> tuple[Any, str]:
    if kind == "shell":
        return NoRgShellSandbox(str(tmp_path), **kwargs), str(tmp_path)
    require_docker()
    return await DockerSandbox(BUSYBOX_IMAGE, "/workspace", labels=LABELS, **kwargs).start(), "/workspace"


@pytest.mark.parametrize("kind", ["shell", "busybox"])
async def test_the_fallback_skips_what_it_cannot_read(kind: str, tmp_path: Path) -> None:
    sandbox, base = await fallback_sandbox(kind, tmp_path)
    try:
        expected = await make_odd_tree(sandbox, f"{base}/t")
        await sh(sandbox, f"echo needle > {base}/t/z.locked; ln -s /proc/mounts {base}/t/mounts")
        if kind != "shell":  # only the host subclass refuses to read it; the container has /proc/mounts instead
            expected.append(f"{base}/t/z.locked")
        found = await sandbox.grep_raw("needle", f"{base}/t")
        assert isinstance(found, GrepMatches), found
        assert [m.path for m in found] == expected
        for path in ("/etc", "/") if kind != "shell" else ("/etc",):  # the host's "/" is large
            answer = await sandbox.grep_raw("x", path, glob="*.conf")
            assert isinstance(answer, GrepMatches), answer
    finally:
        await sandbox.aclose()


@pytest.mark.parametrize("kind", ["shell", "busybox"])
async def test_the_fallback_is_capped_and_stops_in_bounded_time(kind: str, tmp_path: Path) -> None:
    sandbox, base = await fallback_sandbox(kind, tmp_path)
    try:
        await sh(
            sandbox, f"mkdir -p {base}/c && i=0; while [ $i -lt 30 ]; do seq 1 100 > {base}/c/f$i; i=$((i+1)); done"
        )
        found = await sandbox.grep_raw("[0-9]", f"{base}/c")
        assert isinstance(found, GrepMatches), found
        assert (len(found), found.total, found.truncated) == (1000, 3000, True)
        sandbox.fallback_grep_seconds = 0.0
        with anyio.fail_after(_WAIT):
            stopped = await sandbox.grep_raw("[0-9]", f"{base}/c")
        assert isinstance(stopped, GrepMatches), stopped
        assert stopped.truncated
        assert stopped.total < 3000
        assert stopped.note is not None
        assert "ran out of time" in stopped.note
        assert "of 30 files" in stopped.note
    finally:
        await sandbox.aclose()


# --- sessions (items 4, 8, 10) ----------------------------------------------------------------------------------------

ENGINES = ["docker", "podman", "gvisor"]
RUNTIME = RuntimeConfig(name="test-honesty", base_image=BUSYBOX_IMAGE)


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> dict[str, Any]:
    name = str(request.param)
    require_docker(name)
    return {"podman": {"docker_url": PODMAN_URL}, "gvisor": {"runtime": "runsc"}}.get(name, {})


def sessions(
    root: Path, engine: dict[str, Any], *, options: dict[str, Any] | None = None, **kwargs: Any
) -> SessionManager:
    sandbox_options = {"labels": LABELS, **({"runtime": engine["runtime"]} if "runtime" in engine else {})}
    sandbox_options.update(options or {})
    return SessionManager(RUNTIME, root, docker_url=engine.get("docker_url"), sandbox_options=sandbox_options, **kwargs)


def labelled(engine: dict[str, Any], user_id: str) -> list[str]:
    host = ["-H", engine["docker_url"]] if "docker_url" in engine else []
    done = subprocess.run(
        ["docker", *host, "ps", "-aq", "--filter", f"label={SESSION_LABEL}={user_id}"],
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout.split()


@pytest.mark.parametrize("user", ["1000:1000", "1234", "4321:77"])
async def test_the_workspace_belongs_to_the_sandbox_user(engine: dict[str, Any], tmp_path: Path, user: str) -> None:
    (tmp_path / "ws" / "ann").mkdir(parents=True)  # made earlier, by someone else: root's, 0755
    os.chmod(tmp_path / "ws" / "ann", 0o755)
    manager = sessions(tmp_path / "ws", engine, options={"user": user})
    try:
        for user_id in ("ann", "bob"):  # an existing workspace and a new one
            sandbox = await manager.get_or_create(user_id)
            response = await sandbox.execute("echo hi > made-by-me && mkdir sub && echo ok > sub/f && cat sub/f")
            assert (response.exit_code, response.output) == (0, "ok\n")
            assert (await sandbox.write("via-api.txt", "x")).error is None
            assert (await sandbox.execute("cat via-api.txt")).output == "x"
            assert (tmp_path / "ws" / user_id / "made-by-me").read_text() == "hi\n"
    finally:
        await manager.aclose()


async def test_reaping_never_kills_a_running_command(engine: dict[str, Any], tmp_path: Path) -> None:
    manager = sessions(tmp_path, engine, idle_timeout=0.3)
    try:
        sandbox = await manager.get_or_create("cleo")
        with anyio.fail_after(_WAIT):
            response = await sandbox.execute("sleep 2; echo done")
            assert (response.exit_code, response.output) == (0, "done\n")
            async with sandbox.open_process("sleep 2; echo streamed") as process:
                assert b"".join([chunk.data async for chunk in process]) == b"streamed\n"
                assert await process.wait() == 0
            # A command through another object attached to the same container is a command running too.
            other = DockerSandbox(ref=sandbox.id, docker_url=engine.get("docker_url"))
            try:
                response = await other.execute("sleep 2; echo elsewhere")
                assert (response.exit_code, response.output) == (0, "elsewhere\n")
            finally:
                await other.detach()
            assert manager.sessions == {"cleo": sandbox}
            while manager.sessions:  # idle at last: reaped
                await anyio.sleep(0.05)
    finally:
        await manager.aclose()


async def test_two_managers_on_one_root_share_one_sandbox_per_user(engine: dict[str, Any], tmp_path: Path) -> None:
    first, second = sessions(tmp_path, engine), sessions(tmp_path, engine)
    try:
        got: dict[str, DockerSandbox] = {}

        async def get(name: str, manager: SessionManager) -> None:
            got[name] = await manager.get_or_create("dana")

        with anyio.fail_after(_WAIT):
            async with anyio.create_task_group() as tg:
                tg.start_soon(get, "first", first)
                tg.start_soon(get, "second", second)
        assert got["first"].id == got["second"].id
        assert len(labelled(engine, "dana")) == 1
        await first.get_or_create("eli")
        assert (await second.get_or_create("eli")).id == first.sessions["eli"].id  # asked one after the other
        assert len(labelled(engine, "eli")) == 1
        await first.release("eli")  # gone for both: the next one asking gets one new sandbox
        fresh = await second.get_or_create("eli")
        assert len(labelled(engine, "eli")) == 1
        assert fresh.id != got["first"].id
    finally:
        await first.aclose()
        await second.aclose()
    assert labelled(engine, "dana") == []
    assert labelled(engine, "eli") == []


async def test_a_manager_in_another_process_adopts_the_sandbox(engine: dict[str, Any], tmp_path: Path) -> None:
    manager = sessions(tmp_path, engine)
    options = {"labels": LABELS, **({"runtime": engine["runtime"]} if "runtime" in engine else {})}
    script = textwrap.dedent(
        f"""
        import anyio
        from agent_backends import RuntimeConfig, SessionManager

        async def main():
            manager = SessionManager(
                RuntimeConfig(name="test-honesty", base_image={BUSYBOX_IMAGE!r}), {str(tmp_path)!r},
                docker_url={engine.get("docker_url")!r}, sandbox_options={options!r}, max_sessions=1,
            )
            print((await manager.get_or_create("fay")).id)
            await manager.aclose(keep_sandboxes=True)

        anyio.run(main)
        """
    )
    try:
        mine = await manager.get_or_create("fay")
        await manager.get_or_create("gus")  # beyond the other manager's max_sessions: it must not remove it
        with anyio.fail_after(_WAIT):
            done = await anyio.run_process([sys.executable, "-c", script], check=False)
        assert done.returncode == 0, done.stderr.decode()
        assert done.stdout.decode().split() == [mine.id]
        assert len(labelled(engine, "fay")) == 1
        assert (await manager.get_or_create("gus")).id == manager.sessions["gus"].id
        assert len(labelled(engine, "gus")) == 1
        assert (await manager.sessions["gus"].execute("echo alive")).output == "alive\n"
    finally:
        await manager.aclose()
    assert labelled(engine, "fay") == []
    assert labelled(engine, "gus") == []
