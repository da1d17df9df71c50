"""What job handlers share. A handler (one per job type, registered by the domain that owns the
type: ``jobs/registry.py``) gets the claimed job and returns a ``TaskOutcome``; it never settles the
job: the worker finishes it (fenced), and ``queue.mark_succeeded`` (or ``mark_succeeded_many``, several
jobs of a worker in one transaction) calls ``outcome.apply`` in the same transaction, so domain changes (a new model version, image rows) commit together with the
credit capture or not at all."""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable, Collection
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from pixelmint.jobs.tables import Job
from pixelmint.kit.db import Database
from pixelmint.kit.ids import new_id
from pixelmint.providers.base import (
    GeneratedImage,
    GenerationRequest,
    ProviderError,
    ProviderTrace,
    RemoteProvider,
    Submission,
)
from pixelmint.providers.registry import Providers
from pixelmint.settings import Settings
from pixelmint.storage import service as storage_service
from pixelmint.storage.backend import Storage
from pixelmint.storage.service import storage_key
from pixelmint.storage.tables import Image


@dataclass
class TaskContext:
    settings: Settings
    providers: Providers
    storage: Storage
    db: Database
    progress: Callable[[int], Awaitable[None]]
    log: Callable[[str], Awaitable[None]]


@dataclass
class TaskOutcome:
    result: dict[str, Any]
    stored_keys: list[str] = field(default_factory=list)
    # Runs in the success transaction, after the job is marked succeeded and its credits captured,
    # before the job's finish is announced (webhooks, listeners).
    apply: Callable[[AsyncSession, Job], Awaitable[None]] | None = None

    async def discard(self, storage: Storage, *, keep: Collection[str] = ()) -> None:
        """The job did not succeed with these outputs: delete the objects stored for it, except
        ``keep`` (best effort)."""
        for key in self.stored_keys:
            if key not in keep:
                with suppress(Exception):
                    await storage.delete(key)


# When resuming an earlier attempt's submission: gone at the provider, or canceled (by our own
# timeout or by the worker that lost the job) — submit again rather than fail.
RESUBMIT_CODES = ("provider_request_not_found", "provider_result_unavailable", "provider_canceled")


def provider_trace(ctx: TaskContext, job: Job) -> ProviderTrace:
    """A trace that persists the provider's request id and handle as soon as it has accepted the
    request (so a retried attempt resumes instead of paying twice) and copies provider log lines
    into the job's log."""

    async def on_submit(submission: Submission) -> None:
        async with ctx.db.transaction() as session:
            await session.execute(
                text("UPDATE jobs SET provider_request_id = :rid, provider_handle = :handle WHERE id = :id"),
                {"rid": submission.request_id, "handle": submission.handle, "id": job.id},
            )
        job.provider_handle = submission.handle
        await ctx.log(f"submitted to {submission.provider} as {submission.request_id}")

    async def on_logs(lines: list[str]) -> None:
        for line in lines:
            await ctx.log(line)

    return ProviderTrace(on_submit=on_submit, on_logs=on_logs)


async def remote_generate(
    ctx: TaskContext, job: Job, remote: RemoteProvider, request: GenerationRequest
) -> tuple[list[GeneratedImage], dict[str, Any]]:
    """Generate at a remote provider (submit + poll), resuming the attempt's earlier submission
    when there is one; a submission the provider no longer has is submitted again."""
    trace = provider_trace(ctx, job)
    try:
        if job.provider_handle:  # an earlier attempt's request (a lost worker, or its callback came)
            trace.provider, trace.request_id, trace.handle = job.provider, job.provider_request_id, job.provider_handle
            try:
                images = await remote.wait(job.provider_handle, request=request, progress=ctx.progress, trace=trace)
            except ProviderError as exc:
                if exc.code not in RESUBMIT_CODES:
                    raise
                await ctx.log(f"the earlier submission is gone at the provider ({exc.code}); submitting again")
                images = await remote.generate(request, progress=ctx.progress, trace=trace)
        else:
            images = await remote.generate(request, progress=ctx.progress, trace=trace)
    finally:
        details = trace.as_dict()
    return images, details


class AwaitingWebhook(Exception):
    """The provider accepted the request and will call back: the job waits in ``awaiting_webhook``."""


def webhook_url(ctx: TaskContext, provider: str, remote: RemoteProvider) -> str | None:
    """Where the provider should call back, when this server is reachable (``PIXELMINT_PUBLIC_URL``)
    and the provider supports callbacks; otherwise ``None`` and the worker polls."""
    if not (ctx.settings.public_url and remote.supports_webhooks):
        return None
    return f"{ctx.settings.public_url.rstrip('/')}/api/v1/webhooks/{provider}"


async def store_generated(
    ctx: TaskContext, job: Job, request: GenerationRequest, generated: list[GeneratedImage],
    provider_details: dict[str, Any] | None = None,
) -> TaskOutcome:
    """Store a generation's images; their rows are added by ``outcome.apply`` in the success
    transaction. Raises ``ProviderError`` (provider_bad_result) for a wrong image count."""
    if len(generated) != request.num_images:
        raise ProviderError(
            f"provider {job.provider} returned {len(generated)} images, expected {request.num_images}",
            code="provider_bad_result",
        )
    now = dt.datetime.now(dt.UTC)
    expires = now + dt.timedelta(days=ctx.settings.image_retention_days)
    outcome = TaskOutcome(result={"seed": request.seed, "imageCount": len(generated)})
    if provider_details:
        outcome.result["provider"] = provider_details
    rows = []
    for image in generated:
        image_id = new_id()
        key = storage_key(job.team_id, image_id, now)
        await ctx.storage.put(
            key, image.data, content_type=image.content_type,
            metadata={"team": str(job.team_id), "job": str(job.id), "model": request.model_key},
        )
        outcome.stored_keys.append(key)
        rows.append(
            Image(
                id=image_id, team_id=job.team_id, job_id=job.id, user_id=job.user_id, storage_key=key,
                content_type=image.content_type, width=image.width, height=image.height,
                size_bytes=len(image.data), seed=image.seed, created_at=now, expires_at=expires,
                params={k: v for k, v in job.params.items() if k != "numImages"} | {"seed": image.seed},
            )
        )

    async def add_images(session: AsyncSession, _job: Job) -> None:
        await storage_service.add_images(session, rows)

    outcome.apply = add_images
    await ctx.log(f"stored {len(rows)} image(s)")
    return outcome


Handler = Callable[[TaskContext, Job], Awaitable[TaskOutcome]]
