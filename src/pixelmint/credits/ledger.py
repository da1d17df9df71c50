"""The ledger writer: the only code that writes ``credit_balances``, ``credit_transactions`` and
``credit_reservations``. ``credits/service.py`` holds the rules (validation, errors, fail-open) and
calls these functions; nothing else writes the three tables.

Every balance change is ONE SQL statement, of one shape::

    bal  lock the team's balance row (FOR UPDATE) — the newest version, whatever we waited for
    d    the change: the locked values, the signed deltas and the ledger row's fields, computed
         from ``bal`` and the parameters; no row when the change is refused (its WHERE is the
         guard: enough credits, a bucket that stays >= 0, a captured amount within the hold)
    upd  UPDATE credit_balances SET column = d.column + d.delta …     (_APPLY, shared)
    led  INSERT INTO credit_transactions … the deltas and the balance as written, RETURNING *

The batches are the exception to one row per statement: several consumes (``CONSUME_BATCH``,
``credits/coalesce.py``) or holds (``reserve_batch_ctes``, ``flows/generation.py``) of one team —
the requests that arrived while another was in flight — in one statement, each with its own row,
chained in arrival order; both are built by ``_spend_batch_ctes``. Replenish, which writes two
rows (``expire``, ``replenish``) and moves the allocation period, has its own UPDATE and INSERT of
the same kind.

Why one text statement each, rather than SQLAlchemy Core constructs or the ORM (which grant,
adjust, void and replenish used before: a locking SELECT, then a flush of an UPDATE and INSERTs):
the hot paths (``reserve`` for every generation, ``consume`` for every app charge; see
benchmarks/bench_generate.py and bench_consume.py) must lock, check, update and append in one
round trip, so that the hot row is locked for as short as possible; that is a chain of CTEs,
which reads plainly as SQL and would be longer, not safer, as Core expressions. Every statement is
a module constant composed once at import from the shared fragments below, so it is compiled
once, and the benchmarks' bare baselines run exactly the service's text.

The new balance is written as ``d.<column> + d.<delta>`` — the locked values plus the deltas the
ledger row records — never clamped: a wrong delta makes a bucket negative and the table's CHECK
constraints (``ck_credit_balances_*_nonnegative``) refuse the statement (tests/credits/test_ledger.py
shows one). Computing from ``bal`` rather than from the UPDATE's own row also keeps those CHECKs
from failing spuriously when the statement waited for the lock: PostgreSQL first evaluates the
UPDATE against the row version of the statement's snapshot, then re-evaluates it against the
newest one (EvalPlanQual); ``d`` already holds the newest values either way.

Callers own the transaction; nothing here commits. The credit counters of ``kit/metrics.py``
(reserved, captured, released, consumed, by operation) are counted here, when the transaction commits.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from dataclasses import dataclass
from decimal import Decimal
from functools import partial
from typing import Any

from sqlalchemy import Row, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from pixelmint.credits.tables import CreditTransaction
from pixelmint.kit import metrics
from pixelmint.kit.db import DriverStatement, driver_connection

# The ledger row's descriptive fields, from parameters (the ``d`` CTEs of reserve, consume, move).
_ROW_FIELDS = """
           CAST(:operation AS text) AS operation, CAST(:job_id AS uuid) AS job_id,
           CAST(:reservation_id AS uuid) AS reservation_id, CAST(:app_id AS uuid) AS app_id,
           CAST(:user_id AS uuid) AS user_id, left(CAST(:description AS text), 500) AS description,
           CAST(:metadata AS jsonb) AS metadata"""

def _lock(gate: str = "") -> str:
    """The ``bal`` CTE; ``gate``: a further condition (`` AND …``) under which the row is taken."""
    return """bal AS (
    SELECT team_id, allocation_credits, bonus_credits, reserved_credits, total_allocated, allocation_period,
           low_balance_threshold
      FROM credit_balances WHERE team_id = :team_id""" + gate + """ FOR UPDATE
),"""


_LOCK = "\nWITH " + _lock()

# Apply ``d`` (at most one row) to the balance and append its ledger row.
_APPLY = """
upd AS (
    UPDATE credit_balances b
       SET allocation_credits = d.allocation_credits + d.allocation_delta,
           bonus_credits = d.bonus_credits + d.bonus_delta,
           reserved_credits = d.reserved_credits + d.reserved_delta,
           total_allocated = d.total_allocated + d.total_allocated_delta,
           updated_at = now()
      FROM d WHERE b.team_id = d.team_id
    RETURNING b.allocation_credits, b.bonus_credits, b.reserved_credits
), led AS (
    INSERT INTO credit_transactions (team_id, type, amount, allocation_delta, bonus_delta, reserved_delta,
                                     allocation_after, bonus_after, reserved_after, operation, job_id,
                                     reservation_id, app_id, user_id, description, metadata)
    SELECT d.team_id, d.type, d.amount, d.allocation_delta, d.bonus_delta, d.reserved_delta,
           upd.allocation_credits, upd.bonus_credits, upd.reserved_credits, d.operation, d.job_id,
           d.reservation_id, d.app_id, d.user_id, d.description, d.metadata
      FROM d, upd
    RETURNING *
)"""

# Spend ``:amount`` from the locked balance, allocation first, when it covers it.
_SPLIT = """
d AS (
    SELECT team_id, allocation_credits, bonus_credits, reserved_credits, total_allocated, allocation_period,
           -LEAST(allocation_credits, CAST(:amount AS numeric)) AS allocation_delta,
           LEAST(allocation_credits, CAST(:amount AS numeric)) - CAST(:amount AS numeric) AS bonus_delta,
           CAST(:reserved_delta AS numeric) AS reserved_delta, 0 AS total_allocated_delta,
           CAST(:type AS text) AS type, CAST(:amount AS numeric) AS amount,""" + _ROW_FIELDS + """
      FROM bal WHERE allocation_credits + bonus_credits >= CAST(:amount AS numeric)
),"""

# A spend that is its own transaction must not cross the team's low-balance threshold: its
# ``credits.low_balance`` webhook is queued in the spending transaction (credits/service.py).
_NOT_CROSSING = """
       AND (low_balance_threshold IS NULL
            OR NOT (allocation_credits + bonus_credits - CAST(:amount AS numeric) < low_balance_threshold
                    AND low_balance_threshold <= allocation_credits + bonus_credits))"""

_HOLD = """, res AS (
    INSERT INTO credit_reservations (id, team_id, job_id, app_id, operation, amount, from_allocation, from_bonus,
                                     expires_at, allocation_period)
    SELECT reservation_id, team_id, job_id, app_id, operation, amount, -allocation_delta, -bonus_delta,
           :expires_at, allocation_period
      FROM d
)"""

RESERVE = text(_LOCK + _SPLIT + _APPLY + _HOLD + """
SELECT bal.allocation_credits + bal.bonus_credits AS available, -d.allocation_delta AS from_allocation,
       -d.bonus_delta AS from_bonus, bal.low_balance_threshold AS threshold
  FROM bal LEFT JOIN d ON true
