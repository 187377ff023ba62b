"""The file contract: every backend, in both flavours, must pass every test here unchanged."""

from __future__ import annotations

import codecs
from typing import Any

import pytest

from agent_backends import (
    FileInfo,
    GrepMatch,
    GrepMatches,
    InvalidPathError,
    PathIsDirectoryError,
    PathNotDirectoryError,
    PathNotFoundError,
)
from tests.conftest import Factory, at

pytestmark = pytest.mark.anyio


def paths(infos: list[FileInfo]) -> list[str]:
    return [info.path for info in infos]


def hits(matches: list[GrepMatch] | str) -> list[tuple[str, int, str]]:
    assert not isinstance(matches, str), matches
    return [(m.path, m.line_number, m.line) for m in matches]


# --- read ------------------------------------------------------------------------------------------------------


async def test_write_then_read_numbers_lines_cat_n_style(backend: Any) -> None:
    assert (await backend.write(at("/src/app.py"), "print('hello')\nx = 1\n")).ok
    assert await backend.read(at("/src/app.py")) == "     1\tprint('hello')\n     2\tx = 1"


async def test_relative_paths_are_taken_from_the_working_directory(backend: Any) -> None:
    await backend.write("src/a.txt", "a\n")
    assert await backend.read(at("/src/a.txt")) == "     1\ta"
    assert (await backend.write("./src//b.txt", "b")).path == at("/src/b.txt")


async def test_read_window_and_continuation_note(backend: Any) -> None:
    await backend.write(at("/n.txt"), "".join(f"line {i}\n" for i in range(1, 11)))
    text = await backend.read(at("/n.txt"), offset=2, limit=3)
    assert text == "     3\tline 3\n     4\tline 4\n     5\tline 5\n... [5 more lines; continue with offset=5]"
    assert (await backend.read(at("/n.txt"), offset=8)).splitlines() == ["     9\tline 9", "    10\tline 10"]


async def test_read_note_for_a_large_remainder_gives_unread_bytes(backend: Any) -> None:
    await backend.write(at("/big.txt"), "x" * 79 + "\n" + ("y" * 79 + "\n") * 20_000)
    text = await backend.read(at("/big.txt"), limit=1)
    assert text.startswith("     1\t" + "x" * 79 + "\n... [")
    assert "more bytes unread); continue with offset=1]" in text or "[20,000 more lines" in text


async def test_read_errors_are_values_that_name_the_problem(backend: Any) -> None:
    await backend.write(at("/d/f.txt"), "one\n")
    assert (await backend.read(at("/missing.txt"))) == f"Error: '{at('/missing.txt')}' does not exist"
    assert (await backend.read(at("/d"))).startswith(f"Error: '{at('/d')}' is a directory")
    past = await backend.read(at("/d/f.txt"), offset=5)
    assert past == f"Error: offset 5 is past the end of '{at('/d/f.txt')}', which has 1 lines"
    assert (await backend.read(at("/d/f.txt"), offset=-1)).startswith("Error: offset must be")
    assert (await backend.read(at("/d/f.txt"), limit=0)).startswith("Error: limit must be")


async def test_empty_file_says_so(backend: Any) -> None:
    await backend.write(at("/empty.txt"), "")
    assert await backend.read(at("/empty.txt")) == f"(file '{at('/empty.txt')}' is empty)"


async def test_binary_file_is_refused_by_read_but_not_read_bytes(backend: Any) -> None:
    blob = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256))
    await backend.write(at("/img.png"), blob)
    assert (await backend.read(at("/img.png"))).startswith(f"Error: '{at('/img.png')}' is a binary file")
    assert await backend.read_bytes(at("/img.png")) == blob


async def test_long_lines_are_cut_with_a_marker(backend: Any) -> None:
    await backend.write(at("/long.txt"), "a" * 2500 + "\nshort\n")
    first, second = (await backend.read(at("/long.txt"))).split("\n")
    assert first == "     1\t" + "a" * 2000 + "… [line cut: 500 more bytes]"
    assert second == "     2\tshort"


async def test_huge_single_line_is_cut_without_losing_the_count(backend: Any) -> None:
    await backend.write(at("/min.js"), "z" * 3_000_000)
    text = await backend.read(at("/min.js"))
    assert text == "     1\t" + "z" * 2000 + "… [line cut: 2,998,000 more bytes]"


async def test_crlf_bom_and_utf16_are_shown_as_plain_text(backend: Any) -> None:
    await backend.write(at("/crlf.txt"), b"a\r\nb\r\n")
    await backend.write(at("/bom.txt"), codecs.BOM_UTF8 + "é\n".encode())
    await backend.write(at("/u16.txt"), codecs.BOM_UTF16_LE + "hé\nyo\n".encode("utf-16-le"))
    assert await backend.read(at("/crlf.txt")) == "     1\ta\n     2\tb"
    assert await backend.read(at("/bom.txt")) == "     1\té"
    assert await backend.read(at("/u16.txt")) == "     1\thé\n     2\tyo"


