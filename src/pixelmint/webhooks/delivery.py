"""Sending webhooks: the delivery loop, claimed from PostgreSQL, signed per Standard Webhooks.

The queue is ``webhook_deliveries``, not the jobs table. A delivery is not a job: it must not take
one of the team's plan concurrency slots (``team_dispatch``) nor hold or spend credits, its retries
run over a day (the jobs' retries back off in seconds and their attempts are bounded by the
plan's work), it has no provider, lease heartbeat or job events, and the team's jobs list must not
fill with them. The same pattern serves it, though (River, Oban, ``jobs/queue.py``): rows written
in the transaction of the change that causes them, claimed with ``FOR UPDATE SKIP LOCKED`` (any
number of processes may run the loop), woken by ``NOTIFY pixelmint_webhooks`` with polling as the
fallback.

A claim adds one to ``attempts`` and moves ``next_attempt_at`` past the attempt's timeout: that is
the lease. The HTTP request runs outside any transaction; its outcome is recorded in a short one,
fenced on the attempt number (a delivery whose lease ran out and was claimed again is recorded only
by its newer attempt).

Rules (``../shared/reference/dashboard-and-compat.md`` §E; Svix's retry schedule,
https://docs.svix.com/retries):

- Headers ``webhook-id`` (``msg_<message id>``, the same on every attempt and resend),
  ``webhook-timestamp`` (Unix seconds of the attempt), ``webhook-signature`` (``v1,<base64>``;
  two of them, space-separated, while a rotated-out secret overlaps), signed with the
  ``standardwebhooks`` library over the exact body sent, with a UTC-aware time (the library
  mislabels any other).
- A 2xx answer within ``PIXELMINT_WEBHOOK_TIMEOUT_SECONDS`` (15 s) is success. Redirects are not
  followed and are failures. 410 Gone fails the delivery and disables the endpoint. Anything else
  (another status, a timeout, a refused or unreachable address) is retried after the next delay
  of ``PIXELMINT_WEBHOOK_RETRY_SCHEDULE_SECONDS`` (±10 % jitter; at least ``Retry-After`` when
  the answer has one), and fails once the schedule is spent.
- An endpoint whose attempts have failed without a success for
  ``PIXELMINT_WEBHOOK_DISABLE_AFTER_SECONDS`` (5 days) is disabled. A disabled endpoint's pending
  deliveries fail without a request.
- Every connection goes through the SSRF guard (``kit/netguard.PinnedTransport``) unless
  ``PIXELMINT_ALLOW_PRIVATE_URLS``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import email.utils
import random
import time
import uuid
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
import structlog
from sqlalchemy import text
from standardwebhooks import Webhook

from pixelmint.kit import metrics
from pixelmint.kit.db import Database, asyncpg_connect_kwargs
from pixelmint.kit.netguard import AddressNotAllowed, pinned_client
from pixelmint.settings import Settings
from pixelmint.webhooks.service import CHANNEL, message_header_id

log = structlog.get_logger(__name__)

SNIPPET_BYTES = 1024
USER_AGENT = "Pixelmint-Webhooks/1"
MAX_RETRY_AFTER = 3600.0  # a longer Retry-After waits this long (or the schedule's longest delay)

_CLAIM = text("""
WITH due AS (
    SELECT id FROM webhook_deliveries
     WHERE status = 'pending' AND next_attempt_at <= now()
     ORDER BY next_attempt_at LIMIT :limit FOR UPDATE SKIP LOCKED
), claimed AS (
    UPDATE webhook_deliveries d SET attempts = d.attempts + 1, next_attempt_at = now() + make_interval(secs => :lease)
      FROM due WHERE d.id = due.id
    RETURNING d.id, d.message_id, d.endpoint_id, d.url, d.attempts
)
SELECT c.id, c.message_id, c.endpoint_id, c.attempts, COALESCE(e.url, c.url) AS url, CAST(m.payload AS text) AS body,
       COALESCE(e.secret, s.secret) AS secret,
       CASE WHEN e.previous_secret_expires_at > now() THEN e.previous_secret END AS previous_secret,
       COALESCE(e.enabled, true) AS enabled
  FROM claimed c
  JOIN webhook_messages m ON m.id = c.message_id
  LEFT JOIN webhook_endpoints e ON e.id = c.endpoint_id
  LEFT JOIN webhook_signing_secrets s ON s.team_id = m.team_id AND c.endpoint_id IS NULL
