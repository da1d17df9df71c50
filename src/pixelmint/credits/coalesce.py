"""Group commit for charges on one team's balance (issue 12, "a hot balance beats the naive
transaction"): while one consume of a team is in flight, the consumes that arrive for the same
team wait and then run together, as the next batch, in ONE statement that is its own transaction
(``ledger.consume_batch``): one turn of the balance row's lock and one WAL flush for the batch,
each charge still with its own ledger row and its own answer.

As TigerBeetle's client batches (``../shared/reference/hot-rows-and-scale.md`` A3): at most one
statement per team is in flight in this process; a charge that finds none runs AT ONCE, alone
(``ledger.consume_alone``, on the caller's session: no timer, no task, nothing added to its
latency); the charges that arrive meanwhile queue, and when the statement in flight returns, all
that queued (up to ``BATCH_LIMIT``) go out as one batch, in a task of their own on a pool
connection of their own (a caller that gives up waiting does not take the batch down with it).
The batch admits the charges in arrival order while the balance lasts (without crossing the
low-balance threshold); each caller gets its own ``ledger.Spent`` and applies the usual rules to
it (``credits.service.consume``). If PostgreSQL refuses the batch statement, nothing was written
and every caller takes the step-by-step way on its own session (``NOT_RUN``): one bad charge
does not fail the others. Any other failure (the connection lost: the batch may or may not have
committed) is raised to every caller of the batch, as a lone charge's would be.

Per process and per event loop; several processes each coalesce their own requests (the row lock
orders their batches).
"""

from __future__ import annotations

import asyncio
import uuid
import weakref
from dataclasses import dataclass, field
from typing import Any, Final

import asyncpg
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from pixelmint.credits import ledger
from pixelmint.kit.db import database_unreachable

BATCH_LIMIT: Final = 512  # charges in one statement (its arrays); the rest go in the next one


class _NotRun:
    """The batch statement was refused as a whole: nothing written, take the step-by-step way."""


NOT_RUN: Final = _NotRun()
Outcome = ledger.Spent | None | _NotRun


@dataclass
class _Waiting:
    charge: ledger.Charge
    engine: AsyncEngine
    future: asyncio.Future[Outcome]


@dataclass
class _Team:
    waiting: list[_Waiting] = field(default_factory=list)


@dataclass
class Stats:
    """Counters of this process's coalescer (tests and benchmarks): charges run alone, batches
    run and the charges in them."""

    alone: int = 0
    batches: int = 0
    batched: int = 0


stats = Stats()

# Teams with a statement in flight, per event loop: present while one runs; ``waiting``: the next batch.
_in_flight: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[uuid.UUID, _Team]] = weakref.WeakKeyDictionary()
_tasks: set[asyncio.Task[None]] = set()  # running batches (a reference, so they are not collected)


def _teams() -> dict[uuid.UUID, _Team]:
    loop = asyncio.get_running_loop()
    teams = _in_flight.get(loop)
    if teams is None:
        teams = _in_flight[loop] = {}
    return teams


def in_flight(team_id: uuid.UUID) -> bool:
    """Whether a statement spending from the team's balance is running in this process (and loop)."""
    return team_id in _teams()


async def consume(session: AsyncSession, team_id: uuid.UUID, charge: ledger.Charge) -> Outcome:
    """Charge the team (``ledger.consume_alone`` semantics: its own transaction, committed when
    this returns; refused when it does not fit or would cross the low-balance threshold).
    ``session``: the caller's, with nothing run yet; used only when the charge runs alone.
    Returns the charge's ``Spent``, ``None`` when the team has no balance, or ``NOT_RUN``."""
    teams = _teams()
    team = teams.get(team_id)
    if team is not None:  # one is in flight: join the next batch
        engine = session.bind
        assert isinstance(engine, AsyncEngine)
        waiting = _Waiting(charge, engine, asyncio.get_running_loop().create_future())
        team.waiting.append(waiting)
        return await waiting.future
    teams[team_id] = _Team()
    stats.alone += 1
    try:
        return await ledger.consume_alone(
            session, team_id=team_id, amount=charge.amount, operation=charge.operation, app_id=charge.app_id,
            user_id=charge.user_id, description=charge.description, metadata=charge.metadata,
        )
    finally:
        _next(teams, team_id)


def _next(teams: dict[uuid.UUID, _Team], team_id: uuid.UUID) -> None:
    """The statement in flight for the team has returned: send what queued, or mark it idle."""
    team = teams[team_id]
    batch = [w for w in team.waiting[:BATCH_LIMIT] if not w.future.done()]  # done: its caller gave up
    team.waiting = team.waiting[BATCH_LIMIT:]
    if not batch and not team.waiting:
        del teams[team_id]
        return
    task = asyncio.get_running_loop().create_task(_run(teams, team_id, batch))
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)


async def _run(teams: dict[uuid.UUID, _Team], team_id: uuid.UUID, batch: list[_Waiting]) -> None:
    try:
        if batch:
            outcomes = await _execute(team_id, batch)
            for waiting, outcome in zip(batch, outcomes, strict=True):
                if not waiting.future.done():
                    waiting.future.set_result(outcome)
    except Exception as exc:
        for waiting in batch:
            if not waiting.future.done():
                waiting.future.set_exception(exc)
    except BaseException:  # cancelled (the loop is closing): so are its callers
        for waiting in batch:
            waiting.future.cancel()
        raise
    finally:
        _next(teams, team_id)


async def _execute(team_id: uuid.UUID, batch: list[_Waiting]) -> list[Outcome]:
    stats.batches += 1
    stats.batched += len(batch)
    async with batch[0].engine.connect() as connection:
        driver: Any = (await connection.get_raw_connection()).driver_connection
        try:
            spent = await ledger.consume_batch(driver, team_id, [w.charge for w in batch])
        except asyncpg.PostgresError as exc:
            if database_unreachable(exc):
                raise
            return [NOT_RUN] * len(batch)  # refused whole: nothing was written
    if spent is None:
        return [None] * len(batch)
    return list(spent)
