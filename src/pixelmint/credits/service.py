"""The credit ledger's rules: reserve / capture / release / consume / grant / replenish / adjust /
void, balances and the ledger check.

Every change is one statement of ``credits/ledger.py`` (the only writer of the credit tables):
it locks the team's ``credit_balances`` row and appends one ``credit_transactions`` row, so the
balance always equals the sum of its ledger. This module validates, turns refusals into errors and
applies ``fail_open``. Spending burns the expiring monthly allocation before bonus credits; a
release returns credits to the buckets they came from — except allocation of an ended allocation
period (``replenish`` expired it), which is dropped, never resurrected. A reservation is settled
exactly once: capture and release only act on a reservation still ``held`` and are no-ops
otherwise, whatever retries, duplicate callbacks or crashes do.

Services take the caller's session and never commit.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import structlog
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from pixelmint.accounts.errors import TeamNotFound
from pixelmint.credits import coalesce, ledger
from pixelmint.credits.errors import (
    AlreadyVoided,
    BucketWouldGoNegative,
    GrantExpired,
    InsufficientCredits,
    InvalidAmount,
    InvalidBucket,
    NotVoidable,
    ReasonRequired,
    TransactionNotFound,
)
from pixelmint.credits.tables import CreditBalance, CreditTransaction
from pixelmint.kit.errors import Conflict, NotFound
from pixelmint.kit.ids import new_id
from pixelmint.webhooks import service as webhooks

log = structlog.get_logger(__name__)

ZERO = Decimal("0.00")


def _no_balance() -> NotFound:
    return TeamNotFound("The team has no credit balance.")


@dataclass(frozen=True)
class Reservation:
    id: uuid.UUID
    team_id: uuid.UUID
    amount: Decimal
    from_allocation: Decimal
    from_bonus: Decimal


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

    One statement (``ledger.RESERVE``): lock the balance row, check, update, insert the reservation
    and its ledger row. Raises ``InsufficientCredits`` (nothing written) when available < amount,
    ``NotFound`` when the team has no balance row. With ``fail_open``
    (``PIXELMINT_CREDIT_ENFORCEMENT=fail_open``) a shortfall is first granted as recorded, logged
    bonus credits (``cover_shortfall``).
    """
    reservation_id = new_id()
    fields: dict[str, Any] = {
        "team_id": team_id, "amount": amount, "reservation_id": reservation_id, "expires_at": expires_at,
        "operation": operation, "job_id": job_id, "app_id": app_id, "user_id": user_id, "description": description,
    }
    spent = await ledger.reserve(session, **fields)
    if spent is None:
        raise _no_balance()
    if spent.from_allocation is None:
        await _refuse_or_cover(session, team_id, amount, spent.available, operation, fail_open)
        spent = await ledger.reserve(session, **fields)
        assert spent is not None and spent.from_allocation is not None
    assert spent.from_bonus is not None
    if spent.threshold is not None:  # no statement unless the team set a threshold and crossed it
        await _low_balance(session, team_id, before=spent.available, after=spent.available - amount,
                           threshold=spent.threshold, operation=operation)
    return Reservation(reservation_id, team_id, amount, spent.from_allocation, spent.from_bonus)


