"""Runtimes: named container setups (base image, packages, setup commands, environment) built once into images.

A ``RuntimeConfig`` becomes a local image tagged by a hash of its configuration, so a changed config is a new image
and an unchanged one is built only once (``ensure_runtime_image`` looks before it builds). Build progress streams to
a callback: a one-line progress display when standard error is a terminal, plain log lines otherwise; a failed
build raises ``RuntimeBuildError`` carrying the failing step's output.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import sys
import tarfile
from collections.abc import Callable, Mapping
from typing import Any, Literal

import anyio
from pydantic import BaseModel, ConfigDict, Field

from agent_backends.backends import _engine
from agent_backends.exceptions import RuntimeBuildError, UnknownRuntimeError

__all__ = ("BUILTIN_RUNTIMES", "RuntimeConfig", "ensure_runtime_image", "get_runtime")

_log = logging.getLogger("agent_backends.runtime")
_TAG_REPOSITORY = "agent-backends-runtime"
_build_locks: dict[str, anyio.Lock] = {}


class RuntimeConfig(BaseModel):
    """A container setup an agent works in.

    Args:
        name: a short name (``"python-datascience"``).
        base_image: the image to start from; it must be present locally or pullable by the engine.
        packages: language packages, installed with ``package_manager``.
        system_packages: Debian packages (``apt-get``), for Debian-based images.
        setup_commands: shell commands run at build time, after the packages.
        env_vars: environment of every sandbox of this runtime.
        work_dir: where the agent works.
        package_manager: ``"pip"`` or ``"npm"`` (global install).
        memory, cpus, pids_limit: default resource limits for sandboxes of this runtime.
        description: one line for humans (and models).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]*$")
    base_image: str = "python:3.12-slim"
    packages: tuple[str, ...] = ()
    system_packages: tuple[str, ...] = ()
    setup_commands: tuple[str, ...] = ()
    env_vars: Mapping[str, str] = Field(default_factory=dict)
    work_dir: str = "/workspace"
    package_manager: Literal["pip", "npm"] = "pip"
    memory: str | None = None
    cpus: float | None = None
    pids_limit: int | None = None
    description: str = ""

    def dockerfile(self) -> str:
        """The Dockerfile this runtime builds from."""
        lines = [f"FROM {self.base_image}"]
        if self.system_packages:
            packages = " ".join(self.system_packages)
            lines.append(
                "RUN apt-get update && apt-get install -y --no-install-recommends "
                f"{packages} && rm -rf /var/lib/apt/lists/*"
            )
        if self.packages:
            packages = " ".join(self.packages)
            if self.package_manager == "pip":
                lines.append(f"RUN pip install --no-cache-dir {packages}")
            else:
                lines.append(f"RUN npm install --global {packages}")
        lines += [f"RUN {command}" for command in self.setup_commands]
        lines += [f"ENV {key}={json.dumps(value)}" for key, value in sorted(self.env_vars.items())]
        lines += [f"RUN mkdir -p {self.work_dir}", f"WORKDIR {self.work_dir}"]
        return "\n".join(lines) + "\n"

    @property
    def image_tag(self) -> str:
        """``agent-backends-runtime/<name>:<hash of what goes into the image>``."""
        digest = hashlib.sha256(self.dockerfile().encode()).hexdigest()[:16]
        return f"{_TAG_REPOSITORY}/{self.name}:{digest}"

    @property
    def needs_network(self) -> bool:
        """Whether building it downloads packages (else it builds with networking off)."""
        return bool(self.packages or self.system_packages)