""")

_RECORD = text("""
WITH d AS (
    UPDATE webhook_deliveries
       SET status = :status, next_attempt_at = :next_attempt_at, last_attempt_at = now(),
           last_status_code = :status_code, last_response = :response, last_duration_ms = :duration_ms,
           last_error = :error
     WHERE id = :id AND attempts = :attempt AND status = 'pending'
    RETURNING id, endpoint_id
), a AS (
    INSERT INTO webhook_attempts (delivery_id, attempt, succeeded, status_code, response, duration_ms, error)
    SELECT id, :attempt, :succeeded, :status_code, :response, :duration_ms, :error FROM d
), e AS (
    UPDATE webhook_endpoints e
       SET failing_since = CASE WHEN CAST(:succeeded AS boolean) THEN NULL ELSE COALESCE(e.failing_since, now()) END,
           enabled = e.enabled AND NOT (CAST(:gone AS boolean) OR (NOT CAST(:succeeded AS boolean) AND COALESCE(
                         e.failing_since < now() - make_interval(secs => :disable_after), false))),
           disabled_reason = CASE
               WHEN NOT e.enabled THEN e.disabled_reason
               WHEN CAST(:gone AS boolean) THEN 'the endpoint answered 410 Gone'
               WHEN NOT CAST(:succeeded AS boolean) AND e.failing_since < now() - make_interval(secs => :disable_after)
                   THEN 'every attempt failed since ' || to_char(e.failing_since AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')
           END,
           updated_at = now()
      FROM d WHERE e.id = d.endpoint_id AND CAST(:counts AS boolean)
    RETURNING e.enabled
)
SELECT (SELECT count(*) FROM d) AS recorded, (SELECT bool_and(enabled) FROM e) AS endpoint_enabled
""")

_NEXT_DUE = text("""
SELECT EXTRACT(EPOCH FROM min(next_attempt_at) - now()) FROM webhook_deliveries WHERE status = 'pending'
""")


@dataclass(frozen=True)
class Claimed:
    id: uuid.UUID
    message_id: uuid.UUID
    endpoint_id: uuid.UUID | None
    attempt: int
    url: str
    body: str
    secret: str | None
    previous_secret: str | None
    enabled: bool


@dataclass
class Outcome:
    """One attempt: ``succeeded`` (2xx), ``gone`` (410), the status code and first KiB of the
    answer (``None`` without an answer), ``error`` (why it failed), ``retry_after`` (seconds)."""

    succeeded: bool
    status_code: int | None = None
    response: str | None = None
    duration_ms: int = 0
    error: str | None = None
    gone: bool = False
    retry_after: float | None = None
    counts: bool = True  # False: no request was made (endpoint disabled): not the endpoint's failure


def signature_headers(
    message_id: uuid.UUID, body: str, secrets: list[str], *, at: dt.datetime | None = None
) -> dict[str, str]:
    """The Standard Webhooks headers of ``body`` signed with each of ``secrets`` (``whsec_…``).
    ``at`` must be UTC-aware (default: now): ``standardwebhooks``' ``sign`` mislabels any other."""
    at = at or dt.datetime.now(dt.UTC)
    assert at.utcoffset() == dt.timedelta(0), "sign with a UTC time"
    webhook_id = message_header_id(message_id)
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": " ".join(Webhook(secret).sign(webhook_id, at, body) for secret in secrets),
    }


def _retry_after(value: str | None) -> float | None:
    """``Retry-After`` in seconds: a number of seconds or an HTTP date."""
    if not value:
        return None
    with suppress(ValueError):
        return max(0.0, float(value))
    with suppress(TypeError, ValueError, IndexError):
        when = email.utils.parsedate_to_datetime(value)
        return max(0.0, (when - dt.datetime.now(dt.UTC)).total_seconds())
    return None


