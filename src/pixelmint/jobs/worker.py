"""The worker: claims jobs, runs their handlers, heartbeats leases, rescues dead workers' jobs.

One ``Worker`` runs up to ``concurrency`` jobs at once in its event loop. It sleeps until a
``pixelmint_jobs`` NOTIFY (or its own finished job, or the poll interval as a fallback) says work
may be claimable. Every ``lease/3`` seconds it extends the leases of its running jobs (and learns
of cancellations); every ``lease/2`` seconds it rescues jobs whose lease ran out, from any worker,
and releases credit-API holds past their time-to-live. Its successes are committed in groups
(``_Successes``): the jobs that succeed while one success transaction is in flight share the next.
``pixelmint worker`` runs workers alone; ``pixelmint serve`` runs one in-process.
"""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from dataclasses import dataclass
from typing import Any

import structlog

from pixelmint.credits import apps as credit_holds
from pixelmint.jobs import queue
from pixelmint.jobs.events import JobEvents
from pixelmint.jobs.queue import Fence
from pixelmint.jobs.tables import Job
from pixelmint.jobs.tasks import AwaitingWebhook, Handler, TaskContext, TaskOutcome
from pixelmint.kit import metrics
from pixelmint.kit.db import Database
from pixelmint.providers.base import ProviderError
from pixelmint.providers.registry import Providers
from pixelmint.settings import Settings
from pixelmint.storage import service as images
from pixelmint.storage.backend import Storage, StorageError

log = structlog.get_logger(__name__)


