"""``/api/v1/generate`` (reading and cancelling generations; submitting one is
``flows/endpoints.py``), ``/api/v1/jobs`` and the providers' webhooks."""

from __future__ import annotations

import contextlib
import json
import uuid
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from sqlalchemy.ext.asyncio import AsyncSession
from sse_starlette import EventSourceResponse

from pixelmint.accounts.auth import PrincipalDep
from pixelmint.accounts.service import Principal
from pixelmint.jobs import callbacks, service
from pixelmint.jobs.deps import JobEventsDep, ProvidersDep
from pixelmint.jobs.errors import JobFinished, JobNotFound, WebhookNotConfigured
from pixelmint.jobs.events import watch_job
from pixelmint.jobs.presenters import present_job, present_jobs
from pixelmint.jobs.queue import FINISHED_STATES
from pixelmint.jobs.schemas import (
    CreditEntryOut,
    JobDetail,
    JobEnvelope,
    JobLogOut,
    JobPage,
)
from pixelmint.jobs.tables import JOB_STATES, JOB_TYPES, Job
from pixelmint.kit.errors import PixelmintError, responses
from pixelmint.kit.http import DatabaseDep, SessionDep, SettingsDep
from pixelmint.kit.pagination import decode_cursor, encode_cursor, timestamp
from pixelmint.kit.schemas import UtcDatetime
from pixelmint.providers.base import WebhookVerificationError
from pixelmint.providers.registry import Providers
from pixelmint.storage.deps import UrlSignerDep
from pixelmint.storage.schemas import UrlSigner

router = APIRouter(prefix="/api/v1/generate", tags=["generate"])

ERRORS = responses(JobNotFound, JobFinished)


@router.get("/history", response_model=JobPage, summary="Past generations with the credits each used")
async def generation_history(
    principal: PrincipalDep,
    session: SessionDep,
    urls: UrlSignerDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: str | None = None,
) -> JobPage:
    """The team's image generations, newest first (``chargedCredits`` is what each cost)."""
    return await _job_page(session, principal, urls, limit=limit, cursor=cursor, job_type="image_generation")


# ":uuid": "/generate/history" is not a job id, so that DELETE there is 405, not a 422 about the id.
@router.get("/{job_id:uuid}", response_model=JobEnvelope, responses=ERRORS, summary="Get a generation")
@router.get("/{job_id:uuid}/status", response_model=JobEnvelope, responses=ERRORS, include_in_schema=False)
async def get_generation(job_id: uuid.UUID, principal: PrincipalDep, session: SessionDep, urls: UrlSignerDep) -> JobEnvelope:
    job = await service.get_job(session, principal, job_id)
    return JobEnvelope(job=await present_job(session, job, urls))


@router.delete("/{job_id:uuid}", response_model=JobEnvelope, responses=ERRORS, summary="Cancel a generation")
async def cancel_generation(
    job_id: uuid.UUID, principal: PrincipalDep, session: SessionDep, providers: ProvidersDep, urls: UrlSignerDep
) -> JobEnvelope:
    """A queued job is canceled at once with its whole reservation released; a running one is
    asked to stop and is released when its worker confirms; a finished one is 409."""
    return JobEnvelope(job=await present_job(session, await _cancel(session, principal, providers, job_id), urls))


async def _cancel(session: AsyncSession, principal: Principal, providers: Providers, job_id: uuid.UUID) -> Job:
    """Cancel the job (committed), then, if its provider held it (awaiting a callback), tell the
    provider, best effort (a running job's worker does this itself when its task is cancelled)."""
    job = await service.cancel_job(session, principal, job_id)
    await session.commit()  # canceled and released before the provider hears of it
    await service.cancel_at_provider(job, providers)
    return job


jobs_router = APIRouter(prefix="/api/v1/jobs", tags=["jobs"])


@jobs_router.get("", response_model=JobPage, summary="The team's jobs, newest first")
async def list_jobs(
    principal: PrincipalDep,
    session: SessionDep,
    urls: UrlSignerDep,
    status_: Annotated[Literal[JOB_STATES] | None, Query(alias="status")] = None,  # type: ignore[valid-type]
    type_: Annotated[Literal[JOB_TYPES] | None, Query(alias="type")] = None,  # type: ignore[valid-type]
    model_id: Annotated[str | None, Query(
        alias="modelId", max_length=100, description="A custom or reference model id")] = None,
    created_after: Annotated[UtcDatetime | None, Query(alias="createdAfter")] = None,
    created_before: Annotated[UtcDatetime | None, Query(alias="createdBefore")] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: str | None = None,
) -> JobPage:
    return await _job_page(
        session, principal, urls, limit=limit, cursor=cursor, status=status_, job_type=type_, model_id=model_id,
        created_after=created_after, created_before=created_before,
    )


async def _job_page(
    session: AsyncSession, principal: Principal, urls: UrlSigner, *, limit: int, cursor: str | None, **filters: Any
) -> JobPage:
    """A page of the team's jobs matching ``filters`` (``service.list_jobs``), newest first."""
    after = tuple(decode_cursor(cursor, timestamp, uuid.UUID)) if cursor else None
    rows = await service.list_jobs(session, principal, limit=limit + 1, after=after, **filters)
    page = rows[:limit]
    return JobPage(
        items=await present_jobs(session, page, urls),
        next_cursor=encode_cursor(page[-1].created_at.isoformat(), str(page[-1].id)) if len(rows) > limit else None,
    )


