"""Group commit for consumes on one team's balance (``kit/coalesce.py``): while one consume of
a team is in flight in this process, the consumes that arrive for the same team run together as
the next batch, in ONE statement that is its own transaction (``ledger.consume_batch``): one turn
of the balance row's lock and one WAL flush for the batch, each charge still with its own ledger
row and its own answer. A charge that finds none in flight runs at once, alone
(``ledger.consume_alone`` on the caller's session). The batch admits the charges in arrival order
while the balance lasts (without crossing the low-balance threshold); each caller gets its own
``ledger.Spent`` and applies the usual rules to it (``credits.service.consume``). If PostgreSQL
refuses the batch statement, nothing was written and every caller takes the step-by-step way on
its own session (``NOT_RUN``): one bad charge does not fail the others. Any other failure (the
connection lost: the batch may or may not have committed) is raised to every caller of the batch,
as a lone charge's would be.
"""

from __future__ import annotations

import uuid
from typing import Any, Final

import asyncpg
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from pixelmint.credits import ledger
from pixelmint.kit.coalesce import Coalescer
from pixelmint.kit.db import database_unreachable


class _NotRun:
    """The batch statement was refused as a whole: nothing written, take the step-by-step way."""


NOT_RUN: Final = _NotRun()
Outcome = ledger.Spent | None | _NotRun


async def _batch(driver: Any, team_id: uuid.UUID, charges: list[ledger.Charge]) -> list[Outcome]:
    try:
        spent = await ledger.consume_batch(driver, team_id, charges)
    except asyncpg.PostgresError as exc:
        if database_unreachable(exc):
            raise
        return [NOT_RUN] * len(charges)  # refused whole: nothing was written
    if spent is None:
        return [None] * len(charges)
    return list(spent)


_consumes: Coalescer[uuid.UUID, ledger.Charge, Outcome] = Coalescer(_batch)
stats = _consumes.stats


def in_flight(team_id: uuid.UUID) -> bool:
    """Whether a statement spending from the team's balance is running in this process (and loop)."""
    return _consumes.in_flight(team_id)


async def consume(session: AsyncSession, team_id: uuid.UUID, charge: ledger.Charge) -> Outcome:
    """Charge the team (``ledger.consume_alone`` semantics: its own transaction, committed when
    this returns; refused when it does not fit or would cross the low-balance threshold).
    ``session``: the caller's, with nothing run yet; used only when the charge runs alone.
    Returns the charge's ``Spent``, ``None`` when the team has no balance, or ``NOT_RUN``."""
    engine = session.bind
    assert isinstance(engine, AsyncEngine)

    async def alone() -> Outcome:
        return await ledger.consume_alone(
            session, team_id=team_id, amount=charge.amount, operation=charge.operation, app_id=charge.app_id,
            user_id=charge.user_id, description=charge.description, metadata=charge.metadata,
        )

    return await _consumes.submit(team_id, charge, engine, alone)