class Worker:
    def __init__(
        self,
        *,
        db: Database,
        events: JobEvents,
        settings: Settings,
        providers: Providers,
        storage: Storage,
        handlers: dict[str, Handler],
        concurrency: int | None = None,
        worker_id: str | None = None,
    ) -> None:
        self.db = db
        self.events = events
        self.settings = settings
        self.providers = providers
        self.storage = storage
        self.concurrency = concurrency or settings.worker_concurrency
        self.handlers = handlers  # job type → handler (jobs/registry.py)
        self.id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self._running: dict[uuid.UUID, asyncio.Task[None]] = {}
        self._stopping = asyncio.Event()
        self._slot_freed = asyncio.Event()
        self._successes = _Successes(self.db, self.id, max_batch=self.concurrency)

    async def run(self) -> None:
        """Run until ``stop()``; then wait for the jobs in hand to finish."""
        log.info("worker_started", worker=self.id, concurrency=self.concurrency)
        self.events.add_state_listener(self._on_job_state)
        background = [
            asyncio.create_task(self._every(self.settings.lease_seconds / 3, self._heartbeat)),
            asyncio.create_task(self._every(self.settings.lease_seconds / 2, self._rescue)),
        ]
        try:
            while not self._stopping.is_set():
                claimed = await self._claim_available()
                if not claimed:
                    await self._wait_for_work()
        finally:
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            if self._running:
                await asyncio.gather(*self._running.values(), return_exceptions=True)
            log.info("worker_stopped", worker=self.id)

    def stop(self) -> None:
        self._stopping.set()
        self._slot_freed.set()

    async def _claim_available(self) -> int:
        """Claim until full or nothing is claimable; returns how many jobs were claimed."""
        total = 0
        while not self._stopping.is_set():
            free = self.concurrency - len(self._running)
            if free <= 0:
                return total
            self.events.jobs_available.clear()
            try:
                async with self.db.transaction() as session:
                    jobs = await queue.claim(
                        session, worker_id=self.id, demand=free, lease_seconds=self.settings.lease_seconds
                    )
            except Exception:
                log.exception("claim_failed", worker=self.id)
                return total
            if not jobs:
                return total
            for job in jobs:
                self._running[job.id] = asyncio.create_task(self._process(job))
            total += len(jobs)
        return total

    async def _wait_for_work(self) -> None:
        self._slot_freed.clear()
        waits = [asyncio.create_task(self._slot_freed.wait())]
        if len(self._running) < self.concurrency:
            waits.append(asyncio.create_task(self.events.jobs_available.wait()))
        try:
            await asyncio.wait(waits, timeout=self.settings.poll_interval_seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in waits:
                task.cancel()

    async def _every(self, seconds: float, action) -> None:
        while True:
            await asyncio.sleep(seconds)
            try:
                await action()
            except Exception:
                log.exception("periodic_task_failed", worker=self.id, task=action.__name__)

    async def _heartbeat(self) -> None:
        if not self._running:
            return
        asked = list(self._running)
        async with self.db.transaction() as session:
            held = await queue.extend_leases(
                session, worker_id=self.id, job_ids=asked, lease_seconds=self.settings.lease_seconds
            )
        # Only the jobs this heartbeat asked about: jobs claimed while it waited are not in
        # ``held`` yet and must not be mistaken for lost ones.
        for job_id in asked:
            task = self._running.get(job_id)
            if task is not None and not task.cancelling() and (job_id not in held or held[job_id]):
                task.cancel()  # once: a second cancel would interrupt the task's own settlement

    async def _rescue(self) -> None:
        async with self.db.transaction() as session:
            rescued = await queue.rescue_expired(
                session, retry_base=self.settings.retry_base_seconds, retry_cap=self.settings.retry_max_seconds
            )
        for job in rescued:
            log.warning("job_rescued", job=str(job.id), state=job.state, attempt=job.attempt)
        if rescued:
            self.events.jobs_available.set()
        async with self.db.transaction() as session:
            released = await credit_holds.release_expired_holds(session)
            resumed = await queue.requeue_stale_webhook_jobs(
                session, older_than_seconds=self.settings.provider_generation_timeout_seconds
            )
        if resumed:
            log.warning("webhook_jobs_resumed_by_polling", count=resumed)
            self.events.jobs_available.set()
        if released:
            log.info("expired_holds_released", count=released)

    def _on_job_state(self, job_id: uuid.UUID, state: str) -> None:
        task = self._running.get(job_id)
        if task is not None and state == "cancel_requested" and not task.cancelling():
            task.cancel()

    async def _process(self, job: Job) -> None:
        fence = Fence(job.id, self.id, job.attempt)
        logger = log.bind(job=str(job.id), type=job.type, attempt=job.attempt, worker=self.id)
        outcome = None
        try:
            if job.cancel_requested_at is not None:
                raise asyncio.CancelledError
            context = TaskContext(
                self.settings, self.providers, self.storage, self.db,
                self._progress_reporter(fence), self._logger(fence),
            )
            timeout = self.settings.job_timeouts.get(job.type, 3600)
            try:
                async with asyncio.timeout(timeout):
                    outcome = await self.handlers[job.type](context, job)
            except TimeoutError:
                raise _TimedOut(f"{job.type} took longer than {timeout:g} s (PIXELMINT_JOB_TIMEOUTS).") from None
            finished = await self._successes.finish(queue.Success(fence, outcome.result, outcome.apply))
            if finished is _ALONE:  # its batch failed: this job alone, as if it had been alone
                async with self.db.transaction() as session:
                    finished = await queue.mark_succeeded(session, fence, result=outcome.result, apply=outcome.apply)
            if finished is None:
                raise _LostJob
            logger.info("job_succeeded", charged=str(finished.charged_credits))
        except AwaitingWebhook:
            async with self.db.transaction() as session:
                waiting = await queue.mark_awaiting_webhook(session, fence)
            logger.info("job_awaiting_webhook" if waiting else "job_lost_before_handoff")
        except _LostJob:
            logger.warning("job_lost_before_finish")
            await self._discard(fence, outcome)
        except asyncio.CancelledError:
            async with self.db.transaction() as session:
                canceled = await queue.mark_canceled(session, fence)
            logger.info("job_canceled" if canceled else "job_abandoned")
            await self._discard(fence, outcome)
        except Exception as exc:  # noqa: BLE001 - every failure must end the job and settle credits
            code, message, retryable = _describe_failure(exc)
            if isinstance(exc, ProviderError):
                metrics.provider_errors.labels(provider=job.provider, code=code).inc()
            retry_in = (
                queue.backoff_seconds(job.attempt, base=self.settings.retry_base_seconds, cap=self.settings.retry_max_seconds)
                if retryable
                else None
            )
            async with self.db.transaction() as session:
                after = await queue.mark_failed(session, fence, code=code, message=message, retry_in=retry_in)
            logger.warning("job_failed", code=code, error=message, next_state=after.state if after else "lost")
            if code == "internal_error":
                logger.exception("job_internal_error")
            await self._discard(fence, outcome)
        finally:
            self._running.pop(job.id, None)
            self._slot_freed.set()

    def _logger(self, fence: Fence):
        async def log_line(message: str) -> None:
            async with self.db.transaction() as session:
                await queue.add_log(session, fence.job_id, message)

        return log_line

    def _progress_reporter(self, fence: Fence):
        async def report(progress: int) -> None:
            async with self.db.transaction() as session:
                await queue.set_progress(session, fence, progress)

        return report

    async def _discard(self, fence: Fence, outcome: TaskOutcome | None) -> None:
        """Delete what a failed, canceled or lost attempt stored — except the objects an image row
        of the job references. Those belong to a success whose commit went through although the
        worker never heard so (its connection failed, or the heartbeat saw the job succeeded and
        canceled the task while the COMMIT's reply was on its way). Called after the fenced
        transition that ended the attempt: that update waits for the success transaction's row
        lock, so this read sees whether it committed."""
        if outcome is None or not outcome.stored_keys:
            return
        async with self.db.transaction() as session:
            kept = await images.referenced_keys(session, fence.job_id, outcome.stored_keys)
        await outcome.discard(self.storage, keep=kept)


_ALONE: Any = object()  # _Successes.finish: the batch failed, finish the job in a transaction of its own
_LEAD: Any = object()  # a waiter's signal: lead the next batch


@dataclass(eq=False)
class _Waiting:
    success: queue.Success
    answer: asyncio.Future[Any]


class _Successes:
    """Group commit of the worker's successes (TigerBeetle's batching, ``hot-rows-and-scale.md``
    A3/D1): a job whose handler succeeded is finished at once (with the jobs that succeeded in the
    same turn of the event loop), in a transaction of its own, when no success transaction of this
    worker is in flight; otherwise it waits and the jobs that finished meanwhile go together in
    the next one (``queue.mark_succeeded_many``, up to ``max_batch``): one commit, one fenced
    update, one webhook statement for all of them. No added latency for a lone job.

    The first waiter leads a batch in its own task (a cancellation of that task reaches the
    batch's statements, as it reaches a job's own transaction), then hands the lead to the next
    waiter. A failed batch changes nothing: each of its jobs is answered ``_ALONE`` and finished
    in a transaction of its own, so that one job's failure (its ``apply``, a listener) cannot
    roll back another's success. A waiter canceled before its batch starts leaves it; one canceled
    while its batch is in flight leaves the outcome to the batch (its success stands if the batch
    commits, as when a cancellation comes just after a job's own COMMIT)."""

    def __init__(self, db: Database, worker_id: str, *, max_batch: int) -> None:
        self._db = db
        self._worker_id = worker_id
        self._max_batch = max(1, max_batch)
        self._waiting: list[_Waiting] = []
        self._leading = False

    async def finish(self, success: queue.Success) -> Job | None:
        """The job finished (the ``Job``), or lost (``None``), or ``_ALONE``."""
        me = _Waiting(success, asyncio.get_running_loop().create_future())
        if self._leading:
            self._waiting.append(me)
            try:
                answer = await me.answer
            except asyncio.CancelledError:
                if me in self._waiting:
                    self._waiting.remove(me)
                elif me.answer.done() and not me.answer.cancelled() and me.answer.result() is _LEAD:
                    self._pass_lead()  # made leader, then canceled before it could lead
                raise
            if answer is not _LEAD:
                return answer
        self._leading = True
        try:
            await asyncio.sleep(0)  # the jobs that finish in this same turn of the event loop come along
            return await self._lead(me)
        finally:
            self._pass_lead()

    def _pass_lead(self) -> None:
        while self._waiting:
            nxt = self._waiting.pop(0)
            if not nxt.answer.done():
                nxt.answer.set_result(_LEAD)
                return
        self._leading = False

    async def _lead(self, me: _Waiting) -> Job | None:
        batch = [me]
        while self._waiting and len(batch) < self._max_batch:
            other = self._waiting.pop(0)
            if not other.answer.done():
                batch.append(other)
        try:
            async with self._db.transaction() as session:
                done = await queue.mark_succeeded_many(session, self._worker_id, [w.success for w in batch])
        except asyncio.CancelledError:
            self._answer(batch[1:], lambda _: _ALONE)
            raise
        except Exception:  # noqa: BLE001 - each job then meets its own failure alone
            if len(batch) == 1:
                raise
            log.info("success_batch_failed", worker=self._worker_id, jobs=len(batch))  # each job alone now
            self._answer(batch[1:], lambda _: _ALONE)
            return _ALONE
        self._answer(batch[1:], lambda w: done.get(w.success.fence.job_id))
        return done.get(me.success.fence.job_id)

    @staticmethod
    def _answer(waiting: list[_Waiting], answer: Any) -> None:
        for w in waiting:
            if not w.answer.done():
                w.answer.set_result(answer(w))


class _TimedOut(Exception):
    """The handler ran past its job type's timeout."""


class _LostJob(Exception):
    """The fenced transition found the job no longer ours (rescued after a lost lease)."""


def _describe_failure(exc: Exception) -> tuple[str, str, bool]:
    if isinstance(exc, ProviderError):
        return exc.code, str(exc), exc.retryable
    if isinstance(exc, _TimedOut):
        return "timeout", str(exc), True
    if isinstance(exc, StorageError):
        return "storage_error", f"Storing the output failed: {exc}. Check the storage settings.", True
    return "internal_error", f"{type(exc).__name__}: {exc}", False
