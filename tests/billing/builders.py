"""Test data of the billing tests."""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import text

from pixelmint.kit.db import Database


async def set_due(db: Database, team_id: uuid.UUID, at: dt.datetime | None) -> None:
    async with db.transaction() as s:
        await s.execute(text("UPDATE credit_balances SET next_replenishment_at = :at WHERE team_id = :t"),
                        {"at": at, "t": team_id})


async def balance_row(db: Database, team_id: uuid.UUID):  # type: ignore[no-untyped-def]
    async with db.transaction() as s:
        return (await s.execute(
            text("""SELECT allocation_credits, bonus_credits, reserved_credits, total_allocated, next_replenishment_at,
                           allocation_period FROM credit_balances WHERE team_id = :t"""), {"t": team_id})).one()


async def team_row(db: Database, team_id: uuid.UUID):  # type: ignore[no-untyped-def]
    async with db.transaction() as s:
        return (await s.execute(
            text("""SELECT t.plan_code, t.stripe_customer_id, t.stripe_subscription_id, d.priority, d.max_running
                      FROM teams t JOIN team_dispatch d ON d.team_id = t.id WHERE t.id = :t"""), {"t": team_id})).one()


async def ledger_rows(db: Database, team_id: uuid.UUID):  # type: ignore[no-untyped-def]
    async with db.transaction() as s:
        return (await s.execute(
            text("""SELECT id, type, amount, allocation_delta, bonus_delta, description, metadata
                      FROM credit_transactions WHERE team_id = :t ORDER BY id"""), {"t": team_id})).all()
