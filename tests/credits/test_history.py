"""``GET /api/v1/credits/history``: filters, cursor pages, and the CSV export (``history.csv`` and
``?format=csv``)."""

from __future__ import annotations

import csv
import io
import uuid
from decimal import Decimal
from typing import Any

import pytest

from pixelmint.credits import history
from tests.builders import auth, generate_body, make_app, make_team

HISTORY = "/api/v1/credits/history"


@pytest.fixture
async def ledger(api, db) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """A team whose ledger has: grant, reserve (job a), reserve (job b), release (b), consume (app,
    operation deck, metadata); and another team with rows of its own."""
    team = await make_team(db, credits="100")
    other = await make_team(db, credits="100", name="other")
    app = await make_app(db, teams=(team,))
    a = (await api.post("/api/v1/generate", json=generate_body(), headers=auth(team))).json()["job"]["id"]
    b = (await api.post("/api/v1/generate", json=generate_body(), headers=auth(team))).json()["job"]["id"]
    assert (await api.delete(f"/api/v1/generate/{b}", headers=auth(team))).status_code == 200
    consumed = await api.post("/api/v1/credits/consume", headers={"Authorization": f"Bearer {app.service_key}"},
                              json={"teamId": str(team.team_id), "operation": "deck", "metadata": {"cards": 20}})
    assert consumed.status_code == 200, consumed.text
    await api.post("/api/v1/generate", json=generate_body(), headers=auth(other))
    return {"team": team, "a": a, "b": b, "app_id": str(app.app_id)}


async def rows(api, team, **params) -> list[dict[str, Any]]:  # type: ignore[no-untyped-def]
    reply = await api.get(HISTORY, params=params, headers=auth(team))
    assert reply.status_code == 200, reply.text
    return reply.json()["items"]


async def test_filters(api, ledger) -> None:
    team = ledger["team"]
    everything = await rows(api, team)
    assert [r["type"] for r in everything] == ["consume", "release", "reserve", "reserve", "grant"]
    assert [r["type"] for r in await rows(api, team, type="reserve")] == ["reserve", "reserve"]
    assert [r["type"] for r in await rows(api, team, type="reserve,release")] == ["release", "reserve", "reserve"]
    assert [r["type"] for r in await rows(api, team, operation="image_generation")] == ["release", "reserve", "reserve"]
    assert [(r["type"], r["jobId"]) for r in await rows(api, team, jobId=ledger["b"])] == [
        ("release", ledger["b"]), ("reserve", ledger["b"])]
    by_app = await rows(api, team, appId=ledger["app_id"])
    assert [(r["type"], r["operation"], r["appId"], r["metadata"]) for r in by_app] == [
        ("consume", "deck", ledger["app_id"], {"cards": 20})]
    assert await rows(api, team, type="reserve", jobId=ledger["b"], operation="deck") == []
    assert await rows(api, team, jobId=str(uuid.uuid4())) == []


async def test_date_range_is_from_inclusive_to_exclusive(api, ledger) -> None:
    team = ledger["team"]
    everything = await rows(api, team)
    release = next(r for r in everything if r["type"] == "release")
    since = await rows(api, team, **{"from": release["createdAt"]})
    assert [r["type"] for r in since] == ["consume", "release"]
    before = await rows(api, team, to=release["createdAt"])
    assert [r["type"] for r in before] == ["reserve", "reserve", "grant"]
    assert await rows(api, team, **{"from": "2000-01-01", "to": "2000-01-02"}) == []
    assert len(await rows(api, team, **{"from": "2000-01-01T00:00:00Z"})) == 5
    backwards = await api.get(HISTORY, params={"from": "2030-01-02", "to": "2030-01-01"}, headers=auth(team))
    assert backwards.status_code == 422 and backwards.json()["error"] == "invalid_date_range"
    bad = await api.get(HISTORY, params={"from": "yesterday"}, headers=auth(team))
    assert bad.status_code == 422


async def test_cursor_pages_keep_the_filters(api, ledger) -> None:
    team = ledger["team"]
    seen, cursor = [], None
    while True:
        params = {"type": "reserve,release", "limit": 2, **({"cursor": cursor} if cursor else {})}
        page = (await api.get(HISTORY, params=params, headers=auth(team))).json()
        seen += [r["id"] for r in page["items"]]
        cursor = page["nextCursor"]
        if cursor is None:
            break
    assert seen == [r["id"] for r in await rows(api, team, type="reserve,release")] and len(seen) == 3
    assert seen == sorted(seen, reverse=True)


def parse_csv(content: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(content)))


async def test_csv_export_streams_every_matching_row_with_a_header(api, ledger, monkeypatch) -> None:
    team = ledger["team"]
    monkeypatch.setattr(history, "CSV_BATCH", 2)  # several batches
    reply = await api.get(f"{HISTORY}.csv", headers=auth(team))
    assert reply.status_code == 200 and reply.headers["content-type"].startswith("text/csv")
    assert "attachment" in reply.headers["content-disposition"]
    assert reply.text.splitlines()[0] == ",".join(history.CSV_COLUMNS)
    table = parse_csv(reply.text)
    json_rows = await rows(api, team)
    assert [int(r["id"]) for r in table] == [r["id"] for r in json_rows]
    consume = table[0]
    assert (consume["type"], consume["operation"], consume["appId"], consume["amount"]) == (
        "consume", "deck", ledger["app_id"], "10.00")
    assert consume["metadata"] == '{"cards": 20}' and consume["availableAfter"] == str(
        Decimal(str(json_rows[0]["availableAfter"])).quantize(Decimal("0.01")))
    filtered = await api.get(f"{HISTORY}.csv", params={"jobId": ledger["b"]}, headers=auth(team))
    assert [r["type"] for r in parse_csv(filtered.text)] == ["release", "reserve"]
    same = await api.get(HISTORY, params={"jobId": ledger["b"], "format": "csv"}, headers=auth(team))
    assert same.status_code == 200 and same.text == filtered.text
    empty = await api.get(f"{HISTORY}.csv", params={"type": "void"}, headers=auth(team))
    assert empty.text.splitlines() == [",".join(history.CSV_COLUMNS)]
    # The batches after the first stream after the endpoint returned: every connection is back.
    assert api.app.state.runtime.db.engine.pool.checkedout() == 0


async def test_csv_cells_a_spreadsheet_would_run_are_neutralised(api, db) -> None:
    """OWASP CSV injection: text cells starting with = + - @ tab or CR get a leading ', the
    numbers (negative deltas included) stay numbers, and text that is not a formula is untouched."""
    team = await make_team(db, credits="100")
    app = await make_app(db, name="sheets", teams=(team,))
    key = {"Authorization": f"Bearer {app.service_key}"}
    texts = ['=HYPERLINK("http://evil.example","x")', "+1+1", "-2+3", "@SUM(A1)", "\tcmd", "\rcmd", "plain -1"]
    for text in texts:
        reply = await api.post("/api/v1/credits/consume", headers=key, json={
            "teamId": str(team.team_id), "operation": text, "amount": 1, "description": text})
        assert reply.status_code == 200, reply.text
    table = parse_csv((await api.get(f"{HISTORY}.csv", params={"type": "consume"}, headers=auth(team))).text)
    expected = [("'" + t if t != "plain -1" else t) for t in reversed(texts)]
    assert [r["operation"] for r in table] == [r["description"] for r in table] == expected
    assert {(r["amount"], r["bonusDelta"], r["allocationDelta"]) for r in table} == {("1.00", "0.00", "-1.00")}
