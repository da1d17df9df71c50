"""Provider callbacks (webhooks): verify, store the raw event under its delivery id, and hand the
waiting job on — in one transaction, so that a failure leaves nothing behind and the provider's
retry is handled like the first delivery.

A callback that says the provider's request succeeded hands the job back to the workers
(``queue.resume_by_polling``): a worker collects the outputs by polling the provider with the
stored handle, stores them and finishes the job with its usual error handling (retries with
backoff, then failed and released). The HTTP request never downloads or stores images. A callback
that says the request failed or was canceled fails the job and releases its credits at once.

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
from pixelmint.kit import metrics
from pixelmint.kit.db import Database
from pixelmint.providers.base import ProviderState, WebhookEvent

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class CallbackResult:
    status: str  # "queued" (outputs to collect) | "finished" | "duplicate" | "ignored" | "progress"
    job_id: str | None = None


async def handle(*, db: Database, provider: str, event: WebhookEvent) -> CallbackResult:
    """Handle one verified callback (``event`` comes from the provider's ``verify_webhook``) in
    one transaction. Raises database errors only (then nothing is stored)."""
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
        if event.state is ProviderState.SUCCEEDED:
            await queue.resume_by_polling(session, fence, job)
            return CallbackResult("queued", str(job.id))
        code = "provider_job_failed" if event.state is ProviderState.FAILED else "provider_canceled"
        metrics.after_commit(session, metrics.provider_errors.labels(provider=provider, code=code).inc)
        await queue.mark_failed(
            session, fence, code=code,
            message=f"{provider}: {event.error or event.state.value}", retry_in=None,
        )
        return CallbackResult("finished", str(job.id))
