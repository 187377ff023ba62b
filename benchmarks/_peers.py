"""The peers, measured in the same run: pydantic-ai-backend 0.2.29 (the last release with the seed API) and LangChain
deepagents 0.7.32, installed into a separate environment of their own (``.bench-peers/``, made once with ``uv`` and
cached; never a dependency of this project), timed by ``_peer_worker.py`` in a subprocess that prints JSON.

The peers get the same workloads (``_workloads.py``) and the same ``rg`` binary on ``PATH`` as ours.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from _common import warn

__all__ = ("PEERS", "ensure_env", "peer_figures", "peers_for")

PEERS = ("pydantic-ai-backend==0.2.29", "deepagents==0.7.32")
ROOT = Path(__file__).resolve().parent.parent
ENV = ROOT / ".bench-peers"
_STAMP = ENV / "requirements.txt"
_HERE = Path(__file__).resolve().parent


def _python() -> Path:
    return ENV / "bin" / "python"


def ensure_env() -> str | None:
    """Create or reuse the peers' environment; ``None`` when ready, else the error text (what failed, and how)."""
    wanted = "\n".join(PEERS) + "\n"
    if _python().exists() and _STAMP.exists() and _STAMP.read_text() == wanted:
        return None
    uv = shutil.which("uv")
    if uv is None:
        return "uv is not on PATH: the peers' environment is made with `uv venv` + `uv pip install`"
    steps = (
        [uv, "venv", "--quiet", "--allow-existing", "--python", sys.executable, str(ENV)],
        [uv, "pip", "install", "--quiet", "--python", str(_python()), *PEERS],
    )
    for argv in steps:
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            return f"`{' '.join(argv[:3])} ...` failed ({done.returncode}): {done.stderr.strip()[-2000:]}"
    _STAMP.write_text(wanted)
    return None


@functools.cache
def peer_figures(tree: str, quick: bool) -> dict[str, dict[str, float | str]]:
    """Each peer's median seconds per case on ``tree`` (the standard library copy), or error texts."""
    problem = ensure_env()
    if problem is not None:
        warn(f"peers not measured: {problem}")
        return {peer.split("==")[0]: {"error": problem} for peer in PEERS}
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), env.get("PATH", "")])  # the same rg as ours
    env["PYTHONPATH"] = str(_HERE)
    argv = [str(_python()), str(_HERE / "_peer_worker.py"), tree, *(["--quick"] if quick else [])]
    done = subprocess.run(argv, capture_output=True, text=True, check=False, env=env)
    if done.returncode != 0:
        problem = f"the peer worker failed ({done.returncode}): {done.stderr.strip()[-2000:]}"
        warn(problem)
        return {peer.split("==")[0]: {"error": problem} for peer in PEERS}
    figures: dict[str, dict[str, float | str]] = json.loads(done.stdout.strip().splitlines()[-1])
    for name, cases in figures.items():
        for case, figure in cases.items():
            if isinstance(figure, str):
                warn(f"peer {name}, case {case}: {figure}")
    return figures


def peers_for(tree: str, quick: bool, case: str) -> tuple[tuple[str, float | str], ...]:
    """The ``Result.peers`` of one case."""
    out: list[tuple[str, float | str]] = []
    for name, cases in peer_figures(tree, quick).items():
        figure = cases.get(case, cases.get("error"))
        if figure is not None:
            out.append((name, figure))
    return tuple(out)
