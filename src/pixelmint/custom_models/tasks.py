"""The custom models' job types: ``model_creation`` (train version 1) and ``model_refinement``
(the next version), registered with the failure hook that marks a failed training's model."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from pixelmint.catalog import service as catalog
from pixelmint.custom_models import service
from pixelmint.jobs.registry import Registry
from pixelmint.jobs.tables import Job
from pixelmint.jobs.tasks import TaskContext, TaskOutcome, provider_trace
from pixelmint.providers.base import ProviderError, TrainingImage, TrainingRequest


def register(registry: Registry) -> None:
    registry.add("model_creation", model_creation, on_failure=service.on_job_failed)
    registry.add("model_refinement", model_refinement)


def new_version(
    artifact: dict[str, Any], *, kind: str, prompt: str | None, iteration: int, result: dict[str, Any]
) -> TaskOutcome:
    """The outcome of a training or refinement: the model's next version, recorded on success."""

    async def record(session: AsyncSession, finished: Job) -> None:
        await service.record_version(session, finished, artifact=artifact, kind=kind, prompt=prompt,
                                     iteration=iteration)

    return TaskOutcome(result=result, apply=record)


async def model_creation(ctx: TaskContext, job: Job) -> TaskOutcome:
    """Train a custom model from its stored training images; the new version is recorded in the
    success transaction."""
    async with ctx.db.transaction() as session:
        model = await service.start_training(session, job.custom_model_id)
        if model is None:
            raise ProviderError("the custom model of this job no longer exists", code="model_not_found")
        stored = list(model.training_images)
        trigger_word, steps = model.trigger_word, model.training_steps
        reference = await catalog.get_pricing_info(session, model.reference_model_id, require_active=False)
    images = [await ctx.storage.get(image["key"]) for image in stored]
    await ctx.log(f"training on {len(images)} image(s), {steps} steps, with {job.provider}")
    remote = ctx.providers.remote(job.provider)
    if remote is None:
        artifact = await ctx.providers.get(job.provider).train(  # type: ignore[attr-defined]
            images, trigger_word=trigger_word, steps=steps, progress=ctx.progress
        )
    else:
        training = TrainingRequest(
            images=tuple(TrainingImage(i["filename"], data) for i, data in zip(stored, images, strict=True)),
            trigger_word=trigger_word or "ohwx", steps=steps, model_key=f"custom:{job.custom_model_id}:v1",
            provider_model=reference.provider_models.get(job.provider),
        )
        trained = await remote.train(training, progress=ctx.progress, trace=provider_trace(ctx, job))
        artifact = trained.as_dict()

    return new_version(artifact, kind="creation", prompt=None, iteration=0, result={"version": 1})


async def model_refinement(ctx: TaskContext, job: Job) -> TaskOutcome:
    """Refine a custom model from the artifact of the version it was queued against."""
    p = job.params
    async with ctx.db.transaction() as session:
        base = await service.version_artifact(session, job.custom_model_id, p["baseVersion"])  # type: ignore[arg-type]
    await ctx.log(f"refining version {p['baseVersion']} (iteration {p['iteration']}) with {job.provider}")
    if ctx.providers.remote(job.provider) is None:
        artifact = await ctx.providers.get(job.provider).refine(  # type: ignore[attr-defined]
            base, prompt=p["prompt"], iteration=p["iteration"]
        )
    else:
        # Remote trainers have no "continue training"; a refinement of a remote model keeps its
        # weights and adds the prompt as guidance to every generation from this version.
        artifact = {**base, "refinements": [*base.get("refinements", []), p["prompt"]]}

    return new_version(artifact, kind="refinement", prompt=p["prompt"], iteration=p["iteration"],
                       result={"baseVersion": p["baseVersion"]})