async def _refuse_or_cover(
    session: AsyncSession, team_id: uuid.UUID, required: Decimal, available: Decimal, operation: str, fail_open: bool
) -> None:
    if not fail_open:
        raise InsufficientCredits(required=required, available=available, operation=operation)
    await cover_shortfall(session, team_id=team_id, required=required, available=available, operation=operation)


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
    alone: bool = False,
) -> Consumption:
    """Spend ``amount`` credits at once (allocation first, then bonus): one statement
    (``ledger.CONSUME``) that locks the balance row and appends a ``consume`` ledger row. Raises
    ``InsufficientCredits`` (nothing written) unless ``fail_open``, and ``NotFound`` for a team
    without a balance.

    ``alone``: the session has run nothing yet and the caller writes nothing else with it (the
    credit API's consume without an Idempotency-Key): the charge is then its own transaction,
    committed in one round trip (``ledger.consume_alone``), or, while another charge of the team
    is in flight in this process, one of a batch committed together (``credits/coalesce.py``:
    admitted in arrival order while the balance lasts). A charge the balance does not cover at
    its turn is refused (``InsufficientCredits``) unless ``fail_open``; one that would cross the
    team's low-balance threshold (or ``fail_open``'s) goes the usual way, in the session's
    transaction."""
    fields: dict[str, Any] = {
        "team_id": team_id, "amount": amount, "operation": operation, "app_id": app_id, "user_id": user_id,
        "description": description, "metadata": metadata,
    }
    if alone:
        done = await coalesce.consume(session, team_id, ledger.Charge(
            amount, operation=operation, app_id=app_id, user_id=user_id, description=description, metadata=metadata,
        ))
        if done is None:
            raise _no_balance()
        if isinstance(done, ledger.Spent):
            if done.transaction_id is not None:
                assert done.available_after is not None
                return Consumption(done.transaction_id, amount, done.available_after)
            if done.available < amount and not fail_open:  # refused at that point of the order
                raise InsufficientCredits(required=amount, available=done.available, operation=operation)
    spent = await ledger.consume(session, **fields)
    if spent is None:
        raise _no_balance()
    if spent.transaction_id is None:
        await _refuse_or_cover(session, team_id, amount, spent.available, operation, fail_open)
        spent = await ledger.consume(session, **fields)
        assert spent is not None and spent.transaction_id is not None
    assert spent.available_after is not None
    if spent.threshold is not None:
        await _low_balance(session, team_id, before=spent.available, after=spent.available_after,
                           threshold=spent.threshold, operation=operation)
    return Consumption(spent.transaction_id, amount, spent.available_after)


async def after_reservation(
    session: AsyncSession, team_id: uuid.UUID, *, amount: Decimal, available: Decimal, threshold: Decimal | None,
    operation: str, committed: bool = False,
) -> None:
    """What ``reserve`` does after its statement, for a reservation made by a statement built with
    ``ledger.reserve_ctes`` (``flows/generation.py``): count it, and send ``credits.low_balance``
    if it crossed the team's threshold. ``available``: allocation + bonus before it. ``committed``:
    the statement was its own transaction (``ledger.reserve_ctes(alone=True)``: it never crosses)."""
    ledger.count_reserved(None if committed else session, operation, amount)
    if threshold is not None:
        await _low_balance(session, team_id, before=available, after=available - amount, threshold=threshold,
                           operation=operation)


async def _low_balance(
    session: AsyncSession, team_id: uuid.UUID, *, before: Decimal, after: Decimal, threshold: Decimal | None,
    operation: str | None,
) -> None:
    """The ``credits.low_balance`` webhook when available credits (allocation + bonus) went from
    at least the team's threshold to below it, in the caller's transaction. ``threshold`` as read
    with the balance (``None``: the team has none)."""
    if threshold is None or not after < threshold <= before:
        return
    await webhooks.emit(session, team_id, "credits.low_balance", {
        "teamId": str(team_id), "availableCredits": float(after), "previousAvailableCredits": float(before),
        "threshold": float(threshold), "operation": operation, "links": {"balance": "/api/v1/credits/balance"},
    })


async def _after_move(session: AsyncSession, entry: CreditTransaction) -> None:
    """A grant, adjustment or void that lowered the balance may cross the low-balance threshold
    (admin paths: one more statement to read the threshold, only when credits went down)."""
    delta = entry.allocation_delta + entry.bonus_delta
    if delta >= 0:
        return
    threshold = await session.scalar(
        select(CreditBalance.low_balance_threshold).where(CreditBalance.team_id == entry.team_id)
    )
    after = entry.allocation_after + entry.bonus_after
    await _low_balance(session, entry.team_id, before=after - delta, after=after, threshold=threshold,
                       operation=entry.type)


async def set_low_balance_threshold(session: AsyncSession, team_id: uuid.UUID, threshold: Decimal | None) -> None:
    """Set (``None``: clear) the team's low-balance threshold: a ``credits.low_balance`` webhook is
    sent whenever available credits fall from at least it to below it. Raises ``NotFound``
    (team_not_found), ``ValueError`` for a negative threshold."""
    if threshold is not None and threshold < 0:
        raise ValueError("the low-balance threshold must be >= 0")
    updated = await session.scalar(
        text("UPDATE credit_balances SET low_balance_threshold = :threshold WHERE team_id = :team_id RETURNING true"),
        {"team_id": team_id, "threshold": threshold},
    )
    if updated is None:
        raise _no_balance()


