"""Group commit of charges on one team (``credits/coalesce.py``, ``ledger.consume_batch``): a lone
charge runs at once on its own; charges that arrive while one is in flight run as one batch, one
ledger row and one answer each, admitted in arrival order while the balance lasts, the rest 402;
the books hold (balance == sum(ledger), rows chained, no bucket negative) sequentially and
concurrently (hypothesis)."""

from __future__ import annotations

import asyncio
import uuid
from decimal import Decimal
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from pixelmint.credits import coalesce, ledger
from pixelmint.credits import service as credits
from pixelmint.credits.errors import InsufficientCredits
from pixelmint.kit.db import Database
from tests.builders import assert_ledger_ok, auth, make_app, make_team
from tests.credits.test_ledger_properties import assert_invariants

SETTINGS = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
amounts = st.decimals(min_value=Decimal("0.01"), max_value=Decimal("40"), places=2)


async def funded_team(db: Database, *, allocation: str, bonus: str) -> uuid.UUID:
    team = await make_team(db, plan="basic", credits="0")
    async with db.transaction() as s:
        for bucket, amount in (("allocation", allocation), ("bonus", bonus)):
            if Decimal(amount):
                await credits.grant(s, team_id=team.team_id, amount=Decimal(amount), bucket=bucket)
    return team.team_id


async def batch(db: Database, team_id: uuid.UUID, charges: list[ledger.Charge]) -> list[ledger.Spent] | None:
    """``ledger.consume_batch`` on a pool connection of its own, as the coalescer runs it."""
    async with db.engine.connect() as connection:
        driver: Any = (await connection.get_raw_connection()).driver_connection
        return await ledger.consume_batch(driver, team_id, charges)


async def consume(db: Database, team_id: uuid.UUID, amount: Decimal, **fields: Any) -> int | Decimal:
    """A credit-API style charge (``alone``: its own session, nothing run before): the ledger row's
    id, or the available credits a 402 reported."""
    async with db.sessionmaker() as s:
        try:
            done = await credits.consume(s, team_id=team_id, amount=amount, operation="prop", alone=True, **fields)
        except InsufficientCredits as refused:
            return Decimal(str(refused.extra["availableCredits"]))
        await s.commit()
    return done.transaction_id


async def ledger_rows(db: Database, team_id: uuid.UUID) -> list[Any]:
    async with db.transaction() as s:
        return list((await s.execute(text("""
            SELECT id, type, amount, allocation_delta, bonus_delta, allocation_after, bonus_after, description, metadata
              FROM credit_transactions WHERE team_id = :t AND type = 'consume' ORDER BY id"""), {"t": team_id})).all())


async def test_a_lone_charge_runs_at_once_alone(db) -> None:  # type: ignore[no-untyped-def]
    """By structure: with nothing in flight the charge takes the one-statement path on the caller's
    session (no batch, no task, no timer) and is committed when it returns."""
    team_id = await funded_team(db, allocation="0", bonus="100")
    before = (coalesce.stats.alone, coalesce.stats.batches)
    assert isinstance(await consume(db, team_id, Decimal("10")), int)
    assert (coalesce.stats.alone, coalesce.stats.batches) == (before[0] + 1, before[1])
    assert not coalesce.in_flight(team_id)
    assert [r.amount for r in await ledger_rows(db, team_id)] == [Decimal("10")]  # committed, seen by another session


async def test_a_batch_admits_the_prefix_the_balance_covers_allocation_first(db) -> None:  # type: ignore[no-untyped-def]
    team_id = await funded_team(db, allocation="40", bonus="60")
    charges = [ledger.Charge(Decimal(a), operation="deck", description=f"#{i}", metadata={"i": i})
               for i, a in enumerate(["30", "30", "35", "10"])]
    spent = await batch(db, team_id, charges)
    assert spent is not None
    assert [s.transaction_id is not None for s in spent] == [True, True, True, False]  # 100 → 70 → 40 → 5; 10 > 5
    rows = await ledger_rows(db, team_id)
    assert [r.description for r in rows] == ["#0", "#1", "#2"]  # one row each, in arrival order
    assert [r.metadata for r in rows] == [{"i": 0}, {"i": 1}, {"i": 2}]
    assert [(r.allocation_delta, r.bonus_delta) for r in rows] == [
        (Decimal("-30"), Decimal("0")), (Decimal("-10"), Decimal("-20")), (Decimal("0"), Decimal("-35"))]
    assert [(s.available, s.available_after) for s in spent[:3]] == [
        (Decimal("100"), Decimal("70")), (Decimal("70"), Decimal("40")), (Decimal("40"), Decimal("5"))]
    assert [s.transaction_id for s in spent[:3]] == [r.id for r in rows]
    assert spent[3].available == Decimal("5") and spent[3].transaction_id is None
    await assert_invariants(db, team_id)


async def test_a_batch_stops_at_the_first_charge_that_does_not_fit(db) -> None:  # type: ignore[no-untyped-def]
    team_id = await funded_team(db, allocation="0", bonus="50")
    spent = await batch(db, team_id, [ledger.Charge(Decimal(a)) for a in ("20", "40", "10")])
    assert spent is not None
    assert [s.transaction_id is not None for s in spent] == [True, False, False]
    assert [s.available for s in spent[1:]] == [Decimal("30"), Decimal("30")]  # what is left after the admitted
    assert await batch(db, uuid.uuid4(), [ledger.Charge(Decimal("1"))]) is None  # no balance
    await assert_invariants(db, team_id)


