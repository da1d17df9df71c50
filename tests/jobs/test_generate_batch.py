"""Group commit of paid generations on one team (``flows/generation._SUBMIT_BATCH``,
``kit/coalesce.py``): a lone submission runs at once on its own; those that arrive while one is in
flight go as one batch — a reservation, a ``reserve`` ledger row and a job each, admitted in
arrival order while the balance lasts; the rest go their own way (402 here). The books hold."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from pixelmint.accounts.service import authenticate
from pixelmint.credits import service as credits
from pixelmint.credits.errors import InsufficientCredits
from pixelmint.credits.pricing import current_pricing
from pixelmint.flows import generation
from pixelmint.jobs.schemas import GenerateRequest
from tests.builders import assert_ledger_ok, generate_body, make_team
from tests.credits.test_coalesce import amounts, consume
from tests.credits.test_ledger_properties import assert_invariants


async def submit(db, settings, api_key: str, **body: Any) -> Any:  # type: ignore[no-untyped-def]
    """``POST /generate``'s flow without an Idempotency-Key, on a session of its own: the job, or
    the 402."""
    async with db.sessionmaker() as s:
        principal = await authenticate(s, api_key)
        try:
            job, _ = await generation.submit_generation(
                s, principal, GenerateRequest.model_validate(generate_body(**body)), settings=settings,
                pricing=await current_pricing(s), alone=True)
        except InsufficientCredits as refused:
            return refused
        await s.commit()
        return job


async def test_concurrent_paid_generations_join_one_batch_in_arrival_order(db, settings) -> None:  # type: ignore[no-untyped-def]
    team = await make_team(db, plan="pro", credits="0")
    async with db.transaction() as s:
        await credits.grant(s, team_id=team.team_id, amount=Decimal("1000"), bucket="allocation")
    stats = generation.generation_stats
    first = await submit(db, settings, team.api_key, prompt="warm-up")  # alone; warms the caches
    cost = first.estimated_credits
    async with db.transaction() as s:  # leave exactly 5 generations' worth, 2 of them in allocation
        b = await credits.get_balance(s, team.team_id)
        await credits.adjust(s, team_id=team.team_id, bucket="allocation",
                             amount=2 * cost - b.allocation_credits, reason="test")
        await credits.grant(s, team_id=team.team_id, amount=3 * cost + cost / 2, bucket="bonus")
    before = (stats.alone, stats.batches, stats.batched)
    answers = await asyncio.gather(*(submit(db, settings, team.api_key, prompt=f"#{i}") for i in range(8)))
    assert (stats.alone - before[0], stats.batches - before[1], stats.batched - before[2]) == (1, 1, 7)
    assert [getattr(a, "params", {}).get("prompt") for a in answers[:5]] == [f"#{i}" for i in range(5)]
    assert all(isinstance(a, InsufficientCredits) for a in answers[5:]), answers
    async with db.transaction() as s:
        rows = (await s.execute(text("""
            SELECT t.allocation_delta, t.bonus_delta, j.params->>'prompt' AS prompt, j.state, r.status, j.estimated_credits
              FROM credit_transactions t JOIN jobs j ON j.id = t.job_id JOIN credit_reservations r ON r.id = t.reservation_id
             WHERE t.team_id = :t AND t.type = 'reserve' ORDER BY t.id"""), {"t": team.team_id})).all()
    assert [r.prompt for r in rows] == ["warm-up"] + [f"#{i}" for i in range(5)]  # ledger order = arrival order
    assert {(r.state, r.status, r.estimated_credits) for r in rows} == {("queued", "held", cost)}
    assert [-(r.allocation_delta + r.bonus_delta) for r in rows] == [cost] * 6
    assert [r.allocation_delta for r in rows[1:]] == [-cost, -cost, 0, 0, 0]  # allocation burns first
    async with db.transaction() as s:
        b = await credits.get_balance(s, team.team_id)
    assert (b.allocation_credits, b.bonus_credits, b.reserved_credits) == (0, cost / 2, 6 * cost)
    await assert_invariants(db, team.team_id)
    await assert_ledger_ok(db)


async def test_a_user_with_free_generations_is_left_out_of_the_batch(db, settings) -> None:  # type: ignore[no-untyped-def]
    """Free generations come first: such a request is not charged by the batch; its own statement
    takes a free generation."""
    team = await make_team(db, plan="pro", credits="1000", free_generations=3)
    await submit(db, settings, team.api_key, prompt="warm-up")  # alone: free (2 left)
    answers = await asyncio.gather(*(submit(db, settings, team.api_key, prompt=f"#{i}") for i in range(4)))
    assert sum(a.is_free for a in answers) == 2  # the 2 left, then paid
    await assert_invariants(db, team.team_id)
    await assert_ledger_ok(db)


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rounds=st.lists(st.lists(st.one_of(st.just("generate"), amounts), min_size=2, max_size=10),
                       min_size=1, max_size=3))
async def test_concurrent_generations_and_charges_keep_the_books(db, settings, rounds) -> None:  # type: ignore[no-untyped-def]
    """Both coalescers on one balance at once (a batch of generations, a batch of consumes, and
    what they leave out, interleaved by the row lock): every generation is a job with its hold or a
    402, every charge a ledger row or a 402; balance == sum(ledger), rows chained, nothing negative."""
    team = await make_team(db, plan="pro", credits="0")
    async with db.transaction() as s:
        await credits.grant(s, team_id=team.team_id, amount=Decimal("60"), bucket="allocation")
        await credits.grant(s, team_id=team.team_id, amount=Decimal("40"), bucket="bonus")

    async def one(op: object) -> object:
        if op == "generate":
            return await submit(db, settings, team.api_key)
        assert isinstance(op, Decimal)
        return await consume(db, team.team_id, op)

    for ops in rounds:
        answers = await asyncio.gather(*(one(op) for op in ops))
        for op, answer in zip(ops, answers, strict=True):
            if op == "generate":
                assert isinstance(answer, InsufficientCredits) or answer.reservation_id is not None
        await assert_invariants(db, team.team_id)
    await assert_ledger_ok(db)
