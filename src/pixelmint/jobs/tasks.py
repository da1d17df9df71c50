"""Job handlers, one per job type. A handler gets the claimed job and returns what the fenced
success transition needs; it never commits: the worker settles the job and its credits."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from pixelmint.jobs.tables import Job
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
    progress: Callable[[int], Awaitable[None]]


@dataclass
class TaskOutcome:
    result: dict[str, Any]
    images: list[Image] = field(default_factory=list)
    stored_keys: list[str] = field(default_factory=list)


async def image_generation(ctx: TaskContext, job: Job) -> TaskOutcome:
    """Render the job's images with its provider and store them (rows are added by the worker in
    the success transaction). Raises ``ProviderError``; a storage failure is retryable."""
    p = job.params
    request = GenerationRequest(
        prompt=p["prompt"],
        negative_prompt=p.get("negativePrompt"),
        width=p["width"],
        height=p["height"],
        num_images=p["numImages"],
        seed=p["seed"],
        quality=p["quality"],
        model_key=p["modelKey"],
    )
    generated = await ctx.providers.get(job.provider).generate(request, progress=ctx.progress)
    if len(generated) != request.num_images:
        raise ProviderError(
            f"provider {job.provider} returned {len(generated)} images, expected {request.num_images}",
            code="provider_bad_result",
        )
    now = dt.datetime.now(dt.UTC)
    expires = now + dt.timedelta(days=ctx.settings.image_retention_days)
    outcome = TaskOutcome(result={"seed": request.seed, "imageCount": len(generated)})
    for image in generated:
        image_id = uuid.uuid4()
        key = storage_key(job.team_id, image_id, now)
        await ctx.storage.put(
            key, image.data, content_type=image.content_type,
            metadata={"team": str(job.team_id), "job": str(job.id), "model": request.model_key},
        )
        outcome.stored_keys.append(key)
        outcome.images.append(
            Image(
                id=image_id, team_id=job.team_id, job_id=job.id, user_id=job.user_id, storage_key=key,
                content_type=image.content_type, width=image.width, height=image.height,
                size_bytes=len(image.data), seed=image.seed, created_at=now, expires_at=expires,
                params={k: v for k, v in p.items() if k != "numImages"} | {"seed": image.seed},
            )
        )
    return outcome


HANDLERS: dict[str, Callable[[TaskContext, Job], Awaitable[TaskOutcome]]] = {
    "image_generation": image_generation,
}
