"""Provider callbacks (webhooks): verify, store the raw event under its delivery id, and finish
the waiting job exactly once — download the outputs, store them, capture the credits — or fail it
and release them.

Exactly once: the event row is unique on (provider, delivery id), so a redelivery changes
nothing; the job's transition is fenced on ``state = 'awaiting_webhook'`` (and the attempt), so a
second event for the same request, or a late one after the job was cancelled, changes nothing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
import structlog
from sqlalchemy import select, text

from pixelmint.jobs import queue
from pixelmint.jobs.queue import Fence
from pixelmint.jobs.tables import Job
from pixelmint.jobs.tasks import TaskContext, TaskOutcome, generation_request, new_version, store_generated
from pixelmint.kit.db import Database
from pixelmint.providers.base import ProviderError, ProviderState, WebhookEvent
from pixelmint.providers.registry import Providers
from pixelmint.settings import Settings
from pixelmint.storage.backend import Storage

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class CallbackResult:
    status: str  # "finished" | "duplicate" | "ignored" | "progress"
    job_id: str | None = None


async def handle(
    *, db: Database, providers: Providers, storage: Storage, settings: Settings, provider: str,
    event: WebhookEvent,
) -> CallbackResult:
    """Handle one verified callback (``event`` comes from the provider's ``verify_webhook``)."""
    async with db.transaction() as session:
        stored = (await session.execute(
            text("""
                INSERT INTO provider_webhook_events (provider, delivery_id, request_id, state, payload, job_id)
                VALUES (CAST(:provider AS varchar), :delivery, CAST(:request AS varchar), :state,
                        CAST(:payload AS jsonb),
                        (SELECT id FROM jobs WHERE provider = CAST(:provider AS varchar)
                                               AND provider_request_id = CAST(:request AS varchar)))
                ON CONFLICT (provider, delivery_id) DO NOTHING
                RETURNING id, job_id
            """),
            {"provider": provider, "delivery": event.delivery_id, "request": event.request_id,
             "state": event.state.value, "payload": json.dumps(dict(event.payload), default=str)},
        )).one_or_none()
        if stored is None:
            return CallbackResult("duplicate")  # this delivery was handled before
        if stored.job_id is None:
            return CallbackResult("ignored")  # stored, but no job has this request id
        # FOR UPDATE: a worker handing the job over to this callback holds the row until its
        # hand-off commits; waiting for it means we see awaiting_webhook (or, if the hand-off comes
        # later, it sees this stored event and resumes by polling: queue.mark_awaiting_webhook).
        job = await session.scalar(select(Job).where(Job.id == stored.job_id).with_for_update())
    if job is None or job.state != "awaiting_webhook":
        log.info("webhook_ignored", provider=provider, request=event.request_id, state=job.state if job else None)
        return CallbackResult("ignored", str(stored.job_id))
    if not event.state.terminal:
        return CallbackResult("progress", str(job.id))

    fence = Fence(job.id, job.locked_by or "", job.attempt, from_state="awaiting_webhook")
    if event.state is not ProviderState.SUCCEEDED:
        async with db.transaction() as session:
            await queue.mark_failed(
                session, fence, code="provider_job_failed" if event.state is ProviderState.FAILED else "provider_canceled",
                message=f"{provider}: {event.error or event.state.value}", retry_in=None,
            )
        return CallbackResult("finished", str(job.id))

    async def no_progress(_: int) -> None:
        return None

    async def add_log(message: str) -> None:
        async with db.transaction() as session:
            await queue.add_log(session, job.id, message)

    ctx = TaskContext(settings, providers, storage, db, no_progress, add_log)
    remote = providers.remote(provider)
    assert remote is not None and job.provider_handle is not None
    outcome: TaskOutcome | None = None
    try:
        if job.type == "image_generation":
            request = await generation_request(ctx, job)
            images = await remote.result(job.provider_handle, output=event.output, request=request)
            outcome = await store_generated(ctx, job, request, images, {"requestId": event.request_id, "via": "webhook"})
        else:
            artifact = (await remote.training_result(job.provider_handle, output=event.output)).as_dict()
            outcome = new_version(artifact, kind="creation", prompt=None, iteration=0, result={"version": 1})
        async with db.transaction() as session:
            finished = await queue.mark_succeeded(session, fence, result=outcome.result)
            if finished is not None and outcome.apply is not None:
                await outcome.apply(session, finished)
        if finished is None:
            await outcome.discard(storage)
            return CallbackResult("ignored", str(job.id))
    except ProviderError as exc:
        if outcome is not None:
            await outcome.discard(storage)
        async with db.transaction() as session:
            await queue.mark_failed(session, fence, code=exc.code, message=str(exc), retry_in=None)
    return CallbackResult("finished", str(job.id))

