"""``CompositeBackend``: several backends behind one namespace, routed by path prefix.

A path goes to the backend whose prefix matches the most whole segments (``/data2`` never routes to ``/data/``);
the prefix is stripped on the way in and restored on every path coming out, error messages included. Listing,
glob and grep above the routes ask every backend concerned at once, in a task group, and merge sorted.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from types import TracebackType
from typing import Self, TypeVar, cast

import anyio

from agent_backends import _paths
from agent_backends._glob import compile_glob, compile_name_filter
from agent_backends._grep import DEFAULT_MAX_MATCHES, MatchCollector
from agent_backends.backends._base import BatchTransfers
from agent_backends.backends._checkpoints import Checkpoints
from agent_backends.backends._workspace import CompositeWorkspace
from agent_backends.exceptions import ExecutionNotSupportedError, PathError, PathNotFoundError, SnapshotError
from agent_backends.protocol import BackendProtocol, SandboxProtocol
from agent_backends.types import (
    EditResult,
    ExecuteResponse,
    FileInfo,
    GrepMatch,
    GrepMatches,
    Snapshot,
    WriteResult,
)

__all__ = ("CompositeBackend",)

_T = TypeVar("_T")


def _root(backend: BackendProtocol) -> str:
    """The path naming ``backend``'s root in its namespace (``/``; a ``LocalBackend``'s ``root_dir``)."""
    root = getattr(backend, "root_path", "/")
    return root if isinstance(root, str) else "/"


def _checkpoints(backend: BackendProtocol) -> Checkpoints:
    """A routed backend's checkpoint API, or a clear error for one without it."""
    if not isinstance(backend, Checkpoints):
        raise SnapshotError(f"{type(backend).__name__} cannot take snapshots, so the composite cannot either")
    return backend


def _inner(backend: BackendProtocol, path: str) -> str:
    """A path below a route, in the routed backend's own namespace."""
    moved = _paths.rebase(path, "/", _root(backend))
    assert moved is not None
    return moved


