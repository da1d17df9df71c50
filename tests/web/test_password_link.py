"""``pixelmint admin create-team --email`` prints a one-time link to set the owner's password."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import httpx
import pytest

from tests.web.helpers import PASSWORD, other_client, post_form, sign_in


@pytest.mark.slow
async def test_create_team_with_email_prints_a_one_time_set_password_link(
    api: httpx.AsyncClient, database_url: str
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIXELMINT_")}
    run = subprocess.run(
        [sys.executable, "-m", "pixelmint.cli", "admin", "create-team", "Acme", "--plan", "pro", "--email",
         "Boss@Acme.example", "--json"],
        env={**env, "DATABASE_URL": database_url, "PIXELMINT_PUBLIC_URL": "https://pm.example"},
        capture_output=True, text=True, timeout=120,
    )
    assert run.returncode == 0, run.stderr
    created = json.loads(run.stdout)
    link = created["setPasswordUrl"]
    assert link.startswith("https://pm.example/set-password?token=") and created["apiKey"].startswith("pm_")
    token = link.split("token=")[1]

    page = await api.get(f"/set-password?token={token}")
    assert page.status_code == 200 and "boss@acme.example" in page.text
    assert (await sign_in(other_client(api), "boss@acme.example", PASSWORD)).status_code == 401  # no password yet
    done = await post_form(api, "/set-password", {"token": token, "password": PASSWORD})
    assert done.status_code == 303 and done.headers["location"] == "/app"
    assert "Pro plan" in (await api.get("/app")).text
    assert (await api.get(f"/set-password?token={token}")).status_code == 404  # used up
    assert (await sign_in(other_client(api), "boss@acme.example", PASSWORD)).status_code == 303
