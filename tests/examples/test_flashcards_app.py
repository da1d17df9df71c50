"""``examples/flashcards_app.py`` run exactly as its docstring says: the operator's set-up command,
then the example as a separate process against the whole service listening on a local port."""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from pixelmint.api.app import create_app
from tests.builders import assert_ledger_ok, make_team
from tests.providers.localserver import LocalServer

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "flashcards_app.py"


def docstring_commands() -> tuple[str, str]:
    """The set-up and the run command, as the docstring shows them."""
    lines = [line.strip() for line in (ast.get_docstring(ast.parse(EXAMPLE.read_text())) or "").splitlines()]
    setup = next(line for line in lines if "admin create-app" in line)
    run = next(line for line in lines if "examples/flashcards_app.py" in line and "PIXELMINT_URL=" in line)
    return setup, run


def shell(command: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    command = command.replace(".venv/bin/", f"{Path(sys.executable).parent}/")  # this test's virtualenv
    return subprocess.run(["bash", "-c", command], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


async def test_the_example_runs_as_its_docstring_says(settings, database_url: str, db) -> None:
    team = await make_team(db, plan="basic", credits="100")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIXELMINT_")}
    env.update(DATABASE_URL=database_url, PIXELMINT_DATA_DIR=str(settings.data_dir))
    setup_command, run_command = docstring_commands()

    setup = shell(setup_command.replace("TEAM_ID", str(team.team_id)), env)
    assert setup.returncode == 0, setup.stderr
    service_key = json.loads(setup.stdout)["serviceKey"]

    with LocalServer(create_app(settings, database_url, run_worker=False), lifespan="on", start_timeout=30) as server:
        command = (run_command.replace("http://127.0.0.1:8000", server.url).replace("pms_…", service_key)
                   .replace("TEAM_ID", str(team.team_id)))
        run = shell(command, env)
        assert run.returncode == 0, run.stdout + run.stderr
        assert re.search(r"deck of 10 cards for 10(\.0+)? credits", run.stdout), run.stdout
        assert re.search(r"video rendered: 50(\.0+)? credits captured", run.stdout), run.stdout
        balance = httpx.get(f"{server.url}/api/v1/credits/team-balance", params={"teamId": str(team.team_id)},
                            headers={"Authorization": f"Bearer {service_key}"}).json()
    assert balance["availableCredits"] == 40.0 and balance["reservedCredits"] == 0.0
    await assert_ledger_ok(db)
