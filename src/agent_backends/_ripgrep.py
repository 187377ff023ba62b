"""Run ripgrep as an async subprocess and stream its ``--json`` output into a ``MatchCollector``.

Output is parsed as it arrives, a batch of lines per read with one call into pydantic-core's JSON parser, so the
parse overlaps ripgrep's own work. Memory stays bounded: the collector keeps at most its cap, and a single JSON line
longer than ``_MAX_JSON_LINE`` is skipped rather than buffered.

The pattern goes to ripgrep on standard input (``-f -``), never in argv, so its size is not bounded by the
argument limit. A file's matches count only once its ``end`` record says ripgrep saw no NUL byte in it: ripgrep
stops at the first NUL of a file it walks but searches on in a file named explicitly, and may already have printed
matches from before the NUL, so binary files are skipped the same way however they are reached.
"""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
import sys
import sysconfig
from collections.abc import Callable, Sequence
from typing import Any, cast

import anyio
import anyio.abc
import anyio.to_thread
from pydantic_core import from_json

from agent_backends._grep import Lazy as _Lazy
from agent_backends._grep import MatchCollector, clip_echo, pattern_error_async
from agent_backends.exceptions import RipgrepNotFoundError

__all__ = ("RG_FLAGS", "RipgrepJson", "find_rg", "pattern_input", "rg_arguments", "rg_error", "run_rg")

# The flags that make ripgrep mean what the in-memory engine means: every file (hidden, ignored), no user config,
# a trailing \r not part of the line; no memory maps, whose binary detection looks only at a file's first 64 KiB.
RG_FLAGS = ("--json", "--no-config", "--hidden", "--no-ignore", "--crlf", "--no-messages", "--no-mmap")
_MAX_JSON_LINE = 64 * 1024 * 1024
_MAX_STDERR = 64 * 1024
_MAX_ERROR_LINE = 200
_MATCH_PREFIX = b'{"type":"match"'
_BEGIN_PREFIX = b'{"type":"begin"'
_END_PREFIX = b'{"type":"end"'
_TEXT_END = b'"binary_offset":null'  # JSON structure: this text cannot occur inside a (quoted) path
# What ripgrep (13 or 14) says about a pattern it refuses, as opposed to a file it could not read.
_PATTERN_ERRORS = (b"regex parse error", b"not allowed in a regex", b"exceeds size limit")
_rg_path: str | None = None


def _locate_rg() -> str | None:
    candidates = [os.path.join(os.path.dirname(sys.executable), "rg")]
    scripts = sysconfig.get_path("scripts")
    if scripts:
        candidates.append(os.path.join(scripts, "rg"))
    for candidate in candidates:
        if os.access(candidate, os.X_OK):
            return candidate
    return shutil.which("rg")


async def find_rg() -> str:
    """The ``rg`` binary: the ``ripgrep`` extra's wheel beside this Python, else ``PATH``."""
    global _rg_path
    if _rg_path is None:
        found = await anyio.to_thread.run_sync(_locate_rg)
        if found is None:
            raise RipgrepNotFoundError(
                "ripgrep ('rg') was not found; install it with `pip install 'agent-backends[ripgrep]'` "
                "or put an rg binary on PATH"
            )
        _rg_path = found
    return _rg_path


def _text(field: dict[str, Any], errors: str) -> str:
    text = field.get("text")
    if text is not None:
        return cast(str, text)
    return base64.b64decode(cast(str, field["bytes"])).decode(errors=errors)


