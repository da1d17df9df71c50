"""``/api/v1/generate``: submit an image generation, read it, cancel it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from typing import Annotated, Any, Literal

import structlog
from fastapi import APIRouter, Query, Request, status
from fastapi.responses import JSONResponse
from sqlalchemy.ext.asyncio import AsyncSession
from sse_starlette import EventSourceResponse

from pixelmint.api.deps import IdempotencyDep, PrincipalDep, RuntimeDep, SessionDep, rate_limit
from pixelmint.api.runtime import Runtime
from pixelmint.credits.pricing import current_pricing
from pixelmint.jobs import callbacks, service
from pixelmint.jobs.presenters import present_job, present_jobs
from pixelmint.jobs.queue import FINISHED_STATES
from pixelmint.jobs.schemas import (
    CreditEntryOut,
    GenerateRequest,
    JobDetail,
    JobEnvelope,
    JobLogOut,
    JobPage,
)
from pixelmint.jobs.tables import JOB_STATES, JOB_TYPES, Job
from pixelmint.kit.errors import NotFound, PixelmintError
from pixelmint.kit.pagination import decode_cursor, encode_cursor, timestamp
from pixelmint.kit.schemas import UtcDatetime
from pixelmint.providers.base import WebhookVerificationError

log = structlog.get_logger(__name__)
router = APIRouter(prefix="/api/v1/generate", tags=["generate"])

ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "Missing or invalid API key"},
    402: {"description": "insufficient_credits: nothing was reserved and no job was created"},
    404: {"description": "Unknown model or job"},
    409: {"description": "Model not ready, job already finished, or Idempotency-Key reused / in progress"},
    422: {"description": "Invalid input (stable codes: invalid_resolution, invalid_prompt, ...)"},
}


async def wait_until_finished(runtime: Runtime, session: AsyncSession, job: Job, timeout: float) -> Job:
    """Wait (woken by the job's NOTIFY events, not by polling) until ``job`` finishes or
    ``timeout`` seconds pass; returns the job as last read."""
    deadline = time.monotonic() + timeout
    while True:
        changed = runtime.events.watch(job.id)
        try:
            await session.refresh(job)
            await session.commit()  # end the read transaction: the next read sees new commits
            if job.state in FINISHED_STATES:
                return job
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return job
            try:
                await asyncio.wait_for(changed.wait(), remaining)
            except TimeoutError:
                pass
        finally:
            runtime.events.unwatch(job.id, changed)


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=JobEnvelope,
    responses={
        200: {"model": JobEnvelope, "description": "Finished (waitForResult)"}, **ERRORS,
        429: {"description": "rate_limited (see Retry-After) or queue_full"},
    },
    summary="Generate images",
    dependencies=[rate_limit("generate")],
)
async def generate(
    body: GenerateRequest, principal: PrincipalDep, session: SessionDep, runtime: RuntimeDep, request: Request,
    idempotency: IdempotencyDep,
) -> JobEnvelope | JSONResponse:
    """Price the generation, reserve its credits and queue it, atomically. Answers 202 with the
    queued job; with ``waitForResult`` waits up to the server's limit and answers 200 with the
    finished job and its images (or 202 if time ran out). With ``Idempotency-Key`` the answer is
    stored in the reserving transaction (``kit/idempotency.py``)."""
    job, free_left = await service.submit_generation(
        session, principal, body, settings=runtime.settings, pricing=await current_pricing(session)
    )
    envelope = JobEnvelope(job=await present_job(session, job, runtime, request), free_generations_remaining=free_left)
    queued = JSONResponse(envelope.model_dump(mode="json", by_alias=True), status_code=status.HTTP_202_ACCEPTED)
    # Committed with the reservation; provisional while waitForResult waits for the final answer.
    await idempotency.save(queued, final=not body.wait_for_result)
    await session.commit()
    runtime.events.announce_jobs_available()
    if not body.wait_for_result:
        return queued
    job = await wait_until_finished(runtime, session, job, runtime.settings.wait_for_result_timeout_seconds)
    code = status.HTTP_200_OK if job.state in FINISHED_STATES else status.HTTP_202_ACCEPTED
    envelope = JobEnvelope(job=await present_job(session, job, runtime, request), free_generations_remaining=free_left)
    return JSONResponse(envelope.model_dump(mode="json", by_alias=True), status_code=code)


@router.get("/history", response_model=JobPage, summary="Past generations with the credits each used")
async def generation_history(
    principal: PrincipalDep,
    session: SessionDep,
    runtime: RuntimeDep,
    request: Request,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: str | None = None,
) -> JobPage:
    """The team's image generations, newest first (``chargedCredits`` is what each cost)."""
    return await list_jobs(
        principal, session, runtime, request, status_=None, type_="image_generation", model_id=None,
        created_after=None, created_before=None, limit=limit, cursor=cursor,
    )


# ":uuid": "/generate/history" is not a job id, so that DELETE there is 405, not a 422 about the id.
@router.get("/{job_id:uuid}", response_model=JobEnvelope, responses=ERRORS, summary="Get a generation")
@router.get("/{job_id:uuid}/status", response_model=JobEnvelope, responses=ERRORS, include_in_schema=False)
async def get_generation(
    job_id: uuid.UUID, principal: PrincipalDep, session: SessionDep, runtime: RuntimeDep, request: Request
) -> JobEnvelope:
    job = await service.get_job(session, principal, job_id)
    return JobEnvelope(job=await present_job(session, job, runtime, request))


@router.delete("/{job_id:uuid}", response_model=JobEnvelope, responses=ERRORS, summary="Cancel a generation")
async def cancel_generation(
    job_id: uuid.UUID, principal: PrincipalDep, session: SessionDep, runtime: RuntimeDep, request: Request
) -> JobEnvelope:
    """A queued job is canceled at once with its whole reservation released; a running one is
    asked to stop and is released when its worker confirms; a finished one is 409."""
    return await cancel_job(job_id, principal, session, runtime, request)


async def cancel_at_provider(runtime: Runtime, job: Job) -> None:
    """A job canceled while its provider held it (awaiting a callback): tell the provider, best
    effort (a running job's worker does this itself when its task is cancelled)."""
    if job.state != "canceled" or not job.provider_handle:
        return
    remote = runtime.providers.remote(job.provider)
    if remote is not None:
        try:
            await remote.cancel(job.provider_handle)
        except Exception as exc:  # noqa: BLE001 - the job is canceled and refunded either way
            log.warning("provider_cancel_failed", job=str(job.id), provider=job.provider, error=str(exc))


jobs_router = APIRouter(prefix="/api/v1/jobs", tags=["jobs"])


@jobs_router.get("", response_model=JobPage, summary="The team's jobs, newest first")
async def list_jobs(
    principal: PrincipalDep,
    session: SessionDep,
    runtime: RuntimeDep,
    request: Request,
    status_: Annotated[Literal[JOB_STATES] | None, Query(alias="status")] = None,  # type: ignore[valid-type]
    type_: Annotated[Literal[JOB_TYPES] | None, Query(alias="type")] = None,  # type: ignore[valid-type]
    model_id: Annotated[str | None, Query(
        alias="modelId", max_length=100, description="A custom or reference model id")] = None,
    created_after: Annotated[UtcDatetime | None, Query(alias="createdAfter")] = None,
    created_before: Annotated[UtcDatetime | None, Query(alias="createdBefore")] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: str | None = None,
) -> JobPage:
    after = None
    if cursor:
        after = tuple(decode_cursor(cursor, timestamp, uuid.UUID))
    rows = await service.list_jobs(
        session, principal, status=status_, job_type=type_, model_id=model_id, created_after=created_after,
        created_before=created_before, limit=limit + 1, after=after,
    )
    page = rows[:limit]
    return JobPage(
        items=await present_jobs(session, page, runtime, request),
        next_cursor=encode_cursor(page[-1].created_at.isoformat(), str(page[-1].id)) if len(rows) > limit else None,
    )


@jobs_router.get("/{job_id}", response_model=JobDetail, responses=ERRORS, summary="A job with its credits and logs")
async def get_job(
    job_id: uuid.UUID, principal: PrincipalDep, session: SessionDep, runtime: RuntimeDep, request: Request
) -> JobDetail:
    job = await service.get_job(session, principal, job_id)
    return JobDetail(
        job=await present_job(session, job, runtime, request),
        credit_transactions=[
            CreditEntryOut(id=t.id, type=t.type, amount=t.amount, reserved_delta=t.reserved_delta,
                           created_at=t.created_at, description=t.description)
            for t in await service.job_credit_transactions(session, job)
        ],
        logs=[JobLogOut(at=line.created_at, message=line.message) for line in await service.job_logs(session, job.id)],
    )


@jobs_router.delete("/{job_id}", response_model=JobEnvelope, responses=ERRORS, summary="Cancel a job")
async def cancel_job(
    job_id: uuid.UUID, principal: PrincipalDep, session: SessionDep, runtime: RuntimeDep, request: Request
) -> JobEnvelope:
    """Queued: canceled now, reservation released. Running: canceled at its worker/provider and
    released when that is confirmed (``cancelRequested`` is true until then). Finished: 409."""
    job = await service.cancel_job(session, principal, job_id)
    await session.commit()
    await cancel_at_provider(runtime, job)
    return JobEnvelope(job=await present_job(session, job, runtime, request))


@jobs_router.get(
    "/{job_id}/events",
    responses={200: {"content": {"text/event-stream": {}}, "description": "status, progress, log and done events"}},
    summary="Server-sent events for a job",
)
async def job_events(
    job_id: uuid.UUID, principal: PrincipalDep, session: SessionDep, runtime: RuntimeDep
) -> EventSourceResponse:
    """``event: status`` (``{"status", "progress"}``) on every change, ``event: log`` per log line,
    and a final ``event: done`` with the finished job's status; woken by the job's NOTIFY events."""
    await service.get_job(session, principal, job_id)  # 404 for another team's job
    await session.close()

    async def stream():
        last_status, last_log = None, 0
        while True:
            changed = runtime.events.watch(job_id)
            try:
                async with runtime.db.transaction() as s:
                    job = await s.get(Job, job_id, populate_existing=True)
                    lines = await service.job_logs(s, job_id, after_id=last_log)
                assert job is not None
                for line in lines:
                    last_log = line.id
                    yield {"event": "log", "data": json.dumps({"at": line.created_at.isoformat(), "message": line.message})}
                status = {"status": job.state, "progress": job.progress}
                if status != last_status:
                    last_status = status
                    yield {"event": "status", "data": json.dumps(status)}
                if job.state in FINISHED_STATES:
                    yield {"event": "done", "data": json.dumps(status)}
                    return
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), 30)
            finally:
                runtime.events.unwatch(job_id, changed)

    return EventSourceResponse(stream(), ping=15)


