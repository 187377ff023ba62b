"""Property: whatever path an agent sends, nothing outside the root is ever read or written.

Paths are built from hostile pieces (``..``, ``~``, drives, backslashes, NUL, percent and full-width tricks, links
that point out of the root) and thrown at every method of a real ``FilesystemBackend``. ``nox -s fuzz`` runs 10,000.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent_backends import AgentBackendsError, FilesystemBackend
from agent_backends._paths import normalize

SECRET = "TOP-SECRET-CONTENT"
PIECES = ["..", ".", "", "~", "~root", "C:", "c:", "\\", "\\\\host", "%2e%2e", "%2E%2e%2f", "\uff0e\uff0e",
          "\u2025", "..\u2215", "a\x00b", "out", "secret.txt", "link_out", "link_file", "sub", "new.txt",
          "\u00e9", " ", "*", "?", "[", "{a,b}"]  # fmt: skip


@st.composite
def hostile_paths(draw: st.DrawFn) -> str:
    pieces = draw(st.lists(st.sampled_from(PIECES) | st.text(max_size=4), min_size=1, max_size=6))
    separator = draw(st.sampled_from(["/", "\\", "//"]))
    lead = draw(st.sampled_from(["", "/", "./", "../"]))
    return lead + separator.join(pieces)


@pytest.fixture(scope="module")
def arena() -> Iterator[tuple[Path, Path]]:
    with tempfile.TemporaryDirectory() as tmp:
        root, outside = Path(tmp, "root"), Path(tmp, "out")
        (root / "sub").mkdir(parents=True)
        outside.mkdir()
        (outside / "secret.txt").write_text(SECRET)
        (root / "link_out").symlink_to(outside, target_is_directory=True)
        (root / "link_file").symlink_to(outside / "secret.txt")
        (root / "sub" / "link_out").symlink_to(outside, target_is_directory=True)
        yield root, outside


def _snapshot(directory: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in directory.rglob("*") if p.is_file()}


@given(path=hostile_paths())
def test_no_path_reaches_outside_the_root(arena: tuple[Path, Path], path: str) -> None:
    root, outside = arena
    before = _snapshot(outside)

    async def attack() -> list[str]:
        backend = FilesystemBackend(root)
        seen: list[str] = []
        for call in (
            lambda: backend.read(path),
            lambda: backend.write(path, "pwned"),
            lambda: backend.edit(path, "TOP", "OWN"),
            lambda: backend.grep_raw("SECRET", path),
            lambda: backend.grep_raw("SECRET", "/", glob=path),
            lambda: backend.glob_info(path),
            lambda: backend.ls_info(path),
            lambda: backend.read_bytes(path),
        ):
            try:
                seen.append(repr(await call()))
            except (AgentBackendsError, ValueError, OSError):
                continue
        return seen

    outputs = anyio.run(attack)
    assert not any(SECRET in output for output in outputs), (path, outputs)
    assert _snapshot(outside) == before, path
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            if name not in ("link_file",):
                os.unlink(os.path.join(dirpath, name))


@given(path=st.text(max_size=30))
def test_normalize_yields_a_clean_absolute_path_or_refuses(path: str) -> None:
    try:
        result = normalize(path)
    except ValueError:
        return
    assert result.startswith("/")
    assert ".." not in result.split("/")
    assert "\\" not in result
    assert "\x00" not in result
    assert "//" not in result
    assert result == "/" or not result.endswith("/")