async def attempt(client: httpx.AsyncClient, claimed: Claimed, *, timeout: float) -> Outcome:
    """POST the delivery's body to its URL, signed; the answer's outcome. Never raises for the
    receiver's faults."""
    if not claimed.enabled:
        return Outcome(False, error="the endpoint is disabled", counts=False)
    if not claimed.secret:
        return Outcome(False, error="no signing secret", counts=False)
    secrets = [claimed.secret] + ([claimed.previous_secret] if claimed.previous_secret else [])
    headers = {**signature_headers(claimed.message_id, claimed.body, secrets),
               "content-type": "application/json", "user-agent": USER_AGENT}
    started = time.monotonic()

    async def post() -> Outcome:
        async with client.stream("POST", claimed.url, content=claimed.body.encode(), headers=headers) as response:
            snippet = b""
            async for chunk in response.aiter_bytes():
                snippet += chunk
                if len(snippet) >= SNIPPET_BYTES:
                    break
            code = response.status_code
            outcome = Outcome(200 <= code < 300, code, snippet[:SNIPPET_BYTES].decode("utf-8", "replace"))
            if response.is_redirect:
                outcome.error = f"redirect to {response.headers.get('location', '?')[:300]} (not followed)"
            elif code == 410:
                outcome.gone, outcome.error = True, "410 Gone: the endpoint is disabled"
            elif not outcome.succeeded:
                outcome.error = f"HTTP {code}"
                outcome.retry_after = _retry_after(response.headers.get("retry-after"))
            return outcome

    try:
        outcome = await asyncio.wait_for(post(), timeout)
    except TimeoutError:
        outcome = Outcome(False, error=f"no answer within {timeout:g} s")
    except AddressNotAllowed as exc:
        outcome = Outcome(False, error=f"refused: {exc}")
    except (httpx.HTTPError, httpx.InvalidURL, ValueError) as exc:
        outcome = Outcome(False, error=f"{type(exc).__name__}: {exc}"[:500])
    outcome.duration_ms = int((time.monotonic() - started) * 1000)
    return outcome


def next_attempt_at(attempts: int, outcome: Outcome, schedule: list[float]) -> dt.datetime | None:
    """When to try again after ``attempts`` attempts ended with ``outcome``: ``None`` when it
    succeeded, the endpoint is gone or disabled, or the schedule is spent."""
    if outcome.succeeded or outcome.gone or not outcome.counts or attempts >= len(schedule):
        return None
    delay = schedule[attempts] * random.uniform(0.9, 1.1)
    if outcome.retry_after is not None:
        delay = max(delay, min(outcome.retry_after, max(*schedule, MAX_RETRY_AFTER)))
    return dt.datetime.now(dt.UTC) + dt.timedelta(seconds=delay)


def metric_outcome(claimed: Claimed, outcome: Outcome, endpoint_enabled: bool | None) -> str:
    """The ``outcome`` label of ``pixelmint_webhook_deliveries_total`` (``kit/metrics.py``) for an
    attempt: ``succeeded``; ``disabled`` when the attempt ended with its endpoint switched off (by
    this answer — 410, or failing for too long — or before it, when no request was made);
    ``failed`` otherwise."""
    if outcome.succeeded:
        return "succeeded"
    if not claimed.enabled or endpoint_enabled is False:
        return "disabled"
    return "failed"


async def record(db: Database, claimed: Claimed, outcome: Outcome, settings: Settings) -> None:
    """Store the attempt, the delivery's new state and the endpoint's failure record, and count
    the attempt (``metrics.webhook_deliveries``) when that commits. An attempt whose lease ran out
    meanwhile (another process took the delivery) is neither stored nor counted."""
    retry_at = next_attempt_at(claimed.attempt, outcome, settings.webhook_retry_schedule_seconds)
    status = "succeeded" if outcome.succeeded else "pending" if retry_at is not None else "failed"
    async with db.transaction() as session:
        row = (await session.execute(_RECORD, {
            "id": claimed.id, "attempt": claimed.attempt, "status": status, "next_attempt_at": retry_at,
            "succeeded": outcome.succeeded, "status_code": outcome.status_code, "response": outcome.response,
            "duration_ms": outcome.duration_ms, "error": (outcome.error or None) and outcome.error[:500],
            "gone": outcome.gone, "counts": outcome.counts, "disable_after": settings.webhook_disable_after_seconds,
        })).one()
        if row.recorded:
            label = metric_outcome(claimed, outcome, row.endpoint_enabled)
            metrics.after_commit(session, metrics.webhook_deliveries.labels(outcome=label).inc)
    log.info("webhook_attempt", delivery=str(claimed.id), attempt=claimed.attempt, status=status,
             status_code=outcome.status_code, error=outcome.error, recorded=bool(row.recorded),
             endpoint_enabled=row.endpoint_enabled)