""")

_CONSUMED = """
SELECT bal.allocation_credits + bal.bonus_credits AS available, led.id AS transaction_id,
       led.allocation_after + led.bonus_after AS after, bal.low_balance_threshold AS threshold
  FROM bal LEFT JOIN led ON true
"""
CONSUME = text(_LOCK + _SPLIT + _APPLY + _CONSUMED)
# CONSUME as a transaction of its own (``consume_alone``): it also refuses to cross the threshold.
CONSUME_ALONE = text(_LOCK + _SPLIT.replace("\n),", _NOT_CROSSING + "\n),", 1) + _APPLY + _CONSUMED)
_CONSUME_ALONE_SQL = DriverStatement(CONSUME_ALONE)

# Settle a held reservation. The guard is the reservation UPDATE's WHERE: still held, and the
# captured amount (default: all of it) within 0..amount. Capture keeps ``captured`` as spent and
# returns the rest, last-burned bucket first (bonus, then allocation); release is a capture of 0.
# Expired credits are never resurrected: a hold taken in an earlier allocation period than the
# locked balance's (a replenishment came while it was held) gets no allocation back — reserved
# goes down, allocation does not go up — and the ledger row says so in its description and
# ``metadata.expiredAllocation``. The ledger row carries the hold's job, app and operation.
_SETTLE = text("""
WITH r AS (
    UPDATE credit_reservations
       SET status = CAST(:status AS text), settled_at = now(),
           captured_amount = COALESCE(CAST(:captured AS numeric), amount)
     WHERE id = :reservation_id AND status = 'held'
       AND COALESCE(CAST(:captured AS numeric), amount) BETWEEN 0 AND amount
    RETURNING id, team_id, job_id, app_id, operation, amount, captured_amount, from_allocation, from_bonus,
              allocation_period
), bal AS (
    SELECT team_id, allocation_credits, bonus_credits, reserved_credits, total_allocated, allocation_period
      FROM credit_balances WHERE team_id = (SELECT team_id FROM r) FOR UPDATE
), back AS (
    SELECT LEAST(r.from_bonus, r.amount - r.captured_amount) AS to_bonus,
           r.amount - r.captured_amount - LEAST(r.from_bonus, r.amount - r.captured_amount) AS unused_allocation,
           bal.allocation_period = r.allocation_period AS same_period
      FROM r, bal
), d AS (
    SELECT bal.team_id, bal.allocation_credits, bal.bonus_credits, bal.reserved_credits, bal.total_allocated,
           CASE WHEN back.same_period THEN back.unused_allocation ELSE 0 END AS allocation_delta,
           back.to_bonus AS bonus_delta, -r.amount AS reserved_delta, 0 AS total_allocated_delta,
           CAST(:ledger_type AS text) AS type,
           CASE WHEN CAST(:ledger_type AS text) = 'capture' THEN r.captured_amount ELSE r.amount END AS amount,
           r.operation, r.job_id, r.id AS reservation_id, r.app_id, CAST(NULL AS uuid) AS user_id,
           CASE WHEN back.same_period OR back.unused_allocation = 0 THEN left(CAST(:description AS text), 500)
                ELSE left(concat_ws('; ', CAST(:description AS text), CAST(back.unused_allocation AS text)
                                    || ' allocation credits not returned: their allocation period has expired'),
                          500) END AS description,
           CASE WHEN back.same_period OR back.unused_allocation = 0 THEN CAST('{}' AS jsonb)
                ELSE jsonb_build_object('expiredAllocation', CAST(back.unused_allocation AS text)) END AS metadata
      FROM r, bal, back
),""" + _APPLY + """
SELECT (SELECT captured_amount FROM r) AS captured,
       (SELECT amount FROM credit_reservations WHERE id = :reservation_id AND status = 'held') AS held,
       (SELECT amount FROM r) AS settled_amount, (SELECT operation FROM r) AS operation
