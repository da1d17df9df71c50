"""The PostgreSQL job queue: enqueue, claim, lease, finish, retry, cancel and rescue.

The jobs table is the queue (the pattern of River, Oban and graphile-worker). The claim is the
lab-tested team-fair design of ``../shared/reference/queues.md`` §B, implemented by the SQL function
``pixelmint_claim_jobs`` (``migrations/pixelmint_claim_jobs.sql``): per-team concurrency limits
that hold whatever the number of workers, plan priority first, round robin between teams of equal
priority that have a job ready now, ``SKIP LOCKED`` so claimers never wait on each other.

Lock order, everywhere: jobs → credits (``credit_reservations``, ``credit_balances``, and ``users``
for a free generation) → team_dispatch. Enqueue takes the team's balance (or the user's free
generation), inserts a job row nobody else can hold yet, then raises ``team_dispatch.has_ready``; a
finishing transition locks its job, then settles its credits; whatever raises ``has_ready`` does it
last in its transaction (``rescue_expired``, which handles many jobs in one transaction, settles
the credits of every job it fails before it requeues any, team by team). Claims take team_dispatch
then jobs, both with ``SKIP LOCKED``, and never wait. So there is no lock cycle.

Every finishing transition is fenced (``state = 'running' AND locked_by = worker AND attempt =
n``, queues.md §6 pitfall 11): a worker that lost its lease cannot finish a job twice, and credit
settlement happens in the same transaction as the fenced update. So does the team's outbound
webhook (``job.succeeded`` / ``job.failed`` / ``job.canceled``, ``_announce``): every way a job
finishes goes through ``mark_succeeded`` (``mark_succeeded_many`` for the worker's batches of
successes) or ``_refund``, which call it. ``_announce`` and ``claim``
(a job's first attempt starting) also tell the registry's listeners (``jobs/registry.py``), in the
same transaction: the Replicate-compatible API queues a prediction's own webhook there.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal
from functools import partial
from typing import Any, cast

from sqlalchemy import ColumnElement, Table, TextClause, case, literal, select, text, true, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.expression import ReturnsRows

from pixelmint.accounts import service as accounts
from pixelmint.accounts.tables import Plan
from pixelmint.credits import service as credits
from pixelmint.credits.tables import CREDITS
from pixelmint.jobs.registry import registry
from pixelmint.jobs.tables import Job, TeamDispatch
from pixelmint.kit import metrics
from pixelmint.kit.errors import TooManyRequests
from pixelmint.webhooks import service as webhooks

JOBS_CHANNEL = "pixelmint_jobs"  # payload-free wake-up: work may be available
JOB_EVENTS_CHANNEL = "pixelmint_job_events"  # payload "<job id> <state>" on every state change

FINISHED_STATES = ("succeeded", "failed", "canceled", "expired")

_JOBS = cast(Table, Job.__table__)  # a declarative model's __table__ is its Table


async def _jobs(session: AsyncSession, statement: ReturnsRows | TextClause, params: dict[str, Any] | None = None) -> list[Job]:
    """Run a statement that returns job rows (``RETURNING *``) and map them to ``Job`` objects."""
    query = select(Job).from_statement(statement).execution_options(populate_existing=True)
    return list((await session.scalars(query, params)).all())


def dispatch_limit(plan: Plan) -> int:
    """Jobs a team may run at once: the plan's limit; a free plan runs its free generations one
    at a time."""
    return max(plan.max_concurrent_jobs, 1)


async def open_team_dispatch(session: AsyncSession, *, team_id: uuid.UUID, plan: Plan) -> None:
    session.add(
        TeamDispatch(team_id=team_id, priority=plan.queue_priority, max_running=dispatch_limit(plan))
    )
    await session.flush()


async def set_team_limits(session: AsyncSession, *, team_id: uuid.UUID, plan: Plan) -> None:
    """A team changed plans: its claim gate takes the plan's queue priority and ``dispatch_limit``.

    Claims read ``team_dispatch`` at claim time, so queued and new jobs get the new priority and
    concurrency at once while running jobs finish as they are (a lower limit only stops new claims
    until enough have finished)."""
    await session.execute(
        text("UPDATE team_dispatch SET priority = :priority, max_running = :max_running WHERE team_id = :team_id"),
        {"priority": plan.queue_priority, "max_running": dispatch_limit(plan), "team_id": team_id},
    )


def backoff_seconds(attempt: int, *, base: float, cap: float) -> float:
    """Exponential backoff with ±10 % jitter: ``min(cap, base × 2^(attempt−1))`` (Oban/River style)."""
    delay = min(cap, base * 2 ** max(0, attempt - 1))
    return delay * random.uniform(0.9, 1.1)


def _job_ctes(rows: str) -> str:
    """``job``: INSERT the jobs of ``rows`` (a ``VALUES`` or ``SELECT`` of the listed columns)
    ``RETURNING *``; ``dispatch``: raise the team ``:team_id``'s ``has_ready`` if one was inserted
    (the three ways in: :func:`enqueue`, :func:`enqueue_ctes`, :func:`enqueue_batch_ctes`)."""
    return f"""job AS (
    INSERT INTO jobs (id, team_id, user_id, type, priority, params, reference_model_id, custom_model_id,
                      custom_model_version, provider, estimated_credits, reservation_id, is_free, max_attempts)
    {rows}
    RETURNING *
), dispatch AS (
    UPDATE team_dispatch SET has_ready = true WHERE team_id = :team_id AND EXISTS (SELECT 1 FROM job)
)"""


_ENQUEUE = text("WITH " + _job_ctes("""VALUES (:id, :team_id, :user_id, :type, :priority, CAST(:params AS jsonb),
            :reference_model_id, :custom_model_id, :custom_model_version, :provider, :estimated_credits,
            :reservation_id, :is_free, :max_attempts)""") + "\nSELECT * FROM job")


def queued_jobs_cte(name: str) -> str:
    """A CTE ``name`` with one row: ``queued``, the team's queued jobs counted up to
    ``:queue_limit`` (``:team_id``), and ``room``: whether one more may be queued (0: no cap) — the
    check of :func:`ensure_queue_capacity` inside a larger statement."""
    return f"""{name} AS (
    SELECT count(*) AS queued, CAST(:queue_limit AS int) <= 0 OR count(*) < CAST(:queue_limit AS int) AS room
      FROM (SELECT 1 FROM jobs WHERE team_id = :team_id AND state = 'queued'
             LIMIT GREATEST(CAST(:queue_limit AS int), 0)) q
)"""


def enqueue_ctes(gate: str, *, estimated_credits: str, reservation_id: str, is_free: str) -> str:
    """``_ENQUEUE`` as CTEs of a larger statement (``flows/generation.py``): ``job`` inserts the job
    where ``gate`` holds and returns it, ``dispatch`` raises its team's ``has_ready`` if it did.
    ``estimated_credits``, ``reservation_id``, ``is_free``: SQL expressions (over the caller's CTEs);
    the other columns are parameters (``:job_id``, ``:job_type`` and the rest as in :func:`enqueue`).
    Count a job queued this way with :func:`count_submitted`."""
    return _job_ctes(f"""SELECT CAST(:job_id AS uuid), :team_id, :user_id, :job_type, :priority, CAST(:params AS jsonb),
           :reference_model_id, :custom_model_id, :custom_model_version, :provider, {estimated_credits},
           {reservation_id}, {is_free}, :max_attempts
     WHERE {gate}""")


def enqueue_batch_ctes(source: str) -> str:
    """:func:`enqueue_ctes` for several paid jobs of the team ``:team_id`` at once (``flows/generation.py``,
    a batch of generations): ``job`` inserts one job per row of the caller's CTE ``source`` (its
    ``job_id``, ``user_id``, ``params`` as JSON text, ``reference_model_id``, ``custom_model_id``,
    ``custom_model_version``, ``provider``, ``amount`` — the estimate — and ``reservation_id``),
    in its ``ord`` order, and returns them; ``dispatch`` raises the team's ``has_ready`` if any.
    ``:job_type``, ``:priority``, ``:max_attempts`` as in :func:`enqueue`."""
    return _job_ctes(f"""SELECT s.job_id, CAST(:team_id AS uuid), s.user_id, :job_type, :priority, CAST(s.params AS jsonb),
           s.reference_model_id, s.custom_model_id, s.custom_model_version, s.provider, s.amount, s.reservation_id,
           false, :max_attempts
      FROM {source} s ORDER BY s.ord""")


def count_submitted(session: AsyncSession | None, job: Job) -> None:
    """Count a job queued by a statement built with :func:`enqueue_ctes` (``kit/metrics.py``) when
    ``session`` commits; ``None``: it has committed."""
    counter = metrics.jobs_submitted.labels(type=job.type, provider=job.provider)
    if session is None:
        counter.inc()
    else:
        metrics.after_commit(session, counter.inc)


_QUEUED_JOBS = text("WITH " + queued_jobs_cte("cap") + " SELECT queued FROM cap")


class QueueFull(TooManyRequests):
    code = "queue_full"


async def ensure_queue_capacity(session: AsyncSession, *, team_id: uuid.UUID, limit: int) -> None:
    """Raise ``QueueFull`` (429) when the team already has ``limit`` queued jobs (0: no cap). A
    soft cap: requests racing each other may pass it by at most their number. Counts at most
    ``limit`` index entries."""
    if limit <= 0:
        return
    queued = await session.scalar(_QUEUED_JOBS, {"team_id": team_id, "queue_limit": limit})
    if queued >= limit:
        raise QueueFull(
            f"The team has {limit} queued jobs, the most it may have; wait for some to run or cancel some.",
            limit=limit,
        )


async def enqueue(session: AsyncSession, **values: Any) -> Job:
    """Insert a queued job and raise its team's ``has_ready`` flag, in the caller's transaction.

    ``values`` are the job's columns (``params`` as a JSON string). Holding the team_dispatch row
    lock until commit is what makes the claim's flag-clearing step safe (queues.md §B.2).
    """
    job = (await _jobs(session, _ENQUEUE, values))[0]
    count_submitted(session, job)
    return job


async def claim(session: AsyncSession, *, worker_id: str, demand: int, lease_seconds: float) -> list[Job]:
    """Claim up to ``demand`` jobs for ``worker_id`` (state → running, attempt + 1, lease set)."""
    jobs = await _jobs(
        session,
        text("SELECT * FROM pixelmint_claim_jobs(:worker, :demand, :lease)"),
        {"worker": worker_id, "demand": demand, "lease": lease_seconds},
    )
    for job in jobs:  # queue wait: ready (run_at: enqueued, or the retry's time) → claimed
        if job.started_at is not None:
            waited = max(0.0, (job.started_at - job.run_at).total_seconds())
            metrics.after_commit(session, partial(metrics.job_queue_wait_seconds.labels(type=job.type).observe, waited))
        if job.attempt == 1:  # started; a retry or a resumed hand-off is the same start continuing
            await _tell(session, job)
    return jobs


def _count(session: AsyncSession, job: Job, from_state: str) -> None:
    """Count a transition of ``job`` out of ``from_state`` (``kit/metrics.py``) when the transaction
    commits: a final state, a retry, and the run time of an attempt that ended (not one handed to
    its provider's webhook)."""
    labels = {"type": job.type, "provider": job.provider}
    if job.state in FINISHED_STATES:
        metrics.after_commit(session, metrics.jobs_finished.labels(state=job.state, **labels).inc)
    elif job.state == "queued" and from_state == "running":
        metrics.after_commit(session, metrics.job_retries.labels(**labels).inc)
    if from_state in ("running", "awaiting_webhook") and job.state != "awaiting_webhook" and job.started_at:
        ran = max(0.0, (dt.datetime.now(dt.UTC) - job.started_at).total_seconds())
        metrics.after_commit(session, partial(metrics.job_run_seconds.labels(**labels).observe, ran))


async def extend_leases(
    session: AsyncSession, *, worker_id: str, job_ids: list[uuid.UUID], lease_seconds: float
) -> dict[uuid.UUID, bool]:
    """Heartbeat: push the leases of this worker's running jobs forward.

    Returns ``{job id: cancel requested}`` for the jobs still held; a job missing from the answer
    was taken from this worker (its lease ran out and it was rescued) and must be abandoned. One
    statement for all of them, locking them in id order as ``mark_succeeded_many`` does.
    """
    if not job_ids:
        return {}
    rows = await session.execute(
        text("""
            WITH mine AS (
                SELECT id FROM jobs WHERE id = ANY(:ids) AND state = 'running' AND locked_by = :worker
                 ORDER BY id FOR UPDATE
            )
            UPDATE jobs j SET lease_expires_at = clock_timestamp() + make_interval(secs => :lease)
              FROM mine WHERE j.id = mine.id AND j.state = 'running' AND j.locked_by = :worker
            RETURNING j.id, j.cancel_requested_at IS NOT NULL AS cancel_requested
        """),
        {"ids": job_ids, "worker": worker_id, "lease": lease_seconds},
    )
    return {row.id: row.cancel_requested for row in rows}


async def add_log(session: AsyncSession, job_id: uuid.UUID, message: str) -> None:
    """Append a log line to a job (shown by ``GET /api/v1/jobs/{id}`` and its event stream)."""
    await session.execute(
        text("INSERT INTO job_logs (job_id, message) VALUES (:id, :message)"), {"id": job_id, "message": message[:2000]}
    )
    await _notify(session, job_id, "log", slot_freed=False)


async def set_progress(session: AsyncSession, fence: Fence, progress: int) -> None:
    await session.execute(
        text("""UPDATE jobs SET progress = :progress
                 WHERE id = :id AND state = 'running' AND locked_by = :worker AND attempt = :attempt"""),
        {"progress": progress, "id": fence.job_id, "worker": fence.worker_id, "attempt": fence.attempt},
    )
    await _notify(session, fence.job_id, "running", slot_freed=False)


@dataclass(frozen=True)
class Fence:
    """The claim a worker holds on a job: only this worker, on this attempt, may finish it.
    ``from_state`` is ``awaiting_webhook`` when a provider callback finishes the job."""

    job_id: uuid.UUID
    worker_id: str
    attempt: int
    from_state: str = "running"


async def _notify(session: AsyncSession, job_id: uuid.UUID, state: str, *, slot_freed: bool) -> None:
    await session.execute(
        text("SELECT pg_notify(:events, :payload), CASE WHEN :slot THEN pg_notify(:jobs, '') END"),
        {"events": JOB_EVENTS_CHANNEL, "payload": f"{job_id} {state}", "slot": slot_freed, "jobs": JOBS_CHANNEL},
    )


async def _mark_ready(session: AsyncSession, team_ids: set[uuid.UUID]) -> None:
    """The teams may have claimable work again (a requeued job): raise their dispatch flags,
    locking the rows in team id order (two transactions raising overlapping sets cannot deadlock)."""
    await session.execute(
        text("""UPDATE team_dispatch SET has_ready = true
                 WHERE team_id IN (SELECT team_id FROM team_dispatch WHERE team_id = ANY(:teams)
                                    ORDER BY team_id FOR UPDATE)"""),
        {"teams": list(team_ids)},
    )


async def _finish_attempt(
    session: AsyncSession, fence: Fence, outcome: str, error: str | None, *, state: str | None = None
) -> None:
    """Close the attempt's record and, with ``state``, announce the job's new state and a freed
    slot, in one round trip."""
    await session.execute(
        text("""
            WITH attempt AS (
                UPDATE job_attempts SET finished_at = clock_timestamp(), outcome = :outcome, error_message = :error
                 WHERE job_id = :job_id AND attempt = :attempt AND finished_at IS NULL
            )
            SELECT CASE WHEN CAST(:state AS text) IS NOT NULL
                        THEN (pg_notify(:events, :payload), pg_notify(:jobs, '')) END
        """),
        {"job_id": fence.job_id, "attempt": fence.attempt, "outcome": outcome, "error": error, "state": state,
         "events": JOB_EVENTS_CHANNEL, "payload": f"{fence.job_id} {state}", "jobs": JOBS_CHANNEL},
    )


async def _transition(
    session: AsyncSession, fence: Fence, state: str, *, only_if: ColumnElement[bool] | None = None, **changes: Any
) -> Job | None:
    """Fenced ``fence.from_state`` → ``state``, setting ``changes`` (column name = value or SQL
    expression), when ``only_if`` also holds: one ``UPDATE jobs … WHERE <fence> RETURNING *``.
    Returns the job, or ``None`` if the fence no longer holds (another attempt owns the job, or it
    already moved on) or ``only_if`` fails."""
    if state != "awaiting_webhook":  # a job awaiting its callback stays with the fence that finishes it
        changes["locked_by"] = None
    statement = (
        update(_JOBS)
        .where(Job.id == fence.job_id, Job.state == fence.from_state, Job.locked_by == fence.worker_id,
               Job.attempt == fence.attempt, true() if only_if is None else only_if)
        .values(state=state, lease_expires_at=None, **changes)
        .returning(*_JOBS.c)
    )
    jobs = await _jobs(session, statement)
    if not jobs:
        return None
    _count(session, jobs[0], fence.from_state)
    return jobs[0]


async def mark_succeeded(
    session: AsyncSession, fence: Fence, *, result: dict[str, Any], charged: Any | None = None,
    apply: Callable[[AsyncSession, Job], Awaitable[None]] | None = None,
) -> Job | None:
    """Fenced running → succeeded, capturing the job's reservation in the same transaction, then
    ``apply`` (the handler's domain changes: ``TaskOutcome.apply``), then the announcements (which
    therefore see the job's outputs).

    ``charged`` defaults to the whole reservation. Returns ``None`` (and changes nothing) if the
    worker lost the job.
    """
    charge = Job.estimated_credits if charged is None else literal(Decimal(charged), CREDITS)
    job = await _transition(
        session, fence, "succeeded", result=result, finished_at=dt.datetime.now(dt.UTC), progress=100,
        charged_credits=case((Job.reservation_id.is_(None), literal(Decimal(0), CREDITS)), else_=charge),
    )
    if job is None:
        return None
    if job.reservation_id is not None:
        await credits.capture(session, job.reservation_id, amount=job.charged_credits, description="job succeeded")
    if apply is not None:
        await apply(session, job)
    await _announce(session, job)
    await _finish_attempt(session, fence, "succeeded", None, state="succeeded")
    return job


@dataclass(frozen=True)
class Success:
    """A job whose handler succeeded, for ``mark_succeeded_many``: its fence, result and
    ``apply`` (``TaskOutcome.apply``)."""

    fence: Fence
    result: dict[str, Any]
    apply: Callable[[AsyncSession, Job], Awaitable[None]] | None = None


# Fenced running → succeeded for many jobs of one worker, with their attempts closed and their
# states announced, in one statement. The job rows are locked in id order (as the heartbeat's
# ``extend_leases`` locks them), so two statements over the same jobs cannot deadlock; the UPDATE
# repeats the fence, which READ COMMITTED re-checks on the row version it locked.
_SUCCEED_MANY = text(f"""
WITH fin AS (
    SELECT * FROM unnest(CAST(:ids AS uuid[]), CAST(:attempts AS int[]), CAST(:results AS text[]))
        AS f(id, attempt, result)
), locked AS (
    SELECT j.id FROM jobs j JOIN fin f ON f.id = j.id
     WHERE j.state = 'running' AND j.locked_by = :worker AND j.attempt = f.attempt
     ORDER BY j.id FOR UPDATE OF j
), done AS (
    UPDATE jobs j SET state = 'succeeded', lease_expires_at = NULL, locked_by = NULL,
           result = CAST(f.result AS jsonb), finished_at = :now, progress = 100,
           charged_credits = CASE WHEN j.reservation_id IS NULL THEN 0 ELSE j.estimated_credits END
      FROM fin f JOIN locked l ON l.id = f.id
     WHERE j.id = f.id AND j.state = 'running' AND j.locked_by = :worker AND j.attempt = f.attempt
    RETURNING j.*
), attempt AS (
    UPDATE job_attempts a SET finished_at = clock_timestamp(), outcome = 'succeeded', error_message = NULL
      FROM done d WHERE a.job_id = d.id AND a.attempt = d.attempt AND a.finished_at IS NULL
)
SELECT d.* FROM done d
 CROSS JOIN LATERAL (SELECT pg_notify('{JOB_EVENTS_CHANNEL}', d.id::text || ' succeeded'),
                            pg_notify('{JOBS_CHANNEL}', '')) AS announce
""")


async def mark_succeeded_many(session: AsyncSession, worker_id: str, successes: list[Success]) -> dict[uuid.UUID, Job]:
    """``mark_succeeded`` (with ``charged`` the whole reservation) for several jobs of
    ``worker_id`` in the caller's transaction: one statement for the fenced updates, the attempts'
    records and the NOTIFYs; then, job after job in team order (the order every transaction that
    locks several teams' credits takes, so these cannot deadlock), the reservation's capture and
    ``apply``; then one statement for the team webhooks (``webhooks.emit_many``) and the registry's
    listeners. Returns the jobs that succeeded by job id; a job missing from the answer was no
    longer this worker's (the fence failed) and nothing of it changed. Whatever raises (an
    ``apply``, a listener) rolls back every job of the transaction: the caller then finishes them
    one by one (``mark_succeeded``)."""
    if not successes:
        return {}
    fences = {success.fence.job_id: success for success in successes}
    assert all(s.fence.worker_id == worker_id and s.fence.from_state == "running" for s in successes)
    jobs = await _jobs(session, _SUCCEED_MANY, {
        "ids": list(fences), "attempts": [s.fence.attempt for s in successes],
        "results": [json.dumps(s.result) for s in successes], "worker": worker_id, "now": dt.datetime.now(dt.UTC),
    })
    jobs.sort(key=lambda job: (job.team_id, job.id))
    for job in jobs:
        _count(session, job, "running")
        if job.reservation_id is not None:
            await credits.capture(session, job.reservation_id, amount=job.charged_credits, description="job succeeded")
        apply = fences[job.id].apply
        if apply is not None:
            await apply(session, job)
    await webhooks.emit_many(session, [(job.team_id, f"job.{job.state}", _finish_data(job)) for job in jobs])
    for job in jobs:
        await _tell(session, job)
    return {job.id: job for job in jobs}


async def mark_failed(
    session: AsyncSession, fence: Fence, *, code: str, message: str, retry_in: float | None,
    attempt_outcome: str | None = None,
) -> Job | None:
    """Fenced → queued again after ``retry_in`` seconds (if given and attempts remain), or → failed
    with its reservation released. ``attempt_outcome`` overrides what the attempt's record says
    (``retry`` / ``failed``). Returns ``None`` if the fence no longer holds."""
    if retry_in is not None:
        job = await _transition(
            session, fence, "queued", only_if=Job.attempt < Job.max_attempts,
            error_code=code, error_message=message[:2000],
            run_at=dt.datetime.now(dt.UTC) + dt.timedelta(seconds=retry_in),
        )
        if job is not None:
            await _mark_ready(session, {job.team_id})
            await _notify(session, job.id, "queued", slot_freed=True)
            await _finish_attempt(session, fence, attempt_outcome or "retry", message)
            return job
    job = await _transition(
        session, fence, "failed", error_code=code, error_message=message[:2000],
        finished_at=dt.datetime.now(dt.UTC),
    )
    if job is None:
        return None
    await _refund(session, job, reason=f"job failed: {code}")
    await _finish_attempt(session, fence, attempt_outcome or "failed", message, state="failed")
    return job


async def mark_awaiting_webhook(session: AsyncSession, fence: Fence) -> Job | None:
    """Fenced running → awaiting_webhook: the provider has the request and will call back. The
    reservation stays held; the job still counts against its team's concurrency."""
    job = await _transition(session, fence, "awaiting_webhook")
    if job is None:
        return None
    early = await session.scalar(
        text("SELECT 1 FROM provider_webhook_events WHERE provider = :p AND request_id = :r LIMIT 1"),
        {"p": job.provider, "r": job.provider_request_id},
    )
    if early:  # the callback beat the hand-off
        await resume_by_polling(session, fence, job)
        return job
    await _notify(session, job.id, "awaiting_webhook", slot_freed=True)
    return job


async def resume_by_polling(session: AsyncSession, fence: Fence, job: Job) -> None:
    """The provider has the answer of the job's request (its callback came): back to the queue
    now, keeping the provider handle, and this attempt closed (``retry``). The next attempt
    collects the result by polling the provider, stores it and finishes the job with the worker's
    usual retries. The caller holds the job's row lock (a fenced update or ``FOR UPDATE``)."""
    await session.execute(
        text("UPDATE jobs SET state = 'queued', run_at = now(), locked_by = NULL WHERE id = :id"), {"id": job.id}
    )
    await _mark_ready(session, {job.team_id})
    await _notify(session, job.id, "queued", slot_freed=True)
    await _finish_attempt(session, fence, "retry", None)
    job.state = "queued"


async def requeue_stale_webhook_jobs(session: AsyncSession, *, older_than_seconds: float, batch: int = 100) -> int:
    """Jobs whose callback never came: back to the queue, where a worker resumes them by polling
    the provider with the stored handle (webhooks can be lost). Returns how many."""
    rows = await session.execute(
        text("""
            UPDATE jobs SET state = 'queued', run_at = now(), locked_by = NULL
             WHERE id IN (SELECT id FROM jobs WHERE state = 'awaiting_webhook'
                            AND started_at < now() - make_interval(secs => :age)
                          ORDER BY started_at LIMIT :batch FOR UPDATE SKIP LOCKED)
            RETURNING team_id
        """),
        {"age": older_than_seconds, "batch": batch},
    )
    teams = [row.team_id for row in rows]
    if teams:
        await _mark_ready(session, set(teams))
    return len(teams)


async def expire_jobs(session: AsyncSession, job_ids: list[uuid.UUID]) -> int:
    """Succeeded jobs among ``job_ids`` that have no image left that is not deleted → ``expired``
    (image retention: ``flows/retention.py``). Returns how many."""
    result = await session.execute(
        text("""
            UPDATE jobs AS j SET state = 'expired'
             WHERE j.id = ANY(:job_ids)
               AND j.state = 'succeeded'
               AND NOT EXISTS (SELECT 1 FROM images AS i WHERE i.job_id = j.id AND i.deleted_at IS NULL)
        """),
        {"job_ids": job_ids},
    )
    return result.rowcount  # type: ignore[attr-defined]


async def mark_canceled(session: AsyncSession, fence: Fence) -> Job | None:
    """Fenced running → canceled (cancel requested while it ran), reservation released."""
    job = await _transition(
        session, fence, "canceled", error_code="canceled", error_message="Canceled by request.",
        finished_at=dt.datetime.now(dt.UTC),
    )
    if job is None:
        return None
    await _refund(session, job, reason="job canceled")
    await _finish_attempt(session, fence, "canceled", None, state="canceled")
    return job


async def _refund(session: AsyncSession, job: Job, *, reason: str) -> None:
    """A job ended failed or canceled: give back what it held (its credit reservation, or the
    user's free generation) and run its type's failure hook (``jobs/registry.py``)."""
    hook = registry.failure_hooks.get(job.type)
    if hook is not None:
        await hook(session, job)
    if job.reservation_id is not None:
        await credits.release(session, job.reservation_id, description=reason)
    elif job.is_free and job.user_id is not None:
        await accounts.return_free_generation(session, job.user_id)
    await _announce(session, job)


def job_links(job: Job) -> dict[str, str]:
    """API paths about a job (relative to the server's base URL)."""
    links = {"job": f"/api/v1/jobs/{job.id}"}
    if job.type == "image_generation":
        links["generation"] = f"/api/v1/generate/{job.id}"
        links["images"] = f"/api/v1/images?jobId={job.id}"
    if job.custom_model_id is not None:
        links["model"] = f"/api/v1/models/{job.custom_model_id}"
    return links


async def _tell(session: AsyncSession, job: Job) -> None:
    """The registry's listeners: the job started or finished, in this transaction."""
    for listener in registry.listeners.values():
        await listener(session, job)


async def _announce(session: AsyncSession, job: Job) -> None:
    """The job finished (succeeded, failed or canceled): the team's ``job.<state>`` webhook, in
    this transaction (one statement; nothing written when no endpoint takes it), and the
    registry's listeners."""
    await webhooks.emit(session, job.team_id, f"job.{job.state}", _finish_data(job))
    await _tell(session, job)


def _finish_data(job: Job) -> dict[str, Any]:
    """The ``data`` of a finished job's ``job.<state>`` webhook."""
    error = None if job.state == "succeeded" else {"code": job.error_code, "message": job.error_message}
    return {
        "id": str(job.id), "type": job.type, "state": job.state, "referenceModelId": job.reference_model_id,
        "customModelId": str(job.custom_model_id) if job.custom_model_id else None,
        "customModelVersion": job.custom_model_version, "estimatedCredits": float(job.estimated_credits),
        "chargedCredits": float(job.charged_credits) if job.charged_credits is not None else None,
        "error": error, "createdAt": job.created_at.isoformat() if job.created_at else None,
        "finishedAt": job.finished_at.isoformat() if job.finished_at else None, "links": job_links(job),
    }


async def cancel(session: AsyncSession, *, job_id: uuid.UUID, team_id: uuid.UUID) -> Job | None:
    """Cancel a job of ``team_id``.

    A queued job, or one waiting for its provider's callback, is canceled at once and its
    reservation released; a running one gets ``cancel_requested_at`` and its worker finishes it as
    canceled. Returns the job as it is now,
    or ``None`` if the team has no such job.
    """
    # Queued, or waiting for its provider's callback (the caller then tells the provider): now.
    canceled = await _jobs(
        session,
        text("""
            UPDATE jobs SET state = 'canceled', finished_at = now(), error_code = 'canceled',
                            error_message = 'Canceled by request.', locked_by = NULL
             WHERE id = :id AND team_id = :team_id AND state IN ('queued', 'awaiting_webhook')
            RETURNING *
        """),
        {"id": job_id, "team_id": team_id},
    )
    if canceled:
        job = canceled[0]
        _count(session, job, "queued")  # an awaiting job's attempt is not timed: its provider ran it
        await _refund(session, job, reason="job canceled")
        await _notify(session, job.id, "canceled", slot_freed=True)  # an awaiting job held a slot
        return job
    requested = await session.scalar(
        text("""
            UPDATE jobs SET cancel_requested_at = COALESCE(cancel_requested_at, now())
             WHERE id = :id AND team_id = :team_id AND state = 'running'
            RETURNING id
        """),
        {"id": job_id, "team_id": team_id},
    )
    if requested is not None:
        await _notify(session, job_id, "cancel_requested", slot_freed=False)
    return await session.get(Job, job_id, populate_existing=True)


async def rescue_expired(
    session: AsyncSession, *, retry_base: float, retry_cap: float, batch: int = 100
) -> list[Job]:
    """Recover jobs whose lease ran out (their worker died or hung): retry them with backoff
    while attempts remain, else fail them and release their credits. Safe to run from every
    worker at once (``SKIP LOCKED``)."""
    rows = await session.execute(
        text("""
            SELECT id, team_id, locked_by, attempt, attempt < max_attempts AS retries FROM jobs
             WHERE state = 'running' AND lease_expires_at < clock_timestamp()
             ORDER BY lease_expires_at LIMIT :batch FOR UPDATE SKIP LOCKED
        """),
        {"batch": batch},
    )
    rescued = []
    # The lock order (module docstring): the failures release their credits before any retry raises
    # its team's has_ready, team by team, so that neither an enqueue nor another rescuer can be
    # waiting for a lock this transaction holds while holding one it needs.
    for row in sorted(rows.all(), key=lambda row: (row.retries, row.team_id)):
        fence = Fence(row.id, row.locked_by, row.attempt)
        message = f"The worker {row.locked_by} stopped renewing its lease (attempt {row.attempt})."
        job = await mark_failed(
            session, fence, code="worker_lost", message=message,
            retry_in=backoff_seconds(row.attempt, base=retry_base, cap=retry_cap), attempt_outcome="lease_expired",
        )
        if job is not None:
            rescued.append(job)
    return rescued


@dataclass(frozen=True)
class QueueDepth:
    """Queued jobs of one queue priority (the team's plan's, ``team_dispatch.priority``, which
    claims honour first): how many (``depth``, retries waiting for their time included) and how
    long the oldest one ready to run has waited, in seconds (0 when none is)."""

    priority: int
    depth: int
    oldest_ready_age: float


# The queued jobs through the ix_jobs_ready partial index, joined to their teams' dispatch rows;
# every plan's priority appears, with 0 when none of its jobs is queued.
_QUEUE_DEPTHS = text("""
SELECT priority, COALESCE(q.depth, 0) AS depth, COALESCE(q.oldest_ready_age, 0) AS oldest_ready_age
  FROM (SELECT DISTINCT queue_priority AS priority FROM plans) p
  FULL JOIN (SELECT d.priority, count(*) AS depth,
                    EXTRACT(EPOCH FROM now() - min(j.run_at) FILTER (WHERE j.run_at <= now())) AS oldest_ready_age
               FROM jobs j JOIN team_dispatch d ON d.team_id = j.team_id
              WHERE j.state = 'queued' GROUP BY d.priority) q USING (priority)
 ORDER BY priority
""")


async def queue_depths(session: AsyncSession) -> list[QueueDepth]:
    """The queue per priority, for ``/metrics`` (read at scrape time)."""
    rows = await session.execute(_QUEUE_DEPTHS)
    return [QueueDepth(row.priority, row.depth, max(0.0, float(row.oldest_ready_age))) for row in rows]
