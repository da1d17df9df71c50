"""Custom models: create (a ``model_creation`` job), read, rename, soft delete, refine (a
``model_refinement`` job), and the job outcomes that make versions (run by ``tasks.py``).

Creation and refinement follow the credit rules of every job: priced with the pricing formulas
(``credits/pricing.py``), reserved in the same transaction as the job insert, captured when the
job succeeds, released when it fails or is cancelled. Version 1 is the trained model; each
successful refinement adds the next version and records prompt, iteration, cost and artifact.
"""

from __future__ import annotations

import datetime as dt
import io
import uuid
from dataclasses import dataclass
from typing import IO, Any

from PIL import Image, UnidentifiedImageError
from sqlalchemy import func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from pixelmint.accounts.service import Principal
from pixelmint.catalog import service as catalog
from pixelmint.catalog.errors import ModelNotFound
from pixelmint.credits.pricing import Pricing
from pixelmint.custom_models.errors import (
    ImageTooLarge,
    InvalidTrainingImages,
    InvalidTrainingSteps,
    ModelDeleted,
    ModelNotReady,
    ModelVersionNotFound,
    PlanUpgradeRequired,
)
from pixelmint.custom_models.tables import CustomModel, CustomModelVersion
from pixelmint.jobs import queue
from pixelmint.jobs.errors import InvalidPrompt
from pixelmint.jobs.service import queue_job
from pixelmint.jobs.tables import Job
from pixelmint.kit.errors import InvalidRequest
from pixelmint.settings import Settings
from pixelmint.storage.backend import Storage
from pixelmint.webhooks import service as webhooks

MAX_TRAINING_IMAGES = 50
MAX_TRAINING_IMAGE_BYTES = 10 * 1024 * 1024
# Default cap of a multipart upload (PIXELMINT_MAX_UPLOAD_BYTES): the most images of the largest
# size, and 1 MiB for the other fields and the multipart framing.
MAX_UPLOAD_BYTES = MAX_TRAINING_IMAGES * MAX_TRAINING_IMAGE_BYTES + 2**20
STEPS_RANGE = (100, 10_000)
MODEL_STATES = ("pending", "training", "ready", "failed")


@dataclass(frozen=True)
class TrainingImage:
    """An uploaded or downloaded training image in a (spooled) temporary file, which its creator
    closes; images are read into memory one at a time, to be stored."""

    filename: str
    file: IO[bytes]

    @property
    def size(self) -> int:
        self.file.seek(0, io.SEEK_END)
        return self.file.tell()

    def read(self) -> bytes:
        self.file.seek(0)
        return self.file.read()


def _check_training_images(images: list[TrainingImage], *, max_pixels: int) -> list[str]:
    """Content types of valid images, checked without decoding them (size and format from the
    header, ``verify`` reads the chunks). Raises ``InvalidRequest``: ``invalid_training_images``,
    ``image_too_large`` (more than ``max_pixels`` pixels)."""
    if not 1 <= len(images) <= MAX_TRAINING_IMAGES:
        raise InvalidTrainingImages(
            f"Give 1 to {MAX_TRAINING_IMAGES} training images, got {len(images)}.",
            field="trainingImages",
        )
    types = []
    for image in images:
        if image.size > MAX_TRAINING_IMAGE_BYTES:
            raise InvalidTrainingImages(
                f"{image.filename} is larger than {MAX_TRAINING_IMAGE_BYTES // 2**20} MiB.",
                field="trainingImages",
            )
        image.file.seek(0)
        try:
            with Image.open(image.file) as opened:
                width, height = opened.size
                if width * height > max_pixels:
                    raise _too_large(image, f"{width}×{height} pixels", max_pixels)
                opened.verify()
                types.append(Image.MIME.get(opened.format or "", "application/octet-stream"))
        except Image.DecompressionBombError:  # Pillow's own limit, beyond 2 × Image.MAX_IMAGE_PIXELS
            raise _too_large(image, "too large for Pillow to open", max_pixels) from None
        except (UnidentifiedImageError, OSError, SyntaxError):
            raise InvalidTrainingImages(
                f"{image.filename} is not an image Pillow can read (PNG, JPEG, WebP…).",
                field="trainingImages",
            ) from None
    return types


