"""Generate ``src/agent_backends/sync.py``: the blocking ``Sync<Name>`` twin of every async class in ``TWINS``.

The async classes are the only hand-written code. This script reads them with ``ast`` (following base classes
inside the package), copies each public ``async def`` and property signature, and writes a one-line body that
calls the async method on the twin's loop thread. ``--check`` exits 1 if the file on disk is stale (CI runs it).

    python tools/gen_sync.py           # write
    python tools/gen_sync.py --check   # verify
"""

from __future__ import annotations

import argparse
import ast
import builtins
import difflib
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "src" / "agent_backends"
OUTPUT = PACKAGE / "sync.py"

# (module, class) for each async class that gets a twin, in output order.
TWINS: list[tuple[str, str]] = [
    ("agent_backends.backends.state", "StateBackend"),
    ("agent_backends.backends.filesystem", "FilesystemBackend"),
    ("agent_backends.backends.composite", "CompositeBackend"),
    ("agent_backends.backends.local", "LocalBackend"),
    ("agent_backends.backends.docker", "DockerSandbox"),
    ("agent_backends.sessions", "SessionManager"),
]
# Lifecycle is the twin's own: its constructor starts and enters the object, close() leaves it.
_SKIP = {"__aenter__", "__aexit__", "aclose", "start"}
# pydantic-ai's workspace API is async by contract (its Workspace awaits it): the twins leave it out. It is listed
# once, where the workspace methods are defined, and read from there.
WORKSPACE_METHODS = frozenset(
    ("ref", "from_ref", "working_dir", "write_bytes", "stat", "list_dir", "make_dir", "remove", "realpath", "run")
)
_SKIP |= WORKSPACE_METHODS
_PLAIN = ""  # origin of a name bound by a plain ``import name``


def _module_file(module: str) -> Path:
    relative = Path(*module.split(".")[1:])
    package_init = PACKAGE / relative / "__init__.py"
    return package_init if package_init.exists() else (PACKAGE / relative).with_suffix(".py")


@dataclass
class _Module:
    name: str
    tree: ast.Module
    origins: dict[str, str] = field(default_factory=dict)  # name -> module it comes from

    @classmethod
    def load(cls, name: str) -> _Module:
        tree = ast.parse(_module_file(name).read_text())
        module = cls(name, tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for alias in node.names:
                    module.origins[alias.asname or alias.name] = node.module
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    module.origins[alias.asname or alias.name.split(".")[0]] = _PLAIN
        for node in tree.body:
            if isinstance(node, ast.ClassDef | ast.FunctionDef):
                module.origins[node.name] = name
            elif isinstance(node, ast.Assign):
                for target in node.targets:
                    if isinstance(target, ast.Name):
                        module.origins[target.id] = name
        return module

    def cls(self, name: str) -> ast.ClassDef:
        for node in self.tree.body:
            if isinstance(node, ast.ClassDef) and node.name == name:
                return node
        raise LookupError(f"{name} not in {self.name}")


def _mro(module: _Module, cls: ast.ClassDef) -> list[tuple[_Module, ast.ClassDef]]:
    """The class and its bases defined inside the package, depth first."""
    chain = [(module, cls)]
    for base in cls.bases:
        if isinstance(base, ast.Name) and module.origins.get(base.id, "").startswith("agent_backends"):
            base_module = _Module.load(module.origins[base.id])
            chain += _mro(base_module, base_module.cls(base.id))
    return chain


def _names(node: ast.AST | None) -> set[str]:
    if node is None:
        return set()
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}


def _docline(node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) -> str:
    doc = ast.get_docstring(node)
    return doc.strip().splitlines()[0] if doc else ""


def _call_args(args: ast.arguments) -> str:
    parts = [a.arg for a in args.posonlyargs + args.args if a.arg != "self"]
    if args.vararg:
        parts.append(f"*{args.vararg.arg}")
    parts += [f"{a.arg}={a.arg}" for a in args.kwonlyargs]
    if args.kwarg:
        parts.append(f"**{args.kwarg.arg}")
    return ", ".join(parts)


