"""Buckets over time: replenishment expires the allocation left, holds of an ended period never
give their allocation back, admin adjust and void. Real PostgreSQL; the ledger check after each."""

from __future__ import annotations

import asyncio
import datetime as dt
from decimal import Decimal

import pytest
from sqlalchemy import text

from pixelmint.credits import service as credits
from pixelmint.kit.errors import Conflict, InvalidRequest, NotFound
from tests.builders import assert_ledger_ok, make_team
from tests.helpers import wait_for_lock_wait

D = Decimal
NEXT = dt.datetime(2031, 1, 1, tzinfo=dt.UTC)


async def buckets(db, team_id):  # type: ignore[no-untyped-def]
    async with db.transaction() as s:
        b = await credits.get_balance(s, team_id)
        return b.allocation_credits, b.bonus_credits, b.reserved_credits


async def ledger(db, team_id):  # type: ignore[no-untyped-def]
    async with db.transaction() as s:
        rows = await s.execute(
            text("""SELECT type, amount, allocation_delta, bonus_delta, reserved_delta, description, metadata
                      FROM credit_transactions WHERE team_id = :t ORDER BY id"""), {"t": team_id})
        return rows.all()


async def replenish(db, team_id, amount="500", **kw):  # type: ignore[no-untyped-def]
    async with db.transaction() as s:
        return await credits.replenish(s, team_id=team_id, amount=D(amount), next_replenishment_at=NEXT,
                                       reason=kw.pop("reason", "test renewal"), metadata=kw or None)


async def test_replenish_expires_the_allocation_left_and_keeps_bonus(db) -> None:
    team = await make_team(db, credits="100")
    async with db.transaction() as s:
        await credits.grant(s, team_id=team.team_id, amount=D("7"), bucket="bonus")
        await credits.capture(s, (await credits.reserve(s, team_id=team.team_id, amount=D("30"), operation="op")).id)
    done = await replenish(db, team.team_id, "500", source="test")
    assert (done.expired, done.granted, done.allocation_period) == (D("70.00"), D("500"), 1)
    assert await buckets(db, team.team_id) == (D("500.00"), D("7.00"), D("0.00"))
    *_, expire, renew = await ledger(db, team.team_id)
    assert (expire.type, expire.amount, expire.allocation_delta) == ("expire", D("70.00"), D("-70.00"))
    assert expire.metadata["source"] == "test" and expire.metadata["allocationPeriod"] == 0
    assert (renew.type, renew.amount, renew.allocation_delta, renew.description) == (
        "replenish", D("500.00"), D("500.00"), "test renewal")
    assert renew.metadata["allocationPeriod"] == 1
    async with db.transaction() as s:
        b = await credits.get_balance(s, team.team_id)
        assert (b.total_allocated, b.next_replenishment_at, b.allocation_period) == (D("600.00"), NEXT, 1)
        assert b.allocation_period_started_at > dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
    await assert_ledger_ok(db)


async def test_replenish_with_nothing_left_writes_no_expire_row(db) -> None:
    team = await make_team(db, plan="free", credits="0")
    done = await replenish(db, team.team_id, "0")
    assert done.expire_transaction_id is None and done.expired == D("0.00")
    assert [r.type for r in await ledger(db, team.team_id)] == ["replenish"]
    await assert_ledger_ok(db)


async def test_release_after_replenish_drops_the_expired_allocation_and_returns_bonus(db) -> None:
    team = await make_team(db, credits="10")
    async with db.transaction() as s:
        await credits.grant(s, team_id=team.team_id, amount=D("5"), bucket="bonus")
        hold = await credits.reserve(s, team_id=team.team_id, amount=D("12"), operation="op")
    assert (hold.from_allocation, hold.from_bonus) == (D("10.00"), D("2.00"))
    done = await replenish(db, team.team_id, "500")
    assert (done.expired, done.held_allocation) == (D("0.00"), D("10.00"))
    async with db.transaction() as s:
        assert await credits.release(s, hold.id, description="job canceled") is True
    # the 10 allocation credits of period 0 expired with it; the 2 bonus credits come back
    assert await buckets(db, team.team_id) == (D("500.00"), D("5.00"), D("0.00"))
    row = (await ledger(db, team.team_id))[-1]
    assert (row.type, row.amount, row.allocation_delta, row.bonus_delta, row.reserved_delta) == (
        "release", D("12.00"), D("0.00"), D("2.00"), D("-12.00"))
    assert row.description == ("job canceled; 10.00 allocation credits not returned: "
                               "their allocation period has expired")
    assert row.metadata == {"expiredAllocation": "10.00"}
    await assert_ledger_ok(db)