async def capture(
    session: AsyncSession,
    reservation_id: uuid.UUID,
    *,
    amount: Decimal | None = None,
    description: str | None = None,
) -> Decimal | None:
    """Settle a held reservation as spent: ``amount`` (default: all of it) is charged and the
    difference goes back. Returns the credits charged, or ``None`` if the reservation was already
    settled (capture and release are exactly-once). Raises ``ValueError`` (nothing written) for an
    amount outside 0..held: the statement's WHERE refuses it."""
    settled = await ledger.settle(session, reservation_id, release=False, captured=amount, description=description)
    if settled.captured is None and settled.held is not None and amount is not None and not 0 <= amount <= settled.held:
        raise ValueError(f"cannot capture {amount} from a reservation of {settled.held}")
    return settled.captured


async def release(
    session: AsyncSession, reservation_id: uuid.UUID, *, description: str | None = None
) -> bool:
    """Return a held reservation to the buckets it came from. ``False`` if already settled."""
    settled = await ledger.settle(session, reservation_id, release=True, description=description)
    return settled.captured is not None


async def _move_bucket(
    session: AsyncSession, *, team_id: uuid.UUID, type: str, bucket: str, delta: Decimal, **fields: Any,
) -> CreditTransaction | None:
    """One ``type`` ledger row adding the signed ``delta`` credits to ``bucket`` (``allocation``,
    which also moves ``total_allocated``, or ``bonus``); its ``amount`` is ``|delta|``.
    ``None`` when the statement's guard refused it or the team has no balance (``ledger.move``)."""
    allocation = delta if bucket == "allocation" else ZERO
    return await ledger.move(
        session, team_id=team_id, type=type, amount=abs(delta), allocation_delta=allocation,
        bonus_delta=delta if bucket == "bonus" else ZERO, total_allocated_delta=allocation, **fields,
    )


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
    """Add ``amount`` credits to the ``allocation`` or ``bonus`` bucket (an allocation grant also
    raises ``total_allocated``): one ``ledger_type`` row. Raises ``ValueError`` for ``amount < 0``,
    ``NotFound`` (team_not_found)."""
    if amount < 0:
        raise ValueError("grant amount must be >= 0")
    entry = await _move_bucket(session, team_id=team_id, type=ledger_type, bucket=bucket, delta=amount,
                               description=description, metadata=metadata)
    if entry is None:
        raise _no_balance()
    return entry


# ---------------------------------------------------------------------------------------------
# Buckets over time and admin corrections: replenish, adjust, void (issue 3, "Buckets", "Money in")

BUCKETS = ("allocation", "bonus")


def require_reason(reason: str | None) -> str:
    reason = (reason or "").strip()
    if not reason:
        raise ReasonRequired("A reason is required; it is stored in the ledger row.")
    return reason


