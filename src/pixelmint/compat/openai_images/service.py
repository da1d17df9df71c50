"""OpenAI Images requests mapped onto the native generation flow, and the answers mapped back.

- Model names (``compat/names.py``): ``pixelmint/<referenceModelId>`` or a bare reference model id
  for the catalog, ``<teamId>/<customModelId>[:version]`` for the caller's team's custom models.
  A request without ``model`` uses ``PIXELMINT_OPENAI_COMPAT_DEFAULT_MODEL``, else the most
  popular active catalog model.
- Sizes: ``auto`` is 1024x1024; OpenAI's sizes (256x256 … 1792x1024) and any ``WIDTHxHEIGHT``
  within the native resolution limits are taken as they are.
- Quality: ``standard``, ``low``, ``medium``, ``auto`` → standard; ``hd``, ``high``, ``xhigh``,
  ``max`` → hd (prices follow the native quality multiplier).
"""

from __future__ import annotations

import base64
import datetime as dt
import uuid

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from pixelmint.accounts.service import Principal
from pixelmint.catalog import service as catalog
from pixelmint.catalog.errors import ModelNotFound
from pixelmint.compat.names import CATALOG_OWNER, ModelName, catalog_name, custom_name, parse_model_name
from pixelmint.compat.openai_images.errors import (
    GenerationFailed,
    GenerationTimedOut,
    InvalidSize,
    UnsupportedValue,
)
from pixelmint.compat.openai_images.schemas import (
    OPENAI_SIZES,
    ImageData,
    ImageGenerationRequest,
    ImagesResponse,
    ModelObject,
    PixelmintDetails,
)
from pixelmint.custom_models import service as custom_models
from pixelmint.jobs import service as jobs
from pixelmint.jobs.errors import InvalidResolution, JobFinished
from pixelmint.jobs.events import JobEvents, wait_for_job
from pixelmint.jobs.queue import FINISHED_STATES
from pixelmint.jobs.schemas import GenerateRequest
from pixelmint.jobs.tables import Job
from pixelmint.kit.db import Database
from pixelmint.providers.registry import Providers
from pixelmint.settings import Settings
from pixelmint.storage.backend import Storage
from pixelmint.storage.schemas import UrlSigner, present_image
from pixelmint.storage.service import images_for_jobs

log = structlog.get_logger(__name__)

AUTO_SIZE = "1024x1024"
_HD = ("hd", "high", "xhigh", "max")
_REFERENCE_ID_MAX = 100  # reference_models.id is String(100)
_PAGE = 500


def _unix(at: dt.datetime) -> int:
    return int(at.timestamp())


# --------------------------------------------------------------------------------------------
# Models


async def default_model(session: AsyncSession, settings: Settings) -> str:
    """The model of a request that names none: the setting, else the most popular active catalog
    model. Raises ``ModelNotFound`` when the catalog is empty."""
    if settings.openai_compat_default_model:
        return settings.openai_compat_default_model
    page = await catalog.list_models(session, limit=1)
    if not page.items:
        raise ModelNotFound("No model is available: the catalog is empty.", field="model")
    return catalog_name(page.items[0].id)


def parse_model(name: str, principal: Principal) -> ModelName:
    """A model name this key may use -> ``ModelName``. Raises ``ModelNotFound`` for text that is
    no such name (malformed, another team's, a bad version); whether the model exists is checked
    where it is used."""
    parsed = parse_model_name(name, principal.team_id, bare_reference=True)
    if parsed is None or len(parsed.reference_model_id or "") > _REFERENCE_ID_MAX:
        raise ModelNotFound(f"The model '{name}' does not exist or you do not have access to it.", field="model")
    return parsed


async def list_models(session: AsyncSession, principal: Principal) -> list[ModelObject]:
    """The active catalog models (most popular first), then the team's ready custom models
    (newest first), by their compat names."""
    models: list[ModelObject] = []
    after = None
    while True:
        page = await catalog.list_models(session, limit=_PAGE, after=after)
        models += [ModelObject(id=catalog_name(m.id), created=_unix(m.created_at), owned_by=CATALOG_OWNER)
                   for m in page.items]
        if page.next_after is None:
            break
        after = page.next_after
    custom_after: tuple[dt.datetime, uuid.UUID] | None = None
    while True:
        rows = await custom_models.list_models(session, principal, status="ready", limit=_PAGE, after=custom_after)
        models += [ModelObject(id=custom_name(m.team_id, m.id), created=_unix(m.created_at), owned_by=str(m.team_id))
                   for m in rows]
        if len(rows) < _PAGE:
            return models
        custom_after = (rows[-1].created_at, rows[-1].id)