""")

# Add signed deltas to the buckets (grant, adjust, void, fail-open cover) unless one would go
# below zero.
_MOVE = text(_LOCK + """
d AS (
    SELECT team_id, allocation_credits, bonus_credits, reserved_credits, total_allocated,
           CAST(:allocation_delta AS numeric) AS allocation_delta, CAST(:bonus_delta AS numeric) AS bonus_delta,
           0 AS reserved_delta, CAST(:total_allocated_delta AS numeric) AS total_allocated_delta,
           CAST(:type AS text) AS type, CAST(:amount AS numeric) AS amount,""" + _ROW_FIELDS + """
      FROM bal
     WHERE allocation_credits + CAST(:allocation_delta AS numeric) >= 0
       AND bonus_credits + CAST(:bonus_delta AS numeric) >= 0
),""" + _APPLY + """
SELECT * FROM led
""")

# A new allocation period: an ``expire`` row takes the allocation left to 0 (none when nothing is
# left), a ``replenish`` row sets it to ``:amount``; the period goes up by one. ``heldAllocation``
# is allocation of the ended period still on hold. The caller has locked the balance row in an
# earlier statement, so this statement's snapshot sees every hold committed before the lock.
_REPLENISH = text(_LOCK + """
held AS (
    SELECT COALESCE(sum(r.from_allocation), 0) AS held
      FROM credit_reservations r, bal
     WHERE r.team_id = bal.team_id AND r.status = 'held' AND r.allocation_period = bal.allocation_period
), upd AS (
    UPDATE credit_balances b
       SET allocation_credits = CAST(:amount AS numeric),
           total_allocated = bal.total_allocated + CAST(:amount AS numeric),
           allocation_period = bal.allocation_period + 1, allocation_period_started_at = now(),
           next_replenishment_at = :next_replenishment_at, updated_at = now()
      FROM bal WHERE b.team_id = bal.team_id
    RETURNING b.allocation_credits, b.bonus_credits, b.reserved_credits, b.allocation_period
), led AS (
    INSERT INTO credit_transactions (team_id, type, amount, allocation_delta, allocation_after, bonus_after,
                                     reserved_after, description, metadata)
    SELECT * FROM (
        SELECT bal.team_id, 'expire', bal.allocation_credits, -bal.allocation_credits, CAST(0 AS numeric),
               bal.bonus_credits, bal.reserved_credits,
               left('allocation of period ' || bal.allocation_period || ' expired at replenishment: '
                    || CAST(:reason AS text), 500),
               CAST(:metadata AS jsonb) || jsonb_build_object('allocationPeriod', bal.allocation_period,
                                                              'heldAllocation', CAST(held.held AS text))
          FROM bal, held WHERE bal.allocation_credits > 0
        UNION ALL
        SELECT bal.team_id, 'replenish', CAST(:amount AS numeric), CAST(:amount AS numeric), upd.allocation_credits,
               upd.bonus_credits, upd.reserved_credits, left(CAST(:reason AS text), 500),
               CAST(:metadata AS jsonb) || jsonb_build_object('allocationPeriod', upd.allocation_period,
                                                              'nextReplenishmentAt', CAST(:next_iso AS text))
          FROM bal, upd
    ) rows
    RETURNING id, type
)
SELECT bal.allocation_credits AS expired, bal.allocation_period + 1 AS allocation_period, held.held,
       (SELECT id FROM led WHERE type = 'expire') AS expire_id,
       (SELECT id FROM led WHERE type = 'replenish') AS replenish_id
  FROM bal, held