class RipgrepJson:
    """Parse ripgrep's ``--json`` stdout as it arrives, feeding matches to a collector.

    Lines past ``_MAX_JSON_LINE`` are dropped rather than buffered. Used for local ripgrep and for ripgrep running
    inside a sandbox alike.

    ripgrep writes each file's records together (begin, matches, end), and a record's type opens its line: a
    ``{"type":"end"`` or ``{"type":"begin"`` cannot occur inside one (JSON escapes every quote in a string), so the
    parser finds them with ``bytes.find`` and handles a file's match lines as one stretch: only counted (``count``
    in C) when they cannot be kept, else split. With a cap, a kept match is held as its raw record with the line
    number read from it (the sort key), and only the matches that stay among the first ``cap`` are decoded, at the
    end (``MatchCollector.extend_lazy``); without one, every record is decoded as it comes, in one call per batch.
    """

    def __init__(self, collector: MatchCollector, prefix: str, accept: Callable[[str], bool] | None) -> None:
        self._collector = collector
        self._prefix = prefix
        self._accept = accept
        self._lazy = collector.cap is not None
        self._pending: bytes = b""
        self._skipping = False
        self._in_file = False  # between a begin record and its end record
        self._path = ""
        self._counted = True  # the current file's matches count (its path passed ``accept``)
        self._kept = True  # ... and may be kept (its path is not past the collector's cutoff)
        # The current file's matches, held until its end record: kept ones (at most the cap: one file's matches
        # arrive in line order, so only its first ``cap`` can be kept) and the number only counted.
        self._held: list[bytes] = []
        self._held_count = 0
        self._hold_limit = collector.cap if collector.cap is not None else sys.maxsize
        self._batch: list[bytes] | list[_Lazy] = []  # what one ``feed`` gives the collector, in one call

    def feed(self, chunk: bytes) -> None:
        if self._skipping:
            cut = chunk.find(b"\n")
            if cut == -1:
                return
            chunk, self._skipping = chunk[cut + 1 :], False
        data = self._pending + chunk
        end = data.rfind(b"\n")
        if end == -1:
            self._pending = data
        else:
            self._pending = data[end + 1 :]
            self._parse(data, end + 1)
        if len(self._pending) > _MAX_JSON_LINE:
            self._pending, self._skipping = b"", True

    def _parse(self, data: bytes, size: int) -> None:
        """The whole lines in ``data[:size]``: per file, its begin record decides whether its matches are held,
        only counted, or ignored; its end record whether they stand. What stands goes to the collector in one
        call."""
        pos, self._batch = 0, []
        while pos < size:
            if not self._in_file:
                begin = data.find(_BEGIN_PREFIX, pos, size)
                if begin == -1:
                    break  # the summary record, or nothing
                pos = data.index(b"\n", begin) + 1
                self._begin(data[begin : pos - 1])
                continue
            end = data.find(_END_PREFIX, pos, size)
            stop = size if end == -1 else end
            if stop > pos and self._kept and len(self._held) < self._hold_limit:
                lines = data[pos:stop].split(b"\n")
                lines.pop()  # the stretch ends with a newline
                room = self._hold_limit - len(self._held)
                self._held += [line for line in lines if line.startswith(_MATCH_PREFIX)][:room]
            if end == -1:
                break
            pos = data.index(b"\n", end) + 1
            record = data[end:pos]
            if _TEXT_END in record:  # no NUL byte seen: a text file, its matches stand
                if self._counted:  # the ones not held are counted from the record's stats
                    self._held_count = max(_stat(record, _MATCHED_LINES_KEY) - len(self._held), 0)
                self._commit()
            self._in_file, self._held, self._held_count = False, [], 0
        if self._batch:
            if self._lazy:
                self._collector.extend_lazy(cast(list[_Lazy], self._batch), _lines)
            else:
                self._collector.extend(self._records(cast(list[bytes], self._batch)))

    def _commit(self) -> None:
        """The current file is text: its held matches join the batch, the ones only counted the total."""
        collector, held = self._collector, self._held
        collector.count(self._held_count)
        if not held:
            return
        if not self._lazy:
            cast(list[bytes], self._batch).extend(held)
        elif not collector.wants(self._path):  # the cutoff moved below this file since its begin record
            collector.count(len(held))
        else:
            path, batch, key, skip = self._path, cast(list[_Lazy], self._batch), _LINE_NUMBER_KEY, len(_LINE_NUMBER_KEY)
            try:
                batch += [
                    (path, int(line[(at := line.find(key) + skip) : line.find(b",", at)]), "", line) for line in held
                ]
            except ValueError:  # a record cut by a sandbox's output cap: dropped, as it would not parse
                for line in held:
                    number = _line_number(line)
                    if number is not None:
                        batch.append((path, number, "", line))

    def _records(self, batch: list[bytes]) -> list[tuple[str, int, str]]:
        prefix = self._prefix
        items: list[tuple[str, int, str]] = []
        append = items.append
        for record in _parse_records(batch):
            data = record["data"]
            path, lines = data["path"], data["lines"]
            name = path.get("text")
            text = lines.get("text")  # inlined ``_line_text``: this loop runs once per match
            line = (text if text is not None else _text(lines, "replace")).rstrip("\n").removesuffix("\r")
            append((prefix + (name if name is not None else _text(path, "surrogateescape")), data["line_number"], line))
        return items

    def _begin(self, line: bytes) -> None:
        raw = line[len(_BEGIN_PATH) : -len(_BEGIN_TAIL)]
        if line.startswith(_BEGIN_PATH) and line.endswith(_BEGIN_TAIL) and b"\\" not in raw and b'"' not in raw:
            name = raw.decode()  # a plain UTF-8 path, nothing escaped: the common case, without the JSON parser
        else:
            name = _text(cast(dict[str, Any], from_json(line))["data"]["path"], "surrogateescape")
        path = self._path = self._prefix + name
        self._in_file = True
        self._counted = self._accept is None or self._accept(path)
        self._kept = self._counted and self._collector.wants(path)


_MATCHED_LINES_KEY = b'"matched_lines":'  # an end record's count of the file's match records
_LINE_NUMBER_KEY = b'"line_number":'  # first in a match record outside its strings (which escape every quote)
_BEGIN_PATH = b'{"type":"begin","data":{"path":{"text":"'
_BEGIN_TAIL = b'"}}}'


def _line_number(record: bytes) -> int | None:
    at = record.find(_LINE_NUMBER_KEY)
    if at == -1:
        return None
    at += len(_LINE_NUMBER_KEY)
    digits = record[at : record.find(b",", at)]
    return int(digits) if digits.isdigit() else None


def _stat(record: bytes, key: bytes) -> int:
    """A number from an end record's ``stats`` (0 when it is not there)."""
    at = record.find(key)
    if at == -1:
        return 0
    at += len(key)
    digits = record[at : record.find(b",", at)]
    return int(digits) if digits.isdigit() else 0


