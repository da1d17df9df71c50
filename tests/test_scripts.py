"""``scripts/install`` (behind ./scripts/serve and ./scripts/test), run for real with a stand-in
Python that records the pip calls: it says what it installs, puts CPU torch before the diffusers
extra, and runs pip again only when pyproject.toml changed."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Creates .venv/bin/python as a stand-in that appends its arguments to .venv/calls.
FAKE_PYTHON = """#!/usr/bin/env bash
mkdir -p .venv/bin
printf '#!/usr/bin/env bash\\necho "$*" >> .venv/calls\\n' > .venv/bin/python
chmod +x .venv/bin/python
"""


def install(repo: Path, *extras: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(repo / "scripts" / "install"), *extras], cwd=repo, capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "PYTHON": str(repo / "fake-python")}, timeout=60)


def pip_calls(repo: Path) -> list[str]:
    calls = repo / ".venv" / "calls"
    return [line.split(" install ", 1)[1] for line in calls.read_text().splitlines()] if calls.exists() else []


def test_install_says_what_it_does_orders_torch_first_and_runs_once(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    shutil.copy(ROOT / "scripts" / "install", repo / "scripts" / "install")
    shutil.copy(ROOT / "pyproject.toml", repo / "pyproject.toml")
    (repo / "fake-python").write_text(FAKE_PYTHON)
    (repo / "fake-python").chmod(0o755)

    first = install(repo, "dev,diffusers")
    assert first.returncode == 0, first.stderr
    assert "first run: creating .venv and installing dependencies with [dev,diffusers]" in first.stderr
    assert "torch 2.13.0, the CPU build" in first.stderr
    calls = pip_calls(repo)
    assert [c.split()[-1] for c in calls] == ["torch==2.13.0", ".[dev,diffusers]"]
    assert all("--quiet" not in c for c in calls)  # pip's progress shows

    again, base = install(repo, "dev,diffusers"), install(repo)
    assert (again.returncode, again.stderr, base.returncode, base.stderr) == (0, "", 0, "")
    assert len(pip_calls(repo)) == 2  # nothing to do: the base install is part of the one with extras

    with (repo / "pyproject.toml").open("a") as f:
        f.write("\n# a dependency changed\n")
    changed = install(repo)
    assert changed.returncode == 0 and "pyproject.toml changed" in changed.stderr
    assert [c.split()[-2:] for c in pip_calls(repo)[2:]] == [["-e", "."]]  # no torch for the base install
