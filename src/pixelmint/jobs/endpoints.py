"""``/api/v1/generate``: submit an image generation, read it, cancel it."""

from __future__ import annotations

import asyncio
import time
import uuid
from decimal import Decimal

from fastapi import APIRouter, Request, status
from fastapi.responses import JSONResponse
from sqlalchemy.ext.asyncio import AsyncSession

from pixelmint.api.deps import PrincipalDep, RuntimeDep, SessionDep, base_url
from pixelmint.api.runtime import Runtime
from pixelmint.jobs import service
from pixelmint.jobs.queue import FINISHED_STATES
from pixelmint.jobs.schemas import GenerateRequest, JobEnvelope, JobError, JobOut
from pixelmint.jobs.tables import Job
from pixelmint.storage.schemas import present_image
from pixelmint.storage.service import images_for_jobs

router = APIRouter(prefix="/api/v1/generate", tags=["generate"])

ERRORS = {
    401: {"description": "Missing or invalid API key"},
    402: {"description": "insufficient_credits: nothing was reserved and no job was created"},
    404: {"description": "Unknown model or job"},
    409: {"description": "Model not ready, or job already finished"},
    422: {"description": "Invalid input (stable codes: invalid_resolution, invalid_prompt, ...)"},
}


async def present_job(session: AsyncSession, job: Job, runtime: Runtime, request: Request) -> JobOut:
    images = (await images_for_jobs(session, [job.id]))[job.id] if job.state == "succeeded" else []
    url_base = base_url(request, runtime)
    return JobOut(
        id=job.id,
        type=job.type,
        status=job.state,
        progress=job.progress,
        reference_model_id=job.reference_model_id,
        custom_model_id=job.custom_model_id,
        params=job.params,
        estimated_credits=job.estimated_credits,
        reserved_credits=job.estimated_credits if job.reservation_id else Decimal("0.00"),
        charged_credits=job.charged_credits,
        is_free=job.is_free,
        attempt=job.attempt,
        max_attempts=job.max_attempts,
        error=JobError(code=job.error_code, message=job.error_message or "")
        if job.error_code and job.state != "succeeded"
        else None,
        images=[
            present_image(i, runtime.storage, base_url=url_base, ttl_seconds=runtime.settings.signed_url_ttl_seconds)
            for i in images
        ],
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
    )


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
    responses={200: {"model": JobEnvelope, "description": "Finished (waitForResult)"}, **ERRORS},
    summary="Generate images",
)
async def generate(
    body: GenerateRequest, principal: PrincipalDep, session: SessionDep, runtime: RuntimeDep, request: Request
) -> JobEnvelope | JSONResponse:
    """Price the generation, reserve its credits and queue it, atomically. Answers 202 with the
    queued job; with ``waitForResult`` waits up to the server's limit and answers 200 with the
    finished job and its images (or 202 if time ran out)."""
    job, free_left = await service.submit_generation(
        session, principal, body, settings=runtime.settings, pricing=runtime.pricing
    )
    await session.commit()
    runtime.events.announce_jobs_available()
    code = status.HTTP_202_ACCEPTED
    if body.wait_for_result:
        job = await wait_until_finished(runtime, session, job, runtime.settings.wait_for_result_timeout_seconds)
        if job.state in FINISHED_STATES:
            code = status.HTTP_200_OK
    envelope = JobEnvelope(job=await present_job(session, job, runtime, request), free_generations_remaining=free_left)
    return JSONResponse(envelope.model_dump(mode="json", by_alias=True), status_code=code)


@router.get("/{job_id}", response_model=JobEnvelope, responses=ERRORS, summary="Get a generation")
@router.get("/{job_id}/status", response_model=JobEnvelope, responses=ERRORS, include_in_schema=False)
async def get_generation(
    job_id: uuid.UUID, principal: PrincipalDep, session: SessionDep, runtime: RuntimeDep, request: Request
) -> JobEnvelope:
    job = await service.get_job(session, principal, job_id)
    return JobEnvelope(job=await present_job(session, job, runtime, request))


@router.delete("/{job_id}", response_model=JobEnvelope, responses=ERRORS, summary="Cancel a generation")
async def cancel_generation(
    job_id: uuid.UUID, principal: PrincipalDep, session: SessionDep, runtime: RuntimeDep, request: Request
) -> JobEnvelope:
    """A queued job is canceled at once with its whole reservation released; a running one is
    asked to stop and is released when its worker confirms; a finished one is 409."""
    job = await service.cancel_job(session, principal, job_id)
    await session.commit()
    return JobEnvelope(job=await present_job(session, job, runtime, request))
