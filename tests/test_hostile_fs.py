"""Hostile input on the disk backends: links, special files, two names for one file, deep and long paths.

Each class of input has several variants; each test would fail on a backend that follows a link when deleting,
locks edits by path text, opens a FIFO blocking, or builds a long temporary name.
"""

from __future__ import annotations

import os
import socket
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

from agent_backends import (
    FilesystemBackend,
    LocalBackend,
    PathError,
    PathIsDirectoryError,
    PathPermissionError,
    SpecialFileError,
)

pytestmark = pytest.mark.anyio

# A hang guard, not a timing assertion: an operation that blocks on a FIFO would never return.
HANG_GUARD = 30

DISK_KINDS = ["filesystem", "local", "virtual"]


def _backend(kind: str, root: Path) -> FilesystemBackend:
    if kind == "local":
        return LocalBackend(root)
    return FilesystemBackend(root, virtual_mode=kind == "virtual")


def _at(backend: FilesystemBackend, path: str) -> str:
    """``path`` (from the root) as ``backend`` names it: ``LocalBackend``'s paths are host paths."""
    return path if backend.root_path == "/" else backend.root_path + path


@pytest.fixture(params=DISK_KINDS)
def disk_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "root"
    path.mkdir()
    return path


# --- delete never goes through a link ---------------------------------------------------------------------------


@pytest.fixture
def linked(root: Path, tmp_path: Path) -> Path:
    """``real/`` with files, links to it and to a file inside, ``self -> .``, and links that lead outside."""
    (root / "real" / "sub").mkdir(parents=True)
    (root / "real" / "keep.txt").write_text("keep\n")
    (root / "real" / "sub" / "deep.txt").write_text("deep\n")
    (root / "target.txt").write_text("target\n")
    (root / "alias").symlink_to("real", target_is_directory=True)
    (root / "abs_alias").symlink_to(root / "real", target_is_directory=True)
    (root / "flink").symlink_to("target.txt")
    (root / "self").symlink_to(".", target_is_directory=True)
    (root / "dangling").symlink_to("nowhere")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious.txt").write_text("precious\n")
    (root / "out").symlink_to(outside, target_is_directory=True)
    return root


def _intact(root: Path) -> None:
    assert (root / "real" / "keep.txt").read_text() == "keep\n"
    assert (root / "real" / "sub" / "deep.txt").read_text() == "deep\n"
    assert (root / "target.txt").read_text() == "target\n"
    assert (root.parent / "outside" / "precious.txt").read_text() == "precious\n"


@pytest.mark.parametrize("name", ["alias", "abs_alias", "flink", "self", "dangling", "out"])
@pytest.mark.parametrize("recursive", [False, True])
async def test_delete_removes_the_link_itself_never_its_target(linked: Path, name: str, recursive: bool) -> None:
    backend = FilesystemBackend(linked)
    await backend.delete(f"/{name}", recursive=recursive)
    assert not os.path.lexists(linked / name)
    assert linked.is_dir()
    _intact(linked)


async def test_delete_through_a_link_in_a_parent_reaches_only_inside(linked: Path) -> None:
    backend = FilesystemBackend(linked)
    await backend.delete("/alias/keep.txt")
    assert not (linked / "real" / "keep.txt").exists()
    await backend.delete("/self/self/alias/sub", recursive=True)
    assert not (linked / "real" / "sub").exists()
    with pytest.raises(PathError):
        await backend.delete("/out/precious.txt")
    assert (linked.parent / "outside" / "precious.txt").exists()


@pytest.mark.parametrize("path", ["/", ".", "/./", "//"])
async def test_the_root_is_never_deleted(linked: Path, path: str) -> None:
    backend = FilesystemBackend(linked)
    with pytest.raises(PathPermissionError):
        await backend.delete(path, recursive=True)
    _intact(linked)


async def test_the_root_is_refused_under_another_name(tmp_path: Path) -> None:
    """A bind of the root below itself is the root by identity (a hard link to a directory cannot be made)."""
    root = tmp_path / "root"
    root.mkdir()
    (root / "a.txt").write_text("a")
    backend = FilesystemBackend(root)
    # The root's own path seen from inside through an absolute link: the link goes, the root stays.
    (root / "me").symlink_to(root, target_is_directory=True)
    await backend.delete("/me", recursive=True)
    assert (root / "a.txt").exists()


async def test_a_link_to_a_directory_needs_no_recursive_and_virtual_mode_hides_only_the_link(linked: Path) -> None:
    backend = FilesystemBackend(linked, virtual_mode=True)
    await backend.delete("/alias")
    await backend.delete("/self", recursive=True)
    assert not await backend.exists("/alias")
    assert await backend.exists("/real/keep.txt")
    assert os.path.islink(linked / "alias")  # virtual mode never touches the disk
    _intact(linked)