BUILTIN_RUNTIMES: dict[str, RuntimeConfig] = {
    runtime.name: runtime
    for runtime in (
        RuntimeConfig(name="python-minimal", description="Python 3.12, nothing else"),
        RuntimeConfig(
            name="python-datascience",
            packages=("numpy", "pandas", "scipy", "scikit-learn", "matplotlib", "seaborn"),
            env_vars={"MPLBACKEND": "Agg"},
            memory="2g",
            description="Python 3.12 with the scientific stack (numpy, pandas, scipy, scikit-learn, matplotlib)",
        ),
        RuntimeConfig(
            name="python-web",
            packages=("fastapi", "uvicorn", "httpx", "requests", "beautifulsoup4", "pydantic"),
            description="Python 3.12 for web work: FastAPI, uvicorn, httpx, requests, BeautifulSoup",
        ),
        RuntimeConfig(
            name="node-minimal",
            base_image="node:20-slim",
            package_manager="npm",
            description="Node.js 20",
        ),
        RuntimeConfig(
            name="coding",
            system_packages=("git", "ripgrep", "curl", "build-essential"),
            packages=("pytest", "ruff", "mypy", "ipython"),
            description="Python 3.12 for software work: git, ripgrep, a C toolchain, pytest, ruff, mypy",
        ),
    )
}


def get_runtime(name: str | RuntimeConfig) -> RuntimeConfig:
    """A built-in runtime by name (a ``RuntimeConfig`` is returned as it is)."""
    if isinstance(name, RuntimeConfig):
        return name
    try:
        return BUILTIN_RUNTIMES[name]
    except KeyError:
        known = ", ".join(sorted(BUILTIN_RUNTIMES))
        raise UnknownRuntimeError(f"unknown runtime {name!r}; the built-in runtimes are: {known}") from None


def _context(runtime: RuntimeConfig) -> bytes:
    dockerfile = runtime.dockerfile().encode()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        entry = tarfile.TarInfo("Dockerfile")
        entry.size = len(dockerfile)
        tar.addfile(entry, io.BytesIO(dockerfile))
    return buffer.getvalue()


def _default_progress() -> Callable[[str], None]:
    """A one-line display on a terminal, log lines otherwise."""
    if sys.stderr.isatty():

        def show(line: str) -> None:
            sys.stderr.write(f"\r\x1b[2K{line[:160]}")
            sys.stderr.flush()

        return show
    return _log.info


async def ensure_runtime_image(
    runtime: RuntimeConfig, *, docker_url: str | None = None, progress: Callable[[str], None] | None = None
) -> str:
    """The runtime's image tag, building the image first if the engine (``docker_url``, else ``DOCKER_HOST``,
    else Docker's usual sockets) does not have it yet.

    Concurrent calls for one runtime build it once. Raises ``RuntimeBuildError`` with the failing step's output,
    ``EngineUnavailableError`` when no engine answers.
    """
    host, _ = await _engine.connect(docker_url)
    tag = runtime.image_tag
    lock = _build_locks.setdefault(tag, anyio.Lock())
    async with lock:
        if await _engine.image_exists(host, tag):
            return tag
        await _build(host, runtime, tag, progress or _default_progress())
    return tag


async def _build(host: str, runtime: RuntimeConfig, tag: str, progress: Callable[[str], None]) -> None:
    params = {
        "t": tag,
        "rm": "1",
        "forcerm": "1",
        "networkmode": "default" if runtime.needs_network else "none",
    }
    progress(f"building runtime {runtime.name!r} as {tag}")
    step_output: list[str] = []
    step = ""
    failure: str | None = None

    def on_message(message: dict[str, Any]) -> None:
        nonlocal step, step_output, failure
        if "error" in message and failure is None:
            # Read on to the end of the stream (the engine ends it) so the connection is released cleanly.
            detail = "".join(step_output[-40:]).rstrip()
            failure = f"failed at {step or 'the start'}: {str(message['error']).strip()}\n{detail}"
        text = str(message.get("stream", ""))
        if text.startswith("Step "):
            step, step_output = text.strip(), []
            progress(step)
        elif text:
            step_output.append(text)

    await _engine.build_image(host, _context(runtime), params, on_message)
    if failure is not None:
        raise RuntimeBuildError(f"building runtime {runtime.name!r} {failure}")
    progress(f"built runtime {runtime.name!r} as {tag}")