def _parse_records(batch: list[bytes]) -> list[dict[str, Any]]:
    try:
        return cast(list[dict[str, Any]], from_json(b"[" + b",".join(batch) + b"]"))
    except ValueError:  # a line cut by a sandbox's output cap: parse the rest one by one
        records: list[dict[str, Any]] = []
        for line in batch:
            try:
                records.append(cast(dict[str, Any], from_json(line)))
            except ValueError:
                continue
        return records


def _line_text(lines: dict[str, Any]) -> str:
    # "text" is there unless the bytes are not UTF-8 (then base64 "bytes")
    text = lines.get("text")
    return (text if text is not None else _text(lines, "replace")).rstrip("\n").removesuffix("\r")


def _lines(raws: list[bytes]) -> list[str | None]:
    """The line of each raw match record (``MatchCollector.extend_lazy``'s ``decode``); ``None`` for a record that
    does not parse (cut by a sandbox's output cap)."""
    try:
        records = cast(list[dict[str, Any]], from_json(b"[" + b",".join(raws) + b"]"))
        return [_line_text(record["data"]["lines"]) for record in records]
    except ValueError:
        out: list[str | None] = []
        for raw in raws:
            try:
                out.append(_line_text(cast(dict[str, Any], from_json(raw))["data"]["lines"]))
            except (ValueError, KeyError, TypeError):
                out.append(None)
        return out


def rg_arguments(
    targets: Sequence[str] = (), globs: Sequence[str] = (), *, pattern: str | None = None, pattern_file: str = "-"
) -> list[str]:
    """ripgrep's arguments (after the binary) for one search: the pattern read from ``pattern_file`` (``-``:
    standard input, one line), or given in argv when ``pattern`` is (short ones, in a sandbox)."""
    argv = list(RG_FLAGS)
    for glob in globs:
        argv += ["--glob", glob]
    source = ["-e", pattern] if pattern is not None else ["-f", pattern_file]
    return [*argv, *source, "--", *targets]


def pattern_input(pattern: str) -> bytes:
    """What ``-f`` reads: the pattern as one line (an empty line is the empty pattern, matching every line)."""
    return pattern.encode() + b"\n"


def _clip_line(line: str) -> str:
    if len(line) <= _MAX_ERROR_LINE:
        return line
    return f"{line[:_MAX_ERROR_LINE]}… [{len(line) - _MAX_ERROR_LINE:,} more characters]"


def rg_error(pattern: str, code: int | None, stderr: bytes) -> str | None:
    """The ``"Error: ..."`` for a finished ripgrep run, or ``None`` if it succeeded (0: matches, 1: none; 2 with no
    word about the pattern: some file could not be read, which ``--no-messages`` keeps quiet)."""
    if code == 2 and any(marker in stderr for marker in _PATTERN_ERRORS):
        text = stderr.decode(errors="replace").strip().removeprefix("rg: ")
        message = "\n".join(_clip_line(line) for line in text.splitlines()[:12])
        return f"Error: invalid regex {clip_echo(pattern)}: {message}"
    if code not in (0, 1, 2):
        message = _clip_line(" ".join(stderr.decode(errors="replace").split()))
        return f"Error: ripgrep failed with exit code {code}: {message}"
    return None


async def run_rg(
    pattern: str,
    *,
    cwd: str,
    targets: Sequence[str] = (),
    globs: Sequence[str] = (),
    collector: MatchCollector,
    path_prefix: str = "/",
    accept: Callable[[str], bool] | None = None,
) -> str | None:
    """Search ``targets`` (relative to ``cwd``; all of it when empty) and feed every match to ``collector``.

    Paths reach the collector as ``path_prefix`` + ripgrep's relative path, if ``accept`` takes them. Returns an
    ``"Error: ..."`` string for an invalid pattern, ``None`` otherwise. Cancelling the caller kills ripgrep.
    """
    problem = await pattern_error_async(pattern)
    if problem is not None:
        return problem
    argv = [await find_rg(), *rg_arguments(targets, globs)]
    parser = RipgrepJson(collector, path_prefix, accept)
    stderr = bytearray()

    async def drain(stream: anyio.abc.ByteReceiveStream) -> None:
        async for chunk in stream:
            if len(stderr) < _MAX_STDERR:
                stderr.extend(chunk)

    async def send_pattern(stream: anyio.abc.ByteSendStream) -> None:
        # ripgrep reads its patterns before it searches; if it exits without them (a bad flag), its code says so.
        with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            async with stream:
                await stream.send(pattern_input(pattern))

    async with await anyio.open_process(argv, cwd=cwd) as process:
        stdin, stdout, errors = process.stdin, process.stdout, process.stderr
        assert stdin is not None
        assert stdout is not None
        assert errors is not None
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(send_pattern, stdin)
                tg.start_soon(drain, errors)
                async for chunk in stdout:
                    parser.feed(chunk)
            code = await process.wait()
        finally:
            if process.returncode is None:
                process.kill()
    return rg_error(pattern, code, bytes(stderr))