async def test_concurrent_charges_join_one_batch_in_arrival_order(db) -> None:  # type: ignore[no-untyped-def]
    """16 charges of 10 on 95 credits at once: the first runs alone, the other 15 queue behind it and
    go as ONE batch; the first 9 in arrival order are charged, the rest are 402 with 5 left."""
    team_id = await funded_team(db, allocation="45", bonus="50")
    before = (coalesce.stats.alone, coalesce.stats.batches, coalesce.stats.batched)
    answers = await asyncio.gather(*(consume(db, team_id, Decimal("10"), description=f"#{i}") for i in range(16)))
    assert (coalesce.stats.alone - before[0], coalesce.stats.batches - before[1],
            coalesce.stats.batched - before[2]) == (1, 1, 15)
    assert all(isinstance(a, int) for a in answers[:9]) and answers[9:] == [Decimal("5")] * 7
    rows = await ledger_rows(db, team_id)
    assert [r.id for r in rows] == answers[:9]  # arrival order = ledger order
    assert [r.description for r in rows] == [f"#{i}" for i in range(9)]
    assert not coalesce.in_flight(team_id)
    await assert_invariants(db, team_id)


async def test_a_charge_that_fails_the_batch_fails_alone(db) -> None:  # type: ignore[no-untyped-def]
    """PostgreSQL refuses the batch statement (one charge's metadata is not valid JSON for it): nothing
    is written and each charge takes its own way, so only the bad one fails."""
    team_id = await funded_team(db, allocation="0", bonus="100")
    before = coalesce.stats.batches
    answers = await asyncio.gather(*(
        consume(db, team_id, Decimal("10"), metadata={"x": float("nan") if i == 2 else i}) for i in range(5)
    ), return_exceptions=True)
    assert coalesce.stats.batches == before + 1
    assert [isinstance(a, int) for a in answers] == [True, True, False, True, True]
    assert isinstance(answers[2], DBAPIError), answers[2]
    assert sorted(r.metadata["x"] for r in await ledger_rows(db, team_id)) == [0, 1, 3, 4]
    await assert_invariants(db, team_id)


async def test_a_batch_charge_that_would_cross_the_threshold_sends_low_balance_once(api, db) -> None:  # type: ignore[no-untyped-def]
    """Concurrent credit-API charges: a batch stops before the charge that crosses the threshold;
    that one (and those after it) go the usual way, in a transaction with its webhook."""
    team = await make_team(db, plan="basic", credits="100")
    app = await make_app(db, teams=(team,))
    assert (await api.post("/api/v1/webhook-endpoints", json={"url": "https://example.com/hook",
                                                              "eventTypes": ["credits.low_balance"]},
                           headers=auth(team))).status_code == 201
    assert (await api.put("/api/v1/credits/low-balance-threshold", json={"threshold": 50},
                          headers=auth(team))).status_code == 200
    answers = await asyncio.gather(*(
        api.post("/api/v1/credits/consume", json={"teamId": str(team.team_id), "operation": "deck"},
                 headers={"Authorization": f"Bearer {app.service_key}"}) for _ in range(12)))
    assert sorted(a.status_code for a in answers) == [200] * 10 + [402] * 2
    assert sorted(a.json()["availableCredits"] for a in answers if a.status_code == 200) == list(range(0, 100, 10))
    async with db.transaction() as s:
        lows = (await s.execute(text("""SELECT payload FROM webhook_messages WHERE team_id = :t
                                         AND event_type = 'credits.low_balance'"""), {"t": team.team_id})).all()
    assert len(lows) == 1, lows
    assert (lows[0].payload["data"]["previousAvailableCredits"], lows[0].payload["data"]["availableCredits"]) == (50, 40)
    await assert_invariants(db, team.team_id)


@SETTINGS
@given(batches=st.lists(st.lists(amounts, min_size=1, max_size=12), min_size=1, max_size=6))
async def test_sequential_batches_keep_the_books(db, batches) -> None:  # type: ignore[no-untyped-def]
    team_id = await funded_team(db, allocation="60", bonus="40")
    for amounts_ in batches:
        async with db.transaction() as s:
            available = (await credits.get_balance(s, team_id))
            left = available.allocation_credits + available.bonus_credits
        spent = await batch(db, team_id, [ledger.Charge(a) for a in amounts_])
        assert spent is not None
        admitted = 0
        for amount in amounts_:  # the longest prefix the balance covers
            if amount > left:
                break
            left -= amount
            admitted += 1
        assert [s.transaction_id is not None for s in spent] == [True] * admitted + [False] * (len(amounts_) - admitted)
        assert all(s.available == left for s in spent[admitted:])
        await assert_invariants(db, team_id)


@SETTINGS
@given(rounds=st.lists(st.lists(amounts, min_size=2, max_size=12), min_size=1, max_size=4))
async def test_concurrent_charges_keep_the_books(db, rounds) -> None:  # type: ignore[no-untyped-def]
    """Through the coalescer (the first of each round alone, the rest batched): every charge is
    either one ledger row of its amount or a 402 saying less than its amount was left."""
    team_id = await funded_team(db, allocation="60", bonus="40")
    for amounts_ in rounds:
        answers = await asyncio.gather(*(consume(db, team_id, a) for a in amounts_))
        rows = {r.id: r.amount for r in await ledger_rows(db, team_id)}
        for amount, answer in zip(amounts_, answers, strict=True):
            if isinstance(answer, int):
                assert rows[answer] == amount
            else:
                assert answer < amount
        await assert_invariants(db, team_id)
    await assert_ledger_ok(db)
