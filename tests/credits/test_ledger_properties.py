"""Property-based tests of the ledger: random sequences of every balance change — reserve, capture,
release, consume, grant, replenish (and the expiry of the allocation left), hold expiry, adjust and
void — run one after another and concurrently. After each step: balance == sum(ledger) for every
bucket, each ledger row's ``*_after`` is the running sum of the deltas up to it (no change went
unrecorded), ``total_allocated`` is the sum of the allocation credited, no bucket is negative
(enforce mode) and ``check_ledger`` finds nothing."""

from __future__ import annotations

import asyncio
from decimal import Decimal

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from pixelmint.credits import apps
from pixelmint.credits import service as credits
from pixelmint.credits.errors import InsufficientCredits
from pixelmint.kit.errors import Conflict
from tests.builders import assert_ledger_ok, make_team

amounts = st.decimals(min_value=Decimal("0.01"), max_value=Decimal("60"), places=2)
buckets = st.sampled_from(["allocation", "bonus"])
operations = st.one_of(
    st.tuples(st.just("reserve"), amounts),
    st.tuples(st.just("capture"), st.integers(0, 20), st.decimals(min_value=0, max_value=1, places=2)),
    st.tuples(st.just("release"), st.integers(0, 20)),
    st.tuples(st.just("grant"), buckets, amounts),
    st.tuples(st.just("consume"), amounts),
    st.tuples(st.just("expire_holds")),
    st.tuples(st.just("replenish"), amounts),
    st.tuples(st.just("adjust"), buckets, amounts, st.booleans()),
    st.tuples(st.just("void"), st.integers(0, 20)),
)
SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


async def apply(db, team_id, holds: list, grants: list, op: tuple) -> None:  # type: ignore[no-untyped-def]
    kind = op[0]
    try:
        async with db.transaction() as s:
            if kind == "reserve":
                holds.append(await credits.reserve(s, team_id=team_id, amount=op[1], operation="prop"))
            elif kind == "capture" and holds:
                hold = holds[op[1] % len(holds)]
                await credits.capture(s, hold.id, amount=(hold.amount * op[2]).quantize(Decimal("0.01")))
            elif kind == "release" and holds:
                await credits.release(s, holds[op[1] % len(holds)].id)
            elif kind == "grant":
                grants.append((await credits.grant(s, team_id=team_id, amount=op[2], bucket=op[1])).id)
            elif kind == "consume":
                await credits.consume(s, team_id=team_id, amount=op[1], operation="prop")
            elif kind == "replenish":  # a new allocation period: what is left of the old one expires
                await credits.replenish(s, team_id=team_id, amount=op[1], next_replenishment_at=None, reason="prop")
            elif kind == "expire_holds":
                await s.execute(text("UPDATE credit_reservations SET expires_at = now() WHERE team_id = :t AND status = 'held'"),
                                {"t": team_id})
                await apps.release_expired_holds(s)
            elif kind == "adjust":
                await credits.adjust(s, team_id=team_id, bucket=op[1], amount=-op[2] if op[3] else op[2], reason="prop")
            elif kind == "void" and grants:
                await credits.void_grant(s, team_id=team_id, transaction_id=grants[op[1] % len(grants)], reason="prop")
    except (InsufficientCredits, Conflict):
        pass  # refused whole (short of credits, a bucket would go negative, voided or expired): nothing written


async def assert_invariants(db, team_id) -> None:  # type: ignore[no-untyped-def]
    async with db.transaction() as s:
        b = await credits.get_balance(s, team_id)
        rows = (await s.execute(text("""
            SELECT type, allocation_delta, bonus_delta, reserved_delta, allocation_after, bonus_after, reserved_after
              FROM credit_transactions WHERE team_id = :t ORDER BY id"""), {"t": team_id})).all()
    running = (Decimal(0), Decimal(0), Decimal(0))
    allocated = Decimal(0)
    for row in rows:
        running = (running[0] + row.allocation_delta, running[1] + row.bonus_delta, running[2] + row.reserved_delta)
        assert (row.allocation_after, row.bonus_after, row.reserved_after) == running, row
        if row.type in ("grant", "replenish", "adjust", "void"):
            allocated += row.allocation_delta
    assert (b.allocation_credits, b.bonus_credits, b.reserved_credits) == running  # balance == sum(ledger)
    assert b.total_allocated == allocated
    assert min(running) >= 0
    await assert_ledger_ok(db)


@SETTINGS
@given(steps=st.lists(operations, min_size=1, max_size=25))
async def test_sequential_operations_keep_the_books(db, steps) -> None:  # type: ignore[no-untyped-def]
    team = await make_team(db, plan="basic", credits="100")
    holds: list = []
    grants: list = []
    for op in steps:
        await apply(db, team.team_id, holds, grants, op)
        await assert_invariants(db, team.team_id)


@SETTINGS
@given(batches=st.lists(st.lists(operations, min_size=2, max_size=8), min_size=1, max_size=5))
async def test_concurrent_operations_keep_the_books(db, batches) -> None:  # type: ignore[no-untyped-def]
    team = await make_team(db, plan="basic", credits="100")
    holds: list = []
    grants: list = []
    for batch in batches:
        await asyncio.gather(*(apply(db, team.team_id, holds, grants, op) for op in batch))
        await assert_invariants(db, team.team_id)
