"""CompositeBackend: routing on whole segments, prefixes restored everywhere, fan-out merged and capped."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent_backends import (
    CompositeBackend,
    ExecutionNotSupportedError,
    FilesystemBackend,
    GrepMatches,
    LocalBackend,
    PathError,
    PathNotFoundError,
    StateBackend,
)

pytestmark = pytest.mark.anyio


@pytest.fixture
async def composite(tmp_path: Path) -> CompositeBackend:
    backend = CompositeBackend(
        default=StateBackend(),
        routes={
            "/data/": FilesystemBackend(tmp_path / "data"),
            "/data/cold": StateBackend(),
            "/project": FilesystemBackend(tmp_path / "project"),
        },
    )
    for path in ["/data/a.txt", "/data/cold/b.txt", "/data2/c.txt", "/project/src/d.py", "/temp/e.py"]:
        assert (await backend.write(path, f"hit in {path}\n")).ok
    return backend


async def test_whole_segment_longest_prefix_routing(composite: CompositeBackend, tmp_path: Path) -> None:
    assert (tmp_path / "data" / "a.txt").exists()
    assert not (tmp_path / "data" / "cold").exists(), "/data/cold belongs to the longer route"
    assert not (tmp_path / "data2").exists()
    default = composite.default
    assert isinstance(default, StateBackend)
    assert set(default.files) == {"/data2/c.txt", "/temp/e.py"}, "/data2 never routes to /data/"
    cold = composite.routes["/data/cold"]
    assert isinstance(cold, StateBackend)
    assert set(cold.files) == {"/b.txt"}, "the prefix is stripped on the way in"


async def test_trailing_slashes_and_relative_prefixes_are_the_same_route(tmp_path: Path) -> None:
    backend = CompositeBackend(StateBackend(), routes={"data/": StateBackend()})
    await backend.write("/data", "x")
    assert list(backend.routes) == ["/data"]
    assert await backend.read("/data/") == "Error: '/data' is a directory" or await backend.exists("/data")


async def test_root_listing_shows_mount_points_and_default_entries(composite: CompositeBackend) -> None:
    listing = await composite.ls_info("/")
    assert [(i.path, i.is_dir) for i in listing] == [
        ("/data", True),
        ("/data2", True),
        ("/project", True),
        ("/temp", True),
    ]
    assert [i.path for i in await composite.ls_info("/data")] == ["/data/a.txt", "/data/cold"]
    assert [i.path for i in await composite.ls_info("/project/src")] == ["/project/src/d.py"]


async def test_glob_and_grep_fan_out_and_restore_prefixes(composite: CompositeBackend) -> None:
    everything = ["/data/a.txt", "/data/cold/b.txt", "/data2/c.txt", "/project/src/d.py", "/temp/e.py"]
    assert [i.path for i in await composite.glob_info("**/*")] == everything
    assert [i.path for i in await composite.glob_info("**/*.py")] == ["/project/src/d.py", "/temp/e.py"]
    assert [i.path for i in await composite.glob_info("data/**/*.txt")] == ["/data/a.txt", "/data/cold/b.txt"]
    assert [i.path for i in await composite.glob_info("*.txt", "/data/cold")] == ["/data/cold/b.txt"]
    found = await composite.grep_raw("hit")
    assert not isinstance(found, str)
    assert [m.path for m in found] == everything
    assert all(m.line == f"hit in {m.path}" for m in found)
    under = await composite.grep_raw("hit", "/data", glob="cold/*")
    assert not isinstance(under, str)
    assert [m.path for m in under] == ["/data/cold/b.txt"]


async def test_fan_out_grep_is_capped_after_merging(tmp_path: Path) -> None:
    backend = CompositeBackend(
        StateBackend({f"/z{i}.txt": "hit\n" for i in range(4)}),
        routes={"/a": StateBackend({f"/{i}.txt": "hit\n" for i in range(4)})},
        max_grep_matches=3,
    )
    found = await backend.grep_raw("hit")
    assert isinstance(found, GrepMatches)
    assert [m.path for m in found] == ["/a/0.txt", "/a/1.txt", "/a/2.txt"]
    assert found.total == 8
    assert found.truncated


async def test_errors_name_the_outer_path(composite: CompositeBackend) -> None:
    assert await composite.read("/project/missing.py") == "Error: '/project/missing.py' does not exist"
    edit = await composite.edit("/data/cold/b.txt", "nothing", "x")
    assert edit.error == "Error: old_string was not found in '/data/cold/b.txt'"
    with pytest.raises(PathNotFoundError, match="'/project/gone'"):
        await composite.read_bytes("/project/gone")
    assert (await composite.grep_raw("(")).startswith("Error: invalid regex")  # type: ignore[union-attr]


async def test_root_route_is_refused_and_execution_needs_a_sandbox() -> None:
    with pytest.raises(PathError):
        CompositeBackend(StateBackend(), routes={"/": StateBackend()})
    with pytest.raises(ExecutionNotSupportedError, match="StateBackend"):
        await CompositeBackend(StateBackend()).execute("echo hi")


async def test_context_manager_closes_children_once(tmp_path: Path) -> None:
    closed: list[str] = []

    class Tracking(StateBackend):
        async def aclose(self) -> None:
            closed.append("closed")

    async with CompositeBackend(Tracking(), routes={"/x": Tracking()}) as backend:
        assert (await backend.write("/x/f", "1")).ok
    await backend.aclose()
    assert closed == ["closed", "closed"]


async def test_local_backends_keep_their_host_paths_behind_routes(tmp_path: Path) -> None:
    """A ``LocalBackend`` names its files by host path; routed, its files take the route's paths, and back."""
    project, scratch = tmp_path / "project", tmp_path / "scratch"
    project.mkdir()
    scratch.mkdir()
    async with CompositeBackend(LocalBackend(scratch), routes={"/project/": LocalBackend(project)}) as backend:
        assert (await backend.write("/project/src/app.py", "print('app')\n")).path == "/project/src/app.py"
        assert (await backend.write("/notes.txt", "print me\n")).path == "/notes.txt"
        assert (project / "src" / "app.py").exists()
        assert (scratch / "notes.txt").exists()
        assert [i.path for i in await backend.ls_info("/project/src")] == ["/project/src/app.py"]
        assert [i.path for i in await backend.glob_info("**/*.py")] == ["/project/src/app.py"]
        found = await backend.grep_raw("print")
        assert not isinstance(found, str)
        assert [m.path for m in found] == ["/notes.txt", "/project/src/app.py"]
        edited = await backend.edit("/project/src/app.py", "app", "APP")
        assert (edited.path, edited.occurrences) == ("/project/src/app.py", 1)
        assert (await backend.read("/project/missing.py")) == "Error: '/project/missing.py' does not exist"
        # The shell is the default's: relative paths agree with the composite's for files on the default route.
        assert (await backend.execute("cat notes.txt", timeout=60)).output == "print me\n"
        (scratch / "sub").mkdir()
        assert (await backend.execute("pwd", cwd="/sub", timeout=60)).output == f"{scratch}/sub\n"
