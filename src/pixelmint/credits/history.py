"""A team's ledger history: filters, keyset pages and the CSV export.

Rows come newest first, paged by id (``before_id``: the cursor). Filters combine with AND:
``types`` (any of), ``operation``, ``job_id``, ``app_id`` and the half-open time range
``since <= created_at < until``. The CSV export streams every matching row in batches of
``CSV_BATCH`` rows (one keyset query each, in the caller's session), so memory stays flat whatever
the size of the ledger.

CSV injection (OWASP): a spreadsheet runs a cell that starts with ``=``, ``+``, ``-``, ``@``, a tab
or a carriage return as a formula, and apps write text cells (``operation``, ``description``). Every
text cell that starts so gets a leading ``'``. Numeric cells (amounts, deltas, balances, the id) are
left alone: a negative amount such as ``-4.80`` is a number, not a formula, and must stay one.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import Select, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from pixelmint.credits.tables import CreditTransaction

CSV_BATCH = 1000
CSV_COLUMNS = (
    "id", "createdAt", "type", "amount", "allocationDelta", "bonusDelta", "reservedDelta", "availableAfter",
    "reservedAfter", "operation", "jobId", "appId", "reservationId", "description", "metadata",
)


def utc(value: dt.datetime | None) -> dt.datetime | None:
    """ISO 8601 without an offset means UTC."""
    return value.replace(tzinfo=dt.UTC) if value is not None and value.tzinfo is None else value


@dataclass(frozen=True)
class LedgerFilter:
    types: tuple[str, ...] = ()
    operation: str | None = None
    job_id: uuid.UUID | None = None
    app_id: uuid.UUID | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None

    def apply(self, query: Select[CreditTransaction]) -> Select[CreditTransaction]:
        if self.types:
            query = query.where(CreditTransaction.type.in_(self.types))
        if self.operation is not None:
            query = query.where(CreditTransaction.operation == self.operation)
        if self.job_id is not None:
            query = query.where(CreditTransaction.job_id == self.job_id)
        if self.app_id is not None:
            query = query.where(CreditTransaction.app_id == self.app_id)
        if self.since is not None:
            query = query.where(CreditTransaction.created_at >= utc(self.since))
        if self.until is not None:
            query = query.where(CreditTransaction.created_at < utc(self.until))
        return query


async def list_transactions(
    session: AsyncSession, team_id: uuid.UUID, ledger_filter: LedgerFilter, *, limit: int, before_id: int | None
) -> list[CreditTransaction]:
    """Up to ``limit`` matching ledger rows of the team with ``id < before_id``, newest first."""
    query = ledger_filter.apply(select(CreditTransaction).where(CreditTransaction.team_id == team_id))
    if before_id is not None:
        query = query.where(CreditTransaction.id < before_id)
    return list((await session.scalars(query.order_by(CreditTransaction.id.desc()).limit(limit))).all())


FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def neutralise(cell: str) -> str:
    """A text cell a spreadsheet would run as a formula, prefixed with ``'``; other text as it is."""
    return "'" + cell if cell.startswith(FORMULA_PREFIXES) else cell


def _csv_row(t: CreditTransaction) -> tuple[object, ...]:
    row = (
        t.id, t.created_at.isoformat(), t.type, t.amount, t.allocation_delta, t.bonus_delta, t.reserved_delta,
        t.allocation_after + t.bonus_after, t.reserved_after, t.operation or "", t.job_id or "", t.app_id or "",
        t.reservation_id or "", t.description or "", json.dumps(t.metadata_, sort_keys=True) if t.metadata_ else "",
    )
    return tuple(neutralise(cell) if isinstance(cell, str) else cell for cell in row)


async def csv_lines(
    session: AsyncSession, team_id: uuid.UUID, ledger_filter: LedgerFilter, *, before_id: int | None = None
) -> AsyncIterator[str]:
    """The matching rows as CSV text, newest first: the header row with the first batch, then one
    chunk per batch. The first chunk comes from the first query, so a caller that awaits it
    before sending headers answers an error as an error, not as a cut-off 200."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_COLUMNS)
    while True:
        rows = await list_transactions(session, team_id, ledger_filter, limit=CSV_BATCH, before_id=before_id)
        writer.writerows(_csv_row(t) for t in rows)
        yield buffer.getvalue()
        if len(rows) < CSV_BATCH:
            return
        buffer.seek(0)
        buffer.truncate()
        before_id = rows[-1].id
        session.expunge_all()  # the batch is written: keep the identity map small


@dataclass(frozen=True)
class DailyUsage:
    day: dt.date  # UTC
    operation: str
    credits: Decimal


_USAGE_BY_DAY = text("""
SELECT (created_at AT TIME ZONE 'UTC')::date AS day, COALESCE(operation, 'other') AS operation,
       SUM(amount) AS credits
  FROM credit_transactions
 WHERE team_id = :team_id AND type IN ('capture', 'consume') AND created_at >= :since
 GROUP BY 1, 2 ORDER BY 1, 2
""")


async def usage_by_day(session: AsyncSession, team_id: uuid.UUID, *, days: int = 30) -> list[DailyUsage]:
    """Credits spent (captured holds and direct consumptions) per UTC day and operation over the
    last ``days`` days including today; days without spending are absent."""
    today = dt.datetime.now(dt.UTC).date()
    since = dt.datetime.combine(today - dt.timedelta(days=days - 1), dt.time(), tzinfo=dt.UTC)
    rows = await session.execute(_USAGE_BY_DAY, {"team_id": team_id, "since": since})
    return [DailyUsage(row.day, row.operation, row.credits) for row in rows]