# --- write -----------------------------------------------------------------------------------------------------


async def test_write_replaces_and_accepts_bytes(backend: Any) -> None:
    await backend.write(at("/a/b/c.txt"), "old")
    await backend.write(at("/a/b/c.txt"), b"new\xff")
    assert await backend.read_bytes(at("/a/b/c.txt")) == b"new\xff"
    assert await backend.exists(at("/a/b"))


async def test_write_errors_are_values(backend: Any) -> None:
    await backend.write(at("/dir/file.txt"), "x")
    onto_dir = await backend.write(at("/dir"), "x")
    assert not onto_dir
    assert onto_dir.error == f"Error: '{at('/dir')}' is a directory"
    under_file = await backend.write(at("/dir/file.txt/child"), "x")
    assert under_file.error is not None
    assert under_file.error.startswith("Error: ")
    assert await backend.read_bytes(at("/dir/file.txt")) == b"x"


# --- edit ------------------------------------------------------------------------------------------------------


async def test_edit_replaces_a_unique_occurrence(backend: Any) -> None:
    await backend.write(at("/e.py"), "a = 1\nb = 2\n")
    result = await backend.edit(at("/e.py"), "b = 2", "b = 3")
    assert result.ok
    assert result.occurrences == 1
    assert await backend.read_bytes(at("/e.py")) == b"a = 1\nb = 3\n"


async def test_edit_refusals_say_why_and_change_nothing(backend: Any) -> None:
    await backend.write(at("/e.py"), "x\nx\n")
    cases = {
        (at("/e.py"), "", "y"): "Error: old_string is empty",
        (at("/e.py"), "x", "x"): "Error: old_string and new_string are identical",
        (at("/e.py"), "zzz", "y"): f"Error: old_string was not found in '{at('/e.py')}'",
        (at("/e.py"), "x", "y"): f"Error: old_string occurs 2 times in '{at('/e.py')}'",
        (at("/nope.py"), "x", "y"): f"Error: '{at('/nope.py')}' does not exist",
    }
    for args, expected in cases.items():
        result = await backend.edit(*args)
        assert result.error is not None
        assert result.error.startswith(expected), (args, result.error)
    assert await backend.read_bytes(at("/e.py")) == b"x\nx\n"


async def test_edit_replace_all_counts(backend: Any) -> None:
    await backend.write(at("/e.py"), "x x x")
    result = await backend.edit(at("/e.py"), "x", "yy", replace_all=True)
    assert result.occurrences == 3
    assert await backend.read_bytes(at("/e.py")) == b"yy yy yy"


async def test_edit_keeps_crlf_line_endings(backend: Any) -> None:
    await backend.write(at("/w.txt"), b"one\r\ntwo\r\nthree\r\n")
    result = await backend.edit(at("/w.txt"), "one\ntwo\n", "1\n2\n")
    assert result.ok, result.error
    assert await backend.read_bytes(at("/w.txt")) == b"1\r\n2\r\nthree\r\n"


async def test_edit_round_trips_undecodable_bytes_exactly(backend: Any) -> None:
    latin1 = "café = 1\nprice = 2\n".encode("latin-1")
    await backend.write(at("/l1.txt"), latin1)
    assert (await backend.edit(at("/l1.txt"), "price = 2", "price = 3")).ok
    assert await backend.read_bytes(at("/l1.txt")) == latin1.replace(b"price = 2", b"price = 3")
    refused = await backend.edit(at("/l1.txt"), "café", "cafe")
    assert refused.error is not None
    assert "not valid UTF-8" in refused.error
    assert await backend.read_bytes(at("/l1.txt")) == latin1.replace(b"price = 2", b"price = 3")


async def test_edit_keeps_utf16_encoding_and_bom(backend: Any) -> None:
    original = codecs.BOM_UTF16_LE + "naïve\nrest\n".encode("utf-16-le")
    await backend.write(at("/u16.txt"), original)
    assert (await backend.edit(at("/u16.txt"), "naïve", "naive")).ok
    assert await backend.read_bytes(at("/u16.txt")) == codecs.BOM_UTF16_LE + "naive\nrest\n".encode("utf-16-le")


async def test_edit_refuses_binary_files(backend: Any) -> None:
    await backend.write(at("/b.bin"), b"abc\x00def")
    result = await backend.edit(at("/b.bin"), "abc", "xyz")
    assert result.error is not None
    assert "binary" in result.error
    assert await backend.read_bytes(at("/b.bin")) == b"abc\x00def"