""")



def reserve_ctes(gate: str, *, alone: bool = False) -> str:
    """RESERVE's CTEs (``bal``, ``d``: the change, none when refused, ``upd``, ``led``, ``res``),
    for a statement that reserves as one of its steps (``flows/generation.py``: free generation,
    reservation and enqueue in one statement). ``gate``: a SQL condition on the caller's earlier
    CTEs; where it is false the balance row is neither locked nor changed. ``alone``: for a
    statement that is its own transaction, which must not cross the low-balance threshold (as
    :func:`consume_alone`). The same parameters as :func:`reserve`; count a reservation made this
    way with :func:`count_reserved`."""
    split = _SPLIT.replace("\n),", _NOT_CROSSING + "\n),", 1) if alone else _SPLIT
    return _lock(f" AND ({gate})") + split + _APPLY + _HOLD


def _spend_batch_ctes(source: str, *, hold: bool, admit: str = "true") -> str:
    """Several spends from the balance of the team ``:team_id`` in one statement (the requests that
    queued while one was in flight, ``kit/coalesce.py``), as CTEs of a statement that is its own
    transaction. ``source``: the caller's CTE of requests, one row each with ``ord`` (arrival
    order) and ``amount`` (> 0), its other columns carried along; ``admit``: a further SQL
    condition on ``run`` (``n``: the 1-based rank in ``source``) that only gets stricter along
    ``ord``; ``hold``: the spent credits move to ``reserved_credits`` (reserve) rather than leave
    the balance (consume).

    CTEs: ``run`` (the running sum ``cum``), ``bal`` (the locked balance, ``available`` =
    allocation + bonus), ``split``/``d``: the admitted spends — the prefix the balance covers
    without crossing the low-balance threshold, where ``admit`` holds (both conditions only get
    stricter along ``ord``) — with their signed deltas (allocation burns first) and, as running
    sums from the locked values, the balance after each (``allocation_after``, ``bonus_after``,
    ``reserved_after``); ``total`` (the deltas summed, ``spent``) and ``upd``, which writes the
    locked values plus the deltas, never clamped (as ``_APPLY``). The caller appends the ledger
    rows (``led``, in ``ord`` order) and anything else each spend writes."""
    reserved_after = "reserved_credits + sum(amount) OVER w" if hold else "reserved_credits"
    set_reserved = "reserved_credits = bal.reserved_credits + total.spent, " if hold else ""
    return f"""run AS (
    SELECT s.*, sum(s.amount) OVER w AS cum, row_number() OVER w AS n
      FROM {source} s WINDOW w AS (ORDER BY s.ord ROWS UNBOUNDED PRECEDING)
), bal AS (
    SELECT team_id, allocation_credits, bonus_credits, reserved_credits, allocation_period, low_balance_threshold,
           allocation_credits + bonus_credits AS available
      FROM credit_balances WHERE team_id = :team_id FOR UPDATE
), split AS (
    SELECT run.*, bal.team_id, bal.allocation_credits, bal.bonus_credits, bal.reserved_credits, bal.allocation_period,
           -LEAST(GREATEST(bal.allocation_credits - (run.cum - run.amount), 0), run.amount) AS allocation_delta
      FROM run, bal
     WHERE run.cum <= bal.available
       AND (bal.low_balance_threshold IS NULL OR bal.available < bal.low_balance_threshold
            OR bal.available - run.cum >= bal.low_balance_threshold)
       AND ({admit})
), d AS (
    SELECT split.*, -amount - allocation_delta AS bonus_delta,
           allocation_credits + sum(allocation_delta) OVER w AS allocation_after,
           bonus_credits + sum(-amount - allocation_delta) OVER w AS bonus_after,
           {reserved_after} AS reserved_after
      FROM split WINDOW w AS (ORDER BY ord ROWS UNBOUNDED PRECEDING)
), total AS (
    SELECT team_id, sum(allocation_delta) AS allocation_delta, sum(bonus_delta) AS bonus_delta, sum(amount) AS spent
      FROM d GROUP BY team_id
), upd AS (
    UPDATE credit_balances b
       SET allocation_credits = bal.allocation_credits + total.allocation_delta,
           bonus_credits = bal.bonus_credits + total.bonus_delta, {set_reserved}updated_at = now()
      FROM bal, total WHERE b.team_id = bal.team_id
    RETURNING b.team_id
)"""


def reserve_batch_ctes(source: str, admit: str) -> str:
    """RESERVE for several holds on the team ``:team_id`` at once (``flows/generation.py``: the paid
    generations that queued while one was in flight): the CTEs of :func:`_spend_batch_ctes`
    (``source``, ``admit`` as there; ``source`` rows also carry ``job_id``, ``reservation_id`` and
    ``user_id``; ``d``: the admitted holds), then ``res`` (one reservation each, no expiry) and
    ``led`` (one ``reserve`` row each, in arrival order). ``:operation``: the holds' operation.
    Count each with :func:`count_reserved`."""
    return _spend_batch_ctes(source, hold=True, admit=admit) + """, res AS (
    INSERT INTO credit_reservations (id, team_id, job_id, operation, amount, from_allocation, from_bonus,
                                     allocation_period)
    SELECT reservation_id, team_id, job_id, CAST(:operation AS text), amount, -allocation_delta, -bonus_delta,
           allocation_period
      FROM d
), led AS (
    INSERT INTO credit_transactions (team_id, type, amount, allocation_delta, bonus_delta, reserved_delta,
                                     allocation_after, bonus_after, reserved_after, operation, job_id,
                                     reservation_id, user_id)
    SELECT d.team_id, 'reserve', d.amount, d.allocation_delta, d.bonus_delta, d.amount, d.allocation_after,
           d.bonus_after, d.reserved_after, CAST(:operation AS text), d.job_id, d.reservation_id, d.user_id
      FROM d, upd ORDER BY d.ord
)"""


def count_reserved(session: AsyncSession | None, operation: str | None, amount: Decimal) -> None:
    """Count a reservation made by a statement built with :func:`reserve_ctes` (``kit/metrics.py``)
    when ``session`` commits; ``None``: it has committed."""
    if session is None:
        metrics.credits_reserved.labels(operation=operation or "none").inc(float(amount))
    else:
        _count(session, metrics.credits_reserved, operation, amount)


_LOCK_ONLY = text("SELECT allocation_credits, bonus_credits FROM credit_balances WHERE team_id = :team_id FOR UPDATE")


def _row_fields(
    *, operation: str | None = None, job_id: uuid.UUID | None = None, reservation_id: uuid.UUID | None = None,
    app_id: uuid.UUID | None = None, user_id: uuid.UUID | None = None, description: str | None = None,
    metadata: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {"operation": operation, "job_id": job_id, "reservation_id": reservation_id, "app_id": app_id,
            "user_id": user_id, "description": description, "metadata": json.dumps(metadata or {})}


def _count(session: AsyncSession, counter: Any, operation: str | None, amount: Decimal) -> None:
    """Add ``amount`` credits to ``counter`` (``kit/metrics.py``) when the transaction commits."""
    if amount:
        metrics.after_commit(session, partial(counter.labels(operation=operation or "none").inc, float(amount)))


@dataclass(frozen=True)
class Spent:
    """What ``reserve`` / ``consume`` did. ``available``: allocation + bonus before (always set
    when the team has a balance); the rest is ``None`` when the team could not afford it.
    ``threshold``: the team's ``low_balance_threshold`` (``credits.low_balance`` webhooks)."""

    available: Decimal
    from_allocation: Decimal | None = None
    from_bonus: Decimal | None = None
    transaction_id: int | None = None
    available_after: Decimal | None = None
    threshold: Decimal | None = None


