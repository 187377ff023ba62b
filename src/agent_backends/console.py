"""What an agent loop needs besides the tools: the deps types and the instructions for the console tools.

Free of pydantic-ai imports, so these names are available without the ``pydantic-ai`` extra.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from agent_backends.backends.composite import CompositeBackend
from agent_backends.protocol import BackendProtocol, SandboxProtocol

__all__ = ("ConsoleDeps", "DeepAgentDeps", "can_execute", "get_console_system_prompt", "working_dir")


@runtime_checkable
class ConsoleDeps(Protocol):
    """What the console tools need from ``ctx.deps``: a backend."""

    @property
    def backend(self) -> BackendProtocol: ...


@dataclass
class DeepAgentDeps:
    """Agent dependencies holding the backend the console tools work on."""

    backend: BackendProtocol


def can_execute(backend: BackendProtocol) -> bool:
    """Whether ``backend`` runs commands (a composite runs them on its default backend)."""
    if isinstance(backend, CompositeBackend):
        return can_execute(backend.default)
    return isinstance(backend, SandboxProtocol)


def working_dir(backend: BackendProtocol) -> str:
    """Where ``backend``'s relative paths start: a sandbox's ``work_dir``, a ``LocalBackend``'s ``root_dir``,
    else ``/``. Its shell, if it has one, starts there too."""
    for name in ("work_dir", "root_path"):
        value = getattr(backend, name, None)
        if isinstance(value, str):
            return value
    return "/"


def get_console_system_prompt(*, can_run_commands: bool = True, working_dir: str = "/") -> str:
    """Instructions that teach a model how to use the console tools well.

    Args:
        can_run_commands: whether the backend offers ``execute``.
        working_dir: where relative paths start (``working_dir(backend)``); the model is told.
    """
    where = f"Your working directory is {working_dir}: relative paths start there"
    shared = ", and every path the tools take or return works unchanged in execute." if can_run_commands else "."
    lines = [
        f"You work on files through tools. {where}{shared} Paths are POSIX paths; prefer absolute ones "
        f"under {working_dir} as the tools return them.",
        "- ls lists a directory; glob finds files by pattern (**/*.py); grep searches contents with a regular "
        "expression (ripgrep syntax) and returns path:line: text.",
        "- read_file shows numbered lines; for long files read a window with offset and limit.",
        "- Before edit_file, read the file: old_string must match the file exactly, including indentation, and be "
        "unique unless replace_all is true. Prefer edit_file over rewriting whole files with write_file.",
        "- A result starting with 'Error:' says what went wrong; fix the call instead of repeating it.",
    ]
    if can_run_commands:
        lines.append(
            "- execute runs a shell command and returns its output and exit code; use it to run tests and programs. "
            "Commands that run too long are killed."
        )
    return "\n".join(lines)
