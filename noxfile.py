"""Developer and CI entry points: ``nox -s demo``, ``nox -s tests``, ``nox -s lint typecheck generate``, ...

CI (``.ci/run``) runs ``tests``, ``lint``, ``typecheck`` and ``generate -- --check``.
"""

from __future__ import annotations

import nox

nox.options.default_venv_backend = "uv|virtualenv"
nox.options.reuse_existing_virtualenvs = True
nox.options.sessions = ["tests", "lint", "typecheck", "generate"]

DEV = ".[dev]"


@nox.session
def demo(session: nox.Session) -> None:
    """An agent fixing a bug through the console tools, in a temporary directory; no Docker, no API key."""
    session.install("-e", ".[ripgrep,pydantic-ai]")
    session.run("agent-backends", "demo", *session.posargs)


@nox.session
def tests(session: nox.Session) -> None:
    """The whole test suite against real ripgrep (and a real Docker daemon where the tests need one)."""
    session.install("-e", DEV)
    session.run("pytest", *session.posargs)


@nox.session
def fuzz(session: nox.Session) -> None:
    """The property-based tests with 10,000 examples each, and the swap race with 10,000 operations of each kind."""
    session.install("-e", DEV)
    session.run(
        "pytest",
        "tests/test_paths_fuzz.py",
        "tests/test_text.py",
        "tests/test_race.py",
        env={"HYPOTHESIS_PROFILE": "fuzz"},
    )


@nox.session
def lint(session: nox.Session) -> None:
    """ruff: lint and formatting."""
    session.install("ruff")
    session.run("ruff", "check", "src", "tests", "tools", "benchmarks", "noxfile.py")
    session.run("ruff", "format", "--check", "src", "tests", "tools", "benchmarks", "noxfile.py")


@nox.session
def typecheck(session: nox.Session) -> None:
    """pyright in strict mode on the library."""
    session.install("-e", DEV)
    session.run("pyright", "--pythonpath", session.virtualenv.bin + "/python", "src")


@nox.session
def generate(session: nox.Session) -> None:
    """Regenerate the sync twins (``-- --check``: fail if the checked-in file is stale)."""
    session.install("-e", DEV)
    session.run("python", "tools/gen_sync.py", *session.posargs)


@nox.session
def docs(session: nox.Session) -> None:
    """The documentation site with mkdocs in strict mode (a broken link or docstring reference fails): ``site/``."""
    session.install("-e", ".[docs]")
    session.run("mkdocs", "build", "--strict", "--site-dir", "site", *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks against the raw tools, printed as a table (``-- --quick`` for fewer repetitions)."""
    session.install("-e", DEV)
    session.run("python", "benchmarks/run_all.py", *session.posargs)
