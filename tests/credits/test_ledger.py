"""The ledger service against real PostgreSQL: buckets, exactly-once settlement, the check."""

from __future__ import annotations

import asyncio
import uuid
from decimal import Decimal

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from pixelmint.credits import service as credits
from pixelmint.credits.errors import InsufficientCredits
from tests.builders import assert_ledger_ok, make_team

D = Decimal


async def balance(db, team_id):  # type: ignore[no-untyped-def]
    async with db.transaction() as session:
        b = await credits.get_balance(session, team_id)
        return b.allocation_credits, b.bonus_credits, b.reserved_credits


async def test_reserve_burns_allocation_before_bonus_and_release_returns_to_each_bucket(db) -> None:
    team = await make_team(db, credits="10")
    async with db.transaction() as s:
        await credits.grant(s, team_id=team.team_id, amount=D("5"), bucket="bonus")
    async with db.transaction() as s:
        r = await credits.reserve(s, team_id=team.team_id, amount=D("12.50"), operation="image_generation")
    assert (r.from_allocation, r.from_bonus) == (D("10.00"), D("2.50"))
    assert await balance(db, team.team_id) == (D("0.00"), D("2.50"), D("12.50"))
    async with db.transaction() as s:
        assert await credits.release(s, r.id) is True
    assert await balance(db, team.team_id) == (D("10.00"), D("5.00"), D("0.00"))
    await assert_ledger_ok(db)


async def test_capture_charges_and_returns_the_difference_last_burned_first(db) -> None:
    team = await make_team(db, credits="10")
    async with db.transaction() as s:
        await credits.grant(s, team_id=team.team_id, amount=D("5"), bucket="bonus")
        r = await credits.reserve(s, team_id=team.team_id, amount=D("12"), operation="op")
    async with db.transaction() as s:
        assert await credits.capture(s, r.id, amount=D("9")) == D("9")
    # 12 reserved = 10 allocation + 2 bonus; 3 unused go back to bonus first (2), then allocation (1)
    assert await balance(db, team.team_id) == (D("1.00"), D("5.00"), D("0.00"))
    await assert_ledger_ok(db)


async def test_settlement_is_exactly_once(db) -> None:
    team = await make_team(db, credits="10")
    async with db.transaction() as s:
        r = await credits.reserve(s, team_id=team.team_id, amount=D("4"), operation="op")
    async with db.transaction() as s:
        assert await credits.capture(s, r.id) == D("4")
    async with db.transaction() as s:
        assert await credits.capture(s, r.id) is None
        assert await credits.release(s, r.id) is False
    assert await balance(db, team.team_id) == (D("6.00"), D("0.00"), D("0.00"))
    await assert_ledger_ok(db)


async def test_concurrent_capture_and_release_settle_once(db) -> None:
    team = await make_team(db, credits="100")
    async with db.transaction() as s:
        holds = [await credits.reserve(s, team_id=team.team_id, amount=D("3"), operation="op") for _ in range(10)]

    async def settle(hold, how):  # type: ignore[no-untyped-def]
        async with db.transaction() as s:
            if how == "capture":
                return await credits.capture(s, hold.id) is not None
            return await credits.release(s, hold.id)

    results = await asyncio.gather(*[settle(h, how) for h in holds for how in ("capture", "release")])
    assert sum(results) == 10  # one winner per hold
    alloc, bonus, reserved = await balance(db, team.team_id)
    assert reserved == D("0.00")
    await assert_ledger_ok(db)


async def test_insufficient_credits_writes_nothing(db) -> None:
    team = await make_team(db, credits="5")
    with pytest.raises(InsufficientCredits) as err:
        async with db.transaction() as s:
            await credits.reserve(s, team_id=team.team_id, amount=D("5.01"), operation="image_generation")
    assert err.value.extra == {"requiredCredits": 5.01, "availableCredits": 5.0, "operation": "image_generation"}
    async with db.transaction() as s:
        count = await s.scalar(text("SELECT count(*) FROM credit_reservations"))
        ledger = await s.scalar(text("SELECT count(*) FROM credit_transactions WHERE team_id = :t"), {"t": team.team_id})
    assert count == 0 and ledger == 1  # just the initial grant
    assert await balance(db, team.team_id) == (D("5.00"), D("0.00"), D("0.00"))


async def test_check_ledger_reports_drift_and_orphaned_holds(db) -> None:
    team = await make_team(db, credits="10")
    await assert_ledger_ok(db)
    async with db.transaction() as s:
        await s.execute(text("UPDATE credit_balances SET allocation_credits = allocation_credits + 1 WHERE team_id = :t"),
                        {"t": team.team_id})
        await credits.reserve(s, team_id=team.team_id, amount=D("2"), operation="op", job_id=uuid.uuid4())
    async with db.transaction() as s:
        problems = await credits.check_ledger(s)
    kinds = sorted(p.kind for p in problems)
    assert kinds == ["balance_drift", "orphaned_hold"]
    assert all(p.team_id == team.team_id for p in problems)


async def ledger_rows(db, team_id) -> int:  # type: ignore[no-untyped-def]
    async with db.transaction() as s:
        return await s.scalar(text("SELECT count(*) FROM credit_transactions WHERE team_id = :t"), {"t": team_id})


async def test_capture_beyond_the_hold_is_refused_by_the_statement_and_writes_nothing(db) -> None:
    team = await make_team(db, credits="10")
    async with db.transaction() as s:
        hold = await credits.reserve(s, team_id=team.team_id, amount=D("4"), operation="op")
    for wrong in (D("4.01"), D("-1")):
        async with db.transaction() as s:  # committed: the statement's WHERE refused it, nothing was written
            with pytest.raises(ValueError, match="cannot capture"):
                await credits.capture(s, hold.id, amount=wrong)
        async with db.transaction() as s:
            status = await s.scalar(text("SELECT status FROM credit_reservations WHERE id = :id"), {"id": hold.id})
        assert status == "held"
        assert await ledger_rows(db, team.team_id) == 2  # the grant and the reserve
        assert await balance(db, team.team_id) == (D("6.00"), D("0.00"), D("4.00"))
    async with db.transaction() as s:
        assert await credits.capture(s, hold.id, amount=D("4")) == D("4.00")
    await assert_ledger_ok(db)


async def test_the_check_constraints_refuse_a_wrong_amount(db) -> None:
    """The ledger's statements never clamp: a wrong result reaches the table's CHECKs, which refuse
    it (nothing written) instead of storing a balance the ledger does not add up to."""
    team = await make_team(db, credits="10")
    with pytest.raises(IntegrityError, match="ck_credit_balances_reserved_nonnegative"):
        async with db.transaction() as s:  # a negative hold would make reserved negative
            await credits.reserve(s, team_id=team.team_id, amount=D("-5"), operation="op")
    async with db.transaction() as s:
        hold = await credits.reserve(s, team_id=team.team_id, amount=D("4"), operation="op")
    with pytest.raises(IntegrityError, match="ck_credit_balances_reserved_nonnegative"):
        async with db.transaction() as s:  # the balance drifted (written behind the ledger's back)
            await s.execute(text("UPDATE credit_balances SET reserved_credits = 1 WHERE team_id = :t"),
                            {"t": team.team_id})
            await credits.release(s, hold.id)
    assert await balance(db, team.team_id) == (D("6.00"), D("0.00"), D("4.00"))
    assert await ledger_rows(db, team.team_id) == 2
    await assert_ledger_ok(db)
