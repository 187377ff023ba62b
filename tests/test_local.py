"""Execution on real engines: what ``LocalBackend`` and ``DockerSandbox`` (both test images) share, then what is
``LocalBackend``'s own.

Nothing is mocked: commands run as host processes or in containers. Whether a process tree was really killed is
checked by scanning ``/proc`` for exact command lines (on the host for ``LocalBackend``, inside the container for
``DockerSandbox``), using ``sleep`` durations no other process on the machine uses. Docker-only behaviour is in
``test_docker.py``; the engine going away mid-session in ``test_engine_restart.py``.
"""

from __future__ import annotations

import contextlib
import gc
import os
import random
import shlex
import signal
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

from agent_backends import (
    DockerSandbox,
    InvalidPathError,
    LocalBackend,
    PathEscapeError,
    PathNotDirectoryError,
    ProcessNotFoundError,
)
from agent_backends.process import BackgroundProcess, OutputChunk
from tests.conftest import BUSYBOX_IMAGE, LABELS, NOTMP_IMAGE, PYTHON_IMAGE, require_docker

pytestmark = pytest.mark.anyio

Backend = LocalBackend | DockerSandbox

EXEC_KINDS = [
    "local",
    pytest.param("docker", marks=pytest.mark.docker),
    pytest.param("docker-busybox", marks=pytest.mark.docker),
    pytest.param("docker-readonly", marks=pytest.mark.docker),  # no /tmp, read-only root: kills need nothing writable
]
_GONE_SECONDS = 20.0  # how long a killed process may take to disappear before the test calls it a survivor


def new_backend(kind: str, root: Path, **kwargs: Any) -> Backend:
    """A backend of ``kind``, not yet started: use it with ``async with``, so it is always closed."""
    if kind == "local":
        return LocalBackend(root, **kwargs)
    require_docker()
    if kind == "docker-readonly":
        return DockerSandbox(NOTMP_IMAGE, labels=LABELS, read_only=True, **kwargs)
    image = PYTHON_IMAGE if kind == "docker" else BUSYBOX_IMAGE
    return DockerSandbox(image, labels=LABELS, **kwargs)


@pytest.fixture(params=EXEC_KINDS)
def exec_kind(request: pytest.FixtureRequest) -> str:
    kind = str(request.param)
    if kind != "local":
        require_docker()
    return kind


@pytest.fixture
async def runner(exec_kind: str, tmp_path: Path) -> AsyncIterator[Backend]:
    async with new_backend(exec_kind, tmp_path) as backend:
        yield backend


def unique_sleep() -> list[str]:
    """``sleep N`` with an ``N`` nothing else on the machine sleeps for: its command line names our process."""
    return ["sleep", str(random.randrange(10**8, 10**9))]


def sh(argv: list[str]) -> str:
    return " ".join(argv)


# --- finding processes ---------------------------------------------------------------------------------------


def host_command_lines() -> list[list[str]]:
    """Every host process's argv (the scan itself is this Python process, whose argv names no ``sleep``)."""
    found: list[list[str]] = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                raw = handle.read()
        except OSError:  # it exited meanwhile
            continue
        if raw:  # zombies and kernel threads have none
            found.append(raw.decode(errors="replace").split("\0")[:-1])
    return found


# Prints each process's raw command line on a line of its own; the scan's own command line names no ``sleep``.
_SCAN = 'for f in /proc/[0-9]*/cmdline; do cat "$f"; echo; done 2>/dev/null'


async def command_lines(backend: Backend) -> list[list[str]]:
    """Every process's argv where ``backend`` runs its commands: the host, or inside the container."""
    if isinstance(backend, LocalBackend):
        return host_command_lines()
    scan = await backend.execute(_SCAN, timeout=60)
    assert scan.exit_code == 0, scan
    return [line.split("\0")[:-1] for line in scan.output.split("\n") if line.endswith("\0")]


async def survivors(argvs: list[list[str]], lines: Callable[[], Awaitable[list[list[str]]]]) -> list[list[str]]:
    """The processes among ``argvs`` (exact command lines) still running once a grace period for dying is over."""
    deadline = anyio.current_time() + _GONE_SECONDS
    while True:
        running = [argv for argv in await lines() if argv in argvs]
        if not running or anyio.current_time() > deadline:
            return running
        await anyio.sleep(0.1)