# --- ls_info ---------------------------------------------------------------------------------------------------


async def test_ls_info_lists_children_sorted_with_dirs_flagged(backend: Any) -> None:
    await backend.write(at("/p/b.txt"), "bb")
    await backend.write(at("/p/a/deep.txt"), "d")
    await backend.write(at("/p/c.txt"), "c")
    listing = await backend.ls_info(at("/p"))
    assert paths(listing) == [at("/p/a"), at("/p/b.txt"), at("/p/c.txt")]
    assert [info.is_dir for info in listing] == [True, False, False]
    assert listing[1].size == 2
    assert listing[1].name == "b.txt"


async def test_ls_info_errors_raise(backend: Any) -> None:
    await backend.write(at("/f.txt"), "x")
    with pytest.raises(PathNotFoundError):
        await backend.ls_info(at("/missing"))
    with pytest.raises(PathNotDirectoryError):
        await backend.ls_info(at("/f.txt"))


# --- glob_info -------------------------------------------------------------------------------------------------


@pytest.fixture
async def tree(backend: Any) -> Any:
    for path in [
        at("/g/a.py"),
        at("/g/b.txt"),
        at("/g/.hidden.py"),
        at("/g/sub/c.py"),
        at("/g/sub/deeper/d.py"),
        at("/g/sub/e.md"),
    ]:
        await backend.write(path, f"content of {path}\n")
    return backend


@pytest.mark.parametrize(
    ("pattern", "path", "expected"),
    [
        ("*.py", "/g", ["/g/.hidden.py", "/g/a.py"]),
        ("**/*.py", "/g", ["/g/.hidden.py", "/g/a.py", "/g/sub/c.py", "/g/sub/deeper/d.py"]),
        ("sub/**", "/g", ["/g/sub/c.py", "/g/sub/deeper/d.py", "/g/sub/e.md"]),
        ("**/*.{md,txt}", "/g", ["/g/b.txt", "/g/sub/e.md"]),
        ("?.py", "/g", ["/g/a.py"]),
        ("[ab].*", "/g", ["/g/a.py", "/g/b.txt"]),
        ("[!a]*.py", "/g", ["/g/.hidden.py"]),
        ("/g/sub/*.py", "/", ["/g/sub/c.py"]),
        ("*.py", "/g/sub", ["/g/sub/c.py"]),
        ("sub", "/g", []),
        ("**/nothing*", "/g", []),
    ],
)
async def test_glob_info(tree: Any, pattern: str, path: str, expected: list[str]) -> None:
    found = await tree.glob_info(at(pattern) if pattern.startswith("/") else pattern, at(path))
    assert paths(found) == [at(p) for p in expected]
    assert not any(info.is_dir for info in found)


async def test_glob_on_a_missing_directory_is_empty(backend: Any) -> None:
    assert await backend.glob_info("**/*", at("/nowhere")) == []


# --- grep_raw --------------------------------------------------------------------------------------------------


async def test_grep_finds_lines_sorted_by_path_then_line(tree: Any) -> None:
    await tree.write(at("/g/z.py"), "def b():\n    pass\ndef a():\n")
    await tree.write(at("/g/m.py"), "def c():\n")
    result = await tree.grep_raw(r"^def \w+\(", at("/g"))
    assert hits(result) == [
        (at("/g/m.py"), 1, "def c():"),
        (at("/g/z.py"), 1, "def b():"),
        (at("/g/z.py"), 3, "def a():"),
    ]
    assert isinstance(result, GrepMatches)
    assert not result.truncated


async def test_grep_default_path_is_the_working_directory(tree: Any) -> None:
    deep = at("/g/sub/deeper/d.py")
    assert hits(await tree.grep_raw("deeper")) == [(deep, 1, f"content of {deep}")]


async def test_grep_glob_filters_file_names(tree: Any) -> None:
    assert [h[0] for h in hits(await tree.grep_raw("content", at("/g"), "*.md"))] == [at("/g/sub/e.md")]
    by_path = [h[0] for h in hits(await tree.grep_raw("content", at("/g"), "sub/*.py"))]
    assert by_path == [at("/g/sub/c.py")]
    assert [h[0] for h in hits(await tree.grep_raw("content", at("/g"), "*.{md,txt}"))] == [
        at("/g/b.txt"),
        at("/g/sub/e.md"),
    ]


async def test_grep_a_single_file(tree: Any) -> None:
    assert hits(await tree.grep_raw("content", at("/g/a.py"))) == [(at("/g/a.py"), 1, f"content of {at('/g/a.py')}")]