async def test_partial_capture_after_replenish_returns_only_bonus(db) -> None:
    team = await make_team(db, credits="10")
    async with db.transaction() as s:
        await credits.grant(s, team_id=team.team_id, amount=D("5"), bucket="bonus")
        hold = await credits.reserve(s, team_id=team.team_id, amount=D("12"), operation="op")
    await replenish(db, team.team_id, "500")
    async with db.transaction() as s:
        assert await credits.capture(s, hold.id, amount=D("6")) == D("6")
    # 6 unused: 2 bonus back, 4 allocation of the ended period dropped
    assert await buckets(db, team.team_id) == (D("500.00"), D("5.00"), D("0.00"))
    assert (await ledger(db, team.team_id))[-1].metadata == {"expiredAllocation": "4.00"}
    await assert_ledger_ok(db)


async def test_hold_taken_after_replenish_returns_its_allocation(db) -> None:
    team = await make_team(db, credits="10")
    await replenish(db, team.team_id, "50")
    async with db.transaction() as s:
        hold = await credits.reserve(s, team_id=team.team_id, amount=D("20"), operation="op")
    async with db.transaction() as s:
        await credits.release(s, hold.id)
    assert await buckets(db, team.team_id) == (D("50.00"), D("0.00"), D("0.00"))
    assert (await ledger(db, team.team_id))[-1].metadata == {}
    await assert_ledger_ok(db)


async def test_check_ledger_reports_period_drift_and_resurrected_allocation(db) -> None:
    team = await make_team(db, credits="10")
    async with db.transaction() as s:
        hold = await credits.reserve(s, team_id=team.team_id, amount=D("4"), operation="op")
    await replenish(db, team.team_id, "10")
    async with db.transaction() as s:  # simulate a settle that ignored the period: 4 come back
        await s.execute(text("UPDATE credit_reservations SET allocation_period = 1 WHERE id = :r"), {"r": hold.id})
        await credits.release(s, hold.id)
        await s.execute(text("UPDATE credit_reservations SET allocation_period = 0 WHERE id = :r"), {"r": hold.id})
        await s.execute(text("UPDATE credit_balances SET allocation_period = 5 WHERE team_id = :t"), {"t": team.team_id})
    async with db.transaction() as s:
        kinds = sorted(p.kind for p in await credits.check_ledger(s))
    assert kinds == ["period_drift", "resurrected_allocation"]


async def test_adjust_moves_one_bucket_and_never_below_zero(db) -> None:
    team = await make_team(db, credits="10")
    async with db.transaction() as s:
        entry = await credits.adjust(s, team_id=team.team_id, amount=D("-4"), bucket="allocation", reason="typo fix")
        assert (entry.type, entry.amount, entry.allocation_delta, entry.description) == (
            "adjust", D("4"), D("-4"), "typo fix")
        await credits.adjust(s, team_id=team.team_id, amount=D("3.5"), bucket="bonus", reason="goodwill")
    assert await buckets(db, team.team_id) == (D("6.00"), D("3.50"), D("0.00"))
    with pytest.raises(Conflict) as err:
        async with db.transaction() as s:
            await credits.adjust(s, team_id=team.team_id, amount=D("-3.51"), bucket="bonus", reason="too much")
    assert err.value.code == "bucket_would_go_negative" and err.value.extra["bucketCredits"] == 3.5
    for bad in ({"amount": D("0"), "bucket": "bonus", "reason": "x"},
                {"amount": D("1"), "bucket": "gold", "reason": "x"},
                {"amount": D("1"), "bucket": "bonus", "reason": "  "}):
        with pytest.raises(InvalidRequest):
            async with db.transaction() as s:
                await credits.adjust(s, team_id=team.team_id, **bad)
    assert await buckets(db, team.team_id) == (D("6.00"), D("3.50"), D("0.00"))
    await assert_ledger_ok(db)


