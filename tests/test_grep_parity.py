"""One pattern, one meaning: real ripgrep (disk) and Python's ``re`` (memory) must agree on the common subset."""

from __future__ import annotations

import codecs
from pathlib import Path

import pytest

from agent_backends import FilesystemBackend, GrepMatches, RipgrepNotFoundError, StateBackend
from agent_backends import _ripgrep as ripgrep_module

pytestmark = pytest.mark.anyio

CORPUS: dict[str, bytes] = {
    "/src/app.py": b"import os\n\ndef main():\n    print('hello world')\n    return 42\n\tindented_with_tab = 1\n",
    "/src/util.py": b"def helper(x):\n    return x * 2  # double\nclass Thing:\n    pass\n",
    "/docs/readme.md": "# Title\nCaf\u00e9 cr\u00e8me \u00e9t\u00e9\nEmail me: bob@example.com\n".encode(),
    "/docs/dos.txt": b"first line\r\nsecond line   \r\nend\r\n",
    "/docs/bom.txt": codecs.BOM_UTF8 + b"bom first\nplain\n",
    "/docs/utf16.txt": codecs.BOM_UTF16_LE + "utf16 text here\nmore\n".encode("utf-16-le"),
    "/.hidden/secret.cfg": b"token = abc123\n",
    "/bin/blob.bin": b"hello\x00world\nhello again\n",
    "/deep/a/b/c/d.txt": b"xxx\nxx\nxxxx\nab ab ab\n",
}

PATTERNS = [
    "hello",
    "^def ",
    r"\)$",
    r"\bx\b",
    r"\d+",
    r"(?i)TITLE",
    "main|helper",
    "[a-z]+_[a-z]+",
    "\u00e9t\u00e9",
    r"\w+@\w+\.com",
    r"\s+$",
    "x{3,}",
    "(ab ?)+",
    "[^a-z ]",
    r"\t",
    "^$",
    "line",
    "^bom",
    "utf16",
    "token",
    ".",
]


@pytest.fixture
async def pair(tmp_path: Path) -> tuple[StateBackend, FilesystemBackend]:
    memory = StateBackend(files=CORPUS, max_grep_matches=None)
    disk = FilesystemBackend(tmp_path, max_grep_matches=None)
    for path, content in CORPUS.items():
        assert (await disk.write(path, content)).ok
    return memory, disk


@pytest.mark.parametrize("pattern", PATTERNS)
@pytest.mark.parametrize(
    ("path", "glob"),
    [(None, None), ("/docs", None), ("/", "*.py"), ("/", "src/*"), ("/", "!*.py"), ("/", "!docs/*")],
)
async def test_ripgrep_and_python_agree(
    pair: tuple[StateBackend, FilesystemBackend], pattern: str, path: str | None, glob: str | None
) -> None:
    memory, disk = pair
    in_memory = await memory.grep_raw(pattern, path, glob)
    on_disk = await disk.grep_raw(pattern, path, glob)
    assert not isinstance(on_disk, str), on_disk
    assert in_memory == on_disk


async def test_the_corpus_exercises_what_it_claims(pair: tuple[StateBackend, FilesystemBackend]) -> None:
    _, disk = pair
    found = await disk.grep_raw("hello|token|utf16|bom first|second line   $")
    assert not isinstance(found, str)
    assert {m.path for m in found} == {
        "/src/app.py",
        "/.hidden/secret.cfg",
        "/docs/utf16.txt",
        "/docs/bom.txt",
        "/docs/dos.txt",
    }, "hidden files, UTF-16, BOM and CRLF files are searched; the binary file is not"


async def test_missing_ripgrep_names_the_extra(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(ripgrep_module, "_rg_path", None)
    monkeypatch.setattr(ripgrep_module, "_locate_rg", lambda: None)
    with pytest.raises(RipgrepNotFoundError, match=r"agent-backends\[ripgrep\]"):
        await FilesystemBackend(tmp_path).grep_raw("x")


@pytest.mark.parametrize("cap", [1, 7, 150, None])
async def test_capped_results_agree_and_count_everything(tmp_path: Path, cap: int | None) -> None:
    """Many files, a small cap: ripgrep's parser skips files past the cutoff but must still count their matches."""
    files = {f"/d{i % 7}/f{i:03d}.txt": "".join(f"hit {j}\n" for j in range(i % 4 + 1)) for i in range(300)}
    memory = StateBackend(files=files, max_grep_matches=cap)
    disk = FilesystemBackend(tmp_path, max_grep_matches=cap)
    await disk.upload_files([(path, content.encode()) for path, content in files.items()])
    expected = await memory.grep_raw("hit")
    found = await disk.grep_raw("hit")
    assert isinstance(found, GrepMatches)
    assert isinstance(expected, GrepMatches)
    assert found == expected
    assert found.total == expected.total == sum(i % 4 + 1 for i in range(300))
    assert found.truncated == (cap is not None)