async def survivors_in(backend: Backend, *argvs: list[str]) -> list[list[str]]:
    return await survivors(list(argvs), lambda: command_lines(backend))


async def survivors_on_host(*argvs: list[str]) -> list[list[str]]:
    async def lines() -> list[list[str]]:
        return host_command_lines()

    return await survivors(list(argvs), lines)


async def until(
    check: Callable[[], Awaitable[BackgroundProcess]], done: Callable[[BackgroundProcess], bool]
) -> BackgroundProcess:
    """Poll a background process until ``done``; a hang guard, not a timing assertion."""
    with anyio.fail_after(60):
        while True:
            snapshot = await check()
            if done(snapshot):
                return snapshot
            await anyio.sleep(0.05)


def tree(first: list[str], second: list[str], third: list[str]) -> str:
    """A shell that prints, then waits on a subshell with two children (one with its output redirected, so that
    only a kill can end it, not a closed pipe) and a child of its own."""
    return (
        f"echo before; ( {sh(first)} & {sh(second)} >/dev/null 2>&1 & wait ) & "
        f"{sh(third)} >/dev/null 2>&1 & wait; echo never"
    )


# --- execute -------------------------------------------------------------------------------------------------


async def test_exit_codes(runner: Backend) -> None:
    assert (await runner.execute("true", timeout=60)).exit_code == 0
    assert (await runner.execute("exit 3", timeout=60)).exit_code == 3
    missing = await runner.execute("no-such-command-here", timeout=60)
    assert missing.exit_code == 127
    assert "not found" in missing.output
    assert not missing.timed_out


async def test_stdout_and_stderr_are_both_captured(runner: Backend) -> None:
    result = await runner.execute("echo to-out; echo to-err >&2; echo again-out", timeout=60)
    assert result.exit_code == 0
    assert sorted(result.output.splitlines()) == ["again-out", "to-err", "to-out"]


async def test_cwd_and_env_are_honoured(runner: Backend) -> None:
    assert (await runner.write("sub/marker.txt", "x")).ok
    result = await runner.execute('pwd; ls; echo "$GREETING"', timeout=60, cwd="sub", env={"GREETING": "hi there"})
    where, listing, greeting = result.output.splitlines()
    assert result.exit_code == 0
    assert where.endswith("/sub")
    assert listing == "marker.txt"
    assert greeting == "hi there"


async def test_stdin_given_is_read(runner: Backend) -> None:
    swapped = await runner.execute('read a; read b; echo "$b $a"', timeout=60, stdin="one\ntwo\n")
    assert swapped.output == "two one\n"
    assert (await runner.execute("cat", timeout=60, stdin=b"raw \x00 bytes")).output == "raw \x00 bytes"


async def test_stdin_is_closed_when_not_given(runner: Backend) -> None:
    result = await runner.execute('cat; read x; echo "read status $?"', timeout=60)
    assert not result.timed_out
    assert result.output == "read status 1\n"


async def test_large_stdin_is_fed_while_the_output_is_read(runner: Backend) -> None:
    """``cat`` echoes its input: writing all of it before reading any output would fill both pipes and hang."""
    data = b"0123456789abcdef" * (256 * 1024)  # 4 MiB
    with anyio.fail_after(120):  # a hang guard: before the fix this never returned
        echoed = await runner.execute("cat", timeout=60, stdin=data)
        counted = await runner.execute("wc -c", timeout=60, stdin=data)
    assert echoed.exit_code == 0
    assert echoed.truncated
    assert echoed.output.startswith("0123456789abcdef")
    assert echoed.output.endswith("0123456789abcdef")
    assert counted.output.strip() == str(len(data))


async def test_input_left_unread_neither_holds_the_command_nor_defeats_the_timeout(runner: Backend) -> None:
    data = b"x" * (4 * 1024 * 1024)
    sleeper = unique_sleep()
    # A hang guard kept below the library's 60 s engine-call limit: before the fix, the write of the input blocked
    # outside the timeout (forever on the host, until that limit in Docker, whose engine also kept a finished
    # command attached while input was pending).
    with anyio.fail_after(45):
        partial = await runner.execute("head -c 3", timeout=60, stdin=data)
        ignored = await runner.execute("true", timeout=60, stdin=data)
        never_read = await runner.execute(sh(sleeper), timeout=1, stdin=data)
    assert (partial.output, partial.exit_code) == ("xxx", 0)
    assert (ignored.output, ignored.exit_code) == ("", 0)
    assert never_read.timed_out
    assert await survivors_in(runner, sleeper) == []


