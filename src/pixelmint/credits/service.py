"""The credit ledger: reserve / capture / release / grant, balances and the ledger check.

Every change locks the team's ``credit_balances`` row (``FOR UPDATE``) and appends one
``credit_transactions`` row in the same statement, so the balance always equals the sum of its
ledger. Spending burns the expiring monthly allocation before bonus credits; a release returns
credits to the buckets they came from. A reservation is settled exactly once: capture and release
only act on a reservation still ``held`` and are no-ops otherwise, whatever retries, duplicate
callbacks or crashes do.

Services take the caller's session and never commit.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import structlog
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from pixelmint.credits.errors import InsufficientCredits
from pixelmint.credits.tables import CreditBalance, CreditTransaction
from pixelmint.kit.errors import NotFound

log = structlog.get_logger(__name__)

ZERO = Decimal("0.00")


@dataclass(frozen=True)
class Reservation:
    id: uuid.UUID
    team_id: uuid.UUID
    amount: Decimal
    from_allocation: Decimal
    from_bonus: Decimal


_RESERVE = text("""
WITH bal AS (
    SELECT team_id, allocation_credits, bonus_credits
      FROM credit_balances WHERE team_id = :team_id FOR UPDATE
), split AS (
    SELECT team_id,
           LEAST(allocation_credits, CAST(:amount AS numeric)) AS from_allocation,
           CAST(:amount AS numeric) - LEAST(allocation_credits, CAST(:amount AS numeric)) AS from_bonus
      FROM bal WHERE allocation_credits + bonus_credits >= CAST(:amount AS numeric)
), upd AS (
    UPDATE credit_balances b
       SET allocation_credits = b.allocation_credits - s.from_allocation,
           bonus_credits = b.bonus_credits - s.from_bonus,
           reserved_credits = b.reserved_credits + CAST(:amount AS numeric),
           updated_at = now()
      FROM split s WHERE b.team_id = s.team_id
    RETURNING b.allocation_credits, b.bonus_credits, b.reserved_credits, s.from_allocation, s.from_bonus
), res AS (
    INSERT INTO credit_reservations (id, team_id, job_id, app_id, operation, amount, from_allocation, from_bonus,
                                     expires_at)
    SELECT :reservation_id, :team_id, :job_id, :app_id, :operation, :amount, from_allocation, from_bonus,
           :expires_at
      FROM upd
), led AS (
    INSERT INTO credit_transactions (team_id, type, amount, allocation_delta, bonus_delta, reserved_delta,
                                     allocation_after, bonus_after, reserved_after, operation, job_id,
                                     reservation_id, app_id, user_id, description)
    SELECT :team_id, 'reserve', :amount, -from_allocation, -from_bonus, :amount,
           allocation_credits, bonus_credits, reserved_credits, :operation, :job_id,
           :reservation_id, :app_id, :user_id, :description
      FROM upd
)
SELECT bal.allocation_credits + bal.bonus_credits AS available, upd.from_allocation, upd.from_bonus
  FROM bal LEFT JOIN upd ON true
