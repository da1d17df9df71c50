"""Jobs: queue one with its credits reserved (``queue_job``), validate a generation's inputs, read
and cancel. Submitting a generation (model lookup, pricing, free allowance) is the flow
``flows/generation.py``."""

from __future__ import annotations

import datetime as dt
import json
import re
import uuid
from decimal import Decimal
from typing import Any

import structlog
from sqlalchemy import select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from pixelmint.accounts.service import Principal
from pixelmint.credits import service as credits
from pixelmint.credits.tables import CreditTransaction
from pixelmint.jobs import queue
from pixelmint.jobs.errors import (
    InvalidNumImages,
    InvalidPrompt,
    InvalidResolution,
    InvalidSeed,
    JobFinished,
    JobNotFound,
    ModelRequired,
    PromptTooLong,
)
from pixelmint.jobs.schemas import GenerateRequest
from pixelmint.jobs.tables import Job, JobLog
from pixelmint.kit.ids import new_id
from pixelmint.providers.registry import Providers
from pixelmint.settings import Settings

log = structlog.get_logger(__name__)

# ASCII digits without leading zeros, as the schema's pattern (jobs/schemas.RESOLUTION_PATTERN).
RESOLUTION = re.compile(r"^ *([1-9][0-9]{1,4}) *[xX×] *([1-9][0-9]{1,4}) *$")
SEED_LIMIT = 2**32


def parse_resolution(value: str, settings: Settings) -> tuple[int, int]:
    """``"WIDTHxHEIGHT"`` → (width, height) pixels. Raises ``InvalidRequest`` (invalid_resolution)."""
    match = RESOLUTION.match(value or "")
    lo, hi = settings.min_image_side, settings.max_image_side
    if not match:
        raise InvalidResolution(
            f"resolution must look like '1024x768', got {value!r}.", field="resolution"
        )
    width, height = int(match[1]), int(match[2])
    if not (lo <= width <= hi and lo <= height <= hi) or width % 8 or height % 8:
        raise InvalidResolution(
            f"resolution {width}x{height} is out of range: each side must be {lo}..{hi} pixels and a multiple of 8.",
            field="resolution",
        )
    return width, height


def validate_generation(request: GenerateRequest, settings: Settings) -> tuple[int, int]:
    """Checks beyond types. Returns (width, height). Raises ``InvalidRequest`` with a stable code."""
    if not request.prompt.strip():
        raise InvalidPrompt("prompt must not be empty.", field="prompt")
    if len(request.prompt) > settings.max_prompt_length:
        raise PromptTooLong(
            f"prompt is {len(request.prompt)} characters; the limit is {settings.max_prompt_length}.",
            field="prompt",
        )
    if request.negative_prompt and len(request.negative_prompt) > settings.max_prompt_length:
        raise PromptTooLong(
            f"negativePrompt is longer than {settings.max_prompt_length} characters.",
            field="negativePrompt",
        )
    if not 1 <= request.num_images <= settings.max_images_per_request:
        raise InvalidNumImages(
            f"numImages must be 1..{settings.max_images_per_request}, got {request.num_images}.",
            field="numImages",
        )
    if request.seed is not None and not 0 <= request.seed < SEED_LIMIT:
        raise InvalidSeed(f"seed must be 0..{SEED_LIMIT - 1}.", field="seed")
    if (request.reference_model_id is None) == (request.custom_model_id is None):
        raise ModelRequired(
            "Give exactly one of referenceModelId or customModelId.", field="referenceModelId"
        )
    return parse_resolution(request.resolution, settings)


async def queue_job(
    session: AsyncSession,
    principal: Principal,
    *,
    job_type: str,
    cost: Decimal | None,
    params: dict[str, Any],
    reference_model_id: str | None,
    custom_model_id: uuid.UUID | None,
    custom_model_version: int | None,
    provider: str,
    settings: Settings,
) -> Job:
    """Queue a job in the caller's transaction: reserve ``cost`` credits for it first (``None``: a
    free generation, nothing reserved). The one way every job enters the queue. Raises
    ``InsufficientCredits`` (nothing written) unless the enforcement mode is ``fail_open``."""
    job_id = new_id()
    reservation = None
    if cost is not None:
        reservation = await credits.reserve(
            session, team_id=principal.team_id, amount=cost, operation=job_type, job_id=job_id,
            user_id=principal.user_id, fail_open=settings.credit_enforcement == "fail_open",
        )
    return await queue.enqueue(
        session, id=job_id, team_id=principal.team_id, user_id=principal.user_id, type=job_type, priority=0,
        params=json.dumps(params), reference_model_id=reference_model_id, custom_model_id=custom_model_id,
        custom_model_version=custom_model_version, provider=provider,
        estimated_credits=cost if cost is not None else Decimal("0.00"),
        reservation_id=reservation.id if reservation else None, is_free=cost is None,
        max_attempts=settings.max_attempts,
    )