async def test_grep_skips_binary_files_and_strips_crlf(backend: Any) -> None:
    await backend.write(at("/x/bin.dat"), b"needle\x00\x01\x02")
    await backend.write(at("/x/dos.txt"), b"needle\r\nneedle at end\r\n")
    assert hits(await backend.grep_raw("needle$", at("/x"))) == [(at("/x/dos.txt"), 1, "needle")]
    assert hits(await backend.grep_raw("end$", at("/x"))) == [(at("/x/dos.txt"), 2, "needle at end")]


async def test_grep_missing_path_is_an_error_value(backend: Any) -> None:
    assert await backend.grep_raw("x", at("/missing")) == f"Error: '{at('/missing')}' does not exist"


@pytest.mark.parametrize("pattern", ["a(", "[z-a]", "(?=x)", "(?<!x)y", r"(a)\1"])
async def test_invalid_or_unsupported_regex_is_an_error_value_everywhere(backend: Any, pattern: str) -> None:
    await backend.write(at("/r.txt"), "abc\n")
    result = await backend.grep_raw(pattern)
    assert isinstance(result, str)
    assert result.startswith(f"Error: invalid regex {pattern!r}")


async def test_grep_cap_keeps_the_first_matches_in_order_and_counts_all(make: Factory) -> None:
    backend = await make(max_grep_matches=3)
    for name in ["c", "a", "b"]:
        await backend.write(at(f"/cap/{name}.txt"), "hit\nhit\n")
    result = await backend.grep_raw("hit", at("/cap"))
    assert isinstance(result, GrepMatches)
    assert hits(result) == [(at("/cap/a.txt"), 1, "hit"), (at("/cap/a.txt"), 2, "hit"), (at("/cap/b.txt"), 1, "hit")]
    assert result.truncated
    assert result.total == 6
    assert result.note == (
        "[showing the first 3 of 6 matching lines; narrow the pattern, path or glob to see the rest]"
    )


# --- the rest of the protocol ----------------------------------------------------------------------------------


async def test_exists_read_bytes_delete(backend: Any) -> None:
    await backend.write(at("/del/a.txt"), "a")
    await backend.write(at("/del/sub/b.txt"), "b")
    assert await backend.exists(at("/del/a.txt"))
    assert await backend.exists(at("/del"))
    assert not await backend.exists(at("/nope"))
    await backend.delete(at("/del/a.txt"))
    assert not await backend.exists(at("/del/a.txt"))
    with pytest.raises(PathIsDirectoryError):
        await backend.delete(at("/del"))
    await backend.delete(at("/del"), recursive=True)
    assert not await backend.exists(at("/del/sub/b.txt"))
    with pytest.raises(PathNotFoundError):
        await backend.read_bytes(at("/del/a.txt"))
    with pytest.raises(PathNotFoundError):
        await backend.delete(at("/del/a.txt"))


async def test_batch_transfers_keep_order_and_report_per_file(backend: Any) -> None:
    uploaded = await backend.upload_files([(at("/up/1.txt"), b"one"), ("../bad", b"x"), (at("/up/2.txt"), b"two")])
    assert [(u.path, u.ok) for u in uploaded] == [(at("/up/1.txt"), True), ("../bad", False), (at("/up/2.txt"), True)]
    downloaded = await backend.download_files([at("/up/2.txt"), at("/up/missing"), at("/up/1.txt")])
    assert [d.content for d in downloaded] == [b"two", None, b"one"]
    assert downloaded[1].error == f"Error: '{at('/up/missing')}' does not exist"


HOSTILE = ["../etc/passwd", "/a/../../b", "~/secrets", "~root", "C:\\Windows", "C:/Windows", "\\\\host\\share",
           "a\\b", "a\x00b", "/%2e%2e/x", "/\uff0e\uff0e/x", ""]  # fmt: skip


@pytest.mark.parametrize("hostile", HOSTILE)
async def test_hostile_paths_are_refused_by_every_method(backend: Any, hostile: str) -> None:
    read = await backend.read(hostile)
    assert read.startswith("Error: path"), read
    written = await backend.write(hostile, "x")
    assert written.error is not None
    assert written.error.startswith("Error: path")
    assert (await backend.edit(hostile, "a", "b")).error is not None
    grep = await backend.grep_raw("x", hostile)
    assert isinstance(grep, str)
    assert grep.startswith("Error: path")
    for call in (backend.ls_info, backend.exists, backend.read_bytes, backend.delete):
        with pytest.raises(InvalidPathError):
            await call(hostile)
    with pytest.raises(InvalidPathError):
        await backend.glob_info("*", hostile or "..")
    with pytest.raises(InvalidPathError):
        await backend.glob_info("../*")