async def claim(db: Database, *, limit: int, lease_seconds: float) -> list[Claimed]:
    """Claim up to ``limit`` due deliveries (``FOR UPDATE SKIP LOCKED``)."""
    async with db.transaction() as session:
        rows = (await session.execute(_CLAIM, {"limit": limit, "lease": lease_seconds})).all()
    return [Claimed(r.id, r.message_id, r.endpoint_id, r.attempts, r.url, r.body, r.secret, r.previous_secret, r.enabled)
            for r in rows]


class Deliverer:
    """The delivery loop of one process: claims due deliveries (up to
    ``PIXELMINT_WEBHOOK_CONCURRENCY`` in flight), sends each, records the outcome. Woken by
    ``NOTIFY pixelmint_webhooks`` (its own LISTEN connection, re-opened when lost) and by the
    next retry's due time, polling every ``PIXELMINT_WEBHOOK_POLL_INTERVAL_SECONDS`` otherwise.
    Started by ``api/runtime.py`` in processes that run a worker; ``stop()`` ends it after the
    attempts in flight."""

    def __init__(self, db: Database, settings: Settings, *, database_url: str | None = None) -> None:
        self.db = db
        self.settings = settings
        self.database_url = database_url or db.url
        self._wake = asyncio.Event()
        self._stopping = False
        self._in_flight: set[asyncio.Task[None]] = set()
        self._conn: Any = None

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    async def _listen(self) -> None:
        if self._conn is not None and not self._conn.is_closed():
            return
        try:
            conn = await asyncpg.connect(**asyncpg_connect_kwargs(self.database_url))
            await conn.add_listener(CHANNEL, lambda *_: self._wake.set())
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("webhook_listen_failed", error=str(exc))  # polling still delivers
            self._conn = None
            return
        self._conn = conn

    async def _deliver(self, client: httpx.AsyncClient, claimed: Claimed) -> None:
        try:
            outcome = await attempt(client, claimed, timeout=self.settings.webhook_timeout_seconds)
            await record(self.db, claimed, outcome, self.settings)
        except Exception:  # the lease runs out and the delivery is tried again
            log.exception("webhook_delivery_crashed", delivery=str(claimed.id))
        finally:
            self._wake.set()  # a slot is free

    async def _wait(self, *, saturated: bool) -> None:
        """Until a NOTIFY, a finished delivery (both set ``_wake``), the next due delivery or the
        poll interval. ``saturated`` (every slot busy): what is due cannot be claimed before a slot
        frees, so only ``_wake`` or the poll interval end the wait."""
        poll = self.settings.webhook_poll_interval_seconds
        if saturated:
            with suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), poll)
            return
        try:
            async with self.db.transaction() as session:
                due_in = await session.scalar(_NEXT_DUE)
        except Exception:
            log.exception("webhook_next_due_failed")
            due_in = None
        wait = poll if due_in is None else min(poll, max(0.01, float(due_in)))
        with suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), wait)

    async def run(self) -> None:
        lease = self.settings.webhook_timeout_seconds + 30
        async with pinned_client(allow_private=self.settings.allow_private_urls, follow_redirects=False,
                                 timeout=self.settings.webhook_timeout_seconds) as client:
            try:
                while not self._stopping:
                    await self._listen()
                    self._wake.clear()  # before the claim: a NOTIFY during it wakes the wait below
                    free = self.settings.webhook_concurrency - len(self._in_flight)
                    claimed: list[Claimed] = []
                    if free > 0:
                        try:
                            claimed = await claim(self.db, limit=free, lease_seconds=lease)
                        except Exception:
                            log.exception("webhook_claim_failed")
                    for item in claimed:
                        task = asyncio.create_task(self._deliver(client, item))
                        self._in_flight.add(task)
                        task.add_done_callback(self._in_flight.discard)
                    if claimed and len(claimed) == free:
                        continue  # there may be more due right now
                    await self._wait(saturated=free <= 0)
            finally:
                if self._in_flight:
                    await asyncio.gather(*self._in_flight, return_exceptions=True)
                if self._conn is not None:
                    with suppress(Exception):
                        await self._conn.close()
                    self._conn = None