@jobs_router.get("/{job_id}", response_model=JobDetail, responses=ERRORS, summary="A job with its credits and logs")
async def get_job(job_id: uuid.UUID, principal: PrincipalDep, session: SessionDep, urls: UrlSignerDep) -> JobDetail:
    job = await service.get_job(session, principal, job_id)
    return JobDetail(
        job=await present_job(session, job, urls),
        credit_transactions=[
            CreditEntryOut(id=t.id, type=t.type, amount=t.amount, reserved_delta=t.reserved_delta,
                           created_at=t.created_at, description=t.description)
            for t in await service.job_credit_transactions(session, job)
        ],
        logs=[JobLogOut(at=line.created_at, message=line.message) for line in await service.job_logs(session, job.id)],
    )


@jobs_router.delete("/{job_id}", response_model=JobEnvelope, responses=ERRORS, summary="Cancel a job")
async def cancel_job(
    job_id: uuid.UUID, principal: PrincipalDep, session: SessionDep, providers: ProvidersDep, urls: UrlSignerDep
) -> JobEnvelope:
    """Queued: canceled now, reservation released. Running: canceled at its worker/provider and
    released when that is confirmed (``cancelRequested`` is true until then). Finished: 409."""
    return JobEnvelope(job=await present_job(session, await _cancel(session, principal, providers, job_id), urls))


@jobs_router.get(
    "/{job_id}/events",
    responses={200: {"content": {"text/event-stream": {}}, "description": "status, progress, log and done events"}},
    summary="Server-sent events for a job",
)
async def job_events(
    job_id: uuid.UUID, principal: PrincipalDep, session: SessionDep, db: DatabaseDep, events: JobEventsDep,
    settings: SettingsDep,
) -> EventSourceResponse:
    """``event: status`` (``{"status", "progress"}``) on every change, ``event: log`` per log line,
    and a final ``event: done`` with the finished job's status; woken by the job's NOTIFY events.
    A stream ends after ``PIXELMINT_EVENT_STREAM_MAX_SECONDS`` without ``done`` (EventSource
    clients reconnect), so an abandoned stream does not hold a connection forever."""
    await service.get_job(session, principal, job_id)  # 404 for another team's job
    await session.close()

    async def stream():
        last_status, last_log = None, 0
        async with contextlib.aclosing(watch_job(db, events, job_id, timeout=settings.event_stream_max_seconds)) as updates:
            async for job in updates:
                assert job is not None
                async with db.transaction() as s:
                    lines = await service.job_logs(s, job_id, after_id=last_log)
                for line in lines:
                    last_log = line.id
                    yield {"event": "log", "data": json.dumps({"at": line.created_at.isoformat(), "message": line.message})}
                status = {"status": job.state, "progress": job.progress}
                if status != last_status:
                    last_status = status
                    yield {"event": "status", "data": json.dumps(status)}
                if job.state in FINISHED_STATES:
                    yield {"event": "done", "data": json.dumps(status)}

    return EventSourceResponse(stream(), ping=15)


webhooks_router = APIRouter(prefix="/api/v1/webhooks", tags=["webhooks"])


async def provider_webhook(
    provider: str, request: Request, db: DatabaseDep, providers: ProvidersDep
) -> dict[str, str | None]:
    """Verify the signature over the exact body, store the raw event once, and hand the waiting
    job on exactly once: to a worker that collects and stores its outputs, or failed and released
    (``jobs/callbacks.py``)."""
    try:
        remote = providers.remote(provider)
    except PixelmintError:
        remote = None
    if remote is None or not remote.supports_webhooks:
        raise WebhookNotConfigured(f"No webhook provider {provider!r} is configured.")
    try:
        event = await remote.verify_webhook(request.headers, await request.body())
    except WebhookVerificationError as exc:
        if exc.status_code == 400 and exc.reason != "bad_payload":
            exc.status_code = 401
        raise
    result = await callbacks.handle(db=db, provider=provider, event=event)
    return {"status": result.status, "jobId": result.job_id}


WEBHOOK_RESPONSES = responses(WebhookVerificationError, WebhookNotConfigured, _401={
    "description": "invalid_webhook: a missing or bad signature, or a stale timestamp; nothing changed"})


@webhooks_router.post("/fal", responses=WEBHOOK_RESPONSES, summary="fal callbacks (Ed25519 signatures over the JWKS)")
async def fal_webhook(request: Request, db: DatabaseDep, providers: ProvidersDep) -> dict[str, str | None]:
    return await provider_webhook("fal", request, db, providers)


@webhooks_router.post("/replicate", responses=WEBHOOK_RESPONSES, summary="Replicate callbacks (signed webhook secret)")
async def replicate_webhook(request: Request, db: DatabaseDep, providers: ProvidersDep) -> dict[str, str | None]:
    return await provider_webhook("replicate", request, db, providers)