async def get_model(session: AsyncSession, principal: Principal, name: str) -> ModelObject:
    """One model by any name ``parse_model`` takes, answered under its canonical name (with the
    version, when one was named). Raises ``NotFound`` (model_not_found, model_version_not_found)
    for a model this key cannot use: unknown, inactive, another team's, deleted or not ready."""
    parsed = parse_model(name, principal)
    if parsed.reference_model_id is not None:
        reference = await catalog.get_model(session, parsed.reference_model_id)
        return ModelObject(id=catalog_name(reference.id), created=_unix(reference.created_at), owned_by=CATALOG_OWNER)
    assert parsed.custom_model_id is not None
    custom = await custom_models.get_model(session, principal, parsed.custom_model_id)
    if custom.status != "ready":
        raise ModelNotFound(f"The model '{name}' is {custom.status}, not ready.", field="model")
    if parsed.version is not None and not 1 <= parsed.version <= custom.version:
        raise ModelNotFound(f"The model '{name}' has versions 1..{custom.version}.", field="model")
    model_id = custom_name(custom.team_id, custom.id) + (f":{parsed.version}" if parsed.version else "")
    return ModelObject(id=model_id, created=_unix(custom.created_at), owned_by=str(custom.team_id))


# --------------------------------------------------------------------------------------------
# Generation


def size_to_resolution(size: str | None, settings: Settings) -> str:
    """OpenAI ``size`` -> native ``resolution``. Raises ``InvalidSize``."""
    if size is None or size == "auto":
        return AUTO_SIZE
    try:
        width, height = jobs.parse_resolution(size, settings)
    except InvalidResolution:
        raise InvalidSize(
            f"Invalid value: '{size}'. Supported values are: 'auto', {', '.join(repr(s) for s in OPENAI_SIZES)}, "
            f"or WIDTHxHEIGHT with each side {settings.min_image_side}..{settings.max_image_side} pixels in "
            "multiples of 8.", field="size",
        ) from None
    return f"{width}x{height}"


async def generate_request(
    session: AsyncSession, principal: Principal, body: ImageGenerationRequest, settings: Settings
) -> GenerateRequest:
    """The native request for an OpenAI one. Raises ``InvalidSize``, ``UnsupportedValue``
    (stream, a format other than png, a transparent background) or ``ModelNotFound``."""
    if body.stream:
        raise UnsupportedValue("Streaming is not supported: the images come in the answer.", field="stream")
    if body.output_format not in (None, "png"):
        raise UnsupportedValue(f"output_format '{body.output_format}' is not supported; images are png.",
                               field="output_format")
    if body.background == "transparent":
        raise UnsupportedValue("Transparent backgrounds are not supported.", field="background")
    resolution = size_to_resolution(body.size, settings)
    model = parse_model(body.model or await default_model(session, settings), principal)
    return GenerateRequest(
        reference_model_id=model.reference_model_id, custom_model_id=model.custom_model_id,
        custom_model_version=model.version, prompt=body.prompt, negative_prompt=body.negative_prompt,
        resolution=resolution, quality="hd" if body.quality in _HD else "standard", num_images=body.n or 1,
        seed=body.seed,
    )


async def wait_for_images(
    db: Database, events: JobEvents, providers: Providers, principal: Principal, job: Job, *, timeout: float
) -> Job:
    """Wait (up to ``timeout`` seconds) for the committed job to succeed, and return it.

    Raises ``GenerationFailed`` when it failed or was canceled (its credits were released), and
    ``GenerationTimedOut`` when time ran out: the job is then canceled (a queued one at once, with
    its reservation released; a running one by its worker; a remote one at its provider, best
    effort), so that the caller, who gets no images, pays nothing. A job that finished meanwhile
    is returned as it is."""
    job = await wait_for_job(db, events, job, timeout=timeout)
    if job.state not in FINISHED_STATES:
        job = await _cancel(db, providers, principal, job)
        if job.state not in ("succeeded", "failed"):  # canceled, or its worker is canceling it
            raise GenerationTimedOut(
                f"The images were not ready within {timeout:g} seconds; the generation was canceled and its "
                "credits released. Retry later.")
    if job.state != "succeeded":
        raise GenerationFailed(f"The generation {job.state}: {job.error_message or job.error_code or 'no details'}.")
    return job


async def _cancel(db: Database, providers: Providers, principal: Principal, job: Job) -> Job:
    """Cancel a job that ran out of time (as ``POST /api/v1/generate/{id}/cancel`` does); the job
    as it is then (finished meanwhile: as it finished)."""
    try:
        async with db.transaction() as session:
            job = await jobs.cancel_job(session, principal, job.id)
    except JobFinished:
        async with db.transaction() as session:
            return await session.get(Job, job.id, populate_existing=True) or job
    await jobs.cancel_at_provider(job, providers)
    return job


async def images_response(
    session: AsyncSession, job: Job, *, b64: bool, storage: Storage, urls: UrlSigner, free_left: int
) -> ImagesResponse:
    """OpenAI's answer for a succeeded generation: signed URLs, or the PNG bytes in base64."""
    images = (await images_for_jobs(session, [job.id]))[job.id]
    data = [
        ImageData(b64_json=base64.b64encode(await storage.get(image.storage_key)).decode("ascii")) if b64
        else ImageData(url=present_image(image, urls).url)
        for image in images
    ]
    return ImagesResponse(
        created=_unix(job.created_at), data=data, size=f"{job.params['width']}x{job.params['height']}",
        pixelmint=PixelmintDetails(job_id=str(job.id), charged_credits=job.charged_credits or 0,
                                   free_generations_remaining=free_left),
    )
