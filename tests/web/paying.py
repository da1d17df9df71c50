"""Turning a signed-up (free) team into a paying one, as an administrator would (``billing.service``,
what ``pixelmint admin set-plan`` and ``grant`` call)."""

from __future__ import annotations

import uuid
from decimal import Decimal

from sqlalchemy import text

from pixelmint.billing import service as billing
from pixelmint.kit.db import Database


async def team_of(db: Database, email: str) -> uuid.UUID:
    async with db.transaction() as session:
        return (await session.execute(text("SELECT team_id FROM users WHERE email = :e"), {"e": email})).scalar_one()


async def make_paying(db: Database, email: str, *, credits: str = "1000", plan: str = "basic") -> uuid.UUID:
    """The team of ``email`` on ``plan`` with ``credits`` bonus credits."""
    team_id = await team_of(db, email)
    async with db.transaction() as session:
        await billing.change_plan(session, team_id=team_id, plan_code=plan)
        if Decimal(credits) > 0:
            await billing.grant(session, team_id=team_id, amount=Decimal(credits), bucket="bonus", reason="test")
    return team_id
