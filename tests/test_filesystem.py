"""FilesystemBackend: what only a real disk can get wrong (symlinks, atomicity, virtual mode)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import anyio
import anyio.lowlevel
import pytest

from agent_backends import FilesystemBackend, PathEscapeError, PathPermissionError

pytestmark = pytest.mark.anyio


@pytest.fixture
def layout(tmp_path: Path) -> tuple[Path, Path]:
    """A root with links that lead outside it, next to a directory holding a secret."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (outside / "secret.txt").write_text("TOP SECRET\n")
    (root / "inside.txt").write_text("fine\n")
    (root / "escape_dir").symlink_to(outside, target_is_directory=True)
    (root / "escape_file").symlink_to(outside / "secret.txt")
    (root / "ok_link").symlink_to(root / "inside.txt")
    return root, outside


async def test_symlinks_that_leave_the_root_are_refused(layout: tuple[Path, Path]) -> None:
    root, outside = layout
    backend = FilesystemBackend(root)
    for path in ("/escape_file", "/escape_dir/secret.txt"):
        assert (await backend.read(path)).startswith("Error: path"), path
        with pytest.raises(PathEscapeError):
            await backend.read_bytes(path)
    assert (await backend.write("/escape_dir/new.txt", "x")).error is not None
    assert (await backend.edit("/escape_file", "TOP", "NOT")).error is not None
    with pytest.raises(PathEscapeError):
        await backend.ls_info("/escape_dir")
    assert sorted(os.listdir(outside)) == ["secret.txt"]
    assert (outside / "secret.txt").read_text() == "TOP SECRET\n"


async def test_listing_glob_and_grep_do_not_follow_links_out(layout: tuple[Path, Path]) -> None:
    root, _ = layout
    backend = FilesystemBackend(root)
    assert [i.path for i in await backend.ls_info("/")] == ["/inside.txt", "/ok_link"]
    assert [i.path for i in await backend.glob_info("**/*")] == ["/inside.txt", "/ok_link"]
    found = await backend.grep_raw("SECRET|fine")
    assert not isinstance(found, str)
    assert [m.path for m in found] == ["/inside.txt"]
    assert await backend.read("/ok_link") == "     1\tfine"


async def test_root_is_created_and_nothing_lands_beside_it(tmp_path: Path) -> None:
    backend = FilesystemBackend(tmp_path / "new" / "root")
    assert (await backend.write("/a/b.txt", "x")).ok
    assert (tmp_path / "new" / "root" / "a" / "b.txt").read_text() == "x"
    assert os.listdir(tmp_path) == ["new"]


async def test_write_is_atomic_and_keeps_the_file_mode(tmp_path: Path) -> None:
    target = tmp_path / "run.sh"
    target.write_text("old")
    target.chmod(0o751)
    inode = target.stat().st_ino
    backend = FilesystemBackend(tmp_path)
    assert (await backend.write("/run.sh", "new")).ok
    assert target.read_text() == "new"
    assert target.stat().st_mode & 0o777 == 0o751
    assert target.stat().st_ino != inode, "replaced by rename, not rewritten in place"
    assert sorted(os.listdir(tmp_path)) == ["run.sh"], "no temporary file left behind"


async def test_concurrent_writes_to_one_file_never_tear_it(tmp_path: Path) -> None:
    backend = FilesystemBackend(tmp_path)
    payloads = [bytes([65 + i]) * 300_000 for i in range(12)]
    seen: set[bytes] = set()

    async def reader() -> None:
        for _ in range(40):
            with contextlib.suppress(FileNotFoundError):
                seen.add(await backend.read_bytes("/shared.bin"))
            await anyio.lowlevel.checkpoint()

    async with anyio.create_task_group() as tg:
        tg.start_soon(reader)
        for payload in payloads:
            tg.start_soon(backend.write, "/shared.bin", payload)
    final = await backend.read_bytes("/shared.bin")
    assert final in payloads
    assert seen <= set(payloads), "a reader saw a mix of two writes"
    assert os.listdir(tmp_path) == ["shared.bin"]