""")


async def reserve(
    session: AsyncSession,
    *,
    team_id: uuid.UUID,
    amount: Decimal,
    operation: str,
    job_id: uuid.UUID | None = None,
    app_id: uuid.UUID | None = None,
    user_id: uuid.UUID | None = None,
    description: str | None = None,
    expires_at: dt.datetime | None = None,
    fail_open: bool = False,
) -> Reservation:
    """Move ``amount`` credits from available (allocation first, then bonus) to reserved.

    One statement: lock the balance row, check, update, insert the reservation and its ledger row.
    Raises ``InsufficientCredits`` (nothing written) when available < amount, ``NotFound`` when
    the team has no balance row. With ``fail_open`` (``PIXELMINT_CREDIT_ENFORCEMENT=fail_open``)
    a shortfall is first granted as recorded, logged bonus credits (``cover_shortfall``).
    """
    reservation_id = uuid.uuid4()
    params = {
        "team_id": team_id, "amount": amount, "operation": operation, "job_id": job_id,
        "reservation_id": reservation_id, "app_id": app_id, "user_id": user_id, "description": description,
        "expires_at": expires_at,
    }
    row = (await session.execute(_RESERVE, params)).one_or_none()
    if row is None:
        raise NotFound("The team has no credit balance.", code="team_not_found")
    if row.from_allocation is None:
        if not fail_open:
            raise InsufficientCredits(required=amount, available=row.available, operation=operation)
        await cover_shortfall(session, team_id=team_id, required=amount, available=row.available, operation=operation)
        row = (await session.execute(_RESERVE, params)).one()
    return Reservation(reservation_id, team_id, amount, row.from_allocation, row.from_bonus)


async def cover_shortfall(
    session: AsyncSession, *, team_id: uuid.UUID, required: Decimal, available: Decimal, operation: str
) -> None:
    """``fail_open`` mode: an operation without enough credits still runs. The missing credits are
    granted into the bonus bucket by an ``adjust`` ledger row marked ``failOpen`` and logged as a
    warning, so the shortfall is never silent and the ledger still adds up."""
    shortfall = required - available
    log.warning("credit_shortfall_fail_open", team=str(team_id), operation=operation,
                required=str(required), available=str(available), shortfall=str(shortfall))
    await grant(
        session, team_id=team_id, amount=shortfall, bucket="bonus", ledger_type="adjust",
        description=f"fail_open: {operation} ran {shortfall} credits short",
        metadata={"failOpen": True, "shortfall": str(shortfall), "operation": operation},
    )


_CONSUME = text("""
WITH bal AS (
    SELECT team_id, allocation_credits, bonus_credits
      FROM credit_balances WHERE team_id = :team_id FOR UPDATE
), split AS (
    SELECT team_id,
           LEAST(allocation_credits, CAST(:amount AS numeric)) AS from_allocation,
           CAST(:amount AS numeric) - LEAST(allocation_credits, CAST(:amount AS numeric)) AS from_bonus
      FROM bal WHERE allocation_credits + bonus_credits >= CAST(:amount AS numeric)
), upd AS (
    UPDATE credit_balances b
       SET allocation_credits = b.allocation_credits - s.from_allocation,
           bonus_credits = b.bonus_credits - s.from_bonus,
           updated_at = now()
      FROM split s WHERE b.team_id = s.team_id
    RETURNING b.allocation_credits, b.bonus_credits, b.reserved_credits, s.from_allocation, s.from_bonus
), led AS (
    INSERT INTO credit_transactions (team_id, type, amount, allocation_delta, bonus_delta, reserved_delta,
                                     allocation_after, bonus_after, reserved_after, operation, app_id,
                                     user_id, description, metadata)
    SELECT :team_id, 'consume', :amount, -from_allocation, -from_bonus, 0,
           allocation_credits, bonus_credits, reserved_credits, :operation, :app_id,
           :user_id, :description, CAST(:metadata AS jsonb)
      FROM upd
    RETURNING id
)
SELECT bal.allocation_credits + bal.bonus_credits AS available, upd.allocation_credits + upd.bonus_credits AS after,
       (SELECT id FROM led) AS transaction_id
  FROM bal LEFT JOIN upd ON true