@dataclass
class _Imports:
    runtime: dict[str, set[str]] = field(default_factory=dict)
    typing: dict[str, set[str]] = field(default_factory=dict)

    def need(self, module: _Module, names: set[str], *, runtime: bool) -> None:
        for name in names:
            if hasattr(builtins, name) or name in {"self", "Self"}:
                continue
            origin = module.origins.get(name)
            if origin is None:
                raise LookupError(f"cannot find where {name!r} used in {module.name} comes from")
            (self.runtime if runtime else self.typing).setdefault(origin, set()).add(name)

    def render(self) -> str:
        lines = ["from typing import TYPE_CHECKING, Self", ""]
        lines.append("from agent_backends._portal import SyncProcess, SyncTwin")
        lines += self._statements(self.runtime, set(), "")
        lines += ["", "if TYPE_CHECKING:"]
        lines += self._statements(self.typing, self.runtime.get(_PLAIN, set()), "    ")
        return "\n".join(lines)

    def _statements(self, table: dict[str, set[str]], done: set[str], indent: str) -> list[str]:
        out: list[str] = []
        for origin in sorted(table):
            names = sorted(table[origin] - self.runtime.get(origin, set()) if table is self.typing else table[origin])
            if origin == _PLAIN:
                out += [f"{indent}import {name}" for name in names if name not in done]
            elif names:
                out.append(f"{indent}from {origin} import {', '.join(names)}")
        return out


def _twin(module_name: str, class_name: str, imports: _Imports) -> str:
    module = _Module.load(module_name)
    cls = module.cls(class_name)
    imports.need(module, {class_name}, runtime=True)
    chain = _mro(module, cls)
    seen: set[str] = set()
    init: tuple[_Module, ast.FunctionDef] | None = None
    members: list[str] = []
    for owner, klass in chain:
        for node in klass.body:
            if isinstance(node, ast.FunctionDef) and node.name == "__init__" and init is None:
                init = (owner, node)
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) or node.name in seen:
                continue
            is_property = any(isinstance(d, ast.Name) and d.id == "property" for d in node.decorator_list)
            is_stream = isinstance(node.returns, ast.Name) and node.returns.id == "Process"
            twinned = {name for _, name in TWINS}
            view = node.returns.id if isinstance(node.returns, ast.Name) and node.returns.id in twinned else None
            forked = isinstance(node.returns, ast.Name) and node.returns.id == "Self"
            public = not node.name.startswith("_") and node.name not in _SKIP
            if not public or not (is_property or is_stream or isinstance(node, ast.AsyncFunctionDef)):
                continue
            seen.add(node.name)
            annotations = [a.annotation for a in node.args.args + node.args.kwonlyargs]
            annotations += [] if is_stream or view else [node.returns]
            imports.need(owner, set().union(*(_names(a) for a in annotations)), runtime=False)
            defaults = node.args.defaults + [d for d in node.args.kw_defaults if d is not None]
            imports.need(owner, set().union(set(), *(_names(d) for d in defaults)), runtime=True)
            returns = f" -> {ast.unparse(node.returns)}" if node.returns else ""
            if is_stream:
                returns = " -> SyncProcess"
            elif view is not None:
                returns = f" -> Sync{view}"
            elif forked:
                returns = " -> Self"
            doc = _docline(node)
            docstring = f'        """{doc}"""\n' if doc else ""
            if is_stream:
                members.append(
                    f"    def {node.name}({ast.unparse(node.args)}){returns}:\n{docstring}"
                    f"        return self._stream(self._async.{node.name}, {_call_args(node.args)})\n"
                )
            elif view is not None:
                members.append(
                    f"    def {node.name}({ast.unparse(node.args)}){returns}:\n{docstring}"
                    f"        return self._view(Sync{view}, self._async.{node.name}"
                    f"{', ' if _call_args(node.args) else ''}{_call_args(node.args)})\n"
                )
            elif forked:
                members.append(
                    f"    def {node.name}({ast.unparse(node.args)}){returns}:\n{docstring}"
                    f"        return self._forked(self._async.{node.name})\n"
                )
            elif is_property:
                members.append(
                    f"    @property\n    def {node.name}(self){returns}:\n{docstring}"
                    f"        return self._attr({node.name!r})\n"
                )
            else:
                members.append(
                    f"    def {node.name}({ast.unparse(node.args)}){returns}:\n{docstring}"
                    f"        return self._call(self._async.{node.name}"
                    f"{', ' if _call_args(node.args) else ''}{_call_args(node.args)})\n"
                )
    assert init is not None, f"{class_name} has no __init__"
    init_owner, init_node = init
    imports.need(
        init_owner,
        set().union(*(_names(a.annotation) for a in init_node.args.args + init_node.args.kwonlyargs)),
        runtime=False,
    )
    defaults = init_node.args.defaults + [d for d in init_node.args.kw_defaults if d is not None]
    imports.need(init_owner, set().union(set(), *(_names(d) for d in defaults)), runtime=True)
    header = (
        f"class Sync{class_name}(SyncTwin[{class_name}]):\n"
        f'    """Blocking twin of `{class_name}`.\n\n    {_docline(cls)}\n    """\n\n'
        f"    def __init__({ast.unparse(init_node.args)}) -> None:\n"
        f"        self._setup(lambda: {class_name}({_call_args(init_node.args)}))\n"
    )
    return header + "".join(f"\n{member}" for member in members)


