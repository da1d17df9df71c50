"""Image retention: delete expired images' objects, mark their rows deleted and their jobs expired.

Every image row has ``expires_at`` (``created_at`` + ``PIXELMINT_IMAGE_RETENTION_DAYS``, set by
``jobs/tasks.py``). ``cleanup_expired`` works in batches of ``batch_size`` images, each batch one
transaction:

1. ``pg_try_advisory_xact_lock(RETENTION_LOCK_KEY)`` — if another process holds it, stop (the
   report says ``lock_busy``); that process is doing the work.
2. ``UPDATE images SET deleted_at = now()`` on up to ``batch_size`` rows picked with
   ``expires_at <= now AND deleted_at IS NULL ORDER BY expires_at … FOR UPDATE SKIP LOCKED``
   (the partial index ``ix_images_expires`` of migration 0001 serves it), ``RETURNING`` their keys.
3. Delete those objects from storage (``delete_many``: one ``DeleteObjects`` per 1,000 keys on S3)
   and, at the same time, ``UPDATE jobs SET state = 'expired'`` for the batch's jobs that are
   ``succeeded`` and have no image left that is not deleted.
4. Commit once both have finished; if either failed, roll back.

Objects are deleted *before* the commit: if the storage call fails the transaction rolls back and
the rows stay for the next run; if the commit fails after the objects are gone, the next run
deletes them again (deleting a missing object is not an error). The opposite order could mark rows
deleted whose objects then live (and cost) forever.

Why the advisory lock, and not only ``SKIP LOCKED``: ``SKIP LOCKED`` alone would let several
processes delete disjoint batches at the same time without double deletes, but the job step would
race: two processes deleting the last two images of one job in parallel each still see the other's
image as alive, and neither would expire the job. Taking one transaction-level advisory lock per
batch serialises batches across processes (so that check is exact), keeps N worker processes
running the periodic task from multiplying the load on the database and the object store, and,
being transaction-level, cannot leak when a process dies. ``SKIP LOCKED`` stays for rows locked by
something else — a user deleting that very image — so cleanup never waits on a request.

``RetentionTask`` runs the cleanup periodically inside worker processes (started by
``api/runtime.py``); ``pixelmint storage cleanup`` runs it once.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from contextlib import suppress
from dataclasses import asdict, dataclass
from typing import Any, cast

import structlog
from sqlalchemy import CursorResult, text

from pixelmint.kit.db import Database
from pixelmint.storage.backend import Storage

log = structlog.get_logger(__name__)

# One bigint key for pg_try_advisory_xact_lock: the bytes of "pmretent".
RETENTION_LOCK_KEY = int.from_bytes(b"pmretent", "big")

_TRY_LOCK = text("SELECT pg_try_advisory_xact_lock(:key)")

_TAKE_BATCH = text("""
WITH batch AS (
    SELECT id FROM images
     WHERE expires_at <= :now AND deleted_at IS NULL
     ORDER BY expires_at
     LIMIT :limit
       FOR UPDATE SKIP LOCKED
)
UPDATE images AS i SET deleted_at = now()
 WHERE i.id = ANY(ARRAY(SELECT id FROM batch))  -- a primary-key lookup, never a join over images
RETURNING i.job_id, i.storage_key, i.size_bytes
""")

_EXPIRE_JOBS = text("""
UPDATE jobs AS j SET state = 'expired'
 WHERE j.id = ANY(:job_ids)
   AND j.state = 'succeeded'
   AND NOT EXISTS (SELECT 1 FROM images AS i WHERE i.job_id = j.id AND i.deleted_at IS NULL)
""")

_PREVIEW = text("""
WITH expiring AS (
    SELECT job_id, size_bytes FROM images WHERE expires_at <= :now AND deleted_at IS NULL
)
SELECT (SELECT count(*) FROM expiring) AS images,
       (SELECT coalesce(sum(size_bytes), 0) FROM expiring) AS bytes,
       (SELECT count(*) FROM jobs AS j
         WHERE j.state = 'succeeded'
           AND j.id IN (SELECT job_id FROM expiring)
           AND NOT EXISTS (SELECT 1 FROM images AS i
                            WHERE i.job_id = j.id AND i.deleted_at IS NULL AND i.expires_at > :now)) AS jobs
