"""Jobs as JSON: the shape every job endpoint answers with."""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy.ext.asyncio import AsyncSession

from pixelmint.jobs.schemas import JobError, JobOut
from pixelmint.jobs.tables import Job
from pixelmint.providers.registry import provider_label
from pixelmint.storage.schemas import UrlSigner, present_image
from pixelmint.storage.service import images_for_jobs


async def present_jobs(session: AsyncSession, jobs: list[Job], urls: UrlSigner) -> list[JobOut]:
    """Jobs with their images (one query for all of them) and signed image URLs."""
    finished = [job.id for job in jobs if job.state == "succeeded" and job.type == "image_generation"]
    images = await images_for_jobs(session, finished) if finished else {}
    return [
        JobOut(
            id=job.id,
            type=job.type,
            status=job.state,
            progress=job.progress,
            provider=provider_label(job.provider),
            reference_model_id=job.reference_model_id,
            custom_model_id=job.custom_model_id,
            custom_model_version=job.custom_model_version,
            params=job.params,
            result=job.result,
            estimated_credits=job.estimated_credits,
            reserved_credits=job.estimated_credits if job.reservation_id else Decimal("0.00"),
            charged_credits=job.charged_credits,
            is_free=job.is_free,
            attempt=job.attempt,
            max_attempts=job.max_attempts,
            cancel_requested=job.cancel_requested_at is not None,
            error=JobError(code=job.error_code, message=job.error_message or "")
            if job.error_code and job.state != "succeeded"
            else None,
            images=[present_image(i, urls) for i in images.get(job.id, [])],
            created_at=job.created_at,
            started_at=job.started_at,
            finished_at=job.finished_at,
        )
        for job in jobs
    ]


async def present_job(session: AsyncSession, job: Job, urls: UrlSigner) -> JobOut:
    return (await present_jobs(session, [job], urls))[0]