class CompositeBackend(CompositeWorkspace, BatchTransfers, Checkpoints):
    """Route each path to a backend by prefix; unmatched paths go to ``default``.

    Args:
        default: the backend for every path no route claims (and for ``execute``).
        routes: prefix to backend, e.g. ``{"/project/": FilesystemBackend("./project")}``.
        max_grep_matches: cap on the merged lines ``grep_raw`` returns (``None``: no cap).
    """

    def __init__(
        self,
        default: BackendProtocol,
        routes: Mapping[str, BackendProtocol] | None = None,
        *,
        max_grep_matches: int | None = DEFAULT_MAX_MATCHES,
    ) -> None:
        self.default = default
        self.routes: dict[str, BackendProtocol] = {}
        for prefix, backend in (routes or {}).items():
            normalized = _paths.normalize(prefix)
            if normalized == "/":
                raise PathError("a route prefix cannot be '/'; use default= for that", prefix)
            self.routes[normalized] = backend
        self._by_length = sorted(self.routes, key=len, reverse=True)
        self.max_grep_matches = max_grep_matches
        self._closed = False
        self._ws_enable_commands()
        self._taken: dict[str, Snapshot] = {}

    # --- lifecycle -------------------------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        """Start the backends that start (a ``DockerSandbox``, say) now instead of on first use."""
        async with contextlib.AsyncExitStack() as stack:
            for backend in self._children():
                if isinstance(backend, contextlib.AbstractAsyncContextManager):
                    await stack.enter_async_context(backend)  # pyright: ignore[reportUnknownArgumentType]
            stack.pop_all()  # they stay open until aclose(), which closes every child
        self._closed = False
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    def _children(self) -> list[BackendProtocol]:
        seen: dict[int, BackendProtocol] = {}
        for backend in (self.default, *self.routes.values()):
            seen.setdefault(id(backend), backend)
        return list(seen.values())

    async def aclose(self) -> None:
        """Close every backend it routes to, once; idempotent, from any task, no ``async with`` needed."""
        if self._closed:
            return
        self._closed = True
        for backend in self._children():
            aclose = getattr(backend, "aclose", None)
            if callable(aclose):
                await cast(Callable[[], Awaitable[None]], aclose)()

    # --- routing ---------------------------------------------------------------------------------------------

    def _route(self, path: str) -> tuple[str, BackendProtocol, str]:
        """(prefix, backend, the path in that backend's namespace) for a normalized path; prefix ``""`` for the
        default. A backend whose root is not ``/`` (``LocalBackend``: host paths) gets the path below its root."""
        for prefix in self._by_length:
            if _paths.is_within(path, prefix):
                backend = self.routes[prefix]
                return prefix, backend, _inner(backend, path[len(prefix) :] or "/")
        return "", self.default, _inner(self.default, path)

    def _routes_below(self, path: str) -> list[str]:
        return [prefix for prefix in self.routes if prefix != path and _paths.is_within(prefix, path)]

    def _shadowed(self, path: str, owner: str) -> bool:
        """Whether a path reported by the backend at ``owner`` belongs to a longer route."""
        return self._route(path)[0] != owner

    @staticmethod
    def _outer(prefix: str, backend: BackendProtocol, inner: str) -> str:
        """The composite path of ``inner``, a path in ``backend``'s namespace routed at ``prefix``."""
        moved = _paths.rebase(inner, _root(backend), prefix or "/")
        return inner if moved is None else moved

    def _message(self, text: str, prefix: str, backend: BackendProtocol, inner: str) -> str:
        outer = self._outer(prefix, backend, inner)
        return text.replace(f"'{inner}'", f"'{outer}'") if outer != inner else text

    def _lift(self, prefix: str, backend: BackendProtocol, info: FileInfo) -> FileInfo:
        outer = self._outer(prefix, backend, info.path)
        return info if outer == info.path else info.model_copy(update={"path": outer})

    async def _gather(self, calls: Sequence[Callable[[], Awaitable[_T]]]) -> list[_T]:
        results: list[_T | None] = [None] * len(calls)

        async def run(index: int) -> None:
            results[index] = await calls[index]()

        async with anyio.create_task_group() as tg:
            for index in range(len(calls)):
                tg.start_soon(run, index)
        return results  # type: ignore[return-value]

    # --- checkpoints: every routed backend at once -----------------------------------------------------------

    async def _take(self, snapshot_id: str, label: str | None) -> Snapshot:
        children = self._children()
        parts = await self._gather([lambda child=child: _checkpoints(child).snapshot(label) for child in children])
        snap = Snapshot(
            id=snapshot_id,
            backend_id=self._snapshot_owner,
            kind="composite",
            files=sum(part.files for part in parts),
            size=sum(part.size for part in parts),
            stored=sum(part.stored for part in parts),
            label=label,
            parts=tuple(parts),
        )
        self._taken[snapshot_id] = snap
        return snap

    async def _put_back(self, snapshot: Snapshot) -> None:
        pairs = zip(self._children(), snapshot.parts, strict=True)
        await self._gather([lambda c=child, p=part: _checkpoints(c).restore(p) for child, part in pairs])

    async def _forget(self, snapshot: Snapshot) -> None:
        children = self._children()
        await self._gather(
            [
                lambda c=child, p=part: _checkpoints(c).delete_snapshot(p)
                for child, part in zip(children, snapshot.parts, strict=True)
            ]
        )
        del self._taken[snapshot.id]

    async def _known(self) -> list[Snapshot]:
        return list(self._taken.values())

    async def fork(self) -> Self:
        """A composite of forks: every routed backend forked, routed the same way."""
        children = self._children()
        forks = await self._gather([lambda child=child: _checkpoints(child).fork() for child in children])
        by_id = {id(child): cast(BackendProtocol, fork) for child, fork in zip(children, forks, strict=True)}
        routes = {prefix: by_id[id(backend)] for prefix, backend in self.routes.items()}
        return type(self)(by_id[id(self.default)], routes, max_grep_matches=self.max_grep_matches)

    # --- the protocol ----------------------------------------------------------------------------------------

    async def ls_info(self, path: str = ".") -> list[FileInfo]:
        """List a directory; mount points of routes below it appear as directories."""
        normalized = _paths.normalize(path)
        prefix, backend, inner = self._route(normalized)
        mounts = self._routes_below(normalized)
        entries: dict[str, FileInfo] = {}
        try:
            listed = [self._lift(prefix, backend, info) for info in await backend.ls_info(inner)]
            entries = {info.path: info for info in listed if not self._shadowed(info.path, prefix)}
        except PathNotFoundError:
            if not mounts:
                raise
        for route in mounts:
            child = _paths.join(normalized, _paths.relative_to(route, normalized).split("/")[0])
            entries.setdefault(child, FileInfo(path=child, name=_paths.split_name(child), is_dir=True))
        return sorted(entries.values(), key=lambda info: info.path)

    async def read(self, path: str, offset: int = 0, limit: int = 2000) -> str:
        try:
            prefix, backend, inner = self._route(_paths.normalize(path))
        except PathError as exc:
            return f"Error: {exc}"
        return self._message(await backend.read(inner, offset, limit), prefix, backend, inner)

    async def read_bytes(self, path: str) -> bytes:
        prefix, backend, inner = self._route(_paths.normalize(path))
        try:
            return await backend.read_bytes(inner)
        except PathError as exc:
            raise type(exc)(self._message(str(exc), prefix, backend, inner), path) from exc

    async def write(self, path: str, content: str | bytes) -> WriteResult:
        try:
            prefix, backend, inner = self._route(_paths.normalize(path))
        except PathError as exc:
            return WriteResult(path=path, error=f"Error: {exc}")
        result = await backend.write(inner, content)
        error = self._message(result.error, prefix, backend, inner) if result.error else None
        return WriteResult(path=self._outer(prefix, backend, result.path) if not error else path, error=error)

    async def edit(self, path: str, old_string: str, new_string: str, replace_all: bool = False) -> EditResult:
        try:
            prefix, backend, inner = self._route(_paths.normalize(path))
        except PathError as exc:
            return EditResult(path=path, error=f"Error: {exc}")
        result = await backend.edit(inner, old_string, new_string, replace_all)
        error = self._message(result.error, prefix, backend, inner) if result.error else None
        return EditResult(path=self._outer(prefix, backend, inner), occurrences=result.occurrences, error=error)

    async def exists(self, path: str) -> bool:
        normalized = _paths.normalize(path)
        if self._routes_below(normalized) or normalized in self.routes:
            return True
        _, backend, inner = self._route(normalized)
        return await backend.exists(inner)

    async def delete(self, path: str, *, recursive: bool = False) -> None:
        prefix, backend, inner = self._route(_paths.normalize(path))
        try:
            await backend.delete(inner, recursive=recursive)
        except PathError as exc:
            raise type(exc)(self._message(str(exc), prefix, backend, inner), path) from exc

    async def glob_info(self, pattern: str, path: str = ".") -> list[FileInfo]:
        """Glob across every backend the pattern can reach, concurrently."""
        matcher = compile_glob(pattern, _paths.normalize(path))
        prefix, backend, inner = self._route(matcher.base)
        calls: list[Callable[[], Awaitable[list[FileInfo]]]] = [lambda: backend.glob_info(matcher.rest, inner)]
        owners = [(prefix, backend)]
        for route in self._routes_below(matcher.base):
            below = matcher.pattern_below(_paths.relative_to(route, matcher.base))
            if below is not None:
                mounted = self.routes[route]
                owners.append((route, mounted))
                calls.append(lambda mounted=mounted, below=below: mounted.glob_info(below, _root(mounted)))
        merged: list[FileInfo] = []
        for (owner, source), found in zip(owners, await self._gather(calls), strict=True):
            for info in found:
                lifted = self._lift(owner, source, info)
                relative = _paths.relative_to(lifted.path, matcher.base)
                if not self._shadowed(lifted.path, owner) and matcher.match(relative):
                    merged.append(lifted)
        return sorted(merged, key=lambda info: info.path)

    async def grep_raw(self, pattern: str, path: str | None = None, glob: str | None = None) -> GrepMatches | str:
        """Grep across every backend under ``path``, concurrently; merged, sorted and capped."""
        try:
            base = _paths.normalize(path if path is not None else "/")
            name_filter = compile_name_filter(glob) if glob is not None and "/" in glob else None
        except PathError as exc:
            return f"Error: {exc}"
        inner_glob = glob if name_filter is None else None
        prefix, backend, inner = self._route(base)
        targets = [(prefix, backend, inner)]
        targets += [(route, self.routes[route], _root(self.routes[route])) for route in self._routes_below(base)]
        calls: list[Callable[[], Awaitable[list[GrepMatch] | str]]] = [
            lambda backend=backend, inner=inner: backend.grep_raw(pattern, inner, inner_glob)
            for _, backend, inner in targets
        ]
        collector = MatchCollector(self.max_grep_matches)
        hidden = 0
        for (owner, source, inner), found in zip(targets, await self._gather(calls), strict=True):
            if isinstance(found, str):
                if owner == prefix and len(targets) > 1 and "does not exist" in found:
                    continue
                return self._message(found, owner, source, inner)
            for match in found:
                outer = self._outer(owner, source, match.path)
                if self._shadowed(outer, owner):
                    continue
                if name_filter is not None and not name_filter.fullmatch(_paths.relative_to(outer, base)):
                    continue
                collector.add(outer, match.line_number, match.line)
            if isinstance(found, GrepMatches):
                hidden += found.total - len(found)
        result = collector.result()
        return GrepMatches(result, total=result.total + hidden)

    async def execute(
        self,
        command: str,
        timeout: float | None = None,
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        stdin: str | bytes | None = None,
    ) -> ExecuteResponse:
        """Run a command on the default backend, if it can execute."""
        if not isinstance(self.default, SandboxProtocol):
            raise ExecutionNotSupportedError(
                f"the default backend ({type(self.default).__name__}) cannot execute commands"
            )
        if cwd is not None:  # a composite path on the default route, in the default's own namespace
            cwd = _inner(self.default, _paths.normalize(cwd))
        return await self.default.execute(command, timeout, env=env, cwd=cwd, stdin=stdin)