def _too_large(image: TrainingImage, what: str, max_pixels: int) -> InvalidRequest:
    return ImageTooLarge(
        f"{image.filename} is {what}; training images may have at most {max_pixels:,} pixels.",
        field="trainingImages",
    )


def _require_paid_plan(principal: Principal) -> None:
    if principal.plan_max_concurrent_jobs == 0:
        raise PlanUpgradeRequired("The free plan runs only free image generations; upgrade to train models.")


async def create_model(
    session: AsyncSession,
    principal: Principal,
    *,
    reference_model_id: str,
    name: str,
    description: str,
    trigger_word: str | None,
    training_steps: int,
    images: list[TrainingImage],
    storage: Storage,
    settings: Settings,
    pricing: Pricing,
) -> tuple[CustomModel, Job]:
    """Create a ``pending`` custom model and queue its ``model_creation`` job.

    Cost = model-creation formula (reference complexity, number of training images), reserved
    now. The images are stored under ``<team>/training/<model>/``. Raises ``InvalidRequest``,
    ``NotFound`` (reference model), ``Forbidden`` (free plan), ``InsufficientCredits``.
    """
    _require_paid_plan(principal)
    if not STEPS_RANGE[0] <= training_steps <= STEPS_RANGE[1]:
        raise InvalidTrainingSteps(f"trainingSteps must be {STEPS_RANGE[0]}..{STEPS_RANGE[1]}.", field="trainingSteps")
    content_types = _check_training_images(images, max_pixels=settings.max_image_pixels)
    reference = await catalog.get_pricing_info(session, reference_model_id)
    await queue.ensure_queue_capacity(session, team_id=principal.team_id, limit=settings.max_queued_jobs_per_team)
    cost = pricing.model_creation(complexity=reference.complexity_factor, training_images=len(images))
    model = CustomModel(
        id=uuid.uuid4(), team_id=principal.team_id, reference_model_id=reference.id, name=name,
        description=description, trigger_word=trigger_word, training_steps=training_steps,
    )
    session.add(model)
    await session.flush()
    job = await queue_job(
        session, principal, job_type="model_creation", cost=cost,
        params={"modelId": str(model.id), "triggerWord": trigger_word, "trainingSteps": training_steps,
                "imageCount": len(images)},
        reference_model_id=reference.id, custom_model_id=model.id, custom_model_version=None,
        provider=catalog.provider_for(reference, settings)[0], settings=settings,
    )
    stored = []
    for index, (image, content_type) in enumerate(zip(images, content_types, strict=True)):
        key = f"{principal.team_id}/training/{model.id}/{index:03d}-{_safe(image.filename)}"
        data = image.read()
        await storage.put(key, data, content_type=content_type,
                          metadata={"team": str(principal.team_id), "model": str(model.id)})
        stored.append({"key": key, "filename": image.filename, "contentType": content_type, "sizeBytes": len(data)})
    model.training_images = stored
    await session.flush()
    return model, job


def _safe(filename: str) -> str:
    keep = "".join(c if c.isalnum() or c in "._-" else "_" for c in filename)[-80:]
    return keep or "image"


def readable(principal: Principal):
    """Custom models the caller may see: its team's, not deleted."""
    return select(CustomModel).where(CustomModel.team_id == principal.team_id, CustomModel.deleted_at.is_(None))


async def get_model(session: AsyncSession, principal: Principal, model_id: uuid.UUID) -> CustomModel:
    model = await session.scalar(readable(principal).where(CustomModel.id == model_id))
    if model is None:
        raise ModelNotFound(f"No custom model {model_id}.")
    return model