async def test_concurrent_edits_to_one_file_lose_nothing(tmp_path: Path) -> None:
    backend = FilesystemBackend(tmp_path)
    await backend.write("/counter.txt", "".join(f"slot{i}=0\n" for i in range(20)))
    async with anyio.create_task_group() as tg:
        for i in range(20):
            tg.start_soon(backend.edit, "/counter.txt", f"slot{i}=0", f"slot{i}=1")
    assert (tmp_path / "counter.txt").read_text() == "".join(f"slot{i}=1\n" for i in range(20))


async def test_virtual_mode_never_touches_the_disk(tmp_path: Path) -> None:
    (tmp_path / "existing.py").write_text("x = 1\n")
    (tmp_path / "doomed.txt").write_text("bye\n")
    before = {p: p.read_bytes() for p in tmp_path.rglob("*")}
    backend = FilesystemBackend(tmp_path, virtual_mode=True)

    assert (await backend.write("/new_file.py", "content")).ok
    assert (await backend.edit("/existing.py", "x = 1", "x = 2")).ok
    await backend.delete("/doomed.txt")

    assert await backend.read("/existing.py") == "     1\tx = 2"
    assert await backend.read("/new_file.py") == "     1\tcontent"
    assert (await backend.read("/doomed.txt")).startswith("Error: '/doomed.txt' does not exist")
    assert [i.path for i in await backend.ls_info("/")] == ["/existing.py", "/new_file.py"]
    assert [i.path for i in await backend.glob_info("*")] == ["/existing.py", "/new_file.py"]
    found = await backend.grep_raw("x = |content|bye")
    assert not isinstance(found, str)
    assert [(m.path, m.line) for m in found] == [("/existing.py", "x = 2"), ("/new_file.py", "content")]
    assert set(backend.virtual_files) == {"/existing.py", "/new_file.py"}
    assert backend.virtual_files["/existing.py"].content == b"x = 2\n"

    assert {p: p.read_bytes() for p in tmp_path.rglob("*")} == before


async def test_virtual_mode_recreating_a_deleted_file(tmp_path: Path) -> None:
    (tmp_path / "f.txt").write_text("disk\n")
    backend = FilesystemBackend(tmp_path, virtual_mode=True)
    await backend.delete("/f.txt")
    assert not await backend.exists("/f.txt")
    await backend.write("/f.txt", "memory\n")
    assert await backend.read("/f.txt") == "     1\tmemory"
    assert (tmp_path / "f.txt").read_text() == "disk\n"


async def test_the_seed_host_style_paths_name_files_under_the_root(tmp_path: Path) -> None:
    """``FilesystemBackend("/workspace", virtual_mode=True)`` then ``write("/workspace/new_file.py")``, as the
    seed page does: a path under ``root_dir`` written as a host path names the file below the root."""
    root = tmp_path / "workspace"
    (root / "src").mkdir(parents=True)
    (root / "existing_file.py").write_text("def existing():\n    pass\n")
    (root / "src" / "mod.py").write_text("def found(x):\n    return x\n")
    backend = FilesystemBackend(root, virtual_mode=True)
    assert (await backend.write(f"{root}/new_file.py", "content")).path == "/new_file.py"
    assert await backend.read(f"{root}/existing_file.py") == "     1\tdef existing():\n     2\t    pass"
    found = await backend.grep_raw(r"def \w+\(", path=f"{root}/src")
    assert not isinstance(found, str)
    assert [(m.path, m.line) for m in found] == [("/src/mod.py", "def found(x):")]
    assert set(backend.virtual_files) == {"/new_file.py"}
    assert [i.path for i in await backend.glob_info(f"{root}/**/*.py")] == [
        "/existing_file.py",
        "/new_file.py",
        "/src/mod.py",
    ]
    assert not (root / "new_file.py").exists()
    disk = FilesystemBackend(root)
    assert (await disk.edit(f"{root}/src/mod.py", "return x", "return x * 2")).ok
    assert "x * 2" in (root / "src" / "mod.py").read_text()
    await disk.delete(f"{root}/src/mod.py")
    with pytest.raises(PathPermissionError):
        await disk.delete(str(root), recursive=True)  # the root under its host name is still the root
    assert root.is_dir()
