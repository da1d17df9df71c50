"""LISTEN/NOTIFY plumbing: one dedicated connection per process.

- ``pixelmint_jobs`` (no payload) wakes idle workers: work may be claimable.
- ``pixelmint_job_events`` (payload ``"<job id> <state>"``) tells waiters a job changed state; the
  API's ``waitForResult`` and the worker's cancellation watch use it.
- ``pixelmint_cache`` (payload: a cache's name) clears that per-process cache (``kit/cache.py``);
  every cache is cleared when the connection is lost and again once it listens again.

Notifications sent by this process are coalesced: while one wake-up NOTIFY is in flight, further
requests set a flag and produce a single follow-up NOTIFY (queues.md §6 pitfall 8: NOTIFY takes a
database-wide lock at commit, so fewer is better). A lost notification only costs latency: workers
poll as a fallback.

When the connection is lost (PostgreSQL restarted, the backend was terminated, the network broke
it), asyncpg's termination listener starts a reconnect loop with exponential backoff (0.1 s
doubling up to 5 s). Once the new connection listens again, every waiter is woken to re-read its
job and workers look for work: notifications sent while nobody listened are gone.

A connection can also die without a word: after a network partition or a dropped NAT entry it
stays open, delivers nothing and raises nothing (half-open). So every ``ping_seconds`` (15) the
connection must answer ``SELECT 1`` within ``ping_timeout_seconds`` (5); if it does not, it is
terminated and the reconnect loop above takes over.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncGenerator, Callable

import asyncpg
import structlog

from pixelmint.jobs.queue import FINISHED_STATES, JOB_EVENTS_CHANNEL, JOBS_CHANNEL, backoff_seconds
from pixelmint.jobs.tables import Job
from pixelmint.kit import cache
from pixelmint.kit.db import Database, asyncpg_connect_kwargs

log = structlog.get_logger(__name__)

RECONNECT_BASE_SECONDS, RECONNECT_MAX_SECONDS = 0.1, 5.0
PING_SECONDS, PING_TIMEOUT_SECONDS = 15.0, 5.0
CLOSE_TIMEOUT_SECONDS = 5.0


class JobEvents:
    def __init__(self, database_url: str, *, ping_seconds: float = PING_SECONDS,
                 ping_timeout_seconds: float = PING_TIMEOUT_SECONDS) -> None:
        self._url = database_url
        self._ping_seconds, self._ping_timeout = ping_seconds, ping_timeout_seconds
        self._ping_task: asyncio.Task[None] | None = None
        self._in_use = asyncio.Lock()  # one statement at a time on the connection (NOTIFY, ping)
        self._conn: asyncpg.Connection | None = None
        self._waiters: dict[uuid.UUID, set[asyncio.Event]] = defaultdict(set)
        self._state_listeners: list[Callable[[uuid.UUID, str], None]] = []
        self.jobs_available = asyncio.Event()
        self._notify_pending = False
        self._notify_task: asyncio.Task[None] | None = None
        self._reconnect_task: asyncio.Task[None] | None = None
        self._stopping = False

    async def start(self) -> None:
        """Connect and listen. Raises asyncpg's or the OS's connection errors."""
        conn = await asyncpg.connect(**asyncpg_connect_kwargs(self._url))
        try:
            await conn.add_listener(JOBS_CHANNEL, self._on_jobs)
            await conn.add_listener(JOB_EVENTS_CHANNEL, self._on_job_event)
            await conn.add_listener(cache.CHANNEL, self._on_cache_invalidated)
        except BaseException:
            conn.terminate()
            raise
        conn.add_termination_listener(self._on_connection_lost)
        self._conn = conn
        if self._ping_task is None:
            self._ping_task = asyncio.create_task(self._ping())

    async def stop(self) -> None:
        self._stopping = True
        # A wake-up still being sent is dropped (workers poll); on a half-open connection it, and
        # a polite close, would never end: the close gives up after CLOSE_TIMEOUT_SECONDS.
        tasks = [task for task in (self._ping_task, self._reconnect_task, self._notify_task) if task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._conn is not None:
            await self._conn.close(timeout=CLOSE_TIMEOUT_SECONDS)  # terminates it past the timeout
            self._conn = None

    # -- reconnecting ---------------------------------------------------------------------

    async def _ping(self) -> None:
        """Terminate a connection that stopped answering (half-open: the module docstring)."""
        while True:
            await asyncio.sleep(self._ping_seconds)
            if (conn := self._conn) is not None and not await self._answers(conn):
                conn.terminate()  # its termination listener starts the reconnect (if still the current one)

    async def _answers(self, conn: asyncpg.Connection) -> bool:
        try:
            async with asyncio.timeout(self._ping_timeout):
                async with self._in_use:
                    await conn.fetchval("SELECT 1")
        except Exception as exc:  # noqa: BLE001 - whatever it is, the connection is not answering
            log.warning("listen_ping_failed", error=str(exc) or type(exc).__name__)
            return False
        return True

    def _on_connection_lost(self, conn: object) -> None:
        if self._stopping or conn is not self._conn:
            return
        log.warning("listen_connection_lost")
        self._conn = None
        cache.clear_all()  # invalidations sent from now until we listen again would be missed
        self._reconnect_task = asyncio.create_task(self._reconnect())

    async def _reconnect(self) -> None:
        attempt = 0
        while True:
            attempt += 1
            await asyncio.sleep(backoff_seconds(attempt, base=RECONNECT_BASE_SECONDS, cap=RECONNECT_MAX_SECONDS))
            try:
                await self.start()
            except Exception as exc:  # noqa: BLE001 - keep trying whatever the failure
                log.warning("listen_reconnect_failed", attempt=attempt, error=str(exc))
                continue
            log.info("listen_reconnected", attempts=attempt)
            cache.clear_all()
            self.jobs_available.set()
            for waiters in self._waiters.values():
                for event in waiters:
                    event.set()
            return

    # -- receiving ------------------------------------------------------------------------

    def _on_jobs(self, *_: object) -> None:
        self.jobs_available.set()

    def _on_cache_invalidated(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        cache.clear_local(payload)

    def _on_job_event(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        try:
            raw_id, state = payload.split(" ", 1)
            job_id = uuid.UUID(raw_id)
        except ValueError:
            return
        for event in self._waiters.get(job_id, ()):
            event.set()
        for listener in self._state_listeners:
            listener(job_id, state)

    def add_state_listener(self, listener: Callable[[uuid.UUID, str], None]) -> None:
        self._state_listeners.append(listener)

    def watch(self, job_id: uuid.UUID) -> asyncio.Event:
        """An event set on the job's next state change. Register before reading the job's state,
        then ``unwatch`` when done."""
        event = asyncio.Event()
        self._waiters[job_id].add(event)
        return event

    def unwatch(self, job_id: uuid.UUID, event: asyncio.Event) -> None:
        waiters = self._waiters.get(job_id)
        if waiters is not None:
            waiters.discard(event)
            if not waiters:
                del self._waiters[job_id]

    # -- sending --------------------------------------------------------------------------

    def announce_jobs_available(self) -> None:
        """Wake local and remote workers after a commit that made work claimable (coalesced)."""
        self.jobs_available.set()
        if self._conn is None:
            return
        if self._notify_task is not None and not self._notify_task.done():
            self._notify_pending = True
            return
        self._notify_task = asyncio.create_task(self._send_wakeups())

    async def _send_wakeups(self) -> None:
        while (conn := self._conn) is not None:
            self._notify_pending = False
            try:
                async with self._in_use:
                    await conn.execute(f"NOTIFY {JOBS_CHANNEL}")
            except (asyncpg.PostgresError, OSError, asyncpg.InterfaceError) as exc:
                log.warning("notify_failed", error=str(exc))
                return
            if not self._notify_pending:
                return


async def watch_job(
    db: Database, events: JobEvents, job_id: uuid.UUID, *, timeout: float | None = None, recheck: float = 30
) -> AsyncGenerator[Job | None]:
    """The job as it is now, then again after each of its changes, woken by its NOTIFY events (and
    re-read every ``recheck`` seconds in case one was missed), each read in a transaction of its own.
    Ends after yielding a finished (or missing: ``None``) job, or once ``timeout`` seconds have
    passed. Used by ``waitForResult``, the job's event stream and the tests; consume it inside
    ``contextlib.aclosing`` so that leaving early stops the watch at once."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        changed = events.watch(job_id)  # before the read: a change after it wakes the wait below
        try:
            async with db.transaction() as session:
                job = await session.get(Job, job_id, populate_existing=True)
            yield job
            if job is None or job.state in FINISHED_STATES:
                return
            wait = recheck if deadline is None else min(recheck, deadline - time.monotonic())
            if wait <= 0:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), wait)
        finally:
            events.unwatch(job_id, changed)


async def wait_for_job(db: Database, events: JobEvents, job: Job, *, timeout: float) -> Job:
    """The job once it has finished, or as it is when ``timeout`` seconds have passed (``job``
    itself if it has gone): ``watch_job`` to its end. Used by ``waitForResult`` and the compatible
    APIs' waits."""
    async with contextlib.aclosing(watch_job(db, events, job.id, timeout=timeout)) as updates:
        async for latest in updates:
            job = latest or job
    return job
