"""Job handlers, one per job type. A handler gets the claimed job and returns a ``TaskOutcome``;
it never settles the job: the worker finishes it (fenced) and then calls ``outcome.apply`` in the
same transaction, so domain changes (a new model version, image rows) commit together with the
credit capture or not at all."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Awaitable, Callable, Collection
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import text, update
from sqlalchemy.ext.asyncio import AsyncSession

from pixelmint.catalog import service as catalog
from pixelmint.custom_models import service as custom_models
from pixelmint.custom_models.tables import CustomModel
from pixelmint.jobs.tables import Job
from pixelmint.kit.db import Database
from pixelmint.providers.base import (
    GeneratedImage,
    GenerationRequest,
    LoraWeight,
    ProviderError,
    ProviderTrace,
    RemoteProvider,
    Submission,
    TrainingImage,
    TrainingRequest,
)
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

    async def discard(self, storage: Storage, *, keep: Collection[str] = ()) -> None:
        """The job did not succeed with these outputs: delete the objects stored for it, except
        ``keep`` (best effort)."""
        for key in self.stored_keys:
            if key not in keep:
                with suppress(Exception):
                    await storage.delete(key)


def new_version(artifact: dict[str, Any], *, kind: str, prompt: str | None, iteration: int, result: dict[str, Any]) -> TaskOutcome:
    """The outcome of a training or refinement: the model's next version, recorded on success."""

    async def record(session: AsyncSession, finished: Job) -> None:
        await custom_models.record_version(session, finished, artifact=artifact, kind=kind, prompt=prompt,
                                           iteration=iteration)

    return TaskOutcome(result=result, apply=record)


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


async def _remote_generate(
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


async def _model_for_provider(ctx: TaskContext, job: Job) -> tuple[str | None, tuple[LoraWeight, ...], dict[str, Any]]:
    """(provider model, LoRAs, custom model artifact) for a generation job."""
    artifact: dict[str, Any] = {}
    async with ctx.db.transaction() as session:
        if job.custom_model_id is not None and job.custom_model_version is not None:
            artifact = await custom_models.version_artifact(session, job.custom_model_id, job.custom_model_version)
        reference = (
            await catalog.get_pricing_info(session, job.reference_model_id, require_active=False)
            if job.reference_model_id
            else None
        )
    if artifact.get("providerModel") and artifact.get("provider") == job.provider:
        loras = (LoraWeight(artifact["loraPath"]),) if artifact.get("loraPath") else ()
        return artifact["providerModel"], loras, artifact
    return (reference.provider_models.get(job.provider) if reference else None), (), artifact


class AwaitingWebhook(Exception):
    """The provider accepted the request and will call back: the job waits in ``awaiting_webhook``."""


def webhook_url(ctx: TaskContext, provider: str, remote: RemoteProvider) -> str | None:
    """Where the provider should call back, when this server is reachable (``PIXELMINT_PUBLIC_URL``)
    and the provider supports callbacks; otherwise ``None`` and the worker polls."""
    if not (ctx.settings.public_url and remote.supports_webhooks):
        return None
    return f"{ctx.settings.public_url.rstrip('/')}/api/v1/webhooks/{provider}"


async def generation_request(ctx: TaskContext, job: Job) -> GenerationRequest:
    """The provider request of an ``image_generation`` job (model, LoRAs, style of its version)."""
    p = job.params
    provider_model, loras, artifact = await _model_for_provider(ctx, job)
    prompt = p["prompt"]
    if artifact.get("refinements") and artifact.get("providerModel"):
        prompt = ", ".join([prompt, *artifact["refinements"]])  # a remote model's refinements guide the prompt
    return GenerationRequest(
        prompt=prompt, negative_prompt=p.get("negativePrompt"), width=p["width"], height=p["height"],
        num_images=p["numImages"], seed=p["seed"], quality=p["quality"], model_key=p["modelKey"],
        provider_model=provider_model, style=artifact.get("style", {}), loras=loras,
    )


async def image_generation(ctx: TaskContext, job: Job) -> TaskOutcome:
    """Render the job's images with its provider and store them; the image rows are added in the
    success transaction. Remote providers are polled, or (with a public URL and a provider that
    supports callbacks) left to call back: ``AwaitingWebhook``. Raises ``ProviderError``; a storage
    failure is retryable."""
    request = await generation_request(ctx, job)
    await ctx.log(f"generating {request.num_images} image(s) of {request.width}x{request.height} with {job.provider}")
    remote = ctx.providers.remote(job.provider)
    provider_details: dict[str, Any] = {}
    if remote is None:
        generated = await ctx.providers.get(job.provider).generate(request, progress=ctx.progress)
    elif not job.provider_handle and (callback := webhook_url(ctx, job.provider, remote)):
        await provider_trace(ctx, job).submitted(await remote.submit(request, webhook_url=callback))
        raise AwaitingWebhook
    else:
        generated, provider_details = await _remote_generate(ctx, job, remote, request)
    return await store_generated(ctx, job, request, generated, provider_details)


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
                params={k: v for k, v in job.params.items() if k != "numImages"} | {"seed": image.seed},
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
        base = await custom_models.version_artifact(session, job.custom_model_id, p["baseVersion"])  # type: ignore[arg-type]
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


Handler = Callable[[TaskContext, Job], Awaitable[TaskOutcome]]

HANDLERS: dict[str, Handler] = {
    "image_generation": image_generation,
    "model_creation": model_creation,
    "model_refinement": model_refinement,
}