async def reserve(
    session: AsyncSession, *, team_id: uuid.UUID, amount: Decimal, reservation_id: uuid.UUID,
    expires_at: dt.datetime | None, **fields: Any,
) -> Spent | None:
    """Hold ``amount`` (allocation first): a ``reserve`` row and the reservation ``reservation_id``.
    ``None`` when the team has no balance; ``Spent.from_allocation is None`` when it cannot afford it
    (nothing written). ``fields``: the ledger row's job_id, app_id, user_id, operation, description."""
    row = (await session.execute(RESERVE, {
        "team_id": team_id, "amount": amount, "reserved_delta": amount, "type": "reserve", "expires_at": expires_at,
        **_row_fields(reservation_id=reservation_id, **fields),
    })).one_or_none()
    if row is not None and row.from_allocation is not None:
        _count(session, metrics.credits_reserved, fields.get("operation"), amount)
    return None if row is None else Spent(row.available, row.from_allocation, row.from_bonus, threshold=row.threshold)


async def consume(session: AsyncSession, *, team_id: uuid.UUID, amount: Decimal, **fields: Any) -> Spent | None:
    """Spend ``amount`` at once (allocation first): a ``consume`` row. ``None`` without a balance;
    ``Spent.transaction_id is None`` when the team cannot afford it (nothing written)."""
    row = (await session.execute(CONSUME, {
        "team_id": team_id, "amount": amount, "reserved_delta": 0, "type": "consume", **_row_fields(**fields),
    })).one_or_none()
    if row is not None and row.transaction_id is not None:
        _count(session, metrics.credits_consumed, fields.get("operation"), amount)
    return None if row is None else Spent(
        row.available, transaction_id=row.transaction_id, available_after=row.after, threshold=row.threshold
    )


