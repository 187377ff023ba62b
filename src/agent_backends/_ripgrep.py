"""Run ripgrep as an async subprocess and stream its ``--json`` output into a ``MatchCollector``.

Output is parsed as it arrives, a batch of lines per read with one call into pydantic-core's JSON parser, so the
parse overlaps ripgrep's own work. Memory stays bounded: the collector keeps at most its cap, and a single JSON line
longer than ``_MAX_JSON_LINE`` is skipped rather than buffered.
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Callable, Sequence
from typing import Any, cast

import anyio
import anyio.abc
import anyio.to_thread
from pydantic_core import from_json

from agent_backends._grep import MatchCollector
from agent_backends.exceptions import RipgrepNotFoundError

__all__ = ("RG_FLAGS", "RipgrepJson", "find_rg", "rg_arguments", "rg_error", "run_rg")

# The flags that make ripgrep mean what the in-memory engine means: every file (hidden, ignored), no user config,
# a trailing \r not part of the line.
RG_FLAGS = ("--json", "--no-config", "--hidden", "--no-ignore", "--crlf", "--no-messages")
_MAX_JSON_LINE = 64 * 1024 * 1024
_MAX_STDERR = 64 * 1024
_MATCH_PREFIX = b'{"type":"match"'
_BEGIN_PREFIX = b'{"type":"begin"'
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
    """

    def __init__(self, collector: MatchCollector, prefix: str, accept: Callable[[str], bool] | None) -> None:
        self._collector = collector
        self._prefix = prefix
        self._accept = accept
        self._pending: bytes = b""
        self._skipping = False
        self._counted = True  # the current file's matches count (its path passed ``accept``)
        self._kept = True  # ... and may be kept (its path is not past the collector's cutoff)

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
            self._parse(data[:end].split(b"\n"))
        if len(self._pending) > _MAX_JSON_LINE:
            self._pending, self._skipping = b"", True

    def _parse(self, lines: list[bytes]) -> None:
        """ripgrep writes each file's records together (begin, matches, end): the begin record decides, once per
        file, whether its matches are parsed, only counted, or ignored."""
        batch: list[bytes] = []
        uncounted = 0
        for line in lines:
            if line.startswith(_MATCH_PREFIX):
                if self._kept:
                    batch.append(line)
                elif self._counted:
                    uncounted += 1
            elif line.startswith(_BEGIN_PREFIX):
                self._begin(line)
        self._collector.count(uncounted)
        if not batch:
            return
        records = cast(list[dict[str, Any]], from_json(b"[" + b",".join(batch) + b"]"))
        add, prefix = self._collector.add, self._prefix
        for record in records:
            data = record["data"]
            line = _text(data["lines"], "replace").rstrip("\n").removesuffix("\r")
            add(prefix + _text(data["path"], "surrogateescape"), data["line_number"], line)

    def _begin(self, line: bytes) -> None:
        path = self._prefix + _text(cast(dict[str, Any], from_json(line))["data"]["path"], "surrogateescape")
        self._counted = self._accept is None or self._accept(path)
        self._kept = self._counted and self._collector.wants(path)


def rg_arguments(pattern: str, targets: Sequence[str] = (), globs: Sequence[str] = ()) -> list[str]:
    """ripgrep's arguments (after the binary) for one search."""
    argv = list(RG_FLAGS)
    for glob in globs:
        argv += ["--glob", glob]
    return [*argv, "-e", pattern, "--", *targets]


def rg_error(pattern: str, code: int | None, stderr: bytes) -> str | None:
    """The ``"Error: ..."`` for a finished ripgrep run, or ``None`` if it succeeded (0: matches, 1: none)."""
    if code == 2 and b"regex parse error" in stderr:
        message = stderr.decode(errors="replace").strip().removeprefix("rg: ")
        return f"Error: invalid regex {pattern!r}: {message}"
    if code not in (0, 1, 2):
        return f"Error: ripgrep failed with exit code {code}: {stderr.decode(errors='replace').strip()}"
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
    argv = [await find_rg(), *rg_arguments(pattern, targets, globs)]
    parser = RipgrepJson(collector, path_prefix, accept)
    stderr = bytearray()

    async def drain(stream: anyio.abc.ByteReceiveStream) -> None:
        async for chunk in stream:
            if len(stderr) < _MAX_STDERR:
                stderr.extend(chunk)

    async with await anyio.open_process(argv, cwd=cwd, stdin=subprocess.DEVNULL) as process:
        stdout, errors = process.stdout, process.stderr
        assert stdout is not None
        assert errors is not None
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(drain, errors)
                async for chunk in stdout:
                    parser.feed(chunk)
            code = await process.wait()
        finally:
            if process.returncode is None:
                process.kill()
    return rg_error(pattern, code, bytes(stderr))
