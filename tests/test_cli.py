"""The command line: the demo (a scripted agent, on the host and in a container) and the one-shot commands."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent_backends.cli import main
from tests.conftest import PYTHON_IMAGE, require_docker


def test_demo_shows_an_agent_fixing_a_bug_on_the_host(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert ">>> write_file(path='stats.py'" in out
    assert "mean: 3.3333333333333335" in out, "the first run shows the bug"
    assert ">>> edit_file(" in out
    assert f"Edited {tmp_path}/stats.py: 1 replacement(s)" in out  # the host path: the shell's path too
    assert "mean: 2.5\n    [exit code 0]" in out, "the second run shows the fix"
    assert (tmp_path / "stats.py").read_text().count("/ len(values)") == 1


def test_demo_in_a_container(capsys: pytest.CaptureFixture[str]) -> None:
    require_docker()
    assert main(["demo", "--sandbox", "docker", "--image", PYTHON_IMAGE]) == 0
    out = capsys.readouterr().out
    assert "Edited /workspace/stats.py: 1 replacement(s)" in out
    assert "mean: 2.5\n    [exit code 0]" in out


def test_one_shot_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "app.py").write_text("def main():\n    return 42\n")
    where = ["--dir", str(tmp_path)]
    assert main(["ls", "src", *where]) == 0
    assert main(["read", f"{tmp_path}/src/app.py", "--offset", "1", *where]) == 0
    assert main(["grep", r"return \d+", *where]) == 0
    assert main(["grep", "nothing-matches-this", *where]) == 1
    assert main(["grep", "a(", *where]) == 2
    assert main(["exec", "echo out; exit 3", *where]) == 3
    out = capsys.readouterr().out
    assert f"{tmp_path}/src/app.py\t26" in out
    assert "     2\t    return 42" in out
    assert f"{tmp_path}/src/app.py:2:     return 42" in out
    assert out.endswith("out\n")


def test_tour_runs(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tour"]) == 0
    assert 'disk.read("/src/greet.py", limit=2)  # the disk is untouched' in capsys.readouterr().out