async def consume_alone(session: AsyncSession, *, team_id: uuid.UUID, amount: Decimal, **fields: Any) -> Spent | None:
    """``consume`` as a transaction of its own, committed when this returns: ONE round trip (no
    BEGIN, no COMMIT; the balance row is locked only while the statement runs and its commit is
    flushed). Only for a session that has run nothing yet and whose caller writes nothing else with
    it (``credits.service.consume(alone=True)``). Refuses (``Spent.transaction_id is None``,
    nothing written) what ``consume`` refuses and also a charge that would take the balance from at
    least the team's low-balance threshold to below it."""
    values = {
        "team_id": team_id, "amount": amount, "reserved_delta": 0, "type": "consume", **_row_fields(**fields),
    }
    row = await _CONSUME_ALONE_SQL.fetchrow(await driver_connection(session), values)
    if row is None:
        return None
    if row["transaction_id"] is not None:  # committed already: count it now
        metrics.credits_consumed.labels(operation=fields.get("operation") or "none").inc(float(amount))
    return Spent(row["available"], transaction_id=row["transaction_id"], available_after=row["after"],
                 threshold=row["threshold"])


# CONSUME_ALONE for several charges on one team at once (``credits/coalesce.py``): one statement,
# its own transaction. ``req``: the charges in arrival order (``ord``); the spends of
# ``_spend_batch_ctes`` (``d``: the admitted prefix, the balance after each); ``led`` appends one
# ``consume`` row per admitted charge in arrival order (ids ascend with ``ord``: the identity is
# drawn above the sorted SELECT), so the k-th id is the k-th charge. One result row per charge, in
# order: ``available`` before the batch (NULL: no balance), ``remaining`` after it, and the
# charge's ledger row and balance after it when admitted.
CONSUME_BATCH = text("""
WITH req AS (
    SELECT r.*
      FROM unnest(CAST(:amounts AS numeric[]), CAST(:operations AS text[]), CAST(:app_ids AS uuid[]),
                  CAST(:user_ids AS uuid[]), CAST(:descriptions AS text[]), CAST(:metadata AS text[]))
           WITH ORDINALITY AS r(amount, operation, app_id, user_id, description, metadata, ord)
), """ + _spend_batch_ctes("req", hold=False) + """, led AS (
    INSERT INTO credit_transactions (team_id, type, amount, allocation_delta, bonus_delta, reserved_delta,
                                     allocation_after, bonus_after, reserved_after, operation, app_id, user_id,
                                     description, metadata)
    SELECT d.team_id, 'consume', d.amount, d.allocation_delta, d.bonus_delta, 0, d.allocation_after, d.bonus_after,
           d.reserved_after, d.operation, d.app_id, d.user_id, left(d.description, 500), CAST(d.metadata AS jsonb)
      FROM d, upd ORDER BY d.ord
    RETURNING id, allocation_after + bonus_after AS after
)
SELECT bal.available, bal.available - COALESCE((SELECT spent FROM total), 0) AS remaining,
       bal.low_balance_threshold AS threshold, l.id AS transaction_id, l.after
  FROM req LEFT JOIN bal ON true
  LEFT JOIN (SELECT id, after, row_number() OVER (ORDER BY id) AS ord FROM led) l ON l.ord = req.ord
 ORDER BY req.ord
""")
_CONSUME_BATCH_SQL = DriverStatement(CONSUME_BATCH)