async def test_timeout_kills_the_whole_tree_and_keeps_the_output(runner: Backend) -> None:
    sleepers = [unique_sleep() for _ in range(3)]
    result = await runner.execute(tree(*sleepers), timeout=1)
    assert result.timed_out
    assert result.exit_code is None
    # exactly what the command printed, then the note: nothing from the machinery that killed it
    assert result.output.startswith("before\n\n[timed out after 1 s; the command and everything it started")
    assert await survivors_in(runner, *sleepers) == []


async def test_cancelling_execute_kills_the_tree(runner: Backend) -> None:
    sleepers = [unique_sleep() for _ in range(3)]
    with anyio.move_on_after(1) as scope:
        await runner.execute(tree(*sleepers), timeout=600)
    assert scope.cancelled_caught
    assert await survivors_in(runner, *sleepers) == []


async def test_cancelling_while_iterating_open_process_kills_the_tree(runner: Backend) -> None:
    sleepers = [unique_sleep() for _ in range(3)]
    seen: list[OutputChunk] = []
    with anyio.move_on_after(1) as scope:
        async with runner.open_process(tree(*sleepers)) as process:
            async for chunk in process:
                seen.append(chunk)
    assert scope.cancelled_caught
    assert b"".join(chunk.data for chunk in seen) == b"before\n"
    assert await survivors_in(runner, *sleepers) == []


async def test_cancelled_at_any_moment_of_its_start_a_command_leaves_nothing_running(runner: Backend) -> None:
    """Cancellation while the command is being started (an exec being created and attached, for Docker) too."""
    sleepers = [unique_sleep() for _ in range(12)]
    for step, sleeper in enumerate(sleepers):
        with anyio.move_on_after(step * 0.015):
            await runner.execute(sh(sleeper), timeout=600)
    assert await survivors_in(runner, *sleepers) == []


async def test_a_shell_that_exits_before_its_background_child_returns_after_a_short_drain_and_leaves_it_running(
    runner: Backend,
) -> None:
    """The call returns once the command's own shell exits (the child holds the pipes: a drain of at most a few
    seconds, the engine's in a container); what it started in the background keeps running."""
    sleeper = unique_sleep()
    started = anyio.current_time()
    result = await runner.execute(f"{sh(sleeper)} & echo hi", timeout=120)
    assert anyio.current_time() - started < 8
    assert (result.exit_code, result.output, result.timed_out) == (0, "hi\n", False)
    assert await command_lines_with(runner, sleeper)
    await runner.execute(_kill_command(sleeper), timeout=60)
    assert await survivors_in(runner, sleeper) == []


async def test_a_timeout_kills_every_process_group_of_the_session_but_spares_a_new_session(runner: Backend) -> None:
    """``set -m`` puts each job in a process group of its own, in the same session: all are killed. A process
    that moved into a session of its own (``setsid``) is never killed."""
    jobs, detached = [unique_sleep() for _ in range(2)], unique_sleep()
    has_setsid = (await runner.execute("command -v setsid", timeout=60)).exit_code == 0
    script = f"set -m; {sh(jobs[0])} & {sh(jobs[1])} & "
    if has_setsid:
        script += f"setsid {sh(detached)} </dev/null >/dev/null 2>&1 & "
    result = await runner.execute(script + "sleep 600", timeout=2)
    assert result.timed_out
    assert await survivors_in(runner, *jobs) == []
    if has_setsid:
        assert await command_lines_with(runner, detached)
        await runner.execute(_kill_command(detached), timeout=60)


def _kill_command(argv: list[str]) -> str:
    """A shell command that kills the processes whose command line is ``argv`` exactly."""
    line = shlex.quote("|".join(argv) + "|")
    return (
        "for f in /proc/[0-9]*/cmdline; do "
        f"[ \"$(tr '\\000' '|' < \"$f\" 2>/dev/null)\" = {line} ] || continue; "
        'p=${f#/proc/}; kill -9 "${p%/cmdline}"; done; true'
    )