webhooks_router = APIRouter(prefix="/api/v1/webhooks", tags=["webhooks"])


async def provider_webhook(provider: str, request: Request, runtime: RuntimeDep) -> dict[str, str | None]:
    """Verify the signature over the exact body, store the raw event once, and hand the waiting
    job on exactly once: to a worker that collects and stores its outputs, or failed and released
    (``jobs/callbacks.py``)."""
    try:
        remote = runtime.providers.remote(provider)
    except PixelmintError:
        remote = None
    if remote is None or not remote.supports_webhooks:
        raise NotFound(f"No webhook provider {provider!r} is configured.", code="provider_not_configured")
    try:
        event = await remote.verify_webhook(request.headers, await request.body())
    except WebhookVerificationError as exc:
        if exc.status_code == 400 and exc.reason != "bad_payload":
            exc.status_code = 401
        raise
    result = await callbacks.handle(db=runtime.db, provider=provider, event=event)
    return {"status": result.status, "jobId": result.job_id}


WEBHOOK_RESPONSES: dict[int | str, dict[str, Any]] = {401: {"description": "bad signature: nothing changed"}, 404: {"description": "not configured"}}


@webhooks_router.post("/fal", responses=WEBHOOK_RESPONSES, summary="fal callbacks (Ed25519 signatures over the JWKS)")
async def fal_webhook(request: Request, runtime: RuntimeDep) -> dict[str, str | None]:
    return await provider_webhook("fal", request, runtime)


@webhooks_router.post("/replicate", responses=WEBHOOK_RESPONSES, summary="Replicate callbacks (signed webhook secret)")
async def replicate_webhook(request: Request, runtime: RuntimeDep) -> dict[str, str | None]:
    return await provider_webhook("replicate", request, runtime)