@dataclass(frozen=True)
class Charge:
    """One consume of a batch (``consume_batch``): ``amount`` credits (> 0) and its ledger row's
    fields."""

    amount: Decimal
    operation: str | None = None
    app_id: uuid.UUID | None = None
    user_id: uuid.UUID | None = None
    description: str | None = None
    metadata: dict[str, Any] | None = None


async def consume_batch(driver: Any, team_id: uuid.UUID, charges: list[Charge]) -> list[Spent] | None:
    """``consume_alone`` for several charges on one team, in ONE statement that is its own
    transaction (``CONSUME_BATCH``), on ``driver`` (an asyncpg connection outside a transaction),
    committed when this returns. Admits the longest prefix of ``charges`` (arrival order) that the
    balance covers without crossing the team's low-balance threshold: one ``consume`` row each,
    chained in order. Returns one ``Spent`` per charge, in order: admitted (``transaction_id``,
    ``available`` before and ``available_after`` it) or not (``transaction_id is None``,
    ``available``: the balance after the admitted ones, nothing written for it); ``None`` when
    the team has no balance."""
    values = {
        "team_id": team_id, "amounts": [c.amount for c in charges], "operations": [c.operation for c in charges],
        "app_ids": [c.app_id for c in charges], "user_ids": [c.user_id for c in charges],
        "descriptions": [c.description for c in charges],
        "metadata": [json.dumps(c.metadata or {}) for c in charges],
    }
    rows = await _CONSUME_BATCH_SQL.fetch(driver, values)
    if not rows or rows[0]["available"] is None:
        return None
    spent: list[Spent] = []
    for charge, row in zip(charges, rows, strict=True):
        if row["transaction_id"] is None:
            spent.append(Spent(row["remaining"], threshold=row["threshold"]))
            continue
        metrics.credits_consumed.labels(operation=charge.operation or "none").inc(float(charge.amount))
        spent.append(Spent(row["after"] + charge.amount, transaction_id=row["transaction_id"],
                           available_after=row["after"], threshold=row["threshold"]))
    return spent


