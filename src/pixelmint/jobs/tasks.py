"""Job handlers, one per job type. A handler gets the claimed job and returns a ``TaskOutcome``;
it never settles the job: the worker finishes it (fenced) and then calls ``outcome.apply`` in the
same transaction, so domain changes (a new model version, image rows) commit together with the
credit capture or not at all."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from pixelmint.custom_models import service as custom_models
from pixelmint.custom_models.tables import CustomModel
from pixelmint.jobs.tables import Job
from pixelmint.kit.db import Database
from pixelmint.providers.base import GenerationRequest, ProviderError
from pixelmint.providers.registry import Providers
from pixelmint.settings import Settings
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
    # Runs in the success transaction, after the job is marked succeeded and its credits captured.
    apply: Callable[[AsyncSession, Job], Awaitable[None]] | None = None


async def image_generation(ctx: TaskContext, job: Job) -> TaskOutcome:
    """Render the job's images with its provider and store them; the image rows are added in the
    success transaction. Raises ``ProviderError``; a storage failure is retryable."""
    p = job.params
    style: dict[str, Any] = {}
    if job.custom_model_id is not None and job.custom_model_version is not None:
        async with ctx.db.transaction() as session:
            artifact = await custom_models.version_artifact(session, job.custom_model_id, job.custom_model_version)
        style = artifact.get("style", {})
    request = GenerationRequest(
        prompt=p["prompt"], negative_prompt=p.get("negativePrompt"), width=p["width"], height=p["height"],
        num_images=p["numImages"], seed=p["seed"], quality=p["quality"], model_key=p["modelKey"], style=style,
    )
    await ctx.log(f"generating {request.num_images} image(s) of {request.width}x{request.height} with {job.provider}")
    generated = await ctx.providers.get(job.provider).generate(request, progress=ctx.progress)
    if len(generated) != request.num_images:
        raise ProviderError(
            f"provider {job.provider} returned {len(generated)} images, expected {request.num_images}",
            code="provider_bad_result",
        )
    now = dt.datetime.now(dt.UTC)
    expires = now + dt.timedelta(days=ctx.settings.image_retention_days)
    outcome = TaskOutcome(result={"seed": request.seed, "imageCount": len(generated)})
    rows = []
    for image in generated:
        image_id = uuid.uuid4()
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
                params={k: v for k, v in p.items() if k != "numImages"} | {"seed": image.seed},
            )
        )

    async def add_images(session: AsyncSession, _job: Job) -> None:
        session.add_all(rows)
        await session.flush()

    outcome.apply = add_images
    await ctx.log(f"stored {len(rows)} image(s)")
    return outcome


async def model_creation(ctx: TaskContext, job: Job) -> TaskOutcome:
    """Train a custom model from its stored training images; the new version is recorded in the
    success transaction."""
    async with ctx.db.transaction() as session:
        model = await session.get(CustomModel, job.custom_model_id)
        if model is None:
            raise ProviderError("the custom model of this job no longer exists", code="model_not_found")
        await session.execute(
            update(CustomModel).where(CustomModel.id == model.id, CustomModel.status == "pending").values(status="training")
        )
        keys = [image["key"] for image in model.training_images]
        trigger_word, steps = model.trigger_word, model.training_steps
    images = [await ctx.storage.get(key) for key in keys]
    await ctx.log(f"training on {len(images)} image(s), {steps} steps, with {job.provider}")
    artifact = await ctx.providers.get(job.provider).train(  # type: ignore[attr-defined]
        images, trigger_word=trigger_word, steps=steps, progress=ctx.progress
    )

    async def record(session: AsyncSession, finished: Job) -> None:
        await custom_models.record_version(session, finished, artifact=artifact, kind="creation", prompt=None, iteration=0)

    return TaskOutcome(result={"version": 1}, apply=record)


async def model_refinement(ctx: TaskContext, job: Job) -> TaskOutcome:
    """Refine a custom model from the artifact of the version it was queued against."""
    p = job.params
    async with ctx.db.transaction() as session:
        base = await custom_models.version_artifact(session, job.custom_model_id, p["baseVersion"])  # type: ignore[arg-type]
    await ctx.log(f"refining version {p['baseVersion']} (iteration {p['iteration']}) with {job.provider}")
    artifact = await ctx.providers.get(job.provider).refine(  # type: ignore[attr-defined]
        base, prompt=p["prompt"], iteration=p["iteration"]
    )

    async def record(session: AsyncSession, finished: Job) -> None:
        await custom_models.record_version(
            session, finished, artifact=artifact, kind="refinement", prompt=p["prompt"], iteration=p["iteration"]
        )

    return TaskOutcome(result={"baseVersion": p["baseVersion"]}, apply=record)


Handler = Callable[[TaskContext, Job], Awaitable[TaskOutcome]]

HANDLERS: dict[str, Handler] = {
    "image_generation": image_generation,
    "model_creation": model_creation,
    "model_refinement": model_refinement,
}