async def list_models(
    session: AsyncSession, principal: Principal, *, status: str | None, limit: int,
    after: tuple[dt.datetime, uuid.UUID] | None, search: str | None = None,
) -> list[CustomModel]:
    """Newest first, keyset-paginated on (created_at, id); ``search``: text in the name,
    description or trigger word (case-insensitive)."""
    query = readable(principal)
    if status:
        query = query.where(CustomModel.status == status)
    if search and search.strip():
        pattern = "%" + search.strip().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        query = query.where(or_(
            CustomModel.name.ilike(pattern), CustomModel.description.ilike(pattern),
            CustomModel.trigger_word.ilike(pattern),
        ))
    if after:
        from sqlalchemy import tuple_

        query = query.where(tuple_(CustomModel.created_at, CustomModel.id) < tuple_(*after))
    query = query.order_by(CustomModel.created_at.desc(), CustomModel.id.desc()).limit(limit)
    return list((await session.scalars(query)).all())


async def versions(session: AsyncSession, model_id: uuid.UUID) -> list[CustomModelVersion]:
    rows = await session.scalars(
        select(CustomModelVersion).where(CustomModelVersion.model_id == model_id).order_by(CustomModelVersion.version)
    )
    return list(rows.all())


async def latest_versions(session: AsyncSession, model_ids: list[uuid.UUID]) -> dict[uuid.UUID, CustomModelVersion]:
    """Each of ``model_ids``' newest version, by model id (a model without one is absent); one statement."""
    if not model_ids:
        return {}
    rows = await session.scalars(
        select(CustomModelVersion).where(CustomModelVersion.model_id.in_(model_ids))
        .order_by(CustomModelVersion.model_id, CustomModelVersion.version.desc())
        .distinct(CustomModelVersion.model_id)
    )
    return {row.model_id: row for row in rows.all()}


async def update_model(
    session: AsyncSession, principal: Principal, model_id: uuid.UUID, *, name: str | None, description: str | None
) -> CustomModel:
    model = await get_model(session, principal, model_id)
    if name is not None:
        model.name = name
    if description is not None:
        model.description = description
    model.updated_at = func.now()
    await session.flush()
    await session.refresh(model)
    return model


async def delete_model(session: AsyncSession, principal: Principal, model_id: uuid.UUID) -> None:
    """Soft delete: the model disappears and cannot be generated from or refined; its images stay."""
    model = await get_model(session, principal, model_id)
    model.deleted_at = dt.datetime.now(dt.UTC)
    await session.flush()


async def refine_model(
    session: AsyncSession,
    principal: Principal,
    model_id: uuid.UUID,
    *,
    prompt: str,
    settings: Settings,
    pricing: Pricing,
) -> tuple[CustomModel, Job]:
    """Queue a ``model_refinement`` job: cost = refinement formula with iteration = the current
    version. Raises ``Conflict`` (model_not_ready) unless the model is ready."""
    _require_paid_plan(principal)
    if not prompt.strip() or len(prompt) > settings.max_prompt_length:
        raise InvalidPrompt(f"prompt must be 1..{settings.max_prompt_length} characters.", field="prompt")
    model = await get_model(session, principal, model_id)
    if model.status != "ready":
        raise ModelNotReady(f"This custom model is {model.status}, not ready.")
    reference = await catalog.get_pricing_info(session, model.reference_model_id, require_active=False)
    await queue.ensure_queue_capacity(session, team_id=principal.team_id, limit=settings.max_queued_jobs_per_team)
    iteration = model.version
    cost = pricing.model_refinement(iteration=iteration, complexity=reference.complexity_factor)
    job = await queue_job(
        session, principal, job_type="model_refinement", cost=cost,
        params={"modelId": str(model.id), "prompt": prompt, "iteration": iteration, "baseVersion": model.version},
        reference_model_id=reference.id, custom_model_id=model.id, custom_model_version=model.version,
        provider=catalog.provider_for(reference, settings)[0], settings=settings,
    )
    return model, job