@dataclass(frozen=True)
class Settled:
    """``captured``: credits charged (0 for a release), ``None`` when nothing was settled; ``held``:
    the reservation's amount when, as this statement began, it was still held (else ``None``)."""

    captured: Decimal | None
    held: Decimal | None


async def settle(
    session: AsyncSession, reservation_id: uuid.UUID, *, release: bool, captured: Decimal | None = None,
    description: str | None,
) -> Settled:
    """Settle a held reservation: status, balance and one ledger row in one statement. A capture
    charges ``captured`` (``None``: all of it) with a ``capture`` row; a release (``captured``
    ignored) gives everything back with a ``release`` row."""
    row = (await session.execute(_SETTLE, {
        "reservation_id": reservation_id, "captured": Decimal(0) if release else captured, "description": description,
        "status": "released" if release else "captured", "ledger_type": "release" if release else "capture",
    })).one()
    if row.captured is not None:  # settled now: count the charge and what went back
        _count(session, metrics.credits_captured, row.operation, row.captured)
        _count(session, metrics.credits_released, row.operation, row.settled_amount - row.captured)
    return Settled(row.captured, row.held)


async def move(
    session: AsyncSession, *, team_id: uuid.UUID, type: str, amount: Decimal, allocation_delta: Decimal = Decimal(0),
    bonus_delta: Decimal = Decimal(0), total_allocated_delta: Decimal = Decimal(0), description: str | None = None,
    metadata: dict[str, Any] | None = None,
) -> CreditTransaction | None:
    """Add the signed deltas to the buckets and append a ``type`` row (grant, adjust, void).
    ``None`` (nothing written) when the team has no balance or a bucket would go below zero."""
    return await session.scalar(
        select(CreditTransaction).from_statement(_MOVE).execution_options(populate_existing=True),
        {"team_id": team_id, "type": type, "amount": amount, "allocation_delta": allocation_delta,
         "bonus_delta": bonus_delta, "total_allocated_delta": total_allocated_delta,
         **_row_fields(description=description, metadata=metadata)},
    )


async def lock(session: AsyncSession, team_id: uuid.UUID) -> Row[Any] | None:
    """Lock the team's balance row until the transaction ends; its allocation and bonus credits, or
    ``None`` without a balance."""
    return (await session.execute(_LOCK_ONLY, {"team_id": team_id})).one_or_none()


@dataclass(frozen=True)
class Replenished:
    expired: Decimal
    held_allocation: Decimal
    allocation_period: int
    expire_transaction_id: int | None
    replenish_transaction_id: int


async def replenish(
    session: AsyncSession, *, team_id: uuid.UUID, amount: Decimal, next_replenishment_at: dt.datetime | None,
    reason: str, metadata: dict[str, Any] | None,
) -> Replenished | None:
    """Start a new allocation period (see ``_REPLENISH``). ``None`` when the team has no balance."""
    if await lock(session, team_id) is None:
        return None
    row = (await session.execute(_REPLENISH, {
        "team_id": team_id, "amount": amount, "next_replenishment_at": next_replenishment_at, "reason": reason,
        "metadata": json.dumps(metadata or {}),
        "next_iso": next_replenishment_at.isoformat() if next_replenishment_at else None,
    })).one()
    return Replenished(row.expired, row.held, row.allocation_period, row.expire_id, row.replenish_id)


async def set_next_replenishment(session: AsyncSession, *, team_id: uuid.UUID, at: dt.datetime | None) -> bool:
    """Schedule the team's next replenishment (no ledger row: no credits move). ``False`` without a balance."""
    return await session.scalar(
        text("UPDATE credit_balances SET next_replenishment_at = :at WHERE team_id = :team_id RETURNING true"),
        {"team_id": team_id, "at": at},
    ) is not None


async def open_balance(session: AsyncSession, *, team_id: uuid.UUID, next_replenishment_at: dt.datetime | None) -> None:
    """Insert the team's empty balance row."""
    await session.execute(
        text("INSERT INTO credit_balances (team_id, next_replenishment_at) VALUES (:team_id, :at)"),
        {"team_id": team_id, "at": next_replenishment_at},
    )