""")


@dataclass
class CleanupReport:
    """What one ``cleanup_expired`` call did (with ``dry_run``: what it would do).

    ``images_deleted``: image rows marked deleted and their objects deleted; ``bytes_deleted``: the
    sum of their ``size_bytes``; ``jobs_expired``: jobs moved ``succeeded`` → ``expired``;
    ``batches``: committed batch transactions; ``lock_busy``: stopped because another process was
    cleaning (its batches are not counted here); ``elapsed_seconds``: wall time.
    """

    images_deleted: int = 0
    bytes_deleted: int = 0
    jobs_expired: int = 0
    batches: int = 0
    dry_run: bool = False
    lock_busy: bool = False
    elapsed_seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """The report as a JSON-ready dict (camelCase keys, as in the API)."""
        d = asdict(self)
        return {
            "imagesDeleted": d["images_deleted"], "bytesDeleted": d["bytes_deleted"],
            "jobsExpired": d["jobs_expired"], "batches": d["batches"], "dryRun": d["dry_run"],
            "lockBusy": d["lock_busy"], "elapsedSeconds": round(d["elapsed_seconds"], 3),
        }

    def summary(self) -> str:
        """One human line, as ``pixelmint storage cleanup`` prints it."""
        if self.dry_run:
            return (f"dry run: {self.images_deleted} expired image(s) ({self.bytes_deleted} bytes) would be "
                    f"deleted and {self.jobs_expired} job(s) expired; nothing was changed")
        line = (f"deleted {self.images_deleted} expired image(s) ({self.bytes_deleted} bytes) in {self.batches} "
                f"batch(es); {self.jobs_expired} job(s) expired; {self.elapsed_seconds:.1f}s")
        return line + ("; stopped early: another process is cleaning up" if self.lock_busy else "")


async def cleanup_expired(
    db: Database,
    storage: Storage,
    *,
    now: dt.datetime | None = None,
    batch_size: int = 1000,
    dry_run: bool = False,
    stop: asyncio.Event | None = None,
) -> CleanupReport:
    """Delete every image with ``expires_at <= now`` (tz-aware; default: the current time) that is not
    deleted yet: its object in ``storage``, then its row (``deleted_at``) and, once a succeeded
    job has no image left, the job (``state = 'expired'``). Works in batches of ``batch_size``
    images, one transaction each (see the module docstring); safe to run from several processes
    at once. Unlike services, it owns its transactions (``db`` is the process's ``Database``),
    like the job runner does.

    ``dry_run`` changes nothing and reports what a run would delete right now (one read-only
    query). ``stop``, when set, ends the run between batches.

    Returns a ``CleanupReport``. Raises ``StorageError`` when the storage refuses a delete (that
    batch is rolled back; earlier batches stay committed) and ``ValueError`` for
    ``batch_size < 1``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    cutoff = now or dt.datetime.now(dt.UTC)
    report = CleanupReport(dry_run=dry_run)
    started = time.monotonic()
    if dry_run:
        async with db.transaction() as session:
            row = (await session.execute(_PREVIEW, {"now": cutoff})).one()
        report.images_deleted, report.bytes_deleted, report.jobs_expired = int(row.images), int(row.bytes), int(row.jobs)
        report.elapsed_seconds = time.monotonic() - started
        return report

    while stop is None or not stop.is_set():
        async with db.transaction() as session:
            if not await session.scalar(_TRY_LOCK, {"key": RETENTION_LOCK_KEY}):
                report.lock_busy = True
                break
            rows = (await session.execute(_TAKE_BATCH, {"now": cutoff, "limit": batch_size})).all()
            if not rows:
                break
            # The objects go while the database expires the jobs (both before the commit; either
            # failing rolls the whole batch back, after both have finished).
            deleted, expired = await asyncio.gather(
                storage.delete_many([r.storage_key for r in rows]),
                session.execute(_EXPIRE_JOBS, {"job_ids": list({r.job_id for r in rows})}),
                return_exceptions=True,
            )
            for outcome in (deleted, expired):
                if isinstance(outcome, BaseException):
                    raise outcome
        report.batches += 1
        report.images_deleted += len(rows)
        report.bytes_deleted += sum(r.size_bytes for r in rows)
        report.jobs_expired += cast(CursorResult[Any], expired).rowcount  # an UPDATE's result
        if len(rows) < batch_size:
            break  # the rest (if any) is locked by someone else: the next run gets it
    report.elapsed_seconds = time.monotonic() - started
    return report


class RetentionTask:
    """Runs ``cleanup_expired`` now and then every ``interval_seconds`` until ``stop()``.

    Started by ``Runtime.start`` in processes that run a worker; any number of them may run (the
    advisory lock lets one clean at a time; the others find it busy and wait for their next turn).
    Errors are logged and retried at the next interval. ``ran`` is set once the first run has
    finished (successfully or not); ``last_report`` is the latest report.
    """

    def __init__(self, db: Database, storage: Storage, *, interval_seconds: float, batch_size: int = 1000) -> None:
        self.db = db
        self.storage = storage
        self.interval_seconds = interval_seconds
        self.batch_size = batch_size
        self.last_report: CleanupReport | None = None
        self.ran = asyncio.Event()
        self._stopping = asyncio.Event()

    async def run(self) -> None:
        while not self._stopping.is_set():
            try:
                report = await cleanup_expired(self.db, self.storage, batch_size=self.batch_size, stop=self._stopping)
                self.last_report = report
                if report.images_deleted:
                    log.info("retention_cleanup", **report.as_dict())
            except Exception:
                log.exception("retention_cleanup_failed")
            self.ran.set()
            with suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.interval_seconds)

    def stop(self) -> None:
        """Ask the loop to end after the current batch."""
        self._stopping.set()