async def ready_version(
    session: AsyncSession, principal: Principal, model_id: uuid.UUID, version: int | None
) -> tuple[CustomModel, int]:
    """The caller's model and the version to generate from (``None``: the latest). Raises
    ``NotFound`` (model_not_found: unknown or another team's; model_version_not_found),
    ``Conflict`` (model_deleted, model_not_ready)."""
    custom = await session.scalar(
        select(CustomModel).where(CustomModel.id == model_id, CustomModel.team_id == principal.team_id)
    )
    if custom is None:
        raise ModelNotFound(f"No custom model {model_id}.")
    if custom.deleted_at is not None:
        raise ModelDeleted("This custom model was deleted.")
    if custom.status != "ready":
        raise ModelNotReady(f"This custom model is {custom.status}, not ready.")
    version = version or custom.version
    if not 1 <= version <= custom.version:
        raise ModelVersionNotFound(
            f"Custom model {custom.id} has versions 1..{custom.version}, not {version}."
        )
    return custom, version


async def start_training(session: AsyncSession, model_id: uuid.UUID | None) -> CustomModel | None:
    """A ``model_creation`` job started: the model becomes ``training`` (from ``pending``). ``None``
    when the model no longer exists."""
    model = await session.get(CustomModel, model_id)
    if model is None:
        return None
    await session.execute(
        update(CustomModel).where(CustomModel.id == model.id, CustomModel.status == "pending").values(status="training")
    )
    return model


async def version_made_by(session: AsyncSession, job_id: uuid.UUID) -> int | None:
    """The version number a creation or refinement job made (``None``: none, yet)."""
    return await session.scalar(select(CustomModelVersion.version).where(CustomModelVersion.job_id == job_id))


async def version_artifact(session: AsyncSession, model_id: uuid.UUID, version: int) -> dict[str, Any]:
    artifact = await session.scalar(
        select(CustomModelVersion.artifact).where(
            CustomModelVersion.model_id == model_id, CustomModelVersion.version == version
        )
    )
    if artifact is None:
        raise ModelVersionNotFound(f"Custom model {model_id} has no version {version}.")
    return artifact


async def record_version(
    session: AsyncSession, job: Job, *, artifact: dict[str, Any], kind: str, prompt: str | None, iteration: int
) -> CustomModelVersion:
    """Success of a creation or refinement job: the model gets its next version (row-locked, so
    concurrent refinements number their versions one after another) and becomes ready."""
    model = await session.scalar(
        select(CustomModel).where(CustomModel.id == job.custom_model_id).with_for_update()
    )
    assert model is not None
    model.version += 1
    model.artifact = artifact
    model.status = "ready"
    model.error_message = None
    model.updated_at = func.now()
    version = CustomModelVersion(
        model_id=model.id, version=model.version, kind=kind, prompt=prompt, iteration=iteration,
        cost=job.charged_credits if job.charged_credits is not None else job.estimated_credits,
        artifact=artifact, job_id=job.id,
    )
    session.add(version)
    await session.flush()
    await _announce(session, model, "model.ready", job)
    return version


async def _announce(session: AsyncSession, model: CustomModel, event_type: str, job: Job) -> None:
    """The team's ``model.ready`` / ``model.failed`` webhook, in this transaction."""
    await webhooks.emit(session, model.team_id, event_type, {
        "id": str(model.id), "name": model.name, "status": model.status, "version": model.version,
        "referenceModelId": model.reference_model_id, "jobId": str(job.id),
        "error": model.error_message if model.status == "failed" else None,
        "links": {"model": f"/api/v1/models/{model.id}", "job": f"/api/v1/jobs/{job.id}"},
    })


async def on_job_failed(session: AsyncSession, job: Job) -> None:
    """A creation job that failed or was cancelled leaves its model ``failed`` with the reason
    (the failure hook of ``model_creation`` only: a failed refinement leaves the model as it was)."""
    if job.custom_model_id is None:
        return
    model = await session.scalar(select(CustomModel).where(CustomModel.id == job.custom_model_id).with_for_update())
    if model is not None and model.status in ("pending", "training"):
        model.status = "failed"
        model.error_message = job.error_message or job.error_code
        await session.flush()
        await _announce(session, model, "model.failed", job)