def require_bucket(bucket: str) -> str:
    if bucket not in BUCKETS:
        raise InvalidBucket(f"bucket must be one of {', '.join(BUCKETS)}, got {bucket!r}.")
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
    later never returns it (``ledger.settle``): the expire row's ``metadata.heldAllocation`` says
    how much is in that state.

    ``reason`` is the replenish row's description (and, prefixed, the expire row's); ``metadata``
    is copied into both rows. Raises ``NotFound`` (team_not_found) and ``ValueError`` for
    ``amount < 0``.
    """
    if amount < 0:
        raise ValueError("replenish amount must be >= 0")
    done = await ledger.replenish(
        session, team_id=team_id, amount=amount, next_replenishment_at=next_replenishment_at, reason=reason,
        metadata=metadata,
    )
    if done is None:
        raise _no_balance()
    await webhooks.emit(session, team_id, "credits.replenished", {
        "teamId": str(team_id), "granted": float(amount), "expired": float(done.expired),
        "allocationPeriod": done.allocation_period,
        "nextReplenishmentAt": next_replenishment_at.isoformat() if next_replenishment_at else None,
        "reason": reason, "links": {"balance": "/api/v1/credits/balance", "history": "/api/v1/credits/history"},
    })
    return Replenishment(
        team_id=team_id, allocation_period=done.allocation_period, expired=done.expired,
        held_allocation=done.held_allocation, granted=amount, next_replenishment_at=next_replenishment_at,
        expire_transaction_id=done.expire_transaction_id, replenish_transaction_id=done.replenish_transaction_id,
    )


async def set_next_replenishment(session: AsyncSession, *, team_id: uuid.UUID, at: dt.datetime | None) -> None:
    """Schedule (or, with ``None``, cancel) the team's next replenishment. No ledger row: nothing
    moves until ``replenish`` runs. Raises ``NotFound`` (team_not_found)."""
    if not await ledger.set_next_replenishment(session, team_id=team_id, at=at):
        raise _no_balance()


def _would_go_negative(bucket: str, current: Decimal, amount: Decimal, message: str) -> Conflict:
    return BucketWouldGoNegative(message, bucket=bucket, bucketCredits=float(current), amount=float(amount))


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
        raise InvalidAmount("amount must not be 0.")
    entry = await _move_bucket(session, team_id=team_id, type="adjust", bucket=bucket, delta=amount,
                               description=reason, metadata={**(metadata or {}), "bucket": bucket})
    if entry is None:  # refused by the statement's guard, or no balance (get_balance raises NotFound)
        current: Decimal = getattr(await get_balance(session, team_id), f"{bucket}_credits")
        raise _would_go_negative(
            bucket, current, amount,
            f"Adjusting the {bucket} bucket by {amount} would make it negative: it holds {current}.",
        )
    await _after_move(session, entry)
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
    locked = await ledger.lock(session, team_id)  # first: the team's lock serialises voids
    if locked is None:
        raise _no_balance()
    granted = await session.scalar(
        select(CreditTransaction).where(CreditTransaction.id == transaction_id, CreditTransaction.team_id == team_id)
    )
    if granted is None:
        raise TransactionNotFound(f"The team has no ledger entry {transaction_id}.")
    if granted.type != "grant":
        raise NotVoidable(f"Ledger entry {transaction_id} is a {granted.type}, not a grant; only grants can be voided.",
                          transactionId=transaction_id)
    voided_by = await session.scalar(
        select(CreditTransaction.id).where(
            CreditTransaction.type == "void", CreditTransaction.metadata_["voids"].astext == str(transaction_id)
        )
    )
    if voided_by is not None:
        raise AlreadyVoided(f"Grant {transaction_id} was already voided by ledger entry {voided_by}.",
                            transactionId=transaction_id, voidTransactionId=voided_by)
    bucket = "allocation" if granted.allocation_delta > 0 else "bonus"
    amount = granted.amount
    if bucket == "allocation" and await session.scalar(
        text("""SELECT EXISTS (SELECT 1 FROM credit_transactions
                                WHERE team_id = :t AND type = 'replenish' AND id > :id)"""),
        {"t": team_id, "id": transaction_id},
    ):
        raise GrantExpired(f"Grant {transaction_id} went into an allocation period that has ended; its credits "
                           "already expired.", transactionId=transaction_id)
    entry = await _move_bucket(session, team_id=team_id, type="void", bucket=bucket, delta=-amount,
                               description=reason, metadata={**(metadata or {}), "voids": transaction_id, "bucket": bucket})
    if entry is None:  # refused by the statement's guard: the bucket holds less than the grant
        current: Decimal = locked.allocation_credits if bucket == "allocation" else locked.bonus_credits
        raise _would_go_negative(
            bucket, current, -amount,
            f"Voiding grant {transaction_id} takes {amount} {bucket} credits but the bucket holds {current} "
            "(the rest was spent or is on hold); adjust the bucket instead.",
        )
    await _after_move(session, entry)
    return entry


async def open_balance(
    session: AsyncSession, *, team_id: uuid.UUID, next_replenishment_at: dt.datetime | None
) -> None:
    """Create a team's empty balance row (credits then arrive through ``grant``)."""
    await ledger.open_balance(session, team_id=team_id, next_replenishment_at=next_replenishment_at)


async def get_balance(session: AsyncSession, team_id: uuid.UUID) -> CreditBalance:
    """The team's balance as stored now (re-read: the ledger writes it with plain statements).
    Raises ``NotFound`` (team_not_found)."""
    balance = await session.get(CreditBalance, team_id, populate_existing=True)
    if balance is None:
        raise _no_balance()
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