async def get_job(session: AsyncSession, principal: Principal, job_id: uuid.UUID) -> Job:
    """A job of the caller's team; another team's job is ``NotFound`` as if it did not exist."""
    job = await session.scalar(
        select(Job).where(Job.id == job_id, Job.team_id == principal.team_id).execution_options(populate_existing=True)
    )
    if job is None:
        raise JobNotFound(f"No job {job_id}.")
    return job


async def cancel_job(session: AsyncSession, principal: Principal, job_id: uuid.UUID) -> Job:
    """Cancel a queued job (full release) or request cancellation of a running one.
    Raises ``NotFound`` for an unknown job and ``Conflict`` (job_finished) for a finished one."""
    job = await queue.cancel(session, job_id=job_id, team_id=principal.team_id)
    if job is None or job.team_id != principal.team_id:
        raise JobNotFound(f"No job {job_id}.")
    if job.state in queue.FINISHED_STATES and job.error_code != "canceled":
        raise JobFinished(f"Job {job_id} already finished ({job.state}).")
    return job


async def cancel_at_provider(job: Job, providers: Providers) -> None:
    """After a job was canceled (and committed): if its provider held it (awaiting a callback),
    tell the provider, best effort (a running job's worker does this itself when its task is
    cancelled); the job is canceled and refunded either way."""
    if job.state != "canceled" or not job.provider_handle:
        return
    remote = providers.remote(job.provider)
    if remote is not None:
        try:
            await remote.cancel(job.provider_handle)
        except Exception as exc:  # noqa: BLE001 - the job is canceled and refunded either way
            log.warning("provider_cancel_failed", job=str(job.id), provider=job.provider, error=str(exc))


async def annotate(session: AsyncSession, job: Job, key: str, value: Any) -> None:
    """Add ``key: value`` (JSON) to a job's params, in the caller's transaction: what a surface
    above the jobs needs to keep with a job it queued (the Replicate API: the prediction's
    webhook)."""
    job.params = {**job.params, key: value}
    await session.flush()


async def list_jobs(
    session: AsyncSession,
    principal: Principal,
    *,
    status: str | None = None,
    job_type: str | None = None,
    model_id: str | None = None,
    created_after: dt.datetime | None = None,
    created_before: dt.datetime | None = None,
    limit: int = 20,
    after: tuple[dt.datetime, uuid.UUID] | None = None,
) -> list[Job]:
    """The team's jobs, newest first, keyset-paginated on (created_at, id). ``model_id`` matches a
    custom model id or a reference model id."""
    query = select(Job).where(Job.team_id == principal.team_id)
    if status:
        query = query.where(Job.state == status)
    if job_type:
        query = query.where(Job.type == job_type)
    if model_id:
        try:
            query = query.where(Job.custom_model_id == uuid.UUID(model_id))
        except ValueError:
            query = query.where(Job.reference_model_id == model_id)
    if created_after:
        query = query.where(Job.created_at >= created_after)
    if created_before:
        query = query.where(Job.created_at < created_before)
    if after:
        query = query.where(tuple_(Job.created_at, Job.id) < tuple_(*after))
    query = query.order_by(Job.created_at.desc(), Job.id.desc()).limit(limit)
    return list((await session.scalars(query)).all())


async def job_credit_transactions(session: AsyncSession, job: Job) -> list[CreditTransaction]:
    rows = await session.scalars(
        select(CreditTransaction)
        .where(CreditTransaction.team_id == job.team_id, CreditTransaction.job_id == job.id)
        .order_by(CreditTransaction.id)
    )
    return list(rows.all())


async def job_logs(session: AsyncSession, job_id: uuid.UUID, *, after_id: int = 0, limit: int = 200) -> list[JobLog]:
    rows = await session.scalars(
        select(JobLog).where(JobLog.job_id == job_id, JobLog.id > after_id).order_by(JobLog.id).limit(limit)
    )
    return list(rows.all())
