"""The credit ledger: reserve / capture / release / grant, balances and the ledger check.

Every change locks the team's ``credit_balances`` row (``FOR UPDATE``) and appends one
``credit_transactions`` row in the same statement, so the balance always equals the sum of its
ledger. Spending burns the expiring monthly allocation before bonus credits; a release returns
credits to the buckets they came from — except allocation of an ended allocation period
(``replenish`` expired it), which is dropped, never resurrected. A reservation is settled exactly
once: capture and release only act on a reservation still ``held`` and are no-ops otherwise,
whatever retries, duplicate callbacks or crashes do.

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
from pixelmint.kit.errors import Conflict, InvalidRequest, NotFound

log = structlog.get_logger(__name__)

ZERO = Decimal("0.00")


@dataclass(frozen=True)
class Reservation:
    id: uuid.UUID
    team_id: uuid.UUID
    amount: Decimal
    from_allocation: Decimal
    from_bonus: Decimal


# Lock the balance row and split ``:amount`` between the buckets, allocation first; no row in
# ``split`` when the team cannot afford it. Shared by _RESERVE and _CONSUME.
_LOCK_AND_SPLIT = """
WITH bal AS (
    SELECT team_id, allocation_credits, bonus_credits
      FROM credit_balances WHERE team_id = :team_id FOR UPDATE
), split AS (
    SELECT team_id,
           LEAST(allocation_credits, CAST(:amount AS numeric)) AS from_allocation,
           CAST(:amount AS numeric) - LEAST(allocation_credits, CAST(:amount AS numeric)) AS from_bonus
      FROM bal WHERE allocation_credits + bonus_credits >= CAST(:amount AS numeric)
),"""

_RESERVE = text(_LOCK_AND_SPLIT + """
upd AS (
    -- GREATEST(…, 0) never clamps the row written: split was computed from the newest version,
    -- locked by bal. It only keeps the CHECKs from failing spuriously when this statement waited
    -- for a transaction that added credits: PostgreSQL first computes and checks the new row from
    -- the version in the statement's snapshot, then finds it outdated and recomputes it from the
    -- newest one (EvalPlanQual). See tests/credits/test_buckets.py (reserve waiting on replenish).
    UPDATE credit_balances b
       SET allocation_credits = GREATEST(b.allocation_credits - s.from_allocation, 0),
           bonus_credits = GREATEST(b.bonus_credits - s.from_bonus, 0),
           reserved_credits = b.reserved_credits + CAST(:amount AS numeric),
           updated_at = now()
      FROM split s WHERE b.team_id = s.team_id
    RETURNING b.allocation_credits, b.bonus_credits, b.reserved_credits, s.from_allocation, s.from_bonus,
              b.allocation_period
), res AS (
    INSERT INTO credit_reservations (id, team_id, job_id, app_id, operation, amount, from_allocation, from_bonus,
                                     expires_at, allocation_period)
    SELECT :reservation_id, :team_id, :job_id, :app_id, :operation, :amount, from_allocation, from_bonus,
           :expires_at, allocation_period
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


_CONSUME = text(_LOCK_AND_SPLIT + """
upd AS (
    -- GREATEST(…, 0): see _RESERVE (a spurious CHECK failure after waiting for the lock).
    UPDATE credit_balances b
       SET allocation_credits = GREATEST(b.allocation_credits - s.from_allocation, 0),
           bonus_credits = GREATEST(b.bonus_credits - s.from_bonus, 0),
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
# Expired credits are never resurrected: when the hold was taken in an earlier allocation period
# than the balance's current one (a replenishment came while it was held), its unused allocation
# part is dropped — reserved goes down, allocation does not go up — and the ledger row says so in
# its description and in ``metadata.expiredAllocation``. The period is compared inside the
# balance UPDATE, i.e. against the row as locked (a replenishment committing meanwhile is seen).
# The ledger row carries the hold's ``app_id`` (credit-API holds), so usage counts it for its app.
_SETTLE = text("""
WITH r AS (
    UPDATE credit_reservations
       SET status = CAST(:status AS text), captured_amount = CAST(:captured AS numeric), settled_at = now()
     WHERE id = :reservation_id AND status = 'held'
    RETURNING id, team_id, job_id, app_id, operation, amount, from_allocation, from_bonus, allocation_period
), back AS (
    SELECT r.*,
           LEAST(r.from_bonus, r.amount - CAST(:captured AS numeric)) AS to_bonus,
           (r.amount - CAST(:captured AS numeric)) - LEAST(r.from_bonus, r.amount - CAST(:captured AS numeric))
               AS unused_allocation
      FROM r
), upd AS (
    UPDATE credit_balances b
       SET allocation_credits = b.allocation_credits
               + CASE WHEN b.allocation_period = back.allocation_period THEN back.unused_allocation ELSE 0 END,
           bonus_credits = b.bonus_credits + back.to_bonus,
           reserved_credits = b.reserved_credits - back.amount,
           updated_at = now()
      FROM back WHERE b.team_id = back.team_id
    RETURNING b.allocation_credits, b.bonus_credits, b.reserved_credits,
              CASE WHEN b.allocation_period = back.allocation_period THEN back.unused_allocation ELSE 0 END
                  AS to_allocation
), led AS (
    INSERT INTO credit_transactions (team_id, type, amount, allocation_delta, bonus_delta, reserved_delta,
                                     allocation_after, bonus_after, reserved_after, operation, job_id,
                                     app_id, reservation_id, description, metadata)
    SELECT back.team_id, CAST(:ledger_type AS text),
           CASE WHEN CAST(:ledger_type AS text) = 'capture' THEN CAST(:captured AS numeric) ELSE back.amount END,
           upd.to_allocation, back.to_bonus, -back.amount,
           upd.allocation_credits, upd.bonus_credits, upd.reserved_credits, back.operation, back.job_id,
           back.app_id, back.id,
           CASE WHEN back.unused_allocation > upd.to_allocation
                THEN left(concat_ws('; ', CAST(:description AS text),
                                    CAST(back.unused_allocation - upd.to_allocation AS text)
                                    || ' allocation credits not returned: their allocation period has expired'), 500)
                ELSE CAST(:description AS text) END,
           CASE WHEN back.unused_allocation > upd.to_allocation
                THEN jsonb_build_object('expiredAllocation', CAST(back.unused_allocation - upd.to_allocation AS text))
                ELSE CAST('{}' AS jsonb) END
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
        .execution_options(populate_existing=True)  # the locked row, not a stale copy from this session
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


# ---------------------------------------------------------------------------------------------
# Buckets over time and admin corrections: replenish, adjust, void (issue 3, "Buckets", "Money in")

BUCKETS = ("allocation", "bonus")


async def _lock_balance(session: AsyncSession, team_id: uuid.UUID) -> CreditBalance:
    """The team's balance row, locked (``FOR UPDATE``) and freshly read. ``NotFound`` without one."""
    balance = await session.scalar(
        select(CreditBalance).where(CreditBalance.team_id == team_id).with_for_update()
        .execution_options(populate_existing=True)
    )
    if balance is None:
        raise NotFound("The team has no credit balance.", code="team_not_found")
    return balance


def _append(
    session: AsyncSession,
    balance: CreditBalance,
    *,
    ledger_type: str,
    amount: Decimal,
    allocation_delta: Decimal = ZERO,
    bonus_delta: Decimal = ZERO,
    description: str | None,
    metadata: dict[str, Any],
) -> CreditTransaction:
    """Apply the deltas to the locked ``balance`` and add the ledger row that records them."""
    balance.allocation_credits += allocation_delta
    balance.bonus_credits += bonus_delta
    entry = CreditTransaction(
        team_id=balance.team_id, type=ledger_type, amount=amount, allocation_delta=allocation_delta,
        bonus_delta=bonus_delta, reserved_delta=ZERO, allocation_after=balance.allocation_credits,
        bonus_after=balance.bonus_credits, reserved_after=balance.reserved_credits,
        description=description[:500] if description else description, metadata_=metadata,
    )
    session.add(entry)
    return entry


def require_reason(reason: str | None) -> str:
    reason = (reason or "").strip()
    if not reason:
        raise InvalidRequest("A reason is required; it is stored in the ledger row.", code="reason_required")
    return reason


def require_bucket(bucket: str) -> str:
    if bucket not in BUCKETS:
        raise InvalidRequest(f"bucket must be one of {', '.join(BUCKETS)}, got {bucket!r}.", code="invalid_bucket")
    return bucket


@dataclass(frozen=True)
class Replenishment:
    """What ``replenish`` did. Amounts in credits; ``held_allocation`` is allocation of the ended
    period still on hold (it expires when those holds settle: never given back)."""

    team_id: uuid.UUID
    allocation_period: int
    expired: Decimal
    held_allocation: Decimal
    granted: Decimal
    next_replenishment_at: dt.datetime | None
    expire_transaction_id: int | None
    replenish_transaction_id: int


async def replenish(
    session: AsyncSession,
    *,
    team_id: uuid.UUID,
    amount: Decimal,
    next_replenishment_at: dt.datetime | None,
    reason: str,
    metadata: dict[str, Any] | None = None,
) -> Replenishment:
    """Start a new allocation period: the monthly allocation left expires, ``amount`` replaces it.

    Locks the balance row, then appends (when allocation is left) an ``expire`` row taking the
    allocation to 0 and always a ``replenish`` row setting it to ``amount`` (``total_allocated``
    += ``amount``). ``allocation_period`` goes up by one (the ``replenish`` row's
    ``metadata.allocationPeriod`` is the new number), ``allocation_period_started_at`` is now and
    ``next_replenishment_at`` is set as given (``None``: nothing scheduled). Bonus credits are
    untouched. Holds taken in the ended period keep their allocation part on hold; settling them
    later never returns it (``_SETTLE``): the expire row's ``metadata.heldAllocation`` says how much
    is in that state.

    ``reason`` is the replenish row's description (and, prefixed, the expire row's); ``metadata``
    is copied into both rows. Raises ``NotFound`` (team_not_found) and ``ValueError`` for
    ``amount < 0``.
    """
    if amount < 0:
        raise ValueError("replenish amount must be >= 0")
    balance = await _lock_balance(session, team_id)
    ended = balance.allocation_period
    held = await session.scalar(
        text("""SELECT COALESCE(sum(from_allocation), 0) FROM credit_reservations
                 WHERE team_id = :t AND status = 'held' AND allocation_period = :p"""),
        {"t": team_id, "p": ended},
    )
    base = dict(metadata or {})
    expired = balance.allocation_credits
    expire_entry = None
    if expired > 0:
        expire_entry = _append(
            session, balance, ledger_type="expire", amount=expired, allocation_delta=-expired,
            description=f"allocation of period {ended} expired at replenishment: {reason}",
            metadata={**base, "allocationPeriod": ended, "heldAllocation": str(held)},
        )
    balance.allocation_period = ended + 1
    balance.allocation_period_started_at = dt.datetime.now(dt.UTC)
    balance.next_replenishment_at = next_replenishment_at
    balance.total_allocated += amount
    entry = _append(
        session, balance, ledger_type="replenish", amount=amount, allocation_delta=amount, description=reason,
        metadata={
            **base, "allocationPeriod": ended + 1,
            "nextReplenishmentAt": next_replenishment_at.isoformat() if next_replenishment_at else None,
        },
    )
    await session.flush()
    return Replenishment(
        team_id=team_id, allocation_period=ended + 1, expired=expired, held_allocation=held, granted=amount,
        next_replenishment_at=next_replenishment_at,
        expire_transaction_id=expire_entry.id if expire_entry is not None else None,
        replenish_transaction_id=entry.id,
    )


async def set_next_replenishment(session: AsyncSession, *, team_id: uuid.UUID, at: dt.datetime | None) -> None:
    """Schedule (or, with ``None``, cancel) the team's next replenishment. No ledger row: nothing
    moves until ``replenish`` runs. Raises ``NotFound`` (team_not_found)."""
    balance = await _lock_balance(session, team_id)
    balance.next_replenishment_at = at
    await session.flush()


async def adjust(
    session: AsyncSession,
    *,
    team_id: uuid.UUID,
    amount: Decimal,
    bucket: str,
    reason: str,
    metadata: dict[str, Any] | None = None,
) -> CreditTransaction:
    """Admin correction: add the signed ``amount`` to ``bucket`` (``allocation`` | ``bonus``).

    Appends an ``adjust`` row (``amount`` = |amount|, the signed delta in the bucket's column,
    description = ``reason``); an allocation adjustment also moves ``total_allocated``. Raises
    ``Conflict`` 409 ``bucket_would_go_negative`` (nothing written) when the bucket holds less than
    a negative ``amount`` takes, ``InvalidRequest`` 422 for a zero amount, a bad bucket or an empty
    reason, ``NotFound`` 404 team_not_found.
    """
    require_bucket(bucket)
    reason = require_reason(reason)
    if amount == 0:
        raise InvalidRequest("amount must not be 0.", code="invalid_amount")
    balance = await _lock_balance(session, team_id)
    current: Decimal = getattr(balance, f"{bucket}_credits")
    if current + amount < 0:
        raise Conflict(
            f"Adjusting the {bucket} bucket by {amount} would make it negative: it holds {current}.",
            code="bucket_would_go_negative", bucket=bucket, bucketCredits=float(current), amount=float(amount),
        )
    entry = _append(
        session, balance, ledger_type="adjust", amount=abs(amount),
        allocation_delta=amount if bucket == "allocation" else ZERO,
        bonus_delta=amount if bucket == "bonus" else ZERO,
        description=reason, metadata={**(metadata or {}), "bucket": bucket},
    )
    if bucket == "allocation":
        balance.total_allocated += amount
    await session.flush()
    return entry


async def void_grant(
    session: AsyncSession,
    *,
    team_id: uuid.UUID,
    transaction_id: int,
    reason: str,
    metadata: dict[str, Any] | None = None,
) -> CreditTransaction:
    """Reverse the ``grant`` ledger row ``transaction_id`` of ``team_id``, once.

    Appends a ``void`` row taking the granted amount back out of the bucket it went into
    (description = ``reason``, ``metadata.voids`` = the grant's id; a unique index makes a second
    void impossible). Refuses, writing nothing:
    404 ``transaction_not_found`` (no such row for this team); 409 ``not_voidable`` (not a grant),
    ``already_voided``, ``grant_expired`` (an allocation grant of an ended allocation period: its
    credits already expired), ``bucket_would_go_negative`` (some of the granted credits were spent;
    use ``adjust`` for what is left); 422 ``reason_required``.
    """
    reason = require_reason(reason)
    balance = await _lock_balance(session, team_id)  # first: the team's lock serialises voids
    granted = await session.scalar(
        select(CreditTransaction).where(CreditTransaction.id == transaction_id, CreditTransaction.team_id == team_id)
    )
    if granted is None:
        raise NotFound(f"The team has no ledger entry {transaction_id}.", code="transaction_not_found")
    if granted.type != "grant":
        raise Conflict(f"Ledger entry {transaction_id} is a {granted.type}, not a grant; only grants can be voided.",
                       code="not_voidable", transactionId=transaction_id)
    voided_by = await session.scalar(
        select(CreditTransaction.id).where(
            CreditTransaction.type == "void", CreditTransaction.metadata_["voids"].astext == str(transaction_id)
        )
    )
    if voided_by is not None:
        raise Conflict(f"Grant {transaction_id} was already voided by ledger entry {voided_by}.",
                       code="already_voided", transactionId=transaction_id, voidTransactionId=voided_by)
    bucket = "allocation" if granted.allocation_delta > 0 else "bonus"
    amount = granted.amount
    if bucket == "allocation" and await session.scalar(
        text("""SELECT EXISTS (SELECT 1 FROM credit_transactions
                                WHERE team_id = :t AND type = 'replenish' AND id > :id)"""),
        {"t": team_id, "id": transaction_id},
    ):
        raise Conflict(f"Grant {transaction_id} went into an allocation period that has ended; its credits "
                       "already expired.", code="grant_expired", transactionId=transaction_id)
    current: Decimal = getattr(balance, f"{bucket}_credits")
    if current < amount:
        raise Conflict(
            f"Voiding grant {transaction_id} takes {amount} {bucket} credits but the bucket holds {current} "
            "(the rest was spent or is on hold); adjust the bucket instead.",
            code="bucket_would_go_negative", bucket=bucket, bucketCredits=float(current), amount=float(-amount),
        )
    entry = _append(
        session, balance, ledger_type="void", amount=amount,
        allocation_delta=-amount if bucket == "allocation" else ZERO,
        bonus_delta=-amount if bucket == "bonus" else ZERO,
        description=reason, metadata={**(metadata or {}), "voids": transaction_id, "bucket": bucket},
    )
    if bucket == "allocation":
        balance.total_allocated -= amount
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

# Every allocation period after the first began with exactly one replenish row.
_PERIOD_DRIFT = text("""
SELECT b.team_id, b.allocation_period, count(t.id) AS replenishments
  FROM credit_balances b
  LEFT JOIN credit_transactions t ON t.team_id = b.team_id AND t.type = 'replenish'
 GROUP BY b.team_id, b.allocation_period
HAVING b.allocation_period <> count(t.id)
""")

# Expired credits are never resurrected: a hold settled after a later period began gave no
# allocation back.
_RESURRECTED_ALLOCATION = text("""
SELECT r.team_id, r.id, t.id AS transaction_id, t.allocation_delta
  FROM credit_reservations r
  JOIN credit_transactions t ON t.reservation_id = r.id AND t.type IN ('capture', 'release')
 WHERE t.allocation_delta > 0
   AND EXISTS (SELECT 1 FROM credit_transactions p
                WHERE p.team_id = r.team_id AND p.type = 'replenish' AND p.id < t.id
                  AND CAST(p.metadata->>'allocationPeriod' AS integer) > r.allocation_period)
""")


async def check_ledger(session: AsyncSession) -> list[LedgerProblem]:
    """Every team's balance equals the sum of its ledger, and every hold is settled exactly once.

    Also: the allocation period count matches the replenish rows (``period_drift``) and no hold
    settled after its allocation period ended gave allocation back (``resurrected_allocation``).

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
    for row in await session.execute(_PERIOD_DRIFT):
        problems.append(
            LedgerProblem(
                row.team_id,
                "period_drift",
                f"allocation period {row.allocation_period} but {row.replenishments} replenish rows",
            )
        )
    for row in await session.execute(_RESURRECTED_ALLOCATION):
        problems.append(
            LedgerProblem(
                row.team_id,
                "resurrected_allocation",
                f"reservation {row.id} was settled after its allocation period ended, yet ledger row "
                f"{row.transaction_id} gave {row.allocation_delta} allocation credits back",
            )
        )
    return problems