""")


@dataclass(frozen=True)
class Consumption:
    transaction_id: int
    amount: Decimal
    available_after: Decimal


async def consume(
    session: AsyncSession,
    *,
    team_id: uuid.UUID,
    amount: Decimal,
    operation: str,
    app_id: uuid.UUID | None = None,
    user_id: uuid.UUID | None = None,
    description: str | None = None,
    metadata: dict[str, Any] | None = None,
    fail_open: bool = False,
) -> Consumption:
    """Spend ``amount`` credits at once (allocation first, then bonus): one statement that locks
    the balance row and appends a ``consume`` ledger row. Raises ``InsufficientCredits`` (nothing
    written) unless ``fail_open``, and ``NotFound`` for a team without a balance."""
    params = {
        "team_id": team_id, "amount": amount, "operation": operation, "app_id": app_id, "user_id": user_id,
        "description": description, "metadata": json.dumps(metadata or {}),
    }
    row = (await session.execute(_CONSUME, params)).one_or_none()
    if row is None:
        raise NotFound("The team has no credit balance.", code="team_not_found")
    if row.transaction_id is None:
        if not fail_open:
            raise InsufficientCredits(required=amount, available=row.available, operation=operation)
        await cover_shortfall(session, team_id=team_id, required=amount, available=row.available, operation=operation)
        row = (await session.execute(_CONSUME, params)).one()
    return Consumption(row.transaction_id, amount, row.after)


# Settle a held reservation. Capture keeps ``:captured`` credits as spent and returns the rest
# (last-burned bucket first: bonus, then allocation); release returns everything to its buckets.
_SETTLE = text("""
WITH r AS (
    UPDATE credit_reservations
       SET status = CAST(:status AS text), captured_amount = CAST(:captured AS numeric), settled_at = now()
     WHERE id = :reservation_id AND status = 'held'
    RETURNING id, team_id, job_id, operation, amount, from_allocation, from_bonus
), back AS (
    SELECT r.*,
           LEAST(r.from_bonus, r.amount - CAST(:captured AS numeric)) AS to_bonus,
           (r.amount - CAST(:captured AS numeric)) - LEAST(r.from_bonus, r.amount - CAST(:captured AS numeric))
               AS to_allocation
      FROM r
), upd AS (
    UPDATE credit_balances b
       SET allocation_credits = b.allocation_credits + back.to_allocation,
           bonus_credits = b.bonus_credits + back.to_bonus,
           reserved_credits = b.reserved_credits - back.amount,
           updated_at = now()
      FROM back WHERE b.team_id = back.team_id
    RETURNING b.allocation_credits, b.bonus_credits, b.reserved_credits
), led AS (
    INSERT INTO credit_transactions (team_id, type, amount, allocation_delta, bonus_delta, reserved_delta,
                                     allocation_after, bonus_after, reserved_after, operation, job_id,
                                     reservation_id, description)
    SELECT back.team_id, CAST(:ledger_type AS text),
           CASE WHEN CAST(:ledger_type AS text) = 'capture' THEN CAST(:captured AS numeric) ELSE back.amount END,
           back.to_allocation, back.to_bonus, -back.amount,
           upd.allocation_credits, upd.bonus_credits, upd.reserved_credits, back.operation, back.job_id,
           back.id, :description
      FROM back, upd
)
SELECT amount FROM r
""")


async def capture(
    session: AsyncSession,
    reservation_id: uuid.UUID,
    *,
    amount: Decimal | None = None,
    description: str | None = None,
) -> Decimal | None:
    """Settle a held reservation as spent: ``amount`` (default: all of it) is charged and the
    difference goes back. Returns the credits charged, or ``None`` if the reservation was already
    settled (capture and release are exactly-once)."""
    return await _settle(session, reservation_id, "captured", "capture", amount, description)


async def release(
    session: AsyncSession, reservation_id: uuid.UUID, *, description: str | None = None
) -> bool:
    """Return a held reservation to the buckets it came from. ``False`` if already settled."""
    return await _settle(session, reservation_id, "released", "release", ZERO, description) is not None


async def _settle(
    session: AsyncSession,
    reservation_id: uuid.UUID,
    status: str,
    ledger_type: str,
    captured: Decimal | None,
    description: str | None,
) -> Decimal | None:
    if captured is None:
        held = await session.scalar(
            text("SELECT amount FROM credit_reservations WHERE id = :id"), {"id": reservation_id}
        )
        if held is None:
            return None
        captured = held
    row = (
        await session.execute(
            _SETTLE,
            {
                "reservation_id": reservation_id,
                "status": status,
                "captured": captured,
                "ledger_type": ledger_type,
                "description": description,
            },
        )
    ).one_or_none()
    if row is None:
        return None
    if captured > row.amount:
        raise ValueError(f"cannot capture {captured} from a reservation of {row.amount}")
    return captured


async def grant(
    session: AsyncSession,
    *,
    team_id: uuid.UUID,
    amount: Decimal,
    bucket: str = "bonus",
    ledger_type: str = "grant",
    description: str | None = None,
    metadata: dict[str, Any] | None = None,
) -> CreditTransaction:
    """Add ``amount`` credits to the ``allocation`` or ``bonus`` bucket (locks the balance row)."""
    if amount < 0:
        raise ValueError("grant amount must be >= 0")
    balance = await session.scalar(
        select(CreditBalance).where(CreditBalance.team_id == team_id).with_for_update()
    )
    if balance is None:
        raise NotFound("The team has no credit balance.", code="team_not_found")
    allocation_delta = amount if bucket == "allocation" else ZERO
    bonus_delta = amount if bucket == "bonus" else ZERO
    balance.allocation_credits += allocation_delta
    balance.bonus_credits += bonus_delta
    if bucket == "allocation":
        balance.total_allocated += amount
    entry = CreditTransaction(
        team_id=team_id,
        type=ledger_type,
        amount=amount,
        allocation_delta=allocation_delta,
        bonus_delta=bonus_delta,
        reserved_delta=ZERO,
        allocation_after=balance.allocation_credits,
        bonus_after=balance.bonus_credits,
        reserved_after=balance.reserved_credits,
        description=description,
        metadata_=metadata or {},
    )
    session.add(entry)
    await session.flush()
    return entry


async def open_balance(
    session: AsyncSession, *, team_id: uuid.UUID, next_replenishment_at: dt.datetime | None
) -> None:
    """Create a team's empty balance row (credits then arrive through ``grant``)."""
    session.add(CreditBalance(team_id=team_id, next_replenishment_at=next_replenishment_at))
    await session.flush()


