"""The endpoints that run a flow: ``POST /api/v1/generate`` (``flows/generation.py``) and
``POST /api/v1/credits/estimate`` (prices across the catalog, custom models and pricing)."""

from __future__ import annotations

from fastapi import APIRouter, status
from fastapi.responses import Response

from pixelmint.accounts.auth import IdempotencyDep, PrincipalDep, rate_limit
from pixelmint.catalog.errors import ModelNotFound
from pixelmint.credits.errors import InsufficientCredits, ResolutionNotPriced
from pixelmint.credits.pricing import current_pricing
from pixelmint.credits.schemas import EstimateOut, EstimateRequest
from pixelmint.custom_models.errors import ModelDeleted, ModelNotReady, ModelVersionNotFound, PlanUpgradeRequired
from pixelmint.flows import generation, pricing
from pixelmint.jobs.deps import JobEventsDep
from pixelmint.jobs.errors import (
    InvalidNumImages,
    InvalidPrompt,
    InvalidResolution,
    InvalidSeed,
    ModelRequired,
    PromptTooLong,
)
from pixelmint.jobs.events import wait_for_job
from pixelmint.jobs.presenters import present_job
from pixelmint.jobs.queue import FINISHED_STATES, QueueFull
from pixelmint.jobs.schemas import GenerateRequest, JobEnvelope
from pixelmint.kit.errors import responses
from pixelmint.kit.http import DatabaseDep, SessionDep, SettingsDep
from pixelmint.storage.deps import UrlSignerDep

generate_router = APIRouter(prefix="/api/v1/generate", tags=["generate"])


@generate_router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=JobEnvelope,
    responses=responses(
        InsufficientCredits, PlanUpgradeRequired, ModelNotFound, ModelVersionNotFound, ModelNotReady, ModelDeleted,
        InvalidPrompt, PromptTooLong, InvalidResolution, InvalidNumImages, InvalidSeed, ModelRequired,
        ResolutionNotPriced, QueueFull, _200={"model": JobEnvelope, "description": "Finished (waitForResult)"},
    ),
    summary="Generate images",
    dependencies=[rate_limit("generate")],
)
async def generate(
    body: GenerateRequest, principal: PrincipalDep, session: SessionDep, settings: SettingsDep, db: DatabaseDep,
    events: JobEventsDep, urls: UrlSignerDep, idempotency: IdempotencyDep,
) -> JobEnvelope | Response:
    """Price the generation, reserve its credits and queue it, atomically. Answers 202 with the
    queued job; with ``waitForResult`` waits up to the server's limit and answers 200 with the
    finished job and its images (or 202 if time ran out). With ``Idempotency-Key`` the answer is
    stored in the reserving transaction (``kit/idempotency.py``)."""
    job, free_left = await generation.submit_generation(
        session, principal, body, settings=settings, pricing=await current_pricing(session),
        alone=idempotency.key is None,  # then nothing but the job is written: it may commit on its own
    )
    envelope = JobEnvelope(job=await present_job(session, job, urls), free_generations_remaining=free_left)
    queued = _json(envelope, status.HTTP_202_ACCEPTED)
    # Committed with the reservation; provisional while waitForResult waits for the final answer.
    await idempotency.save(queued, final=not body.wait_for_result)
    await session.commit()  # before the workers are woken and before waiting for them
    events.announce_jobs_available()
    if not body.wait_for_result:
        return queued
    job = await wait_for_job(db, events, job, timeout=settings.wait_for_result_timeout_seconds)
    code = status.HTTP_200_OK if job.state in FINISHED_STATES else status.HTTP_202_ACCEPTED
    envelope = JobEnvelope(job=await present_job(session, job, urls), free_generations_remaining=free_left)
    return _json(envelope, code)


def _json(envelope: JobEnvelope, status_code: int) -> Response:
    """The envelope as JSON, serialized by pydantic in one step (what ``JSONResponse`` of its
    ``model_dump`` gives, without the intermediate dicts and ``json.dumps``)."""
    return Response(envelope.model_dump_json(by_alias=True), status_code=status_code, media_type="application/json")


estimate_router = APIRouter(prefix="/api/v1/credits", tags=["credit API"])


@estimate_router.post("/estimate", response_model=EstimateOut, summary="Price an operation before queueing it",
                     responses=responses(ModelNotFound, ModelNotReady, ResolutionNotPriced))
async def estimate(body: EstimateRequest, principal: PrincipalDep, session: SessionDep, settings: SettingsDep) -> EstimateOut:
    cost = await pricing.estimate(
        session, principal, operation=body.operation, reference_model_id=body.reference_model_id,
        custom_model_id=body.custom_model_id, resolution=body.resolution, quality=body.quality,
        num_images=body.num_images, training_images=body.training_images, iteration=body.iteration,
        settings=settings,
    )
    return EstimateOut(operation=body.operation, estimated_credits=cost)