@pytest.mark.parametrize("depth", [1_000, 1_500])
async def test_a_very_deep_tree_is_deleted_without_recursion_errors(root: Path, depth: int) -> None:
    fd = os.open(root, os.O_RDONLY)
    try:
        for _ in range(depth):  # built by descriptor: the full path is far past PATH_MAX
            os.mkdir("d", dir_fd=fd)
            below = os.open("d", os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = below
        with open(os.open("leaf.txt", os.O_WRONLY | os.O_CREAT, dir_fd=fd), "w") as handle:
            handle.write("leaf")
    finally:
        os.close(fd)
    backend = FilesystemBackend(root)
    with pytest.raises(PathIsDirectoryError):
        await backend.delete("/d")
    await backend.delete("/d", recursive=True)
    assert os.listdir(root) == []


async def test_a_deep_long_path_is_written_read_and_deleted(root: Path, disk_kind: str) -> None:
    backend = _backend(disk_kind, root)
    path = _at(backend, "/" + "/".join(["d"] * 995) + "/f.txt")
    assert len(path) > 1_990
    assert (await backend.write(path, "deep\n")).ok
    assert await backend.read(path) == "     1\tdeep"
    assert (await backend.edit(path, "deep", "deeper")).ok
    assert await backend.read_bytes(path) == b"deeper\n"
    assert [i.path for i in await backend.glob_info("**/f.txt")] == [path]
    await backend.delete("d", recursive=True)
    assert not await backend.exists(path)


@pytest.mark.parametrize("length", [242, 250, 255])
async def test_names_up_to_255_bytes_are_written_and_edited(root: Path, disk_kind: str, length: int) -> None:
    name = "n" * (length - 4) + ".txt"
    backend = _backend(disk_kind, root)
    assert (await backend.write(name, "one\n")).ok
    assert (await backend.write(name, "two\n")).ok
    assert (await backend.edit(name, "two", "three")).ok
    assert await backend.read_bytes(name) == b"three\n"
    assert [p for p in os.listdir(root) if p != name] == []  # no temporary file left behind


async def test_a_name_over_255_bytes_is_a_clear_error(root: Path) -> None:
    backend = FilesystemBackend(root)
    result = await backend.write("/" + "n" * 256, "x")
    assert result.error is not None
    assert "255" in result.error


# --- two names for one file ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("second", ["symlink", "hardlink", "self-dir", "same"])
async def test_concurrent_edits_through_two_names_lose_nothing(root: Path, second: str) -> None:
    (root / "f.txt").write_text("START\nEND\n")
    other = {
        "symlink": "/alias.txt",
        "hardlink": "/hard.txt",
        "self-dir": "/self/f.txt",
        "same": "/f.txt",
    }[second]
    if second == "symlink":
        (root / "alias.txt").symlink_to("f.txt")
    elif second == "hardlink":
        os.link(root / "f.txt", root / "hard.txt")
    elif second == "self-dir":
        (root / "self").symlink_to(".", target_is_directory=True)
    backend = FilesystemBackend(root)
    results: list[Any] = []

    async def add(i: int) -> None:
        path = "/f.txt" if i % 2 else other
        results.append(await backend.edit(path, "END\n", f"{i}\nEND\n"))

    async with anyio.create_task_group() as tg:
        for i in range(200):
            tg.start_soon(add, i)
    assert all(r.ok for r in results)
    lines = (root / "f.txt").read_text().splitlines()
    assert sorted(lines[1:-1], key=int) == [str(i) for i in range(200)]
    if second == "hardlink":
        assert (root / "hard.txt").read_text() == (root / "f.txt").read_text()
        assert os.stat(root / "hard.txt").st_ino == os.stat(root / "f.txt").st_ino


async def test_two_backends_on_one_directory_serialize_edits_too(root: Path) -> None:
    (root / "f.txt").write_text("END\n")
    one, two = FilesystemBackend(root), LocalBackend(root)

    async def add(i: int) -> None:
        assert (await (one if i % 2 else two).edit("f.txt", "END\n", f"{i}\nEND\n")).ok

    async with anyio.create_task_group() as tg:
        for i in range(100):
            tg.start_soon(add, i)
    assert len((root / "f.txt").read_text().splitlines()) == 101


async def test_writes_keep_hard_links_and_modes(root: Path) -> None:
    (root / "f.txt").write_text("one")
    os.chmod(root / "f.txt", 0o640)
    os.link(root / "f.txt", root / "hard.txt")
    backend = FilesystemBackend(root)
    assert (await backend.write("/hard.txt", "two")).ok
    assert (root / "f.txt").read_text() == "two"
    (root / "single.txt").write_text("x")
    os.chmod(root / "single.txt", 0o751)
    assert (await backend.write("/single.txt", "y")).ok
    assert stat.S_IMODE(os.stat(root / "single.txt").st_mode) == 0o751
    assert stat.S_IMODE(os.stat(root / "f.txt").st_mode) == 0o640


# --- special files never block and are never opened --------------------------------------------------------------


def _fifo(path: Path) -> None:
    os.mkfifo(path)


def _socket(path: Path) -> None:
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    server.close()  # the socket file stays


def _device(path: Path) -> None:
    try:
        os.mknod(path, stat.S_IFCHR | 0o600, os.makedev(1, 3))  # like /dev/null
    except PermissionError:
        pytest.skip("creating a device node needs root")


SPECIALS: dict[str, tuple[Callable[[Path], None], str]] = {
    "fifo": (_fifo, "fifo"),
    "socket": (_socket, "socket"),
    "device": (_device, "char-device"),
}


@pytest.mark.parametrize("special", sorted(SPECIALS))
async def test_special_files_are_refused_without_blocking(root: Path, disk_kind: str, special: str) -> None:
    make, kind = SPECIALS[special]
    (root / "dir").mkdir()
    make(root / "dir" / "thing")
    (root / "dir" / "ok.txt").write_text("needle\n")
    (root / "link").symlink_to("dir/thing")
    backend = _backend(disk_kind, root)
    with anyio.fail_after(HANG_GUARD):
        for path in (_at(backend, "/dir/thing"), _at(backend, "/link")):
            assert (await backend.read(path)).startswith("Error:"), path
            assert kind in await backend.read(path)
            with pytest.raises(SpecialFileError):
                await backend.read_bytes(path)
            edited = await backend.edit(path, "a", "b")
            assert edited.error is not None
            assert kind in edited.error
            found = await backend.grep_raw("needle", path=path)
            assert isinstance(found, str)
            assert found.startswith("Error:")
            [download] = await backend.download_files([path])
            assert download.error is not None
            written = await backend.write(path, "x")
            assert written.error is not None
        listed = {i.name: i for i in await backend.ls_info("dir")}
        assert listed["thing"].special == kind
        assert listed["ok.txt"].special is None
        assert [i.path for i in await backend.glob_info("**/*")] == [_at(backend, "/dir/ok.txt")]
        found = await backend.grep_raw("needle")
        assert not isinstance(found, str)
        assert [m.path for m in found] == [_at(backend, "/dir/ok.txt")]
        assert await backend.exists("dir/thing")
        await backend.delete("dir/thing")
        assert not await backend.exists("dir/thing")
    assert stat.S_ISDIR(os.stat(root / "dir").st_mode)


# --- virtual mode never touches the disk and refuses what the disk would refuse ----------------------------------


async def test_virtual_mode_does_not_create_a_missing_root(tmp_path: Path) -> None:
    root = tmp_path / "missing"
    backend = FilesystemBackend(root, virtual_mode=True)
    assert (await backend.read("/a.txt")).startswith("Error:")
    assert await backend.ls_info("/") == []
    assert await backend.glob_info("**/*") == []
    assert (await backend.write("/a.txt", "x")).ok
    assert await backend.read_bytes("/a.txt") == b"x"
    assert [i.path for i in await backend.ls_info("/")] == ["/a.txt"]
    found = await backend.grep_raw("x")
    assert not isinstance(found, str)
    assert [m.path for m in found] == ["/a.txt"]
    assert not root.exists()


@pytest.mark.parametrize("path", ["/f.txt/x", "/f.txt/a/b.txt", "/d/f.txt/x"])
async def test_virtual_mode_refuses_a_file_below_a_file(root: Path, path: str) -> None:
    (root / "d").mkdir()
    (root / "f.txt").write_text("file\n")
    (root / "d" / "f.txt").write_text("file\n")
    backend = FilesystemBackend(root, virtual_mode=True)
    disk = FilesystemBackend(root)
    assert (await backend.write(path, "x")).error is not None
    assert (await disk.write(path, "x")).error is not None  # the same answer as the disk gives
    assert await backend.read("/f.txt") == "     1\tfile"
    assert (await backend.write("/new/f.txt", "x")).ok
    assert (await backend.write("/new/f.txt/y", "x")).error is not None  # below an overlay file too


async def test_lone_surrogates_in_content_are_an_error_value(root: Path, disk_kind: str) -> None:
    backend = _backend(disk_kind, root)
    for content in ("\ud800", "ok \udfff end", "x" * 10_000 + "\ud83d"):
        result = await backend.write("s.txt", content)
        assert result.error is not None
        assert "Unicode" in result.error
    assert not await backend.exists("s.txt")