async def get_balance(session: AsyncSession, team_id: uuid.UUID) -> CreditBalance:
    balance = await session.get(CreditBalance, team_id)
    if balance is None:
        raise NotFound("The team has no credit balance.", code="team_not_found")
    return balance


async def list_transactions(
    session: AsyncSession, team_id: uuid.UUID, *, limit: int, before_id: int | None
) -> list[CreditTransaction]:
    """Ledger rows newest first; ``before_id`` is the cursor (rows with a smaller id)."""
    query = select(CreditTransaction).where(CreditTransaction.team_id == team_id)
    if before_id is not None:
        query = query.where(CreditTransaction.id < before_id)
    return list((await session.scalars(query.order_by(CreditTransaction.id.desc()).limit(limit))).all())


@dataclass(frozen=True)
class LedgerProblem:
    team_id: uuid.UUID
    kind: str
    detail: str


_LEDGER_DRIFT = text("""
SELECT b.team_id, b.allocation_credits, b.bonus_credits, b.reserved_credits,
       COALESCE(t.allocation, 0) AS ledger_allocation, COALESCE(t.bonus, 0) AS ledger_bonus,
       COALESCE(t.reserved, 0) AS ledger_reserved, COALESCE(h.held, 0) AS held
  FROM credit_balances b
  LEFT JOIN (SELECT team_id, sum(allocation_delta) AS allocation, sum(bonus_delta) AS bonus,
                    sum(reserved_delta) AS reserved
               FROM credit_transactions GROUP BY team_id) t ON t.team_id = b.team_id
  LEFT JOIN (SELECT team_id, sum(amount) AS held FROM credit_reservations WHERE status = 'held'
              GROUP BY team_id) h ON h.team_id = b.team_id
 WHERE b.allocation_credits <> COALESCE(t.allocation, 0)
    OR b.bonus_credits <> COALESCE(t.bonus, 0)
    OR b.reserved_credits <> COALESCE(t.reserved, 0)
    OR b.reserved_credits <> COALESCE(h.held, 0)
""")

# A reservation has exactly one settlement row once settled, none while held.
_SETTLEMENT_COUNT = text("""
SELECT r.team_id, r.id, r.status, count(t.id) AS settlements
  FROM credit_reservations r
  LEFT JOIN credit_transactions t ON t.reservation_id = r.id AND t.type IN ('capture', 'release')
 GROUP BY r.team_id, r.id, r.status
HAVING count(t.id) <> CASE WHEN r.status = 'held' THEN 0 ELSE 1 END
""")

# Holds whose job has finished (or no longer exists): credits stuck on hold.
_ORPHANED_HOLDS = text("""
SELECT r.team_id, r.id, r.job_id, j.state
  FROM credit_reservations r LEFT JOIN jobs j ON j.id = r.job_id
 WHERE r.status = 'held' AND r.job_id IS NOT NULL
   AND (j.id IS NULL OR j.state NOT IN ('queued', 'running', 'awaiting_webhook'))
""")


async def check_ledger(session: AsyncSession) -> list[LedgerProblem]:
    """Every team's balance equals the sum of its ledger, and every hold is settled exactly once.

    Returns the problems found (empty when the books add up).
    """
    problems: list[LedgerProblem] = []
    for row in await session.execute(_LEDGER_DRIFT):
        problems.append(
            LedgerProblem(
                row.team_id,
                "balance_drift",
                f"balance allocation/bonus/reserved = {row.allocation_credits}/{row.bonus_credits}/"
                f"{row.reserved_credits}; ledger sums = {row.ledger_allocation}/{row.ledger_bonus}/"
                f"{row.ledger_reserved}; open holds = {row.held}",
            )
        )
    for row in await session.execute(_SETTLEMENT_COUNT):
        problems.append(
            LedgerProblem(
                row.team_id,
                "settlement_count",
                f"reservation {row.id} is {row.status} with {row.settlements} settlement rows",
            )
        )
    for row in await session.execute(_ORPHANED_HOLDS):
        problems.append(
            LedgerProblem(
                row.team_id,
                "orphaned_hold",
                f"reservation {row.id} is still held but job {row.job_id} is {row.state or 'gone'}",
            )
        )
    return problems
