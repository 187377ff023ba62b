"""One pattern, one meaning: real ripgrep (disk) and Python's ``re`` (memory) must agree on the common subset."""

from __future__ import annotations

import codecs
from pathlib import Path

import anyio
import pytest

from agent_backends import FilesystemBackend, GrepMatches, RipgrepNotFoundError, StateBackend
from agent_backends import _ripgrep as ripgrep_module
from agent_backends._grep import NEST_LIMIT, MatchCollector, nest_depth, pattern_error
from agent_backends._ripgrep import RG_FLAGS, RipgrepJson, find_rg

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
    [
        (None, None),
        ("/docs", None),
        ("/", "*.py"),
        ("/", "src/*"),
        ("/", "!*.py"),
        ("/", "!docs/*"),
        ("/", "!docs"),  # a negated name prunes the directory (ripgrep's walk); memory must agree
        ("/", "!a"),
        ("/deep", "!c"),
        ("/", "!src/"),
        ("/", "!.hidden"),
        ("/src/app.py", "*.md"),  # a file named explicitly is searched whatever the glob
        ("/src/app.py", "!app.py"),
    ],
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


# --- binary files: explicit, walked, in memory -------------------------------------------------------------------


@pytest.mark.parametrize("offset", [10, 8 * 1024 + 1, 1_000_000], ids=["byte 10", "8 KiB + 1", "1 MB"])
async def test_binary_files_are_skipped_however_they_are_reached(tmp_path: Path, offset: int) -> None:
    """ripgrep quits at the NUL of a file it walks but searches on in a file it is given, and may have printed
    matches from before the NUL either way: both must agree with memory, where a NUL anywhere means binary."""
    before = b"".join(b"hit %d\n" % i for i in range(offset // 6 + 1))[:offset]
    files = {
        "/b/blob.bin": before + b"\x00\nhit after\n",
        "/b/text.txt": b"hit in text\n",
        "/b/utf16.txt": codecs.BOM_UTF16_LE + "hit in utf16\n".encode("utf-16-le"),  # NUL bytes, but text
    }
    memory = StateBackend(files=files, max_grep_matches=None)
    disk = FilesystemBackend(tmp_path, max_grep_matches=None)
    await disk.upload_files(list(files.items()))
    expected = [("/b/text.txt", 1, "hit in text"), ("/b/utf16.txt", 1, "hit in utf16")]
    for backend in (memory, disk):
        walked = await backend.grep_raw("hit", "/b")
        assert isinstance(walked, GrepMatches)
        assert [(m.path, m.line_number, m.line) for m in walked] == expected
        assert walked.total == 2
        named = await backend.grep_raw("hit", "/b/blob.bin")
        assert named == []
        assert isinstance(named, GrepMatches)
        assert named.total == 0
        assert [m.line for m in await backend.grep_raw("hit", "/b/utf16.txt")] == ["hit in utf16"]


@pytest.mark.parametrize("cap", [3, None])
async def test_a_binary_file_with_many_matches_before_its_nul_counts_for_nothing(
    tmp_path: Path, cap: int | None
) -> None:
    files = {
        "/a.bin": b"hit\n" * 300_000 + b"\x00",  # 1.2 MB of matches ripgrep prints before it meets the NUL
        "/b.txt": b"hit\n" * 10_000,  # one text file with more matches than the cap
        "/c.txt": b"hit\n",
    }
    memory = StateBackend(files=files, max_grep_matches=cap)
    disk = FilesystemBackend(tmp_path, max_grep_matches=cap)
    await disk.upload_files(list(files.items()))
    found, expected = await disk.grep_raw("hit"), await memory.grep_raw("hit")
    assert isinstance(found, GrepMatches)
    assert found == expected
    assert found.total == expected.total == 10_001
    assert len(found) == (cap or 10_001)
    assert found[0].path == "/b.txt"


@pytest.mark.parametrize("size", [1, 7, 300, 65536])
async def test_the_json_parser_reads_ripgrep_output_in_any_chunking(tmp_path: Path, size: int) -> None:
    """Real ripgrep output, fed in chunks that split records anywhere: a file's matches are held across chunks
    until its end record, and dropped when that record says binary."""
    (tmp_path / "t.txt").write_bytes(b"hit one\nmiss\nhit two\n")
    (tmp_path / "late.bin").write_bytes(b"hit\n" * 30_000 + b"\x00hit\n")
    (tmp_path / "u.txt").write_bytes(b"hit \xff\xfe raw\n")
    done = await anyio.run_process([await find_rg(), *RG_FLAGS, "-f", "-"], input=b"hit\n", cwd=tmp_path, check=False)
    collector = MatchCollector(None)
    parser = RipgrepJson(collector, "/", None)
    output = done.stdout
    assert b'{"type":"match","data":{"path":{"text":"late.bin"}' in output, "ripgrep printed matches before the NUL"
    for start in range(0, len(output), size):
        parser.feed(output[start : start + size])
    found = [(m.path, m.line_number, m.line) for m in collector.result()]
    assert found == [("/t.txt", 1, "hit one"), ("/t.txt", 3, "hit two"), ("/u.txt", 1, "hit \ufffd\ufffd raw")]


# --- ripgrep's nest limit -----------------------------------------------------------------------------------------

SHAPES = [
    ("(", "a", ")"),
    ("(", "needle", ")"),
    ("(a", "", ")"),
    ("(?:x*", "", ")"),
    ("(", "[ab]", ")"),
    ("(", "[a-z&&[^b]]", ")"),
    ("(", "a|b", ")"),
    ("[", "a", "]"),
    ("(?i:", r"\pL\x{41}b", ")"),
    ("(", "(?i)a{2,3}?", ")"),
]


async def _ripgrep_refuses_nesting(pattern: str, tmp_path: Path) -> bool:
    (tmp_path / "pattern").write_text(pattern + "\n")
    done = await anyio.run_process(
        [await find_rg(), *RG_FLAGS, "-f", str(tmp_path / "pattern"), "--", str(tmp_path / "pattern")], check=False
    )
    return b"nested" in done.stderr


@pytest.mark.parametrize(("open_", "inner", "close"), SHAPES)
async def test_the_nest_limit_is_ripgreps(tmp_path: Path, open_: str, inner: str, close: str) -> None:
    """Our depth check refuses exactly what ripgrep refuses, at the edge of its limit, for every kind of level."""
    assert nest_depth(open_ + inner + close) < nest_depth(open_ * 2 + inner + close * 2), "deeper with each level"
    low, high = 1, 2 * NEST_LIMIT
    while low < high:  # the fewest wrappings our check refuses
        mid = (low + high) // 2
        if pattern_error(open_ * mid + inner + close * mid) is not None:
            high = mid
        else:
            low = mid + 1
    edge = open_ * low + inner + close * low
    below = open_ * (low - 1) + inner + close * (low - 1)
    assert await _ripgrep_refuses_nesting(edge, tmp_path), f"ripgrep accepts {low} levels of {open_!r}"
    assert not await _ripgrep_refuses_nesting(below, tmp_path), f"ripgrep refuses {low - 1} levels of {open_!r}"
    memory = StateBackend(files={"/f.txt": "a needle\n"})
    assert "nested parentheses/brackets (250)" in str(await memory.grep_raw(edge))
    assert "nested" not in str(await memory.grep_raw(below))  # (Python's re lacks some syntax: \\pL, nested classes)