async def command_lines_with(backend: Backend, argv: list[str]) -> bool:
    return argv in await command_lines(backend)


async def test_output_beyond_the_cap_keeps_head_and_tail_in_bounded_memory(
    exec_kind: str, tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    printed, cap = 200_000_000, 10_000
    already_tracing = tracemalloc.is_tracing()
    async with new_backend(exec_kind, tmp_path, max_output_chars=cap) as backend:
        if not already_tracing:
            tracemalloc.start()
        try:
            tracemalloc.reset_peak()
            result = await backend.execute(f"echo START; yes | head -c {printed}; echo END", timeout=600)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            if not already_tracing:
                tracemalloc.stop()
    record_property("python_peak_bytes_for_200MB_of_output", peak)
    assert result.exit_code == 0
    assert result.truncated
    assert result.output.startswith("START\ny\ny\n")
    assert result.output.endswith("y\ny\nEND\n")
    assert "characters of output omitted" in result.output
    assert cap <= len(result.output) <= cap + 200  # the cap, plus the note saying how much was left out
    assert peak < printed // 4  # the output streamed through; it was never held


# --- streaming -----------------------------------------------------------------------------------------------


async def test_open_process_yields_output_before_the_process_ends(runner: Backend) -> None:
    async with runner.open_process("echo first; sleep 1; echo second") as process:
        first = await process.receive()
        still_running = process.returncode
        rest = [chunk async for chunk in process]
        code = await process.wait()
    assert first is not None
    assert first.text == "first\n"
    assert still_running is None
    assert "".join(chunk.text for chunk in rest) == "second\n"
    assert code == 0
    assert process.returncode == 0


async def test_chunks_are_tagged_with_their_stream(runner: Backend) -> None:
    by_stream = {"stdout": "", "stderr": ""}
    async with runner.open_process("echo out-1; echo err-1 >&2; echo out-2; echo err-2 >&2") as process:
        async for chunk in process:
            by_stream[chunk.stream] += chunk.text
        assert await process.wait() == 0
    assert by_stream == {"stdout": "out-1\nout-2\n", "stderr": "err-1\nerr-2\n"}


async def test_interactive_stdin(runner: Backend) -> None:
    async with runner.open_process('read line; echo "got $line"; cat', interactive=True) as process:
        await process.write_stdin("hello\n")
        received = ""
        while "got hello\n" not in received:
            chunk = await process.receive()
            assert chunk is not None, received
            received += chunk.text
        await process.write_stdin(b"more\n")
        await process.close_stdin()
        received += "".join([chunk.text async for chunk in process])
        code = await process.wait()
    assert received == "got hello\nmore\n"
    assert code == 0


@pytest.mark.parametrize("command", ["echo ready; {sleeper}", "echo ready; yes {sleeper}"], ids=["quiet", "chatty"])
async def test_leaving_open_process_early_kills_it(
    runner: Backend, command: str, record_property: Callable[[str, object], None]
) -> None:
    """Quiet: nothing more to read. Chatty: it keeps printing to a reader that has gone away."""
    sleeper = unique_sleep()
    async with runner.open_process(command.format(sleeper=sh(sleeper))) as process:
        first = await process.receive()
        left = anyio.current_time()
    record_property("seconds_to_leave_the_block", round(anyio.current_time() - left, 3))
    assert first is not None
    assert first.text.startswith("ready\n")
    assert await survivors_in(runner, sleeper, ["yes", *sleeper]) == []


async def test_an_exception_in_the_block_propagates_as_itself_and_the_process_is_killed(runner: Backend) -> None:
    sleeper = unique_sleep()
    with pytest.raises(ValueError, match=r"^mine$"):  # not wrapped in an ExceptionGroup by an inner task group
        async with runner.open_process(sh(sleeper)):
            raise ValueError("mine")
    assert await survivors_in(runner, sleeper) == []


# --- background processes ------------------------------------------------------------------------------------


async def test_background_process_lifecycle(runner: Backend) -> None:
    sleeper = unique_sleep()
    started = await runner.start_background(f"echo started; {sh(sleeper)}")
    assert started.running
    assert started.command == f"echo started; {sh(sleeper)}"
    snapshot = await until(lambda: runner.read_background(started.id), lambda s: "started" in s.output)
    assert snapshot.running
    assert snapshot.exit_code is None
    assert snapshot.output == "started\n"
    assert sleeper in await command_lines(runner)  # the scan that finds survivors does see a live process
    assert [p.id for p in await runner.list_background()] == [started.id]
    killed = await runner.kill_background(started.id)
    assert not killed.running
    assert killed.exit_code == 128 + signal.SIGKILL
    assert killed.output == "started\n"
    assert await survivors_in(runner, sleeper) == []
    assert not (await runner.read_background(started.id)).running


async def test_a_finished_background_process_keeps_its_output_and_exit_code(runner: Backend) -> None:
    started = await runner.start_background("echo done; echo oops >&2; exit 4")
    finished = await until(lambda: runner.read_background(started.id), lambda s: not s.running)
    assert finished.exit_code == 4
    assert sorted(finished.output.splitlines()) == ["done", "oops"]
    assert not finished.truncated
    assert (await runner.kill_background(started.id)).exit_code == 4  # killing a finished one changes nothing


async def test_unknown_background_id_raises(runner: Backend) -> None:
    with pytest.raises(ProcessNotFoundError):
        await runner.read_background("no-such-id")
    with pytest.raises(ProcessNotFoundError):
        await runner.kill_background("no-such-id")


async def test_background_processes_need_no_async_with_and_stop_from_another_task(
    exec_kind: str, tmp_path: Path
) -> None:
    sleeper = unique_sleep()
    backend = new_backend(exec_kind, tmp_path)
    try:
        started = await backend.start_background(f"echo ready; {sh(sleeper)}")
        with anyio.fail_after(60):
            while not (await backend.read_background(started.id)).output:
                await anyio.sleep(0.05)
        assert [p.id for p in await backend.list_background()] == [started.id]
    finally:
        async with anyio.create_task_group() as tasks:  # closed from a task that did not start it
            tasks.start_soon(backend.aclose)
    assert await survivors_on_host(sleeper) == []
    await backend.aclose()  # idempotent


async def test_closing_the_backend_kills_its_background_processes(exec_kind: str, tmp_path: Path) -> None:
    """Checked on the host: a local engine's container processes are host processes too."""
    sleepers = [unique_sleep() for _ in range(3)]
    async with new_backend(exec_kind, tmp_path) as backend:
        await backend.start_background(sh(sleepers[0]))
        await backend.start_background(f"{sh(sleepers[1])} & {sh(sleepers[2])}")
        running = await backend.list_background()
        assert [p.running for p in running] == [True, True]
        with anyio.fail_after(60):
            while True:  # all three have started (the scan that finds survivors does see them)
                lines = await command_lines(backend)
                if all(sleeper in lines for sleeper in sleepers):
                    break
                await anyio.sleep(0.05)
    assert await survivors_on_host(*sleepers) == []


async def test_one_namespace_for_the_file_tools_and_the_shell(runner: Backend) -> None:
    """A path the file tools took or returned works unchanged in the shell, absolute or relative, and back."""
    written = await runner.write("pkg/mod.py", "print('hi')\n")  # relative: from the working directory
    assert written.ok, written
    found = await runner.grep_raw("hi", "pkg")
    assert not isinstance(found, str)
    paths = {written.path, *(i.path for i in await runner.ls_info("pkg")), *(m.path for m in found)}
    paths |= {i.path for i in await runner.glob_info("**/mod.py")}
    assert len(paths) == 1, paths  # one name for one file
    [path] = paths
    pwd = (await runner.execute("pwd", timeout=60)).output.strip()
    assert path == f"{pwd}/pkg/mod.py"
    for name in (path, "pkg/mod.py", "./pkg/mod.py"):
        shown = await runner.execute(f"cat {shlex.quote(name)}", timeout=60)
        assert shown.output == "print('hi')\n", name
    printed = (await runner.execute('ls -d "$PWD"/pkg/mod.py', timeout=60)).output.strip()
    assert await runner.read_bytes(printed) == b"print('hi')\n"
    assert (await runner.write(f"{pwd}/pkg/two.py", "2\n")).path == f"{pwd}/pkg/two.py"
    assert (await runner.execute("cat pkg/two.py", timeout=60)).output == "2\n"


# --- LocalBackend only ---------------------------------------------------------------------------------------


async def test_local_commands_run_in_the_root_dir_by_default(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    async with LocalBackend(tmp_path) as backend:
        assert (await backend.execute("pwd", timeout=60)).output == f"{os.path.realpath(tmp_path)}\n"
        for cwd in ("sub", f"{tmp_path}/sub"):  # relative to root_dir, or the host path
            inside = await backend.execute("pwd", timeout=60, cwd=cwd)
            assert inside.output == f"{os.path.realpath(tmp_path / 'sub')}\n"
        with pytest.raises(PathEscapeError):  # not below root_dir: "/sub" is the host's /sub
            await backend.execute("pwd", timeout=60, cwd="/sub")


async def test_local_cwd_outside_the_root_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "file.txt").parent.mkdir()
    (root / "file.txt").write_text("x")
    (root / "out").symlink_to(tmp_path)
    async with LocalBackend(root) as backend:
        with pytest.raises(InvalidPathError):
            await backend.execute("pwd", timeout=60, cwd="../")
        with pytest.raises(InvalidPathError):
            await backend.execute("pwd", timeout=60, cwd="sub/../../etc")
        with pytest.raises(PathEscapeError):
            await backend.execute("pwd", timeout=60, cwd="out")
        with pytest.raises(PathNotDirectoryError):
            await backend.execute("pwd", timeout=60, cwd="file.txt")
        with pytest.raises(PathEscapeError):
            async with backend.open_process("pwd", cwd="out"):
                pass
        gc.collect()  # a refused start must leave nothing unclosed behind (a ResourceWarning fails the test)


def live_members_of_group(group: int) -> list[str]:
    """Pids in process group ``group`` that still run (a zombie has no command line; its reaper will come)."""
    members: list[str] = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as handle:
                pgrp = int(handle.read().rsplit(")", 1)[1].split()[2])
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                alive = bool(handle.read())
        except (OSError, IndexError, ValueError):
            continue
        if pgrp == group and alive:
            members.append(pid)
    return members


async def test_local_timeout_kills_the_process_group(tmp_path: Path) -> None:
    """The shell leads a new group; after a timeout no process is left in it, however deep it was started."""
    nested = f"sh -c 'sh -c \"{sh(unique_sleep())}\" & {sh(unique_sleep())}'"
    async with LocalBackend(tmp_path) as backend:
        result = await backend.execute(f"echo $$; {nested} & {sh(unique_sleep())}", timeout=1)
    assert result.timed_out
    group = int(result.output.splitlines()[0])
    assert group != os.getpgid(0)  # its own group, not the test's
    deadline = anyio.current_time() + _GONE_SECONDS
    while True:
        members = live_members_of_group(group)
        if not members or anyio.current_time() > deadline:
            break
        await anyio.sleep(0.1)
    assert members == []


async def test_what_a_command_left_running_goes_when_the_backend_closes(tmp_path: Path) -> None:
    """A background child outlives its command (the workspace contract), but not the backend; a process that moved
    into a session of its own is never killed."""
    left, detached = unique_sleep(), unique_sleep()
    backend = LocalBackend(tmp_path)
    try:
        result = await backend.execute(f"{sh(left)} >/dev/null 2>&1 & setsid {sh(detached)} >/dev/null 2>&1 & echo ok")
        assert result.output == "ok\n"
        assert left in host_command_lines()  # still running after the command returned
        await backend.aclose()
        assert await survivors_on_host(left) == []
        assert detached in host_command_lines()  # its own session: left alone
    finally:
        for pid in pids_running(detached):  # ours: stopped by its pid
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def pids_running(argv: list[str]) -> list[int]:
    """The pids of host processes whose command line is exactly ``argv``."""
    found: list[int] = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError), open(f"/proc/{entry}/cmdline", "rb") as handle:
                if handle.read().decode(errors="replace").split("\0")[:-1] == argv:
                    found.append(int(entry))
    return found