def generate() -> str:
    imports = _Imports()
    classes = [_twin(module, name, imports) for module, name in TWINS]
    exported = ", ".join(f'"Sync{name}"' for _, name in TWINS)
    return (
        '"""AUTOGENERATED by tools/gen_sync.py from the async classes; do not edit. Regenerate with\n'
        "``python tools/gen_sync.py`` (CI runs ``--check``).\n\n"
        "Each ``Sync<Name>`` has the async class's methods with the same signatures, blocking. It owns one\n"
        "event-loop thread; see ``agent_backends._portal``.\n"
        '"""\n\n'
        "from __future__ import annotations\n\n"
        f"{imports.render()}\n\n"
        f"__all__ = ({exported},)\n\n\n" + "\n\n".join(classes)
    )


def _ruff(*args: str, source: str) -> str:
    ruff = shutil.which("ruff", path=os.path.dirname(sys.executable)) or shutil.which("ruff")
    if ruff is None:
        raise SystemExit("ruff is needed to format the generated file: pip install -e '.[dev]'")
    done = subprocess.run(
        [ruff, *args, "--stdin-filename", str(OUTPUT), "-"], input=source, text=True, capture_output=True, cwd=ROOT
    )
    if done.returncode != 0:
        raise SystemExit(f"ruff {' '.join(args)} failed:\n{done.stderr}")
    return done.stdout


def render() -> str:
    """The generated module, import-sorted and formatted the way the rest of the tree is."""
    sorted_imports = _ruff("check", "--fix", "--select", "I", "--quiet", "--exit-zero", source=generate())
    return _ruff("format", "--quiet", source=sorted_imports)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if sync.py is stale")
    check = parser.parse_args().check
    fresh = render()
    current = OUTPUT.read_text() if OUTPUT.exists() else ""
    if check:
        if fresh != current:
            sys.stdout.writelines(
                difflib.unified_diff(current.splitlines(True), fresh.splitlines(True), "sync.py", "generated")
            )
            print("\nsync.py is stale: run `python tools/gen_sync.py`", file=sys.stderr)
            return 1
        print("sync.py is up to date")
        return 0
    OUTPUT.write_text(fresh)
    print(f"wrote {OUTPUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