async def test_void_reverses_a_grant_once(db) -> None:
    team = await make_team(db, credits="10")
    async with db.transaction() as s:
        bonus = await credits.grant(s, team_id=team.team_id, amount=D("8"), bucket="bonus")
    async with db.transaction() as s:
        entry = await credits.void_grant(s, team_id=team.team_id, transaction_id=bonus.id, reason="refunded")
        assert (entry.type, entry.amount, entry.bonus_delta, entry.metadata_["voids"]) == (
            "void", D("8.00"), D("-8.00"), bonus.id)
    assert await buckets(db, team.team_id) == (D("10.00"), D("0.00"), D("0.00"))
    with pytest.raises(Conflict) as err:
        async with db.transaction() as s:
            await credits.void_grant(s, team_id=team.team_id, transaction_id=bonus.id, reason="again")
    assert err.value.code == "already_voided" and err.value.extra["voidTransactionId"] == entry.id
    await assert_ledger_ok(db)


async def test_void_refusals(db) -> None:
    team = await make_team(db, credits="10")
    other = await make_team(db, credits="10")
    async with db.transaction() as s:
        spent = await credits.grant(s, team_id=team.team_id, amount=D("5"), bucket="bonus")
        await credits.reserve(s, team_id=team.team_id, amount=D("12"), operation="op")  # 2 of the 5 bonus
        allocation = await credits.grant(s, team_id=team.team_id, amount=D("3"), bucket="allocation")
    async with db.transaction() as s:
        reserve_id = await s.scalar(text("SELECT id FROM credit_transactions WHERE type = 'reserve'"))
    await replenish(db, team.team_id, "10")
    cases = [
        (spent.id, "bucket_would_go_negative"),  # 3 of 5 left
        (allocation.id, "grant_expired"),  # its allocation period ended
        (reserve_id, "not_voidable"),
    ]
    for transaction_id, code in cases:
        with pytest.raises(Conflict) as err:
            async with db.transaction() as s:
                await credits.void_grant(s, team_id=team.team_id, transaction_id=transaction_id, reason="r")
        assert err.value.code == code
    async with db.transaction() as s:  # another team's grant is not found
        other_grant = await s.scalar(text("SELECT id FROM credit_transactions WHERE team_id = :t"), {"t": other.team_id})
    with pytest.raises(NotFound):
        async with db.transaction() as s:
            await credits.void_grant(s, team_id=team.team_id, transaction_id=other_grant, reason="r")
    await assert_ledger_ok(db)


async def test_release_waiting_on_a_replenishment_sees_the_new_period(db) -> None:
    """The period is compared against the balance row as locked: a release that queued behind a
    replenishment (and read the reservation before it committed) still drops the expired part."""
    team = await make_team(db, credits="10")
    async with db.transaction() as s:
        hold = await credits.reserve(s, team_id=team.team_id, amount=D("4"), operation="op")

    async def release() -> bool:
        async with db.transaction() as s:
            return await credits.release(s, hold.id)

    async with db.transaction() as s:
        await credits.replenish(s, team_id=team.team_id, amount=D("500"), next_replenishment_at=NEXT, reason="r")
        releasing = asyncio.create_task(release())
        await wait_for_lock_wait(db)
    assert await releasing is True
    assert await buckets(db, team.team_id) == (D("500.00"), D("0.00"), D("0.00"))
    await assert_ledger_ok(db)


async def test_reserve_waiting_on_a_replenishment_draws_from_the_new_period(db) -> None:
    team = await make_team(db, credits="10")

    async def reserve():  # type: ignore[no-untyped-def]
        async with db.transaction() as s:
            return await credits.reserve(s, team_id=team.team_id, amount=D("30"), operation="op")

    async with db.transaction() as s:
        await credits.replenish(s, team_id=team.team_id, amount=D("500"), next_replenishment_at=NEXT, reason="r")
        reserving = asyncio.create_task(reserve())
        await wait_for_lock_wait(db)
    hold = await reserving
    async with db.transaction() as s:
        await credits.release(s, hold.id)
    assert await buckets(db, team.team_id) == (D("500.00"), D("0.00"), D("0.00"))
    await assert_ledger_ok(db)
