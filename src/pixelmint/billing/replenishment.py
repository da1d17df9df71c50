"""Self-hosted replenishment: teams whose ``next_replenishment_at`` has passed get their plan's
monthly credits (``credits.service.replenish``: the allocation left expires, the plan's amount
replaces it) and a next date 30 days after the previous one.

``replenish_due`` works in batches of ``batch_size`` teams, one transaction each: it picks due
balances with ``FOR UPDATE OF credit_balances SKIP LOCKED`` (any number of worker processes may
run it at once; each team is taken by one of them, and a row replenished by another process in
the meantime no longer matches ``next_replenishment_at <= now`` when re-checked under the lock),
then replenishes each. A team whose date lies several periods back (the service was down) is
replenished once, and its next date is the first ``previous + k × 30 days`` in the future: it
catches up on the schedule without being granted twice. A plan without monthly credits (free)
gets a replenishment of 0 — its allocation expires — and nothing scheduled after it.

Teams with a Stripe subscription (``teams.stripe_subscription_id``) are left alone: their
invoices replenish them (``billing/stripe_events.py``), and a failed payment must not be
replenished by the schedule.

``ReplenishTask`` runs it periodically inside worker processes (started by ``api/runtime.py``,
every ``PIXELMINT_REPLENISH_INTERVAL_SECONDS``); ``pixelmint admin replenish-due`` runs it once.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from contextlib import suppress
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import structlog
from sqlalchemy import text

from pixelmint.accounts.service import REPLENISHMENT_PERIOD
from pixelmint.credits import service as credits
from pixelmint.kit.db import Database

log = structlog.get_logger(__name__)

_TAKE_DUE = text("""
SELECT b.team_id, b.next_replenishment_at, t.plan_code, p.monthly_credits
  FROM credit_balances b
  JOIN teams t ON t.id = b.team_id
  JOIN plans p ON p.code = t.plan_code
 WHERE b.next_replenishment_at <= :now AND t.stripe_subscription_id IS NULL
 ORDER BY b.next_replenishment_at
 LIMIT :limit
   FOR UPDATE OF b SKIP LOCKED
""")


def next_after(due: dt.datetime, now: dt.datetime, period: dt.timedelta = REPLENISHMENT_PERIOD) -> dt.datetime:
    """The first ``due + k × period`` (k ≥ 1) later than ``now``: the schedule continues from the
    date that was due, whatever the delay."""
    return due + ((now - due) // period + 1) * period


@dataclass
class ReplenishReport:
    """What one ``replenish_due`` run did. ``teams``: teams replenished; ``credits_granted`` /
    ``credits_expired``: sums over them (credits); ``missed_periods``: periods skipped by teams
    that were more than one period late (not granted); ``batches``: committed transactions."""

    teams: int = 0
    credits_granted: Decimal = Decimal("0.00")
    credits_expired: Decimal = Decimal("0.00")
    missed_periods: int = 0
    batches: int = 0
    elapsed_seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, camelCase (as the API and ``--json`` print it)."""
        return {
            "teams": self.teams, "creditsGranted": float(self.credits_granted),
            "creditsExpired": float(self.credits_expired), "missedPeriods": self.missed_periods,
            "batches": self.batches, "elapsedSeconds": round(self.elapsed_seconds, 3),
        }

    def summary(self) -> str:
        return (f"replenished {self.teams} team(s): {self.credits_granted} credits granted, "
                f"{self.credits_expired} expired, {self.missed_periods} missed period(s) skipped, "
                f"{self.batches} batch(es), {self.elapsed_seconds:.1f}s")


async def replenish_due(
    db: Database,
    *,
    now: dt.datetime | None = None,
    batch_size: int = 100,
    stop: asyncio.Event | None = None,
) -> ReplenishReport:
    """Replenish every team (without a Stripe subscription) whose ``next_replenishment_at`` is at
    or before ``now`` (tz-aware; default: the current time) with its plan's ``monthly_credits``.

    Owns its transactions (one per batch of ``batch_size`` teams), like the job runner; ``stop``
    ends the run between batches. Returns a ``ReplenishReport``; raises ``ValueError`` for
    ``batch_size < 1``. A batch that fails is rolled back whole (earlier batches stay).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    cutoff = now or dt.datetime.now(dt.UTC)
    report = ReplenishReport()
    started = time.monotonic()
    while stop is None or not stop.is_set():
        async with db.transaction() as session:
            rows = (await session.execute(_TAKE_DUE, {"now": cutoff, "limit": batch_size})).all()
            for row in rows:
                monthly = Decimal(row.monthly_credits)
                following = next_after(row.next_replenishment_at, cutoff) if monthly > 0 else None
                missed = (cutoff - row.next_replenishment_at) // REPLENISHMENT_PERIOD
                done = await credits.replenish(
                    session, team_id=row.team_id, amount=monthly, next_replenishment_at=following,
                    reason=f"monthly replenishment ({row.plan_code} plan)",
                    metadata={"source": "schedule", "plan": row.plan_code,
                              "due": row.next_replenishment_at.isoformat(), "missedPeriods": missed},
                )
                report.teams += 1
                report.credits_granted += done.granted
                report.credits_expired += done.expired
                report.missed_periods += missed
        if not rows:
            break
        report.batches += 1
        if len(rows) < batch_size:
            break  # the rest (if any) is locked by another process: it replenishes them
    report.elapsed_seconds = time.monotonic() - started
    return report


class ReplenishTask:
    """Runs ``replenish_due`` every ``interval_seconds`` until ``stop()`` (the first run at once).

    Started by ``Runtime.start`` in processes that run a worker; any number may run (``SKIP
    LOCKED`` shares the due teams out). Errors are logged and retried at the next interval.
    ``run_once`` is one pass (what tests call); ``last_report`` the latest report.
    """

    def __init__(self, db: Database, *, interval_seconds: float, batch_size: int = 100) -> None:
        self.db = db
        self.interval_seconds = interval_seconds
        self.batch_size = batch_size
        self.last_report: ReplenishReport | None = None
        self._stopping = asyncio.Event()

    async def run_once(self, *, now: dt.datetime | None = None) -> ReplenishReport:
        report = await replenish_due(self.db, now=now, batch_size=self.batch_size, stop=self._stopping)
        self.last_report = report
        if report.teams:
            log.info("replenished_due_teams", **report.as_dict())
        return report

    async def run(self) -> None:
        while not self._stopping.is_set():
            try:
                await self.run_once()
            except Exception:
                log.exception("replenish_due_failed")
            with suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.interval_seconds)

    def stop(self) -> None:
        """Ask the loop to end after the current batch."""
        self._stopping.set()
