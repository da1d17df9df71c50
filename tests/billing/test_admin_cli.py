"""``pixelmint admin grant|adjust|void|set-plan|replenish-due`` through the real command."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import subprocess
import sys
from decimal import Decimal

import pytest

from tests.billing.builders import balance_row, ledger_rows, set_due, team_row
from tests.builders import assert_ledger_ok, make_team

pytestmark = pytest.mark.slow
D = Decimal


def cli(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIXELMINT_") and k != "DATABASE_URL"}
    return subprocess.run([sys.executable, "-m", "pixelmint.cli", "admin", *args],
                          env={**env, "DATABASE_URL": database_url}, capture_output=True, text=True, timeout=60)


async def test_grant_adjust_void_and_set_plan(db, database_url: str) -> None:
    team = await make_team(db, plan="basic", credits="50")
    tid = str(team.team_id)

    granted = cli(database_url, "grant", tid, "20", "--reason", "conference voucher", "--json")
    assert granted.returncode == 0, granted.stderr
    grant = json.loads(granted.stdout)
    assert grant["transaction"]["description"] == "conference voucher"
    assert grant["transaction"]["metadata"] == {"source": "cli"} and grant["balance"]["bonusCredits"] == 20.0

    adjusted = cli(database_url, "adjust", tid, "-12.5", "--bucket", "allocation", "--reason", "overcharge fix")
    assert adjusted.returncode == 0, adjusted.stderr
    assert "allocation -12.5" in adjusted.stdout and "now allocation 37.5" in adjusted.stdout

    refused, no_reason, bad_amount = await asyncio.gather(  # refusals change nothing: run them at once
        asyncio.to_thread(cli, database_url, "adjust", tid, "-100", "--reason", "too much"),
        asyncio.to_thread(cli, database_url, "grant", tid, "5"),
        asyncio.to_thread(cli, database_url, "grant", tid, "1.001", "--reason", "r"),
    )
    assert refused.returncode == 1 and "error bucket_would_go_negative" in refused.stderr
    assert no_reason.returncode == 2 and "--reason" in no_reason.stderr
    assert bad_amount.returncode == 2 and "at most 2 decimals" in bad_amount.stderr

    voided = cli(database_url, "void", tid, str(grant["transaction"]["id"]), "--reason", "voucher revoked", "--json")
    assert voided.returncode == 0, voided.stderr
    assert json.loads(voided.stdout)["balance"]["bonusCredits"] == 0.0

    moved = cli(database_url, "set-plan", tid, "pro", "--replenish-now", "--reason", "sales deal")
    assert moved.returncode == 0, moved.stderr
    assert "plan basic -> pro; allocation 2000.00" in moved.stdout
    assert (await team_row(db, team.team_id))[3:] == (20, 3)
    types = [(r.type, r.description) for r in await ledger_rows(db, team.team_id)]
    assert types[1:] == [("grant", "conference voucher"), ("adjust", "overcharge fix"), ("void", "voucher revoked"),
                         ("expire", "allocation of period 0 expired at replenishment: plan changed to pro: sales deal"),
                         ("replenish", "plan changed to pro: sales deal")]
    await assert_ledger_ok(db)


async def test_replenish_due(db, database_url: str) -> None:
    team = await make_team(db, plan="basic", credits="3")
    await set_due(db, team.team_id, dt.datetime.now(dt.UTC) - dt.timedelta(hours=1))
    done = cli(database_url, "replenish-due", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert (report["teams"], report["creditsGranted"], report["creditsExpired"]) == (1, 500.0, 3.0)
    assert (await balance_row(db, team.team_id)).allocation_credits == D("500.00")
    again = cli(database_url, "replenish-due")
    assert again.returncode == 0 and again.stdout.startswith("replenished 0 team(s)")
    await assert_ledger_ok(db)
